"""Textures: scanner noise, smooth random fields, vessel trees and interstitial (ILD) patterns.

Everything that describes the *patient* (vessel trees, smooth fields, reticulation) is a
continuous function in mm drawn from the patient's random generator, so every grid shows the same
patient; only the scanner noise is drawn per grid.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from rtdeep.phantom.shapes import Capsule

__all__ = ["Reticulation", "SmoothField", "branching_tree", "scanner_noise"]


class SmoothField:
    """A smooth random field: a sum of a few random plane waves (wavelengths in mm), zero mean, unit-ish std."""

    def __init__(self, rng: np.random.Generator, n_waves: int = 4, wavelength_mm: tuple[float, float] = (30.0, 90.0)) -> None:
        directions = rng.normal(size=(n_waves, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        wavelengths = rng.uniform(*wavelength_mm, size=n_waves)
        self.k = (directions * (2 * np.pi / wavelengths)[:, None]).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, size=n_waves).astype(np.float32)
        self.scale = np.float32(np.sqrt(2.0 / n_waves))

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        total = None
        for (kx, ky, kz), phase in zip(self.k, self.phase):
            wave = np.cos(kx * x + ky * y + kz * z + phase)
            total = wave if total is None else total + wave
        return total * self.scale  # type: ignore[operator]


class Reticulation:
    """Reticular lines of interstitial abnormality: a net of thin sheets (~1 mm) a few mm apart.

    ``__call__`` gives the line fraction in [0, 1]; on coarse grids (voxels larger than the mesh
    would alias) use :attr:`mean` instead.
    """

    mean = 0.28

    def __init__(self, rng: np.random.Generator, spacing_mm: float = 7.0) -> None:
        directions = rng.normal(size=(3, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        self.k = (directions * (np.pi / spacing_mm)).astype(np.float32)
        self.phase = rng.uniform(0, np.pi, size=3).astype(np.float32)

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        total = None
        for (kx, ky, kz), phase in zip(self.k, self.phase):
            line = np.abs(np.cos(kx * x + ky * y + kz * z + phase)) - np.float32(0.97)
            np.maximum(line, 0, out=line)
            total = line if total is None else np.maximum(total, line)
        return total * np.float32(1.0 / 0.03)  # type: ignore[operator]


def scanner_noise(shape: tuple[int, int, int], sigma_hu: float, seed: int, correlation_px: float = 0.7) -> np.ndarray:
    """Correlated CT noise (float32, mean 0, std about ``sigma_hu``).

    Two in-plane-correlated noise stacks with 16 and 17 slices are repeated along k and added, so
    the cost is that of ~33 slices whatever the series length and the pattern repeats only after
    272 slices.
    """
    rng = np.random.default_rng(seed)
    n_k = shape[0]
    out = np.empty(shape, dtype=np.float32)
    stacks = []
    for period in (16, 17):
        period = min(period, n_k)
        white = rng.standard_normal((period, shape[1], shape[2]), dtype=np.float32)
        if correlation_px > 0:
            white = ndimage.gaussian_filter(white, (0, correlation_px, correlation_px))
            white /= max(float(white.std()), 1e-6)
        stacks.append(white)
    scale = np.float32(sigma_hu / np.sqrt(2.0))
    for k in range(n_k):
        np.add(stacks[0][k % len(stacks[0])], stacks[1][k % len(stacks[1])], out=out[k])
    out *= scale
    return out


def branching_tree(
    rng: np.random.Generator,
    root: np.ndarray,
    directions: list[np.ndarray],
    radius_mm: float,
    length_mm: float,
    generations: int,
    inside: Callable[[np.ndarray], np.ndarray],
) -> list[tuple[Capsule, int]]:
    """A random bifurcating tube tree (pulmonary vessels or airways) grown from ``root``.

    Grown one generation at a time (all branches of a generation are tested together).

    Args:
        rng: the patient's generator.
        root: LPS mm of the hilum.
        directions: directions of the first branches (one per lobe).
        radius_mm, length_mm: size of the first branches; each generation shrinks by ~0.8.
        generations: depth of the tree.
        inside: points ``(n, 3)`` -> bool, True inside the organ; branches that would end outside
            are shortened and bent (up to three times) or dropped.

    Returns:
        ``(capsule, generation)`` for every segment.
    """
    segments: list[tuple[Capsule, int]] = []
    starts = np.repeat(np.asarray(root, float)[None, :], len(directions), axis=0)
    dirs = np.asarray(directions, float)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    radii = np.full(len(dirs), radius_mm)
    lengths = np.full(len(dirs), length_mm)
    for generation in range(generations):
        if len(starts) == 0:
            break
        ends = np.full_like(starts, np.nan)
        pending = np.ones(len(starts), dtype=bool)
        for _attempt in range(4):
            candidate = starts + dirs * lengths[:, None]
            ok = pending & inside(candidate)
            ends[ok] = candidate[ok]
            pending &= ~ok
            if not pending.any():
                break
            lengths[pending] *= 0.7
            bend = rng.normal(size=(len(starts), 3))
            dirs[pending] += 0.5 * bend[pending]
            dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        kept = ~np.isnan(ends[:, 0])
        end_radii = radii * 0.94
        for a, b, r0, r1 in zip(starts[kept], ends[kept], radii[kept], end_radii[kept]):
            segments.append((Capsule(a, b, float(r0), float(r1)), generation))
        grow = kept & (end_radii >= 0.4)
        if generation + 1 >= generations or not grow.any():
            break
        parents_end, parents_dir = ends[grow], dirs[grow]
        n = len(parents_end)
        axis = rng.normal(size=(n, 3))
        axis -= (axis * parents_dir).sum(axis=1, keepdims=True) * parents_dir
        axis /= np.linalg.norm(axis, axis=1, keepdims=True)
        children = []
        for sign in (1.0, -1.0):
            angle = np.deg2rad(rng.uniform(20, 40, size=n))[:, None]
            child = np.cos(angle) * parents_dir + sign * np.sin(angle) * axis + 0.15 * rng.normal(size=(n, 3))
            children.append(child / np.linalg.norm(child, axis=1, keepdims=True))
        starts = np.concatenate([parents_end, parents_end])
        dirs = np.concatenate(children)
        radii = np.concatenate([end_radii[grow]] * 2) * rng.uniform(0.76, 0.88, size=2 * n)
        lengths = np.concatenate([lengths[grow]] * 2) * rng.uniform(0.78, 0.9, size=2 * n)
    return segments
