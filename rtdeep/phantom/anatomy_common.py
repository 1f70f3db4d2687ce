"""Pieces shared by both anatomical sites: the bent body axis, tissue HU, and ROI styles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HU", "Bend", "elliptic_cylinder_sd", "superellipse_sd"]

#: typical Hounsfield units of the tissues the phantoms are made of (unenhanced CT)
HU: dict[str, float] = {
    "air": -1000.0,
    "lung": -850.0,
    "fat": -100.0,
    "mediastinal_fat": -85.0,
    "muscle": 45.0,
    "blood": 40.0,
    "liver": 58.0,
    "soft": 35.0,
    "cartilage": 120.0,
    "cancellous": 230.0,
    "cortical": 750.0,
    "disc": 85.0,
    "csf": 12.0,
    "cord": 32.0,
    "brain": 34.0,
    "parotid": -15.0,
    "submandibular": 38.0,
    "tumour": 38.0,
    "ggo": -620.0,
    "couch_foam": -650.0,
    "couch_shell": 150.0,
}


@dataclass(frozen=True)
class Bend:
    """A smooth sideways (x) and front-back (y) bend of the body axis along z, in mm.

    Shapes are defined in the *body frame* ``X = x - dx(z)``, ``Y = y - dy(z)``, so the whole body
    (spine, organs) follows the bend.
    """

    amplitude_x: float
    amplitude_y: float
    wavelength_mm: float
    phase_x: float
    phase_y: float

    @classmethod
    def random(cls, rng: np.random.Generator, max_amplitude_mm: float = 7.0) -> Bend:
        return cls(float(rng.uniform(-1, 1) * max_amplitude_mm), float(rng.uniform(-1, 1) * max_amplitude_mm * 0.6),
                   float(rng.uniform(300, 550)), float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 2 * np.pi)))

    def offset(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = np.float32(2 * np.pi / self.wavelength_mm)
        return (np.float32(self.amplitude_x) * np.sin(w * z + np.float32(self.phase_x)),
                np.float32(self.amplitude_y) * np.sin(w * z + np.float32(self.phase_y)))

    def body_frame(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = self.offset(z)
        return x - dx, y - dy


def superellipse_sd(x: np.ndarray, y: np.ndarray, half_x: np.ndarray | float, half_y: np.ndarray | float,
                    power: float = 2.0) -> np.ndarray:
    """Approximate signed distance (mm) to the curve ``|x/a|^p + |y/b|^p = 1`` (an infinite cylinder along z)."""
    u = np.abs(x / half_x) ** np.float32(power) if power != 2.0 else (x / half_x) ** 2
    v = np.abs(y / half_y) ** np.float32(power) if power != 2.0 else (y / half_y) ** 2
    scale = np.minimum(half_x, half_y) * np.float32(1.0 / power)
    return (u + v - np.float32(1.0)) * scale


def elliptic_cylinder_sd(x: np.ndarray, y: np.ndarray, centre_x: float, centre_y: float,
                         radius_x: float, radius_y: float) -> np.ndarray:
    """Signed distance (mm, approximate) to an elliptic cylinder along z."""
    u = (x - np.float32(centre_x)) * np.float32(1 / radius_x)
    v = (y - np.float32(centre_y)) * np.float32(1 / radius_y)
    return (np.sqrt(u * u + v * v) - np.float32(1.0)) * np.float32(min(radius_x, radius_y))
