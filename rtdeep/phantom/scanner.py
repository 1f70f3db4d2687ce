"""Scanner randomisation (domain randomisation) of the phantoms: how each patient was imaged.

A patient's :class:`ScannerSettings` are drawn once from the ranges below (documented with sources
in ``docs/phantom.md``), from the patient's own random stream, so they are deterministic for
``(site, index, seed)`` and written to the cohort manifest (columns ``scanner_*``).

============================  ==========================================================================
setting                       range (per patient)
============================  ==========================================================================
slice thickness               1, 1.25, 1.5, 2, 2.5, 3 or 5 mm (p = .06 .04 .05 .15 .25 .25 .20)
pixel                         0.5-1.2 mm: the reconstruction FOV covers the body plus 10-60 mm, or in
                              20 % of patients is 80-97 % of the body width (truncated arms / sides)
noise                         sd 6-45 HU in soft tissue (log-uniform: low-dose to smooth)
kernel                        -1 (smooth, Gaussian blur up to 0.9 px) .. +1 (sharp, unsharp mask)
HU calibration offset         -15 .. +15 HU (water phantom QA tolerance +-4 HU; older scanners and
                              other protocols drift more)
beam hardening                cupping of 0-35 HU at the body centre; dark/bright streaks of 0-80 HU
                              from dense objects (metal, contrast inflow, between the humeri)
couch                         curved diagnostic pad, flat carbon-fibre RT top, flat top + vacuum bag
contrast phase                none (55 %), arterial (15 %), portal venous (30 %)
============================  ==========================================================================

:func:`apply_scanner` turns the noiseless rendered HU into the scanner's image: circular FOV
(outside = -1024 HU, masks cut there too), slice profile, kernel, cupping, streaks, noise, offset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from rtdeep.phantom.grid import GridSpec
from rtdeep.phantom.texture import scanner_noise

__all__ = ["CONTRAST_PHASES", "COUCH_TYPES", "ScannerSettings", "StreakSource", "apply_scanner", "sample_scanner"]

SLICE_CHOICES_MM = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0)
SLICE_PROBABILITIES = (0.06, 0.04, 0.05, 0.15, 0.25, 0.25, 0.20)
CONTRAST_PHASES = ("none", "arterial", "venous")
COUCH_TYPES = ("curved", "flat", "flat_vacbag")
PIXEL_RANGE_MM = (0.5, 1.2)


@dataclass(frozen=True)
class ScannerSettings:
    """How one phantom patient was scanned (all per patient; see the module table).

    Attributes:
        slice_mm: slice thickness = spacing of the clinical grid (mm).
        pixel_mm: clinical pixel size (mm); the FOV is 512 pixels.
        fov_mm: reconstruction diameter (mm).
        noise_hu: noise sd in soft tissue on the clinical grid (HU).
        kernel: -1 smooth .. +1 sharp.
        hu_offset: calibration offset added everywhere inside the FOV (HU).
        cupping_hu: beam-hardening cupping depth at the body centre (HU).
        streak_hu: amplitude of streaks from registered dense objects (HU).
        couch: one of :data:`COUCH_TYPES`.
        contrast: one of :data:`CONTRAST_PHASES`.
        blood_left_hu, blood_right_hu: aorta / left heart / pulmonary veins, and SVC / right heart /
            pulmonary arteries (HU).
        svc_hu: superior vena cava (arterial phase: undiluted contrast arriving from the arm).
        myocardium_hu, liver_hu, spleen_hu: enhancing soft tissues (HU).
    """

    slice_mm: float
    pixel_mm: float
    fov_mm: float
    noise_hu: float
    kernel: float
    hu_offset: float
    cupping_hu: float
    streak_hu: float
    couch: str
    contrast: str
    blood_left_hu: float
    blood_right_hu: float
    svc_hu: float
    myocardium_hu: float
    liver_hu: float
    spleen_hu: float

    def manifest_row(self) -> dict[str, Any]:
        """``scanner_<field>`` columns for the cohort manifest (numbers rounded)."""
        return {f"scanner_{key}": (round(value, 3) if isinstance(value, float) else value)
                for key, value in asdict(self).items()}


@dataclass
class StreakSource:
    """A dense object that casts streaks on the slices ``z_lo..z_hi`` (mm).

    ``end`` None: radial streaks from ``start`` (metal, dense contrast); otherwise a dark band
    along the line start-end (beam hardening between two dense bones, e.g. the humeri).
    """

    start: tuple[float, float]
    z_lo: float
    z_hi: float
    end: tuple[float, float] | None = None
    weight: float = 1.0
    angles: list[float] = field(default_factory=list)


def sample_scanner(rng: np.random.Generator, body_width_mm: float, fov_limit_mm: float | None = None) -> ScannerSettings:
    """Draw one patient's scanner settings.

    Args:
        rng: the patient's generator.
        body_width_mm: full left-right width of everything that should be imaged (body and arms).
        fov_limit_mm: upper limit of the FOV (default 512 x 1.2 mm).
    """
    slice_mm = float(rng.choice(SLICE_CHOICES_MM, p=SLICE_PROBABILITIES))
    if rng.uniform() < 0.2:
        fov = body_width_mm * rng.uniform(0.8, 0.97)  # truncated: part of the body lies outside the FOV
    else:
        fov = body_width_mm + rng.uniform(10.0, 60.0)
    fov = float(np.clip(fov, 512 * PIXEL_RANGE_MM[0], min(fov_limit_mm or 1e9, 512 * PIXEL_RANGE_MM[1])))
    pixel = fov / 512.0
    noise = float(np.exp(rng.uniform(np.log(6.0), np.log(45.0))))
    kernel = float(rng.uniform(-1.0, 1.0))
    offset = float(rng.uniform(-15.0, 15.0))
    cupping = float(rng.uniform(0.0, 35.0))
    streak = float(rng.uniform(0.0, 80.0))
    couch = str(rng.choice(COUCH_TYPES, p=(0.35, 0.4, 0.25)))
    contrast = str(rng.choice(CONTRAST_PHASES, p=(0.55, 0.15, 0.30)))
    # enhancement (HU) by phase; unenhanced blood 35-50 HU (haematocrit), myocardium 40-50 HU,
    # liver 50-65 HU (fatty liver below), spleen 40-50 HU
    blood = float(rng.uniform(35, 50))
    myocardium, liver, spleen = float(rng.uniform(40, 50)), float(rng.uniform(50, 65)), float(rng.uniform(40, 50))
    left = right = svc = blood
    if contrast == "arterial":
        left, right = float(rng.uniform(220, 420)), float(rng.uniform(150, 350))
        svc = float(rng.uniform(400, 1500))
        myocardium, liver, spleen = float(rng.uniform(70, 110)), float(rng.uniform(60, 80)), float(rng.uniform(90, 150))
    elif contrast == "venous":
        left = right = svc = float(rng.uniform(130, 200))
        myocardium, liver, spleen = float(rng.uniform(90, 120)), float(rng.uniform(95, 130)), float(rng.uniform(105, 135))
    if rng.uniform() < 0.1:
        liver -= float(rng.uniform(30, 60))  # hepatic steatosis
    return ScannerSettings(slice_mm, pixel, fov, noise, kernel, offset, cupping, streak, couch, contrast,
                           left, right, svc, myocardium, liver, spleen)


def _fov_circle(grid: GridSpec, centre_xy: tuple[float, float], radius_mm: float) -> np.ndarray:
    x = grid.axis_mm(0)[None, :] - np.float32(centre_xy[0])
    y = grid.axis_mm(1)[:, None] - np.float32(centre_xy[1])
    return (x * x + y * y) <= np.float32(radius_mm * radius_mm)


def _cupping(hu: np.ndarray, body: np.ndarray, grid: GridSpec, depth_hu: float) -> None:
    """Beam-hardening cupping: HU lowered towards the centre of each slice's body outline."""
    if depth_hu <= 0:
        return
    x = grid.axis_mm(0)
    y = grid.axis_mm(1)
    for k in range(hu.shape[0]):
        rows, cols = np.nonzero(body[k].any(axis=1))[0], np.nonzero(body[k].any(axis=0))[0]
        if len(rows) < 2 or len(cols) < 2:
            continue
        cx, hx = 0.5 * (x[cols[0]] + x[cols[-1]]), 0.5 * (x[cols[-1]] - x[cols[0]]) + 1.0
        cy, hy = 0.5 * (y[rows[0]] + y[rows[-1]]), 0.5 * (y[rows[-1]] - y[rows[0]]) + 1.0
        u = ((x[None, :] - cx) / hx) ** 2 + ((y[:, None] - cy) / hy) ** 2
        profile = np.clip(1.0 - u, 0.0, 1.0).astype(np.float32)
        hu[k] -= np.float32(depth_hu) * profile * body[k]


