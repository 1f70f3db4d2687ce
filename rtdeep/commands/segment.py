"""``rtdeep segment``: AI contours for a CT series, written as an RTSTRUCT (and optionally NIfTI)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "segment organs on a CT folder with a model bundle and write the contours as an RTSTRUCT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ct_dir", type=Path, metavar="CT_DIR", help="folder holding the CT series (searched recursively)")
    parser.add_argument("--model", required=True,
                        help="bundled model name (e.g. thorax_unet25d), an atlas baseline (thorax_atlas, headneck_atlas) or path to a bundle folder")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if needed)")
    parser.add_argument("--reference", type=Path, help="reference RTSTRUCT: print Dice per organ against it")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--series-uid", help="CT SeriesInstanceUID when CT_DIR holds several series")
    parser.add_argument("--nifti", action="store_true", help="also write a NIfTI label map (RAS affine)")
    parser.add_argument("--label", default="RTDEEP_AI", help="StructureSetLabel (16 characters at most)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _progress_bar():  # -> callback, close
    import os

    from tqdm import tqdm

    disable = os.environ.get("RTDEEP_NO_PROGRESS") == "1" or (
        not sys.stderr.isatty() and os.environ.get("RTDEEP_PROGRESS") != "1"
    )
    bar = tqdm(total=100, desc="segment", file=sys.stderr, disable=disable, leave=False, bar_format="{l_bar}{bar}| {elapsed}")

    def callback(fraction: float, message: str) -> None:
        bar.set_description(message[:40])
        bar.n = round(100 * min(max(fraction, 0.0), 1.0))
        bar.refresh()

    return callback, bar.close


def _print_dice(reference_path: Path, ct, rois) -> None:
    from rtdeep.dicomrt.rtstruct_reader import read_rtstruct
    from rtdeep.metrics import dice_coefficient as dice

    reference = read_rtstruct(reference_path, ct)

    print(f"{'organ':<16} {'Dice':>6}")
    for roi in rois:
        if roi.name not in reference:
            print(f"{roi.name:<16} {'n/a':>6}  (not in reference)")
            continue
        print(f"{roi.name:<16} {dice(reference[roi.name].mask, roi.mask):6.3f}")


def run(args: argparse.Namespace) -> int:
    import torch

    from rtdeep.bundles import load_bundle
    from rtdeep.dicomrt.ct_reader import read_ct_series
    from rtdeep.dicomrt.rtstruct_writer import write_rtstruct
    from rtdeep.errors import RtDeepError
    from rtdeep.inference.segment import segment_volume

    if args.device == "cuda" and not torch.cuda.is_available():
        raise RtDeepError("--device cuda asked but torch sees no CUDA device; use --device cpu")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from rtdeep.atlas import atlas_site, segment_with_atlas

    site = atlas_site(args.model)
    bundle = None if site else load_bundle(args.model, device=args.device)
    ct = read_ct_series(args.ct_dir, args.series_uid)
    callback, close = _progress_bar()
    try:
        if bundle is None:
            rois = segment_with_atlas(ct.volume, site, progress_callback=callback)
        else:
            rois = segment_volume(ct.volume, bundle, device=args.device, progress_callback=callback)
    finally:
        close()
    args.out.mkdir(parents=True, exist_ok=True)
    model_name = args.model if bundle is None else str(bundle.config.get("bundle_name") or bundle.path.name)
    rs_path = write_rtstruct(
        ct, rois, args.out / f"RS.{model_name}.dcm", label=args.label[:16], generation_algorithm="AUTOMATIC",
        series_description=f"AI contours {model_name}"[:64], overwrite=args.overwrite,
    )
    print(f"wrote {rs_path}")
    if args.nifti:
        from rtdeep.inference.nifti import write_label_map

        nifti_path = write_label_map(ct.volume, rois, args.out / f"labels.{model_name}.nii.gz", overwrite=args.overwrite)
        print(f"wrote {nifti_path}")
    for roi in rois:
        if not roi.mask.any():
            print(f"warning: {roi.name} not found on this CT", file=sys.stderr)
    if args.reference is not None:
        _print_dice(args.reference, ct, rois)
    return 0
