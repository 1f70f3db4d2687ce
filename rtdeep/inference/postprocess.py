"""Per-organ clean-up of network output: keep the largest connected component, fill holes.

Masks are bool ``[k, j, i]``. Holes are filled slice by slice (axial), as a contour would be drawn,
so an organ that wraps around another structure in 3D keeps that structure out.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from rtdeep.dvh import bounding_box

__all__ = ["clean_organ_mask", "fill_holes_axial", "largest_component"]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of ``mask`` (empty stays empty)."""
    out = np.zeros_like(mask, dtype=bool)
    box = bounding_box(mask, margin=1)  # outside it: background joined to its rim, as on the whole array
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
    box = bounding_box(mask, margin=1)  # outside it: background joined to its rim, as on the whole array
    if box is None:
        return filled
    for k in range(box[0].start, box[0].stop):
        if mask[k].any():
            filled[k][box[1:]] = ndimage.binary_fill_holes(mask[k][box[1:]])
    return filled


def clean_organ_mask(mask: np.ndarray) -> np.ndarray:
    """Largest component, then holes filled per axial slice."""
    return fill_holes_axial(largest_component(mask))
