"""Write crops for learning: MATLAB ``.mat`` (as in the talk), NumPy ``.npz`` and NIfTI.

Array orders differ by format, and each file says which it uses:

* ``.npz``: rtdeep's own order ``[k, j, i]`` (slice, row, column) plus the 4x4 index(i, j, k) ->
  LPS affine; :func:`load_crop_npz` reads it back into a :class:`~rtdeep.crop.Crop`.
* ``.mat``: MATLAB's image order ``(row, column, slice)`` = ``[j, i, k]``, so ``imshow(ct(:,:,s))``
  shows an axial slice upright; ``affine_lps`` maps 0-based (i, j, k) to LPS mm.
* NIfTI: ``[i, j, k]`` with the RAS affine (x and y of the LPS affine negated), so ITK-SNAP,
  nibabel and Slicer place it where the CT is.

Nothing is overwritten unless asked; files appear atomically. :func:`export_crops` crops a whole
cohort (a manifest from ``rtdeep phantom`` or any CSV with ``study_dir``) into one folder with an
index CSV, staging the work so a failure leaves nothing behind.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from rtdeep.crop import Crop, CropSpec, FixedCrop
from rtdeep.errors import CropError, RtDeepError
from rtdeep.fileio import OutputExistsError, atomic_write
from rtdeep.names import NameMatch
from rtdeep.volume import Volume, ras_from_lps_affine

__all__ = [
    "CROP_FORMATS",
    "export_crops",
    "load_crop_npz",
    "publish_staged",
    "read_manifest",
    "save_crop_mat",
    "save_crop_nifti",
    "save_crop_npz",
    "save_nifti",
]

def _spec_mat(spec: CropSpec) -> dict:
    return {
        "name": spec.name,
        "include": np.array(spec.include, dtype=object),
        "exclude": np.array(spec.exclude, dtype=object),
        "dose_threshold_gy": np.nan if spec.dose_threshold_gy is None else spec.dose_threshold_gy,
        "margin_mm": spec.margin_mm,
        "fill_hu": np.nan if spec.fill_hu is None else spec.fill_hu,
    }


def _to_matlab(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(array, (1, 2, 0)))


def save_crop_mat(
    crop: Crop, path: str | PathLike[str], *, patient_id: str = "", overwrite: bool = False
) -> Path:
    """Write a crop as a MATLAB v5 ``.mat`` file.

    Variables: ``ct`` (HU, single), ``mask`` (logical), ``dose`` (Gy, single; absent without
    dose), all ``(row, column, slice)``; ``spacing_mm`` (i, j, k), ``origin_lps`` (mm),
    ``affine_lps`` (0-based i, j, k -> LPS), ``bbox_lps`` (2x3: min and max voxel centre),
    ``crop`` (struct: name, include, exclude, dose_threshold_gy, margin_mm, fill_hu; NaN = none),
    ``used_names`` (requested -> used), ``patient_id``, ``array_order``.
    """
    from scipy.io import savemat

    data = {
        "ct": _to_matlab(crop.ct.array.astype(np.float32)),
        "mask": _to_matlab(crop.mask.array.astype(bool)),
        "spacing_mm": crop.ct.spacing_mm,
        "origin_lps": crop.ct.origin_lps,
        "affine_lps": crop.ct.affine,
        "bbox_lps": np.stack(crop.bbox_lps),
        "crop": _spec_mat(crop.spec),
        "used_names": np.array([m.describe() for m in crop.used_names], dtype=object),
        "patient_id": patient_id,
        "array_order": "row, column, slice (j, i, k); affine_lps maps 0-based (i, j, k) to LPS mm",
    }
    if crop.dose is not None:
        data["dose"] = _to_matlab(crop.dose.array.astype(np.float32))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            savemat(handle, data, do_compression=True, oned_as="row")

    return atomic_write(path, write, overwrite)


def save_crop_npz(
    crop: Crop,
    path: str | PathLike[str],
    *,
    patient_id: str = "",
    fixed: FixedCrop | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a crop as a compressed ``.npz`` (``[k, j, i]`` arrays, affine, JSON metadata).

    With ``fixed`` (from :func:`rtdeep.crop.resample_fixed`) the model-sized arrays are added as
    ``fixed_ct``, ``fixed_mask``, ``fixed_dose`` and ``fixed_affine_lps``.
    """
    arrays = {
        "ct": crop.ct.array.astype(np.float32),
        "mask": crop.mask.array.astype(bool),
        "affine_lps": crop.ct.affine,
        "bbox_lps": np.stack(crop.bbox_lps),
        "bbox_index": np.array(crop.bbox_index, dtype=np.int64),
        "metadata": np.array(json.dumps({
            "patient_id": patient_id,
            "spec": crop.spec.to_dict(),
            "used_names": [[m.requested, m.used, m.how] for m in crop.used_names],
            "warnings": crop.warnings,
            "array_order": "k, j, i",
        })),
    }
    if crop.dose is not None:
        arrays["dose"] = crop.dose.array.astype(np.float32)
    if fixed is not None:
        arrays.update(fixed_ct=fixed.ct, fixed_mask=fixed.mask, fixed_affine_lps=fixed.affine)
        if fixed.dose is not None:
            arrays["fixed_dose"] = fixed.dose

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    return atomic_write(path, write, overwrite)


