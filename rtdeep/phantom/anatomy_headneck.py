"""Head-and-neck phantom: head, face and neck (with shoulders), skull and brain, brainstem,
cervical spine and cord, mandible, parotid and submandibular glands, eyes, the pharyngeal airway
and oral cavity, muscles, and an oropharyngeal tumour with optional neck node (GTV/PTV); the couch,
headrest and thermoplastic mask the patient is scanned with (:class:`Immobilisation`).

Coordinates are LPS mm, head-first supine: x to the patient's left, y posterior, z superior.
z = 0 is about the lower border of the mandible.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from rtdeep.phantom.anatomy_common import HU, Bend, Spine, superellipse_sd
from rtdeep.phantom.grid import GridSpec
from rtdeep.phantom.render import Canvas
from rtdeep.phantom.scanner import ScannerSettings, StreakSource, sample_scanner
from rtdeep.phantom.shapes import Capsule, Ellipsoid, random_perturbation, rotation_matrix
from rtdeep.phantom.texture import SmoothField
from rtdeep.sites import SITES, Organ

__all__ = ["HEADNECK_ROIS", "HeadNeckModel", "Immobilisation", "render_headneck", "sample_headneck"]

HEADNECK_ROIS = SITES["headneck"].structures


#: the PTV is cropped this far inside the skin (build-up region), as in clinical practice
PTV_SKIN_CROP_MM = 5.0


@dataclass
class Immobilisation:
    """What the head and shoulders lie on and under (lengths mm, HU), drawn per patient.

    The couch is the scanner's (:data:`rtdeep.phantom.scanner.COUCH_TYPES`): a curved diagnostic top
    or a flat carbon-fibre RT top. On it a headrest fills the gap under the neck and occiput: a
    polyurethane foam cradle in a hard coat (``coat_mm`` > 0) or, with the vacuum-bag couch, a moulded
    bead cushion (no coat). A thermoplastic mask (``mask``) is a perforated shell moulded ``mask_gap_mm``
    off the skin over the face and sides, down to a rigid rim that clips to the base plate; a
    three-point mask ends at the neck, a five-point mask also covers the shoulders.
    """

    couch_top_y: float
    couch_curve: float
    headrest_half_x: float
    headrest_depth_mm: float
    headrest_hu: float
    coat_mm: float
    coat_hu: float
    mask: bool
    mask_gap_mm: float = 0.0
    mask_mm: float = 0.0
    mask_hu: float = 0.0
    mask_open: float = 0.0
    mask_hole_pitch_mm: float = 6.0
    mask_bottom_z: float = 0.0
    mask_edge_y: float = 0.0
    rim_hu: float = 0.0


@dataclass
class HeadNeckModel:
    """Every random choice that defines one head-and-neck phantom (lengths in mm, LPS)."""

    neck_half_x: float
    neck_half_y: float
    shoulder_half_x: float
    shoulder_z: float
    fat_mm: float
    head: Ellipsoid
    face: Ellipsoid
    bend: Bend
    vertebra_y: float
    canal_y: float
    cord_top_z: float
    brainstem: Capsule
    mandible: list[Capsule]
    parotids: dict[str, Ellipsoid]
    submandibular: dict[str, Ellipsoid]
    eyes: list[Ellipsoid]
    airway: list[Capsule]
    oral_air: Ellipsoid
    muscles: list[Capsule]
    gtv: Ellipsoid
    gtv_node: Ellipsoid | None
    gtv_side: str
    ptv_margin_mm: float
    gland_texture: SmoothField
    spine: Spine | None = None
    #: CSF around the brainstem (prepontine and ambient cisterns, thicker in front), the fourth
    #: ventricle behind the pons and medulla, and the clivus in front of the cisterns
    cisterns: list[Capsule] | None = None
    fourth_ventricle: Ellipsoid | None = None
    clivus: Capsule | None = None
    #: fat around the submandibular glands (mm): the submandibular space under the platysma
    submandibular_fat_mm: float = 2.0
    parotid_hu: float = -15.0
    tongue: Ellipsoid | None = None
    teeth: list[Capsule] | None = None
    fillings: list[Ellipsoid] | None = None
    scanner: ScannerSettings | None = None
    vertebra_period: float = 18.0
    z_range: tuple[float, float] = (0.0, 0.0)
    pixel_mm: float = 1.0
    slice_mm: float = 3.0
    fov_mm: float = 480.0
    fov_centre: tuple[float, float] = (0.0, 10.0)
    immobilisation: Immobilisation | None = None

    def rois(self) -> tuple[Organ, ...]:
        return HEADNECK_ROIS

    def neck_sd(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        bx, by = self.bend.body_frame(x, y, z)
        t = np.clip((self.shoulder_z - z) / 35.0, 0.0, 1.0)
        t = t * t * (3 - 2 * t)
        half_x = np.float32(self.neck_half_x) + np.float32(self.shoulder_half_x - self.neck_half_x) * t
        half_y = np.float32(self.neck_half_y) + np.float32(30.0) * t
        neck = superellipse_sd(bx, by - np.float32(8.0) - np.float32(10.0) * t, half_x, half_y, 2.4)
        return np.maximum(neck, z - np.float32(self.head.centre[2]))

    def body_sd(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The skin, flattened where the shoulders (or the occiput) press on the couch top."""
        bx, by = self.bend.body_frame(x, y, z)
        body = np.minimum(np.minimum(self.neck_sd(x, y, z), self.head.sd(bx, by, z)), self.face.sd(bx, by, z))
        if self.immobilisation is None:
            return body
        return np.maximum(body, y - self.couch_top_y(x))

    def couch_top_y(self, x: np.ndarray) -> np.ndarray:
        """y (mm) of the couch top's surface under the patient (a curved top rises to the sides)."""
        immobilisation = self.immobilisation
        assert immobilisation is not None
        curve = np.float32(immobilisation.couch_curve)
        return (np.float32(immobilisation.couch_top_y) - curve * x * x).astype(np.float32)

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([-self.shoulder_half_x - 12, -125.0, self.z_range[0] - 5])
        hi = np.array([self.shoulder_half_x + 12, 125.0, self.z_range[1] + 5])
        return lo, hi


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def sample_headneck(rng: np.random.Generator) -> HeadNeckModel:
    """Draw one head-and-neck patient from the generative model."""
    s = _u(rng, 0.9, 1.1)  # overall size
    neck_x, neck_y = 56 * s * _u(rng, 0.92, 1.1), 58 * s * _u(rng, 0.92, 1.1)
    head = Ellipsoid((0.0, 8.0, 100 * s), (74 * s * _u(rng, 0.95, 1.05), 92 * s * _u(rng, 0.95, 1.05), 88 * s))
    face = Ellipsoid((0.0, -25.0 * s, 35 * s), (74 * s * _u(rng, 0.95, 1.05), 70 * s, 62 * s))
    bend = Bend.random(rng, 5.0)
    vertebra_y = 18.0 * s
    canal_y = vertebra_y + 22.0
    cord_top = 46.0 * s
    brainstem = Capsule((0.0, canal_y - 4, cord_top), (0.0, canal_y - 10, cord_top + 38 * s), 10.5 * s, 13.0 * s)
    ramus_x = _u(rng, 42, 48) * s
    angle_y = _u(rng, -2, 6) * s
    chin_y = -_u(rng, 68, 80) * s
    condyle = np.array([ramus_x + 2, angle_y + 14, 52 * s])
    mandible = []
    for side in (1.0, -1.0):
        angle = np.array([side * ramus_x, angle_y, 2.0])
        mid = np.array([side * ramus_x * 0.72, chin_y * 0.55, 4.0])
        chin = np.array([0.0, chin_y, 4.0])
        for dz in (0.0, 14.0):
            up = np.array([0, 0, dz])
            mandible += [Capsule(angle + up, mid + up, 5.5, 6.0), Capsule(mid + up, chin + up, 6.0, 7.0)]
        cond = condyle * np.array([side, 1, 1])
        mandible += [Capsule(angle + np.array([0, 0, 6]), cond, 6.0, 5.5),
                     Capsule(angle + np.array([0, -8, 10]), cond + np.array([0, -14, -4]), 5.0, 4.0)]
    parotids, submandibular = {}, {}
    for name, side in (("L", 1.0), ("R", -1.0)):
        centre = np.array([side * (ramus_x + _u(rng, 6, 10)), angle_y + _u(rng, 8, 14), _u(rng, 26, 36) * s])
        parotids[name] = Ellipsoid(centre, (_u(rng, 10, 13), _u(rng, 17, 22), _u(rng, 21, 27)),
                                   rotation_matrix(side * _u(rng, -10, 10), 0, _u(rng, -8, 8)),
                                   random_perturbation(rng, 0.07))
        sub_centre = np.array([side * ramus_x * _u(rng, 0.62, 0.72), angle_y - _u(rng, 24, 32), -_u(rng, 4, 10)])
        submandibular[name] = Ellipsoid(sub_centre, (_u(rng, 9, 12), _u(rng, 12, 15), _u(rng, 8, 10)),
                                        rotation_matrix(side * _u(rng, 10, 30), 0, 0), random_perturbation(rng, 0.06))
    eyes = [Ellipsoid((side * 32 * s, -62 * s + 0 * side, 88 * s), (12.0, 12.0, 12.0)) for side in (1.0, -1.0)]
    airway = [
        Capsule((0.0, 2.0, cord_top - 6), (0.0, 6.0, 20.0), 9.0, 8.0),
        Capsule((0.0, 6.0, 20.0), (0.0, -2.0, -35.0), 8.0, 8.5),
        Capsule((0.0, -2.0, -35.0), (0.0, -16.0, -140.0), 8.5, 9.0),
    ]
    oral_air = Ellipsoid((0.0, -40 * s, 22 * s), (16.0, 14.0, 3.0), None, random_perturbation(rng, 0.1))
    muscles = []
    for side in (1.0, -1.0):
        muscles.append(Capsule((side * 52 * s, 26.0, 40 * s), (side * 20 * s, -44 * s, -110.0), 9.0, 10.0))
    model = HeadNeckModel(
        neck_half_x=neck_x, neck_half_y=neck_y, shoulder_half_x=_u(rng, 150, 185), shoulder_z=-_u(rng, 75, 95),
        fat_mm=_u(rng, 4, 12), head=head, face=face, bend=bend, vertebra_y=vertebra_y, canal_y=canal_y,
        cord_top_z=cord_top, brainstem=brainstem, mandible=mandible, parotids=parotids, submandibular=submandibular,
        eyes=eyes, airway=airway, oral_air=oral_air, muscles=muscles, gtv=head, gtv_node=None, gtv_side="L",
        ptv_margin_mm=float(rng.choice([5.0, 8.0])), gland_texture=SmoothField(rng, 3, (10.0, 25.0)),
        vertebra_period=_u(rng, 16, 20),
    )
    _sample_tumour(model, rng)
    # cervical spine: the thecal sac is the cord contour (see Spine); C2 (top) to C7 (bottom)
    model.spine = Spine.random(rng, canal_y, -130.0 * s, cord_top, s, body_half_lo=(11.0, 8.5), body_half_hi=(8.5, 7.5),
                               period_lo=18.0, period_hi=15.0, sac_half=(7.2, 5.8), spinous_length=_u(rng, 22, 32),
                               transverse_length=_u(rng, 10, 14), top_z=cord_top)
    # fatty parotids: about -30 to +30 HU (fat fraction varies with age and body mass)
    model.parotid_hu = _u(rng, -30, 30)
    _sample_posterior_fossa(model, rng, s)
    model.submandibular_fat_mm = _u(rng, 1.0, 3.5)
    model.tongue = Ellipsoid((0.0, -30.0 * s, 14.0 * s), (24.0 * s, 34.0 * s, 16.0 * s), None, random_perturbation(rng, 0.06))
    model.teeth, model.fillings = [], []
    arch_points = [np.array([side * ramus_x * f, chin_y * g, 0.0]) for side, f, g in
                   ((-1, 0.72, 0.55), (-1, 0.35, 0.9), (1, 0.35, 0.9), (1, 0.72, 0.55))]
    arch_points.insert(2, np.array([0.0, chin_y + 2, 0.0]))
    for z_lo, z_hi in ((24.0 * s, 33.0 * s), (36.0 * s, 45.0 * s)):  # lower and upper teeth
        for a, b in itertools.pairwise(arch_points):
            model.teeth.append(Capsule(a + np.array([0, 0, (z_lo + z_hi) / 2]), b + np.array([0, 0, (z_lo + z_hi) / 2]),
                                       4.5 * s, 4.5 * s))
    if rng.uniform() < 0.5:  # amalgam fillings cast metal streaks
        for _ in range(int(rng.integers(1, 5))):
            segment = model.teeth[int(rng.integers(len(model.teeth)))]
            t = rng.uniform(0, 1)
            centre = segment.a + t * (segment.b - segment.a)
            model.fillings.append(Ellipsoid(centre, rng.uniform(2.0, 3.5, size=3)))
    _sample_scan(model, rng)
    _sample_immobilisation(model, rng)
    return model


