"""Segmentation agreement metrics: Dice, HD95, mean surface distance, surface Dice, volumes.

One implementation (surface distances computed once per organ, with MONAI's definitions: a test
holds it to MONAI's compute functions) gives every number, so the CLI, the Slicer module, the web
page and the benchmarks agree. It needs NumPy and SciPy only, not torch: the web server shows
metrics without importing it. Masks are bool arrays ``[k, j, i]`` on one grid; spacing is given in
rtdeep's usual (i, j, k) order and reversed here to array-axis order.

Empty masks never raise. The conventions (also in the CSV written by ``rtdeep compare``):

* both masks empty: every metric is NaN (nothing to compare);
* exactly one empty: Dice 0.0 and surface Dice 0.0; HD95 and mean surface distance NaN
  (a distance to an empty surface is undefined; MONAI would give inf).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from rtdeep.dicomrt.types import Roi, StructureSet
from rtdeep.names import pair_roi_names
from rtdeep.volume import Volume

__all__ = ["METRIC_COLUMNS", "compare_structure_sets", "dice_coefficient", "extent_offsets_mm", "segment_metrics"]

log = logging.getLogger(__name__)

#: the per-organ columns of :func:`compare_structure_sets` rows, in CSV order
METRIC_COLUMNS = [
    "roi_name",
    "reference_roi",
    "test_roi",
    "dice",
    "hd95_mm",
    "msd_mm",
    "surface_dice_2mm",
    "volume_ref_cc",
    "volume_test_cc",
    "volume_ratio",
    "note",
]


def dice_coefficient(reference: np.ndarray, test: np.ndarray) -> float:
    """2|A∩B| / (|A| + |B|) of two bool masks on one grid; NaN when both are empty.

    The plain overlap, without the surface metrics of :func:`segment_metrics` (which agrees with it).
    """
    reference, test = np.asarray(reference, bool), np.asarray(test, bool)
    total = int(reference.sum()) + int(test.sum())
    return float("nan") if total == 0 else 2.0 * float((reference & test).sum()) / total


def extent_offsets_mm(reference: np.ndarray, test: np.ndarray, volume: Volume) -> tuple[float, float]:
    """How far ``test`` ends below and above where ``reference`` ends, along the patient's z axis (mm).

    For tubular organs (esophagus, spinal cord) the extent matters beside the overlap: a contour that
    stops two slices short of the gastro-oesophageal junction loses little Dice but changes the
    organ's length. Masks are bool ``[k, j, i]`` on ``volume``'s grid (an axial scan: each ``k``
    one z). Returns (inferior, superior): positive where ``test`` reaches beyond the reference
    (lower at the inferior end, higher at the superior end), negative where it stops short; NaN
    when either mask is empty.
    """
    reference, test = np.asarray(reference, bool), np.asarray(test, bool)
    if reference.shape != test.shape or reference.shape != volume.shape:
        raise ValueError(f"mask shapes {reference.shape} and {test.shape} differ from the grid's {volume.shape}")
    z = volume.slice_z_mm
    in_reference, in_test = z[reference.any(axis=(1, 2))], z[test.any(axis=(1, 2))]
    if in_reference.size == 0 or in_test.size == 0:
        return float("nan"), float("nan")
    return float(in_reference.min() - in_test.min()), float(in_test.max() - in_reference.max())


def _crop_to_union(reference: np.ndarray, test: np.ndarray, margin: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to their union's bounding box plus ``margin`` voxels (clipped at the array edge).

    The metrics do not change (MONAI crops the same way, margin 1); the erosion and the surface
    search then work on the organ's box, not the whole CT.
    """
    union = reference | test
    slices = []
    for axis in range(union.ndim):
        other_axes = tuple(a for a in range(union.ndim) if a != axis)
        hit = np.flatnonzero(union.any(axis=other_axes))
        slices.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + margin + 1, union.shape[axis])))
    region = tuple(slices)
    return reference[region], test[region]


