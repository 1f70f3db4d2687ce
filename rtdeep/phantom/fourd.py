"""4D CT phantoms: one CT series per respiratory phase, planned on the average CT with an ITV.

A patient from :func:`rtdeep.phantom.generate_patient` is end-exhale; :mod:`rtdeep.phantom.breathing`
moves it to each phase. Per patient folder::

    CT/            planning CT: the average of the phases (AIP), a derived series
    RS.dcm         on the AIP: organs (where at least half the phases have them), ITV (union of the
                   phase GTVs), PTV (ITV + 5 mm, 5 mm inside the skin)
    RP.dcm RD.dcm  plan and dose computed on the AIP
    4DCT/P00/ ...  one CT series per phase (phase in (0020,9245), (0020,0100) and the description)
    4DCT/RS_P00.dcm ...  each phase's structures, GTV included
    RTIMAGE/       DRRs of the plan's beams (only with ``drr=True``)

Example:
    >>> patient = generate_patient("thorax", 1, seed=0, grid="small")      # doctest: +SKIP
    >>> folder, row = write_4d_patient(patient, "cohort4d", n_phases=10)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from rtdeep.dicomrt.types import Beam, PlanSummary, Roi
from rtdeep.dicomrt.uids import make_uid
from rtdeep.errors import RtDeepError
from rtdeep.fileio import OutputExistsError, atomic_write
from rtdeep.phantom import dose as dose_model
from rtdeep.phantom.breathing import BreathingModel, phase_percentages, sample_breathing, warp_to_phase
from rtdeep.phantom.grid import GridSpec, resample_to_grid
from rtdeep.phantom.patient import PhantomPatient, generate_patient
from rtdeep.progress import progress
from rtdeep.volume import Volume

__all__ = ["FOURD_COLUMNS", "ITV_TO_PTV_MM", "generate_cohort_4d", "write_4d_patient"]

#: isotropic ITV-to-PTV margin (set-up error; motion is in the ITV)
ITV_TO_PTV_MM = 5.0
_SKIN_CROP_MM = 5.0
_BREATHING_STREAM = 7

#: manifest columns of a 4D cohort (after the 3D ones): breathing amplitudes (peak to peak, mm),
#: the GTV's peak-to-peak motion per axis, and its centroid (LPS mm) at each phase, ``x y z`` per
#: phase separated by ``;`` in phase order
FOURD_COLUMNS = [
    "n_phases", "breathing_si_mm", "breathing_ap_mm", "breathing_lr_mm", "breathing_ap_lag_cycles",
    "tumour_p2p_x_mm", "tumour_p2p_y_mm", "tumour_p2p_z_mm", "tumour_trajectory_mm", "itv_cc",
]


def _grid_of(volume: Volume) -> GridSpec:
    return GridSpec(tuple(int(n) for n in volume.shape), tuple(float(s) for s in volume.spacing_mm),  # type: ignore[arg-type]
                    tuple(float(v) for v in volume.origin_lps))  # type: ignore[arg-type]


def _centroid(volume: Volume, mask: np.ndarray) -> np.ndarray:
    kk, jj, ii = np.nonzero(mask)
    return volume.index_to_lps(np.array([ii.mean(), jj.mean(), kk.mean()]))


def _ptv_from_itv(itv: np.ndarray, external: np.ndarray, spacing_mm: np.ndarray) -> np.ndarray:
    sampling = tuple(float(s) for s in spacing_mm[::-1])
    near_itv = ndimage.distance_transform_edt(~itv, sampling=sampling) <= ITV_TO_PTV_MM
    inside_skin = ndimage.distance_transform_edt(external, sampling=sampling) > _SKIN_CROP_MM
    return near_itv & inside_skin


def _plan_on_average(patient: PhantomPatient, average: Volume, ptv: np.ndarray, external: np.ndarray,
                     ptv_number: int) -> tuple[PlanSummary, Volume, np.ndarray]:
    """The base patient's beams re-aimed at the ITV's PTV, dose computed on the average CT."""
    from rtdeep.phantom.sites import SITE_SPECS

    spec = SITE_SPECS[patient.site]
    ct_spec, d_grid = _grid_of(average), _grid_of(patient.dose)
    density = dose_model.density_from_hu(resample_to_grid(average.array, ct_spec, d_grid))
    ptv_coarse = resample_to_grid(ptv.astype(np.float32), ct_spec, d_grid) > 0.5
    body_coarse = resample_to_grid(external.astype(np.float32), ct_spec, d_grid)
    if not ptv_coarse.any():
        raise RtDeepError(f"4D phantom {patient.patient_id}: the PTV is empty on the dose grid", roi="PTV")
    kk, jj, ii = np.nonzero(ptv_coarse)
    iso = np.round(d_grid.volume(ptv_coarse).index_to_lps(np.array([ii.mean(), jj.mean(), kk.mean()])), 1)
    angles = [beam.gantry_angles_deg[0] for beam in patient.plan.beams]
    relative, mu_per_unit = dose_model.compute_dose(density, ptv_coarse, body_coarse, d_grid, iso,
                                                    [dose_model.BeamSpec(a) for a in angles])
    relative_ct = resample_to_grid(relative, d_grid, ct_spec)
    values = relative_ct[ptv]
    scale = spec.prescription_gy / max(float(np.percentile(values, 5)) if values.size else 0.0, 1e-6)
    plan = PlanSummary(
        label=patient.plan.label, prescription_gy=spec.prescription_gy, fractions=spec.fractions,
        beams=[Beam(name=f"G{angle:05.1f}", number=i + 1, gantry_angles_deg=[angle], energy="6",
                    radiation_type="PHOTON", meterset_mu=round(float(scale * mu_per_unit[i] / spec.fractions), 1),
                    isocenter_lps=(float(iso[0]), float(iso[1]), float(iso[2])))
               for i, angle in enumerate(angles)],
        target_roi_number=ptv_number,
    )
    return plan, d_grid.volume((relative * np.float32(scale)).astype(np.float32)), relative_ct * np.float32(scale)


def _phase_rois(patient: PhantomPatient, masks: dict[str, np.ndarray]) -> list[Roi]:
    return [Roi(name=roi.name, mask=masks[roi.name], number=roi.number, color_rgb=roi.color_rgb,
                interpreted_type=roi.interpreted_type, generation_algorithm="MANUAL")
            for roi in patient.rois if roi.name in masks and masks[roi.name].any()]


def write_4d_patient(patient: PhantomPatient, out_dir: str | os.PathLike[str], n_phases: int = 10, *,
                     drr: bool = False) -> tuple[Path, dict[str, Any]]:
    """Write a 4D CT patient folder (see the module docstring) and return its manifest row.

    Args:
        patient: the end-exhale patient (thorax).
        out_dir: the cohort folder; ``out_dir/<patient_id>`` must not exist or be empty.
        n_phases: phases over the cycle (2 to 20; 10 gives 0 %, 10 %, ... 90 %).
        drr: also write one DRR (RT Image) per beam in ``RTIMAGE/``.

    Returns:
        (patient folder, manifest row: the 3D columns plus :data:`FOURD_COLUMNS`).

    Raises:
        RtDeepError: a site other than thorax, or ``n_phases`` out of range.
        OutputExistsError: the patient folder exists and is not empty.
    """
    from rtdeep.dicomrt.ct_writer import write_ct_series
    from rtdeep.dicomrt.fourd import tag_phase_series, write_projection
    from rtdeep.dicomrt.rtdose_writer import write_rtdose
    from rtdeep.dicomrt.rtplan_writer import write_rtplan
    from rtdeep.dicomrt.rtstruct_writer import write_rtstruct
    from rtdeep.phantom.sites import SITE_SPECS

    if patient.site != "thorax":
        raise RtDeepError(f"4D CT phantoms are thorax only (breathing), got site '{patient.site}'")
    if not 2 <= n_phases <= 20:
        raise RtDeepError(f"--phases must be 2 to 20, got {n_phases}")
    out_dir = Path(out_dir)
    folder = out_dir / patient.patient_id
    if folder.exists() and any(folder.iterdir()):
        raise OutputExistsError("patient folder exists and is not empty; choose a new output folder", path=folder)
    masks = {roi.name: roi.mask for roi in patient.rois}
    spec = SITE_SPECS[patient.site]
    rng = np.random.default_rng([int(patient.seed), spec.number, int(patient.index), _BREATHING_STREAM])
    breathing = sample_breathing(patient.ct, masks, rng)
    lung = masks["Lung_L"] | masks["Lung_R"]
    carried = {name: mask for name, mask in masks.items() if name != "PTV"}
    uid_seed = f"rtdeep-phantom/{patient.seed}/{patient.site}/{patient.index}/{patient.grid}"
    for_uid = make_uid(uid_seed, "frame-of-reference")

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".{patient.patient_id}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        total = np.zeros(patient.ct.shape, np.float64)
        counts = {name: np.zeros(patient.ct.shape, np.uint8) for name in carried}
        itv = np.zeros(patient.ct.shape, bool)
        reference_gtv = _centroid(patient.ct, masks["GTV"])
        trajectory = []
        for index, percent in enumerate(phase_percentages(n_phases)):
            fraction = percent / 100.0
            hu, phase_masks = warp_to_phase(breathing, patient.ct.array, carried, lung, fraction)
            label = f"P{percent:02.0f}"
            phase_seed = f"{uid_seed}/4d/{label}"
            series = write_ct_series(patient.ct.with_array(hu), staging / "4DCT" / label, patient.patient_info,
                                     series_instance_uid=make_uid(phase_seed, "series"),
                                     frame_of_reference_uid=for_uid, uid_seed=phase_seed,
                                     series_description=f"4D CT phase {percent:g}% (rtdeep phantom)")
            tag_phase_series(series, percent, index, n_phases)
            write_rtstruct(series, _phase_rois(patient, phase_masks), staging / "4DCT" / f"RS_{label}.dcm",
                           label=f"PHASE_{label}", generation_algorithm=None, uid_seed=phase_seed,
                           series_description=f"Phantom contours, phase {percent:g}%")
            total += series.volume.array
            for name, mask in phase_masks.items():
                counts[name] += mask
            itv |= phase_masks["GTV"]
            trajectory.append(reference_gtv + breathing.mean_displacement(masks["GTV"], fraction))

        average = patient.ct.with_array((total / n_phases).astype(np.float32))
        planning_masks = {name: count * 2 >= n_phases for name, count in counts.items() if name != "GTV"}
        ptv = _ptv_from_itv(itv, planning_masks["External"], average.spacing_mm)
        planning_rois = _phase_rois(patient, planning_masks)
        next_number = max(roi.number for roi in patient.rois) + 1
        planning_rois.append(Roi("ITV", itv, next_number, (255, 128, 0), "CTV", "MANUAL"))
        planning_rois.append(Roi("PTV", ptv, next_number + 1, patient.roi("PTV").color_rgb, "PTV", "MANUAL"))
        plan, dose, dose_on_ct = _plan_on_average(patient, average, ptv, planning_masks["External"], next_number + 1)

        ct_series = write_projection(average, staging / "CT", patient.patient_info, kind="AIP", n_phases=n_phases,
                                     frame_of_reference_uid=for_uid, uid_seed=uid_seed)
        rs_path = write_rtstruct(ct_series, planning_rois, staging / "RS.dcm", label="PHANTOM_AIP",
                                 generation_algorithm=None, uid_seed=f"{uid_seed}/aip",
                                 series_description="Phantom planning contours on the AIP (ITV)")
        import pydicom

        rs_uid = str(pydicom.dcmread(rs_path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
        rp_path = write_rtplan(plan, ct_series, staging / "RP.dcm", structure_set_uid=rs_uid, uid_seed=f"{uid_seed}/aip")
        rp_uid = str(pydicom.dcmread(rp_path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
        write_rtdose(dose, ct_series, staging / "RD.dcm", referenced_plan_uid=rp_uid, uid_seed=f"{uid_seed}/aip")
        if drr:
            from rtdeep.drr import write_study_drrs

            write_study_drrs(staging, staging / "RTIMAGE", uid_seed=f"{uid_seed}/drr")
        if folder.exists():
            folder.rmdir()
        staging.rename(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return folder, _manifest_row(patient, breathing, np.array(trajectory), itv, ptv, dose_on_ct, average, n_phases)


def _manifest_row(patient: PhantomPatient, breathing: BreathingModel, trajectory: np.ndarray, itv: np.ndarray,
                  ptv: np.ndarray, dose_on_ct: np.ndarray, average: Volume, n_phases: int) -> dict[str, Any]:
    row = {key: value for key, value in patient.outcome.items()}
    # the 3D outcome (risk, grade) belongs to the 3D plan; a 4D row states only what its own plan gives
    for key in ("mld_gy", "v20_pct", "v5_pct", "lkb_ntcp", "ild_in_v20_cc", "image_factor", "risk", "grade",
                "pneumonitis"):
        row[key] = ""
    voxel_cc = average.voxel_volume_cc
    peak_to_peak = trajectory.max(axis=0) - trajectory.min(axis=0)
    row.update({
        "ptv_cc": round(float(ptv.sum()) * voxel_cc, 2),
        "ptv_d95_gy": round(float(np.percentile(dose_on_ct[ptv], 5)), 3),
        "dose_max_gy": round(float(dose_on_ct.max()), 3),
        "n_phases": n_phases,
        "breathing_si_mm": breathing.amplitude_si_mm, "breathing_ap_mm": breathing.amplitude_ap_mm,
        "breathing_lr_mm": breathing.amplitude_lr_mm, "breathing_ap_lag_cycles": breathing.ap_lag_cycles,
        "tumour_p2p_x_mm": round(float(peak_to_peak[0]), 2), "tumour_p2p_y_mm": round(float(peak_to_peak[1]), 2),
        "tumour_p2p_z_mm": round(float(peak_to_peak[2]), 2),
        "tumour_trajectory_mm": ";".join(" ".join(f"{v:.2f}" for v in point) for point in trajectory),
        "itv_cc": round(float(itv.sum()) * voxel_cc, 2),
    })
    return row


def generate_cohort_4d(site: str, n_patients: int, seed: int, out_dir: str | os.PathLike[str],
                       grid: str = "clinical", *, first_index: int = 1, n_phases: int = 10,
                       drr: bool = False) -> Path:
    """Generate ``n_patients`` 4D CT phantoms plus ``out_dir/manifest.csv`` (3D columns + :data:`FOURD_COLUMNS`).

    The same seed gives the same patients as the 3D cohort (end-exhale) and the same files.
    """
    from rtdeep.phantom.cohort import MANIFEST_COLUMNS, check_cohort_outputs

    if site != "thorax":
        raise RtDeepError(f"--4d needs --site thorax (breathing motion), got '{site}'")
    out_dir = Path(out_dir)
    manifest = check_cohort_outputs(out_dir, site, first_index, n_patients)
    rows = []
    for index in progress(range(first_index, first_index + n_patients), f"phantom {site} 4D", total=n_patients):
        folder, row = write_4d_patient(generate_patient(site, index, seed, grid), out_dir, n_phases, drr=drr)
        row["study_dir"] = folder.relative_to(out_dir).as_posix()
        rows.append(row)
    columns = list(MANIFEST_COLUMNS) + FOURD_COLUMNS

    def write(path: Path) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key, "") for key in columns})
        path.write_text(buffer.getvalue(), encoding="utf-8")

    return atomic_write(manifest, write)
