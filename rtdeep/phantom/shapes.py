"""Implicit shapes: approximate signed distances in mm (negative inside) on broadcast coordinates.

Every function takes LPS coordinate arrays ``x, y, z`` (mm, float32, broadcastable to one shape:
e.g. a :class:`~rtdeep.phantom.grid.Block`'s ``(1, 1, n_i)``, ``(1, n_j, 1)``, ``(n_k, 1, 1)``) and
returns a float32 array whose zero level set is the surface. Near the surface the value is close to
the Euclidean distance, which is what partial-volume edges and margins (PTV = GTV + margin) need.
Union is ``np.minimum``, intersection ``np.maximum``, difference ``np.maximum(a, -b)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Capsule", "Ellipsoid", "ramp", "random_perturbation", "rotation_matrix"]


def rotation_matrix(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """Rotation about z (yaw), then y (pitch), then x (roll); returns the 3x3 matrix R (world = R @ local)."""
    a, b, c = np.deg2rad([yaw_deg, pitch_deg, roll_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ ry @ rx


def random_perturbation(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Coefficients of a smooth radial perturbation (linear, quadratic and cubic terms of the direction)."""
    return (rng.normal(0.0, amplitude, size=13)).astype(np.float32)


def ramp(sd: np.ndarray, width_mm: float) -> np.ndarray:
    """Partial-volume occupancy in [0, 1] from a signed distance: 1 inside, 0 outside, linear over ``width_mm``."""
    occ = np.float32(0.5) - sd * np.float32(1.0 / width_mm)
    np.minimum(occ, 1.0, out=occ)
    np.maximum(occ, 0.0, out=occ)
    return occ


@dataclass
class Ellipsoid:
    """A (rotated) ellipsoid with an optional smooth random radial perturbation.

    Attributes:
        centre: LPS mm.
        radii: semi-axes (mm) along the local axes.
        rotation: 3x3 matrix, world = rotation @ local (identity when None).
        perturbation: 13 coefficients from :func:`random_perturbation` (relative radius change).
    """

    centre: np.ndarray
    radii: np.ndarray
    rotation: np.ndarray | None = None
    perturbation: np.ndarray | None = None
    _scale: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.centre = np.asarray(self.centre, dtype=np.float64)
        self.radii = np.asarray(self.radii, dtype=np.float64)
        self._scale = float(np.mean(self.radii))

    def bbox(self, pad_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        grow = 1.0 if self.perturbation is None else 1.0 + float(np.abs(self.perturbation).sum())
        extent = np.full(3, float(self.radii.max()) * min(grow, 2.0)) if self.rotation is not None else self.radii * min(grow, 2.0)
        return self.centre - extent - pad_mm, self.centre + extent + pad_mm

    def local(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coordinates in the local frame, divided by the radii."""
        dx, dy, dz = x - np.float32(self.centre[0]), y - np.float32(self.centre[1]), z - np.float32(self.centre[2])
        if self.rotation is None:
            r = self.radii
            return dx * np.float32(1 / r[0]), dy * np.float32(1 / r[1]), dz * np.float32(1 / r[2])
        m = (self.rotation.T / self.radii[:, None]).astype(np.float32)
        return (m[0, 0] * dx + m[0, 1] * dy + m[0, 2] * dz,
                m[1, 0] * dx + m[1, 1] * dy + m[1, 2] * dz,
                m[2, 0] * dx + m[2, 1] * dy + m[2, 2] * dz)

    def sd(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        u, v, w = self.local(x, y, z)
        s = np.sqrt(u * u + v * v + w * w)
        if self.perturbation is not None:
            inv = np.float32(1.0) / (s + np.float32(1e-6))
            nu, nv, nw = u * inv, v * inv, w * inv
            c = self.perturbation
            radius = (1.0 + c[0] * nu + c[1] * nv + c[2] * nw
                      + c[3] * (nu * nu - nv * nv) + c[4] * (nv * nv - nw * nw) + c[5] * nu * nv
                      + c[6] * nv * nw + c[7] * nu * nw + c[8] * nu * nv * nw
                      + c[9] * nu * (nu * nu - 0.6) + c[10] * nv * (nv * nv - 0.6)
                      + c[11] * nw * (nw * nw - 0.6) + c[12] * nu * (nv * nv - nw * nw))
            s = s / np.maximum(radius, np.float32(0.3))
        return ((s - np.float32(1.0)) * np.float32(self._scale)).astype(np.float32, copy=False)


@dataclass
class Capsule:
    """A tube around the segment a-b with radius varying linearly from ``radius_a`` to ``radius_b`` (mm)."""

    a: np.ndarray
    b: np.ndarray
    radius_a: float
    radius_b: float

    def __post_init__(self) -> None:
        self.a = np.asarray(self.a, dtype=np.float64)
        self.b = np.asarray(self.b, dtype=np.float64)

    def bbox(self, pad_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        r = max(self.radius_a, self.radius_b) + pad_mm
        return np.minimum(self.a, self.b) - r, np.maximum(self.a, self.b) + r

    def sd(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        ab = (self.b - self.a).astype(np.float32)
        length2 = float(ab @ ab) or 1e-6
        px, py, pz = x - np.float32(self.a[0]), y - np.float32(self.a[1]), z - np.float32(self.a[2])
        t = (px * ab[0] + py * ab[1] + pz * ab[2]) * np.float32(1.0 / length2)
        np.clip(t, 0.0, 1.0, out=t)
        dx, dy, dz = px - t * ab[0], py - t * ab[1], pz - t * ab[2]
        radius = np.float32(self.radius_a) + t * np.float32(self.radius_b - self.radius_a)
        return np.sqrt(dx * dx + dy * dy + dz * dz) - radius
