"""Breathing motion for a phantom patient: a smooth deformation from end-exhale to each phase.

The rendered phantom is taken as end-exhale (the 50 % phase). Each phase ``p`` (fraction of the
cycle, 0 = end-inhale as in phase-binned 4D CT) moves every point of the reference ``X`` to
``X + u(X, p)`` (LPS mm) with

* superior-inferior: ``u_z = -A_si * s(p) * F(x, y) * W(z)``: the diaphragm and the lung bases move
  inferiorly by up to ``A_si`` (peak to peak); ``W`` grows from 0 at the lung apex to 1 at the
  diaphragm domes (and stays 1 below, where the liver follows the diaphragm); ``F`` is the lungs'
  footprint seen from above, smoothed, at 0.35 over the heart (mediastinum moves less) and 0 over
  the spine (fixed);
* anterior-posterior: ``u_y = -A_ap * s(p - lag) * R(y) * Z(z)``: the anterior chest wall rises,
  the back lies still on the couch (``R`` from 1 at the front of the body to 0 at its back); the lag
  gives the hysteresis loop that real tumour trajectories show;
* left-right: ``u_x = A_lr * s(p) * F(x, y) * (x - x_c) / half_width * Z(z)``: lateral expansion;

with ``s(p) = cos^4(pi p)`` (1 at end-inhale, 0 at end-exhale, lingering near exhale as breathing
does). Lung density follows inflation: where the reference is lung, ``HU + 1000`` is divided by
the local volume change ``J`` (the diagonal of ``I + grad u``; shear terms are second order here).

Every phase volume is sampled backwards: for an output voxel centre ``x``, the reference point
``X`` with ``X + u(X) = x`` is found by fixed-point iteration and the reference CT and masks are
interpolated there (trilinear; masks at 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from rtdeep.volume import Volume

__all__ = ["BreathingModel", "breathing_signal", "phase_percentages", "sample_breathing", "warp_to_phase"]

_SLAB = 16  # output slices warped at a time (bounds memory on the 512x512 grid)
_ITERATIONS = 4  # fixed-point steps to invert X -> X + u(X) (displacements << their length scale)


def phase_percentages(n_phases: int) -> list[float]:
    """Phase labels in percent of the cycle: ``0, 100/n, ...`` (``0, 10, ..., 90`` for 10 phases)."""
    return [round(100.0 * index / n_phases, 1) for index in range(n_phases)]


def breathing_signal(phase_fraction: float | np.ndarray) -> np.ndarray:
    """Inhalation level in [0, 1] at a phase (fraction of the cycle): 1 at 0 (end-inhale), 0 at 0.5."""
    return np.cos(np.pi * np.asarray(phase_fraction, dtype=np.float64)) ** 4


@dataclass(frozen=True)
class BreathingModel:
    """One patient's breathing: amplitudes (mm, peak to peak) and where the motion lives.

    Attributes:
        amplitude_si_mm: diaphragm excursion, superior-inferior.
        amplitude_ap_mm: anterior chest-wall excursion.
        amplitude_lr_mm: lateral expansion at the body's side.
        ap_lag_cycles: the anterior-posterior motion lags the superior-inferior one by this much.
        apex_z_mm, dome_z_mm: z of the lung apex (no motion) and of the diaphragm domes (full motion).
        si_exponent: shape of the growth of motion from apex to dome.
        footprint: ``F`` on the CT's (j, i) grid, float32 in [0, 1].
        front_y_mm, back_y_mm: anterior and posterior body surface (y) at mid-lung.
        centre_x_mm, half_width_mm: body centre and half width (x).
        grid_affine: the reference CT's index-to-LPS affine (axis-aligned).
    """

    amplitude_si_mm: float
    amplitude_ap_mm: float
    amplitude_lr_mm: float
    ap_lag_cycles: float
    apex_z_mm: float
    dome_z_mm: float
    si_exponent: float
    footprint: np.ndarray
    front_y_mm: float
    back_y_mm: float
    centre_x_mm: float
    half_width_mm: float
    grid_affine: np.ndarray

    def _si_weight(self, z: np.ndarray) -> np.ndarray:
        t = np.clip((self.apex_z_mm - z) / (self.apex_z_mm - self.dome_z_mm), 0.0, 1.0)
        return t ** self.si_exponent

    def _si_weight_slope(self, z: np.ndarray) -> np.ndarray:
        height = self.apex_z_mm - self.dome_z_mm
        t = (self.apex_z_mm - z) / height
        inside = (t > 0) & (t < 1)
        t = np.clip(t, 1e-6, 1.0)
        return np.where(inside, -self.si_exponent * t ** (self.si_exponent - 1) / height, 0.0)

    def _z_extent(self, z: np.ndarray) -> np.ndarray:
        """1 from the abdomen up to the apex, fading to 0 over 40 mm above it (neck)."""
        return np.clip(1.0 - (z - self.apex_z_mm) / 40.0, 0.0, 1.0)

    def _front_weight(self, y: np.ndarray) -> np.ndarray:
        return np.clip((self.back_y_mm - y) / (self.back_y_mm - self.front_y_mm), 0.0, 1.0)

    def _lateral(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x - self.centre_x_mm) / self.half_width_mm, -1.0, 1.0)

    def _footprint_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        i = (x - self.grid_affine[0, 3]) / self.grid_affine[0, 0]
        j = (y - self.grid_affine[1, 3]) / self.grid_affine[1, 1]
        return ndimage.map_coordinates(self.footprint, [j.ravel(), i.ravel()], order=1, mode="nearest").reshape(x.shape)

    def displacement(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, phase_fraction: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``u`` (mm, LPS) at reference points ``(x, y, z)`` (same-shape float arrays) for one phase."""
        s = float(breathing_signal(phase_fraction))
        s_ap = float(breathing_signal(phase_fraction - self.ap_lag_cycles))
        footprint = self._footprint_at(x, y)
        extent = self._z_extent(z)
        ux = self.amplitude_lr_mm * s * footprint * self._lateral(x) * extent
        uy = -self.amplitude_ap_mm * s_ap * self._front_weight(y) * extent
        uz = -self.amplitude_si_mm * s * footprint * self._si_weight(z)
        return ux, uy, uz

    def volume_change(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, phase_fraction: float) -> np.ndarray:
        """Local volume ratio ``J`` (phase / reference) at reference points (diagonal of ``I + grad u``)."""
        s = float(breathing_signal(phase_fraction))
        s_ap = float(breathing_signal(phase_fraction - self.ap_lag_cycles))
        footprint = self._footprint_at(x, y)
        extent = self._z_extent(z)
        inside_x = np.abs(x - self.centre_x_mm) < self.half_width_mm
        dux_dx = self.amplitude_lr_mm * s * footprint * extent * inside_x / self.half_width_mm
        inside_y = (y > self.front_y_mm) & (y < self.back_y_mm)
        duy_dy = self.amplitude_ap_mm * s_ap * extent * inside_y / (self.back_y_mm - self.front_y_mm)
        duz_dz = -self.amplitude_si_mm * s * footprint * self._si_weight_slope(z)
        return (1.0 + dux_dx) * (1.0 + duy_dy) * (1.0 + duz_dz)

    def mean_displacement(self, mask: np.ndarray, phase_fraction: float) -> np.ndarray:
        """Mean ``u`` (x, y, z mm) over the voxels of a reference mask ``[k, j, i]``."""
        kk, jj, ii = np.nonzero(mask)
        if kk.size == 0:
            return np.zeros(3)
        points = self.grid_affine[:3, :3] @ np.stack([ii, jj, kk]).astype(np.float64) + self.grid_affine[:3, 3:4]
        u = self.displacement(points[0], points[1], points[2], phase_fraction)
        return np.array([float(component.mean()) for component in u])


