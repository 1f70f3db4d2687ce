"""``rtdeep drr STUDY_DIR --out DIR``: one DRR (RT Image) per beam of the study's RT Plan."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["HELP", "add_arguments", "run"]

HELP = "digitally reconstructed radiographs of the plan's beams, written as RT Images (and PNGs with --png)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rtdeep.drr import DEFAULT_PIXELS, DEFAULT_SID_MM

    parser.add_argument("study", type=Path, help="folder holding the CT and its RT Plan")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="new output folder")
    parser.add_argument("--sid-mm", type=float, default=DEFAULT_SID_MM,
                        help=f"source-to-imager distance (default {DEFAULT_SID_MM:g} mm)")
    parser.add_argument("--pixels", type=int, default=DEFAULT_PIXELS,
                        help=f"imager pixels per side over 400 mm (default {DEFAULT_PIXELS})")
    parser.add_argument("--png", action="store_true", help="also draw each DRR with field outline and isocentre")


def run(args: argparse.Namespace) -> int:
    from rtdeep.drr import write_study_drrs

    for path in write_study_drrs(args.study, args.out, sid_mm=args.sid_mm, pixels=args.pixels, png=args.png):
        print(path)
    return 0
