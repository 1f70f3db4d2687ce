"""A synthetic cohort on disk: one folder per patient and a manifest CSV."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from rtdeep.fileio import atomic_write
from rtdeep.phantom.patient import generate_patient, patient_id_for, write_patient
from rtdeep.progress import progress

__all__ = ["MANIFEST_COLUMNS", "check_cohort_outputs", "generate_cohort"]

#: manifest columns in order (thorax outcome columns are empty for head and neck)
MANIFEST_COLUMNS = [
    "patient_id", "site", "study_dir", "index", "seed", "grid", "tumour_side", "tumour_x_mm", "tumour_y_mm",
    "tumour_z_mm", "gtv_cc", "ptv_cc", "prescription_gy", "fractions", "n_beams", "ptv_d95_gy", "dose_max_gy",
    "mld_gy", "v20_pct", "v5_pct", "lkb_ntcp", "lung_cc", "ild_patches", "ild_near_tumour", "ild_volume_cc",
    "ild_in_v20_cc", "image_factor", "risk", "grade", "pneumonitis",
    "parotid_l_mean_gy", "parotid_r_mean_gy", "glnd_submand_l_mean_gy", "glnd_submand_r_mean_gy",
    "spinalcord_max_gy", "brainstem_max_gy",
    # how the patient was scanned (rtdeep.phantom.scanner)
    "scanner_slice_mm", "scanner_pixel_mm", "scanner_fov_mm", "scanner_noise_hu", "scanner_kernel",
    "scanner_hu_offset", "scanner_cupping_hu", "scanner_streak_hu", "scanner_couch", "scanner_contrast",
]


def check_cohort_outputs(out_dir: Path, site: str, first_index: int, n_patients: int) -> Path:
    """The cohort's manifest path, after checking that neither it nor a patient folder already holds files.

    Raises:
        OutputExistsError: the manifest exists, or a patient folder exists and is not empty.
    """
    from rtdeep.fileio import OutputExistsError

    manifest = out_dir / "manifest.csv"
    if manifest.exists():
        raise OutputExistsError("a manifest already exists here; choose a new output folder", path=manifest)
    for index in range(first_index, first_index + n_patients):
        folder = out_dir / patient_id_for(site, index)
        if folder.exists() and any(folder.iterdir()):
            raise OutputExistsError("patient folder exists and is not empty; choose a new output folder", path=folder)
    return manifest


def generate_cohort(site: str, n_patients: int, seed: int, out_dir: str | os.PathLike[str], grid: str = "clinical",
                    *, first_index: int = 1) -> Path:
    """Generate and write ``n_patients`` phantoms plus ``out_dir/manifest.csv``.

    Args:
        site: ``thorax`` or ``headneck``.
        n_patients: how many patients (indices ``first_index`` ...).
        seed: cohort seed; the same seed writes the same files.
        out_dir: output folder; a non-empty patient folder in it is never overwritten.
        grid: ``clinical`` or ``small``.

    Returns:
        Path of the manifest CSV (its ``study_dir`` column is relative to the manifest's folder).
    """
    out_dir = Path(out_dir)
    manifest = check_cohort_outputs(out_dir, site, first_index, n_patients)
    rows: list[dict[str, Any]] = []
    indices = range(first_index, first_index + n_patients)
    for index in progress(indices, f"phantom {site}", total=n_patients):
        patient = generate_patient(site, index, seed, grid)
        folder = write_patient(patient, out_dir)
        row = dict(patient.outcome)
        row["study_dir"] = folder.relative_to(out_dir).as_posix()
        rows.append(row)

    def write(path: Path) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key, "") for key in MANIFEST_COLUMNS})
        path.write_text(buffer.getvalue(), encoding="utf-8")

    return atomic_write(manifest, write)
