"""Read an RT Structure Set into bool masks on a CT grid.

Each contour's points (LPS mm) go to continuous (i, j, k) indices with the CT's inverse affine (so
oblique grids work), the contour is assigned to the nearest slice ``k`` (half a slice tolerance),
and all contours of an ROI are filled at once by the even-odd rule at voxel centres
(:mod:`rtdeep.dicomrt.rasterize`). Problems that leave the rest usable (contours on slices the CT
lacks, POINT contours, contours with fewer than 3 points, empty ROIs) become warnings in
``StructureSet.warnings`` naming the file, ROI and position.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pydicom

from rtdeep.dicomrt.dataset import int_value, read_rt_dataset, reading, text
from rtdeep.dicomrt.rasterize import rasterize_planes, rasterize_slice
from rtdeep.dicomrt.types import CtSeries, Roi, StructureSet
from rtdeep.errors import FrameOfReferenceError, StructureError

__all__ = ["contour_points", "rasterize_slice", "read_contours", "read_rtstruct", "read_structure_dataset"]

_CONTOUR_DATA = 0x30060050
_PLANAR_TOLERANCE = 0.5  # slices: every point of a contour within half a slice of its plane


def read_structure_dataset(path: str | os.PathLike[str]) -> pydicom.Dataset:
    """Parse an RTSTRUCT file (with or without the Part-10 preamble) and check its Modality."""
    ds = read_rt_dataset(path, "RTSTRUCT", "RT Structure Set", StructureError)
    if not ds.get("StructureSetROISequence"):
        raise StructureError("RT Structure Set without ROIs (StructureSetROISequence missing or empty)", path=path,
                             tag="StructureSetROISequence (3006,0020)")
    return ds


def contour_points(item: pydicom.Dataset, path: Path, roi_name: str) -> np.ndarray:
    """ContourData as (N, 3) LPS mm, parsed from the raw text (pydicom's DS objects are slow)."""
    element = item.get_item(_CONTOUR_DATA)
    if element is None or element.value is None:
        return np.zeros((0, 3))
    value = element.value
    try:
        if isinstance(value, (bytes, bytearray)):
            text = bytes(value).strip(b" \x00")
            numbers = np.array(text.split(b"\\"), dtype="S").astype(np.float64) if text else np.zeros(0)
        else:
            numbers = np.asarray([float(v) for v in (value if isinstance(value, Sequence) else [value])])
    except (ValueError, TypeError):
        raise StructureError("ContourData holds a value that is not a number", path=path,
                             tag="ContourData (3006,0050)", roi=roi_name) from None
    if not np.all(np.isfinite(numbers)):
        raise StructureError(f"ContourData holds a non-finite number ({int(np.sum(~np.isfinite(numbers)))} of "
                             f"{numbers.size} values are NaN or infinite)", path=path, tag="ContourData (3006,0050)",
                             roi=roi_name)
    if numbers.size % 3:
        raise StructureError(f"ContourData holds {numbers.size} numbers, not a multiple of 3", path=path,
                             tag="ContourData (3006,0050)", roi=roi_name)
    return numbers.reshape(-1, 3)


def _frame_of_reference(ds: pydicom.Dataset) -> str:
    uids = {text(item, "ReferencedFrameOfReferenceUID") for item in ds.StructureSetROISequence}
    uids.discard("")
    if not uids:
        for item in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
            if text(item, "FrameOfReferenceUID"):
                uids.add(text(item, "FrameOfReferenceUID"))
    if not uids and text(ds, "FrameOfReferenceUID"):
        uids.add(text(ds, "FrameOfReferenceUID"))
    return min(uids) if len(uids) == 1 else " / ".join(sorted(uids))


def _check_frame_of_reference(ds: pydicom.Dataset, ct: CtSeries, path: Path, warnings: list[str]) -> str:
    structure_uid = _frame_of_reference(ds)
    if not ct.frame_of_reference_uid or not structure_uid:
        warnings.append(f"{path}: frame of reference not checked (CT '{ct.frame_of_reference_uid}', "
                        f"RTSTRUCT '{structure_uid}')")
        return structure_uid
    if structure_uid != ct.frame_of_reference_uid:
        raise FrameOfReferenceError(
            f"structure set frame of reference {structure_uid} differs from the CT's "
            f"{ct.frame_of_reference_uid}", path=path, tag="ReferencedFrameOfReferenceUID (3006,0024)")
    return structure_uid


class _RoiRasteriser:
    """Turns one ROI's contour items into a mask on the CT grid, collecting warnings."""

    def __init__(self, ct: CtSeries, path: Path, warnings: list[str]) -> None:
        volume = ct.volume
        self.shape = volume.shape
        self.inverse = np.linalg.inv(volume.affine)
        self.affine = volume.affine
        self.normal = volume.direction[:, 2]
        self.path = path
        self.warnings = warnings

    def _position_mm(self, points: np.ndarray) -> float:
        return float(np.mean(points @ self.normal))

    def mask(self, roi_name: str, contours: Sequence[pydicom.Dataset]) -> np.ndarray:
        n_k, n_j, n_i = self.shape
        polygons, planes = [], []
        off_grid: list[float] = []
        for item in contours:
            kind = text(item, "ContourGeometricType") or "CLOSED_PLANAR"
            points = contour_points(item, self.path, roi_name)
            if kind != "CLOSED_PLANAR":
                self.warnings.append(f"{self.path}: ROI '{roi_name}': {kind} contour with {len(points)} point(s) "
                                     "has no area; ignored")
                continue
            if len(points) < 3:
                where = f" at {self._position_mm(points):.2f} mm" if len(points) else ""
                self.warnings.append(f"{self.path}: ROI '{roi_name}': CLOSED_PLANAR contour with {len(points)} "
                                     f"point(s){where} (fewer than 3); ignored")
                continue
            ijk = points @ self.inverse[:3, :3].T + self.inverse[:3, 3]
            k = int(np.round(ijk[:, 2].mean()))
            if np.abs(ijk[:, 2] - k).max() > _PLANAR_TOLERANCE:
                self.warnings.append(
                    f"{self.path}: ROI '{roi_name}': contour at {self._position_mm(points):.2f} mm is not in a CT "
                    f"slice plane (spans {np.ptp(ijk[:, 2]):.2f} slices); ignored")
                continue
            if not 0 <= k < n_k:
                off_grid.append(self._position_mm(points))
                continue
            polygons.append(ijk[:, :2])
            planes.append(k)
        if off_grid:
            shown = ", ".join(f"{z:.2f}" for z in sorted(set(off_grid))[:8])
            self.warnings.append(
                f"{self.path}: ROI '{roi_name}': {len(off_grid)} contour(s) on slices the CT lacks "
                f"(at {shown} mm along the slice normal); ignored")
        return rasterize_planes(polygons, planes, n_k, n_j, n_i)


def _color(contour_item: pydicom.Dataset | None) -> tuple[int, int, int]:
    """ROIDisplayColor as RGB, red when absent or not three numbers 0-255."""
    try:
        color = contour_item.get("ROIDisplayColor") if contour_item is not None else None
        rgb = tuple(int(c) for c in color) if color is not None and len(color) == 3 else (255, 0, 0)
    except (TypeError, ValueError):
        return (255, 0, 0)
    return rgb if all(0 <= c <= 255 for c in rgb) else (255, 0, 0)  # type: ignore[return-value]


def read_rtstruct(
    path: str | os.PathLike[str], ct: CtSeries, roi_names: Sequence[str] | None = None
) -> StructureSet:
    """Read an RT Structure Set as bool masks on the CT grid.

    Args:
        path: the RTSTRUCT file.
        ct: the CT series it was drawn on (its grid receives the masks).
        roi_names: read only these ROIs, in this order (default: all, in file order).

    Returns:
        A :class:`StructureSet`; each :class:`Roi` has a bool mask ``[k, j, i]`` on ``ct.volume``
        (voxel centre inside the contours by the even-odd rule, or on a contour), its number,
        ROIDisplayColor, RTROIInterpretedType and ROIGenerationAlgorithm.

    Raises:
        FrameOfReferenceError: the structure set's frame of reference differs from the CT's.
        StructureError: not an RTSTRUCT, malformed ContourData, or requested ROI names absent
            (the message lists the names present).
    """
    path = Path(path)
    ds = read_structure_dataset(path)
    with reading(path, "RT Structure Set"):
        return _read(ds, path, ct, roi_names)


def _numbered(items: Sequence[pydicom.Dataset], keyword: str, tag: str, path: Path, sequence: str) -> dict:
    """Items of a sequence by their (Referenced)ROINumber; a repeated number is an error."""
    by_number: dict[int, pydicom.Dataset] = {}
    for item in items:
        if keyword not in item:
            continue
        number = int_value(item, keyword, tag, path, roi=text(item, "ROIName") or None)
        if number in by_number:
            names = [text(by_number[number], "ROIName"), text(item, "ROIName")]
            raise StructureError(f"{sequence} repeats {keyword} {number}" + (
                f" (ROIs '{names[0]}' and '{names[1]}')" if any(names) else ""), path=path,
                tag=f"{keyword} {tag}", roi=names[1] or None)
        by_number[number] = item
    return by_number


def _roi_tables(ds: pydicom.Dataset, path: Path) -> tuple[dict, dict, dict, dict[str, int]]:
    """ROI definitions, contours and observations by ROI number, and ROI numbers by name; a repeated
    number or name is an error naming the ROI."""
    definitions = _numbered(ds.StructureSetROISequence, "ROINumber", "(3006,0022)", path, "StructureSetROISequence")
    contours_by_number = _numbered(ds.get("ROIContourSequence", []) or [], "ReferencedROINumber", "(3006,0084)",
                                   path, "ROIContourSequence")
    observations = _numbered(ds.get("RTROIObservationsSequence", []) or [], "ReferencedROINumber", "(3006,0084)",
                             path, "RTROIObservationsSequence")
    numbers_by_name: dict[str, int] = {}
    for number, item in definitions.items():
        name = text(item, "ROIName") or f"ROI_{number}"
        if name in numbers_by_name:
            raise StructureError(f"ROIName used by two ROIs (numbers {numbers_by_name[name]} and {number}); "
                                 "rename one", path=path, tag="ROIName (3006,0026)", roi=name)
        numbers_by_name[name] = number
    return definitions, contours_by_number, observations, numbers_by_name


def _read(ds: pydicom.Dataset, path: Path, ct: CtSeries, roi_names: Sequence[str] | None) -> StructureSet:
    warnings: list[str] = []
    frame_of_reference_uid = _check_frame_of_reference(ds, ct, path, warnings)

    definitions, contours_by_number, observations, numbers_by_name = _roi_tables(ds, path)
    if roi_names is not None:
        absent = [name for name in roi_names if name not in numbers_by_name]
        if absent:
            raise StructureError(
                f"ROI(s) {', '.join(repr(n) for n in absent)} not found; available: "
                f"{', '.join(repr(n) for n in numbers_by_name)}", path=path, roi=absent[0])
        wanted = [(name, numbers_by_name[name]) for name in roi_names]
    else:
        wanted = list(numbers_by_name.items())

    rasteriser = _RoiRasteriser(ct, path, warnings)
    rois = []
    for name, number in wanted:
        contour_item = contours_by_number.get(number)
        contours = list(contour_item.get("ContourSequence", []) or []) if contour_item is not None else []
        if not contours:
            warnings.append(f"{path}: ROI '{name}': empty ROI (no contours); mask is empty")
        mask = rasteriser.mask(name, contours)
        if contours and not mask.any() and not any(w.startswith(f"{path}: ROI '{name}'") for w in warnings):
            warnings.append(f"{path}: ROI '{name}': contours enclose no voxel centre; mask is empty")
        observation = observations.get(number)
        rois.append(Roi(
            name=name,
            mask=mask,
            number=number,
            color_rgb=_color(contour_item),
            interpreted_type=text(observation, "RTROIInterpretedType") if observation is not None else "",
            generation_algorithm=text(definitions[number], "ROIGenerationAlgorithm"),
        ))
    return StructureSet(
        rois=rois,
        frame_of_reference_uid=frame_of_reference_uid,
        sop_instance_uid=text(ds, "SOPInstanceUID"),
        label=text(ds, "StructureSetLabel"),
        path=path,
        warnings=warnings,
    )


def read_contours(path, roi_names: Iterable[str] | None = None) -> dict[str, list[np.ndarray]]:
    """Closed planar contours of an RT Structure Set, without rasterising them.

    Args:
        path: the RTSTRUCT file.
        roi_names: exact ROI names to read (default all).

    Returns:
        ROI name -> list of ``(n, 3)`` LPS mm polygons (POINT and open contours are skipped).

    Raises:
        StructureError: a requested ROI is absent (the message lists the names present).
    """
    path = Path(path)
    ds = read_structure_dataset(path)
    with reading(path, "RT Structure Set"):
        _, contours_by_number, _, numbers_by_name = _roi_tables(ds, path)
        wanted = list(numbers_by_name) if roi_names is None else list(roi_names)
        for name in wanted:
            if name not in numbers_by_name:
                raise StructureError(f"structure not found; available: {', '.join(numbers_by_name)}",
                                     path=path, roi=name)
        result: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
        for name in wanted:
            item = contours_by_number.get(numbers_by_name[name])
            for contour in (item.get("ContourSequence", []) or []) if item is not None else []:
                if text(contour, "ContourGeometricType") not in ("CLOSED_PLANAR", ""):
                    continue
                points = contour_points(contour, path, name)
                if len(points) >= 3:
                    result[name].append(points)
    return result
