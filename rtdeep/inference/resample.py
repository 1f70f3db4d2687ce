"""Grids for the networks: resample a CT to the model spacing and model outputs back to the CT grid.

The model grid keeps the CT's direction cosines and physical extent and only changes the spacing,
so the map between the two grids is a per-axis scale and shift in index space (no rotation), for
axial and oblique CTs alike. Arrays are ``[k, j, i]``; affines map (i, j, k) to LPS mm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from rtdeep.volume import Volume

__all__ = [
    "body_box",
    "crop_volume",
    "model_grid_affine",
    "resample_box_to_grid",
    "resample_to_spacing",
    "window_hu",
]


def model_grid_affine(ct: Volume, spacing_mm: Sequence[float]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape ``(k, j, i)`` of the grid with ``spacing_mm`` (i, j, k) covering the CT.

    The first voxel centre coincides with the CT's; the grid spans the CT's extent (rounded).
    """
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    extent_mm = (np.asarray(ct.size_ijk) - 1) * ct.spacing_mm
    size_ijk = np.maximum(np.round(extent_mm / spacing).astype(int) + 1, 1)
    affine = np.eye(4)
    affine[:3, :3] = ct.direction * spacing[None, :]
    affine[:3, 3] = ct.origin_lps
    return affine, (int(size_ijk[2]), int(size_ijk[1]), int(size_ijk[0]))


def _index_map(source: Volume | np.ndarray, target_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale and offset (k, j, i order) mapping target indices to source indices."""
    source_affine = source.affine if isinstance(source, Volume) else source
    matrix = np.linalg.inv(source_affine) @ target_affine
    scale_ijk = np.diag(matrix[:3, :3])
    offset_ijk = matrix[:3, 3]
    return scale_ijk[::-1].copy(), offset_ijk[::-1].copy()


def resample_to_spacing(ct: Volume, spacing_mm: Sequence[float], order: int = 1) -> Volume:
    """Resample ``ct`` to ``spacing_mm`` (i, j, k) on a grid with the same direction and extent.

    Args:
        ct: image (float) on its own grid.
        spacing_mm: target spacing along i, j, k in mm.
        order: spline order (1 = trilinear, 0 = nearest); edges repeat the nearest voxel.
    """
    affine, shape = model_grid_affine(ct, spacing_mm)
    scale, offset = _index_map(ct, affine)
    source = np.asarray(ct.array, dtype=np.float32)
    # anti-aliasing: smooth along axes that are downsampled, so a fine CT and a coarse CT of the
    # same anatomy look alike on the model grid
    sigma = np.maximum(np.abs(scale) - 1.0, 0.0) * 0.5
    if order > 0 and np.any(sigma > 0.1):
        source = ndimage.gaussian_filter(source, sigma=sigma, mode="nearest", truncate=2.0)
    array = ndimage.affine_transform(
        source, scale, offset, output_shape=shape, order=order,
        mode="nearest", prefilter=False,
    )
    return Volume(array, affine)


def resample_box_to_grid(
    values: np.ndarray,
    values_affine: np.ndarray,
    box_kji: tuple[slice, slice, slice],
    target: Volume,
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Resample part of a model-grid array (float, e.g. one class's probability) onto the target grid.

    Only the target voxels whose centres fall inside ``box_kji`` (a box of the model grid, array order)
    are computed, so one organ costs its bounding box, not the whole CT.

    Returns:
        (target box as slices ``[k, j, i]``, resampled float32 values inside it), trilinear.
    """
    scale, offset = _index_map(Volume(np.zeros((1, 1, 1)), values_affine), target.affine)
    # model index = scale * target index + offset (per axis); invert it for the box corners
    lows = np.array([b.start for b in box_kji], dtype=np.float64)
    highs = np.array([b.stop - 1 for b in box_kji], dtype=np.float64)
    target_lo = (lows - offset) / scale
    target_hi = (highs - offset) / scale
    first = np.maximum(np.floor(np.minimum(target_lo, target_hi)).astype(int), 0)
    last = np.minimum(np.ceil(np.maximum(target_lo, target_hi)).astype(int) + 1, np.asarray(target.shape))
    target_box = tuple(slice(int(a), int(b)) for a, b in zip(first, last, strict=True))
    out_shape = tuple(max(int(b - a), 0) for a, b in zip(first, last, strict=True))
    if min(out_shape) == 0:
        return target_box, np.zeros(out_shape, np.float32)  # type: ignore[return-value]
    resampled = ndimage.affine_transform(
        np.asarray(values, dtype=np.float32), scale, offset + scale * first, output_shape=out_shape,
        order=1, mode="constant", cval=0.0, prefilter=False,
    )
    return target_box, resampled  # type: ignore[return-value]


def window_hu(hu: np.ndarray, window: Sequence[float]) -> np.ndarray:
    """Map HU linearly so ``window[0]`` -> 0 and ``window[1]`` -> 1, clipped; float32."""
    low, high = float(window[0]), float(window[1])
    return np.clip((np.asarray(hu, dtype=np.float32) - low) / (high - low), 0.0, 1.0)


def crop_volume(volume: Volume, box_kji: tuple[slice, slice, slice]) -> Volume:
    """The part of ``volume`` inside ``box_kji`` (array order), with its affine shifted to match."""
    start_ijk = np.array([box_kji[2].start or 0, box_kji[1].start or 0, box_kji[0].start or 0], float)
    affine = volume.affine.copy()
    affine[:3, 3] = volume.index_to_lps(start_ijk)
    return Volume(volume.array[box_kji], affine)


def body_box(hu: np.ndarray, threshold_hu: float = -500.0, margin: int = 4) -> tuple[slice, slice, slice]:
    """Bounding box ``[k, j, i]`` of voxels above ``threshold_hu`` (the patient and couch), plus a margin.

    Rows and columns are cropped; slices are kept whole. Returns the full grid when nothing is above.
    """
    above = hu > threshold_hu
    rows = np.flatnonzero(above.any(axis=(0, 2)))
    cols = np.flatnonzero(above.any(axis=(0, 1)))
    if rows.size == 0 or cols.size == 0:
        return (slice(0, hu.shape[0]), slice(0, hu.shape[1]), slice(0, hu.shape[2]))
    return (
        slice(0, hu.shape[0]),
        slice(max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin + 1, hu.shape[1])),
        slice(max(int(cols[0]) - margin, 0), min(int(cols[-1]) + margin + 1, hu.shape[2])),
    )