def _streaks(hu: np.ndarray, grid: GridSpec, sources: list[StreakSource], amplitude_hu: float,
             rng: np.random.Generator) -> None:
    """Streak artefacts: radial bright/dark lines from point sources, dark bands between bone pairs."""
    if amplitude_hu <= 0 or not sources:
        return
    x = grid.axis_mm(0)[None, :]
    y = grid.axis_mm(1)[:, None]
    z = grid.axis_mm(2)
    width = np.float32(max(1.5, 1.2 * grid.spacing_mm[0]))
    for source in sources:
        slices = np.nonzero((z >= source.z_lo) & (z <= source.z_hi))[0]
        if len(slices) == 0:
            continue
        px, py = np.float32(source.start[0]), np.float32(source.start[1])
        if source.end is None:
            n_lines = 6
            angles = rng.uniform(0, np.pi, size=n_lines)
            signs = np.where(np.arange(n_lines) % 2 == 0, 1.0, -1.0)
            dx, dy = x - px, y - py
            distance = np.sqrt(dx * dx + dy * dy)
            pattern = np.zeros(np.broadcast_shapes(x.shape, y.shape), np.float32)
            for angle, sign in zip(angles, signs):
                perp = np.abs(dx * np.float32(np.sin(angle)) - dy * np.float32(np.cos(angle)))
                pattern += np.float32(sign) * np.exp(-(perp / width) ** 2)
            pattern *= np.float32(amplitude_hu * source.weight) / (1.0 + distance / np.float32(60.0))
        else:
            ex, ey = np.float32(source.end[0]), np.float32(source.end[1])
            length = float(np.hypot(ex - px, ey - py)) or 1.0
            ux, uy = (ex - px) / length, (ey - py) / length
            along = (x - px) * ux + (y - py) * uy
            perp = np.abs((x - px) * uy - (y - py) * ux)
            inside = (along > 0) & (along < length)
            pattern = -np.float32(amplitude_hu * source.weight) * np.exp(-(perp / np.float32(6.0)) ** 2) * inside
        for k in slices:
            hu[k] += pattern