def _sample_immobilisation(model: HeadNeckModel, rng: np.random.Generator) -> None:
    """Couch, headrest and mask (:class:`Immobilisation`), drawn after the anatomy and the scanner so
    that neither changes for a given seed.

    The couch top lies 1-2.5 mm in front of the least posterior back of the shoulders (below the
    neck's curve), so the shoulders touch it on every slice, flattened by that much plus the bend;
    when the occiput reaches more than 3 mm behind that, the couch top is 3 mm in front of the
    occiput instead (the skull stays inside the skin) and the shoulders rest a few mm in front of it.
    """
    assert model.scanner is not None
    z = np.linspace(model.z_range[0], model.z_range[1], 96, dtype=np.float32)[:, None]
    y = np.arange(0.0, 200.0, 0.25, dtype=np.float32)[None, :]
    inside = model.body_sd(np.zeros_like(y), y, z) < 0  # immobilisation still None: the unflattened body
    back = np.array([y[0, np.flatnonzero(row)[-1]] if row.any() else -np.inf for row in inside])
    shoulders = back[(z[:, 0] < model.shoulder_z - 35) & np.isfinite(back)]
    head = back[z[:, 0] > model.shoulder_z + 15]
    couch_top = float(shoulders.min()) - _u(rng, 1.0, 2.5) if shoulders.size else float(back.max()) - 2.0
    couch_top = max(couch_top, float(head.max()) - 3.0) if head.size else couch_top
    couch = model.scanner.couch
    bead_cushion = couch == "flat_vacbag"
    mask = bool(rng.uniform() < (0.3 if couch == "curved" else 0.9))  # diagnostic scans are rarely masked
    immobilisation = Immobilisation(
        couch_top_y=couch_top,
        couch_curve=_u(rng, 0.0006, 0.0009) if couch == "curved" else 0.0,
        headrest_half_x=_u(rng, 45, 70), headrest_depth_mm=_u(rng, 40, 70),
        # moulded polystyrene-bead cushion about -800 HU; polyurethane foam cradles -900 to -500 HU
        headrest_hu=_u(rng, -820, -760) if bead_cushion else _u(rng, -900, -500),
        coat_mm=0.0 if bead_cushion else _u(rng, 1.0, 3.0), coat_hu=_u(rng, 50, 300), mask=mask)
    if mask:
        five_point = rng.uniform() < 0.6
        immobilisation.mask_gap_mm = _u(rng, 0.5, 3.0)
        immobilisation.mask_mm = _u(rng, 1.2, 2.4)  # 2.4-3.2 mm sheet stretched thinner over the face
        immobilisation.mask_hu = _u(rng, 80, 250)  # polycaprolactone, about 1.15 g/cm3
        immobilisation.mask_open = _u(rng, 0.2, 0.5)  # share of the shell that is perforation
        immobilisation.mask_hole_pitch_mm = _u(rng, 4.0, 8.0)
        immobilisation.mask_bottom_z = model.shoulder_z - _u(rng, 20, 50) if five_point else _u(rng, -40, -15)
        # the rim clips to the base plate at the sides, in front of the headrest (which the mask never covers)
        immobilisation.mask_edge_y = immobilisation.couch_top_y - immobilisation.headrest_depth_mm - _u(rng, 0, 10)
        immobilisation.rim_hu = _u(rng, 250, 700)
    model.immobilisation = immobilisation


