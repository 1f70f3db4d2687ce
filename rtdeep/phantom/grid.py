"""CT and dose grids for a phantom patient, and blocks of voxel-centre coordinates in mm.

A phantom is a continuous model in patient LPS millimetres; a :class:`GridSpec` says where it is
sampled. Both CT grids of one patient (``clinical`` 512x512 and ``small`` 128x128) cover the same
field of view, so they show the same anatomy at two resolutions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtdeep.volume import Volume, affine_from_geometry

__all__ = ["GRID_KINDS", "Block", "GridSpec", "ct_grid", "dose_grid", "resample_to_grid"]

GRID_KINDS = ("clinical", "small")


@dataclass(frozen=True)
class GridSpec:
    """An axis-aligned LPS grid (axial, head-first supine: i -> +x, j -> +y, k -> +z).

    Attributes:
        shape: ``(n_k, n_j, n_i)``, the array order.
        spacing_mm: ``(along i, along j, along k)`` in mm.
        origin_lps: LPS mm of the centre of voxel (0, 0, 0).
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_lps: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        return affine_from_geometry(self.origin_lps, self.spacing_mm)

    def axis_mm(self, axis: int) -> np.ndarray:
        """Voxel-centre coordinates (float32, mm) along ``axis`` 0 = x (i), 1 = y (j), 2 = z (k)."""
        n = self.shape[2 - axis]
        return (self.origin_lps[axis] + self.spacing_mm[axis] * np.arange(n)).astype(np.float32)

    def volume(self, array: np.ndarray) -> Volume:
        return Volume(array, self.affine)

    def block(self, lo_mm: np.ndarray, hi_mm: np.ndarray) -> Block | None:
        """The sub-block of voxels whose centres lie in the box ``[lo_mm, hi_mm]`` (x, y, z), or None."""
        slices = []
        for axis in range(3):
            n = self.shape[2 - axis]
            first = int(np.ceil((lo_mm[axis] - self.origin_lps[axis]) / self.spacing_mm[axis]))
            last = int(np.floor((hi_mm[axis] - self.origin_lps[axis]) / self.spacing_mm[axis]))
            first, last = max(first, 0), min(last, n - 1)
            if last < first:
                return None
            slices.append(slice(first, last + 1))
        return Block(self, slices[2], slices[1], slices[0])

    def full_block(self) -> Block:
        return Block(self, slice(0, self.shape[0]), slice(0, self.shape[1]), slice(0, self.shape[2]))


class Block:
    """Voxel-centre coordinates of a sub-block, broadcastable to its shape ``[k, j, i]``.

    ``x`` has shape ``(1, 1, n_i)``, ``y`` ``(1, n_j, 1)``, ``z`` ``(n_k, 1, 1)`` (float32 mm).
    """

    def __init__(self, grid: GridSpec, k: slice, j: slice, i: slice) -> None:
        self.grid = grid
        self.index = (k, j, i)
        self.x = grid.axis_mm(0)[i][None, None, :]
        self.y = grid.axis_mm(1)[j][None, :, None]
        self.z = grid.axis_mm(2)[k][:, None, None]
        self.shape = (self.z.shape[0], self.y.shape[1], self.x.shape[2])


