"""Per-organ clean-up of network output: keep the largest connected component, trim strands, fill holes.

Masks are bool ``[k, j, i]``. Holes are filled slice by slice (axial), as a contour would be drawn,
so an organ that wraps around another structure in 3D keeps that structure out.

Strands: a network can follow a thin run of similar tissue out of a bulky organ, for example a
fat plane from the lung base down into the abdomen, 4-5 mm wide and 8-9 cm long. It is connected to
the lung, so the largest component keeps it; in volume it is nothing (under 1 cc, Dice unchanged),
but in an RTSTRUCT it is a lung contour on dozens of abdominal slices that someone has to delete.
For a compact organ (:attr:`rtdeep.sites.Organ.compact`: lungs, heart) :func:`trim_strands` keeps
the organ's body (the mask opened with a ball :data:`STRAND_WIDTH_MM` wide), everything on the
slices the body spans, and beyond them what lies within :data:`STRAND_REACH_MM` of the body along
the mask: the thin parts a real organ has (the lung's edge in front of the heart, the tip of the
costophrenic recess) stay, and a strand that runs on above or below the organ is cut.
``bench/bench_abdomen.py`` measures it ("lower end mm").
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from rtdeep.dvh import bounding_box

__all__ = ["STRAND_REACH_MM", "STRAND_WIDTH_MM", "clean_organ_mask", "fill_holes_axial", "largest_component",
           "trim_strands"]

#: parts of a compact organ narrower than this (mm) are not its body
STRAND_WIDTH_MM = 6.0
#: how far (mm, measured inside the mask from the body) a thin part may run on above or below a
#: compact organ's body and stay
STRAND_REACH_MM = 20.0


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


def ball(radius_mm: float, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Bool structuring element: the voxel offsets within ``radius_mm`` of the centre on a grid of
    ``spacing_mm`` per array axis (the centre and its face neighbours always included)."""
    spacing = np.asarray(spacing_mm, dtype=float)
    half = np.maximum(np.floor(radius_mm / spacing), 1).astype(int)
    offsets = np.indices(2 * half + 1).transpose(1, 2, 3, 0) - half
    distance = np.sqrt(((offsets * spacing) ** 2).sum(axis=-1))
    element = distance <= radius_mm + 1e-6
    element[tuple(half)] = True
    for axis in range(3):  # one step along each axis, however coarse that axis is
        for step in (-1, 1):
            index = list(half)
            index[axis] += step
            element[tuple(index)] = True
    return element


def trim_strands(
    mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    width_mm: float = STRAND_WIDTH_MM,
    reach_mm: float = STRAND_REACH_MM,
) -> np.ndarray:
    """``mask`` without the thin strands that run on more than ``reach_mm`` above or below its body.

    The body is the largest component of ``mask`` opened with a ball ``width_mm`` across (parts
    narrower than about that vanish). Only slices beyond the body's first or last slice lose voxels:
    within its craniocaudal extent a thin part is anatomy (on a held-out phantom the left lung's
    edge in front of the heart ran thinner than 6 mm over 15 cm). Beyond them the result keeps the
    voxels of ``mask`` reached from the body by growing it inside ``mask`` in steps of the coarsest
    spacing, ``reach_mm`` in all. A mask with no body (every part thin) is returned as it is.

    Args:
        mask: bool ``[k, j, i]``.
        spacing_mm: voxel size along k, j, i (mm).
    """
    opening = ball(width_mm / 2, spacing_mm)
    margin = int(max(opening.shape)) // 2 + 1  # erosion at the box's rim treats outside as background, as the array's
    box = bounding_box(mask, margin=margin)
    if box is None:
        return np.zeros_like(mask, dtype=bool)
    inside = np.asarray(mask[box], dtype=bool)
    body = largest_component(ndimage.binary_opening(inside, structure=opening))
    if not body.any():
        return np.array(mask, dtype=bool)
    step_mm = float(max(spacing_mm))
    steps = int(np.ceil(reach_mm / step_mm))
    reached = ndimage.binary_dilation(body, structure=ball(step_mm, spacing_mm), iterations=steps, mask=inside)
    beside_body = inside & body.any(axis=(1, 2))[:, None, None]  # thin parts within its extent are anatomy
    out = np.zeros_like(mask, dtype=bool)
    out[box] = reached | beside_body
    return out


def clean_organ_mask(mask: np.ndarray, strand_spacing_mm: tuple[float, float, float] | None = None) -> np.ndarray:
    """Largest component, then (for a compact organ: ``strand_spacing_mm``, the grid's voxel size along
    k, j, i) strands trimmed (:func:`trim_strands`), then holes filled per axial slice."""
    kept = largest_component(mask)
    if strand_spacing_mm is not None:
        kept = trim_strands(kept, strand_spacing_mm)
    return fill_holes_axial(kept)
