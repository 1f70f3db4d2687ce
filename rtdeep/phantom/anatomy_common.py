"""Pieces shared by both anatomical sites: the bent body axis, tissue HU, and ROI styles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HU", "Bend", "Spine", "elliptic_cylinder_sd", "superellipse_sd"]

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


def _ellipse_sd(x: np.ndarray, y: np.ndarray, cy: np.ndarray | float, hx: np.ndarray | float,
                hy: np.ndarray | float) -> np.ndarray:
    """Approximate signed distance to an axial ellipse centred at (0, cy) (half-axes may vary with z)."""
    u, v = x / hx, (y - cy) / hy
    return (np.sqrt(u * u + v * v) - np.float32(1.0)) * np.minimum(hx, hy)


@dataclass
class Spine:
    """A vertebral column with its canal: the model shared by the thorax and the head and neck.

    Vertebral bodies (cortical shell, cancellous core) alternate with discs; the posterior arch
    has pedicles (upper part of each level), laminae (interrupted between levels), a spinous
    process (displaced downwards, as it slopes) and transverse processes; the canal holds epidural
    fat around the thecal sac (CSF, 0-15 HU) with the cord inside it (CSF + 8-20 HU: on non-contrast
    CT the two are barely distinguishable). The ``SpinalCord`` contour is the thecal sac, i.e. it
    follows the spinal canal, as clinical cord contours on CT do. Sizes vary linearly between the
    inferior (``*_lo``) and superior (``*_hi``) ends of the modelled segment: vertebral bodies grow
    and levels get taller from cervical to lumbar (White and Panjabi, Clinical Biomechanics of the
    Spine; Panjabi et al. 1991, Spine 16:888, thoracic vertebral dimensions).

    All lengths in mm in the body frame (see :class:`Bend`); ``canal_y`` is the thecal-sac centre.
    """

    canal_y: float
    sac_half: tuple[float, float]
    z_lo: float
    z_hi: float
    body_half_lo: tuple[float, float]
    body_half_hi: tuple[float, float]
    period_lo: float
    period_hi: float
    phase: float
    disc_fraction: float
    cancellous_hu: float
    cortical_hu: float
    posterior_hu: float
    csf_hu: float
    cord_hu: float
    spinous_length: float
    transverse_length: float
    top_z: float = 1e9
    cord_fraction: float = 0.62

    @classmethod
    def random(cls, rng: np.random.Generator, canal_y: float, z_lo: float, z_hi: float, scale: float,
               body_half_lo: tuple[float, float], body_half_hi: tuple[float, float], period_lo: float,
               period_hi: float, sac_half: tuple[float, float], spinous_length: float, transverse_length: float,
               top_z: float = 1e9) -> Spine:
        csf = float(rng.uniform(0.0, 15.0))
        sac = float(rng.uniform(0.88, 1.1))
        return cls(
            canal_y=canal_y, sac_half=(sac_half[0] * sac, sac_half[1] * sac), z_lo=z_lo, z_hi=z_hi,
            body_half_lo=(body_half_lo[0] * scale, body_half_lo[1] * scale),
            body_half_hi=(body_half_hi[0] * scale, body_half_hi[1] * scale),
            period_lo=period_lo * scale, period_hi=period_hi * scale, phase=float(rng.uniform(0, 1)),
            disc_fraction=float(rng.uniform(0.15, 0.22)), cancellous_hu=float(rng.uniform(110, 300)),
            cortical_hu=float(rng.uniform(550, 950)), posterior_hu=float(rng.uniform(350, 650)),
            csf_hu=csf, cord_hu=csf + float(rng.uniform(8.0, 20.0)), spinous_length=spinous_length * scale,
            transverse_length=transverse_length * scale, top_z=top_z,
        )

    def _t(self, z: np.ndarray) -> np.ndarray:
        return np.clip((z - np.float32(self.z_lo)) / np.float32(self.z_hi - self.z_lo), 0.0, 1.0)

    def level(self, z: np.ndarray) -> np.ndarray:
        """Vertebral level number (fractional part: position within the level, discs first)."""
        b = (self.period_hi - self.period_lo) / (self.z_hi - self.z_lo)
        period = np.maximum(np.float32(self.period_lo) + np.float32(b) * (z - np.float32(self.z_lo)), 8.0)
        if abs(b) < 1e-6:
            return (z - np.float32(self.z_lo)) / np.float32(self.period_lo) + np.float32(self.phase)
        return np.log(period / np.float32(self.period_lo)) / np.float32(b) + np.float32(self.phase)

    @property
    def canal_bone_half(self) -> tuple[float, float]:
        """Half-axes of the bony canal (thecal sac plus epidural fat)."""
        return self.sac_half[0] + 2.0, self.sac_half[1] + 2.5

    def bbox(self, z_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        hx = max(self.body_half_lo[0], self.body_half_hi[0])
        hy = max(self.body_half_lo[1], self.body_half_hi[1])
        half_x = max(hx, self.canal_bone_half[0] + self.transverse_length + 6) + 6
        front = self.canal_y - self.canal_bone_half[1] - 2 * hy - 8
        back = self.canal_y + self.spinous_length + 8
        top = min(z_range[1], self.top_z) + 5
        return np.array([-half_x, front, z_range[0] - 5]), np.array([half_x, back, top])

    def paint(self, canvas, bend: Bend, z_range: tuple[float, float]):  # -> (Block, body sd) or None
        """Paint bone, discs, canal fat, thecal sac (mask ``SpinalCord``) and cord on ``canvas``.

        Returns the painted block and the signed distance of the bone (vertebral bodies, discs and
        posterior elements, so a site can carve its other masks), or None when the spine is outside
        the grid.
        """
        block = canvas.block(self.bbox(z_range))
        if block is None:
            return None
        bx, by = bend.body_frame(block.x, block.y, block.z)
        z = block.z
        above = z - np.float32(self.top_z)
        t = self._t(z)
        hx = np.float32(self.body_half_lo[0]) + t * np.float32(self.body_half_hi[0] - self.body_half_lo[0])
        hy = np.float32(self.body_half_lo[1]) + t * np.float32(self.body_half_hi[1] - self.body_half_lo[1])
        chx, chy = (np.float32(v) for v in self.canal_bone_half)
        canal_y = np.float32(self.canal_y)
        body_cy = canal_y - chy - hy - np.float32(1.0)
        frac = np.mod(self.level(z), np.float32(1.0))
        disc = frac < np.float32(self.disc_fraction)
        body = np.maximum(_ellipse_sd(bx, by, body_cy, hx, hy), above)
        value = np.where(disc, np.float32(HU["disc"]),
                         np.where(body > -1.5, np.float32(self.cortical_hu), np.float32(self.cancellous_hu)))
        canvas.paint(block, body - 2.0, HU["soft"])
        canvas.paint(block, body, value)
        # posterior arch: a ring around the canal, pedicles in front, laminae behind
        canal = _ellipse_sd(bx, by, canal_y + np.float32(1.0), chx, chy)
        ring = np.maximum(_ellipse_sd(bx, by, canal_y + np.float32(1.0), chx + 5.0, chy + 5.0), -canal)
        pedicle_level = (frac > np.float32(self.disc_fraction + 0.05)) & (frac < np.float32(0.6))
        lamina_level = (frac < np.float32(0.78)) | (frac > np.float32(0.95))
        front = by < canal_y
        arch = np.where(front, np.where(pedicle_level, ring, np.float32(50.0)),
                        np.where(lamina_level, ring, np.float32(50.0)))
        spinous_level = np.mod(frac + np.float32(0.3), np.float32(1.0)) < np.float32(0.6)
        y0, y1 = canal_y + chy + np.float32(2.0), canal_y + np.float32(self.spinous_length)
        spinous = np.maximum(np.abs(bx) - np.float32(3.5), np.maximum(y0 - by, by - y1))
        spinous = np.where(spinous_level, spinous, np.float32(50.0))
        ax, ay = np.abs(bx) - (chx + np.float32(2.0)), by - canal_y
        length = np.float32(self.transverse_length)
        dx, dy = length, length * np.float32(0.45)
        s = np.clip((ax * dx + ay * dy) / (dx * dx + dy * dy), 0.0, 1.0)
        transverse = np.sqrt((ax - s * dx) ** 2 + (ay - s * dy) ** 2) - np.float32(4.0)
        transverse = np.where(pedicle_level, transverse, np.float32(50.0))
        posterior = np.maximum(np.minimum(np.minimum(arch, spinous), transverse), above)
        canvas.paint(block, posterior, np.float32(self.posterior_hu))
        # canal: epidural fat, thecal sac (the contour), cord
        canvas.paint(block, np.maximum(canal, above), HU["fat"] + 20)
        sac = np.maximum(_ellipse_sd(bx, by, canal_y, np.float32(self.sac_half[0]), np.float32(self.sac_half[1])), above)
        canvas.paint(block, sac, np.float32(self.csf_hu), mask_name="SpinalCord")
        f = np.float32(self.cord_fraction)
        cord = np.maximum(_ellipse_sd(bx, by, canal_y - np.float32(0.5), np.float32(self.sac_half[0]) * f,
                                      np.float32(self.sac_half[1]) * f), above)
        canvas.paint(block, cord, np.float32(self.cord_hu))
        return block, np.minimum(body, posterior)
