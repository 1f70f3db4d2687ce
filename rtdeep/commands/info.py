"""``rtdeep info DIR``: what a DICOM folder holds (patients, studies, series, ROIs, dose, plan)."""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

__all__ = ["HELP", "add_arguments", "run"]

HELP = "list the patients, studies, series, ROIs (volumes in cc), dose grid and plan in a DICOM folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, help="folder holding DICOM files (searched recursively)")
    parser.add_argument("--series", "--series-uid", dest="series", default=None, metavar="UID",
                        help="CT SeriesInstanceUID to describe in detail (default: every CT series)")
    parser.add_argument("--prescription-gy", type=float, default=None,
                        help="prescription (Gy) to convert a RELATIVE dose")


def _print_inventory(infos: list, skipped: list[str], folder: Path) -> None:
    print(f"Folder {folder}: {len(infos)} DICOM file(s), {len(skipped)} skipped")
    patients: dict[tuple[str, str], dict[str, dict[str, list]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for info in infos:
        patients[(info.patient_id, info.patient_name)][info.study_instance_uid][info.series_instance_uid].append(info)
    for (patient_id, patient_name), studies in patients.items():
        print(f"Patient {patient_name or '(no name)'} [ID {patient_id or '-'}]")
        for study_uid, series in studies.items():
            first = next(iter(series.values()))[0]
            print(f"  Study {study_uid} date {first.study_date or '-'} '{first.study_description}'")
            for series_uid, files in series.items():
                print(f"    Series {files[0].modality:<8} {len(files):>4} file(s)  '{files[0].series_description}'"
                      f"  {series_uid}")


def _print_study(study, folder: Path) -> None:
    ct = study.ct
    volume = ct.volume
    n_i, n_j, n_k = volume.size_ijk
    spacing = " x ".join(f"{s:.3g}" for s in volume.spacing_mm)
    print(f"CT {ct.series_instance_uid}: {n_i}x{n_j}x{n_k} voxels, spacing {spacing} mm, "
          f"HU {volume.array.min():.0f} to {volume.array.max():.0f}, orientation {volume.patient_position}")
    if study.structure_set is not None:
        print(f"Structure set {study.structure_set.path.name} '{study.structure_set.label}': "
              f"{len(study.structure_set.rois)} ROI(s)")
        for roi in study.structure_set.rois:
            print(f"  {roi.number:>3}  {roi.name:<24} {roi.interpreted_type or '-':<10} "
                  f"{roi.volume_cc(volume):10.2f} cc")
    if study.dose is not None:
        grid = study.dose.dose
        d_i, d_j, d_k = grid.size_ijk
        dose_spacing = " x ".join(f"{s:.3g}" for s in grid.spacing_mm)
        print(f"Dose {study.dose.path.name} ({study.dose.summation_type}): {d_i}x{d_j}x{d_k} voxels, spacing "
              f"{dose_spacing} mm, max {float(grid.array.max()):.2f} Gy")
    if study.plan is not None:
        plan = study.plan
        prescription = f"{plan.prescription_gy:.2f} Gy" if plan.prescription_gy is not None else "no prescription"
        fractions = f" in {plan.fractions} fraction(s)" if plan.fractions else ""
        print(f"Plan {plan.path.name} '{plan.label}': {prescription}{fractions}, {len(plan.beams)} beam(s)")
        for beam in plan.beams:
            angles = ", ".join(f"{a:g}" for a in beam.gantry_angles_deg[:4])
            more = " ... (arc)" if len(beam.gantry_angles_deg) > 4 else ""
            print(f"  {beam.number:>3}  {beam.name:<16} {beam.radiation_type} {beam.energy} gantry {angles}{more} "
                  f"deg, {beam.meterset_mu:.1f} MU")
    _print_motion_and_images(study)
    for warning in study.warnings:
        print(f"warning: {warning}")


def _print_motion_and_images(study) -> None:
    if study.respiratory_phases:
        phases = ", ".join(f"{phase.percent:g}%" for phase in study.respiratory_phases)
        this = next((p for p in study.respiratory_phases if p.series_instance_uid == study.ct.series_instance_uid), None)
        if this is not None:  # a phase: one line; the phase table and RT Images print once, with the planning CT
            print(f"This CT is phase {this.percent:g}% of a 4D CT ({len(study.respiratory_phases)} phases: {phases})")
            return
        print(f"4D CT: {len(study.respiratory_phases)} respiratory phases on this frame of reference: {phases} "
              f"(from {study.respiratory_phases[0].source})")
        for phase in study.respiratory_phases:
            print(f"  {phase.percent:>5g}%  {phase.n_slices:>4} slice(s)  '{phase.series_description}'  "
                  f"{phase.series_instance_uid}")
    for image in study.rt_images:
        angle = "-" if image.gantry_angle_deg is None else f"{image.gantry_angle_deg:g}"
        sid = "-" if image.sid_mm is None else f"{image.sid_mm:g}"
        print(f"RT Image {image.path.name} '{image.label}' ({image.image_kind or 'image'}): beam "
              f"{image.beam_number if image.beam_number is not None else '-'}, gantry {angle} deg, "
              f"{image.columns}x{image.rows} pixels of {image.pixel_spacing_mm[1]:.3g} x "
              f"{image.pixel_spacing_mm[0]:.3g} mm, SID {sid} mm")


def run(args: argparse.Namespace) -> int:
    from rtdeep.dicomrt.study import load_study, scan_study_folder
    from rtdeep.errors import DicomReadError

    folder: Path = args.folder
    scan = scan_study_folder(folder)  # every header read once, for the inventory and every series below
    infos, skipped = scan.infos, scan.skipped
    if not infos:
        raise DicomReadError(f"no DICOM files found ({len(skipped)} other file(s) skipped)", path=folder)
    _print_inventory(infos, skipped, folder)
    for warning in skipped:
        print(f"warning: {warning}")
    series_uids = sorted({info.series_instance_uid for info in infos if info.modality == "CT"})
    if args.series is not None:
        series_uids = [args.series]
    for series_uid in series_uids:
        print()
        study = load_study(folder, series_instance_uid=series_uid, prescription_gy=args.prescription_gy, scan=scan)
        study.warnings[:] = [w for w in study.warnings if w not in skipped]
        _print_study(study, folder)
    return 0