def _projection(mask: np.ndarray) -> np.ndarray:
    return mask.any(axis=0).astype(np.float32)


def sample_breathing(ct: Volume, masks: dict[str, np.ndarray], rng: np.random.Generator) -> BreathingModel:
    """Draw one patient's breathing from its reference CT grid and masks.

    Args:
        ct: the reference (end-exhale) CT; only its axis-aligned grid is used.
        masks: ``External``, ``Lung_L``, ``Lung_R``, ``Heart`` and ``SpinalCord`` on that grid.
        rng: the patient's breathing random stream.

    Returns:
        A :class:`BreathingModel` with diaphragm excursion 10-22 mm, chest wall 2-5 mm, lateral 1-3 mm.
    """
    if not ct.is_axis_aligned():
        raise ValueError("breathing needs an axis-aligned reference grid")
    spacing = ct.spacing_mm
    lungs = masks["Lung_L"] | masks["Lung_R"]
    kk, _, _ = np.nonzero(lungs)
    z_of_k = ct.affine[2, 3] + ct.affine[2, 2] * kk
    apex_z, dome_z = float(z_of_k.max()), float(np.percentile(z_of_k, 15))
    lung_print = _projection(lungs)
    heart_print = _projection(masks["Heart"]) * (1.0 - lung_print)
    sigma_px = 12.0 / spacing[0]
    footprint = ndimage.gaussian_filter(lung_print + 0.35 * heart_print, sigma_px)
    spine = ndimage.binary_dilation(_projection(masks["SpinalCord"]) > 0, iterations=max(1, round(22.0 / spacing[0])))
    footprint *= 1.0 - ndimage.gaussian_filter(spine.astype(np.float32), 4.0 / spacing[0])
    footprint = np.clip(footprint / max(float(footprint.max()), 1e-6), 0.0, 1.0).astype(np.float32)
    mid_k = int(np.median(kk))
    body_slice = masks["External"][mid_k]
    jj, ii = np.nonzero(body_slice)
    y_of_j = ct.affine[1, 3] + ct.affine[1, 1] * jj
    x_of_i = ct.affine[0, 3] + ct.affine[0, 0] * ii
    return BreathingModel(
        amplitude_si_mm=round(float(rng.uniform(10.0, 22.0)), 1),
        amplitude_ap_mm=round(float(rng.uniform(2.0, 5.0)), 1),
        amplitude_lr_mm=round(float(rng.uniform(1.0, 3.0)), 1),
        ap_lag_cycles=round(float(rng.uniform(0.03, 0.10)), 3),
        apex_z_mm=apex_z,
        dome_z_mm=dome_z,
        si_exponent=round(float(rng.uniform(1.2, 1.8)), 2),
        footprint=footprint,
        front_y_mm=float(y_of_j.min()),
        back_y_mm=float(y_of_j.max()),
        centre_x_mm=float(0.5 * (x_of_i.min() + x_of_i.max())),
        half_width_mm=float(0.5 * (x_of_i.max() - x_of_i.min())),
        grid_affine=ct.affine.copy(),
    )


