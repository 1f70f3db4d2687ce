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

    from rtdeep.dicomrt.ct_reader import read_ct_series
    from rtdeep.dicomrt.rtstruct_writer import write_rtstruct
    from rtdeep.errors import RtDeepError
    from rtdeep.inference import model_site, segment_ct
    from rtdeep.progress import progress_bar

    if args.device == "cuda" and not torch.cuda.is_available():
        raise RtDeepError("--device cuda asked but torch sees no CUDA device; use --device cpu")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model_site(args.model)  # an unknown model fails before the CT is read
    ct = read_ct_series(args.ct_dir, args.series_uid)
    with progress_bar("segment") as callback:
        rois = segment_ct(ct.volume, args.model, device=args.device, progress_callback=callback)
    args.out.mkdir(parents=True, exist_ok=True)
    model_name = Path(args.model).name
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
