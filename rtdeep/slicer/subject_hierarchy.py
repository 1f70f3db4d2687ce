"""Subject hierarchy: place new nodes under the input's study; read and write DICOM identity.

Slicer's DICOM module loads a CT series as a volume node whose subject hierarchy item carries the
series' UIDs (item UID ``DICOM`` = SeriesInstanceUID, ``DICOMInstanceUID`` = the slices'
SOPInstanceUIDs, space-separated, in slice order) under a study item (UID = StudyInstanceUID) under a
patient item (UID = PatientID). :func:`ct_series_from_volume_node` reads that identity back into a
:class:`rtdeep.dicomrt.types.CtSeries`, which is what rtdeep's RTSTRUCT writer needs;
:func:`attach_dicom_series` writes it the same way (for volumes made outside the DICOM module).
"""

from __future__ import annotations

import slicer

from rtdeep.dicomrt.types import CtSeries, PatientInfo
from rtdeep.errors import SeriesError
from rtdeep.slicer.volume_node import volume_from_node

__all__ = [
    "attach_dicom_series",
    "ct_series_from_volume_node",
    "item_of",
    "place_beside",
    "sh_node",
    "study_item_of",
]

_C = slicer.vtkMRMLSubjectHierarchyConstants
_DICOM = _C.GetDICOMUIDName()
_INSTANCE_UIDS = _C.GetDICOMInstanceUIDName()
_FOR_ATTRIBUTE = _C.GetDICOMFrameOfReferenceUIDAttributeName()
#: attribute Slicer's DICOM scalar volume plugin sets on the volume node itself
NODE_INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"

_PATIENT_FIELDS = {
    "patient_name": _C.GetDICOMPatientNameAttributeName(),
    "patient_birth_date": _C.GetDICOMPatientBirthDateAttributeName(),
    "patient_sex": _C.GetDICOMPatientSexAttributeName(),
}
_STUDY_FIELDS = {
    "study_id": _C.GetDICOMStudyIDAttributeName(),
    "study_description": _C.GetDICOMStudyDescriptionAttributeName(),
    "study_date": _C.GetDICOMStudyDateAttributeName(),
    "study_time": _C.GetDICOMStudyTimeAttributeName(),
}


def sh_node(node: slicer.vtkMRMLNode) -> slicer.vtkMRMLSubjectHierarchyNode:
    """The subject hierarchy node of ``node``'s scene."""
    shn = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    if shn is None:
        raise SeriesError(f"the scene of node '{node.GetName()}' has no subject hierarchy")
    return shn


def item_of(node: slicer.vtkMRMLNode) -> int:
    """The subject hierarchy item of a data node, created under the scene item if it has none.

    The desktop application's subject hierarchy plugins create items for new nodes; without them
    (slicer-core) nodes have no item until one is made here.
    """
    shn = sh_node(node)
    item = shn.GetItemByDataNode(node)
    if not item:
        item = shn.CreateItem(shn.GetSceneItemID(), node)
    return item


def study_item_of(node: slicer.vtkMRMLNode) -> int:
    """The subject hierarchy study item above ``node`` (0 when it is not under a study)."""
    shn = sh_node(node)
    item = item_of(node)
    while item and item != shn.GetSceneItemID():
        if shn.GetItemLevel(item) == _C.GetDICOMLevelStudy():
            return item
        item = shn.GetItemParent(item)
    return 0


def place_beside(node: slicer.vtkMRMLNode, reference_node: slicer.vtkMRMLNode) -> int:
    """Move ``node`` under ``reference_node``'s parent item (its study, for a DICOM CT).

    Returns:
        The parent item ID (the scene item when the reference is at the top level).
    """
    shn = sh_node(node)
    parent = shn.GetItemParent(item_of(reference_node))
    item = item_of(node)
    if parent:
        shn.SetItemParent(item, parent)
    return parent


