"""Read an RT Dose (Gy on its own grid) and resample it onto a CT grid.

Relative doses (DoseUnits RELATIVE) are refused unless a prescription is given. Then the values
(after DoseGridScaling) are read as *fractions of the prescription* (1.0 = 100 %); when their
maximum exceeds :data:`PERCENT_THRESHOLD` they are read as *percent* of the prescription instead
(no real plan has a hot spot of five times its prescription), and a warning says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pydicom

from rtdeep.dicomrt.ct_reader import check_orientation
from rtdeep.dicomrt.dataset import (
    check_voxels,
    finite_floats,
    int_value,
    quiet_pydicom,
    read_rt_dataset,
    reading,
    text,
)
from rtdeep.dicomrt.types import CtSeries, DoseGrid
from rtdeep.errors import DicomReadError, DoseError, FrameOfReferenceError
from rtdeep.resample import sample_on_grid
from rtdeep.volume import Volume

__all__ = ["PERCENT_THRESHOLD", "read_rtdose", "resample_dose"]

logger = logging.getLogger(__name__)

#: relative dose values above this maximum are taken as percent rather than fractions
PERCENT_THRESHOLD = 5.0


def _read(path: Path) -> pydicom.Dataset:
    return read_rt_dataset(path, "RTDOSE", "RT Dose", DoseError)


def _floats(ds: pydicom.Dataset, keyword: str, tag: str, path: Path, count: int | None = None) -> np.ndarray:
    return finite_floats(ds, keyword, tag, path, count, error=DoseError)


def _frame_offsets(ds: pydicom.Dataset, position: np.ndarray, normal: np.ndarray, n_frames: int,
                   path: Path) -> np.ndarray:
    """GridFrameOffsetVector as offsets (mm) from the first frame along the normal."""
    if n_frames == 1 and "GridFrameOffsetVector" not in ds:
        return np.zeros(1)
    offsets = _floats(ds, "GridFrameOffsetVector", "(3004,000C)", path)
    if offsets.size != n_frames:
        raise DoseError(f"GridFrameOffsetVector has {offsets.size} values for {n_frames} frames", path=path,
                        tag="GridFrameOffsetVector (3004,000C)")
    if abs(offsets[0]) > 1e-6:
        # absolute form (the first offset equals the first frame's position along the normal)
        if abs(offsets[0] - position @ normal) > 1e-2 and abs(offsets[0] - position[2]) > 1e-2:
            raise DoseError(
                f"first GridFrameOffsetVector value {offsets[0]:g} is neither 0 (relative) nor the first "
                f"frame's position {position @ normal:g} mm (absolute)", path=path,
                tag="GridFrameOffsetVector (3004,000C)")
        offsets = offsets - offsets[0]
    return offsets


def _relative_scale(dose: np.ndarray, prescription_gy: float | None, path: Path) -> float:
    if prescription_gy is None:
        raise DoseError("dose is RELATIVE; pass the prescription in Gy (prescription_gy) to convert it", path=path,
                        tag="DoseUnits (3004,0002)")
    if float(dose.max(initial=0.0)) > PERCENT_THRESHOLD:
        logger.warning("%s: relative dose maximum %.1f > %.1f: read as percent of the prescription", path,
                       float(dose.max()), PERCENT_THRESHOLD)
        return prescription_gy / 100.0
    return prescription_gy


def read_rtdose(path: str | os.PathLike[str], prescription_gy: float | None = None) -> DoseGrid:
    """Read an RT Dose file in Gy on its own grid.

    Args:
        path: the RTDOSE file (single- or multi-frame).
        prescription_gy: needed only for DoseUnits RELATIVE (see the module docstring).

    Returns:
        A :class:`DoseGrid`: float32 dose in Gy ``[k, j, i]`` with k increasing along the slice
        normal, affine to LPS mm built from ImagePositionPatient, ImageOrientationPatient,
        PixelSpacing and GridFrameOffsetVector (relative or absolute form).

    Raises:
        DoseError: relative units without a prescription (names DoseUnits (3004,0002)), unknown
            units, irregular frame offsets, missing geometry.
    """
    path = Path(path)
    ds = _read(path)
    with reading(path, "RT Dose"):
        return _read_dose(ds, path, prescription_gy)


def _stored_dose(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    """The stored values ``[frame, row, column]``, after checking the declared size against the data."""
    if ds.get("PixelData") is None:
        raise DicomReadError("RT Dose without pixel data", path=path, tag="PixelData (7FE0,0010)")
    rows = int_value(ds, "Rows", "(0028,0010)", path)
    cols = int_value(ds, "Columns", "(0028,0011)", path)
    n_frames = int_value(ds, "NumberOfFrames", "(0028,0008)", path, default=1)
    bits = int_value(ds, "BitsAllocated", "(0028,0100)", path)
    if min(rows, cols, n_frames) <= 0 or bits not in (16, 32):
        raise DicomReadError(f"Rows x Columns x NumberOfFrames {rows}x{cols}x{n_frames} with BitsAllocated {bits} "
                             "(an RT Dose is 16 or 32 bits)", path=path, tag="BitsAllocated (0028,0100)")
    check_voxels(rows * cols * n_frames, path, f"RT Dose of {n_frames} frames of {rows}x{cols}",
                 "Rows/Columns/NumberOfFrames (0028,0010)/(0028,0011)/(0028,0008)")
    signed = int_value(ds, "PixelRepresentation", "(0028,0103)", path)
    transfer_syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if transfer_syntax is None or not transfer_syntax.is_encapsulated:
        expected = rows * cols * n_frames * bits // 8
        if len(ds.PixelData) not in (expected, expected + expected % 2):
            raise DicomReadError(
                f"PixelData holds {len(ds.PixelData)} bytes; Rows x Columns x NumberOfFrames x BitsAllocated "
                f"({rows}x{cols}x{n_frames}x{bits} bits) declare {expected}", path=path, tag="PixelData (7FE0,0010)")
        if transfer_syntax is None or transfer_syntax.is_little_endian:
            # a view of the bytes: no copy (the float32 dose is then the only new array)
            dtype = f"<{'i' if signed else 'u'}{bits // 8}"
            return np.frombuffer(ds.PixelData, dtype=dtype, count=rows * cols * n_frames).reshape(n_frames, rows, cols)
    try:
        with quiet_pydicom():
            stored = np.asarray(ds.pixel_array)
    except Exception as error:
        raise DicomReadError(f"cannot read dose pixel data ({type(error).__name__}: {error})", path=path,
                             tag="PixelData (7FE0,0010)") from error
    if stored.size != rows * cols * n_frames:
        raise DicomReadError(f"decoded dose has {stored.size} values, {rows}x{cols}x{n_frames} declared", path=path,
                             tag="PixelData (7FE0,0010)")
    return stored.reshape(n_frames, rows, cols)


def _read_dose(ds: pydicom.Dataset, path: Path, prescription_gy: float | None) -> DoseGrid:
    units = text(ds, "DoseUnits").upper()
    if units not in ("GY", "RELATIVE"):
        raise DoseError(f"unknown DoseUnits '{units}' (expected GY or RELATIVE)", path=path, tag="DoseUnits (3004,0002)")
    stored = _stored_dose(ds, path)
    n_frames = stored.shape[0]
    if text(ds, "DoseGridScaling") == "":
        raise DoseError("DoseGridScaling is missing: the stored values cannot be converted to dose (Type 1C)",
                        path=path, tag="DoseGridScaling (3004,000E)")
    scaling = float(_floats(ds, "DoseGridScaling", "(3004,000E)", path, 1)[0])
    if scaling <= 0:
        raise DoseError(f"DoseGridScaling {scaling:g} must be positive", path=path, tag="DoseGridScaling (3004,000E)")
    if stored.size and stored.min() < 0:
        raise DoseError(f"negative dose values (minimum stored value {stored.min()}): a dose cannot be negative",
                        path=path, tag="PixelData (7FE0,0010)")
    dose = stored.astype(np.float32)
    del stored, ds.PixelData  # the stored bytes go before any copy: memory stays near twice the float32 dose
    dose *= np.float32(scaling)
    if units == "RELATIVE":
        dose *= np.float32(_relative_scale(dose, prescription_gy, path))

    iop = _floats(ds, "ImageOrientationPatient", "(0020,0037)", path, 6)
    position = _floats(ds, "ImagePositionPatient", "(0020,0032)", path, 3)
    pixel_spacing = _floats(ds, "PixelSpacing", "(0028,0030)", path, 2)
    check_orientation(iop, pixel_spacing, path, DoseError)
    row_dir, col_dir = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row_dir, col_dir)
    offsets = _frame_offsets(ds, position, normal, n_frames, path)
    gap = 1.0
    if n_frames > 1:
        steps = np.diff(offsets)
        gap = float(np.mean(steps))
        if abs(gap) < 1e-6 or np.abs(steps - gap).max() > max(1e-3 * abs(gap), 1e-3):
            raise DoseError(f"irregular frame spacing {steps.min():g} to {steps.max():g} mm", path=path,
                            tag="GridFrameOffsetVector (3004,000C)")
    if gap < 0:  # frames stored in decreasing position: flip so k increases along the normal
        dose = np.flip(dose, axis=0)
        position = position + normal * offsets[-1]
        gap = -gap
    affine = np.eye(4)
    affine[:3, 0] = row_dir * pixel_spacing[1]
    affine[:3, 1] = col_dir * pixel_spacing[0]
    affine[:3, 2] = normal * gap
    affine[:3, 3] = position
    plans = ds.get("ReferencedRTPlanSequence", []) or []
    return DoseGrid(
        dose=Volume(np.ascontiguousarray(dose), affine),
        frame_of_reference_uid=text(ds, "FrameOfReferenceUID"),
        sop_instance_uid=text(ds, "SOPInstanceUID"),
        dose_type=text(ds, "DoseType") or "PHYSICAL",
        summation_type=text(ds, "DoseSummationType") or "PLAN",
        referenced_plan_uid=text(plans[0], "ReferencedSOPInstanceUID") if len(plans) else "",
        path=path,
    )


def resample_dose(dose: DoseGrid, ct: CtSeries) -> Volume:
    """Trilinear resampling of a dose onto the CT grid.

    Args:
        dose: an RT Dose on its own grid (Gy).
        ct: the CT whose grid receives the dose.

    Returns:
        A :class:`Volume` on ``ct.volume``'s grid, float32 Gy; CT voxels the dose grid does not cover
        (:mod:`rtdeep.resample`'s edge rule: beyond half a dose voxel past its edge voxels) are 0.

    Raises:
        FrameOfReferenceError: dose and CT have different FrameOfReferenceUIDs.
        DoseError: the dose grid does not overlap the CT at all.
    """
    if dose.frame_of_reference_uid and ct.frame_of_reference_uid and (
        dose.frame_of_reference_uid != ct.frame_of_reference_uid
    ):
        raise FrameOfReferenceError(
            f"dose frame of reference {dose.frame_of_reference_uid} differs from the CT's "
            f"{ct.frame_of_reference_uid}", path=dose.path, tag="FrameOfReferenceUID (0020,0052)")
    resampled, covered = sample_on_grid(dose.dose, ct.volume.affine, ct.volume.shape)
    if not covered.any():
        ct_lo, ct_hi = ct.volume.bounds_lps()
        dose_lo, dose_hi = dose.dose.bounds_lps()
        raise DoseError(
            f"dose grid (LPS {np.round(dose_lo, 1).tolist()} to {np.round(dose_hi, 1).tolist()} mm) does not "
            f"overlap the CT (LPS {np.round(ct_lo, 1).tolist()} to {np.round(ct_hi, 1).tolist()} mm)",
            path=dose.path, tag="ImagePositionPatient (0020,0032)")
    return Volume(resampled, ct.volume.affine.copy())
