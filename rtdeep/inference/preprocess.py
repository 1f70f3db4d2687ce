"""What a CT goes through before a network: crop to the body, window the HU.

Resampling to the model grid and back is :mod:`rtdeep.resample`. Arrays are ``[k, j, i]``; affines
map (i, j, k) to LPS mm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rtdeep.volume import Volume

__all__ = ["BODY_THRESHOLD_HU", "body_box", "crop_volume", "rows_columns_box", "tissue_level", "window_hu"]

#: HU above which a voxel is the patient or the couch, not air: where :func:`body_box` crops and
#: where 3D windows go (:func:`tissue_level`)
BODY_THRESHOLD_HU = -500.0


def window_hu(hu: np.ndarray, window: Sequence[float]) -> np.ndarray:
    """Map HU linearly so ``window[0]`` -> 0 and ``window[1]`` -> 1, clipped; float32."""
    low, high = float(window[0]), float(window[1])
    return np.clip((np.asarray(hu, dtype=np.float32) - low) / (high - low), 0.0, 1.0)


def tissue_level(window: Sequence[float]) -> float:
    """:data:`BODY_THRESHOLD_HU` after :func:`window_hu` with ``window`` (0 when the window starts
    above it: then every value above the window's floor is tissue)."""
    return float(window_hu(np.float32(BODY_THRESHOLD_HU), window))


def crop_volume(volume: Volume, box_kji: tuple[slice, slice, slice]) -> Volume:
    """The part of ``volume`` inside ``box_kji`` (array order), with its affine shifted to match."""
    start_ijk = np.array([box_kji[2].start or 0, box_kji[1].start or 0, box_kji[0].start or 0], float)
    affine = volume.affine.copy()
    affine[:3, 3] = volume.index_to_lps(start_ijk)
    return Volume(volume.array[box_kji], affine)


def rows_columns_box(mask: np.ndarray, margin_rows: int, margin_columns: int) -> tuple[slice, slice, slice] | None:
    """Bounding box ``[k, j, i]`` of the true voxels of ``mask`` in rows and columns, plus the margins
    (clipped at the array's edge); slices are kept whole. None when no voxel is true."""
    rows = np.flatnonzero(mask.any(axis=(0, 2)))
    cols = np.flatnonzero(mask.any(axis=(0, 1)))
    if rows.size == 0 or cols.size == 0:
        return None
    return (
        slice(0, mask.shape[0]),
        slice(max(int(rows[0]) - margin_rows, 0), min(int(rows[-1]) + margin_rows + 1, mask.shape[1])),
        slice(max(int(cols[0]) - margin_columns, 0), min(int(cols[-1]) + margin_columns + 1, mask.shape[2])),
    )


def body_box(hu: np.ndarray, threshold_hu: float = BODY_THRESHOLD_HU, margin: int = 4) -> tuple[slice, slice, slice]:
    """Bounding box ``[k, j, i]`` of voxels above ``threshold_hu`` (the patient and couch), plus a margin.

    Rows and columns are cropped; slices are kept whole. Returns the full grid when nothing is above.
    """
    box = rows_columns_box(hu > threshold_hu, margin, margin)
    return box if box is not None else (slice(0, hu.shape[0]), slice(0, hu.shape[1]), slice(0, hu.shape[2]))