def _sample_posterior_fossa(model: HeadNeckModel, rng: np.random.Generator, s: float) -> None:
    """What makes the brainstem visible on CT: CSF (0-15 HU) around it against brain (30-40 HU).

    The prepontine cistern in front (3-7 mm, between the pons and the clivus) and the ambient /
    cerebellopontine cisterns at the sides (1-3 mm, thinner in older patients' larger brainstems
    and wider with atrophy), the fourth ventricle behind the pons and upper medulla (floor on the
    brainstem, 2-5 mm deep, 10-16 mm wide), and the clivus sloping from the front of the foramen
    magnum up to the dorsum sellae (Osborn, Diagnostic Neuroradiology; Gray's Anatomy, posterior
    cranial fossa). Before, the brainstem was 3 HU darker than the brain around it and had no
    boundary a network could see.
    """
    stem = model.brainstem
    side = _u(rng, 1.0, 3.0)
    front = _u(rng, 3.0, 7.0)
    ahead = np.array([0.0, -0.5 * front, 0.0])
    model.cisterns = [
        Capsule(stem.a, stem.b, stem.radius_a + side, stem.radius_b + side),
        Capsule(stem.a + ahead + np.array([0, 0, 6.0]), stem.b + ahead, stem.radius_a + 0.5 * front,
                stem.radius_b + 0.5 * front),
    ]
    depth, width = _u(rng, 2.0, 5.0), _u(rng, 5.0, 8.0) * s
    mid = 0.45 * stem.a + 0.55 * stem.b
    back = 0.5 * (stem.radius_a + stem.radius_b)
    model.fourth_ventricle = Ellipsoid(mid + np.array([0.0, back + 0.5 * depth, 0.0]),
                                       (width, 0.5 * depth + 1.0, _u(rng, 9.0, 13.0) * s))
    gap = stem.radius_a + front + 5.0
    model.clivus = Capsule(stem.a + np.array([0.0, -gap, 2.0]),
                           stem.b + np.array([0.0, -(stem.radius_b + front + 9.0), 6.0 * s]), 5.0, 6.0)