def _surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Coordinates ``[n, 3]`` (array order) of the mask's surface voxels: those that a 6-connected
    erosion removes (voxels at the array's edge count as surface)."""
    from scipy import ndimage

    return np.argwhere(mask & ~ndimage.binary_erosion(mask, border_value=0)).astype(np.float64)


def _surface_distances(a: np.ndarray, b: np.ndarray, spacing_kji: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of ``a`` to the nearest surface voxel of ``b``, and back.

    The definition of MONAI's ``get_edge_surface_distance`` (edges by 6-connected erosion, exact
    Euclidean nearest-neighbour distances in mm, float32; a test holds the two to 1e-5): computed
    here with SciPy, so that review metrics need neither torch nor MONAI.
    """
    from scipy.spatial import cKDTree

    scale = np.asarray(spacing_kji, dtype=np.float64)
    surface_a, surface_b = _surface_voxels(a) * scale, _surface_voxels(b) * scale
    a_to_b = cKDTree(surface_b, leafsize=32).query(surface_a, k=1)[0].astype(np.float32)
    b_to_a = cKDTree(surface_a, leafsize=32).query(surface_b, k=1)[0].astype(np.float32)
    return a_to_b, b_to_a


def segment_metrics(
    reference: np.ndarray,
    test: np.ndarray,
    spacing_mm: Sequence[float] | np.ndarray,
    tolerance_mm: float = 2.0,
) -> dict[str, float]:
    """Agreement of one test mask with its reference mask.

    Args:
        reference: bool mask ``[k, j, i]`` (the reference, e.g. the clinician's contour).
        test: bool mask ``[k, j, i]`` on the same grid (e.g. the AI or atlas contour).
        spacing_mm: voxel size in mm in (i, j, k) order (``Volume.spacing_mm``).
        tolerance_mm: surface Dice tolerance in mm (Nikolov 2021 use 2 mm for most organs).

    Returns:
        ``dice`` (0..1), ``hd95_mm`` (symmetric 95th-percentile Hausdorff distance between the
        surfaces), ``msd_mm`` (symmetric mean surface distance), ``surface_dice_2mm`` (fraction of
        both surfaces within ``tolerance_mm`` of the other; the key keeps its name whatever the
        tolerance), ``volume_ref_cc`` and ``volume_test_cc`` (cm^3). See the module docstring for
        empty masks.
    """
    reference = np.asarray(reference, dtype=bool)
    test = np.asarray(test, dtype=bool)
    if reference.shape != test.shape or reference.ndim != 3:
        raise ValueError(f"masks must be 3D [k, j, i] of one shape, got {reference.shape} and {test.shape}")
    spacing_ijk = np.asarray(spacing_mm, dtype=np.float64)
    voxel_cc = float(np.prod(spacing_ijk)) / 1000.0
    result = {
        "dice": math.nan,
        "hd95_mm": math.nan,
        "msd_mm": math.nan,
        "surface_dice_2mm": math.nan,
        "volume_ref_cc": float(reference.sum()) * voxel_cc,
        "volume_test_cc": float(test.sum()) * voxel_cc,
    }
    has_reference, has_test = bool(reference.any()), bool(test.any())
    if not (has_reference or has_test):
        return result
    if has_reference != has_test:
        result["dice"] = 0.0
        result["surface_dice_2mm"] = 0.0
        return result

    reference, test = _crop_to_union(reference, test)
    result["dice"] = dice_coefficient(reference, test)
    test_to_reference, reference_to_test = _surface_distances(test, reference, spacing_ijk[::-1])
    both = np.concatenate([test_to_reference, reference_to_test])
    result["hd95_mm"] = float(max(np.quantile(d, 0.95) for d in (test_to_reference, reference_to_test)))
    result["msd_mm"] = float(both.mean())
    result["surface_dice_2mm"] = float((both <= float(tolerance_mm)).sum()) / both.size
    return result


def _rois(structures: StructureSet | Sequence[Roi]) -> list[Roi]:
    return list(structures.rois) if isinstance(structures, StructureSet) else list(structures)


def compare_structure_sets(
    reference: StructureSet | Sequence[Roi],
    test: StructureSet | Sequence[Roi],
    grid: Volume,
    *,
    roi_names: Sequence[str] | None = None,
    tolerance_mm: float = 2.0,
) -> list[dict[str, object]]:
    """Per-organ metrics of ``test`` against ``reference`` (both rasterised on ``grid``).

    Args:
        reference: reference structures (e.g. the clinician's RTSTRUCT read on the CT).
        test: structures to judge (AI or atlas), masks on the same grid.
        grid: the CT grid the masks lie on (spacing for the distances, voxel volume).
        roi_names: reference ROI names to compare (default: every reference ROI that the test set
            also has; reference ROIs named here that the test set lacks get a row with an empty
            test mask and ``note`` "not in test").
        tolerance_mm: surface Dice tolerance.

    Returns:
        One dict per reference ROI, keys :data:`METRIC_COLUMNS`; ``roi_name`` is the reference name.
    """
    reference_rois = {roi.name: roi for roi in _rois(reference)}
    test_rois = {roi.name: roi for roi in _rois(test)}
    pairing = pair_roi_names(reference_rois, test_rois)
    for warning in pairing.warnings():
        log.warning(warning)
    pairs = pairing.pairs
    if roi_names is None:
        wanted = [name for name in reference_rois if name in pairs]
    else:
        lookup = {name.lower(): name for name in reference_rois}
        wanted = [lookup.get(name.lower(), name) for name in roi_names]
    rows: list[dict[str, object]] = []
    for name in wanted:
        reference_roi = reference_rois.get(name)
        test_roi = test_rois.get(pairs.get(name, ""))
        shape = grid.shape
        reference_mask = reference_roi.mask if reference_roi is not None else np.zeros(shape, bool)
        test_mask = test_roi.mask if test_roi is not None else np.zeros(shape, bool)
        for roi, mask in ((reference_roi, reference_mask), (test_roi, test_mask)):
            if mask.shape != shape:
                raise ValueError(f"ROI '{roi.name if roi else name}': mask shape {mask.shape} is not the grid {shape}")
        values = segment_metrics(reference_mask, test_mask, grid.spacing_mm, tolerance_mm)
        notes = []
        if reference_roi is None:
            notes.append("not in reference")
        if test_roi is None:
            notes.append("not in test")
        ratio = values["volume_test_cc"] / values["volume_ref_cc"] if values["volume_ref_cc"] > 0 else math.nan
        rows.append(
            {
                "roi_name": name,
                "reference_roi": reference_roi.name if reference_roi else "",
                "test_roi": test_roi.name if test_roi else "",
                **values,
                "volume_ratio": ratio,
                "note": "; ".join(notes),
            }
        )
    return rows