def _reference_points(model: BreathingModel, shape: tuple[int, int, int], k0: int, k1: int, phase_fraction: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference (x, y, z) mm whose images are the voxel centres of output slices ``k0:k1``."""
    affine = model.grid_affine
    k = np.arange(k0, k1, dtype=np.float64)[:, None, None]
    j = np.arange(shape[1], dtype=np.float64)[None, :, None]
    i = np.arange(shape[2], dtype=np.float64)[None, None, :]
    slab = (k1 - k0, shape[1], shape[2])
    x = np.broadcast_to(affine[0, 3] + affine[0, 0] * i, slab)
    y = np.broadcast_to(affine[1, 3] + affine[1, 1] * j, slab)
    z = np.broadcast_to(affine[2, 3] + affine[2, 2] * k, slab)
    px, py, pz = x.copy(), y.copy(), z.copy()
    for _ in range(_ITERATIONS):
        ux, uy, uz = model.displacement(px, py, pz, phase_fraction)
        px, py, pz = x - ux, y - uy, z - uz
    return px, py, pz


def warp_to_phase(model: BreathingModel, hu: np.ndarray, masks: dict[str, np.ndarray], lung: np.ndarray,
                  phase_fraction: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The CT (HU) and masks of one phase on the reference grid.

    Args:
        model: the patient's breathing.
        hu: reference HU ``[k, j, i]`` (float32).
        masks: reference masks to carry along (bool, same shape).
        lung: reference lung mask (density follows inflation there).
        phase_fraction: phase as a fraction of the cycle (0 = end-inhale, 0.5 = end-exhale).

    Returns:
        (HU float32, masks bool) of the phase.
    """
    affine = model.grid_affine
    out_hu = np.empty_like(hu, dtype=np.float32)
    out_masks = {name: np.zeros(mask.shape, bool) for name, mask in masks.items()}
    lung_f = lung.astype(np.float32)
    mask_f = {name: mask.astype(np.float32) for name, mask in masks.items()}
    reach = _reach_voxels(model)
    boxes = {name: _grown_box(mask, reach) for name, mask in masks.items()}
    for k0 in range(0, hu.shape[0], _SLAB):
        k1 = min(k0 + _SLAB, hu.shape[0])
        px, py, pz = _reference_points(model, hu.shape, k0, k1, phase_fraction)
        index = np.stack([(pz - affine[2, 3]) / affine[2, 2], (py - affine[1, 3]) / affine[1, 1],
                          (px - affine[0, 3]) / affine[0, 0]])
        values = ndimage.map_coordinates(hu, index, order=1, mode="nearest")
        lung_fraction = ndimage.map_coordinates(lung_f, index, order=1, mode="nearest")
        change = model.volume_change(px, py, pz, phase_fraction)
        inflated = (values + 1000.0) / change - 1000.0
        out_hu[k0:k1] = values + lung_fraction * (inflated - values)
        for name, mask in mask_f.items():
            box = boxes[name]
            if box is None or box[0].stop <= k0 or box[0].start >= k1:
                continue
            # only output voxels within reach of the mask can land in it
            sub = (slice(max(box[0].start, k0) - k0, min(box[0].stop, k1) - k0), box[1], box[2])
            out_masks[name][k0:k1][sub] = ndimage.map_coordinates(
                mask, index[(slice(None), *sub)], order=1, mode="constant", cval=0.0) > 0.5
    return out_hu, out_masks


def _reach_voxels(model: BreathingModel) -> np.ndarray:
    """How far (voxels along k, j, i) any point can move, plus a margin for interpolation."""
    spacing = np.abs(np.diag(model.grid_affine)[:3])
    reach_mm = np.array([model.amplitude_si_mm, model.amplitude_ap_mm, model.amplitude_lr_mm])  # z, y, x
    return np.ceil(reach_mm / spacing[::-1]).astype(int) + 2


def _grown_box(mask: np.ndarray, reach: np.ndarray) -> tuple[slice, slice, slice] | None:
    hits = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if not all(hit.size for hit in hits):
        return None
    return tuple(slice(max(int(hit[0]) - int(r), 0), min(int(hit[-1]) + int(r) + 1, n))  # type: ignore[return-value]
                 for hit, r, n in zip(hits, reach, mask.shape))