def _sample_tumour(model: HeadNeckModel, rng: np.random.Generator) -> None:
    side = "L" if rng.uniform() < 0.5 else "R"
    sign = 1.0 if side == "L" else -1.0
    radius = _u(rng, 10, 20)
    centre = np.array([sign * _u(rng, 6, 20), _u(rng, -14, 2), _u(rng, 4, 30)])
    model.gtv = Ellipsoid(centre, radius * rng.uniform(0.8, 1.2, size=3), rotation_matrix(*rng.uniform(-60, 60, size=3)),
                          random_perturbation(rng, 0.08))
    model.gtv_side = side
    if rng.uniform() < 0.7:
        node = np.array([sign * _u(rng, 32, 42), _u(rng, -10, 12), _u(rng, -30, 5)])
        model.gtv_node = Ellipsoid(node, rng.uniform(9, 17, size=3), rotation_matrix(*rng.uniform(-60, 60, size=3)),
                                   random_perturbation(rng, 0.08))


def _sample_scan(model: HeadNeckModel, rng: np.random.Generator) -> None:
    """The patient's scanner (:mod:`rtdeep.phantom.scanner`) and the scanned range."""
    top = model.head.centre[2] + model.head.radii[2] + _u(rng, 5, 15)
    bottom = -_u(rng, 115, 140)
    model.scanner = sample_scanner(rng, 2 * model.shoulder_half_x + 20)
    slice_mm = model.scanner.slice_mm
    n_slices = round((top - bottom) / slice_mm) + 1
    centre_z = (top + bottom) / 2
    z0 = centre_z - (n_slices - 1) * slice_mm / 2
    model.z_range = (z0, z0 + (n_slices - 1) * slice_mm)
    model.slice_mm = slice_mm
    model.pixel_mm = model.scanner.pixel_mm
    model.fov_mm = model.scanner.fov_mm
    model.fov_centre = (_u(rng, -6, 6), 10.0 + _u(rng, -8, 8))


