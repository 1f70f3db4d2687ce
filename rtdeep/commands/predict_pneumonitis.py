"""``rtdeep predict-pneumonitis``: grade >= 2 pneumonitis risk of one study or of a cohort, with the
lung-dose report (MLD, V20, LKB / logistic NTCP) beside it and a Grad-CAM map of where the network
looked.

One study::

    rtdeep predict-pneumonitis STUDY_DIR [--out DIR] [--json OUT.json]

writes the Grad-CAM / crop NIfTI and PNG to ``DIR`` (default ``./pneumonitis_<PatientID>``: one
folder per patient, never files shared between patients).

A cohort::

    rtdeep predict-pneumonitis --manifest MANIFEST.csv --out DIR

reads a manifest (``study_dir`` relative to the manifest, optional ``patient_id``; or the
``manifest.csv`` of ``rtdeep cohort``, whose ``roi_map`` names the lungs) and writes
``DIR/predictions.csv`` (patient_id, risk_pct, flagged, ntcp_lkb_pct, ntcp_logistic_mld_pct,
mld_gy, v20_pct, crop_volume_cc, status, error) and one folder per patient (``DIR/<patient_id>``,
``-2``, ``-3`` ... when IDs repeat). A study that fails is written with its error and the run goes
on; the exit status is 1 when any study failed.
"""

from __future__ import annotations

import argparse
import sys

HELP = "pneumonitis (grade >= 2) risk of a study or a cohort (--manifest): CNN, LKB/MLD NTCP, Grad-CAM"

