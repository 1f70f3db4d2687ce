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

from rtdeep.dicomrt.dataset import (
    check_complete,
    check_voxels,
    finite_floats,
    int_value,
    quiet_pydicom,
    reading,
)
from rtdeep.dicomrt.dataset import text as _text
from rtdeep.dicomrt.scan import folder_files
from rtdeep.dicomrt.types import CtSeries, PatientInfo
from rtdeep.errors import DicomReadError, GeometryError, NotDicomError, SeriesError
from rtdeep.volume import Volume

__all__ = ["check_orientation", "patient_info", "read_ct_series", "slice_pixels"]

CT_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"}
_DEFER_BYTES = 1 << 16  # values larger than this (pixel data) are read only when needed, then dropped
_WHOLE_FILE_BYTES = 2 << 20
_TILT_TOLERANCE_MM = 0.05
_SAME_TOLERANCE = 1e-4
_UNIT_TOLERANCE = 1e-2  # direction cosines: unit length and orthogonal within this
#: a slice farther than this share of the mean spacing from its place on an evenly spaced grid is refused
#: (a variable-thickness protocol); nearer ones (rounded positions) are read on the evenly spaced grid
UNEVEN_SHARE = 0.25


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
    if path.stat().st_size == 0:
        raise DicomReadError("empty file (0 bytes): an interrupted copy?", path=path)
    try:
        with quiet_pydicom():
            # small files (a CT slice) in one read; big ones (a dose, a large structure set) are first
            # identified from two tags, so only a big CT is parsed in full (with its pixel data deferred)
            if path.stat().st_size <= _WHOLE_FILE_BYTES:
                ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
            else:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID",
                                                                                    "SOPInstanceUID"])
                if _is_ct(ds):
                    ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
    except InvalidDicomError as error:
        raise NotDicomError("not a DICOM file", path=path) from error
    except PermissionError:
        raise
    except Exception as error:
        raise DicomReadError(f"truncated or corrupt DICOM file ({type(error).__name__}: {error})",
                             path=path) from error
    check_complete(path, ds)
    return ds


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
        paths = folder_files(folder)
        from_folder, where = True, str(folder)
    else:
        paths = [Path(p) for p in source]
        from_folder, where = False, f"{len(paths)} files"
    items: list[tuple[Path, pydicom.Dataset]] = []
    for path in paths:
        try:
            ds = _read_dataset(path)
        except NotDicomError as error:
            if from_folder:
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
        raise SeriesError(f"{len(groups)} CT series found, choose one with --series-uid: {listing()}",
                          path=where, tag="SeriesInstanceUID (0020,000E)")
    return next(iter(groups.values()))


def _floats(ds: pydicom.Dataset, keyword: str, tag: str, count: int, path: Path) -> np.ndarray:
    return finite_floats(ds, keyword, tag, path, count)


def check_orientation(iop: np.ndarray, spacing: np.ndarray, path: Path, error: type = GeometryError) -> None:
    """Direction cosines of unit length and orthogonal, pixel spacings positive, else ``error``."""
    row, col = iop[:3], iop[3:]
    lengths = np.array([np.linalg.norm(row), np.linalg.norm(col)])
    if np.any(np.abs(lengths - 1.0) > _UNIT_TOLERANCE) or abs(float(row @ col)) > _UNIT_TOLERANCE:
        raise error(f"ImageOrientationPatient {iop.tolist()} is not two orthogonal unit vectors", path=path,
                    tag="ImageOrientationPatient (0020,0037)")
    if np.any(spacing <= 0):
        raise error(f"PixelSpacing {spacing.tolist()} must be positive", path=path, tag="PixelSpacing (0028,0030)")


