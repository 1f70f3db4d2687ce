"""``rtdeep crop``: dose-masked ROI crops of one study or a cohort, written for learning.

One patient::

    rtdeep crop STUDY_DIR --roi lung-dose20 --out DIR

A cohort (the manifest written by ``rtdeep phantom``, or any CSV with a ``study_dir`` column
relative to the manifest's folder; its other columns, e.g. the labels, are carried through)::

    rtdeep crop --manifest manifest.csv --roi lung-dose20 --threshold 20 --out DIR

``DIR`` gets ``crops/<patient>_<roi>.mat`` / ``.npz`` / ``_ct.nii.gz`` ... and ``index.csv`` (one
row per patient: files, mask volume, mean dose, bounding box, names used, label columns). Work is
staged in a hidden folder beside ``DIR`` and moved in only when every patient succeeded (or with
``--keep-going``, those that did), so a failure leaves nothing written; existing files are never
replaced.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "crop CT/dose/mask to a structure (and dose threshold) region; export .mat/.npz/NIfTI + index CSV"

FORMATS = ("mat", "npz", "nifti")  # rtdeep.crop_files.CROP_FORMATS, kept here so --help stays light


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_dir", nargs="?", type=Path, help="one patient's DICOM folder")
    parser.add_argument("--manifest", type=Path, help="cohort CSV with a study_dir column (instead of STUDY_DIR)")
    parser.add_argument("--roi", default="lung-dose20",
                        help="crop preset: lung-dose20 (default), lung, body; or 'custom' with --include")
    parser.add_argument("--threshold", type=float, default=None, metavar="GY",
                        help="dose threshold in Gy (keep dose >= GY); default: the preset's")
    parser.add_argument("--include", nargs="+", metavar="NAME", help="structures to include (union)")
    parser.add_argument("--exclude", nargs="+", metavar="NAME", help="structures (or patterns, e.g. 'GTV*') to remove")
    parser.add_argument("--margin-mm", type=float, default=None, help="margin around the mask's box (mm)")
    parser.add_argument("--fill-hu", type=float, default=None, help="CT value outside the mask (default -1000)")
    parser.add_argument("--no-fill", action="store_true", help="keep the CT unmasked inside the box")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=["mat", "npz"], help="files to write")
    parser.add_argument("--size", nargs=3, type=int, metavar=("K", "J", "I"),
                        help="also store a fixed-size resampled crop in the .npz (e.g. 64 64 64)")
    parser.add_argument("--prescription-gy", type=float, default=None, help="for RELATIVE doses")
    parser.add_argument("--series-uid", default=None, metavar="UID",
                        help="CT SeriesInstanceUID when STUDY_DIR holds several CT series (a manifest may give a "
                             "series_uid column)")
    parser.add_argument("--keep-going", action="store_true",
                        help="record a failing patient's error in the index and go on")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def _spec(args: argparse.Namespace):
    from rtdeep.crop import CropSpec, get_preset
    from rtdeep.errors import CropError

    changes: dict = {}
    if args.include:
        changes["include"] = tuple(args.include)
    if args.exclude:
        changes["exclude"] = tuple(args.exclude)
    if args.margin_mm is not None:
        changes["margin_mm"] = args.margin_mm
    if args.fill_hu is not None:
        changes["fill_hu"] = args.fill_hu
    if args.no_fill:
        changes["fill_hu"] = None
    if args.roi == "custom":
        if not args.include:
            raise CropError("--roi custom needs --include")
        name = "custom" if args.threshold is None else f"custom-dose{args.threshold:g}"
        return CropSpec(dose_threshold_gy=args.threshold, name=name, **changes)
    return get_preset(args.roi, dose_threshold_gy=args.threshold, **changes)


def _studies(args: argparse.Namespace) -> tuple[list[dict[str, str]], list[str]]:
    """Rows to process (each with 'study_path') and the manifest's columns."""
    from rtdeep.crop_files import read_manifest
    from rtdeep.errors import CropError

    if (args.manifest is None) == (args.study_dir is None):
        raise CropError("give either STUDY_DIR or --manifest (one of them)")
    if args.manifest is None:
        return [{"study_dir": str(args.study_dir), "study_path": str(args.study_dir)}], ["study_dir"]
    return read_manifest(args.manifest)


def run(args: argparse.Namespace) -> int:
    import csv

    from rtdeep.crop_files import export_crops

    spec = _spec(args)
    rows, columns = _studies(args)
    index = export_crops(rows, spec, args.out, columns=columns, formats=args.format, size=args.size,
                         prescription_gy=args.prescription_gy, series_instance_uid=args.series_uid,
                         keep_going=args.keep_going)
    with open(index, newline="", encoding="utf-8") as handle:
        failed = sum(1 for row in csv.DictReader(handle) if row.get("error"))
    print(f"{len(rows) - failed} crop(s) '{spec.name}' written to {args.out} (index: {index})"
          + (f"; {failed} failed (see the error column)" if failed else ""))
    return 0
