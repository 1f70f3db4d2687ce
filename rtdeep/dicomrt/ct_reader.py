"""Read a CT series into a :class:`~rtdeep.dicomrt.types.CtSeries` (Hounsfield units, LPS affine).

Slices are ordered by their position along the slice normal ``n = cross(row_dir, col_dir)``
(from ImageOrientationPatient and ImagePositionPatient; SliceLocation is never used). Each file is
parsed once; uncompressed pixel data is read straight from the PixelData bytes with numpy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from rtdeep.dicomrt.types import CtSeries, PatientInfo
from rtdeep.errors import DicomReadError, GeometryError, SeriesError
from rtdeep.volume import Volume

__all__ = ["patient_info", "read_ct_series", "slice_pixels"]

CT_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"}
_DEFER_BYTES = 1 << 16  # values larger than this (pixel data) are read only when needed
_WHOLE_FILE_BYTES = 2 << 20
_TILT_TOLERANCE_MM = 0.05
_SAME_TOLERANCE = 1e-4


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def patient_info(ds: pydicom.Dataset) -> PatientInfo:
    """Patient and study attributes of ``ds`` (empty strings where absent)."""
    return PatientInfo(
        patient_name=_text(ds, "PatientName"),
        patient_id=_text(ds, "PatientID"),
        patient_birth_date=_text(ds, "PatientBirthDate"),
        patient_sex=_text(ds, "PatientSex"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        study_date=_text(ds, "StudyDate"),
        study_time=_text(ds, "StudyTime"),
        study_id=_text(ds, "StudyID"),
        study_description=_text(ds, "StudyDescription"),
        accession_number=_text(ds, "AccessionNumber"),
        referring_physician_name=_text(ds, "ReferringPhysicianName"),
    )


def _read_dataset(path: Path) -> pydicom.Dataset:
    try:
        # small files (a CT slice) in one read; big ones (a dose, a large structure set) are first
        # identified from two tags, so only a big CT is parsed in full (with its pixel data deferred)
        if path.stat().st_size <= _WHOLE_FILE_BYTES:
            return pydicom.dcmread(path)
        peek = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID",
                                                                              "SOPInstanceUID"])
        if not _is_ct(peek):
            return peek
        return pydicom.dcmread(path, defer_size=_DEFER_BYTES)
    except InvalidDicomError as error:
        raise DicomReadError("not a DICOM file", path=path) from error
    except (EOFError, OSError, ValueError, TypeError, KeyError, IndexError) as error:
        raise DicomReadError(f"truncated or corrupt DICOM file ({error})", path=path) from error


def _is_ct(ds: pydicom.Dataset) -> bool:
    return _text(ds, "Modality") == "CT" or _text(ds, "SOPClassUID") in CT_SOP_CLASSES


def _load_candidates(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> tuple[
    list[tuple[Path, pydicom.Dataset]], list[str], str
]:
    """Parse every file of ``source`` once; keep the CT images. Returns (items, warnings, where)."""
    warnings: list[str] = []
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: not found")
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder}: not a folder (give a folder or a list of files)")
        paths = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        from_folder, where = True, str(folder)
    else:
        paths = [Path(p) for p in source]
        from_folder, where = False, f"{len(paths)} files"
    items: list[tuple[Path, pydicom.Dataset]] = []
    for path in paths:
        try:
            ds = _read_dataset(path)
        except DicomReadError as error:
            if from_folder and str(error).endswith("not a DICOM file"):
                warnings.append(f"skipped {error}")
                continue
            raise
        if not (_text(ds, "SOPInstanceUID") and _text(ds, "Modality")):
            if not from_folder:
                raise DicomReadError("no SOPInstanceUID or Modality: truncated or incomplete header", path=path)
            warnings.append(f"skipped {path}: no SOPInstanceUID or Modality (truncated or incomplete header)")
            continue
        if _is_ct(ds):
            items.append((path, ds))
        elif not from_folder:
            raise SeriesError(f"not a CT image (Modality {_text(ds, 'Modality') or 'missing'})", path=path,
                              tag="Modality (0008,0060)")
    return items, warnings, where


def _select_series(
    items: list[tuple[Path, pydicom.Dataset]], series_instance_uid: str | None, where: str
) -> list[tuple[Path, pydicom.Dataset]]:
    groups: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    for path, ds in items:
        groups.setdefault(_text(ds, "SeriesInstanceUID"), []).append((path, ds))

    def listing() -> str:
        return "; ".join(
            f"{uid} ('{_text(group[0][1], 'SeriesDescription')}', {len(group)} slices)" for uid, group in groups.items()
        )

    if not groups:
        raise SeriesError("no CT images found", path=where)
    if series_instance_uid is not None:
        if series_instance_uid not in groups:
            raise SeriesError(f"CT series {series_instance_uid} not found; available: {listing()}", path=where,
                              tag="SeriesInstanceUID (0020,000E)")
        return groups[series_instance_uid]
    if len(groups) > 1:
        raise SeriesError(f"{len(groups)} CT series found, choose one with series_instance_uid: {listing()}",
                          path=where, tag="SeriesInstanceUID (0020,000E)")
    return next(iter(groups.values()))


def _floats(ds: pydicom.Dataset, keyword: str, tag: str, count: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    try:
        array = np.asarray([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError) as error:
        raise DicomReadError(f"missing or unreadable {keyword}", path=path, tag=f"{keyword} {tag}") from error
    if array.shape != (count,):
        raise DicomReadError(f"{keyword} must have {count} values, found {array.size}", path=path,
                             tag=f"{keyword} {tag}")
    return array


def _names(paths: Sequence[Path], limit: int = 4) -> str:
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _check_same_geometry(items: list[tuple[Path, pydicom.Dataset]]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Orientation (6), pixel spacing (2), rows, columns shared by every slice, else GeometryError."""
    first_path, first = items[0]
    iop = _floats(first, "ImageOrientationPatient", "(0020,0037)", 6, first_path)
    spacing = _floats(first, "PixelSpacing", "(0028,0030)", 2, first_path)
    rows, cols = int(first.get("Rows", 0)), int(first.get("Columns", 0))
    odd_orientation, odd_size = [], []
    for path, ds in items[1:]:
        if not np.allclose(_floats(ds, "ImageOrientationPatient", "(0020,0037)", 6, path), iop, atol=_SAME_TOLERANCE):
            odd_orientation.append(path)
        if (int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) != (rows, cols) or not np.allclose(
            _floats(ds, "PixelSpacing", "(0028,0030)", 2, path), spacing, atol=_SAME_TOLERANCE
        ):
            odd_size.append(path)
    if odd_orientation:
        raise GeometryError(
            f"mixed orientations: {_names(odd_orientation)} differ from {first_path.name} {iop.tolist()}",
            path=first_path.parent, tag="ImageOrientationPatient (0020,0037)")
    if odd_size:
        raise GeometryError(
            f"mixed slice sizes: {_names(odd_size)} differ from {first_path.name} ({rows}x{cols}, "
            f"spacing {spacing.tolist()} mm)", path=first_path.parent, tag="Rows/Columns/PixelSpacing")
    if rows <= 0 or cols <= 0:
        raise DicomReadError("Rows/Columns missing", path=first_path, tag="Rows (0028,0010)")
    return iop, spacing, rows, cols