def _frame(model: HeadNeckModel, block) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bx, by = model.bend.body_frame(block.x, block.y, block.z)
    return bx, by, block.z


def _paint_ellipsoid(canvas: Canvas, model: HeadNeckModel, shape: Ellipsoid, value: float | None, pad: float = 3.0,
                     inside: np.ndarray | None = None, grow_mm: float = 0.0, **kwargs: object) -> None:
    """Paint ``shape`` (grown by ``grow_mm``: a sleeve painted before the shape itself) with ``value``
    (None: the gland texture), only ``inside`` that mask when given."""
    block = canvas.block(shape.bbox(pad))
    if block is None:
        return
    if inside is not None:
        kwargs["within"] = inside[block.index]
    bx, by, z = _frame(model, block)
    sd = shape.sd(bx, by, z)
    if grow_mm:
        sd = sd - np.float32(grow_mm)
    if value is None:  # gland texture
        value = np.float32(model.parotid_hu) + np.float32(12.0) * model.gland_texture(bx, by, z)
    canvas.paint(block, sd, value, **kwargs)  # type: ignore[arg-type]


def _capsules_sd(model: HeadNeckModel, capsules: list[Capsule], block) -> np.ndarray:
    bx, by, z = _frame(model, block)
    sd = None
    for capsule in capsules:
        part = capsule.sd(bx, by, z)
        sd = part if sd is None else np.minimum(sd, part)
    assert sd is not None
    return sd


