"""Per-organ clean-up of network output: keep the largest connected component, fill holes.

Masks are bool ``[k, j, i]``. Holes are filled slice by slice (axial), as a contour would be drawn,
so an organ that wraps around another structure in 3D keeps that structure out.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["clean_organ_mask", "fill_holes_axial", "largest_component"]


def _box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of ``mask``'s true voxels with one voxel of margin (clipped at the edge); None
    when it has none. Labelling and hole filling inside it give what they give on the whole array:
    everything outside is background connected to the box's rim (or the array's edge)."""
    present = [np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
               for axis in range(mask.ndim)]
    if present[0].size == 0:
        return None
    return tuple(slice(max(int(p[0]) - 1, 0), min(int(p[-1]) + 2, n)) for p, n in zip(present, mask.shape))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of ``mask`` (empty stays empty)."""
    out = np.zeros_like(mask, dtype=bool)
    box = _box(mask)
    if box is None:
        return out
    labelled, count = ndimage.label(mask[box], structure=np.ones((3, 3, 3), bool))
    if count <= 1:
        out[box] = labelled > 0
        return out
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    out[box] = labelled == int(sizes.argmax())
    return out


def fill_holes_axial(mask: np.ndarray) -> np.ndarray:
    """Fill holes in each axial slice ``mask[k]``."""
    filled = np.array(mask, dtype=bool)
    box = _box(mask)
    if box is None:
        return filled
    for k in range(box[0].start, box[0].stop):
        if mask[k].any():
            filled[k][box[1:]] = ndimage.binary_fill_holes(mask[k][box[1:]])
    return filled


def clean_organ_mask(mask: np.ndarray) -> np.ndarray:
    """Largest component, then holes filled per axial slice."""
    return fill_holes_axial(largest_component(mask))