def load_crop_npz(path: str | PathLike[str]) -> tuple[Crop, str]:
    """Read a crop written by :func:`save_crop_npz`.

    Returns:
        ``(crop, patient_id)``.
    """
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["metadata"]))
        affine = data["affine_lps"]
        spec_fields = meta["spec"]
        spec = CropSpec(**{**spec_fields, "include": tuple(spec_fields["include"]),
                           "exclude": tuple(spec_fields["exclude"])})
        ct = Volume(data["ct"], affine)
        crop = Crop(
            ct=ct,
            mask=Volume(data["mask"], affine),
            dose=Volume(data["dose"], affine) if "dose" in data else None,
            bbox_lps=(data["bbox_lps"][0], data["bbox_lps"][1]),
            bbox_index=tuple(tuple(int(v) for v in row) for row in data["bbox_index"]),  # type: ignore[arg-type]
            spec=spec,
            used_names=[NameMatch(*m) for m in meta["used_names"]],
            warnings=list(meta["warnings"]),
        )
    return crop, str(meta["patient_id"])


def save_nifti(volume: Volume, path: str | PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a Volume as NIfTI-1 (``.nii`` or ``.nii.gz``): data ``[i, j, k]``, RAS affine.

    Bool arrays are written as uint8.
    """
    import nibabel as nib

    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    image = nib.Nifti1Image(np.ascontiguousarray(np.transpose(array, (2, 1, 0))), ras_from_lps_affine(volume.affine))
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    payload = image.to_bytes()
    compressed = str(path).endswith(".gz")

    def write(tmp: Path) -> None:
        tmp.write_bytes(gzip.compress(payload, compresslevel=6, mtime=0) if compressed else payload)

    return atomic_write(path, write, overwrite)


def save_crop_nifti(
    crop: Crop, stem: str | PathLike[str], *, overwrite: bool = False
) -> dict[str, Path]:
    """Write ``<stem>_ct.nii.gz``, ``<stem>_mask.nii.gz`` and (with dose) ``<stem>_dose.nii.gz``."""
    stem = str(stem)
    paths = {"ct": save_nifti(crop.ct, f"{stem}_ct.nii.gz", overwrite=overwrite),
             "mask": save_nifti(crop.mask, f"{stem}_mask.nii.gz", overwrite=overwrite)}
    if crop.dose is not None:
        paths["dose"] = save_nifti(crop.dose, f"{stem}_dose.nii.gz", overwrite=overwrite)
    return paths


CROP_FORMATS = ("mat", "npz", "nifti")


def read_manifest(path: str | PathLike[str]) -> tuple[list[dict[str, str]], list[str]]:
    """Read a cohort manifest: rows (each with ``study_path`` resolved against the manifest's
    folder) and the CSV's column names. The ``study_dir`` column is required.

    Raises:
        CropError: no ``study_dir`` column or no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    if "study_dir" not in columns:
        raise CropError(f"manifest has no 'study_dir' column (columns: {', '.join(columns)})", path=path)
    if not rows:
        raise CropError("manifest lists no study", path=path)
    for row in rows:
        row["study_path"] = str((path.parent / row["study_dir"]).resolve())
    return rows, columns


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text) or "patient"