def _capsules_block(canvas: Canvas, capsules: list[Capsule], pad: float):
    lo = np.min([c.bbox(pad)[0] for c in capsules], axis=0)
    hi = np.max([c.bbox(pad)[1] for c in capsules], axis=0)
    return canvas.block((lo, hi))


def render_headneck(model: HeadNeckModel, grid: GridSpec, *, edge_mm: float, fine_texture: bool = True) -> Canvas:
    """Evaluate the head-and-neck model on ``grid``: HU (no scanner noise yet) and ROI masks."""
    canvas = Canvas(grid, edge_mm)
    lo, hi = model.bbox()
    block = canvas.block((lo, hi))
    assert block is not None
    body = model.body_sd(block.x, block.y, block.z)
    canvas.paint(block, body, HU["fat"], mask_name="External")
    canvas.paint(block, body + np.float32(model.fat_mm), HU["muscle"])
    del body
    # skull and brain
    head_block = canvas.block(model.head.bbox(2))
    if head_block is not None:
        bx, by, z = _frame(model, head_block)
        skull = model.head.sd(bx, by, z) + np.float32(model.fat_mm * 0.5 + 2)
        base = np.float32(model.cord_top_z + 4) - z
        foramen = np.float32(15.0) - np.sqrt(bx * bx + (by - np.float32(model.canal_y - 6)) ** 2)
        canvas.paint(head_block, np.maximum(np.maximum(skull, base - 8), foramen), HU["cortical"] + 250)
        canvas.paint(head_block, np.maximum(skull + 7, base), HU["brain"])
    for eye in model.eyes:
        _paint_ellipsoid(canvas, model, eye, HU["csf"])
    # muscles and airway
    mblock = _capsules_block(canvas, model.muscles, 2)
    if mblock is not None:
        canvas.paint(mblock, _capsules_sd(model, model.muscles, mblock) - 1.5, HU["fat"])
        canvas.paint(mblock, _capsules_sd(model, model.muscles, mblock), HU["muscle"] + 8)
    if model.tongue is not None:
        _paint_ellipsoid(canvas, model, model.tongue, HU["muscle"] + 5)
    _paint_ellipsoid(canvas, model, model.oral_air, HU["air"])
    ablock = _capsules_block(canvas, model.airway, 4)
    if ablock is not None:
        airway = _capsules_sd(model, model.airway, ablock)
        canvas.paint(ablock, airway - 3.0, HU["soft"] + 5)
        canvas.paint(ablock, airway + np.float32(1.5), HU["air"])
    # spine, cord and brainstem
    if model.spine is not None:
        model.spine.paint(canvas, model.bend, model.z_range)
    if model.cisterns is not None and model.clivus is not None and model.fourth_ventricle is not None:
        cblock = _capsules_block(canvas, [*model.cisterns, model.clivus], 3)
        if cblock is not None:
            above = np.float32(model.cord_top_z) - cblock.z  # the cisterns open into the canal below
            brain = canvas.mask("External")[cblock.index] & (canvas.hu[cblock.index] < 60)
            canvas.paint(cblock, np.maximum(_capsules_sd(model, model.cisterns, cblock), above), HU["csf"],
                         within=brain)
            clivus = _capsules_sd(model, [model.clivus], cblock)
            canvas.paint(cblock, clivus, np.where(clivus > -1.5, np.float32(HU["cortical"] + 250),
                                                  np.float32(HU["cancellous"] + 60)))
        _paint_ellipsoid(canvas, model, model.fourth_ventricle, HU["csf"])
    bblock = _capsules_block(canvas, [model.brainstem], 3)
    if bblock is not None:
        bs = np.maximum(_capsules_sd(model, [model.brainstem], bblock), np.float32(model.cord_top_z) - bblock.z)
        canvas.paint(bblock, bs, HU["brain"] - 3, mask_name="Brainstem")
        canvas.masks["SpinalCord"][bblock.index] &= ~canvas.masks["Brainstem"][bblock.index]
    # glands (parotid fattier and darker than muscle), then the mandible over them
    for parotid in model.parotids.values():  # parapharyngeal and subcutaneous fat planes around the glands
        _paint_ellipsoid(canvas, model, parotid, HU["fat"], pad=6, inside=canvas.mask("External"), grow_mm=2.5)
    for name, parotid in model.parotids.items():
        _paint_ellipsoid(canvas, model, parotid, None, mask_name=f"Parotid_{name}", inside=canvas.mask("External"))
    for gland in model.submandibular.values():  # the fat of the submandibular space around each gland
        _paint_ellipsoid(canvas, model, gland, HU["fat"], pad=6, inside=canvas.mask("External"),
                         grow_mm=model.submandibular_fat_mm)
    for name, gland in model.submandibular.items():
        _paint_ellipsoid(canvas, model, gland, HU["submandibular"], mask_name=f"Glnd_Submand_{name}",
                         inside=canvas.mask("External"))
    mblock = _capsules_block(canvas, model.mandible, 3)
    if mblock is not None:
        mandible = _capsules_sd(model, model.mandible, mblock)
        value = np.where(mandible > -2.2, np.float32(HU["cortical"] + 350), np.float32(HU["cancellous"] + 80))
        canvas.paint(mblock, mandible, value, mask_name="Mandible", within=canvas.mask("External")[mblock.index])
        for name in ("Parotid_L", "Parotid_R", "Glnd_Submand_L", "Glnd_Submand_R"):
            canvas.masks[name][mblock.index] &= ~canvas.masks["Mandible"][mblock.index]
    for tooth in model.teeth or []:
        tblock = _capsules_block(canvas, [tooth], 2)
        if tblock is not None:
            canvas.paint(tblock, _capsules_sd(model, [tooth], tblock), 1800.0)
    for filling in model.fillings or []:
        _paint_ellipsoid(canvas, model, filling, 3071.0, pad=2.0)
        centre = filling.centre
        canvas.streaks.append(StreakSource((float(centre[0]), float(centre[1])), float(centre[2]) - 5,
                                           float(centre[2]) + 5, weight=3.0))
    _paint_tumour(canvas, model)
    _paint_immobilisation(canvas, model)
    return canvas


