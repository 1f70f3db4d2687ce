"""The one resampler: values of one grid at the voxel centres of another (dose, masks, model grids).

Every resampling in rtdeep (RT Dose onto the CT, the dose inside a crop, a mask or probability map
from the model grid back onto the CT, a CT onto the model spacing) goes through
:func:`sample_on_grid` or its two specialisations here, so "covered by the dose" means one thing in
every command. Interpolation is scipy's (``ndimage.map_coordinates`` / ``affine_transform``,
trilinear by default); arrays are ``[k, j, i]``, affines map (i, j, k) to LPS mm.

Edge rule (:data:`EDGE_TOLERANCE_VOXELS`): a target voxel centre up to half a source voxel beyond
the centre of the source's edge voxel is covered and takes the edge value, since a voxel's value
stands for the whole voxel; farther out it is not covered and gets ``fill`` (0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from rtdeep.volume import Volume

__all__ = [
    "EDGE_TOLERANCE_VOXELS",
    "axis_weights",
    "covered_on_grid",
    "model_grid_affine",
    "resample_box_to_grid",
    "resample_to_spacing",
    "sample_on_grid",
]

#: how far (source voxels) beyond the centre of an edge voxel a target voxel centre still counts
EDGE_TOLERANCE_VOXELS = 0.5


def _to_source(source_affine: np.ndarray, target_affine: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.asarray(source_affine, np.float64)) @ np.asarray(target_affine, np.float64)


def _axis_aligned(to_source: np.ndarray) -> bool:
    linear = to_source[:3, :3]
    return bool(np.allclose(linear - np.diag(np.diag(linear)), 0.0, atol=1e-6))


def _inside(coords: np.ndarray, size: int) -> np.ndarray:
    return (coords >= -EDGE_TOLERANCE_VOXELS - 1e-6) & (coords <= size - 1 + EDGE_TOLERANCE_VOXELS + 1e-6)


def axis_weights(coords: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation along one axis of ``size`` samples at continuous indices ``coords``.

    Returns:
        (lower index, upper index, float32 weight of the upper, covered by the edge rule); indices
        are clamped, so coordinates within the tolerance take the edge value.
    """
    clamped = np.clip(coords, 0.0, size - 1.0)
    lower = np.minimum(np.floor(clamped).astype(np.int64), max(size - 2, 0))
    upper = np.minimum(lower + 1, size - 1)
    return lower, upper, (clamped - lower).astype(np.float32), _inside(coords, size)


