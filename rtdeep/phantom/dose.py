"""A simple, documented photon dose model (not a treatment-planning dose engine).

Per beam (coplanar, gantry angle ``g``; for head-first supine the source sits at
``iso + SAD * (sin g, -cos g, 0)`` in LPS):

* aperture: the PTV projected along the beam, grown by 7 mm, with a Gaussian penumbra
  (sigma 3 mm);
* depth dose: build-up ``1 - exp(-d / 6 mm)`` times attenuation ``exp(-0.0032/mm * d)`` of the
  radiological depth ``d`` (density integrated along the ray from the surface) times the inverse
  square ``(SAD / (SAD + t))^2`` (``t`` the distance past the isocentre along the beam);
* compensation: each beam's fluence is scaled ray by ray so that its own mean dose over the PTV
  is the same on every ray, then once more so that the *summed* dose (with scatter) averaged
  over the PTV along each ray is the same (what a compensator or an optimiser's fluence does);
* scatter: the summed primary dose is blurred (sigma 2.5 mm) and 12% of it is spread with sigma
  18 mm; dose outside the body is zero;
* normalisation: PTV D95 equals the prescription (done by the caller on the CT grid).

Computed on a 4 mm axis-aligned dose grid covering the body.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from rtdeep.phantom.grid import GridSpec

__all__ = ["MU_ATTENUATION_PER_MM", "SAD_MM", "BeamSpec", "compute_dose", "density_from_hu"]

SAD_MM = 1000.0
MU_ATTENUATION_PER_MM = 0.0032
BUILDUP_MM = 6.0
APERTURE_MARGIN_MM = 7.0
PENUMBRA_SIGMA_MM = 3.0
KERNEL_SIGMA_MM = 2.5
SCATTER_FRACTION = 0.12
SCATTER_SIGMA_MM = 18.0


@dataclass(frozen=True)
class BeamSpec:
    gantry_deg: float
    weight: float = 1.0


def density_from_hu(hu: np.ndarray) -> np.ndarray:
    """Relative electron density from HU (piecewise linear: air 0, water 1, bone 1 + 0.6 HU/1000)."""
    hu = np.asarray(hu, dtype=np.float32)
    density = np.where(hu < 0, 1.0 + hu / 1000.0, 1.0 + 0.6 * hu / 1000.0)
    return np.clip(density, 0.0, 2.5).astype(np.float32)


def _beam_axes(gantry_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.deg2rad(gantry_deg)
    source_dir = np.array([np.sin(g), -np.cos(g), 0.0])
    beam_dir = -source_dir
    lateral = np.array([np.cos(g), np.sin(g), 0.0])
    return beam_dir, lateral, np.array([0.0, 0.0, 1.0])


class _BeamFrame:
    """One beam's frame: a grid ``[k, t, u]`` (k: the dose grid's slices, t: distance along the beam
    from the isocentre, u: lateral) with the dose grid's in-plane spacing, limited to the slices and
    lateral range that the aperture (plus penumbra) can reach. Both directions of resampling are
    affine maps (``ndimage.affine_transform``, trilinear)."""

    def __init__(self, ptv: np.ndarray, grid: GridSpec, iso: np.ndarray, gantry_deg: float, half_extent_mm: float):
        self.grid = grid
        step = float(grid.spacing_mm[0])
        self.step = step
        beam_dir, lateral, _up = _beam_axes(gantry_deg)
        n_t = int(np.ceil(2 * half_extent_mm / step)) + 1
        centre = (n_t - 1) / 2
        origin = np.asarray(grid.origin_lps, dtype=np.float64)
        kk, jj, ii = np.nonzero(ptv)
        u_ptv = (origin[0] + ii * step - iso[0]) * lateral[0] + (origin[1] + jj * step - iso[1]) * lateral[1]
        reach = APERTURE_MARGIN_MM + 4 * PENUMBRA_SIGMA_MM + 2 * step
        u_first = int(np.floor((u_ptv.min() - reach) / step + centre))
        u_last = int(np.ceil((u_ptv.max() + reach) / step + centre))
        k_reach = int(np.ceil(reach / grid.spacing_mm[2]))
        self.k_first = max(int(kk.min()) - k_reach, 0)
        self.iso_index = (float((iso[2] - origin[2]) / grid.spacing_mm[2]), centre, centre - u_first)
        k_last = min(int(kk.max()) + k_reach, grid.shape[0] - 1)
        # dose-grid index (k, j, i) of beam-frame index (k', t, u') with k = k' + k_first, u = u' + u_first
        self.to_grid = np.array([[1.0, 0.0, 0.0], [0.0, beam_dir[1], lateral[1]], [0.0, beam_dir[0], lateral[0]]])
        self.offset = np.array([
            float(self.k_first),
            (iso[1] - origin[1]) / step - centre * beam_dir[1] + (u_first - centre) * lateral[1],
            (iso[0] - origin[0]) / step - centre * beam_dir[0] + (u_first - centre) * lateral[0],
        ])
        self.shape = (k_last - self.k_first + 1, n_t, u_last - u_first + 1)
        self.t_mm = (np.arange(n_t) - centre) * step
        self.target = self.forward(ptv.astype(np.float32))

    def forward(self, volume: np.ndarray) -> np.ndarray:
        """Sample a dose-grid volume in this beam's frame."""
        return ndimage.affine_transform(volume, self.to_grid, self.offset, output_shape=self.shape, order=1, cval=0.0,
                                        prefilter=False)

    def depth_dose_at_iso(self) -> float:
        """Depth-dose factor (build-up x attenuation) at the isocentre: MU per unit dose there."""
        k = int(np.clip(round(self.iso_index[0]) - self.k_first, 0, self.shape[0] - 1))
        d = float(self.depth[k, round(self.iso_index[1]), round(self.iso_index[2])])
        return (1 - np.exp(-d / BUILDUP_MM)) * np.exp(-MU_ATTENUATION_PER_MM * d)

    def back(self, beam: np.ndarray) -> np.ndarray:
        """Sample a beam-frame array on the dose grid (zero where the beam frame does not reach)."""
        inverse = np.linalg.inv(self.to_grid)
        back_offset = -inverse @ self.offset + inverse @ np.array([self.k_first, 0.0, 0.0])
        out = np.zeros(self.grid.shape, dtype=np.float32)
        out[self.k_first:self.k_first + self.shape[0]] = ndimage.affine_transform(
            beam, inverse, back_offset, output_shape=(self.shape[0],) + self.grid.shape[1:], order=1, cval=0.0,
            prefilter=False)
        return out

    def primary(self, density: np.ndarray) -> np.ndarray:
        """Primary dose in the beam frame: aperture with penumbra x depth dose x inverse square."""
        step = self.step
        rho = self.forward(density)
        depth = np.cumsum(rho, axis=1) * np.float32(step) - np.float32(0.5 * step) * rho
        self.depth = depth
        aperture = self.target.max(axis=1) > 0.5  # [k', u']
        aperture = ndimage.binary_dilation(aperture, iterations=max(1, round(APERTURE_MARGIN_MM / step)))
        fluence = ndimage.gaussian_filter(aperture.astype(np.float32), PENUMBRA_SIGMA_MM / step, mode="constant")
        inverse_square = ((SAD_MM / (SAD_MM + self.t_mm)) ** 2).astype(np.float32)
        pdd = (1 - np.exp(-depth / np.float32(BUILDUP_MM))) * np.exp(np.float32(-MU_ATTENUATION_PER_MM) * depth)
        return (fluence[:, None, :] * pdd * inverse_square[None, :, None]).astype(np.float32)