def ct_grid(kind: str, fov_mm: float, centre_xy_mm: tuple[float, float], z_range_mm: tuple[float, float],
            pixel_mm: float, slice_mm: float) -> GridSpec:
    """The CT grid of one patient.

    Args:
        kind: ``"clinical"`` (512x512 pixels of ``pixel_mm``, slices of ``slice_mm``) or ``"small"``
            (128x128 pixels over the same field of view, slices of about 3.5 mm over the same z range).
        fov_mm: reconstruction diameter (512 * pixel_mm for the clinical grid).
        centre_xy_mm: LPS x, y of the field-of-view centre.
        z_range_mm: (inferior, superior) z of the first and last clinical slice centres.
        pixel_mm, slice_mm: clinical pixel and slice spacing.
    """
    z0, z1 = z_range_mm
    if kind == "clinical":
        n_xy, pixel = 512, pixel_mm
        n_k = round((z1 - z0) / slice_mm) + 1
        dz = slice_mm
    elif kind == "small":
        n_xy, pixel = 128, fov_mm / 128.0
        extent = (z1 - z0) + slice_mm  # slab covered by the clinical slices
        n_k = max(round(extent / 3.5), 8)
        dz = extent / n_k
        z0 = z0 - slice_mm / 2 + dz / 2
    else:
        raise ValueError(f"grid must be one of {GRID_KINDS}, got '{kind}'")
    origin = (centre_xy_mm[0] - pixel * (n_xy - 1) / 2, centre_xy_mm[1] - pixel * (n_xy - 1) / 2, z0)
    return GridSpec((n_k, n_xy, n_xy), (pixel, pixel, dz), origin)


def dose_grid(lo_mm: np.ndarray, hi_mm: np.ndarray, spacing_mm: float = 4.0) -> GridSpec:
    """An axis-aligned dose grid of ``spacing_mm`` covering the box ``[lo_mm, hi_mm]`` (x, y, z)."""
    lo = np.floor(np.asarray(lo_mm) / spacing_mm) * spacing_mm
    n = np.ceil((np.asarray(hi_mm) - lo) / spacing_mm).astype(int) + 1
    return GridSpec((int(n[2]), int(n[1]), int(n[0])), (spacing_mm,) * 3, tuple(float(v) for v in lo))


def _axis_weights(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear-interpolation indices and weights from coordinates ``src`` to ``dst`` (clamped, zero outside)."""
    pos = (dst - src[0]) / (src[1] - src[0]) if len(src) > 1 else np.zeros_like(dst)
    inside = (pos >= -1e-3) & (pos <= len(src) - 1 + 1e-3)
    pos = np.clip(pos, 0, len(src) - 1)
    lower = np.minimum(np.floor(pos).astype(np.intp), max(len(src) - 2, 0))
    frac = (pos - lower).astype(np.float32)
    upper = np.minimum(lower + 1, len(src) - 1)
    return lower, upper, np.where(inside, frac, np.nan).astype(np.float32)


def resample_to_grid(array: np.ndarray, source: GridSpec, target: GridSpec) -> np.ndarray:
    """Trilinear resampling between axis-aligned grids, one axis at a time (0 outside ``source``).

    Args:
        array: values ``[k, j, i]`` on ``source``.
    Returns:
        float32 values ``[k, j, i]`` on ``target``.
    """
    out = np.asarray(array, dtype=np.float32)
    outside_masks = []
    for axis in (0, 1):
        lower, upper, frac = _axis_weights(source.axis_mm(axis), target.axis_mm(axis))
        outside = np.isnan(frac)
        array_axis = 2 - axis
        shape = [1, 1, 1]
        shape[array_axis] = -1
        w = np.nan_to_num(frac).reshape(shape)
        a = np.take(out, lower, axis=array_axis)
        b = np.take(out, upper, axis=array_axis)
        out = a + w * (b - a)
        outside_masks.append((array_axis, outside))
    # the slice axis last, one output slice at a time (the output is the largest array)
    lower, upper, frac = _axis_weights(source.axis_mm(2), target.axis_mm(2))
    result = np.empty((len(lower),) + out.shape[1:], dtype=np.float32)
    for k, (lo, hi, w) in enumerate(zip(lower, upper, frac)):
        if np.isnan(w):
            result[k] = 0.0
        else:
            np.subtract(out[hi], out[lo], out=result[k])
            result[k] *= w
            result[k] += out[lo]
    for array_axis, outside in outside_masks:
        if outside.any():
            index = [slice(None)] * 3
            index[array_axis] = outside
            result[tuple(index)] = 0.0
    return result