def _lerp_along(values: np.ndarray, axis: int, lower: np.ndarray, upper: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``values`` along array ``axis`` between the samples ``lower`` and
    ``upper`` with the upper's float32 ``weight`` (:func:`axis_weights`); float32."""
    along = [1] * values.ndim
    along[axis] = -1
    weight = weight.reshape(along)
    return (np.take(values, lower, axis=axis).astype(np.float32, copy=False) * (1 - weight)
            + np.take(values, upper, axis=axis).astype(np.float32, copy=False) * weight)


def covered_on_grid(source: Volume, affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Which voxel centres of the target grid (``affine``, ``shape`` ``[k, j, i]``) ``source`` covers."""
    to_source = _to_source(source.affine, affine)
    n_kji = source.shape
    if _axis_aligned(to_source):
        ok = [_inside(to_source[a, a] * np.arange(shape[2 - a]) + to_source[a, 3], n_kji[2 - a]) for a in range(3)]
        return ok[2][:, None, None] & ok[1][None, :, None] & ok[0][None, None, :]
    covered = np.empty(shape, bool)
    jj, ii = np.mgrid[0:shape[1], 0:shape[2]].astype(np.float64)
    for k in range(shape[0]):
        inside = np.ones(shape[1:], bool)
        for a in range(3):
            coords = to_source[a, 0] * ii + to_source[a, 1] * jj + to_source[a, 2] * k + to_source[a, 3]
            inside &= _inside(coords, n_kji[2 - a])
        covered[k] = inside
    return covered


def sample_on_grid(
    source: Volume, affine: np.ndarray, shape: tuple[int, int, int], *, fill: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Trilinearly sample ``source`` at the voxel centres of another grid.

    Args:
        source: values on their own grid (e.g. an RT Dose in Gy).
        affine: the target grid's index (i, j, k) -> LPS affine.
        shape: the target grid's shape ``[k, j, i]``.
        fill: value of target voxels the source does not cover (or where it is NaN).

    Returns:
        ``(values float32 [k, j, i], covered bool [k, j, i])``.
    """
    to_source = _to_source(source.affine, affine)
    src = np.asarray(source.array)
    values = np.full(shape, np.float32(fill), np.float32)
    covered = covered_on_grid(source, affine, shape)
    if not covered.any():
        return values, covered
    if _axis_aligned(to_source):
        (li, ui, wi, _), (lj, uj, wj, _), (lk, uk, wk, _) = (
            axis_weights(to_source[a, a] * np.arange(shape[2 - a]) + to_source[a, 3], src.shape[2 - a])
            for a in range(3)
        )
        ks, js, is_ = (np.flatnonzero(covered.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
        # k, then j, then i, over the covered box, a few target slices at a time (memory stays small)
        for start in range(0, ks.size, 16):
            block = ks[start:start + 16]
            slab = _lerp_along(src, 0, lk[block], uk[block], wk[block])
            slab = _lerp_along(slab, 1, lj[js], uj[js], wj[js])
            values[np.ix_(block, js, is_)] = _lerp_along(slab, 2, li[is_], ui[is_], wi[is_])
    else:
        source32 = src.astype(np.float32, copy=False)
        jj, ii = np.mgrid[0:shape[1], 0:shape[2]].astype(np.float64)
        for k in np.flatnonzero(covered.any(axis=(1, 2))):
            coords = [to_source[a, 0] * ii + to_source[a, 1] * jj + to_source[a, 2] * k + to_source[a, 3]
                      for a in (2, 1, 0)]
            values[k] = ndimage.map_coordinates(source32, coords, order=1, mode="nearest")
    nan = np.isnan(values)
    if nan.any():
        covered &= ~nan
    values[~covered] = np.float32(fill)
    return values, covered


def model_grid_affine(ct: Volume, spacing_mm: Sequence[float]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape ``(k, j, i)`` of the grid with ``spacing_mm`` (i, j, k) covering ``ct``.

    The grid's axes are the CT's in :meth:`~rtdeep.volume.Volume.lps_ordered` order (i to the
    patient's left, j posterior, k superior, as closely as the CT's axes allow), so a network sees a
    feet-first or prone CT as it saw its head-first-supine training CTs. Its first voxel centre is a
    corner voxel centre of the CT and it spans the CT's extent (rounded), so the map between the
    grids is a per-axis scale and shift (an axis reversed where the CT's runs the other way).
    """
    ct = ct.lps_ordered()
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    extent_mm = (np.asarray(ct.size_ijk) - 1) * ct.spacing_mm
    size_ijk = np.maximum(np.round(extent_mm / spacing).astype(int) + 1, 1)
    affine = np.eye(4)
    affine[:3, :3] = ct.direction * spacing[None, :]
    affine[:3, 3] = ct.origin_lps
    return affine, (int(size_ijk[2]), int(size_ijk[1]), int(size_ijk[0]))


def _box_affine(affine: np.ndarray, box_kji: Sequence[slice]) -> np.ndarray:
    """Affine of the sub-grid that starts at ``box_kji``'s first voxel."""
    shifted = np.array(affine, dtype=np.float64)
    start_ijk = np.array([box_kji[2].start, box_kji[1].start, box_kji[0].start], dtype=np.float64)
    shifted[:3, 3] += shifted[:3, :3] @ start_ijk
    return shifted


def resample_to_spacing(image: Volume, spacing_mm: Sequence[float]) -> Volume:
    """Resample ``image`` trilinearly to ``spacing_mm`` (i, j, k) on :func:`model_grid_affine`'s grid.

    Axes that are downsampled are smoothed first (Gaussian, sigma half the reduction), so a fine
    CT and a coarse CT of the same anatomy look alike on the model grid.
    """
    image = image.lps_ordered()  # model_grid_affine's axes: a view, no value interpolated
    affine, shape = model_grid_affine(image, spacing_mm)
    to_source = _to_source(image.affine, affine)
    scale = np.abs(np.diag(to_source[:3, :3]))[::-1]  # [k, j, i]
    source = np.asarray(image.array, dtype=np.float32)
    sigma = np.maximum(scale - 1.0, 0.0) * 0.5
    smooth = bool(np.any(sigma > 0.1))
    if not _axis_aligned(to_source):  # (model_grid_affine keeps the image's axes: not reached from it)
        if smooth:
            source = ndimage.gaussian_filter(source, sigma=sigma, mode="nearest", truncate=2.0)
        values, _ = sample_on_grid(Volume(source, image.affine), affine, shape)
        return Volume(values, affine)
    # Smoothing and interpolating along one axis commute with both along another, so each axis is
    # smoothed and sampled in turn, the one reduced most first (the slices of a 1 mm CT onto 3 mm):
    # the later axes work on the reduced array (the same values as smoothing all three axes of the
    # whole image first, to float rounding).
    values = source
    for axis in sorted((2, 1, 0), key=lambda a: -scale[a]):  # array axis; its index axis in to_source is 2 - axis
        if smooth and sigma[axis] > 1e-15:
            values = ndimage.gaussian_filter1d(values, float(sigma[axis]), axis=axis, mode="nearest", truncate=2.0)
        a = 2 - axis
        lower, upper, weight, _ = axis_weights(to_source[a, a] * np.arange(shape[axis]) + to_source[a, 3],
                                               values.shape[axis])
        values = _lerp_along(values, axis, lower, upper, weight)
    values[~covered_on_grid(image, affine, shape)] = 0.0
    return Volume(np.ascontiguousarray(values), affine)


def resample_box_to_grid(
    values: np.ndarray,
    values_affine: np.ndarray,
    box_kji: tuple[slice, slice, slice],
    target: Volume,
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Resample part of a model-grid array (float, e.g. one organ's 0/1 mask) onto the target grid.

    Only the target voxels whose centres fall inside ``box_kji`` (a box of the model grid, array
    order, with a margin of background around the organ) are computed, so one organ costs its
    bounding box, not the whole CT.

    Returns:
        (target box as slices ``[k, j, i]``, resampled float32 values inside it; 0 where the box does
        not cover the target voxel), trilinear.
    """
    source = Volume(np.asarray(values[box_kji], dtype=np.float32), _box_affine(values_affine, box_kji))
    corners = np.array([[i, j, k, 1.0] for i in (0, source.shape[2] - 1) for j in (0, source.shape[1] - 1)
                        for k in (0, source.shape[0] - 1)])
    in_target = (corners @ _to_source(target.affine, source.affine).T)[:, :3]
    first = np.maximum(np.floor(in_target.min(axis=0)).astype(int), 0)[::-1]
    last = np.minimum(np.ceil(in_target.max(axis=0)).astype(int) + 1, np.asarray(target.size_ijk))[::-1]
    target_box = tuple(slice(int(a), int(b)) for a, b in zip(first, last, strict=True))
    out_shape = tuple(max(int(b - a), 0) for a, b in zip(first, last, strict=True))
    if min(out_shape) == 0:
        return target_box, np.zeros(out_shape, np.float32)  # type: ignore[return-value]
    resampled, _ = sample_on_grid(source, _box_affine(target.affine, target_box), out_shape)  # type: ignore[arg-type]
    return target_box, resampled  # type: ignore[return-value]