def _compensator(dose_in_frame: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-ray fluence factor ``[k, u]`` that flattens the mean dose over the PTV along each ray.

    Like a physical compensator (or the fluence modulation an optimiser would find), it removes
    ray-to-ray differences due to depth and lung along the way; rays that miss the PTV take the
    factor of the nearest ray that hits it.
    """
    weight = target.sum(axis=1)
    hits = weight > 0.5
    if not hits.any():
        return np.ones((dose_in_frame.shape[0], dose_in_frame.shape[2]), dtype=np.float32)
    ray_mean = (dose_in_frame * target).sum(axis=1) / np.maximum(weight, 1e-6)
    factor = np.ones_like(ray_mean)
    factor[hits] = np.median(ray_mean[hits]) / np.maximum(ray_mean[hits], 1e-6)
    _, nearest = ndimage.distance_transform_edt(~hits, return_indices=True)
    factor = factor[nearest[0], nearest[1]]
    return np.clip(factor, 0.75, 1.33).astype(np.float32)


def _spread(total: np.ndarray, step: float) -> np.ndarray:
    primary = ndimage.gaussian_filter(total, KERNEL_SIGMA_MM / step)
    scatter = ndimage.gaussian_filter(total, SCATTER_SIGMA_MM / step)
    return (1 - SCATTER_FRACTION) * primary + SCATTER_FRACTION * scatter


def compute_dose(density: np.ndarray, ptv: np.ndarray, body: np.ndarray, grid: GridSpec, iso_lps: np.ndarray,
                 beams: list[BeamSpec]) -> tuple[np.ndarray, list[float]]:
    """Relative dose ``[k, j, i]`` on ``grid`` from ``beams`` aimed at ``iso_lps``.

    Each beam is first compensated on its own; then one pass compensates every beam against the
    summed dose (with scatter), which evens out what the beams do together.

    Args:
        density: relative electron density on ``grid``.
        ptv: PTV mask on ``grid``.
        body: External mask on ``grid`` (dose is zero outside).
        iso_lps: isocentre, LPS mm.

    Returns:
        (dose in arbitrary units, each beam's monitor units per unit of that dose): after scaling
        the dose to Gy by ``s``, beam ``b`` needs ``s * mu_per_unit[b]`` cGy-calibrated MU in total
        (1 MU = 1 cGy at the depth of maximum dose on the central axis at 100 cm).
    """
    lo = np.asarray(grid.origin_lps)
    hi = lo + (np.array(grid.shape[::-1]) - 1) * np.asarray(grid.spacing_mm)
    corners = np.array([[a, b] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])])
    half_extent = float(np.max(np.linalg.norm(corners - iso_lps[:2], axis=1))) + 8.0
    step = float(grid.spacing_mm[0])
    frames = [_BeamFrame(ptv, grid, iso_lps, beam.gantry_deg, half_extent) for beam in beams]
    primaries = []
    for frame, beam in zip(frames, beams):
        primary = frame.primary(density) * np.float32(beam.weight)
        primary *= _compensator(primary, frame.target)[:, None, :]
        primaries.append(primary)
    contributions = [frame.back(primary) for frame, primary in zip(frames, primaries)]
    spread = _spread(np.sum(contributions, axis=0), step)
    total = np.zeros(grid.shape, dtype=np.float32)
    iso_index = np.round((iso_lps - lo) / np.asarray(grid.spacing_mm)).astype(int)[::-1]
    iso_index = tuple(int(np.clip(v, 0, n - 1)) for v, n in zip(iso_index, grid.shape))
    mu_per_unit = []
    for frame, primary in zip(frames, primaries):
        primary *= _compensator(frame.forward(spread), frame.target)[:, None, :]
        contribution = frame.back(primary)
        total += contribution
        # 100 cGy per Gy; MU = dose at the isocentre / depth-dose factor there
        mu_per_unit.append(100.0 * float(contribution[iso_index]) / max(frame.depth_dose_at_iso(), 1e-3))
    dose = _spread(total, step) * body
    return dose.astype(np.float32), mu_per_unit
