"""Write a :class:`~rtdeep.dicomrt.types.PlanSummary` as an RT Plan (geometry PATIENT).

A minimal but complete external-beam plan: prescription (DoseReferenceSequence with
TargetPrescriptionDose), one patient setup (HFS), one fraction group with each beam's meterset,
and the beams. A beam with one gantry angle is STATIC with two control points; a beam with several
is an arc (DYNAMIC) with one control point per angle and the meterset spread evenly. Jaws are a
fixed 10 x 10 cm (the summary carries no field shapes). No tolerance table.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydicom.dataset import Dataset

from rtdeep.dicomrt._writer_common import (
    format_ds,
    new_rt_object,
    save_dataset,
)
from rtdeep.dicomrt.types import Beam, CtSeries, PlanSummary
from rtdeep.dicomrt.uids import RT_PLAN_STORAGE, RT_STRUCTURE_SET_STORAGE, make_uid
from rtdeep.errors import PlanError
from rtdeep.fileio import ensure_new_path

__all__ = ["write_rtplan"]

_JAW_HALF_WIDTH_MM = 50.0


def write_rtplan(
    plan: PlanSummary,
    ct: CtSeries,
    out_path: str | os.PathLike[str],
    *,
    structure_set_uid: str,
    uid_seed: object | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``plan`` as an RT Plan on the CT's frame of reference.

    Args:
        plan: label (at most 16 characters), prescription in Gy, fractions, beams (angles in
            degrees, meterset in MU, isocentre in LPS mm).
        ct: the planning CT (patient, study and frame of reference are copied from it).
        out_path: the new file.
        structure_set_uid: SOPInstanceUID of the RT Structure Set the plan references.
        uid_seed: when given, UIDs and dates are deterministic.
        overwrite: replace an existing file (default: refuse).

    Returns:
        The written path.

    Raises:
        PlanError: a label longer than 16 characters, a beam without gantry angles, or duplicate
            beam numbers.
    """
    out_path = ensure_new_path(out_path, overwrite)
    if not plan.label or len(plan.label) > 16:
        raise PlanError(f"plan label '{plan.label}' must be 1 to 16 characters", path=out_path,
                        tag="RTPlanLabel (300A,0002)")
    if len({beam.number for beam in plan.beams}) != len(plan.beams):
        raise PlanError("beam numbers must be unique", path=out_path, tag="BeamNumber (300A,00C0)")
    for beam in plan.beams:
        if not beam.gantry_angles_deg:
            raise PlanError(f"beam '{beam.name}' has no gantry angle", path=out_path)
    if not structure_set_uid:
        raise PlanError("a structure set UID is required (RT Plan geometry PATIENT)", path=out_path,
                        tag="ReferencedStructureSetSequence (300C,0060)")

    dataset, date, time = new_rt_object(RT_PLAN_STORAGE, "RTPLAN", ct, uid_seed)
    dataset.RTPlanLabel = plan.label
    dataset.RTPlanDate = date
    dataset.RTPlanTime = time
    dataset.RTPlanGeometry = "PATIENT"
    structure_set = Dataset()
    structure_set.ReferencedSOPClassUID = RT_STRUCTURE_SET_STORAGE
    structure_set.ReferencedSOPInstanceUID = structure_set_uid
    dataset.ReferencedStructureSetSequence = [structure_set]
    dataset.DoseReferenceSequence = [_dose_reference(plan, uid_seed)]
    setup = Dataset()
    setup.PatientSetupNumber = 1
    setup.PatientPosition = "HFS"
    dataset.PatientSetupSequence = [setup]
    dataset.FractionGroupSequence = [_fraction_group(plan)]
    dataset.BeamSequence = [_beam_item(beam) for beam in plan.beams]
    dataset.ApprovalStatus = "UNAPPROVED"
    return save_dataset(dataset, out_path, overwrite=overwrite)


def _dose_reference(plan: PlanSummary, uid_seed: object | None) -> Dataset:
    item = Dataset()
    item.DoseReferenceNumber = 1
    item.DoseReferenceUID = make_uid(uid_seed, "rtplan", "dose-reference") if uid_seed is not None else make_uid()
    if plan.target_roi_number:
        item.DoseReferenceStructureType = "VOLUME"
        item.ReferencedROINumber = plan.target_roi_number
    else:
        item.DoseReferenceStructureType = "SITE"
    item.DoseReferenceDescription = "Target"
    item.DoseReferenceType = "TARGET"
    if plan.prescription_gy is not None:
        item.TargetPrescriptionDose = format_ds(plan.prescription_gy)
    return item