def apply_scanner(hu: np.ndarray, masks: dict[str, np.ndarray], grid: GridSpec, settings: ScannerSettings,
                  fov_centre: tuple[float, float], grid_kind: str, seed: int,
                  streak_sources: list[StreakSource] | None = None) -> np.ndarray:
    """Image the rendered (noiseless) HU like the patient's scanner; masks are cut to the FOV in place.

    Args:
        hu: rendered HU ``[k, j, i]`` (modified and returned).
        masks: the canvas's masks (cut to the reconstruction circle: nothing is contoured where
            nothing was imaged).
        grid: the CT grid.
        settings: the patient's scanner.
        fov_centre: LPS x, y of the reconstruction centre.
        grid_kind: ``clinical`` or ``small`` (noise and kernel are scaled to the voxel size).
        seed: seed of this grid's noise and streak angles.
        streak_sources: dense objects registered by the anatomy.
    """
    rng = np.random.default_rng(seed)
    body = masks.get("External")
    if body is not None:
        _cupping(hu, body, grid, settings.cupping_hu)
    _streaks(hu, grid, streak_sources or [], settings.streak_hu, rng)
    small = grid_kind == "small"
    pixel_ratio = grid.spacing_mm[0] / settings.pixel_mm
    # slice sensitivity profile of thick slices: a little mixing of neighbouring slices
    if not small and settings.slice_mm >= 3.0:
        hu[:] = ndimage.gaussian_filter1d(hu, 0.35, axis=0, mode="nearest")
    # reconstruction kernel (in clinical pixels; a coarse grid already averages it away)
    if settings.kernel < 0:
        sigma = -settings.kernel * 0.9 / pixel_ratio
        if sigma > 0.15:
            hu[:] = ndimage.gaussian_filter(hu, (0, sigma, sigma), mode="nearest")
    elif settings.kernel > 0 and not small:
        blurred = ndimage.gaussian_filter(hu, (0, 1.0, 1.0), mode="nearest")
        hu += np.float32(0.7 * settings.kernel) * (hu - blurred)
        del blurred
    # noise: sharper kernels give finer, stronger noise; larger voxels average it down
    voxel_ratio = (grid.spacing_mm[0] ** 2 * grid.spacing_mm[2]) / (settings.pixel_mm ** 2 * settings.slice_mm)
    sigma_hu = settings.noise_hu * (1.0 + 0.3 * settings.kernel) / np.sqrt(max(voxel_ratio, 1.0))
    correlation = float(np.clip(0.8 - 0.4 * settings.kernel, 0.4, 1.2)) if not small else 0.7
    hu += scanner_noise(hu.shape, float(sigma_hu), seed, correlation_px=correlation)
    hu += np.float32(settings.hu_offset)
    inside = _fov_circle(grid, fov_centre, settings.fov_mm / 2.0)
    hu[:, ~inside] = -1024.0
    for mask in masks.values():
        mask[:, ~inside] = False
    np.clip(hu, -1024.0, 3071.0, out=hu)
    return hu
