"""``rtdeep validate FILE_OR_DIR...``: the readers of every command, dciodvfy, dcentvfy and the project's RT
cross-reference checks: whatever another command would refuse is an error here.

Prints one finding per line and a summary; exit status 1 when any error was found, 2 when an input
cannot be read.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtdeep.dicomrt.validate import Finding

__all__ = ["HELP", "add_arguments", "run"]

HELP = "validate DICOM RT files and folders (dciodvfy, dcentvfy, RTSTRUCT cross-references)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="FILE_OR_DIR", help="DICOM files or folders (searched recursively)")
    parser.add_argument("--errors-only", action="store_true", help="print errors only (warnings still counted)")
    parser.add_argument("--no-tools", action="store_true",
                        help="skip dciodvfy/dcentvfy; run only the project's own checks")
    parser.add_argument("--series-uid", default=None, metavar="UID",
                        help="read only this CT series of each folder (default: every CT series)")
    parser.add_argument("--prescription-gy", type=float, default=None,
                        help="prescription (Gy) for a RELATIVE dose (without it, the commands refuse one)")


def _collapse(findings: list[Finding]) -> list[tuple[Finding, int]]:
    """One line per distinct (severity, source, message): a CT series repeats the same finding per slice."""
    first: dict[tuple[str, str, str], list[Finding]] = {}
    for finding in findings:
        key = (finding.severity, finding.source, finding.message)
        first.setdefault(key, []).append(finding)
    return [(group[0], len(group) - 1) for group in first.values()]


def run(args: argparse.Namespace) -> int:
    from rtdeep.dicomrt.validate import validate_paths

    findings = validate_paths(args.paths, use_tools=not args.no_tools, series_instance_uid=args.series_uid,
                              prescription_gy=args.prescription_gy)
    n_errors = sum(f.severity == "error" for f in findings)
    n_warnings = len(findings) - n_errors
    for finding, n_more in _collapse(findings):
        if finding.severity == "error" or not args.errors_only:
            print(f"{finding} (and {n_more} more file(s))" if n_more else finding)
    verdict = "FAIL" if n_errors else "OK"
    print(f"{verdict}: {n_errors} error(s), {n_warnings} warning(s) in {', '.join(args.paths)}")
    return 1 if n_errors else 0