#: columns of DIR/predictions.csv in cohort mode
COHORT_COLUMNS = ["patient_id", "risk_pct", "flagged", "ntcp_lkb_pct", "ntcp_logistic_mld_pct", "mld_gy", "v20_pct",
                  "crop_volume_cc", "folder", "study_dir", "status", "error"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_dir", nargs="?", help="folder with the CT series, RTSTRUCT and RTDOSE")
    parser.add_argument("--manifest", help="cohort mode: CSV with study_dir (and patient_id) per row; needs --out")
    parser.add_argument("--ct", help="CT series folder (instead of STUDY_DIR)")
    parser.add_argument("--rtstruct", help="RTSTRUCT file (instead of STUDY_DIR)")
    parser.add_argument("--rtdose", help="RTDOSE file (instead of STUDY_DIR)")
    parser.add_argument("--threshold", type=float, default=20.0, metavar="GY",
                        help="dose threshold of the lung crop in Gy (default 20)")
    parser.add_argument("--bundle", help="model bundle name or folder (default thorax_pneumonitis_lungdose20)")
    parser.add_argument("--json", metavar="OUT", help="one study: write the numbers as JSON here")
    parser.add_argument("--out", help="one study: folder for the Grad-CAM NIfTI/PNG and the crop NIfTI (default "
                        "./pneumonitis_<PatientID>); cohort: the results folder")
    parser.add_argument("--series-uid", default=None, metavar="UID",
                        help="one study: CT SeriesInstanceUID when the CT folder holds several CT series")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _study(folder, series_instance_uid: str | None = None):
    """(ct, structures, dose, patient ID) of a study folder."""
    from rtdeep.dicomrt.study import load_study

    # a missing RTSTRUCT/RTDOSE is an error naming the file set aside (e.g. on another frame of reference)
    study = load_study(folder, series_instance_uid=series_instance_uid, require=("RTSTRUCT", "RTDOSE"))
    patient = getattr(study.ct, "patient", None)
    return study.ct.volume, study.structure_set, study.dose.dose, getattr(patient, "patient_id", "") or ""


def _load(args: argparse.Namespace):
    from pathlib import Path

    from rtdeep.errors import DoseError, StructureError

    if args.study_dir:
        ct, structures, dose, patient_id = _study(args.study_dir, args.series_uid)
        return (ct, structures, dose), patient_id or Path(args.study_dir).resolve().name
    if not (args.ct and args.rtstruct and args.rtdose):
        raise StructureError("give STUDY_DIR, --manifest, or all of --ct, --rtstruct and --rtdose")
    from rtdeep.dicomrt.ct_reader import read_ct_series
    from rtdeep.dicomrt.rtdose_reader import read_rtdose
    from rtdeep.dicomrt.rtstruct_reader import read_rtstruct

    ct = read_ct_series(args.ct, args.series_uid)
    structures = read_rtstruct(args.rtstruct, ct)
    dose = read_rtdose(args.rtdose)
    if dose.frame_of_reference_uid and ct.frame_of_reference_uid and dose.frame_of_reference_uid != ct.frame_of_reference_uid:
        raise DoseError("dose is on another frame of reference than the CT", path=args.rtdose,
                        tag="FrameOfReferenceUID (0020,0052)")
    patient = getattr(ct, "patient", None)
    return (ct.volume, structures, dose.dose), getattr(patient, "patient_id", "") or Path(args.ct).resolve().name


def safe_folder_name(name: str) -> str:
    """A patient ID as a folder name (letters, digits, ``-``, ``_``, ``.``; others become ``_``)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip()).strip(".")
    return cleaned or "patient"


def read_prediction_manifest(path) -> list[tuple[str, object, list[str]]]:
    """(patient_id, study folder, lung ROI names) per row of a prediction manifest.

    Accepts the ``manifest.csv`` of ``rtdeep cohort`` (its ``roi_map`` names the lungs) or any CSV
    with a ``study_dir`` column (relative to the manifest's folder) and an optional ``patient_id``.

    Raises:
        ValidationError: no ``study_dir`` column, or no rows (naming the file).
    """
    import csv
    import json
    from pathlib import Path

    from rtdeep.cohort.manifest import is_cohort_manifest, read_cohort_manifest
    from rtdeep.errors import ValidationError

    path = Path(path)
    if is_cohort_manifest(path):
        rows = []
        for row in read_cohort_manifest(path):
            lungs = [row.roi_map[k] for k in ("Lung_L", "Lung_R") if k in row.roi_map]
            rows.append((row.patient_id or row.study_id, row.study_dir, lungs))
        return rows
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if "study_dir" not in (reader.fieldnames or []):
            raise ValidationError("manifest lacks the column 'study_dir'", path=path)
        rows = []
        for row in reader:
            study = (path.parent / row["study_dir"]).resolve()
            lungs = []
            if row.get("roi_map"):
                roi_map = json.loads(row["roi_map"])
                lungs = [roi_map[k] for k in ("Lung_L", "Lung_R") if k in roi_map]
            rows.append((str(row.get("patient_id") or study.name), study, lungs))
    if not rows:
        raise ValidationError("manifest has no studies", path=path)
    return rows


def run_cohort(args: argparse.Namespace) -> int:
    """Cohort mode: every manifest study, one folder each, one predictions.csv; failures recorded."""
    from pathlib import Path

    from rtdeep.errors import OutputError, RtDeepError
    from rtdeep.fileio import atomic_write
    from rtdeep.pneumonitis.bundle import load_pneumonitis_bundle
    from rtdeep.pneumonitis.figures import save_prediction_files
    from rtdeep.pneumonitis.predict import predict_pneumonitis
    from rtdeep.progress import progress_bar

    if not args.out:
        raise OutputError("cohort mode needs --out DIR")
    out = Path(args.out)
    table = out / "predictions.csv"
    if table.exists() and not args.overwrite:
        raise OutputError("predictions.csv exists; choose a new --out or give --overwrite", path=table)
    rows = read_prediction_manifest(args.manifest)
    bundle = load_pneumonitis_bundle(args.bundle)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    results = []
    with progress_bar("pneumonitis") as progress:
        for number, (patient_id, study_dir, lungs) in enumerate(rows):
            progress(number / len(rows), f"{patient_id} ({number + 1}/{len(rows)})")
            folder = safe_folder_name(patient_id)
            suffix = 2
            while folder.lower() in used:
                folder, suffix = f"{safe_folder_name(patient_id)}-{suffix}", suffix + 1
            used.add(folder.lower())
            entry = {"patient_id": patient_id, "folder": folder, "study_dir": str(study_dir), "status": "ok",
                     "error": ""}
            try:
                ct, structures, dose, _ = _study(study_dir)
                result = predict_pneumonitis(ct, structures, dose, args.threshold, bundle, lung_names=lungs)
                save_prediction_files(result, out / folder, overwrite=args.overwrite)
                numbers = result.to_dict()
                entry.update({key: numbers[key] for key in ("risk_pct", "flagged", "ntcp_lkb_pct",
                                                            "ntcp_logistic_mld_pct", "mld_gy", "v20_pct",
                                                            "crop_volume_cc")})
            except (RtDeepError, OSError) as error:
                entry.update({"status": "failed", "error": str(error).replace("\n", " ")})
            results.append(entry)
        progress(1.0, "done")

    def write(tmp: Path) -> None:
        import csv

        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COHORT_COLUMNS, restval="")
            writer.writeheader()
            writer.writerows(results)

    atomic_write(table, write, overwrite=args.overwrite)
    failed = [r for r in results if r["status"] != "ok"]
    print(f"{len(results) - len(failed)} of {len(results)} studies predicted; positive class: grade >= 2 radiation "
          f"pneumonitis; {table}")
    for entry in failed:
        print(f"failed: {entry['patient_id']} ({entry['study_dir']}): {entry['error']}", file=sys.stderr)
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from rtdeep.fileio import atomic_write, ensure_new_path, staged_output
    from rtdeep.pneumonitis.figures import save_prediction_files
    from rtdeep.pneumonitis.predict import predict_pneumonitis

    if args.manifest:
        return run_cohort(args)
    if args.json:
        ensure_new_path(args.json, args.overwrite)  # refused before anything is computed or written
    (ct, structures, dose), patient_id = _load(args)
    result = predict_pneumonitis(ct, structures, dose, threshold_gy=args.threshold, bundle=args.bundle)
    if args.out:
        out_dir = Path(args.out)
    elif args.json:
        out_dir = Path(args.json).resolve().parent / f"pneumonitis_{safe_folder_name(patient_id)}"
    else:
        out_dir = Path.cwd() / f"pneumonitis_{safe_folder_name(patient_id)}"
    # staged and moved in together: an existing output refuses them all before any is written
    with staged_output(out_dir, overwrite=args.overwrite) as stage:
        staged = save_prediction_files(result, stage)
    files = {kind: out_dir / path.relative_to(stage) for kind, path in staged.items()}
    print(result.summary())
    for kind, path in files.items():
        print(f"{kind}: {path}")
    if args.json:
        payload = {**result.to_dict(), "patient_id": patient_id,
                   "files": {kind: str(path) for kind, path in files.items()}}
        atomic_write(args.json, lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"), args.overwrite)
        print(f"json: {args.json}")
    return 0