def _order_slices(
    items: list[tuple[Path, pydicom.Dataset]], normal: np.ndarray, warnings: list[str]
) -> tuple[list[tuple[Path, pydicom.Dataset]], np.ndarray]:
    """Sort by position along the normal, drop exact duplicates, reject duplicated positions."""
    positions = np.array([_floats(ds, "ImagePositionPatient", "(0020,0032)", 3, p) for p, ds in items])
    order = np.argsort(positions @ normal, kind="stable")
    items = [items[o] for o in order]
    positions = positions[order]
    keep = [0]
    for index in range(1, len(items)):
        previous = keep[-1]
        if abs((positions[index] - positions[previous]) @ normal) > 1e-3:
            keep.append(index)
            continue
        path_a, ds_a = items[previous]
        path_b, ds_b = items[index]
        if _text(ds_a, "SOPInstanceUID") == _text(ds_b, "SOPInstanceUID"):
            warnings.append(f"{path_b}: same SOPInstanceUID as {path_a.name}; duplicate file ignored")
            continue
        raise SeriesError(
            f"duplicated slice position {positions[index] @ normal:.3f} mm along the slice normal in "
            f"{path_a.name} and {path_b.name}", path=path_a.parent, tag="ImagePositionPatient (0020,0032)")
    return [items[k] for k in keep], positions[keep]


