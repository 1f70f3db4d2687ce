"""Thorax phantom: body, chest wall, ribs, spine and cord, lungs with vessels and airways, heart,
great vessels, esophagus, trachea and main bronchi, a lung tumour (GTV/PTV) and optional patches
of interstitial abnormality (ground glass with reticulation).

Coordinates are LPS mm, head-first supine: x to the patient's left, y posterior, z superior.
z = 0 is about the top of the diaphragm domes; the lungs reach up to ``lung_height_mm``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rtdeep.phantom.anatomy_common import HU, Bend, elliptic_cylinder_sd, superellipse_sd
from rtdeep.phantom.grid import GridSpec
from rtdeep.phantom.render import Canvas
from rtdeep.phantom.shapes import Capsule, Ellipsoid, random_perturbation, rotation_matrix
from rtdeep.phantom.texture import Reticulation, branching_tree
from rtdeep.sites import SITES, Organ

__all__ = ["THORAX_ROIS", "ThoraxModel", "render_thorax", "sample_thorax"]

THORAX_ROIS = SITES["thorax"].structures


#: the PTV is cropped this far inside the skin (build-up region), as in clinical practice
PTV_SKIN_CROP_MM = 5.0


@dataclass
class ThoraxModel:
    """Every random choice that defines one thorax phantom (all lengths in mm, LPS)."""

    lung_height: float
    body_half_x: float
    body_half_y: float
    fat_mm: float
    wall_front_mm: float
    wall_back_mm: float
    cavity_half_x_left: float
    cavity_half_x_right: float
    cavity_half_y: float
    cavity_centre_y: float
    bend: Bend
    dome_left: float
    dome_right: float
    mediastinum_left: float
    mediastinum_right: float
    vertebra_y: float
    canal_y: float
    esophagus_y: float
    trachea_y: float
    carina_z: float
    heart: Ellipsoid
    aorta: list[Capsule]
    pulmonary_arteries: list[Capsule]
    trachea: list[Capsule]
    esophagus_path: list[Capsule]
    hilum_left: np.ndarray
    hilum_right: np.ndarray
    gtv: Ellipsoid
    gtv_side: str
    gtv_node: Ellipsoid | None
    ptv_margin_mm: float
    ild_patches: list[Ellipsoid]
    ild_near_tumour: bool
    reticulation: Reticulation
    vessels: list[tuple[Capsule, int]] = field(default_factory=list)
    airways: list[tuple[Capsule, int]] = field(default_factory=list)
    rib_period: float = 26.0
    rib_drop: float = 45.0
    vertebra_period: float = 27.0
    z_range: tuple[float, float] = (0.0, 0.0)
    pixel_mm: float = 1.0
    slice_mm: float = 3.0
    fov_mm: float = 512.0
    fov_centre: tuple[float, float] = (0.0, 0.0)

    # --- implicit functions -------------------------------------------------------------------
    def apex_taper(self, z: np.ndarray) -> np.ndarray:
        start = np.float32(0.5 * self.lung_height)
        top = np.float32(self.lung_height + 6.0)
        t = np.clip((z - start) / (top - start), 0.0, 1.0)
        return np.maximum(1.0 - t ** 2.2, 1e-4).astype(np.float32) ** np.float32(0.6)

    def cavity_sd(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Pleural cavity and mediastinum (inside the ribs), down into the upper abdomen."""
        bx, by = self.bend.body_frame(x, y, z)
        taper = self.apex_taper(z)
        half_x = np.where(bx > 0, np.float32(self.cavity_half_x_left), np.float32(self.cavity_half_x_right)) * taper
        half_y = np.float32(self.cavity_half_y) * (np.float32(0.75) + np.float32(0.25) * taper)
        centre_y = np.float32(self.cavity_centre_y) + np.float32(12.0) * (np.float32(1.0) - taper)
        sd = superellipse_sd(bx, by - centre_y, np.maximum(half_x, 1.0), half_y, 2.0)
        return sd

    def diaphragm_z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height (mm) of the diaphragm surface over (x, y): two domes, the right one higher."""
        left = self.dome_left - 48.0 * (((x - 0.45 * self.cavity_half_x_left) / (0.75 * self.cavity_half_x_left)) ** 2
                                       + ((y - self.cavity_centre_y + 10) / self.cavity_half_y) ** 2)
        right = self.dome_right - 48.0 * (((x + 0.45 * self.cavity_half_x_right) / (0.75 * self.cavity_half_x_right)) ** 2
                                         + ((y - self.cavity_centre_y + 10) / self.cavity_half_y) ** 2)
        return np.maximum(left, right).astype(np.float32)

    def lung_sds(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, cavity: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Signed distances of the left and right lung before the mediastinal organs are carved out."""
        cavity = self.cavity_sd(x, y, z) if cavity is None else cavity
        bx, _ = self.bend.body_frame(x, y, z)
        below = self.diaphragm_z(x, y) - z
        base = np.maximum(cavity, below)
        left = np.maximum(base, np.float32(self.mediastinum_left) - bx)
        right = np.maximum(base, bx + np.float32(self.mediastinum_right))
        return left, right

    def body_sd(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        bx, by = self.bend.body_frame(x, y, z)
        return superellipse_sd(bx, by, np.float32(self.body_half_x), np.float32(self.body_half_y), 2.5)

    def in_lungs(self, points: np.ndarray, margin_mm: float = 0.0) -> np.ndarray:
        """True for points ``(n, 3)`` at least ``margin_mm`` inside a lung (and away from the heart)."""
        x, y, z = (points[:, a].astype(np.float32) for a in range(3))
        left, right = self.lung_sds(x, y, z)
        heart = self.heart.sd(*self.bend.body_frame(x, y, z), z)
        return (np.minimum(left, right) < -margin_mm) & (heart > 4.0 + margin_mm)

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([-self.body_half_x - 12, -self.body_half_y - 10, self.z_range[0] - 5])
        hi = np.array([self.body_half_x + 12, self.body_half_y + 40, self.z_range[1] + 5])
        return lo, hi

    def rois(self) -> tuple[Organ, ...]:
        return THORAX_ROIS


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def sample_thorax(rng: np.random.Generator) -> ThoraxModel:
    """Draw one thorax patient from the generative model (see docs/phantom.md for the ranges)."""
    height = _uniform(rng, 200, 255)
    body_x, body_y = _uniform(rng, 140, 180), _uniform(rng, 92, 118)
    fat = _uniform(rng, 5, 24)
    wall_front, wall_back = _uniform(rng, 14, 24), _uniform(rng, 34, 46)
    front = -body_y + fat + wall_front
    back = body_y - fat - wall_back
    cav_y = (front + back) / 2
    cav_half_y = (back - front) / 2
    cav_half_x = body_x - fat - _uniform(rng, 16, 26)
    asym = _uniform(rng, -0.05, 0.05)
    cav_left, cav_right = cav_half_x * (1 + asym), cav_half_x * (1 - asym)
    bend = Bend.random(rng)
    dome_right, dome_left = _uniform(rng, 5, 22), _uniform(rng, -12, 4)
    med_left, med_right = _uniform(rng, 6, 14), _uniform(rng, 4, 12)

    vertebra_y = back - 20.0
    canal_y = vertebra_y + 16 + 10
    esophagus_y = vertebra_y - 16 - 8
    trachea_y = esophagus_y - 19.5
    carina_z = height * _uniform(rng, 0.58, 0.66)
    top = height + _uniform(rng, 25, 45)

    heart_r = np.array([_uniform(rng, 52, 66), _uniform(rng, 42, 52), _uniform(rng, 48, 60)])
    heart_x = _uniform(rng, 14, 34)
    heart_y = front + heart_r[1] * 0.9 + _uniform(rng, 4, 14)
    heart_y = min(heart_y, esophagus_y - 12 - heart_r[1] * 0.85)
    heart_z = max(dome_left, dome_right) - 8 + heart_r[2] * 0.6
    heart = Ellipsoid(np.array([heart_x, heart_y, heart_z]), heart_r,
                      rotation_matrix(_uniform(rng, -48, -30), _uniform(rng, 12, 28), _uniform(rng, -10, 10)),
                      random_perturbation(rng, 0.04))
    heart_top = heart_z + heart_r[2] * 0.55
    arch_z = carina_z + _uniform(rng, 18, 30)
    aorta = [
        Capsule((heart_x - 12, heart_y + 8, heart_top - 20), (2, trachea_y - 26, arch_z - 4), 14, 14),
        Capsule((2, trachea_y - 26, arch_z - 4), (26, trachea_y - 4, arch_z + 6), 14, 13),
        Capsule((26, trachea_y - 4, arch_z + 6), (22, esophagus_y + 10, arch_z - 10), 13, 12),
        Capsule((22, esophagus_y + 10, arch_z - 10), (20, esophagus_y + 12, -45), 12, 11),
    ]
    hilum_left = np.array([med_left + _uniform(rng, 28, 38), trachea_y + 12, carina_z - _uniform(rng, 18, 28)])
    hilum_right = np.array([-med_right - _uniform(rng, 26, 34), trachea_y + 12, carina_z - _uniform(rng, 10, 20)])
    trunk_top = np.array([8.0, trachea_y - 6, carina_z - 14])
    pulmonary = [
        Capsule((heart_x - 2, heart_y - 10, heart_top - 10), trunk_top, 13, 12),
        Capsule(trunk_top, hilum_left, 11, 8),
        Capsule(trunk_top, hilum_right, 11, 8),
    ]
    carina = np.array([-1.0, trachea_y + 4, carina_z])
    trachea = [
        Capsule((0.0, trachea_y, top + 20), carina, 10.5, 10.0),
        Capsule(carina, hilum_left + np.array([-8, 4, 4]), 7.0, 6.0),
        Capsule(carina, hilum_right + np.array([8, 4, 4]), 8.0, 6.5),
    ]
    esophagus = [
        Capsule((3.0, esophagus_y, top + 20), (4.0, esophagus_y, carina_z), 8.0, 8.0),
        Capsule((4.0, esophagus_y, carina_z), (14.0, esophagus_y - 4, -10.0), 8.0, 8.0),
        Capsule((14.0, esophagus_y - 4, -10.0), (30.0, esophagus_y - 20, -45.0), 8.0, 8.0),
    ]

    model = ThoraxModel(
        lung_height=height, body_half_x=body_x, body_half_y=body_y, fat_mm=fat, wall_front_mm=wall_front,
        wall_back_mm=wall_back, cavity_half_x_left=cav_left, cavity_half_x_right=cav_right,
        cavity_half_y=cav_half_y, cavity_centre_y=cav_y, bend=bend, dome_left=dome_left, dome_right=dome_right,
        mediastinum_left=med_left, mediastinum_right=med_right, vertebra_y=vertebra_y, canal_y=canal_y,
        esophagus_y=esophagus_y, trachea_y=trachea_y, carina_z=carina_z, heart=heart, aorta=aorta,
        pulmonary_arteries=pulmonary, trachea=trachea, esophagus_path=esophagus, hilum_left=hilum_left,
        hilum_right=hilum_right, gtv=heart, gtv_side="L", gtv_node=None, ptv_margin_mm=8.0, ild_patches=[],
        ild_near_tumour=False, reticulation=Reticulation(rng), rib_period=_uniform(rng, 24, 29),
        rib_drop=_uniform(rng, 80, 115), vertebra_period=_uniform(rng, 25, 29),
    )
    _sample_tumour(model, rng)
    _sample_ild(model, rng)
    _sample_trees(model, rng)
    _sample_scan(model, rng, top)
    return model


def _random_point_in_lungs(model: ThoraxModel, rng: np.random.Generator, margin_mm: float, side: str | None,
                           weight: str = "uniform", n: int = 4000) -> np.ndarray | None:
    lo = np.array([-model.cavity_half_x_right, model.cavity_centre_y - model.cavity_half_y, -30.0])
    hi = np.array([model.cavity_half_x_left, model.cavity_centre_y + model.cavity_half_y, model.lung_height])
    points = rng.uniform(lo, hi, size=(n, 3))
    if side == "L":
        points[:, 0] = np.abs(points[:, 0])
    elif side == "R":
        points[:, 0] = -np.abs(points[:, 0])
    ok = model.in_lungs(points, margin_mm)
    if weight == "basal_posterior":
        # interstitial abnormality favours the posterior, basal, subpleural lung
        score = (points[:, 1] - lo[1]) / (hi[1] - lo[1]) + (1 - points[:, 2] / model.lung_height)
        ok &= rng.uniform(0, 2, size=n) < score
    candidates = points[ok]
    if len(candidates) == 0:
        return None
    return candidates[0]


def _sample_tumour(model: ThoraxModel, rng: np.random.Generator) -> None:
    side = "L" if rng.uniform() < 0.5 else "R"
    radius = float(np.exp(rng.uniform(np.log(10.0), np.log(30.0))))
    centre = None
    for shrink in (0.6, 0.3, 0.0):
        centre = _random_point_in_lungs(model, rng, radius * shrink, side)
        if centre is not None:
            break
    if centre is None:
        centre = model.hilum_left + [20, 0, -20] if side == "L" else model.hilum_right + [-20, 0, -20]
    radii = radius * rng.uniform(0.8, 1.2, size=3)
    model.gtv = Ellipsoid(centre, radii, rotation_matrix(*rng.uniform(-90, 90, size=3)), random_perturbation(rng, 0.07))
    model.gtv_side = side
    if rng.uniform() < 0.75:
        # involved hilar / mediastinal lymph nodes (locally advanced disease) join the GTV
        hilum = model.hilum_left if side == "L" else model.hilum_right
        towards_midline = -1.0 if side == "L" else 1.0
        node_centre = hilum + np.array([towards_midline * rng.uniform(0, 25), rng.uniform(-20, 5), rng.uniform(-15, 25)])
        model.gtv_node = Ellipsoid(node_centre, rng.uniform(10, 20, size=3), rotation_matrix(*rng.uniform(-90, 90, size=3)),
                                   random_perturbation(rng, 0.08))
    model.ptv_margin_mm = float(rng.choice([7.0, 8.0, 10.0]))


def _sample_ild(model: ThoraxModel, rng: np.random.Generator) -> None:
    """Interstitial abnormality: sometimes next to the tumour (so often inside the high-dose
    region), often elsewhere (posterior-basal), and absent in about a third of the patients."""
    patches = []
    model.ild_near_tumour = bool(rng.uniform() < 0.33)
    if model.ild_near_tumour:
        for _ in range(20):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            distance = float(np.mean(model.gtv.radii)) + rng.uniform(8, 30)
            centre = model.gtv.centre + direction * distance
            if model.in_lungs(centre[None, :], 5.0)[0]:
                break
        patches.append(Ellipsoid(centre, rng.uniform(17, 30, size=3), rotation_matrix(*rng.uniform(-90, 90, size=3)),
                                 random_perturbation(rng, 0.12)))
    n_far = int(rng.choice([0, 1, 2, 3], p=[0.3, 0.3, 0.22, 0.18]))
    for _ in range(n_far):
        centre = _random_point_in_lungs(model, rng, 8.0, None, "basal_posterior")
        if centre is None:
            continue
        patches.append(Ellipsoid(centre, rng.uniform(15, 30, size=3), rotation_matrix(*rng.uniform(-90, 90, size=3)),
                                 random_perturbation(rng, 0.12)))
    model.ild_patches = patches


def _sample_trees(model: ThoraxModel, rng: np.random.Generator) -> None:
    def inside(points: np.ndarray) -> np.ndarray:
        return model.in_lungs(points, 1.0)

    vessels: list[tuple[Capsule, int]] = []
    airways: list[tuple[Capsule, int]] = []
    for hilum, sign in ((model.hilum_left, 1.0), (model.hilum_right, -1.0)):
        lobes = [np.array([0.35 * sign, 0.15, 1.0]), np.array([0.9 * sign, -0.5, -0.2]),
                 np.array([0.45 * sign, 0.35, -1.0]), np.array([0.6 * sign, 0.6, 0.1])]
        start = hilum + np.array([sign * 10.0, 0.0, 0.0])
        vessels += branching_tree(rng, start, lobes, 6.0, 42.0, 7, inside)
        # pulmonary veins: a second tree draining towards the left atrium, below the hilum
        veins = [np.array([0.5 * sign, -0.3, 0.8]), np.array([0.9 * sign, 0.2, -0.3]), np.array([0.5 * sign, 0.5, -0.9])]
        vessels += branching_tree(rng, hilum + np.array([sign * 6.0, 12.0, -30.0]), veins, 5.0, 38.0, 6, inside)
        airways += branching_tree(rng, start + np.array([0, -6.0, 3.0]), lobes[:3], 4.0, 30.0, 3, inside)
    model.vessels = vessels
    model.airways = airways


def _sample_scan(model: ThoraxModel, rng: np.random.Generator, top: float) -> None:
    slice_mm = float(rng.choice([2.5, 3.0]))
    bottom = -_uniform(rng, 45, 70)
    n_slices = int(np.clip(round((top - bottom) / slice_mm) + 1, 100, 150))
    centre_z = (top + bottom) / 2
    z0 = centre_z - (n_slices - 1) * slice_mm / 2
    model.z_range = (z0, z0 + (n_slices - 1) * slice_mm)
    model.slice_mm = slice_mm
    needed = 2 * model.body_half_x + 70
    model.pixel_mm = float(np.clip(max(rng.uniform(0.86, 1.0), needed / 512), 0.8, 1.2))
    model.fov_mm = model.pixel_mm * 512
    model.fov_centre = (0.0, 18.0)


# --- rendering --------------------------------------------------------------------------------------

def _paint_couch(canvas: Canvas, model: ThoraxModel) -> None:
    grid = canvas.grid
    top = model.body_half_y + 6.0
    lo = np.array([-model.body_half_x - 10, top, model.z_range[0] - 10])
    hi = np.array([model.body_half_x + 10, top + 22, model.z_range[1] + 10])
    block = grid.block(lo, hi)
    if block is None:
        return
    curve = top + 0.0008 * block.x ** 2
    shell = np.maximum(curve - block.y, block.y - curve - 18)
    canvas.paint(block, np.maximum(shell, np.abs(block.x) - model.body_half_x - 5), HU["couch_shell"])
    canvas.paint(block, np.maximum(shell + 2.0, np.abs(block.x) - model.body_half_x - 3), HU["couch_foam"])


def _paint_ribs(canvas: Canvas, model: ThoraxModel, block, cavity: np.ndarray) -> None:
    band = (cavity > 0.0) & (cavity < 14.0)
    kk, jj, ii = np.nonzero(band)
    if len(kk) == 0:
        return
    x = block.x[0, 0, ii]
    y = block.y[0, jj, 0]
    z = block.z[kk, 0, 0]
    bx, by = model.bend.body_frame(x, y, z)
    by = by - np.float32(model.cavity_centre_y)
    sin_phi = by / np.sqrt(bx * bx + by * by + 1e-3)
    level = z + np.float32(model.rib_drop) * (1 - sin_phi) * 0.5
    phase = np.mod(level, np.float32(model.rib_period))
    dz = np.minimum(phase, np.float32(model.rib_period) - phase)
    radial = cavity[kk, jj, ii] - np.float32(6.5)
    rib_sd = np.sqrt((radial / 4.5) ** 2 + (dz / 6.0) ** 2) * np.float32(4.5) - np.float32(4.5)
    rib_sd = np.where((z > model.lung_height + 20) | (np.abs(bx) < 18), np.float32(50), rib_sd)
    cartilage = sin_phi < -0.82
    value = np.where(cartilage, np.float32(HU["cartilage"]),
                     np.where(rib_sd > -1.6, np.float32(HU["cortical"]), np.float32(HU["cancellous"] + 40)))
    occ = np.clip(0.5 - rib_sd / canvas.edge_mm, 0, 1).astype(np.float32)
    index = (kk + block.index[0].start, jj + block.index[1].start, ii + block.index[2].start)
    current = canvas.hu[index]
    canvas.hu[index] = current + occ * (value - current)


def _paint_spine(canvas: Canvas, model: ThoraxModel) -> None:
    lo = np.array([-60.0, model.vertebra_y - 30, model.z_range[0] - 5])
    hi = np.array([60.0, model.body_half_y, model.z_range[1] + 5])
    block = canvas.block((lo, hi))
    if block is None:
        return
    bx, by = model.bend.body_frame(block.x, block.y, block.z)
    z = block.z
    body = elliptic_cylinder_sd(bx, by, 0.0, model.vertebra_y, 20.0, 16.0)
    phase = np.mod(z, np.float32(model.vertebra_period))
    disc = phase < 5.0
    value = np.where(disc, np.float32(HU["disc"]), np.where(body > -2.0, np.float32(HU["cortical"] - 100), np.float32(HU["cancellous"])))
    _carve_lungs(canvas, block, body - 5.0)
    canvas.paint(block, body - 3.0, HU["soft"])
    canvas.paint(block, body, value)
    arch = elliptic_cylinder_sd(bx, by, 0.0, model.canal_y, 15.0, 13.0)
    spinous_end = min(model.canal_y + 30.0, model.body_half_y - model.fat_mm - 8.0)
    dy = np.clip((by - model.canal_y) / (spinous_end - model.canal_y), 0, 1) * (spinous_end - model.canal_y)
    spinous = np.sqrt(bx * bx + (by - model.canal_y - dy) ** 2) - np.float32(5.0)
    # transverse processes: short bars running back and out from the arch (2D capsules)
    ax_, ay_ = np.abs(bx) - np.float32(8.0), by - np.float32(model.canal_y - 4.0)
    t = np.clip((ax_ * 20.0 + ay_ * 12.0) / np.float32(20.0 ** 2 + 12.0 ** 2), 0.0, 1.0)
    transverse = np.sqrt((ax_ - t * 20.0) ** 2 + (ay_ - t * 12.0) ** 2) - np.float32(4.5)
    posterior = np.minimum(np.minimum(arch, spinous), transverse)
    gap = np.abs(phase - np.float32(model.vertebra_period * 0.5)) < 3.0
    canvas.paint(block, np.where(gap, np.float32(10.0), posterior), HU["cortical"] - 250)
    canvas.paint(block, elliptic_cylinder_sd(bx, by, 0.0, model.canal_y, 9.0, 8.0), HU["csf"])
    cord = elliptic_cylinder_sd(bx, by, 0.0, model.canal_y - 1.0, 5.5, 4.5)
    canvas.paint(block, cord, HU["cord"], mask_name="SpinalCord")


def _carve_lungs(canvas: Canvas, block, sd: np.ndarray) -> None:
    """Remove ``sd < 0`` from both lung masks (mediastinal organs and their fat)."""
    inside = np.broadcast_to(sd < 0, block.shape)
    for name in ("Lung_L", "Lung_R"):
        if name in canvas.masks:
            canvas.masks[name][block.index] &= ~inside


def _paint_tubes(canvas: Canvas, model: ThoraxModel, capsules: list[Capsule], value: float, fat_margin: float,
                 mask_name: str | None = None, lumen: float | None = None) -> None:
    lo = np.min([c.bbox(fat_margin + 2)[0] for c in capsules], axis=0)
    hi = np.max([c.bbox(fat_margin + 2)[1] for c in capsules], axis=0)
    block = canvas.block((lo, hi))
    if block is None:
        return
    bx, by = model.bend.body_frame(block.x, block.y, block.z)
    sd = None
    for capsule in capsules:
        part = capsule.sd(bx, by, block.z)
        sd = part if sd is None else np.minimum(sd, part)
    assert sd is not None
    _carve_lungs(canvas, block, sd - fat_margin)
    canvas.paint(block, sd - fat_margin, HU["mediastinal_fat"])
    canvas.paint(block, sd, value, mask_name=mask_name)
    if lumen is not None:
        canvas.paint(block, sd + lumen, HU["air"])


def _paint_tree(canvas: Canvas, model: ThoraxModel, segments: list[tuple[Capsule, int]], value: float,
                lumen_fraction: float | None = None) -> None:
    lungs = canvas.mask("Lung_L") | canvas.mask("Lung_R") if "Lung_L" in canvas.masks else None
    for capsule, _generation in segments:
        block = canvas.block(capsule.bbox(canvas.edge_mm))
        if block is None or lungs is None:
            continue
        bx, by = model.bend.body_frame(block.x, block.y, block.z)
        sd = capsule.sd(bx, by, block.z)
        radius = 0.5 * (capsule.radius_a + capsule.radius_b)
        opacity = min(1.0, 2.0 * radius / canvas.edge_mm)
        within = lungs[block.index]
        canvas.paint(block, sd, value, within=within, opacity=opacity)
        if lumen_fraction is not None:
            canvas.paint(block, sd + radius * (1 - lumen_fraction), HU["air"], within=within,
                         opacity=min(1.0, 2.0 * radius * lumen_fraction / canvas.edge_mm))


def render_thorax(model: ThoraxModel, grid: GridSpec, *, edge_mm: float, fine_texture: bool = True) -> Canvas:
    """Evaluate the thorax model on ``grid``: HU (no scanner noise yet) and ROI masks (+ ``ILD``).

    Args:
        model: the patient.
        grid: where to sample.
        edge_mm: partial-volume edge width (about the voxel size).
        fine_texture: draw reticulation lines (False on grids too coarse to resolve them).
    """
    canvas = Canvas(grid, edge_mm)
    _paint_couch(canvas, model)
    lo, hi = model.bbox()
    body_block = canvas.block((lo, hi))
    assert body_block is not None
    body = model.body_sd(body_block.x, body_block.y, body_block.z)
    canvas.paint(body_block, body, HU["fat"], mask_name="External")
    canvas.paint(body_block, body + np.float32(model.fat_mm), HU["muscle"])
    del body

    cav_lo = np.array([-model.cavity_half_x_right - 30, model.cavity_centre_y - model.cavity_half_y - 30, model.z_range[0] - 5])
    cav_hi = np.array([model.cavity_half_x_left + 30, model.cavity_centre_y + model.cavity_half_y + 30, model.lung_height + 30])
    block = canvas.block((cav_lo, cav_hi))
    assert block is not None
    cavity = model.cavity_sd(block.x, block.y, block.z)
    _paint_ribs(canvas, model, block, cavity)
    canvas.paint(block, cavity, HU["mediastinal_fat"])
    below = model.diaphragm_z(block.x, block.y) - block.z
    bx, _ = model.bend.body_frame(block.x, block.y, block.z)
    abdomen_value = np.where(bx < 25.0, np.float32(HU["liver"]), np.float32(HU["soft"] - 5))
    canvas.paint(block, np.maximum(cavity, -below), abdomen_value)
    left, right = model.lung_sds(block.x, block.y, block.z, cavity)
    del cavity, below
    lung_value = np.float32(HU["lung"]) + np.float32(0.28) * (block.y - np.float32(model.cavity_centre_y))
    canvas.paint(block, left, lung_value, mask_name="Lung_L")
    canvas.paint(block, right, lung_value, mask_name="Lung_R")
    del left, right
    bubble = Ellipsoid((50.0, model.cavity_centre_y - 20, model.dome_left - 48), (28.0, 20.0, 14.0))
    canvas.paint_shape(lambda x, y, z: bubble.sd(*model.bend.body_frame(x, y, z), z), bubble.bbox(3), HU["air"])

    _paint_spine(canvas, model)
    heart_block = canvas.block(model.heart.bbox(8))
    if heart_block is not None:
        bx, by = model.bend.body_frame(heart_block.x, heart_block.y, heart_block.z)
        heart = model.heart.sd(bx, by, heart_block.z)
        above = heart_block.z - (model.diaphragm_z(heart_block.x, heart_block.y) - 6.0)
        _carve_lungs(canvas, heart_block, heart - 4.0)
        canvas.paint(heart_block, heart - 4.0, HU["mediastinal_fat"])
        canvas.paint(heart_block, heart, HU["blood"], mask_name="Heart",
                     within=np.broadcast_to(above > 0, heart_block.shape))
    _paint_tubes(canvas, model, model.aorta, HU["blood"], 3.0)
    _paint_tubes(canvas, model, model.pulmonary_arteries, HU["blood"], 2.0)
    _paint_tubes(canvas, model, model.esophagus_path, HU["muscle"] - 5, 3.0, mask_name="Esophagus")
    _paint_tubes(canvas, model, model.trachea, HU["cartilage"] - 40, 2.0, lumen=2.0)
    sternum = Ellipsoid((0.0, model.cavity_centre_y - model.cavity_half_y - 9, model.lung_height * 0.58),
                        (15.0, 7.0, model.lung_height * 0.32))
    canvas.paint_shape(lambda x, y, z: sternum.sd(*model.bend.body_frame(x, y, z), z), sternum.bbox(3),
                       HU["cancellous"] + 60)
    _paint_tree(canvas, model, model.vessels, HU["blood"])
    _paint_tree(canvas, model, model.airways, HU["soft"], lumen_fraction=0.7)
    _paint_ild(canvas, model, fine_texture)
    _paint_tumour(canvas, model)
    return canvas


def _paint_ild(canvas: Canvas, model: ThoraxModel, fine_texture: bool) -> None:
    lungs = canvas.mask("Lung_L") | canvas.mask("Lung_R")
    for patch in model.ild_patches:
        block = canvas.block(patch.bbox(4))
        if block is None:
            continue
        bx, by = model.bend.body_frame(block.x, block.y, block.z)
        sd = patch.sd(bx, by, block.z)
        if fine_texture:
            lines = model.reticulation(bx, by, block.z)
            np.minimum(lines, 1.0, out=lines)
        else:
            lines = np.float32(Reticulation.mean)
        value = np.float32(HU["ggo"]) + np.float32(380.0) * lines
        canvas.paint(block, sd, value, within=lungs[block.index], edge_mm=max(canvas.edge_mm, 6.0), mask_name="ILD")


def _paint_tumour(canvas: Canvas, model: ThoraxModel) -> None:
    margin = model.ptv_margin_mm
    parts = [model.gtv] if model.gtv_node is None else [model.gtv, model.gtv_node]
    lo = np.min([p.bbox(margin + 4)[0] for p in parts], axis=0)
    hi = np.max([p.bbox(margin + 4)[1] for p in parts], axis=0)
    block = canvas.block((lo, hi))
    if block is None:
        return
    bx, by = model.bend.body_frame(block.x, block.y, block.z)
    gtv = model.gtv.sd(bx, by, block.z)
    if model.gtv_node is not None:
        gtv = np.minimum(gtv, model.gtv_node.sd(bx, by, block.z))
    cavity = model.cavity_sd(block.x, block.y, block.z)
    gtv_in = np.maximum(gtv, cavity)
    canvas.paint(block, gtv_in, HU["tumour"], mask_name="GTV")
    inside_skin = model.body_sd(block.x, block.y, block.z) < -PTV_SKIN_CROP_MM
    ptv = np.broadcast_to((gtv_in - np.float32(margin) < 0) & inside_skin, block.shape)
    canvas.mask("PTV")[block.index] |= ptv
    gtv_mask = canvas.masks["GTV"][block.index]
    for name in ("Lung_L", "Lung_R", "ILD"):
        if name in canvas.masks:
            canvas.masks[name][block.index] &= ~gtv_mask
