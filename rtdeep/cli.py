"""The ``rtdeep`` command line: one subcommand per module in :mod:`rtdeep.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``,
and imports its heavy dependencies (torch, matplotlib) inside ``run`` so ``rtdeep --help`` is fast.
Errors the user can act on (:class:`rtdeep.errors.RtDeepError`) print as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from rtdeep import __version__
from rtdeep.errors import RtDeepError

__all__ = ["COMMANDS", "main"]

#: subcommand name -> module under rtdeep.commands
COMMANDS: dict[str, str] = {
    "info": "info",
    "validate": "validate",
    "phantom": "phantom",
    "crop": "crop",
    "dvh": "dvh",
    "cohort": "cohort",
    "train-seg": "train_seg",
    "segment": "segment",
    "compare": "compare",
    "train-pneumonitis": "train_pneumonitis",
    "predict-pneumonitis": "predict_pneumonitis",
    "demo": "demo",
    "fourd": "fourd",
    "drr": "drr",
    "app": "app",
}


def _available_commands() -> dict[str, object]:
    modules = {}
    for name, module_name in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(f"rtdeep.commands.{module_name}")
        except ModuleNotFoundError as error:
            if error.name != f"rtdeep.commands.{module_name}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtdeep", description="Deep learning for radiotherapy: DICOM RT, crops, DVH/NTCP, AI contours, pneumonitis risk.")
    parser.add_argument("--version", action="version", version=f"rtdeep {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show warnings and debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _available_commands().items():
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)  # type: ignore[attr-defined]
        module.add_arguments(sub)  # type: ignore[attr-defined]
        sub.set_defaults(_run=module.run)  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s"
    )
    try:
        return int(args._run(args) or 0)
    except RtDeepError as error:
        print(f"rtdeep {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError, PermissionError) as error:
        print(f"rtdeep {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rtdeep {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