def _names(paths: Sequence[Path], limit: int = 4) -> str:
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _check_same_geometry(items: list[tuple[Path, pydicom.Dataset]]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Orientation (6), pixel spacing (2), rows, columns shared by every slice, else GeometryError."""
    first_path, first = items[0]
    iop = _floats(first, "ImageOrientationPatient", "(0020,0037)", 6, first_path)
    spacing = _floats(first, "PixelSpacing", "(0028,0030)", 2, first_path)
    check_orientation(iop, spacing, first_path)
    rows, cols = _size(first, first_path)
    odd_orientation, odd_size = [], []
    for path, ds in items[1:]:
        if not np.allclose(_floats(ds, "ImageOrientationPatient", "(0020,0037)", 6, path), iop, atol=_SAME_TOLERANCE):
            odd_orientation.append(path)
        if _size(ds, path) != (rows, cols) or not np.allclose(
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
    check_voxels(rows * cols * len(items), first_path.parent, f"CT series of {len(items)} slices of {rows}x{cols}",
                 "Rows/Columns (0028,0010)/(0028,0011)")
    return iop, spacing, rows, cols


def _size(ds: pydicom.Dataset, path: Path) -> tuple[int, int]:
    rows = int_value(ds, "Rows", "(0028,0010)", path)
    cols = int_value(ds, "Columns", "(0028,0011)", path)
    if rows <= 0 or cols <= 0:
        raise DicomReadError(f"Rows x Columns {rows}x{cols} must be positive", path=path, tag="Rows (0028,0010)")
    return rows, cols


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
        if not np.isfinite(gap) or gap <= 0:
            raise GeometryError(f"single slice with slice thickness {gap:g} mm (must be positive)", path=items[0][0],
                                tag="SliceThickness (0018,0050)")
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
        off = np.abs(along - gap * np.arange(len(items)))  # each slice's distance from its evenly spaced place
        worst = int(np.argmax(off))
        if off[worst] > UNEVEN_SHARE * gap:
            raise SeriesError(
                f"uneven slice spacing ({diffs.min():.3f} to {diffs.max():.3f} mm, e.g. a protocol with thinner "
                f"slices through the target): {items[worst][0].name} lies {off[worst]:.2f} mm from its place on an "
                f"evenly spaced grid (mean spacing {gap:.3f} mm), more than {UNEVEN_SHARE:g} of a slice, so contours "
                "and dose would be placed off their slices; resample the series to even spacing first",
                path=folder, tag="ImagePositionPatient (0020,0032)")
        warnings.append(
            f"{folder}: uneven slice spacing ({diffs.min():.3f} to {diffs.max():.3f} mm, every slice within "
            f"{off[worst]:.2f} mm of an evenly spaced grid); using the mean {gap:.4f} mm")
    return gap


_DTYPES = {(8, 0): "u1", (8, 1): "i1", (16, 0): "<u2", (16, 1): "<i2", (32, 0): "<u4", (32, 1): "<i4"}


def slice_pixels(path: Path, ds: pydicom.Dataset, rows: int, cols: int) -> np.ndarray:
    """Stored pixel values of one single-frame slice ``[j, i]`` (rescale not applied).

    Uncompressed little-endian data is read from the PixelData bytes, whose length must be what
    Rows x Columns x BitsAllocated declare; anything else goes through pydicom's decoders
    (``ds.pixel_array``), whose result must have the declared size.

    Raises:
        DicomReadError: no pixel data, a length that differs from the declared size (truncated, or
            8-bit declared over 16-bit data), missing BitsAllocated/PixelRepresentation, or no
            decoder for the transfer syntax.
    """
    if "PixelData" not in ds or ds.get("PixelData") is None:
        raise DicomReadError("no pixel data (truncated file?)", path=path, tag="PixelData (7FE0,0010)")
    transfer_syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    bits = int_value(ds, "BitsAllocated", "(0028,0100)", path)
    signed = int_value(ds, "PixelRepresentation", "(0028,0103)", path)
    stored = int_value(ds, "BitsStored", "(0028,0101)", path, default=bits)
    samples = int_value(ds, "SamplesPerPixel", "(0028,0002)", path, default=1)
    frames = int_value(ds, "NumberOfFrames", "(0028,0008)", path, default=1)
    if samples != 1:
        raise DicomReadError(f"SamplesPerPixel {samples}: a CT slice is grayscale (1)", path=path,
                             tag="SamplesPerPixel (0028,0002)")
    if frames != 1:
        raise DicomReadError(f"NumberOfFrames {frames}: multi-frame CT is not read here", path=path,
                             tag="NumberOfFrames (0028,0008)")
    if signed not in (0, 1) or not 1 <= stored <= bits:
        raise DicomReadError(f"PixelRepresentation {signed} / BitsStored {stored} / BitsAllocated {bits} "
                             "are inconsistent", path=path, tag="BitsStored (0028,0101)")
    dtype = _DTYPES.get((bits, signed))
    encapsulated = transfer_syntax is not None and transfer_syntax.is_encapsulated
    fast = dtype is not None and transfer_syntax is not None and transfer_syntax.is_little_endian and not encapsulated
    if not fast:
        if not encapsulated:
            _check_length(path, ds, rows, cols, bits)
        try:
            with quiet_pydicom():
                pixels = np.asarray(ds.pixel_array)
        except Exception as error:
            raise DicomReadError(
                f"cannot decode pixel data (transfer syntax {transfer_syntax}: {type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''})", path=path,
                tag="PixelData (7FE0,0010)") from error
        if pixels.shape != (rows, cols):
            raise DicomReadError(f"decoded pixel data has shape {pixels.shape}, Rows x Columns declare "
                                 f"{rows}x{cols}", path=path, tag="PixelData (7FE0,0010)")
        return pixels
    _check_length(path, ds, rows, cols, bits)
    pixels = np.frombuffer(ds.PixelData, dtype=dtype, count=rows * cols).reshape(rows, cols)
    if stored < bits:
        if signed:
            shift = bits - stored
            pixels = (pixels << shift) >> shift
        else:
            pixels = pixels & ((1 << stored) - 1)
    return pixels


def _check_length(path: Path, ds: pydicom.Dataset, rows: int, cols: int, bits: int) -> None:
    """Uncompressed PixelData must hold exactly what the header declares (plus one padding byte)."""
    data = ds.PixelData
    expected = (rows * cols * bits + 7) // 8
    if len(data) not in (expected, expected + (expected % 2)):
        what = "truncated pixel data" if len(data) < expected else "pixel data longer than declared"
        raise DicomReadError(
            f"{what}: {len(data)} bytes, Rows x Columns x BitsAllocated ({rows}x{cols}x{bits} bits) declare "
            f"{expected}", path=path, tag="PixelData (7FE0,0010)")


def _rescale(ds: pydicom.Dataset, path: Path) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept: Type 1 in a CT image, so missing is an error."""
    values = []
    for keyword, tag in (("RescaleSlope", "(0028,1053)"), ("RescaleIntercept", "(0028,1052)")):
        if _text(ds, keyword) == "":
            raise DicomReadError(f"{keyword} is missing: a CT slice must state it (Type 1); without it the "
                                 "Hounsfield units are unknown", path=path, tag=f"{keyword} {tag}")
        values.append(float(finite_floats(ds, keyword, tag, path, 1)[0]))
    if values[0] == 0.0:
        raise DicomReadError("RescaleSlope is 0", path=path, tag="RescaleSlope (0028,1053)")
    return values[0], values[1]


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
    with reading(items[0][0].parent, "CT series"):
        return _read_items(items, warnings)


def _read_items(items: list[tuple[Path, pydicom.Dataset]], warnings: list[str]) -> CtSeries:
    iop, pixel_spacing, rows, cols = _check_same_geometry(items)
    row_dir = iop[:3] / np.linalg.norm(iop[:3])
    col_dir = iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row_dir, col_dir)
    items, positions = _order_slices(items, normal, warnings)
    gap = _slice_gap(positions, normal, items, warnings)

    hu = np.empty((len(items), rows, cols), dtype=np.float32)
    for k, (path, ds) in enumerate(items):
        slope, intercept = _rescale(ds, path)
        with reading(path, "CT slice"):
            hu[k] = slice_pixels(path, ds, rows, cols)
            del ds["PixelData"]  # one slice's bytes at a time: memory stays near the float32 volume
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