def _paint_immobilisation(canvas: Canvas, model: HeadNeckModel) -> None:
    """The couch top, the headrest on it and the mask over the patient, outside the External only."""
    immobilisation = model.immobilisation
    if immobilisation is None or model.scanner is None:
        return
    top = immobilisation.couch_top_y
    half = model.shoulder_half_x + 40
    block = canvas.block((np.array([-half - 100, top - 90, model.z_range[0] - 5]),
                          np.array([half + 100, top + 60, model.z_range[1] + 5])))
    if block is None:
        return
    outside = ~canvas.mask("External")[block.index]
    surface = model.couch_top_y(block.x)
    if model.scanner.couch == "curved":  # the diagnostic couch: a plastic shell around a foam pad
        shell = np.maximum(surface - block.y, block.y - surface - 18)
        canvas.paint(block, np.maximum(shell, np.abs(block.x) - half - 5), 150.0, within=outside)
        canvas.paint(block, np.maximum(shell + 2.0, np.abs(block.x) - half - 3), -650.0, within=outside)
    else:  # the flat RT top: carbon-fibre skins around a foam core, 40 mm, 530 mm wide
        shell = np.maximum(surface - block.y, block.y - surface - 40)
        width = np.abs(block.x) - np.float32(265.0)
        canvas.paint(block, np.maximum(shell, width), 250.0, within=outside)
        canvas.paint(block, np.maximum(shell + 1.5, width + 2.0), -900.0, within=outside)
    # the headrest: from the couch top up to depth mm in front of it, under the neck and occiput
    bx, _ = model.bend.body_frame(block.x, block.y, block.z)
    z_lo, z_hi = model.shoulder_z + 15.0, float(model.head.centre[2])
    rest = np.maximum(np.maximum(np.abs(bx) - np.float32(immobilisation.headrest_half_x),
                                 np.maximum(np.float32(z_lo) - block.z, block.z - np.float32(z_hi))),
                      np.maximum(block.y - surface, surface - np.float32(immobilisation.headrest_depth_mm) - block.y))
    if immobilisation.coat_mm > 0:
        canvas.paint(block, rest, immobilisation.coat_hu, within=outside)
    canvas.paint(block, rest + np.float32(immobilisation.coat_mm), immobilisation.headrest_hu, within=outside)
    if immobilisation.mask:
        _paint_mask(canvas, model, immobilisation)


