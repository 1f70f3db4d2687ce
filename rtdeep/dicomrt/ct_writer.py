"""Write a Hounsfield-unit :class:`~rtdeep.volume.Volume` as a CT Image Storage series.

One file per slice (``CT_0001.dcm`` ...). Pixels are stored as signed 16-bit integers with
``RescaleIntercept -1024`` and ``RescaleSlope 1`` (stored value = round(HU) + 1024, the convention
of many clinical scanners), so HU from -33792 to 31743 are exact to the nearest integer.
Geometry comes from the Volume's affine: ``ImageOrientationPatient`` from the i (row) and j
(column) directions, ``ImagePositionPatient`` of each slice from voxel (0, 0, k); oblique grids are
written as they are. A grid whose k axis points against ``cross(row, column)`` is flipped so that
slices go in increasing position along the normal (the order readers return).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rtdeep.dicomrt._writer_common import (
    format_ds,
    new_dataset,
    now_date_time,
    save_dataset,
    set_equipment,
    set_patient_study,
)
from rtdeep.dicomrt.types import CtSeries, PatientInfo
from rtdeep.dicomrt.uids import CT_IMAGE_STORAGE, make_uid
from rtdeep.errors import GeometryError, SeriesError
from rtdeep.fileio import ensure_new_path
from rtdeep.volume import Volume

__all__ = ["RESCALE_INTERCEPT", "slice_geometry", "write_ct_series"]

#: stored value = HU - RESCALE_INTERCEPT
RESCALE_INTERCEPT = -1024.0


def slice_geometry(volume: Volume, tolerance: float = 1e-4) -> tuple[Volume, np.ndarray, np.ndarray]:
    """Check that ``volume`` can be stored as parallel slices; return it in normal order.

    Returns:
        (volume with k along ``cross(row, col)``, row direction (i), column direction (j)), LPS.

    Raises:
        GeometryError: non-orthogonal row/column axes or slices sheared off the normal.
    """
    axes = volume.affine[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing <= 0):
        raise GeometryError(f"zero voxel spacing {spacing.tolist()} mm in the affine")
    row_dir, col_dir, k_dir = (axes / spacing).T
    if abs(float(row_dir @ col_dir)) > tolerance:
        raise GeometryError("row and column directions of the affine are not orthogonal")
    normal = np.cross(row_dir, col_dir)
    if np.linalg.norm(np.cross(normal, k_dir)) > tolerance:
        raise GeometryError("slices are sheared: the k axis is not along the slice normal")
    if float(normal @ k_dir) < 0:
        affine = volume.affine.copy()
        affine[:3, 3] = volume.index_to_lps(np.array([0.0, 0.0, volume.shape[0] - 1]))
        affine[:3, 2] = -affine[:3, 2]
        volume = Volume(volume.array[::-1], affine)
    return volume, row_dir, col_dir


def write_ct_series(
    hu: Volume,
    out_dir: str | os.PathLike[str],
    patient: PatientInfo,
    *,
    series_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    uid_seed: object | None = None,
    series_description: str = "",
    overwrite: bool = False,
) -> CtSeries:
    """Write ``hu`` as one CT Image Storage file per slice in ``out_dir``.

    Args:
        hu: Hounsfield units ``[k, j, i]`` with an index-to-LPS affine (oblique allowed).
        out_dir: folder for ``CT_0001.dcm`` ... (created if missing).
        patient: patient and study attributes; ``study_instance_uid`` is generated when empty.
        series_instance_uid, frame_of_reference_uid: UIDs to use (generated when None).
        uid_seed: when given, every generated UID is deterministic (``make_uid(uid_seed, "ct", ...)``)
            and the instance dates are fixed, so the same call writes the same files.
        series_description: SeriesDescription (LO).
        overwrite: replace existing files of the same names (default: refuse before writing any).

    Returns:
        The written :class:`CtSeries`: volume holds the stored HU (rounded, float32) in k order
        along the slice normal, with the SOP instance UIDs and files in that order.

    Raises:
        GeometryError: the affine cannot be stored as parallel DICOM slices.
        SeriesError: non-finite HU values.
        OutputExistsError: a target file exists and ``overwrite`` is False.
    """
    volume, row_dir, col_dir = slice_geometry(hu)
    if not np.all(np.isfinite(volume.array)):
        raise SeriesError("HU volume contains NaN or infinite values", path=out_dir)
    n_slices, n_rows, n_cols = volume.shape
    out_dir = Path(out_dir)
    paths = [out_dir / f"CT_{k + 1:04d}.dcm" for k in range(n_slices)]
    for path in paths:
        ensure_new_path(path, overwrite)

    seeded = uid_seed is not None

    def uid(*parts: object) -> str:
        return make_uid(uid_seed, "ct", *parts) if seeded else make_uid()

    patient = PatientInfo(**vars(patient))
    if not patient.study_instance_uid:
        patient.study_instance_uid = uid("study")
    series_uid = series_instance_uid or uid("series")
    for_uid = frame_of_reference_uid or uid("frame-of-reference")
    sop_uids = [uid("instance", k) for k in range(n_slices)]

    stored = np.clip(np.rint(np.asarray(volume.array, dtype=np.float64)) - RESCALE_INTERCEPT, -32768, 32767)
    stored = stored.astype("<i2")

    spacing = volume.spacing_mm
    dataset = new_dataset(CT_IMAGE_STORAGE, sop_uids[0])
    set_patient_study(dataset, patient)
    created_date, created_time = now_date_time(seeded)
    dataset.InstanceCreationDate = created_date
    dataset.InstanceCreationTime = created_time
    dataset.Modality = "CT"
    dataset.SeriesInstanceUID = series_uid
    dataset.SeriesNumber = 1
    dataset.SeriesDate = patient.study_date
    dataset.SeriesTime = patient.study_time
    dataset.SeriesDescription = series_description
    dataset.PatientPosition = volume.patient_position
    dataset.Laterality = ""
    dataset.FrameOfReferenceUID = for_uid
    dataset.PositionReferenceIndicator = ""
    set_equipment(dataset)
    dataset.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    dataset.AcquisitionNumber = 1
    dataset.ContentDate = patient.study_date
    dataset.ContentTime = patient.study_time
    dataset.PixelSpacing = [format_ds(spacing[1]), format_ds(spacing[0])]
    dataset.ImageOrientationPatient = [format_ds(v) for v in (*row_dir, *col_dir)]
    dataset.SliceThickness = format_ds(spacing[2])
    dataset.SpacingBetweenSlices = format_ds(spacing[2])
    dataset.KVP = "120"
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows = n_rows
    dataset.Columns = n_cols
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 1
    dataset.RescaleIntercept = format_ds(RESCALE_INTERCEPT)
    dataset.RescaleSlope = "1"
    dataset.RescaleType = "HU"
    dataset.WindowCenter = "40"
    dataset.WindowWidth = "400"
    dataset.WindowCenterWidthExplanation = "SOFT_TISSUE"

    normal = np.cross(row_dir, col_dir)
    for k, path in enumerate(paths):
        position = volume.index_to_lps(np.array([0.0, 0.0, float(k)]))
        dataset.SOPInstanceUID = sop_uids[k]
        dataset.file_meta.MediaStorageSOPInstanceUID = sop_uids[k]
        dataset.InstanceNumber = k + 1
        dataset.ImagePositionPatient = [format_ds(v) for v in position]
        dataset.SliceLocation = format_ds(float(position @ normal))
        dataset.PixelData = stored[k].tobytes()
        save_dataset(dataset, path, overwrite=overwrite)

    written = Volume((stored.astype(np.float32) + np.float32(RESCALE_INTERCEPT)), volume.affine)
    return CtSeries(
        volume=written,
        sop_instance_uids=sop_uids,
        series_instance_uid=series_uid,
        frame_of_reference_uid=for_uid,
        patient=patient,
        sop_class_uid=CT_IMAGE_STORAGE,
        files=paths,
        series_description=series_description,
    )
