"""Digitally reconstructed radiographs (DRRs) of an RT Plan's beams, in the geometry of RT Image.

Geometry (IEC 61217, head-first supine; LPS = DICOM patient coordinates, mm):

* gantry angle ``g``: the source sits at ``iso + SAD * (sin g, -cos g, 0)`` (0 deg: anterior,
  90 deg: the patient's left); couch angle ``c`` (IEC: counter-clockwise seen from above) turns the
  room's vectors about the vertical by ``-c`` in patient coordinates (gantry 90, couch 90: the
  source is inferior to the patient);
* the imager (IEC X-ray image receptor) is perpendicular to the beam axis at ``SID`` from the
  source, ``SID - SAD`` beyond the isocentre; its x and y axes are the gantry's ``X_g``
  (``(cos g, sin g, 0)``: patient left at 0 deg) and ``Y_g`` (towards the gantry: superior);
  the collimator turns the field, not the imager;
* RT Image coordinates are (x, y) mm in the imager plane with the origin where the beam axis
  meets it; pixel ``(row, column)`` lies at ``x = RTImagePosition[0] + column * spacing[1]``,
  ``y = RTImagePosition[1] - row * spacing[0]`` (rows go down, as the image is displayed, seen
  from the source).

The DRR is the line integral of linear attenuation ``mu = mu_water * (1 + HU / 1000)`` (HU below
-1000 count as air) from the source to each imager pixel, sampled at ``step_mm`` along each
divergent ray with trilinear interpolation (``scipy.ndimage.map_coordinates``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from scipy import ndimage

from rtdeep.errors import PlanError
from rtdeep.fileio import ensure_new_paths, staged_output
from rtdeep.volume import Volume

__all__ = [
    "MU_WATER_PER_MM",
    "BeamGeometry",
    "DrrImage",
    "compute_drr",
    "read_beam_geometries",
    "write_cohort_drrs",
    "write_study_drrs",
]

#: linear attenuation of water at about 70 keV effective (mu/rho 0.19 cm^2/g), per mm
MU_WATER_PER_MM = 0.019
DEFAULT_SID_MM = 1500.0
DEFAULT_IMAGER_MM = 400.0
DEFAULT_PIXELS = 256


@dataclass
class BeamGeometry:
    """One beam's geometry from an RT Plan (first control point).

    Attributes:
        jaws_mm: ``(x1, x2, y1, y2)`` at the isocentre plane, None when the plan has none.
        mlc_boundaries_mm: leaf-pair boundaries along y (n + 1 values), MLCX only.
        mlc_positions_mm: leaf positions ``(2, n)``: bank A (x1 side) then bank B.
    """

    number: int
    name: str
    sad_mm: float
    gantry_deg: float
    collimator_deg: float
    couch_deg: float
    isocenter_lps: np.ndarray
    machine_name: str = ""
    jaws_mm: tuple[float, float, float, float] | None = None
    mlc_boundaries_mm: np.ndarray | None = None
    mlc_positions_mm: np.ndarray | None = None
    patient_position: str = "HFS"

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit vectors (LPS) of the gantry frame: ``X_g``, ``Y_g`` and ``Z_g`` (iso -> source)."""
        g, c = np.radians(self.gantry_deg), np.radians(self.couch_deg)
        x_g = np.array([np.cos(g), np.sin(g), 0.0])
        y_g = np.array([0.0, 0.0, 1.0])
        z_g = np.array([np.sin(g), -np.cos(g), 0.0])
        # the couch turns the patient by c counter-clockwise seen from above (IEC); in patient
        # coordinates the room's vectors turn the other way: at gantry 90, couch 90 the source is inferior
        cos_c, sin_c = np.cos(c), np.sin(c)
        rotation = np.array([[cos_c, 0.0, sin_c], [0.0, 1.0, 0.0], [-sin_c, 0.0, cos_c]])
        return rotation @ x_g, rotation @ y_g, rotation @ z_g

    def source_lps(self) -> np.ndarray:
        return self.isocenter_lps + self.sad_mm * self.axes()[2]

    def project(self, points_lps: np.ndarray, sid_mm: float) -> np.ndarray:
        """Imager-plane coordinates (x, y mm, RT Image system) of LPS points ``(..., 3)``."""
        x_g, y_g, z_g = self.axes()
        relative = np.asarray(points_lps, dtype=np.float64) - self.source_lps()
        depth = -(relative @ z_g)  # distance from the source along the beam axis
        scale = sid_mm / depth
        return np.stack([(relative @ x_g) * scale, (relative @ y_g) * scale], axis=-1)


@dataclass
class DrrImage:
    """A DRR on the imager: attenuation line integrals ``[row, column]`` and the RT Image geometry."""

    integral: np.ndarray
    beam: BeamGeometry
    sid_mm: float
    pixel_spacing_mm: tuple[float, float]  # (between rows, between columns) at the imager
    position_mm: tuple[float, float]  # RT Image Position: (x, y) of the first pixel's centre
    step_mm: float = 1.0
    notes: list[str] = field(default_factory=list)

    def pixel_of(self, xy_mm: np.ndarray) -> np.ndarray:
        """(row, column) (fractional) of imager-plane points ``(..., 2)``."""
        xy = np.asarray(xy_mm, dtype=np.float64)
        column = (xy[..., 0] - self.position_mm[0]) / self.pixel_spacing_mm[1]
        row = (self.position_mm[1] - xy[..., 1]) / self.pixel_spacing_mm[0]
        return np.stack([row, column], axis=-1)


