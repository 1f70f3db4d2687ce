"""Read what a clinician reads off an RT Plan: prescription, fractions, beams, references."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom

from rtdeep.dicomrt.dataset import int_value, optional_float, read_rt_dataset, reading, text
from rtdeep.dicomrt.types import Beam, PlanSummary
from rtdeep.errors import PlanError

__all__ = ["read_rtplan"]


def _read(path: Path) -> pydicom.Dataset:
    return read_rt_dataset(path, "RTPLAN", "RT Plan", PlanError)


def _prescription(ds: pydicom.Dataset, path: Path) -> tuple[float | None, int | None]:
    """Total prescribed dose (Gy) and the target ROI number, from the TARGET dose references."""
    for item in ds.get("DoseReferenceSequence", []) or []:
        dose = optional_float(item, "TargetPrescriptionDose")
        if dose is not None and text(item, "DoseReferenceType") in ("TARGET", ""):
            if text(item, "ReferencedROINumber") == "":
                return dose, None
            return dose, int_value(item, "ReferencedROINumber", "(3006,0084)", path)
    return None, None


def _beam_meterset(ds: pydicom.Dataset, path: Path) -> tuple[dict[int, float], dict[int, float], int | None]:
    """BeamMeterset (MU) and BeamDose (Gy per fraction) per beam number, and the fractions planned."""
    meterset: dict[int, float] = {}
    beam_dose: dict[int, float] = {}
    fractions = None
    for group in ds.get("FractionGroupSequence", []) or []:
        if fractions is None and group.get("NumberOfFractionsPlanned") not in (None, ""):
            fractions = int_value(group, "NumberOfFractionsPlanned", "(300A,0078)", path)
        for ref in group.get("ReferencedBeamSequence", []) or []:
            number = int_value(ref, "ReferencedBeamNumber", "(300C,0006)", path)
            if optional_float(ref, "BeamMeterset") is not None:
                meterset[number] = meterset.get(number, 0.0) + float(ref.BeamMeterset)
            if optional_float(ref, "BeamDose") is not None:
                beam_dose[number] = beam_dose.get(number, 0.0) + float(ref.BeamDose)
    return meterset, beam_dose, fractions


def _beam(item: pydicom.Dataset, meterset: dict[int, float], path: Path) -> Beam:
    number = int_value(item, "BeamNumber", "(300A,00C0)", path, default=0)
    points = list(item.get("ControlPointSequence", []) or [])
    if not points:
        raise PlanError(f"beam {number} has no control points", path=path, tag="ControlPointSequence (300A,0111)")
    gantry: list[float] = []
    for point in points:
        angle = optional_float(point, "GantryAngle")
        if angle is not None and angle not in gantry:
            gantry.append(angle)
    first = points[0]
    energy = optional_float(first, "NominalBeamEnergy")
    isocenter = first.get("IsocenterPosition")
    return Beam(
        name=text(item, "BeamName") or f"Beam {number}",
        number=number,
        gantry_angles_deg=gantry,
        energy=f"{energy:g}" if energy is not None else "",
        radiation_type=text(item, "RadiationType"),
        meterset_mu=meterset.get(number, 0.0),
        isocenter_lps=tuple(float(v) for v in isocenter) if isocenter else (0.0, 0.0, 0.0),  # type: ignore[arg-type]
        collimator_angle_deg=optional_float(first, "BeamLimitingDeviceAngle") or 0.0,
        couch_angle_deg=optional_float(first, "PatientSupportAngle") or 0.0,
    )


def read_rtplan(path: str | os.PathLike[str]) -> PlanSummary:
    """Summarise an RT Plan.

    The prescription is the TargetPrescriptionDose of the first TARGET item of
    DoseReferenceSequence; without one, it is the sum of BeamDose (Gy per fraction) over the beams
    of FractionGroupSequence times NumberOfFractionsPlanned. Gantry angles are the distinct angles
    of each beam's control points (one for a static beam, several for an arc).

    Args:
        path: the RTPLAN file.

    Returns:
        A :class:`PlanSummary` (Gy, MU, degrees, LPS mm).

    Raises:
        PlanError: not an RT Plan, or a beam without control points.
        DicomReadError: truncated, or a malformed value (a beam number that is not a number...).
    """
    path = Path(path)
    ds = _read(path)
    with reading(path, "RT Plan"):
        return _summary(ds, path)


def _summary(ds: pydicom.Dataset, path: Path) -> PlanSummary:
    prescription_gy, target_roi = _prescription(ds, path)
    meterset, beam_dose, fractions = _beam_meterset(ds, path)
    if prescription_gy is None and beam_dose and fractions:
        prescription_gy = sum(beam_dose.values()) * fractions
    beams = [_beam(item, meterset, path) for item in ds.get("BeamSequence", []) or []]
    structure_sets = ds.get("ReferencedStructureSetSequence", []) or []
    doses = ds.get("ReferencedDoseSequence", []) or []
    return PlanSummary(
        label=text(ds, "RTPlanLabel") or text(ds, "RTPlanName"),
        prescription_gy=prescription_gy,
        fractions=fractions,
        beams=beams,
        frame_of_reference_uid=text(ds, "FrameOfReferenceUID"),
        sop_instance_uid=text(ds, "SOPInstanceUID"),
        referenced_structure_set_uid=text(structure_sets[0], "ReferencedSOPInstanceUID") if structure_sets else "",
        referenced_dose_uids=[text(item, "ReferencedSOPInstanceUID") for item in doses],
        target_roi_number=target_roi,
        path=path,
    )
