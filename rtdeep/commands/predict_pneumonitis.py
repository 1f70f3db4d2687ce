"""``rtdeep predict-pneumonitis``: grade >= 2 pneumonitis risk of one study, with the NTCP models
beside it and a Grad-CAM map of where the network looked."""

from __future__ import annotations

import argparse

HELP = "pneumonitis (grade >= 2) risk of a study: CNN on the lung and >= T Gy crop, LKB/MLD NTCP, Grad-CAM"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_dir", nargs="?", help="folder with the CT series, RTSTRUCT and RTDOSE")
    parser.add_argument("--ct", help="CT series folder (instead of STUDY_DIR)")
    parser.add_argument("--rtstruct", help="RTSTRUCT file (instead of STUDY_DIR)")
    parser.add_argument("--rtdose", help="RTDOSE file (instead of STUDY_DIR)")
    parser.add_argument("--threshold", type=float, default=20.0, metavar="GY",
                        help="dose threshold of the lung crop in Gy (default 20)")
    parser.add_argument("--bundle", help="model bundle name or folder (default thorax_pneumonitis_lungdose20)")
    parser.add_argument("--json", metavar="OUT", help="write the numbers as JSON here")
    parser.add_argument("--out", help="folder for the Grad-CAM NIfTI/PNG and the crop NIfTI (default: next to --json, "
                        "else ./pneumonitis_<patient>)")
    parser.add_argument("--series-uid", default=None, metavar="UID",
                        help="CT SeriesInstanceUID when the CT folder holds several CT series")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _load(args: argparse.Namespace):
    from rtdeep.errors import DoseError, StructureError

    if args.study_dir:
        from rtdeep.dicomrt.study import load_study

        study = load_study(args.study_dir, series_instance_uid=args.series_uid, require=("RTSTRUCT", "RTDOSE"))
        return (study.ct.volume, study.structure_set, study.dose.dose), args.study_dir
    if not (args.ct and args.rtstruct and args.rtdose):
        raise StructureError("give STUDY_DIR, or all of --ct, --rtstruct and --rtdose")
    from rtdeep.dicomrt.ct_reader import read_ct_series
    from rtdeep.dicomrt.rtdose_reader import read_rtdose, resample_dose
    from rtdeep.dicomrt.rtstruct_reader import read_rtstruct

    ct = read_ct_series(args.ct, args.series_uid)
    structures = read_rtstruct(args.rtstruct, ct)
    dose = read_rtdose(args.rtdose)
    if dose.frame_of_reference_uid and ct.frame_of_reference_uid and dose.frame_of_reference_uid != ct.frame_of_reference_uid:
        raise DoseError("dose is on another frame of reference than the CT", path=args.rtdose,
                        tag="FrameOfReferenceUID (0020,0052)")
    resample_dose(dose, ct)  # refuses a dose that does not overlap the CT, naming the file
    return (ct.volume, structures, dose.dose), args.ct


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from rtdeep.fileio import atomic_write, ensure_new_path, staged_output
    from rtdeep.pneumonitis.figures import save_prediction_files
    from rtdeep.pneumonitis.predict import predict_pneumonitis

    if args.json:
        ensure_new_path(args.json, args.overwrite)
    (ct, structures, dose), source = _load(args)
    result = predict_pneumonitis(ct, structures, dose, threshold_gy=args.threshold, bundle=args.bundle)
    if args.out:
        out_dir = Path(args.out)
    elif args.json:
        out_dir = Path(args.json).resolve().parent
    else:
        out_dir = Path.cwd() / f"pneumonitis_{Path(source).resolve().name}"
    # files are staged and moved in together: an existing output refuses them all, before any is written
    with staged_output(out_dir, overwrite=args.overwrite) as stage:
        staged = save_prediction_files(result, stage)
    files = {kind: out_dir / path.relative_to(stage) for kind, path in staged.items()}
    print(result.summary())
    for kind, path in files.items():
        print(f"{kind}: {path}")
    if args.json:
        payload = {**result.to_dict(), "study": str(Path(source).resolve()),
                   "files": {kind: str(path) for kind, path in files.items()}}
        atomic_write(args.json, lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"), args.overwrite)
        print(f"json: {args.json}")
    return 0