def _fraction_group(plan: PlanSummary) -> Dataset:
    group = Dataset()
    group.FractionGroupNumber = 1
    group.NumberOfFractionsPlanned = plan.fractions if plan.fractions else None
    group.NumberOfBeams = len(plan.beams)
    group.NumberOfBrachyApplicationSetups = 0
    references = []
    for beam in plan.beams:
        reference = Dataset()
        reference.ReferencedBeamNumber = beam.number
        reference.BeamMeterset = format_ds(beam.meterset_mu)
        references.append(reference)
    group.ReferencedBeamSequence = references
    return group


def _energy_mv(energy: str) -> str:
    match = re.match(r"\s*([0-9]+(?:\.[0-9]+)?)", str(energy))
    return match.group(1) if match else "6"


def _rotation_direction(angles: list[float]) -> str:
    if len(angles) < 2:
        return "NONE"
    step = (angles[1] - angles[0]) % 360.0
    return "CW" if 0 < step <= 180 else "CC"


def _beam_item(beam: Beam) -> Dataset:
    angles = [float(a) % 360.0 for a in beam.gantry_angles_deg]
    is_arc = len(angles) > 1
    control_angles = angles if is_arc else angles * 2
    n_points = len(control_angles)

    item = Dataset()
    item.BeamNumber = beam.number
    item.BeamName = beam.name
    item.BeamType = "DYNAMIC" if is_arc else "STATIC"
    item.RadiationType = beam.radiation_type
    item.TreatmentMachineName = "RTDEEP_LINAC"
    item.PrimaryDosimeterUnit = "MU"
    item.SourceAxisDistance = "1000"
    jaws = []
    for device in ("ASYMX", "ASYMY"):
        jaw = Dataset()
        jaw.RTBeamLimitingDeviceType = device
        jaw.NumberOfLeafJawPairs = 1
        jaws.append(jaw)
    item.BeamLimitingDeviceSequence = jaws
    item.ReferencedPatientSetupNumber = 1
    item.TreatmentDeliveryType = "TREATMENT"
    item.NumberOfWedges = 0
    item.NumberOfCompensators = 0
    item.NumberOfBoli = 0
    item.NumberOfBlocks = 0
    item.FinalCumulativeMetersetWeight = "1"
    item.NumberOfControlPoints = n_points
    direction = _rotation_direction(angles)
    points = []
    for index, angle in enumerate(control_angles):
        point = Dataset()
        point.ControlPointIndex = index
        point.CumulativeMetersetWeight = format_ds(index / (n_points - 1))
        if index == 0:
            point.NominalBeamEnergy = _energy_mv(beam.energy)
            point.GantryAngle = format_ds(angle)
            point.GantryRotationDirection = direction
            positions = []
            for device in ("ASYMX", "ASYMY"):
                position = Dataset()
                position.RTBeamLimitingDeviceType = device
                position.LeafJawPositions = [format_ds(-_JAW_HALF_WIDTH_MM), format_ds(_JAW_HALF_WIDTH_MM)]
                positions.append(position)
            point.BeamLimitingDevicePositionSequence = positions
            point.BeamLimitingDeviceAngle = format_ds(beam.collimator_angle_deg % 360.0)
            point.BeamLimitingDeviceRotationDirection = "NONE"
            point.PatientSupportAngle = format_ds(beam.couch_angle_deg % 360.0)
            point.PatientSupportRotationDirection = "NONE"
            point.TableTopEccentricAngle = "0"
            point.TableTopEccentricRotationDirection = "NONE"
            point.TableTopVerticalPosition = None
            point.TableTopLongitudinalPosition = None
            point.TableTopLateralPosition = None
            point.IsocenterPosition = [format_ds(v) for v in beam.isocenter_lps]
        elif is_arc:
            point.GantryAngle = format_ds(angle)
            point.GantryRotationDirection = direction if index < n_points - 1 else "NONE"
        points.append(point)
    item.ControlPointSequence = points
    return item
