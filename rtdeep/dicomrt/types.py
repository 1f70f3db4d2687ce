"""Plain data types that the DICOM RT readers return and the writers take.

They carry arrays with explicit geometry (:class:`rtdeep.volume.Volume`) plus the identifiers that
other objects reference (UIDs), and nothing of pydicom, so the layers above never touch tags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtdeep.volume import Volume

__all__ = [
    "Beam", "CtSeries", "DoseGrid", "PatientInfo", "PlanSummary", "RespiratoryPhase", "Roi", "RtImageInfo",
    "StructureSet", "Study",
]


@dataclass
class PatientInfo:
    """Patient and study attributes, copied verbatim between objects of one study."""

    patient_name: str = ""
    patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_instance_uid: str = ""
    study_date: str = ""
    study_time: str = ""
    study_id: str = ""
    study_description: str = ""
    accession_number: str = ""
    referring_physician_name: str = ""


@dataclass
class CtSeries:
    """A CT series read from disk (or about to be written).

    Attributes:
        volume: Hounsfield units (rescale applied), float32 ``[k, j, i]``, k in the order of
            increasing position along the slice normal (``cross(row_dir, col_dir)``).
        sop_instance_uids: one per slice, in k order.
        files: the file of each slice, in k order (empty for an in-memory series).
    """

    volume: Volume
    sop_instance_uids: list[str]
    series_instance_uid: str
    frame_of_reference_uid: str
    patient: PatientInfo
    sop_class_uid: str = "1.2.840.10008.5.1.4.1.1.2"
    files: list[Path] = field(default_factory=list)
    series_description: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass
class Roi:
    """One structure: a bool mask on the CT grid plus its identity.

    The mask marks voxels whose *centre* lies inside the contour polygons of that slice
    (even-odd rule, so holes and islands come out right whatever the winding).
    """

    name: str
    mask: np.ndarray
    number: int = 0
    color_rgb: tuple[int, int, int] = (255, 0, 0)
    interpreted_type: str = "ORGAN"
    generation_algorithm: str = "MANUAL"

    def volume_cc(self, grid: Volume) -> float:
        """Mask volume in cm^3 on ``grid``."""
        return float(self.mask.sum()) * grid.voxel_volume_cc


@dataclass
class StructureSet:
    """An RT Structure Set rasterised on a CT grid."""

    rois: list[Roi]
    frame_of_reference_uid: str
    sop_instance_uid: str = ""
    label: str = ""
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        return [roi.name for roi in self.rois]

    def __getitem__(self, name: str) -> Roi:
        for roi in self.rois:
            if roi.name == name:
                return roi
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(roi.name == name for roi in self.rois)


@dataclass
class DoseGrid:
    """An RT Dose on its own grid, in Gy.

    Attributes:
        dose: dose in Gy ``[k, j, i]`` on the dose grid.
        dose_type: ``PHYSICAL`` or ``EFFECTIVE``; ``summation_type``: ``PLAN``, ``FRACTION``, ...
    """

    dose: Volume
    frame_of_reference_uid: str
    sop_instance_uid: str = ""
    dose_type: str = "PHYSICAL"
    summation_type: str = "PLAN"
    referenced_plan_uid: str = ""
    path: Path | None = None


@dataclass
class Beam:
    """One treatment beam of a plan. Angles in degrees, meterset in MU."""

    name: str
    number: int
    gantry_angles_deg: list[float]
    energy: str = "6"
    radiation_type: str = "PHOTON"
    meterset_mu: float = 0.0
    isocenter_lps: tuple[float, float, float] = (0.0, 0.0, 0.0)
    collimator_angle_deg: float = 0.0
    couch_angle_deg: float = 0.0


@dataclass
class PlanSummary:
    """What a clinician reads off an RT Plan: prescription, beams, references."""

    label: str
    prescription_gy: float | None
    fractions: int | None
    beams: list[Beam]
    frame_of_reference_uid: str = ""
    sop_instance_uid: str = ""
    referenced_structure_set_uid: str = ""
    referenced_dose_uids: list[str] = field(default_factory=list)
    target_roi_number: int | None = None
    path: Path | None = None

    @property
    def dose_per_fraction_gy(self) -> float | None:
        if self.prescription_gy is None or not self.fractions:
            return None
        return self.prescription_gy / self.fractions


@dataclass
class RespiratoryPhase:
    """One CT series of a 4D CT: its respiratory phase in percent of the cycle and the tag that said so."""

    percent: float
    series_instance_uid: str
    series_description: str = ""
    source: str = ""
    n_slices: int = 0


@dataclass
class RtImageInfo:
    """What an RT Image (a DRR or a portal image) shows: the beam, its angles and the imager geometry."""

    path: Path
    label: str
    beam_number: int | None
    gantry_angle_deg: float | None
    collimator_angle_deg: float | None
    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, float]
    sad_mm: float | None
    sid_mm: float | None
    image_kind: str = ""
    referenced_plan_uid: str = ""


@dataclass
class Study:
    """The objects of one patient's study found in a folder; ``dose_on_ct`` is resampled to the CT."""

    ct: CtSeries
    structure_set: StructureSet | None = None
    dose: DoseGrid | None = None
    dose_on_ct: Volume | None = None
    plan: PlanSummary | None = None
    warnings: list[str] = field(default_factory=list)
    #: the phases of a 4D CT on the CT's frame of reference (in order), empty for a 3D study
    respiratory_phases: list[RespiratoryPhase] = field(default_factory=list)
    #: RT Images (DRRs, portal images) on the study's frame of reference or plan
    rt_images: list[RtImageInfo] = field(default_factory=list)
