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
    parser.add_argument("--4d", dest="four_d", action="store_true",
                        help="thorax: a 4D CT per patient (one CT + RTSTRUCT per respiratory phase), planned on "
                             "the average CT with an ITV (see docs/fourd.md)")
    parser.add_argument("--phases", type=int, default=10, metavar="N", help="respiratory phases with --4d (default 10)")
    parser.add_argument("--drr", action="store_true",
                        help="also write a DRR (RT Image) per plan beam in each patient's RTIMAGE/ (docs/rtimage.md)")


def run(args: argparse.Namespace) -> int:
    from rtdeep.errors import RtDeepError
    from rtdeep.phantom import generate_cohort

    if args.patients < 1:
        raise RtDeepError(f"--patients must be at least 1, got {args.patients}")
    grid = "small" if args.small else "clinical"
    if args.four_d:
        from rtdeep.phantom.fourd import generate_cohort_4d

        manifest = generate_cohort_4d(args.site, args.patients, args.seed, args.out, grid,
                                      first_index=args.first_index, n_phases=args.phases, drr=args.drr)
    else:
        manifest = generate_cohort(args.site, args.patients, args.seed, args.out, grid, first_index=args.first_index)
        if args.drr:
            from rtdeep.drr import write_cohort_drrs

            write_cohort_drrs(manifest)
    print(manifest)
    return 0
