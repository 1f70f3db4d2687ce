"""Thorax phantom: body, chest wall, ribs, spine and cord, lungs with vessels and airways, heart,
great vessels, esophagus, trachea and main bronchi, a lung tumour (GTV/PTV) and optional patches
of interstitial abnormality (ground glass with reticulation); below the diaphragm the upper abdomen
(liver with its inferior edge, gallbladder, stomach, spleen, kidneys, colon with gas and stool,
visceral fat) as far as the scan reaches.

Coordinates are LPS mm, head-first supine: x to the patient's left, y posterior, z superior.
z = 0 is about the top of the diaphragm domes; the lungs reach up to ``lung_height_mm``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rtdeep.phantom.anatomy_common import HU, Bend, Spine, superellipse_sd
from rtdeep.phantom.grid import GridSpec
from rtdeep.phantom.render import Canvas
from rtdeep.phantom.scanner import ScannerSettings, StreakSource, sample_scanner
from rtdeep.phantom.shapes import Capsule, Ellipsoid, random_perturbation, rotation_matrix
from rtdeep.phantom.texture import Reticulation, SmoothField, branching_tree
from rtdeep.sites import SITES, Organ

__all__ = ["THORAX_ROIS", "ThoraxModel", "render_thorax", "sample_thorax"]

THORAX_ROIS = SITES["thorax"].structures


#: the PTV is cropped this far inside the skin (build-up region), as in clinical practice
PTV_SKIN_CROP_MM = 5.0


@dataclass(frozen=True)
class ChestMuscle:
    """A chest-wall muscle on both sides: an angular sector of the wall (degrees from the anterior
    midline towards the side, about the cavity centre) between two depths below the subcutaneous
    fat, over a range of z (mm)."""

    angle_from: float
    angle_to: float
    depth_from: float
    depth_to: float
    z_from: float
    z_to: float
    hu: float


@dataclass
class ThoraxModel:
    """Every random choice that defines one thorax phantom (all lengths in mm, LPS)."""

    size: float
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
    junction_mm: float
    mediastinal_fat_mm: float
    spine: Spine
    vertebra_y: float
    canal_y: float
    esophagus_y: float
    trachea_y: float
    carina_z: float
    heart: Ellipsoid
    pericardial_fat_mm: float
    aorta: list[Capsule]
    arch_branches: list[Capsule]
    pulmonary_arteries: list[Capsule]
    venae_cavae: list[Capsule]
    trachea: list[Capsule]
    esophagus_path: list[Capsule]
    esophagus_air: Capsule | None
    subcarinal: Capsule
    vertebral_column: Capsule
    hilum_left: np.ndarray
    hilum_right: np.ndarray
    gtv: Ellipsoid
    gtv_side: str
    gtv_node: Ellipsoid | None
    ptv_margin_mm: float
    ild_patches: list[Ellipsoid]
    ild_near_tumour: bool
    reticulation: Reticulation
    lung_hu: float = -850.0
    lung_gradient: float = 0.28
    dependent_hu: float = 0.0
    emphysema: float = 0.0
    emphysema_field: SmoothField | None = None
    bullae: list[Ellipsoid] = field(default_factory=list)
    effusion_sides: str = ""
    effusion_depth: float = 0.0
    atelectasis_mm: float = 0.0
    breasts: list[Ellipsoid] = field(default_factory=list)
    breast_texture: SmoothField | None = None
    chest_muscles: list[ChestMuscle] = field(default_factory=list)
    erector_width_mm: float = 30.0
    erector_hu: float = 45.0
    muscle_plane_mm: float = 1.5
    arms: str = "down"
    arm_capsules: list[Capsule] = field(default_factory=list)
    humeri: list[Capsule] = field(default_factory=list)
    scapulae: list[Ellipsoid] = field(default_factory=list)
    clavicles: list[Capsule] = field(default_factory=list)
    liver_extent_x: float = 25.0
    stomach: Ellipsoid | None = None
    stomach_air_y: float = 0.0
    spleen: Ellipsoid | None = None
    liver_low_mm: float = -400.0
    liver_rise_mm: float = 0.0
    gallbladder: Ellipsoid | None = None
    kidneys: list[Ellipsoid] = field(default_factory=list)
    psoas: list[Capsule] = field(default_factory=list)
    kidney_hu: float = 35.0
    colon: list[Capsule] = field(default_factory=list)
    colon_air_share: float = 0.5
    stool_texture: SmoothField | None = None
    visceral_fat: float = 0.0
    visceral_texture: SmoothField | None = None
    costal_margin_mm: tuple[float, float] = (-400.0, -400.0)
    vessels: list[tuple[Capsule, int]] = field(default_factory=list)
    airways: list[tuple[Capsule, int]] = field(default_factory=list)
    rib_period: float = 26.0
    rib_drop: float = 45.0
    back_flat_mm: float = 0.0
    couch_curve: float = 0.0
    scanner: ScannerSettings | None = None
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
        drop = 48.0 * self.size
        left = self.dome_left - drop * (((x - 0.45 * self.cavity_half_x_left) / (0.75 * self.cavity_half_x_left)) ** 2
                                        + ((y - self.cavity_centre_y + 10) / self.cavity_half_y) ** 2)
        right = self.dome_right - drop * (((x + 0.45 * self.cavity_half_x_right) / (0.75 * self.cavity_half_x_right)) ** 2
                                          + ((y - self.cavity_centre_y + 10) / self.cavity_half_y) ** 2)
        return np.maximum(left, right).astype(np.float32)

    def mediastinal_parts(self) -> list[tuple[Capsule, float]]:
        """The organs the lungs wrap around, each with the fat (mm) between it and the pleura: great
        vessels, trachea and main bronchi, esophagus, the subcarinal space and the vertebral bodies
        (the heart, with its own pericardial fat, is carved out where it is painted)."""
        fat = self.mediastinal_fat_mm
        tubes = self.aorta + self.pulmonary_arteries + self.venae_cavae[:2] + self.trachea + self.esophagus_path
        return [(c, fat) for c in tubes] + [(self.subcarinal, 0.5 * fat), (self.vertebral_column, 0.5 * fat)]

    def lung_sds(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, cavity: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Signed distances of the left and right lung: the pleural cavity above the diaphragm on
        each side of a thin junction line, minus the mediastinal organs and their fat
        (:meth:`mediastinal_parts`), so the medial pleura follows the organs."""
        cavity = self.cavity_sd(x, y, z) if cavity is None else cavity
        bx, by = self.bend.body_frame(x, y, z)
        below = self.diaphragm_z(x, y) - z
        base = np.maximum(cavity, below)
        junction = np.float32(0.5 * self.junction_mm)
        left = np.maximum(base, junction - bx)
        right = np.maximum(base, bx + junction)
        for part, fat in self.mediastinal_parts():
            _carve_part(left, right, part, fat, bx, by, z)
        return left, right

    def couch_top_y(self, x: np.ndarray) -> np.ndarray:
        """y (mm, not bent) of the surface the back rests on: the couch top, or the vacuum bag's top.

        The trunk is flattened ``back_flat_mm`` against it, more than the bend's front-back
        amplitude, so the back touches it on every slice; a curved couch is a trough (its sides
        rise around the patient)."""
        return (np.float32(self.body_half_y - self.back_flat_mm) - np.float32(self.couch_curve) * x * x).astype(np.float32)

    def on_couch(self, sd: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``sd`` of a part of the External cut by the couch surface (the body lies on it)."""
        return np.maximum(sd, y - self.couch_top_y(x))

    def body_sd(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The trunk (breasts and arms are separate shapes of the External), flattened on the couch."""
        bx, by = self.bend.body_frame(x, y, z)
        return self.on_couch(superellipse_sd(bx, by, np.float32(self.body_half_x), np.float32(self.body_half_y), 2.5),
                             x, y)

    def in_lungs(self, points: np.ndarray, margin_mm: float = 0.0) -> np.ndarray:
        """True for points ``(n, 3)`` at least ``margin_mm`` inside a lung (and away from the heart)."""
        x, y, z = (points[:, a].astype(np.float32) for a in range(3))
        left, right = self.lung_sds(x, y, z)
        heart = self.heart.sd(*self.bend.body_frame(x, y, z), z)
        return (np.minimum(left, right) < -margin_mm) & (heart > 4.0 + margin_mm)

    def imaged_half_width(self) -> float:
        """Half of the left-right extent of the trunk and the arms (what a full FOV must cover)."""
        extent = self.body_half_x
        for arm in self.arm_capsules:
            extent = max(extent, abs(float(arm.a[0])) + arm.radius_a, abs(float(arm.b[0])) + arm.radius_b)
        return extent + 8.0  # the bend

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        half_x = self.imaged_half_width()
        lo = np.array([-half_x - 12, -self.body_half_y - 60, self.z_range[0] - 5])
        hi = np.array([half_x + 12, self.body_half_y + 45, self.z_range[1] + 5])
        return lo, hi

    def rois(self) -> tuple[Organ, ...]:
        return THORAX_ROIS


def _carve_part(left: np.ndarray, right: np.ndarray, part: Capsule, fat: float, bx: np.ndarray, by: np.ndarray,
                z: np.ndarray) -> None:
    """``left``/``right`` (lung sds, in place) minus ``part`` dilated by ``fat`` mm, evaluated only in
    the part's bounding box (``bx, by, z`` broadcast to the arrays' ``[k, j, i]`` shape, or points)."""
    if left.ndim == 1:  # points
        sd = np.float32(fat) - part.sd(bx, by, z)
        np.maximum(left, sd, out=left)
        np.maximum(right, sd, out=right)
        return
    lo, hi = part.bbox(fat + 2.0)
    index = []
    for axis, (coord, dim) in enumerate(zip((z, by, bx), (2, 1, 0))):  # the coordinate along array axis k, j, i
        inside = (coord >= lo[dim]) & (coord <= hi[dim])
        hit = np.nonzero(inside.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        if len(hit) == 0:
            return
        index.append(slice(hit[0], hit[-1] + 1))
    sub = [c[tuple(index[a] if c.shape[a] > 1 else slice(None) for a in range(3))] for c in (bx, by, z)]
    sd = np.float32(fat) - part.sd(*sub)
    view_l, view_r = left[tuple(index)], right[tuple(index)]
    np.maximum(view_l, sd, out=view_l)
    np.maximum(view_r, sd, out=view_r)


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _heart_depth(radii: np.ndarray, rotation: np.ndarray) -> float:
    """Front-to-back (y) extent of the rotated heart ellipsoid, with 4 % for its surface perturbation."""
    return 2.0 * 1.04 * float(np.sqrt(np.sum((rotation[1, :] * radii) ** 2)))


def _fit_heart_front_to_back(radii: np.ndarray, rotation: np.ndarray, front: float, back: float,
                             slack: float) -> tuple[float, np.ndarray]:
    """Centre y and radii of the heart so that it lies between the back of the anterior chest
    wall (``front``, plus 3 mm) and ``back`` (in front of the esophagus and descending aorta).

    Where it would not fit, the heart flattens front to back and keeps its volume: each semi-axis
    shrinks in proportion to its share of the depth (to no less than 75 % of its drawn length) and
    the axis that adds least to the depth grows by as much volume (to at most 160 %). ``slack`` mm
    of any room left moves it back. A heart still deeper than the room is flattened behind, against
    the esophagus, where it is painted (:func:`_paint_heart`), as a left atrium in a shallow chest
    is; it is also cut by the cavity there.
    """
    room = back - front - 3.0
    drawn = np.asarray(radii, float)
    fitted = drawn.copy()
    volume = float(np.prod(drawn))
    for _ in range(80):
        depth = _heart_depth(fitted, rotation)
        if depth <= room:
            break
        share = (rotation[1, :] * fitted) ** 2
        share = share / share.sum()
        fitted = np.clip(fitted * (room / depth) ** share, 0.75 * drawn, 1.6 * drawn)
        least = int(np.argmin(share))
        fitted[least] = min(fitted[least] * volume / float(np.prod(fitted)), 1.6 * drawn[least])
    depth = _heart_depth(fitted, rotation)
    return front + 3.0 + 0.5 * min(depth, room) + min(slack, max(room - depth, 0.0)), fitted


def sample_thorax(rng: np.random.Generator) -> ThoraxModel:
    """Draw one thorax patient from the generative model (see docs/phantom.md for the ranges)."""
    s = _uniform(rng, 0.8, 1.12)  # frame size: small adolescent to large adult
    fat = float(np.exp(rng.uniform(np.log(3.0), np.log(55.0))))  # subcutaneous fat: thin to obese
    height = _uniform(rng, 185, 235) * s
    lean_x, lean_y = _uniform(rng, 125, 160) * s, _uniform(rng, 95, 115) * s
    body_x, body_y = lean_x + fat, lean_y + 0.8 * fat
    wall_front, wall_back = _uniform(rng, 12, 22) * s, _uniform(rng, 32, 44) * s
    front = -body_y + 0.8 * fat + wall_front
    back = body_y - 0.8 * fat - wall_back
    cav_y = (front + back) / 2
    cav_half_y = (back - front) / 2
    cav_half_x = lean_x - _uniform(rng, 16, 26) * s
    asym = _uniform(rng, -0.05, 0.05)
    cav_left, cav_right = cav_half_x * (1 + asym), cav_half_x * (1 - asym)
    bend = Bend.random(rng)
    dome_right, dome_left = _uniform(rng, 5, 22), _uniform(rng, -12, 4)
    med_left, med_right = _uniform(rng, 6, 14) * s, _uniform(rng, 4, 12) * s  # mediastinal half-widths at the hila

    sac = (_uniform(rng, 6.2, 7.2), _uniform(rng, 5.2, 6.2))
    canal_y = back - _uniform(rng, 12, 20) * s
    spine = Spine.random(rng, canal_y, -80.0 * s, height + 30.0 * s, s, body_half_lo=(22.0, 16.0),
                         body_half_hi=(14.0, 10.5), period_lo=31.0, period_hi=21.0, sac_half=sac,
                         spinous_length=_uniform(rng, 28, 38), transverse_length=_uniform(rng, 18, 24))
    vertebra_y = canal_y - spine.canal_bone_half[1] - 13.0 * s
    esophagus_y = canal_y - spine.canal_bone_half[1] - 2 * 14.0 * s - 10 * s
    trachea_y = esophagus_y - 19.5 * s
    carina_z = height * _uniform(rng, 0.58, 0.66)
    top = height + _uniform(rng, 25, 45)

    heart_r = np.array([_uniform(rng, 52, 66), _uniform(rng, 42, 52), _uniform(rng, 48, 60)]) * s
    heart_x = _uniform(rng, 14, 34) * s
    heart_rotation = rotation_matrix(_uniform(rng, -48, -30), _uniform(rng, 12, 28), _uniform(rng, -10, 10))
    heart_y, heart_r = _fit_heart_front_to_back(heart_r, heart_rotation, front, esophagus_y - 10.0,
                                                _uniform(rng, 0, 10))
    heart_z = max(dome_left, dome_right) - 8 + heart_r[2] * 0.6
    heart = Ellipsoid(np.array([heart_x, heart_y, heart_z]), heart_r, heart_rotation, random_perturbation(rng, 0.04))
    heart_top = heart_z + heart_r[2] * 0.55
    arch_z = carina_z + _uniform(rng, 18, 30) * s
    r_ao = _uniform(rng, 12, 17) * s
    aorta = [
        Capsule((heart_x - 12 * s, heart_y + 8, heart_top - 20 * s), (2, trachea_y - 26 * s, arch_z - 4), r_ao, r_ao),
        Capsule((2, trachea_y - 26 * s, arch_z - 4), (24 * s, trachea_y - 4, arch_z + 6), r_ao, r_ao * 0.95),
        Capsule((24 * s, trachea_y - 4, arch_z + 6), (20 * s, esophagus_y + 10 * s, arch_z - 10), r_ao * 0.95, r_ao * 0.85),
        Capsule((20 * s, esophagus_y + 10 * s, arch_z - 10), (16 * s, esophagus_y + 14 * s, -90.0), r_ao * 0.85, r_ao * 0.75),
        Capsule((16 * s, esophagus_y + 14 * s, -90.0), (12 * s, esophagus_y + 10 * s, -260.0), r_ao * 0.75, r_ao * 0.7),
    ]
    arch_branches = [
        Capsule((2 * s, trachea_y - 22 * s, arch_z + 4), (-14 * s, trachea_y - 14 * s, top + 30), 6.5 * s, 6.0 * s),
        Capsule((10 * s, trachea_y - 14 * s, arch_z + 8), (12 * s, trachea_y - 14 * s, top + 30), 4.5 * s, 4.5 * s),
        Capsule((20 * s, trachea_y - 4, arch_z + 8), (34 * s, trachea_y - 2, top + 30), 5.0 * s, 5.0 * s),
    ]
    hilum_left = np.array([med_left + _uniform(rng, 28, 38) * s, trachea_y + 12, carina_z - _uniform(rng, 18, 28)])
    hilum_right = np.array([-med_right - _uniform(rng, 26, 34) * s, trachea_y + 12, carina_z - _uniform(rng, 10, 20)])
    trunk_top = np.array([8.0 * s, trachea_y - 6, carina_z - 14])
    r_pa = _uniform(rng, 11, 16) * s
    pulmonary = [
        Capsule((heart_x - 2, heart_y - 10 * s, heart_top - 10 * s), trunk_top, r_pa, r_pa * 0.95),
        Capsule(trunk_top, hilum_left, r_pa * 0.85, 8 * s),
        Capsule(trunk_top, hilum_right, r_pa * 0.85, 8 * s),
    ]
    # superior vena cava right of the ascending aorta into the right atrium; inferior vena cava
    # from below the diaphragm (inside the liver) into the right atrium
    right_atrium = np.array([heart_x - heart_r[0] * 0.75, heart_y + heart_r[1] * 0.2, heart_z + heart_r[2] * 0.15])
    r_svc = _uniform(rng, 8, 11) * s
    venae_cavae = [
        Capsule((-22 * s, trachea_y - 16 * s, top + 30), (-20 * s, trachea_y - 12 * s, arch_z - 10), r_svc, r_svc),
        Capsule((-20 * s, trachea_y - 12 * s, arch_z - 10), right_atrium + np.array([4, -4, 10]), r_svc, r_svc),
        Capsule(right_atrium + np.array([6, 8, -20]), (-12 * s, vertebra_y - 30 * s, -100.0), 11 * s, 11 * s),
        Capsule((-12 * s, vertebra_y - 30 * s, -100.0), (-18 * s, vertebra_y - 24 * s, -260.0), 11 * s, 10 * s),
    ]
    carina = np.array([-1.0, trachea_y + 4, carina_z])
    r_tr = _uniform(rng, 8.5, 11.5) * s
    trachea = [
        Capsule((0.0, trachea_y, top + 20), carina, r_tr, r_tr * 0.95),
        Capsule(carina, hilum_left + np.array([-8, 4, 4]), 7.0 * s, 6.0 * s),
        Capsule(carina, hilum_right + np.array([8, 4, 4]), 8.0 * s, 6.5 * s),
    ]
    r_es = _uniform(rng, 6, 9) * s
    esophagus = [
        Capsule((3.0, esophagus_y, top + 20), (4.0, esophagus_y, carina_z), r_es, r_es),
        Capsule((4.0, esophagus_y, carina_z), (14.0 * s, esophagus_y - 4, -10.0), r_es, r_es),
        Capsule((14.0 * s, esophagus_y - 4, -10.0), (30.0 * s, esophagus_y - 20 * s, -45.0), r_es, r_es),
    ]
    esophagus_air = None
    if rng.uniform() < 0.35:  # a little intraluminal air is common on CT
        z_a = _uniform(rng, carina_z - 60, top - 20)
        esophagus_air = Capsule((3.5, esophagus_y - 1, z_a), (3.8, esophagus_y - 1, z_a + _uniform(rng, 10, 60)),
                                _uniform(rng, 1.5, 4.0), _uniform(rng, 1.5, 4.0))
    # the lungs wrap around the mediastinum: a few mm of fat around its organs (more in fatter
    # patients), the subcarinal space (nodes and fat below the carina, over the left atrium), the
    # vertebral bodies, and a 1-3 mm junction line where the lungs meet in front and behind
    heart_back = np.array([heart_x * 0.4, heart_y + 0.45 * heart_r[1], heart_top - 12 * s])
    subcarinal = Capsule(heart_back, (0.0, trachea_y + 6, carina_z - 6), 13.0 * s, 10.0 * s)
    column = Capsule((0.0, vertebra_y, -80.0 * s), (0.0, vertebra_y, height + 30.0 * s), 19.0 * s, 12.5 * s)
    junction = _uniform(rng, 1.0, 3.0)
    mediastinal_fat = _uniform(rng, 1.5, 4.0) + 0.06 * fat

    model = ThoraxModel(
        size=s, lung_height=height, body_half_x=body_x, body_half_y=body_y, fat_mm=fat, wall_front_mm=wall_front,
        wall_back_mm=wall_back, cavity_half_x_left=cav_left, cavity_half_x_right=cav_right,
        cavity_half_y=cav_half_y, cavity_centre_y=cav_y, bend=bend, dome_left=dome_left, dome_right=dome_right,
        junction_mm=junction, mediastinal_fat_mm=mediastinal_fat, spine=spine, vertebra_y=vertebra_y, canal_y=canal_y,
        esophagus_y=esophagus_y, trachea_y=trachea_y, carina_z=carina_z, heart=heart,
        pericardial_fat_mm=float(np.exp(rng.uniform(np.log(1.0), np.log(12.0)))), aorta=aorta,
        arch_branches=arch_branches, pulmonary_arteries=pulmonary, venae_cavae=venae_cavae, trachea=trachea,
        esophagus_path=esophagus, esophagus_air=esophagus_air, subcarinal=subcarinal, vertebral_column=column,
        hilum_left=hilum_left, hilum_right=hilum_right,
        gtv=heart, gtv_side="L", gtv_node=None, ptv_margin_mm=8.0, ild_patches=[], ild_near_tumour=False,
        reticulation=Reticulation(rng), rib_period=_uniform(rng, 24, 29) * s, rib_drop=_uniform(rng, 80, 115) * s,
    )
    _sample_tumour(model, rng)
    _sample_ild(model, rng)
    _sample_trees(model, rng)
    _sample_lung_disease(model, rng)
    _sample_body(model, rng, top)
    _sample_scan(model, rng, top)
    _sample_abdomen(model, rng)  # drawn last: the thorax above is the one drawn without it
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
    """A tumour anywhere in either lung (every lobe; a third of them touch the pleura or mediastinum)."""
    side = "L" if rng.uniform() < 0.5 else "R"
    radius = float(np.exp(rng.uniform(np.log(10.0), np.log(30.0))))
    first = 0.6 if rng.uniform() < 0.67 else 0.0
    centre = None
    for shrink in (first, 0.3, 0.0, -0.3):
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
    region), often elsewhere (posterior-basal), and absent in about a third of the patients.
    This is the phantom's only fibrosis-like pattern (the outcome model's image factor)."""
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


def _sample_lung_disease(model: ThoraxModel, rng: np.random.Generator) -> None:
    """Inspiration level, dependent density, emphysema and bullae, pleural effusion with atelectasis."""
    model.lung_hu = _uniform(rng, -890, -780)
    model.lung_gradient = _uniform(rng, 0.1, 0.45)
    model.dependent_hu = 0.0 if rng.uniform() < 0.4 else _uniform(rng, 80, 450)
    model.emphysema = float(rng.choice([0.0, 0.15, 0.3, 0.5], p=[0.55, 0.2, 0.15, 0.1]))
    model.emphysema_field = SmoothField(rng, 6, (8.0, 22.0))
    bullae = []
    if model.emphysema > 0:
        for _ in range(int(rng.integers(0, 4))):
            centre = _random_point_in_lungs(model, rng, 5.0, None)
            if centre is not None and centre[2] > 0.4 * model.lung_height:
                bullae.append(Ellipsoid(centre, rng.uniform(8, 28, size=3), None, random_perturbation(rng, 0.1)))
    model.bullae = bullae
    if rng.uniform() < 0.15:
        model.effusion_sides = str(rng.choice(["L", "R", "LR"], p=[0.35, 0.4, 0.25]))
        model.effusion_depth = _uniform(rng, 12, 60) * model.size
        model.atelectasis_mm = _uniform(rng, 4, 18)


def _sample_body(model: ThoraxModel, rng: np.random.Generator, top: float) -> None:
    """Breasts, arms (up or down), scapulae, clavicles and the upper abdominal organs."""
    s, height = model.size, model.lung_height
    lean_x = model.body_half_x - model.fat_mm
    if rng.uniform() < 0.5:  # female
        r = _uniform(rng, 35, 70) * s * (1.0 + model.fat_mm / 60.0)
        for side in (1.0, -1.0):
            centre = (side * (0.45 * model.body_half_x + 0.15 * r), -model.body_half_y + 0.35 * r, 0.42 * height)
            model.breasts.append(Ellipsoid(centre, (r * _uniform(rng, 0.95, 1.15), r * _uniform(rng, 0.6, 0.8), r * 0.85),
                                           rotation_matrix(side * _uniform(rng, 10, 25), 0, 0),
                                           random_perturbation(rng, 0.06)))
        model.breast_texture = SmoothField(rng, 5, (10.0, 30.0))
    model.arms = "up" if rng.uniform() < 0.45 else "down"
    arm_r = _uniform(rng, 30, 42) * s + 0.7 * model.fat_mm
    for side in (1.0, -1.0):
        if model.arms == "down":
            gap = _uniform(rng, -8, 25)
            x_top = side * (model.body_half_x + arm_r * 0.55)
            x_bottom = side * (model.body_half_x + arm_r + gap)
            y_arm = _uniform(rng, -15, 10) * s
            arm = Capsule((x_top, y_arm, top + 40), (x_bottom, y_arm + 5, -300.0), arm_r, arm_r * 0.9)
            humerus = Capsule((x_top + side * 4, y_arm, top + 30), (x_bottom, y_arm + 5, -300.0),
                              11.0 * s, 10.0 * s)
        else:
            x_shoulder = side * (lean_x * 0.85)
            arm = Capsule((x_shoulder, -5.0 * s, height + 5), (side * lean_x * 0.5, 10.0 * s, height + 330),
                          arm_r * 1.1, arm_r)
            humerus = Capsule((x_shoulder, -5.0 * s, height + 15), (side * lean_x * 0.5, 10.0 * s, height + 330),
                              11.0 * s, 10.0 * s)
        model.arm_capsules.append(arm)
        model.humeri.append(humerus)
        scap_x = side * 0.58 * (model.cavity_half_x_left if side > 0 else model.cavity_half_x_right)
        scap_y = model.cavity_centre_y + 0.8 * model.cavity_half_y + 14.0 * s
        lift = 25.0 * s if model.arms == "up" else 0.0
        # a thin blade behind the posterior ribs, its lateral border further forward
        model.scapulae.append(Ellipsoid((scap_x + side * (lift * 0.6 + 12 * s), scap_y - 8 * s, 0.7 * height + lift),
                                        (42.0 * s, 2.5, 70.0 * s), rotation_matrix(-side * _uniform(rng, 20, 35), 0, 0)))
        front = model.cavity_centre_y - model.cavity_half_y
        model.clavicles.append(Capsule((side * 18 * s, front - 6, height + 8 * s),
                                       (side * (lean_x - 20 * s), front + 40 * s, height + 30 * s + lift * 0.5),
                                       6.5 * s, 5.5 * s))
    _sample_chest_muscles(model, rng)
    model.liver_extent_x = _uniform(rng, 10, 45) * s
    stomach_centre = (0.42 * model.cavity_half_x_left, model.cavity_centre_y - 0.15 * model.cavity_half_y,
                      model.dome_left - 45 * s)
    radii = np.array([_uniform(rng, 35, 55), _uniform(rng, 30, 45), _uniform(rng, 35, 55)]) * s
    model.stomach = Ellipsoid(stomach_centre, radii, rotation_matrix(_uniform(rng, 10, 40), 0, 0),
                              random_perturbation(rng, 0.1))
    model.stomach_air_y = stomach_centre[1] - radii[1] * _uniform(rng, -0.2, 0.8)
    model.spleen = Ellipsoid((0.72 * model.cavity_half_x_left, model.cavity_centre_y + 0.5 * model.cavity_half_y,
                              model.dome_left - 55 * s),
                             np.array([_uniform(rng, 22, 30), _uniform(rng, 40, 55), _uniform(rng, 45, 65)]) * s,
                             rotation_matrix(_uniform(rng, 25, 45), 0, 0), random_perturbation(rng, 0.08))


def _sample_chest_muscles(model: ThoraxModel, rng: np.random.Generator) -> None:
    """Pectoralis major and minor, serratus anterior, latissimus dorsi, trapezius and the erector
    spinae, with thin intermuscular fat planes (thicker in fatter patients)."""
    s, height = model.size, model.lung_height
    top = height + 200.0
    muscle = _uniform(rng, 40, 55)  # lean muscle; older patients' erector spinae are fattier
    pec = _uniform(rng, 7, 15) * s
    lat = _uniform(rng, 5, 12) * s
    model.chest_muscles = [
        ChestMuscle(_uniform(rng, 6, 12), _uniform(rng, 68, 80), 0.0, pec, _uniform(rng, 0.35, 0.5) * height, top, muscle),
        ChestMuscle(30.0, 62.0, pec + 2.0, pec + 2.0 + _uniform(rng, 4, 8) * s, _uniform(rng, 0.6, 0.7) * height, top,
                    muscle),
        ChestMuscle(60.0, _uniform(rng, 112, 122), 0.0, _uniform(rng, 5, 9) * s, -200.0, 0.85 * height, muscle),
        ChestMuscle(_uniform(rng, 105, 115), _uniform(rng, 150, 160), 0.0, lat, -200.0, 0.75 * height, muscle),
        ChestMuscle(_uniform(rng, 140, 150), 180.0, 0.0, _uniform(rng, 3, 7) * s, _uniform(rng, 0.5, 0.65) * height, top,
                    muscle),
    ]
    model.erector_width_mm = _uniform(rng, 28, 40) * s
    model.erector_hu = muscle - _uniform(rng, 0, 35)
    model.muscle_plane_mm = _uniform(rng, 0.8, 1.6) + 0.03 * model.fat_mm


def _scan_range(top: float, bottom: float, slice_mm: float) -> tuple[float, float]:
    """z of the first and last slice: whole slices centred on ``bottom``..``top``."""
    n_slices = round((top - bottom) / slice_mm) + 1
    z0 = (top + bottom) / 2 - (n_slices - 1) * slice_mm / 2
    return z0, z0 + (n_slices - 1) * slice_mm


def _sample_scan(model: ThoraxModel, rng: np.random.Generator, top: float) -> None:
    """The patient's scanner (:mod:`rtdeep.phantom.scanner`) and the scanned range (its lower end may
    move on into the abdomen, :func:`_sample_abdomen`)."""
    bottom = -_uniform(rng, 45, 70)
    model.scanner = sample_scanner(rng, 2 * model.imaged_half_width())
    slice_mm = model.scanner.slice_mm
    model.z_range = _scan_range(top, bottom, slice_mm)
    model.slice_mm = slice_mm
    model.pixel_mm = model.scanner.pixel_mm
    model.fov_mm = model.scanner.fov_mm
    model.fov_centre = (_uniform(rng, -8, 8), 18.0 + _uniform(rng, -10, 10))
    # the back flattens against the couch (soft tissue, more with more fat); a curved diagnostic
    # couch top is a shallow trough (sides about 30 mm higher 20 cm off the midline)
    model.back_flat_mm = abs(model.bend.amplitude_y) + _uniform(rng, 2.0, 7.0) + 0.08 * model.fat_mm
    model.couch_curve = _uniform(rng, 0.0006, 0.0009) if model.scanner.couch == "curved" else 0.0


def _sample_abdomen(model: ThoraxModel, rng: np.random.Generator) -> None:
    """How far the scan reaches below the lung bases, and the upper abdomen there.

    Lung planning CTs end anywhere from just below the costophrenic recesses to the second lumbar
    vertebra (whole liver and kidneys: 4D CT, motion management, liver dose): here 45-70 mm below the
    domes in 40 % of patients, 90-170 mm in the others. Below the domes: the liver's inferior edge
    (lowest laterally on the right, 110-165 mm below the domes, rising towards the left lobe), a
    gallbladder (80 %), both kidneys (upper poles at about T12, the right lower), the hepatic and
    splenic flexures and the transverse colon (gas in front, stool with bubbles behind), visceral fat
    between bowel loops (more in fatter patients), the psoas muscles, the abdominal aorta and the
    inferior vena cava.
    The lowest ribs end along a costal margin that falls from the front (35-55 mm below the domes)
    to the back (100-130 mm)."""
    s = model.size
    if rng.uniform() < 0.6:
        top = model.z_range[1]
        model.z_range = _scan_range(top, -_uniform(rng, 90, 170), model.slice_mm)
    cy, hy = model.cavity_centre_y, model.cavity_half_y
    dome = 0.5 * (model.dome_left + model.dome_right)
    model.costal_margin_mm = (dome - _uniform(rng, 35, 55) * s, dome - _uniform(rng, 100, 130) * s)
    model.liver_low_mm = model.dome_right - _uniform(rng, 110, 165) * s
    model.liver_rise_mm = _uniform(rng, 50, 90) * s
    if rng.uniform() < 0.8:
        edge = model.liver_low_mm + 0.35 * model.liver_rise_mm
        model.gallbladder = Ellipsoid((-_uniform(rng, 25, 45) * s, cy - _uniform(rng, 0.35, 0.6) * hy,
                                       edge + _uniform(rng, 10, 25) * s),
                                      np.array([_uniform(rng, 12, 18), _uniform(rng, 12, 18), _uniform(rng, 25, 40)]) * s,
                                      rotation_matrix(0, _uniform(rng, -25, 25), _uniform(rng, 10, 40)),
                                      random_perturbation(rng, 0.06))
    kidney_y = cy + _uniform(rng, 0.35, 0.5) * hy  # beside the vertebral bodies, on the posterior wall
    for side in (1.0, -1.0):
        radii = np.array([_uniform(rng, 24, 30), _uniform(rng, 20, 26), _uniform(rng, 48, 60)]) * s
        upper_pole = (model.dome_left - _uniform(rng, 70, 95) * s if side > 0
                      else model.dome_right - _uniform(rng, 95, 125) * s)
        half_x = model.cavity_half_x_left if side > 0 else model.cavity_half_x_right
        centre = (side * _uniform(rng, 0.42, 0.55) * half_x, kidney_y, upper_pole - radii[2])
        # long axes converge upwards (upper poles medial) and the hila face forwards and inwards
        model.kidneys.append(Ellipsoid(centre, radii, rotation_matrix(side * _uniform(rng, 20, 40), side * _uniform(rng, 8, 18), 0),
                                       random_perturbation(rng, 0.05)))
    # psoas muscles: from the twelfth thoracic vertebra down beside the vertebral bodies, growing
    psoas_top = min(model.costal_margin_mm) - _uniform(rng, 0, 20) * s
    for side in (1.0, -1.0):
        model.psoas.append(Capsule((side * 22 * s, model.vertebra_y - 4 * s, psoas_top),
                                   (side * 42 * s, model.vertebra_y - 14 * s, psoas_top - 220 * s), 6 * s, 24 * s))
    scanner = model.scanner
    enhancement = max(scanner.spleen_hu - 45.0, 0.0) if scanner is not None else 0.0
    model.kidney_hu = _uniform(rng, 28, 40) + 1.3 * enhancement
    r_colon = _uniform(rng, 18, 28) * s
    hepatic = np.array([-0.6 * model.cavity_half_x_right, cy - _uniform(rng, 0.1, 0.4) * hy,
                        model.liver_low_mm + 0.2 * model.liver_rise_mm - r_colon + _uniform(rng, -5, 15)])
    splenic = np.array([0.72 * model.cavity_half_x_left, cy + _uniform(rng, -0.1, 0.2) * hy,
                        model.dome_left - _uniform(rng, 85, 120) * s])
    transverse = np.array([_uniform(rng, -15, 15), cy - _uniform(rng, 0.55, 0.7) * hy,
                           min(hepatic[2], splenic[2]) - _uniform(rng, 10, 60) * s])
    descending = splenic + np.array([0.0, 0.25 * hy, -200.0])
    ascending = hepatic + np.array([0.0, 0.2 * hy, -200.0])
    model.colon = [Capsule(ascending, hepatic, r_colon, r_colon), Capsule(hepatic, transverse, r_colon, r_colon * 0.9),
                   Capsule(transverse, splenic, r_colon * 0.9, r_colon * 0.85),
                   Capsule(splenic, descending, r_colon * 0.85, r_colon * 0.8)]
    model.colon_air_share = _uniform(rng, 0.1, 0.9)
    model.stool_texture = SmoothField(rng, 6, (6.0, 14.0))
    model.visceral_fat = float(np.clip(0.15 + model.fat_mm / 80.0 + _uniform(rng, -0.1, 0.1), 0.1, 0.75))
    model.visceral_texture = SmoothField(rng, 6, (18.0, 40.0))


# --- rendering --------------------------------------------------------------------------------------

def _paint_couch(canvas: Canvas, model: ThoraxModel) -> None:
    """Curved diagnostic couch, flat carbon-fibre RT couch top, or flat top with a vacuum bag; the
    back lies on the couch top (or on the bag), see :meth:`ThoraxModel.couch_top_y`."""
    grid = canvas.grid
    kind = model.scanner.couch if model.scanner is not None else "curved"
    bag_mm = 14.0 if kind == "flat_vacbag" else 0.0
    centre = model.body_half_y - model.back_flat_mm
    half = model.imaged_half_width() + 10
    lo = np.array([-half - 10, centre - 80, model.z_range[0] - 10])
    hi = np.array([half + 10, centre + bag_mm + 50, model.z_range[1] + 10])
    block = grid.block(lo, hi)
    if block is None:
        return
    surface = model.couch_top_y(block.x)
    if kind == "curved":
        shell = np.maximum(surface - block.y, block.y - surface - 18)
        canvas.paint(block, np.maximum(shell, np.abs(block.x) - half - 5), HU["couch_shell"])
        canvas.paint(block, np.maximum(shell + 2.0, np.abs(block.x) - half - 3), HU["couch_foam"])
        return
    flat_top = surface + np.float32(bag_mm)
    shell = np.maximum(flat_top - block.y, block.y - flat_top - 40)
    width = np.abs(block.x) - np.float32(265.0)
    canvas.paint(block, np.maximum(shell, width), 250.0)          # carbon-fibre skins
    canvas.paint(block, np.maximum(shell + 1.5, width + 2.0), -900.0)  # foam core
    if kind == "flat_vacbag":
        # vacuum cushion (polystyrene beads, about -800 HU) moulded around the back
        bx, by = model.bend.body_frame(block.x, block.y, block.z)
        trunk = superellipse_sd(bx, by, np.float32(model.body_half_x + 14), np.float32(model.body_half_y + 14), 2.5)
        bag = np.maximum(np.maximum(trunk, block.y - flat_top), np.float32(model.body_half_y * 0.2) - by)
        canvas.paint(block, bag, -790.0)


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
    front, back = model.costal_margin_mm
    costal = np.float32(front) + np.float32(back - front) * (np.float32(1.0) + sin_phi) * np.float32(0.5)
    rib_sd = np.where((z > model.lung_height + 20) | (np.abs(bx) < 18 * model.size) | (z < costal), np.float32(50), rib_sd)
    cartilage = sin_phi < -0.82
    value = np.where(cartilage, np.float32(HU["cartilage"]),
                     np.where(rib_sd > -1.6, np.float32(model.spine.cortical_hu),
                              np.float32(model.spine.cancellous_hu + 40)))
    occ = np.clip(0.5 - rib_sd / canvas.edge_mm, 0, 1).astype(np.float32)
    index = (kk + block.index[0].start, jj + block.index[1].start, ii + block.index[2].start)
    current = canvas.hu[index]
    canvas.hu[index] = current + occ * (value - current)


def _carve_lungs(canvas: Canvas, block, sd: np.ndarray) -> None:
    """Remove ``sd < 0`` from both lung masks (mediastinal organs and their fat)."""
    inside = np.broadcast_to(sd < 0, block.shape)
    for name in ("Lung_L", "Lung_R"):
        if name in canvas.masks:
            canvas.masks[name][block.index] &= ~inside


def _tubes_sd(model: ThoraxModel, capsules: list[Capsule], block) -> np.ndarray:
    bx, by = model.bend.body_frame(block.x, block.y, block.z)
    sd = None
    for capsule in capsules:
        part = capsule.sd(bx, by, block.z)
        sd = part if sd is None else np.minimum(sd, part)
    assert sd is not None
    return sd


def _tubes_block(canvas: Canvas, capsules: list[Capsule], pad: float):
    lo = np.min([c.bbox(pad)[0] for c in capsules], axis=0)
    hi = np.max([c.bbox(pad)[1] for c in capsules], axis=0)
    return canvas.block((lo, hi))


def _paint_tubes(canvas: Canvas, model: ThoraxModel, capsules: list[Capsule], value: float, fat_margin: float,
                 mask_name: str | None = None, lumen: float | None = None, not_heart: bool = False) -> None:
    """Mediastinal tubes with a fat sleeve; ``not_heart``: a great vessel, which abuts the heart with
    no fat plane and is cut out of the Heart contour above the valve plane."""
    block = _tubes_block(canvas, capsules, fat_margin + 2)
    if block is None:
        return
    sd = _tubes_sd(model, capsules, block)
    _carve_lungs(canvas, block, sd - fat_margin)
    fat_sd = sd - fat_margin
    heart_sd = None
    if not_heart:
        bx, by = model.bend.body_frame(block.x, block.y, block.z)
        heart_sd = model.heart.sd(bx, by, block.z)
        fat_sd = np.maximum(fat_sd, -heart_sd)  # no fat between a vessel and the heart it leaves
    canvas.paint(block, fat_sd, HU["mediastinal_fat"])
    canvas.paint(block, sd, value, mask_name=mask_name)
    if lumen is not None:
        canvas.paint(block, sd + lumen, HU["air"])
    if heart_sd is not None and "Heart" in canvas.masks:
        valve_z = model.heart.centre[2] + 0.55 * model.heart.radii[2] - 14.0 * model.size
        vessel = np.broadcast_to((sd < 0) & (block.z > np.float32(valve_z)), block.shape)
        canvas.masks["Heart"][block.index] &= ~vessel


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


def _paint_body(canvas: Canvas, model: ThoraxModel) -> None:
    """Trunk, breasts and arms (all part of the External), scapulae and clavicles."""
    lo, hi = model.bbox()
    body_block = canvas.block((lo, hi))
    assert body_block is not None
    body = model.body_sd(body_block.x, body_block.y, body_block.z)
    canvas.paint(body_block, body, HU["fat"], mask_name="External")
    canvas.paint(body_block, body + np.float32(model.fat_mm), HU["muscle"])
    del body
    _paint_chest_muscles(canvas, model)
    for breast in model.breasts:
        block = canvas.block(breast.bbox(4))
        if block is None:
            continue
        bx, by = model.bend.body_frame(block.x, block.y, block.z)
        sd = breast.sd(bx, by, block.z)
        gland = model.breast_texture(bx, by, block.z) if model.breast_texture is not None else np.float32(0)
        value = np.where(gland > 0.6, np.float32(25.0), np.float32(HU["fat"]))
        outside_trunk = np.broadcast_to(model.body_sd(block.x, block.y, block.z) > -model.fat_mm * 0.5, block.shape)
        canvas.paint(block, sd, value, mask_name="External", within=outside_trunk)
    for arm, humerus in zip(model.arm_capsules, model.humeri):
        block = canvas.block(arm.bbox(3))
        if block is None:
            continue
        bx, by = model.bend.body_frame(block.x, block.y, block.z)
        sd = model.on_couch(arm.sd(bx, by, block.z), block.x, block.y)
        canvas.paint(block, sd, HU["fat"], mask_name="External")
        canvas.paint(block, sd + np.float32(0.6 * model.fat_mm + 3), HU["muscle"])
        bone = humerus.sd(bx, by, block.z)
        canvas.paint(block, bone, np.where(bone > -2.5, np.float32(model.spine.cortical_hu + 250), np.float32(-20.0)))
    for scapula in model.scapulae:
        canvas.paint_shape(lambda x, y, z, e=scapula: e.sd(*model.bend.body_frame(x, y, z), z), scapula.bbox(3),
                           model.spine.cortical_hu - 150)
    for clavicle in model.clavicles:
        canvas.paint_shape(lambda x, y, z, c=clavicle: c.sd(*model.bend.body_frame(x, y, z), z), clavicle.bbox(3),
                           model.spine.cortical_hu)
    if model.arms == "down" and len(model.humeri) == 2:
        # beam hardening: a dark band between the humeri
        a, b = model.humeri
        canvas.streaks.append(StreakSource((float(a.a[0]), float(a.a[1])), model.z_range[0], model.lung_height + 30,
                                           end=(float(b.a[0]), float(b.a[1])), weight=0.6))


def _paint_chest_muscles(canvas: Canvas, model: ThoraxModel) -> None:
    """Named chest-wall muscles inside the (deep, intercostal) muscle layer, each in a sleeve of
    intermuscular fat; ribs and the cavity are painted over them afterwards."""
    plane = np.float32(model.muscle_plane_mm)
    cy = model.cavity_centre_y
    deepest = max(m.depth_to for m in model.chest_muscles) + model.fat_mm + 10.0
    for m in model.chest_muscles:
        a0, a1 = np.radians(m.angle_from), np.radians(m.angle_to)
        angles = np.linspace(a0, a1, 9)
        rim = np.stack([model.body_half_x * np.sin(angles), cy - model.body_half_y * np.cos(angles)], axis=1)
        inner = np.stack([(model.body_half_x - deepest) * np.sin(angles),
                          cy - (model.body_half_y - deepest) * np.cos(angles)], axis=1)
        points = np.concatenate([rim, inner])
        lo_xy, hi_xy = points.min(axis=0) - 10.0, points.max(axis=0) + 10.0
        for side in (1.0, -1.0):
            x_lo, x_hi = (lo_xy[0], hi_xy[0]) if side > 0 else (-hi_xy[0], -lo_xy[0])
            block = canvas.block((np.array([x_lo, lo_xy[1], m.z_from - 4]), np.array([x_hi, hi_xy[1], m.z_to + 4])))
            if block is None:
                continue
            bx, by = model.bend.body_frame(block.x, block.y, block.z)
            ax, ay = bx * np.float32(side), by - np.float32(cy)
            depth = -(model.body_sd(block.x, block.y, block.z) + np.float32(model.fat_mm))
            sd = np.maximum(np.float32(m.depth_from) - depth, depth - np.float32(m.depth_to))
            sd = np.maximum(sd, -(np.float32(np.cos(a0)) * ax + np.float32(np.sin(a0)) * ay))
            if m.angle_to < 180.0:
                sd = np.maximum(sd, np.float32(np.cos(a1)) * ax + np.float32(np.sin(a1)) * ay)
            sd = np.maximum(sd, np.maximum(np.float32(m.z_from) - block.z, block.z - np.float32(m.z_to)))
            canvas.paint(block, sd - plane, HU["fat"])
            canvas.paint(block, sd, m.hu)
    # erector spinae: beside the spinous processes, from the transverse processes to under the
    # trapezius / thoracolumbar fascia
    spine = model.spine
    half_w = np.float32(0.5 * model.erector_width_mm)
    centre_x = np.float32(6.0) + half_w
    front_y = np.float32(spine.canal_y - 6.0)
    block = canvas.block((np.array([-2 * half_w - 20, front_y - 10, model.z_range[0] - 4]),
                          np.array([2 * half_w + 20, model.body_half_y + 5, model.z_range[1] + 4])))
    if block is None:
        return
    bx, by = model.bend.body_frame(block.x, block.y, block.z)
    depth = -(model.body_sd(block.x, block.y, block.z) + np.float32(model.fat_mm))
    half_h = np.float32(0.5 * (model.body_half_y - model.fat_mm - front_y) + 4.0)
    rounded = superellipse_sd(np.abs(bx) - centre_x, by - (front_y + half_h), half_w, half_h, 2.0)
    sd = np.maximum(rounded, np.float32(3.0) - depth)
    canvas.paint(block, sd - plane, HU["fat"])
    canvas.paint(block, sd, model.erector_hu)


def _paint_abdomen(canvas: Canvas, model: ThoraxModel, block, cavity: np.ndarray) -> None:
    """Below the diaphragm: liver (right, its left lobe anterior, down to its inferior edge), visceral
    fat and bowel, colon, gallbladder, stomach with air, spleen, kidneys (:func:`_sample_abdomen`)."""
    scanner = model.scanner
    liver_hu = scanner.liver_hu if scanner is not None else HU["liver"]
    below = model.diaphragm_z(block.x, block.y) - block.z
    bx, by = model.bend.body_frame(block.x, block.y, block.z)
    liver_side = bx < np.float32(model.liver_extent_x) - np.float32(0.5) * (by - np.float32(model.cavity_centre_y))
    across = np.clip((bx + np.float32(model.cavity_half_x_right))
                     / np.float32(model.cavity_half_x_right + model.liver_extent_x), 0.0, 1.0)
    liver = liver_side & (block.z > np.float32(model.liver_low_mm) + np.float32(model.liver_rise_mm) * across)
    bowel = np.float32(HU["soft"] - 5)
    if model.visceral_texture is not None and model.visceral_fat > 0:
        fatty = model.visceral_texture(bx, by, block.z) > np.float32(1.0 - 2.0 * model.visceral_fat)
        bowel = np.where(fatty, np.float32(HU["fat"] + 10), bowel)
    canvas.paint(block, np.maximum(cavity, -below), np.where(liver, np.float32(liver_hu), bowel))
    del liver, liver_side, across, bowel

    def under_diaphragm(sd, x, y, z, clearance: float = 3.0):
        """``sd`` kept below the diaphragm and inside the cavity (never through the ribs or lungs)."""
        sd = np.maximum(sd, z - (model.diaphragm_z(x, y) - np.float32(clearance)))
        return np.maximum(sd, model.cavity_sd(x, y, z) + np.float32(1.5))

    if model.colon:
        cb = _tubes_block(canvas, model.colon, 4)
        if cb is not None:
            cx, cyy = model.bend.body_frame(cb.x, cb.y, cb.z)
            sd = under_diaphragm(_tubes_sd(model, model.colon, cb), cb.x, cb.y, cb.z, 5.0)
            canvas.paint(cb, sd, HU["soft"])
            lumen = sd + np.float32(2.5)
            stool = np.float32(15.0)
            if model.stool_texture is not None:
                stool = np.where(model.stool_texture(cx, cyy, cb.z) > np.float32(1.1), np.float32(HU["air"]), stool)
            canvas.paint(cb, lumen, stool)
            # gas rises to the front of the lumen (supine): in front of a level through each segment
            radius = float(np.mean([c.radius_a for c in model.colon]))
            axis_y = np.float32(np.mean([0.5 * (c.a[1] + c.b[1]) for c in model.colon]))
            level = axis_y + np.float32(radius * (2.0 * model.colon_air_share - 1.0))
            canvas.paint(cb, np.maximum(lumen, cyy - level), HU["air"])
    if model.gallbladder is not None:
        gallbladder = model.gallbladder
        canvas.paint_shape(lambda x, y, z: under_diaphragm(gallbladder.sd(*model.bend.body_frame(x, y, z), z), x, y, z),
                           gallbladder.bbox(3), 12.0)
    if model.stomach is not None:
        stomach = model.stomach
        sb = canvas.block(stomach.bbox(4))
        if sb is not None:
            sx, sy = model.bend.body_frame(sb.x, sb.y, sb.z)
            sd = np.maximum(stomach.sd(sx, sy, sb.z), sb.z - (model.diaphragm_z(sb.x, sb.y) - 3.0))
            canvas.paint(sb, sd - 3.0, HU["fat"])
            canvas.paint(sb, sd, HU["muscle"])
            canvas.paint(sb, sd + 4.0, 20.0)
            canvas.paint(sb, np.maximum(sd + 4.0, sy - np.float32(model.stomach_air_y)), HU["air"])
    if model.spleen is not None:
        spleen = model.spleen
        value = scanner.spleen_hu if scanner is not None else 45.0
        canvas.paint_shape(lambda x, y, z: under_diaphragm(spleen.sd(*model.bend.body_frame(x, y, z), z), x, y, z),
                           spleen.bbox(3), value)
    if model.psoas:
        pb = _tubes_block(canvas, model.psoas, 3)
        if pb is not None:
            canvas.paint(pb, under_diaphragm(_tubes_sd(model, model.psoas, pb), pb.x, pb.y, pb.z), HU["muscle"])
    perirenal = 3.0 + 0.2 * model.fat_mm
    for kidney in model.kidneys:
        kb = canvas.block(kidney.bbox(perirenal + 3))
        if kb is None:
            continue
        sd = under_diaphragm(kidney.sd(*model.bend.body_frame(kb.x, kb.y, kb.z), kb.z), kb.x, kb.y, kb.z, 4.0)
        canvas.paint(kb, sd - np.float32(perirenal), HU["fat"])
        canvas.paint(kb, sd, model.kidney_hu)


def _paint_heart(canvas: Canvas, model: ThoraxModel) -> None:
    """Pericardial fat, myocardium, left and right blood pools (contrast phase of the scanner)."""
    scanner = model.scanner
    left = scanner.blood_left_hu if scanner is not None else HU["blood"]
    right = scanner.blood_right_hu if scanner is not None else HU["blood"]
    myocardium = scanner.myocardium_hu if scanner is not None else HU["muscle"]
    fat = model.pericardial_fat_mm
    block = canvas.block(model.heart.bbox(fat + 8))
    if block is None:
        return
    bx, by = model.bend.body_frame(block.x, block.y, block.z)
    # the pericardium lies against the back of the sternum and chest wall: the heart stays 3 mm and
    # its fat 1 mm inside the cavity (the ribs and the intercostal layer)
    cavity = model.cavity_sd(block.x, block.y, block.z)
    heart = np.maximum(model.heart.sd(bx, by, block.z), cavity + np.float32(3.0))
    # the left atrium lies in front of the esophagus and the descending aorta, a thin fat plane
    # between them: they indent the heart, never run through it
    behind = _tubes_sd(model, model.esophagus_path + model.aorta[2:], block)
    heart = np.maximum(np.maximum(heart, np.float32(2.0) - behind), by - np.float32(model.esophagus_y - 11.0))
    del behind
    above = block.z - (model.diaphragm_z(block.x, block.y) - 6.0)
    # epicardial / pericardial fat, thicker anteriorly and at the apex
    front = np.clip((np.float32(model.heart.centre[1]) - by) / np.float32(model.heart.radii[1]), 0, 1)
    fat_sd = np.maximum(heart - np.float32(fat) * (np.float32(0.5) + front), cavity + np.float32(1.0))
    del cavity
    _carve_lungs(canvas, block, fat_sd)
    canvas.paint(block, fat_sd, HU["mediastinal_fat"])
    within = np.broadcast_to(above > 0, block.shape)
    canvas.paint(block, heart, myocardium, mask_name="Heart", within=within)
    # blood pools: left heart (posterior-left) and right heart (anterior-right), split by the septum
    c = model.heart.centre
    normal = np.array([0.75, 0.66, 0.0])
    septum = (bx - np.float32(c[0])) * np.float32(normal[0]) + (by - np.float32(c[1])) * np.float32(normal[1])
    wall = np.where(septum > 0, np.float32(9.0), np.float32(4.5)) * np.float32(model.size)
    pool = np.maximum(heart + wall, np.float32(4.0) - np.abs(septum))
    canvas.paint(block, pool, np.where(septum > 0, np.float32(left), np.float32(right)), within=within)


def _paint_lungs(canvas: Canvas, model: ThoraxModel, block, cavity: np.ndarray) -> None:
    """Lung parenchyma (inspiration level, dependent density, emphysema, bullae), effusion, atelectasis."""
    left, right = model.lung_sds(block.x, block.y, block.z, cavity)
    by = block.y - np.float32(model.cavity_centre_y)
    value = np.float32(model.lung_hu) + np.float32(model.lung_gradient) * by
    if model.dependent_hu > 0:
        lung = np.minimum(left, right)
        posterior = np.clip(by / np.float32(model.cavity_half_y), 0, 1)
        value = value + np.float32(model.dependent_hu) * np.exp(np.minimum(lung, 0.0) / np.float32(6.0)) * posterior
    if model.emphysema > 0 and model.emphysema_field is not None:
        bx, bdy = model.bend.body_frame(block.x, block.y, block.z)
        holes = model.emphysema_field(bx, bdy, block.z)
        threshold = np.float32(1.2 - 2.0 * model.emphysema) + np.float32(0.8) * (
            1.0 - np.clip(block.z / np.float32(model.lung_height), 0, 1))  # upper-lobe predominant
        value = np.where(holes > threshold, np.float32(-975.0), value)
    canvas.paint(block, left, value, mask_name="Lung_L")
    canvas.paint(block, right, value, mask_name="Lung_R")
    for bulla in model.bullae:
        canvas.paint_shape(lambda x, y, z, b=bulla: b.sd(*model.bend.body_frame(x, y, z), z), bulla.bbox(3),
                           HU["air"])
    if model.effusion_sides:
        # pleural fluid lies posteriorly (supine) under a horizontal level, deepest at the base;
        # the lung above it is compressed (atelectasis, which stays lung)
        back = np.float32(model.cavity_centre_y + model.cavity_half_y)
        base = np.float32(min(model.dome_left, model.dome_right) - 40.0)
        depth = np.float32(model.effusion_depth) * np.clip(
            1.0 - (block.z - base) / np.float32(0.7 * model.lung_height), 0.0, 1.0)
        level = back - depth
        _, y_body = model.bend.body_frame(block.x, block.y, block.z)
        fluid = np.float32(level) - y_body
        atelectasis = fluid - np.float32(model.atelectasis_mm)
        for side, sd in (("L", left), ("R", right)):
            if side not in model.effusion_sides:
                continue
            name = f"Lung_{side}"
            lung_here = np.broadcast_to(sd < 0, block.shape)
            canvas.paint(block, np.maximum(sd, atelectasis), 40.0, within=lung_here)
            region = np.broadcast_to((fluid < 0) & (sd < 0), block.shape)
            canvas.paint(block, np.maximum(sd, fluid), 12.0)
            canvas.masks[name][block.index] &= ~region


def render_thorax(model: ThoraxModel, grid: GridSpec, *, edge_mm: float, fine_texture: bool = True) -> Canvas:
    """Evaluate the thorax model on ``grid``: HU (no scanner noise yet) and ROI masks (+ ``ILD``).

    Args:
        model: the patient.
        grid: where to sample.
        edge_mm: partial-volume edge width (about the voxel size).
        fine_texture: draw reticulation lines (False on grids too coarse to resolve them).
    """
    scanner = model.scanner
    canvas = Canvas(grid, edge_mm)
    _paint_couch(canvas, model)
    _paint_body(canvas, model)

    cav_lo = np.array([-model.cavity_half_x_right - 30, model.cavity_centre_y - model.cavity_half_y - 30, model.z_range[0] - 5])
    cav_hi = np.array([model.cavity_half_x_left + 30, model.cavity_centre_y + model.cavity_half_y + 30, model.lung_height + 30])
    block = canvas.block((cav_lo, cav_hi))
    assert block is not None
    cavity = model.cavity_sd(block.x, block.y, block.z)
    _paint_ribs(canvas, model, block, cavity)
    canvas.paint(block, cavity, HU["mediastinal_fat"])
    _paint_abdomen(canvas, model, block, cavity)
    _paint_lungs(canvas, model, block, cavity)
    del cavity

    spine = model.spine.paint(canvas, model.bend, model.z_range)
    if spine is not None:
        _carve_lungs(canvas, spine[0], spine[1] - 1.0)  # the lungs already end in paravertebral fat
    _paint_heart(canvas, model)
    left = scanner.blood_left_hu if scanner is not None else HU["blood"]
    right = scanner.blood_right_hu if scanner is not None else HU["blood"]
    svc = scanner.svc_hu if scanner is not None else HU["blood"]
    _paint_tubes(canvas, model, model.aorta, left, float(np.clip(model.fat_mm / 10, 0.5, 3.0)), not_heart=True)
    _paint_tubes(canvas, model, model.arch_branches, left, 1.5)
    _paint_tubes(canvas, model, model.pulmonary_arteries, right, 1.0, not_heart=True)
    _paint_tubes(canvas, model, model.venae_cavae[:2], svc, 1.0, not_heart=True)
    _paint_tubes(canvas, model, model.venae_cavae[2:], right, 0.5, not_heart=True)
    if svc > 300:
        ra = model.venae_cavae[1].b
        canvas.streaks.append(StreakSource((float(model.venae_cavae[0].a[0]), float(model.venae_cavae[0].a[1])),
                                           float(ra[2]) + 10, model.z_range[1] + 5, weight=min(svc / 1000.0, 1.2)))
    _paint_tubes(canvas, model, model.esophagus_path, HU["muscle"] - 5, float(np.clip(model.fat_mm / 12, 0.5, 3.0)),
                 mask_name="Esophagus")
    if model.esophagus_air is not None:
        air = model.esophagus_air
        canvas.paint_shape(lambda x, y, z: air.sd(*model.bend.body_frame(x, y, z), z), air.bbox(2), HU["air"])
    _paint_tubes(canvas, model, model.trachea, HU["cartilage"] - 40, 2.0, lumen=2.0 * model.size)
    sternum = Ellipsoid((0.0, model.cavity_centre_y - model.cavity_half_y - 9, model.lung_height * 0.62),
                        (15.0 * model.size, 7.0, model.lung_height * 0.36))
    canvas.paint_shape(lambda x, y, z: sternum.sd(*model.bend.body_frame(x, y, z), z), sternum.bbox(3),
                       model.spine.cancellous_hu + 60)
    _paint_tree(canvas, model, model.vessels, right)
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
