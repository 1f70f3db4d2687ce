"""``rtdeep segment``: AI contours for a CT series, written as an RTSTRUCT and/or DICOM SEG (and optionally
NIfTI); with ``--manifest``, for every study of a cohort (resumable, one folder per study, summary.csv)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "segment organs on a CT folder with a model bundle and write the contours as an RTSTRUCT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ct_dir", type=Path, metavar="CT_DIR", nargs="?",
                        help="folder holding the CT series (searched recursively); or give --manifest")
    parser.add_argument("--manifest", type=Path, metavar="MANIFEST",
                        help="batch mode: segment every study of a cohort manifest.csv (from `rtdeep cohort`) into "
                             "OUT/<study>/, skipping studies already done; OUT/summary.csv, and OUT/metrics.csv "
                             "(Dice, HD95) against the manifest's reference structure sets")
    parser.add_argument("--format", choices=["rtstruct", "seg", "both"], default="rtstruct",
                        help="write the contours as an RTSTRUCT, a DICOM SEG (highdicom, SNOMED CT codes) or both")
    parser.add_argument("--model", required=True,
                        help=("bundled model name (e.g. thorax_unet25d, headneck_unet25d_fine: on a 1.25 mm grid, or "
                              "thorax_ensemble: its member networks averaged), an atlas "
                              "baseline (thorax_atlas, headneck_atlas) or path to a bundle folder"))
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if needed)")
    parser.add_argument("--reference", type=Path, help="reference RTSTRUCT: print Dice per organ against it")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--series-uid", help="CT SeriesInstanceUID when CT_DIR holds several series")
    parser.add_argument("--nifti", action="store_true", help="also write a NIfTI label map (RAS affine)")
    parser.add_argument("--label", default="RTDEEP_AI", help="StructureSetLabel (16 characters at most)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--json", type=Path, metavar="OUT",
                        help="write the output files, organ volumes and failed plausibility checks as JSON here")


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


def _write_json(path: Path, model_name: str, rs_path: Path, ct, rois, findings, overwrite: bool) -> None:
    import json

    from rtdeep.fileio import atomic_write

    report = {
        "model": model_name,
        "rtstruct": str(rs_path),
        "organs": {roi.name: {"voxels": int(roi.mask.sum()), "volume_cc": round(roi.volume_cc(ct), 2)} for roi in rois},
        "plausibility": [finding.as_dict() for finding in findings],
    }
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(report, indent=1) + "\n"), overwrite)
    print(f"wrote {path}")


def _run_batch(args: argparse.Namespace) -> int:
    """Segment a cohort (one process, or one rank of several under torchrun); exit 1 if a study failed."""
    from rtdeep.cohort.batch import segment_manifest, summary_table
    from rtdeep.training.distributed import close_distributed, init_distributed

    context = init_distributed(args.device)
    try:
        results = segment_manifest(args.manifest, args.model, args.out, output_format=args.format,
                                   device=context.device, context=context)
    finally:
        close_distributed()
    if context.is_main:
        print(summary_table(results))
        print(f"wrote {args.out / 'summary.csv'}")
    return 1 if any(result.error for result in results) else 0


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
    if (args.manifest is None) == (args.ct_dir is None):
        raise RtDeepError("give either CT_DIR (one study) or --manifest (a cohort)")
    if args.manifest is not None:
        return _run_batch(args)
    model_site(args.model)  # an unknown model fails before the CT is read
    if args.json is not None:
        from rtdeep.fileio import ensure_new_path

        ensure_new_path(args.json, args.overwrite)  # refused before anything is written
    model_name = Path(args.model).name
    outputs = {"rtstruct": args.out / f"RS.{model_name}.dcm", "seg": args.out / f"SEG.{model_name}.dcm",
               "nifti": args.out / f"labels.{model_name}.nii.gz"}
    wanted = [kind for kind in ("rtstruct", "seg") if args.format in (kind, "both")] + (["nifti"] if args.nifti else [])
    from rtdeep.fileio import ensure_new_paths

    ensure_new_paths([outputs[kind] for kind in wanted], args.overwrite)  # all refused before any is written
    ct = read_ct_series(args.ct_dir, args.series_uid)
    with progress_bar("segment") as callback:
        rois = segment_ct(ct.volume, args.model, device=args.device, progress_callback=callback)
    args.out.mkdir(parents=True, exist_ok=True)
    rs_path = None
    if args.format in ("rtstruct", "both"):
        found = [roi for roi in rois if roi.mask.any()] or rois  # an organ not found: one warning, below
        rs_path = write_rtstruct(
            ct, found, outputs["rtstruct"], label=args.label[:16], generation_algorithm="AUTOMATIC",
            series_description=f"AI contours {model_name}"[:64], overwrite=args.overwrite,
        )
        print(f"wrote {rs_path}")
    if args.format in ("seg", "both"):
        from rtdeep.cohort.batch import model_version
        from rtdeep.dicomrt.seg_writer import write_seg

        seg = write_seg(ct, rois, outputs["seg"], algorithm_name=model_name,
                        algorithm_version=model_version(args.model), series_description=f"AI segmentation {model_name}",
                        overwrite=args.overwrite)
        print(f"wrote {seg.path}")
    if args.nifti:
        from rtdeep.inference.nifti import write_label_map

        nifti_path = write_label_map(ct.volume, rois, outputs["nifti"], overwrite=args.overwrite)
        print(f"wrote {nifti_path}")
    from rtdeep.plausibility import check_plausibility

    findings = check_plausibility(ct.volume, rois)  # warnings only: every organ found stays in the RTSTRUCT
    left_out = "; left out of the " + " and ".join(kind.upper() for kind in wanted if kind != "nifti")
    for finding in findings:
        print(f"warning: {finding.message}{left_out if finding.check == 'empty' else ''}", file=sys.stderr)
    if args.json is not None:
        _write_json(args.json, model_name, rs_path, ct.volume, rois, findings, args.overwrite)
    if args.reference is not None:
        _print_dice(args.reference, ct, rois)
    return 0