def _crop_row(row: Mapping[str, str], spec: CropSpec, stage: Path, formats: Sequence[str],
              size: Sequence[int] | None, prescription_gy: float | None,
              series_instance_uid: str | None = None) -> dict[str, object]:
    from rtdeep.crop import crop_study, resample_fixed
    from rtdeep.dicomrt.study import load_study

    study_dir = Path(row["study_path"])
    if not study_dir.is_dir():
        raise FileNotFoundError(f"{study_dir}: study folder not found")
    try:
        study = load_study(study_dir, prescription_gy=prescription_gy, require=("RTSTRUCT",),
                           series_instance_uid=series_instance_uid or row.get("series_uid") or None)
        crop = crop_study(study.ct.volume, study.structure_set, study.dose, spec)
    except RtDeepError as error:
        if error.path:
            raise
        raise type(error)(error.message, path=study_dir, tag=error.tag, roi=error.roi) from error
    patient_id = row.get("patient_id") or study.ct.patient.patient_id or study_dir.name
    stem = stage / "crops" / f"{_safe(patient_id)}_{spec.name}"
    files: list[Path] = []
    if "mat" in formats:
        files.append(save_crop_mat(crop, f"{stem}.mat", patient_id=patient_id))
    if "npz" in formats:
        fixed = resample_fixed(crop, tuple(size)) if size else None  # type: ignore[arg-type]
        files.append(save_crop_npz(crop, f"{stem}.npz", patient_id=patient_id, fixed=fixed))
    if "nifti" in formats:
        files.extend(save_crop_nifti(crop, stem).values())
    low, high = crop.bbox_lps
    mean_dose = crop.mean_dose_gy()
    return {
        "patient_id": patient_id,
        "roi": spec.name,
        "dose_threshold_gy": "" if spec.dose_threshold_gy is None else spec.dose_threshold_gy,
        "files": ";".join(str(p.relative_to(stage)) for p in files),
        "mask_volume_cc": round(crop.mask_volume_cc, 3),
        "mask_voxels": int(crop.mask.array.sum()),
        "mean_dose_gy": "" if mean_dose is None else round(mean_dose, 4),
        "shape_kji": "x".join(str(n) for n in crop.ct.shape),
        "bbox_lps_min_mm": " ".join(f"{v:.2f}" for v in low),
        "bbox_lps_max_mm": " ".join(f"{v:.2f}" for v in high),
        "used_names": "; ".join(m.describe() for m in crop.used_names),
        "warnings": " | ".join(crop.warnings),
        "error": "",
    }


def publish_staged(stage: Path, out_dir: Path) -> list[Path]:
    """Move every file under ``stage`` to the same place under ``out_dir``, refusing (before
    moving any) when one already exists there."""
    staged = [p for p in sorted(stage.rglob("*")) if p.is_file()]
    clashes = [out_dir / p.relative_to(stage) for p in staged if (out_dir / p.relative_to(stage)).exists()]
    if clashes:
        raise OutputExistsError(f"output exists ({len(clashes)} file(s)); choose a new output folder",
                                path=clashes[0])
    moved = []
    for path in staged:
        target = out_dir / path.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        moved.append(target)
    return moved


def export_crops(
    studies: Sequence[Mapping[str, str]],
    spec: CropSpec,
    out_dir: str | PathLike[str],
    *,
    columns: Sequence[str] = ("study_dir",),
    formats: Sequence[str] = ("mat", "npz"),
    size: Sequence[int] | None = None,
    prescription_gy: float | None = None,
    series_instance_uid: str | None = None,
    keep_going: bool = False,
    progress_description: str | None = "crop",
) -> Path:
    """Crop every study and write the files plus ``index.csv`` into ``out_dir``.

    Args:
        studies: rows with ``study_path`` (the folder) and any other columns (``patient_id``,
            labels) to carry into the index, e.g. from :func:`read_manifest`.
        spec: the crop.
        out_dir: output folder (created; existing files are never replaced).
        columns: column order for the carried fields (the manifest's).
        formats: any of ``mat``, ``npz``, ``nifti``.
        size: also store a :func:`rtdeep.crop.resample_fixed` crop of this ``[k, j, i]`` size in the .npz.
        prescription_gy: for RELATIVE doses.
        series_instance_uid: the CT series to crop when a study folder holds several (else a
            manifest's ``series_uid`` column).
        keep_going: record a failing study's error in the index (``error`` column) and go on;
            otherwise the first error is raised and nothing is written.
        progress_description: progress bar label (None: no bar).

    Returns:
        The index CSV path: one row per study, the carried columns then ``patient_id, roi,
        dose_threshold_gy, files`` (relative to ``out_dir``, ``;``-separated), ``mask_volume_cc,
        mask_voxels, mean_dose_gy, shape_kji, bbox_lps_min_mm, bbox_lps_max_mm, used_names,
        warnings, error``.
    """
    from rtdeep.progress import progress

    unknown = set(formats) - set(CROP_FORMATS)
    if unknown:
        raise CropError(f"unknown format(s) {', '.join(sorted(unknown))}; expected {', '.join(CROP_FORMATS)}")
    out = Path(out_dir)
    if (out / "index.csv").exists():
        raise OutputExistsError("an index.csv is already there; choose a new output folder", path=out / "index.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.rtdeep-crop-", dir=out.parent))
    try:
        records = []
        rows = progress(studies, progress_description, total=len(studies)) if progress_description else studies
        for row in rows:
            try:
                record = _crop_row(row, spec, stage, formats, size, prescription_gy, series_instance_uid)
            except (RtDeepError, FileNotFoundError) as error:
                if not keep_going:
                    raise
                record = {"roi": spec.name, "error": str(error)}
            carried = {k: v for k, v in row.items() if k != "study_path"}
            records.append({**carried, **{k: v for k, v in record.items() if not (k == "patient_id" and row.get(k))}})
        fields = [c for c in columns if c != "study_path"]
        for record in records:
            fields += [k for k in record if k not in fields]
        with open(stage / "index.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows(records)
        publish_staged(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out / "index.csv"
