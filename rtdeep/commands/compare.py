"""``rtdeep compare``: per-organ agreement of a test structure set with a reference, plus overlays.

Example:
    rtdeep compare --ct patient/CT --reference patient/RS.dcm --test ai/RS_AI.dcm --out review/
"""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = "compare a test RTSTRUCT with a reference (Dice, HD95, surface Dice, volumes) and draw overlays"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ct", required=True, metavar="CT_DIR", help="folder with the CT series both RTSTRUCTs reference")
    parser.add_argument("--reference", required=True, metavar="RS_A", help="reference RTSTRUCT (e.g. clinician's)")
    parser.add_argument("--test", required=True, metavar="RS_B", help="RTSTRUCT to judge (e.g. AI or atlas contours)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for metrics.csv and overlay PNGs")
    parser.add_argument("--series-uid", default=None, help="CT SeriesInstanceUID when CT_DIR holds several series")
    parser.add_argument(
        "--roi", action="append", default=None, metavar="NAME",
        help="reference ROI to compare (repeatable; default: every ROI both sets share, matched by TG-263 name)",
    )
    parser.add_argument("--tolerance-mm", type=float, default=2.0, help="surface Dice tolerance in mm (default 2)")
    parser.add_argument("--no-png", action="store_true", help="skip the overlay pictures")
    parser.add_argument("--overwrite", action="store_true", help="replace files already in DIR")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rtdeep.dicomrt.ct_reader import read_ct_series
    from rtdeep.dicomrt.rtstruct_reader import read_rtstruct
    from rtdeep.errors import StructureError
    from rtdeep.fileio import ensure_new_path, staged_output
    from rtdeep.metrics import compare_structure_sets
    from rtdeep.names import pair_roi_names
    from rtdeep.review import format_table, overlay_pngs, write_metrics_csv

    out_dir = Path(args.out)
    csv_path = ensure_new_path(out_dir / "metrics.csv", overwrite=args.overwrite)
    ct = read_ct_series(args.ct, series_instance_uid=args.series_uid)
    reference = read_rtstruct(args.reference, ct)
    test = read_rtstruct(args.test, ct)
    for warning in [*ct.warnings, *reference.warnings, *test.warnings]:
        print(f"warning: {warning}")
    pairing = pair_roi_names(reference.names(), test.names())
    for warning in pairing.warnings():
        print(f"warning: {warning}")
    pairs = pairing.pairs
    if not pairs and not args.roi:
        raise StructureError(
            f"no ROI of the test set matches a reference ROI; reference: {', '.join(reference.names()) or 'none'}; "
            f"test: {', '.join(test.names()) or 'none'}",
            path=args.test,
        )
    rows = compare_structure_sets(
        reference, test, ct.volume, roi_names=args.roi, tolerance_mm=args.tolerance_mm
    )
    # every file is written into a staging folder and moved in at the end: a refusal leaves nothing
    with staged_output(out_dir, overwrite=args.overwrite) as stage:
        write_metrics_csv(rows, stage / csv_path.name)
        n_pngs = 0
        if not args.no_png:
            wanted = {row["roi_name"] for row in rows}
            captions = {
                str(row["roi_name"]): f"Dice {row['dice']:.3f}, HD95 {row['hd95_mm']:.1f} mm" for row in rows
            }
            n_pngs = len(overlay_pngs(
                ct.volume,
                [roi for roi in reference.rois if roi.name in wanted],
                test.rois,
                stage,
                pairs,
                captions=captions,
            ))
    print(format_table(rows, tolerance_mm=args.tolerance_mm))
    print(f"metrics: {csv_path}")
    if not args.no_png:
        print(f"overlays: {n_pngs} PNG(s) in {out_dir} (reference yellow, test red)")
    return 0