def _slice_gap(
    positions: np.ndarray, normal: np.ndarray, items: list[tuple[Path, pydicom.Dataset]], warnings: list[str]
) -> float:
    """Regular slice spacing (mm) after checking for gaps, uneven spacing and gantry tilt."""
    folder = items[0][0].parent
    if len(items) == 1:
        ds = items[0][1]
        gap = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
        warnings.append(f"{items[0][0]}: single slice, slice spacing {gap:g} mm taken from SliceThickness")
        return gap
    offsets = positions - positions[0]
    along = offsets @ normal
    in_plane = np.linalg.norm(offsets - np.outer(along, normal), axis=1)
    if in_plane.max() > _TILT_TOLERANCE_MM:
        worst = int(np.argmax(in_plane))
        angle = np.degrees(np.arctan2(in_plane[worst], abs(along[worst])))
        raise GeometryError(
            f"slice positions are not along the slice normal (gantry tilt about {angle:.2f} deg, "
            f"{in_plane[worst]:.2f} mm off at {items[worst][0].name}); resample the series first",
            path=folder, tag="ImagePositionPatient (0020,0032)")
    diffs = np.diff(along)
    median = float(np.median(diffs))
    missing = np.flatnonzero(diffs > 1.5 * median)
    if missing.size:
        gaps = ", ".join(f"{along[m] + positions[0] @ normal:.2f} to {along[m + 1] + positions[0] @ normal:.2f} mm"
                         for m in missing[:5])
        raise SeriesError(
            f"missing slices: gap(s) larger than 1.5 x the median spacing {median:.3f} mm between {gaps} "
            f"(after {_names([items[m][0] for m in missing])})", path=folder, tag="ImagePositionPatient (0020,0032)")
    gap = float(along[-1] / (len(items) - 1))
    if np.abs(diffs - gap).max() > max(0.01 * gap, 1e-3):
        warnings.append(
            f"{folder}: uneven slice spacing ({diffs.min():.3f} to {diffs.max():.3f} mm); "
            f"using the mean {gap:.4f} mm")
    return gap


_DTYPES = {(8, 0): "u1", (8, 1): "i1", (16, 0): "<u2", (16, 1): "<i2", (32, 0): "<u4", (32, 1): "<i4"}


