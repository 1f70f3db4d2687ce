"""``rtdeep phantom``: write a synthetic patient cohort (CT, RTSTRUCT, RTPLAN, RTDOSE, manifest)."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = "generate a synthetic cohort of thorax or head-and-neck phantom patients (DICOM RT + manifest.csv)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site", choices=["thorax", "headneck"], required=True, help="anatomical site")
    parser.add_argument("--patients", type=int, required=True, metavar="N", help="number of patients")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="cohort seed (same seed, same files)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (one sub-folder per patient)")
    parser.add_argument("--small", action="store_true",
                        help="128x128 grid of ~4 mm voxels (fast; same anatomy) instead of 512x512 clinical")
    parser.add_argument("--first-index", type=int, default=1, metavar="I", help="index of the first patient")


def run(args: argparse.Namespace) -> int:
    from rtdeep.errors import RtDeepError
    from rtdeep.phantom import generate_cohort

    if args.patients < 1:
        raise RtDeepError(f"--patients must be at least 1, got {args.patients}")
    manifest = generate_cohort(args.site, args.patients, args.seed, args.out, "small" if args.small else "clinical",
                               first_index=args.first_index)
    print(manifest)
    return 0