def _float(item: pydicom.Dataset, keyword: str, default: float | None = None) -> float | None:
    value = item.get(keyword)
    return default if value in (None, "") else float(value)


def read_beam_geometries(plan_path: str | os.PathLike[str]) -> list[BeamGeometry]:
    """Each beam's geometry from an RT Plan file (treatment beams with an isocentre).

    Raises:
        PlanError: no BeamSequence, a beam without control points or isocentre, or a patient
            position other than head-first supine (HFS).
    """
    path = Path(plan_path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if "BeamSequence" not in ds:
        raise PlanError("RT Plan has no BeamSequence", path=path, tag="BeamSequence (300A,00B0)")
    positions = {int(item.get("PatientSetupNumber", 0)): str(item.get("PatientPosition", "") or "")
                 for item in ds.get("PatientSetupSequence", []) or []}
    beams = []
    for beam in ds.BeamSequence:
        name = str(beam.get("BeamName", "") or f"beam {beam.get('BeamNumber', '?')}")
        points = beam.get("ControlPointSequence") or []
        if not points:
            raise PlanError(f"beam '{name}' has no control points", path=path, tag="ControlPointSequence (300A,0111)")
        first = points[0]
        if "IsocenterPosition" not in first:
            raise PlanError(f"beam '{name}' has no isocentre in its first control point", path=path,
                            tag="IsocenterPosition (300A,012C)")
        position = positions.get(int(beam.get("ReferencedPatientSetupNumber", 1) or 1), "HFS") or "HFS"
        if position != "HFS":
            raise PlanError(f"beam '{name}': DRRs support head-first supine (HFS) only, the plan says {position}",
                            path=path, tag="PatientPosition (0018,5100)")
        geometry = BeamGeometry(
            number=int(beam.BeamNumber), name=name, sad_mm=float(_float(beam, "SourceAxisDistance", 1000.0)),
            gantry_deg=float(_float(first, "GantryAngle", 0.0)),
            collimator_deg=float(_float(first, "BeamLimitingDeviceAngle", 0.0)),
            couch_deg=float(_float(first, "PatientSupportAngle", 0.0)),
            isocenter_lps=np.array([float(v) for v in first.IsocenterPosition]),
            machine_name=str(beam.get("TreatmentMachineName", "") or ""), patient_position=position,
        )
        _read_collimation(beam, first, geometry)
        beams.append(geometry)
    return beams


def _read_collimation(beam: pydicom.Dataset, first: pydicom.Dataset, geometry: BeamGeometry) -> None:
    boundaries = None
    for device in beam.get("BeamLimitingDeviceSequence", []) or []:
        if str(device.get("RTBeamLimitingDeviceType", "")) == "MLCX" and "LeafPositionBoundaries" in device:
            boundaries = np.array([float(v) for v in device.LeafPositionBoundaries])
    jaws = {"X": None, "Y": None}
    for item in first.get("BeamLimitingDevicePositionSequence", []) or []:
        kind = str(item.get("RTBeamLimitingDeviceType", ""))
        values = [float(v) for v in item.get("LeafJawPositions", []) or []]
        if kind in ("X", "ASYMX") and len(values) == 2:
            jaws["X"] = values
        elif kind in ("Y", "ASYMY") and len(values) == 2:
            jaws["Y"] = values
        elif kind == "MLCX" and boundaries is not None and len(values) == 2 * (len(boundaries) - 1):
            geometry.mlc_boundaries_mm = boundaries
            geometry.mlc_positions_mm = np.array(values).reshape(2, -1)
    if jaws["X"] is not None or jaws["Y"] is not None:
        x = jaws["X"] or [-200.0, 200.0]
        y = jaws["Y"] or [-200.0, 200.0]
        geometry.jaws_mm = (x[0], x[1], y[0], y[1])


def compute_drr(
    ct: Volume,
    beam: BeamGeometry,
    *,
    sid_mm: float = DEFAULT_SID_MM,
    imager_size_mm: float = DEFAULT_IMAGER_MM,
    pixels: int = DEFAULT_PIXELS,
    step_mm: float | None = None,
) -> DrrImage:
    """The DRR of one beam on a square imager centred on the beam axis.

    Args:
        ct: HU ``[k, j, i]`` with its LPS affine (any orientation).
        beam: geometry from :func:`read_beam_geometries`.
        sid_mm: source-to-imager distance.
        imager_size_mm: imager side at the imager plane (the field of view at the isocentre is
            ``imager_size_mm * SAD / SID``).
        pixels: pixels per side.
        step_mm: sampling step along each ray (default: the CT's smallest voxel spacing).

    Returns:
        A :class:`DrrImage` (line integrals of ``mu``, dimensionless).
    """
    if sid_mm <= beam.sad_mm:
        raise PlanError(f"the imager (SID {sid_mm:g} mm) must lie beyond the isocentre (SAD {beam.sad_mm:g} mm)")
    spacing = imager_size_mm / pixels
    position = (-imager_size_mm / 2 + spacing / 2, imager_size_mm / 2 - spacing / 2)
    step = float(step_mm or min(ct.spacing_mm))
    mu = np.clip(MU_WATER_PER_MM * (1.0 + ct.array.astype(np.float32) / 1000.0), 0.0, None).astype(np.float32)
    x_g, y_g, z_g = beam.axes()
    source = beam.source_lps()
    lo, hi = ct.bounds_lps()
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    distances = np.linalg.norm(corners - source, axis=1)
    t_near, t_far = max(float(distances.min()) - step, 0.0), float(distances.max()) + step
    n_samples = int(np.ceil((t_far - t_near) / step))
    t = (t_near + step * (np.arange(n_samples) + 0.5)).astype(np.float64)
    inverse = np.linalg.inv(ct.affine)
    columns = position[0] + spacing * np.arange(pixels)
    integral = np.zeros((pixels, pixels), np.float32)
    rows_per_chunk = max(1, int(4_000_000 // (pixels * n_samples)))
    for row0 in range(0, pixels, rows_per_chunk):
        rows = np.arange(row0, min(row0 + rows_per_chunk, pixels))
        y_values = position[1] - spacing * rows
        target = (source - sid_mm * z_g)[None, None, :] + columns[None, :, None] * x_g + y_values[:, None, None] * y_g
        direction = target - source
        direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
        points = source + direction[..., None, :] * t[:, None]  # (rows, columns, samples, 3)
        index = points @ inverse[:3, :3].T + inverse[:3, 3]
        coords = [index[..., 2].ravel(), index[..., 1].ravel(), index[..., 0].ravel()]
        values = ndimage.map_coordinates(mu, coords, order=1, mode="constant", cval=0.0)
        integral[rows] = values.reshape(len(rows), pixels, n_samples).sum(axis=-1) * step
    return DrrImage(integral, beam, sid_mm, (spacing, spacing), position, step)


def write_study_drrs(
    study_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    sid_mm: float = DEFAULT_SID_MM,
    pixels: int = DEFAULT_PIXELS,
    uid_seed: object | None = None,
    png: bool = False,
) -> list[Path]:
    """One RT Image (DRR) per beam of the study's RT Plan, written to ``out_dir`` (and PNGs with ``png``).

    The output names (``RI_beamNN.dcm``, ``RI_beamNN.png``) are refused before any DRR is computed if
    one exists; the files are written through :func:`rtdeep.fileio.staged_output`, so a failure
    leaves nothing behind and an existing file is never replaced.

    Returns:
        The RT Image files, by beam number.

    Raises:
        PlanError: the study has no RT Plan (the error names the folder), or a beam it cannot draw.
        OutputExistsError: one of the output files exists (nothing is written).
    """
    from rtdeep.dicomrt.rtimage_writer import write_rtimage
    from rtdeep.dicomrt.study import load_study

    study = load_study(study_dir)
    if study.plan is None or study.plan.path is None:
        raise PlanError("no RT Plan for the CT in this folder: DRRs are drawn per plan beam", path=study_dir)
    plan_ds = pydicom.dcmread(study.plan.path, stop_before_pixels=True,
                              specific_tags=["SOPInstanceUID", "SOPClassUID", "RTPlanLabel"])
    out_dir = Path(out_dir)
    beams = read_beam_geometries(study.plan.path)
    names = [f"RI_beam{beam.number:02d}" for beam in beams]
    suffixes = (".dcm", ".png") if png else (".dcm",)
    ensure_new_paths([out_dir / f"{name}{suffix}" for name in names for suffix in suffixes])
    drrs = [compute_drr(study.ct.volume, beam, sid_mm=sid_mm, pixels=pixels)
            for beam in beams]  # every beam computed before anything is written
    with staged_output(out_dir) as stage:
        for drr, name in zip(drrs, names):
            path = write_rtimage(drr, study.ct, stage / f"{name}.dcm",
                                 plan_sop_instance_uid=str(plan_ds.SOPInstanceUID),
                                 uid_seed=None if uid_seed is None else f"{uid_seed}/beam{drr.beam.number}")
            if png:
                from rtdeep.dicomrt.rtimage_reader import draw_rt_image_png

                draw_rt_image_png(path, stage / f"{name}.png", plan_path=study.plan.path)
    return sorted(out_dir / f"{name}.dcm" for name in names)


def write_cohort_drrs(manifest: str | os.PathLike[str]) -> list[Path]:
    """DRRs for every patient of a cohort manifest, in each patient folder's ``RTIMAGE/``."""
    import csv

    manifest = Path(manifest)
    written = []
    with open(manifest, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        folder = manifest.parent / row["study_dir"]
        seed = f"rtdeep-phantom/{row['seed']}/{row['site']}/{row['index']}/{row['grid']}/drr"
        written += write_study_drrs(folder, folder / "RTIMAGE", uid_seed=seed)
    return written