def slice_pixels(path: Path, ds: pydicom.Dataset, rows: int, cols: int) -> np.ndarray:
    """Stored pixel values of one single-frame slice ``[j, i]`` (rescale not applied).

    Uncompressed little-endian data is read from the PixelData bytes; anything else goes through
    pydicom's decoders (``ds.pixel_array``).

    Raises:
        DicomReadError: no pixel data, truncated pixel data, or no decoder for the transfer syntax.
    """
    if "PixelData" not in ds:
        raise DicomReadError("no pixel data (truncated file?)", path=path, tag="PixelData (7FE0,0010)")
    transfer_syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    bits = int(ds.get("BitsAllocated", 16))
    signed = int(ds.get("PixelRepresentation", 0))
    dtype = _DTYPES.get((bits, signed))
    fast = (
        dtype is not None
        and transfer_syntax is not None
        and transfer_syntax.is_little_endian
        and not transfer_syntax.is_encapsulated
        and int(ds.get("SamplesPerPixel", 1)) == 1
        and int(ds.get("NumberOfFrames", 1) or 1) == 1
    )
    if not fast:
        try:
            return np.asarray(ds.pixel_array)
        except Exception as error:
            raise DicomReadError(
                f"cannot decode pixel data (transfer syntax {transfer_syntax}): {error}",
                path=path, tag="PixelData (7FE0,0010)") from error
    data = ds.PixelData
    expected = rows * cols * bits // 8
    if len(data) < expected:
        raise DicomReadError(
            f"truncated pixel data: {len(data)} bytes, expected {expected} ({rows}x{cols}x{bits} bits)",
            path=path, tag="PixelData (7FE0,0010)")
    pixels = np.frombuffer(data, dtype=dtype, count=rows * cols).reshape(rows, cols)
    stored = int(ds.get("BitsStored", bits))
    if stored < bits:
        if signed:
            shift = bits - stored
            pixels = (pixels << shift) >> shift
        else:
            pixels = pixels & ((1 << stored) - 1)
    return pixels


def read_ct_series(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    series_instance_uid: str | None = None,
) -> CtSeries:
    """Read one CT series.

    Args:
        source: a folder (searched recursively; it may hold other objects and several series) or a
            list of slice files.
        series_instance_uid: which CT series to read when ``source`` holds several.

    Returns:
        A :class:`CtSeries` whose ``volume`` holds float32 Hounsfield units ``[k, j, i]`` with k
        increasing along the slice normal ``cross(row_dir, col_dir)``, and whose affine maps
        (i, j, k) to LPS mm: columns ``row_dir * PixelSpacing[1]``, ``col_dir * PixelSpacing[0]``,
        ``normal * slice_gap``; origin the ImagePositionPatient of the first slice.

    Raises:
        SeriesError: no CT, several series and no UID, missing slices, duplicated positions.
        GeometryError: mixed orientations or sizes, gantry tilt.
        DicomReadError: unreadable, truncated or non-DICOM files among the given ones.
    """
    items, warnings, where = _load_candidates(source)
    items = _select_series(items, series_instance_uid, where)
    iop, pixel_spacing, rows, cols = _check_same_geometry(items)
    row_dir = iop[:3] / np.linalg.norm(iop[:3])
    col_dir = iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row_dir, col_dir)
    items, positions = _order_slices(items, normal, warnings)
    gap = _slice_gap(positions, normal, items, warnings)

    hu = np.empty((len(items), rows, cols), dtype=np.float32)
    for k, (path, ds) in enumerate(items):
        hu[k] = slice_pixels(path, ds, rows, cols)
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        if slope != 1.0:
            hu[k] *= np.float32(slope)
        if intercept != 0.0:
            hu[k] += np.float32(intercept)

    affine = np.eye(4)
    affine[:3, 0] = row_dir * pixel_spacing[1]
    affine[:3, 1] = col_dir * pixel_spacing[0]
    affine[:3, 2] = normal * gap
    affine[:3, 3] = positions[0]
    first_path, first = items[0]
    frame_of_reference_uid = _text(first, "FrameOfReferenceUID")
    if not frame_of_reference_uid:
        warnings.append(f"{first_path}: no FrameOfReferenceUID (0020,0052); structures and dose cannot be checked")
    return CtSeries(
        volume=Volume(hu, affine),
        sop_instance_uids=[_text(ds, "SOPInstanceUID") for _, ds in items],
        series_instance_uid=_text(first, "SeriesInstanceUID"),
        frame_of_reference_uid=frame_of_reference_uid,
        patient=patient_info(first),
        sop_class_uid=_text(first, "SOPClassUID") or "1.2.840.10008.5.1.4.1.1.2",
        files=[path for path, _ in items],
        series_description=_text(first, "SeriesDescription"),
        warnings=warnings,
    )
