"""``rtdeep fourd STUDY_DIR --out DIR``: AIP/MIP/MinIP of a 4D CT, ITV, motion per structure and phase."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["HELP", "add_arguments", "run"]

HELP = "4D CT: average/maximum/minimum intensity projections, ITV (union of phase GTVs) and motion.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", type=Path, help="folder holding the 4D CT (one CT series per respiratory phase)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="new output folder")
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="segment the organs on every phase with this model (bundle name or folder)")
    parser.add_argument("--device", default="cpu", help="torch device for --model (default cpu)")


def run(args: argparse.Namespace) -> int:
    from rtdeep.fourd import analyse_four_d

    result = analyse_four_d(args.study, args.out, model=args.model, device=args.device)
    phases = ", ".join(f"{percent:g}%" for percent in result.four_d.percents)
    print(f"4D CT: {len(result.four_d.phases)} phases ({phases}) from {result.four_d.phases[0].source}")
    for kind, folder in result.projection_dirs.items():
        print(f"{kind:<6} {folder}")
    if result.itv_path is not None:
        print(f"ITV    {result.itv_path}")
    print(f"motion {result.motion_csv}")
    for name in result.motion:
        p2p = result.peak_to_peak_mm(name)
        print(f"  {name:<16} peak-to-peak x {p2p[0]:5.1f}  y {p2p[1]:5.1f}  z {p2p[2]:5.1f} mm")
    for note in result.notes:
        print(f"note: {note}")
    return 0
