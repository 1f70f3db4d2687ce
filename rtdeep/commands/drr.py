"""``rtdeep drr STUDY_DIR --out DIR``: one DRR (RT Image) per beam of the study's RT Plan."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["HELP", "add_arguments", "run"]

HELP = "digitally reconstructed radiographs of the plan's beams, written as RT Images (and PNGs with --png)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # defaults stay in rtdeep.drr (importing it here would slow every rtdeep command down)
    parser.add_argument("study", type=Path, help="folder holding the CT and its RT Plan")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="new output folder")
    parser.add_argument("--sid-mm", type=float, help="source-to-imager distance in mm (default: rtdeep.drr's, 1500)")
    parser.add_argument("--pixels", type=int, help="imager pixels per side over 400 mm (default: rtdeep.drr's, 256)")
    parser.add_argument("--png", action="store_true", help="also draw each DRR with field outline and isocentre")


def run(args: argparse.Namespace) -> int:
    from rtdeep.drr import write_study_drrs

    options = {key: value for key, value in (("sid_mm", args.sid_mm), ("pixels", args.pixels)) if value is not None}
    for path in write_study_drrs(args.study, args.out, png=args.png, **options):
        print(path)
    return 0