def _paint_mask(canvas: Canvas, model: HeadNeckModel, immobilisation: Immobilisation) -> None:
    """A perforated thermoplastic shell ``mask_gap_mm`` off the skin, from ``mask_bottom_z`` over the
    top of the head and down the sides to ``mask_edge_y``, where a rigid rim 6 x 10 mm runs along it."""
    lo, hi = model.bbox()
    block = canvas.block((np.array([lo[0] - 10, -150.0, immobilisation.mask_bottom_z]),
                          np.array([hi[0] + 10, immobilisation.mask_edge_y + 8, model.z_range[1] + 5])))
    if block is None:
        return
    outside = ~canvas.mask("External")[block.index]
    sd = model.body_sd(block.x, block.y, block.z) - np.float32(immobilisation.mask_gap_mm)
    edge = np.float32(immobilisation.mask_edge_y)
    shell = np.maximum(np.maximum(-sd, sd - np.float32(immobilisation.mask_mm)), block.y - edge)
    # the perforations: a square grid of holes over the shell (seen in-plane as a broken line)
    pitch = np.float32(2 * np.pi / immobilisation.mask_hole_pitch_mm)
    holes = (np.cos(pitch * (block.x + block.y)) * np.cos(pitch * block.z)) > np.float32(
        1.0 - 2.0 * immobilisation.mask_open)
    canvas.paint(block, shell, immobilisation.mask_hu, within=outside & ~holes)
    rim = np.maximum(np.maximum(-sd, sd - np.float32(10.0)), np.abs(block.y - edge + np.float32(3.0)) - np.float32(3.0))
    canvas.paint(block, rim, immobilisation.rim_hu, within=outside)


def _paint_tumour(canvas: Canvas, model: HeadNeckModel) -> None:
    margin = model.ptv_margin_mm
    parts = [model.gtv] if model.gtv_node is None else [model.gtv, model.gtv_node]
    lo = np.min([p.bbox(margin + 4)[0] for p in parts], axis=0)
    hi = np.max([p.bbox(margin + 4)[1] for p in parts], axis=0)
    block = canvas.block((lo, hi))
    if block is None:
        return
    bx, by, z = _frame(model, block)
    gtv = model.gtv.sd(bx, by, z)
    if model.gtv_node is not None:
        gtv = np.minimum(gtv, model.gtv_node.sd(bx, by, z))
    body = canvas.mask("External")[block.index]
    canvas.paint(block, gtv, HU["tumour"] + 10, mask_name="GTV", within=body)
    inside_skin = model.body_sd(block.x, block.y, block.z) < -PTV_SKIN_CROP_MM
    ptv = np.broadcast_to((gtv - np.float32(margin) < 0) & inside_skin, block.shape)
    canvas.mask("PTV")[block.index] |= ptv
