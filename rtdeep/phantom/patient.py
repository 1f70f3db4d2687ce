"""One phantom patient: CT, ROIs, plan, dose and outcome, in memory and as DICOM files.

Example:
    >>> patient = generate_patient("thorax", index=7, seed=1, grid="small")
    >>> folder = write_patient(patient, "cohort")      # cohort/RTD-THX-0007/{CT/, RS.dcm, RP.dcm, RD.dcm}
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtdeep.dicomrt.types import Beam, PatientInfo, PlanSummary, Roi
from rtdeep.dicomrt.uids import make_uid
from rtdeep.errors import RtDeepError
from rtdeep.fileio import OutputExistsError
from rtdeep.phantom import dose as dose_model
from rtdeep.phantom.grid import GRID_KINDS, ct_grid, dose_grid, resample_to_grid
from rtdeep.phantom.scanner import apply_scanner
from rtdeep.phantom.sites import SITE_SPECS, PhantomSite
from rtdeep.volume import Volume

__all__ = ["SITES", "STUDY_DATE", "PhantomPatient", "generate_patient", "patient_id_for", "write_patient"]

SITES = tuple(SITE_SPECS)
STUDY_DATE = "20240115"
DOSE_SPACING_MM = 4.0


@dataclass
class PhantomPatient:
    """A synthetic patient.

    Attributes:
        patient_id: e.g. ``RTD-THX-0007``.
        site: ``thorax`` or ``headneck``.
        ct: HU, float32 ``[k, j, i]``, axial LPS, head-first supine (i -> +x left, j -> +y
            posterior, k -> +z superior).
        rois: TG-263-named structures with colours and interpreted types, masks on the CT grid.
        dose: plan dose in Gy on the 4 mm dose grid (what RD.dcm holds).
        dose_on_ct: the same dose resampled (trilinear) to the CT grid.
        plan: beams, prescription, isocentre.
        outcome: the manifest row (dose metrics, image factor, risk, grade...).
        ild_mask: interstitial-abnormality mask on the CT grid (thorax; None otherwise).
    """

    patient_id: str
    site: str
    index: int
    seed: int
    grid: str
    ct: Volume
    rois: list[Roi]
    dose: Volume
    dose_on_ct: Volume
    plan: PlanSummary
    outcome: dict[str, Any]
    patient_info: PatientInfo
    ild_mask: np.ndarray | None = None

    def roi(self, name: str) -> Roi:
        for roi in self.rois:
            if roi.name == name:
                return roi
        raise KeyError(name)


def patient_id_for(site: str, index: int) -> str:
    return f"RTD-{SITE_SPECS[site].code}-{index:04d}"


def _site(site: str) -> PhantomSite:
    if site not in SITE_SPECS:
        raise RtDeepError(f"site must be one of {', '.join(SITE_SPECS)}, got '{site}'")
    return SITE_SPECS[site]


def _rng(seed: int, spec: PhantomSite, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), spec.number, int(index), stream])


def _beam_angles(spec: PhantomSite, model: Any, rng: np.random.Generator) -> list[float]:
    if spec.name == "headneck":
        start = float(rng.uniform(0, 20))
        return [round((start + i * 360.0 / 7) % 360, 1) for i in range(7)]
    n_beams = int(rng.choice([5, 6, 7]))
    first, last = 330.0 + rng.uniform(-15, 15), 180.0 + rng.uniform(-15, 15)
    angles = np.linspace(first, last + 360.0 if last < first else last, n_beams) % 360
    if model.gtv_side == "R":
        angles = (360.0 - angles) % 360
    return [round(float(a), 1) for a in angles]


def _d95(values: np.ndarray) -> float:
    return float(np.percentile(values, 5)) if values.size else 0.0


def generate_patient(site: str, index: int, seed: int, grid: str = "clinical") -> PhantomPatient:
    """Generate one synthetic patient in memory (deterministic for ``site, index, seed``).

    Args:
        site: ``thorax`` or ``headneck``.
        index: patient number within the cohort (part of the patient ID).
        seed: cohort seed.
        grid: ``clinical`` (512x512, 0.8-1.2 mm pixels, 2.5-3 mm slices) or ``small`` (128x128,
            same field of view and the same patient).

    Returns:
        A :class:`PhantomPatient`.
    """
    spec = _site(site)
    if grid not in GRID_KINDS:
        raise RtDeepError(f"grid must be one of {GRID_KINDS}, got '{grid}'")
    model = spec.sample(_rng(seed, spec, index, 0))
    ct_spec = ct_grid(grid, model.fov_mm, model.fov_centre, model.z_range, model.pixel_mm, model.slice_mm)
    edge_mm = max(1.1, 0.9 * ct_spec.spacing_mm[0])
    canvas = spec.render(model, ct_spec, edge_mm=edge_mm, fine_texture=grid == "clinical")
    noise_seed = int.from_bytes(make_uid(seed, spec.name, index, grid, "noise").encode()[-8:], "big") % (2**32)
    hu = apply_scanner(canvas.hu, canvas.masks, ct_spec, model.scanner, model.fov_centre, grid, noise_seed,
                       canvas.streaks)
    ct = ct_spec.volume(hu)

    rois = []
    for number, style in enumerate(model.rois(), start=1):
        rois.append(Roi(name=style.name, mask=canvas.mask(style.name), number=number, color_rgb=style.color_rgb,
                        interpreted_type=style.interpreted_type, generation_algorithm="MANUAL"))
    ptv_number = next(r.number for r in rois if r.interpreted_type == "PTV")

    # dose: density and PTV from the same model on a coarse grid
    lo, hi = model.bbox()
    d_grid = dose_grid(lo, hi, DOSE_SPACING_MM)
    coarse = spec.render(model, d_grid, edge_mm=DOSE_SPACING_MM, fine_texture=False)
    ptv_coarse = coarse.mask("PTV")
    if not ptv_coarse.any():
        raise RtDeepError(f"phantom {patient_id_for(site, index)}: the PTV is empty on the dose grid", roi="PTV")
    kk, jj, ii = np.nonzero(ptv_coarse)
    iso = d_grid.volume(ptv_coarse).index_to_lps(np.array([ii.mean(), jj.mean(), kk.mean()]))
    iso = np.round(iso, 1)
    beam_rng = _rng(seed, spec, index, 1)
    angles = _beam_angles(spec, model, beam_rng)
    beams = [dose_model.BeamSpec(a) for a in angles]
    relative, mu_per_unit = dose_model.compute_dose(dose_model.density_from_hu(coarse.hu), ptv_coarse,
                                                     coarse.mask("External").astype(np.float32), d_grid, iso, beams)
    relative_ct = resample_to_grid(relative, d_grid, ct_spec)
    ptv_mask = canvas.mask("PTV")
    scale = spec.prescription_gy / max(_d95(relative_ct[ptv_mask]), 1e-6)
    dose_gy = (relative * np.float32(scale)).astype(np.float32)
    dose_ct = (relative_ct * np.float32(scale)).astype(np.float32)

    pid = patient_id_for(site, index)
    plan = PlanSummary(
        label=f"{spec.code}_{spec.prescription_gy:.0f}Gy"[:16],
        prescription_gy=spec.prescription_gy,
        fractions=spec.fractions,
        beams=[Beam(name=f"G{angle:05.1f}", number=i + 1, gantry_angles_deg=[angle], energy="6",
                    radiation_type="PHOTON", meterset_mu=round(float(scale * mu_per_unit[i] / spec.fractions), 1),
                    isocenter_lps=(float(iso[0]), float(iso[1]), float(iso[2])))
               for i, angle in enumerate(angles)],
        target_roi_number=ptv_number,
    )
    info = PatientInfo(
        patient_name=f"PHANTOM^{spec.name.upper()}^{index:04d}",
        patient_id=pid,
        patient_birth_date="19550101",
        patient_sex="O",
        study_instance_uid=make_uid("rtdeep-phantom", seed, spec.name, index, "study"),
        study_date=STUDY_DATE,
        study_time="090000",
        study_id=f"{index:04d}"[:16],
        study_description=f"Synthetic {spec.name} phantom (rtdeep)",
        accession_number="",
        referring_physician_name="",
    )
    outcome = spec.outcome(model, canvas, ct_spec, dose_ct, _rng(seed, spec, index, 2))
    gtv = canvas.mask("GTV")
    kk, jj, ii = np.nonzero(gtv)
    centre = ct.index_to_lps(np.array([ii.mean(), jj.mean(), kk.mean()])) if len(kk) else np.zeros(3)
    row: dict[str, Any] = {
        "patient_id": pid, "site": spec.name, "index": index, "seed": seed, "grid": grid,
        "tumour_x_mm": round(float(centre[0]), 1), "tumour_y_mm": round(float(centre[1]), 1),
        "tumour_z_mm": round(float(centre[2]), 1), "tumour_side": getattr(model, "gtv_side", ""),
        "gtv_cc": round(float(gtv.sum()) * ct.voxel_volume_cc, 2),
        "ptv_cc": round(float(ptv_mask.sum()) * ct.voxel_volume_cc, 2),
        "prescription_gy": spec.prescription_gy, "fractions": spec.fractions,
        "ptv_d95_gy": round(_d95(dose_ct[ptv_mask]), 3), "dose_max_gy": round(float(dose_ct.max()), 3),
        "n_beams": len(beams),
    }
    row.update(outcome)
    row.update(model.scanner.manifest_row())
    return PhantomPatient(pid, spec.name, index, seed, grid, ct, rois, d_grid.volume(dose_gy), ct_spec.volume(dose_ct),
                          plan, row, info, canvas.masks.get("ILD"))


def write_patient(patient: PhantomPatient, out_dir: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``out_dir/<patient_id>/`` with ``CT/`` (one file per slice), ``RS.dcm``, ``RP.dcm``, ``RD.dcm``.

    UIDs derive from (seed, site, index) and dates are fixed, so the same patient writes the same
    bytes. The files go to a hidden temporary folder first and are renamed into place at the end.

    Raises:
        OutputExistsError: the patient folder exists and is not empty (unless ``overwrite``).
    """
    import pydicom

    from rtdeep.dicomrt.ct_writer import write_ct_series
    from rtdeep.dicomrt.rtdose_writer import write_rtdose
    from rtdeep.dicomrt.rtplan_writer import write_rtplan
    from rtdeep.dicomrt.rtstruct_writer import write_rtstruct

    out_dir = Path(out_dir)
    folder = out_dir / patient.patient_id
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise OutputExistsError("patient folder exists and is not empty; choose a new output folder", path=folder)
        shutil.rmtree(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".{patient.patient_id}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    uid_seed = f"rtdeep-phantom/{patient.seed}/{patient.site}/{patient.index}/{patient.grid}"
    try:
        ct_series = write_ct_series(patient.ct, staging / "CT", patient.patient_info,
                                    series_instance_uid=make_uid(uid_seed, "ct-series"),
                                    frame_of_reference_uid=make_uid(uid_seed, "frame-of-reference"),
                                    uid_seed=uid_seed, series_description="Synthetic CT (rtdeep phantom)")
        rs_path = write_rtstruct(ct_series, patient.rois, staging / "RS.dcm", label="PHANTOM",
                                 generation_algorithm=None, uid_seed=uid_seed,
                                 series_description="Phantom reference contours")
        rs_uid = str(pydicom.dcmread(rs_path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
        rp_path = write_rtplan(patient.plan, ct_series, staging / "RP.dcm", structure_set_uid=rs_uid, uid_seed=uid_seed)
        rp_uid = str(pydicom.dcmread(rp_path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
        write_rtdose(patient.dose, ct_series, staging / "RD.dcm", referenced_plan_uid=rp_uid, uid_seed=uid_seed)
        if folder.exists():
            folder.rmdir()
        staging.rename(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return folder