def attach_dicom_series(volume_node: slicer.vtkMRMLVolumeNode, ct: CtSeries) -> int:
    """Give a volume node the DICOM identity of ``ct`` the way Slicer's DICOM module does.

    Creates (or reuses) the patient and study items, moves the volume under the study and sets the
    series' UIDs. Returns the volume's subject hierarchy item.
    """
    shn = sh_node(volume_node)
    patient = ct.patient
    patient_item = shn.GetItemByUID(_DICOM, patient.patient_id) if patient.patient_id else 0
    if not patient_item:
        patient_item = shn.CreateSubjectItem(
            shn.GetSceneItemID(), patient.patient_name or patient.patient_id or "Patient"
        )
        shn.SetItemUID(patient_item, _DICOM, patient.patient_id)
        shn.SetItemAttribute(patient_item, _C.GetDICOMPatientIDAttributeName(), patient.patient_id)
        for field, attribute in _PATIENT_FIELDS.items():
            shn.SetItemAttribute(patient_item, attribute, getattr(patient, field))
    study_item = shn.GetItemByUID(_DICOM, patient.study_instance_uid) if patient.study_instance_uid else 0
    if not study_item:
        study_item = shn.CreateStudyItem(
            patient_item, patient.study_description or patient.study_date or "Study"
        )
        shn.SetItemUID(study_item, _DICOM, patient.study_instance_uid)
        shn.SetItemAttribute(
            study_item, _C.GetDICOMStudyInstanceUIDAttributeName(), patient.study_instance_uid
        )
        for field, attribute in _STUDY_FIELDS.items():
            shn.SetItemAttribute(study_item, attribute, getattr(patient, field))
    series_item = item_of(volume_node)
    shn.SetItemParent(series_item, study_item)
    shn.SetItemUID(series_item, _DICOM, ct.series_instance_uid)
    shn.SetItemUID(series_item, _INSTANCE_UIDS, " ".join(ct.sop_instance_uids))
    shn.SetItemAttribute(series_item, _C.GetDICOMSeriesModalityAttributeName(), "CT")
    shn.SetItemAttribute(series_item, _FOR_ATTRIBUTE, ct.frame_of_reference_uid)
    volume_node.SetAttribute(NODE_INSTANCE_UIDS_ATTRIBUTE, " ".join(ct.sop_instance_uids))
    volume_node.SetAttribute(_FOR_ATTRIBUTE, ct.frame_of_reference_uid)
    return series_item


def _frame_of_reference_from_dicom_database(instance_uids: list[str]) -> str:
    """FrameOfReferenceUID (0020,0052) of the first slice, from the desktop application's DICOM
    database (Slicer's DICOM module does not copy it into the subject hierarchy); "" without one."""
    database = getattr(slicer, "dicomDatabase", None)
    if database is None or not instance_uids:
        return ""
    path = database.fileForInstance(instance_uids[0])
    return str(database.fileValue(path, "0020,0052")) if path else ""


def ct_series_from_volume_node(volume_node: slicer.vtkMRMLVolumeNode) -> CtSeries:
    """The CT series identity (UIDs, patient, study) and voxels of a DICOM-loaded volume node.

    Raises:
        SeriesError: a UID is missing or the instance UIDs do not match the slice count; the
            message names the node and what is missing (load the CT through the DICOM module, or
            give the CT folder instead).
    """
    shn = sh_node(volume_node)
    item = item_of(volume_node)
    name = volume_node.GetName()
    volume = volume_from_node(volume_node)
    instance_uids = (
        shn.GetItemUID(item, _INSTANCE_UIDS) or volume_node.GetAttribute(NODE_INSTANCE_UIDS_ATTRIBUTE) or ""
    ).split()
    series_uid = shn.GetItemUID(item, _DICOM)
    frame_uid = (
        shn.GetItemAttribute(item, _FOR_ATTRIBUTE)
        or volume_node.GetAttribute(_FOR_ATTRIBUTE)
        or _frame_of_reference_from_dicom_database(instance_uids)
    )
    study_item = study_item_of(volume_node)
    study_uid = shn.GetItemUID(study_item, _DICOM) if study_item else ""
    missing = [
        label
        for label, value in (
            ("SeriesInstanceUID", series_uid),
            ("SOPInstanceUIDs of the slices", instance_uids),
            ("FrameOfReferenceUID", frame_uid),
            ("StudyInstanceUID", study_uid),
        )
        if not value
    ]
    if missing:
        raise SeriesError(
            f"volume node '{name}' lacks DICOM identity ({', '.join(missing)}): load the CT through the "
            "DICOM module or give the CT's DICOM folder"
        )
    if len(instance_uids) != volume.shape[0]:
        raise SeriesError(
            f"volume node '{name}' has {volume.shape[0]} slices but {len(instance_uids)} SOPInstanceUIDs: "
            "give the CT's DICOM folder"
        )
    patient_item = shn.GetItemParent(study_item)
    patient = PatientInfo(
        patient_id=shn.GetItemUID(patient_item, _DICOM)
        or shn.GetItemAttribute(patient_item, _C.GetDICOMPatientIDAttributeName()),
        study_instance_uid=study_uid,
        **{
            field: shn.GetItemAttribute(patient_item, attribute)
            for field, attribute in _PATIENT_FIELDS.items()
        },
        **{field: shn.GetItemAttribute(study_item, attribute) for field, attribute in _STUDY_FIELDS.items()},
    )
    return CtSeries(
        volume=volume,
        sop_instance_uids=instance_uids,
        series_instance_uid=series_uid,
        frame_of_reference_uid=frame_uid,
        patient=patient,
    )
