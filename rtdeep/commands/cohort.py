"""``rtdeep cohort``: scan a clinic's export folder and write a cohort folder (manifest.csv,
roi_names.csv, unused.csv, one folder of links per study) for training and batch inference."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["HELP", "add_arguments", "run"]

HELP = "scan a DICOM export folder: pair CT with RTSTRUCT/RTPLAN/RTDOSE, map structure names to TG-263, write a manifest"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, metavar="SOURCE_DIR", help="export folder (any shape; searched recursively)")
    parser.add_argument("--out", required=True, type=Path, metavar="COHORT_DIR", help="new cohort folder")
    parser.add_argument("--site", choices=["thorax", "headneck"], default="thorax", help="whose organs to map")
    parser.add_argument("--names", type=Path, metavar="MAP.csv",
                        help="your name map (columns name,tg263; tg263 an organ name or 'excluded'): overrides the rules")
    parser.add_argument("--outcomes", type=Path, metavar="OUTCOMES.csv",
                        help="patient_id,grade (pneumonitis CTCAE grade): fills the manifest's grade and pneumonitis columns")


def run(args: argparse.Namespace) -> int:
    from rtdeep.cohort import build_cohort

    result = build_cohort(args.source, args.out, site=args.site, names_csv=args.names, outcomes_csv=args.outcomes)
    print(result.summary())
    print(f"wrote {result.manifest}, {args.out / 'roi_names.csv'}, {args.out / 'unused.csv'}")
    return 0
