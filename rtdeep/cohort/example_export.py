"""A messy clinical export built from phantoms, for tests and for trying ``rtdeep cohort``.

It holds what real exports hold: folders nested by patient, date and series; structure names in
clinic spellings (``Lt Lung``, ``LUNG_L``, ``L Lung``, ``Lung Left``, ``Cord``, ``Spinal Cord``,
``Oesophagus``, ``HEART``) beside structures that must never be taken for organs (``Lungs-GTV``,
``Lung-CTV``, ``SpinalCord_PRV05``, ``z_ring``, a couch and a marker); a second CT series, an MR
series, an RTSTRUCT on another frame of reference, a study without structures, duplicate files and
files that are not DICOM. Patients (thorax phantoms of the small grid):

========  ==========================================================================================
EXP-01    CT split over nested folders, MR series, renamed organs plus every excluded kind, duplicates
EXP-02    second CT series (no structures), other spellings, no heart delineated, ``Lung-CTV``
EXP-03    a second RTSTRUCT on another frame of reference, other spellings
EXP-04    CT only: a study without structures
========  ==========================================================================================
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from rtdeep.dicomrt.uids import make_uid

__all__ = ["EXAMPLE_RENAMES", "write_example_export"]

#: patient -> {phantom ROI name -> name in the export} (None: the ROI is removed)
EXAMPLE_RENAMES: dict[str, dict[str, str | None]] = {
    "EXP-01": {"Lung_L": "Lt Lung", "Lung_R": "RIGHT LUNG", "Heart": "HEART", "Esophagus": "Oesophagus",
               "SpinalCord": "Cord"},
    "EXP-02": {"Lung_L": "LUNG_L", "Lung_R": "Rt Lung", "Heart": None, "Esophagus": "Esophagus",
               "SpinalCord": "Spinal Cord"},
    "EXP-03": {"Lung_L": "L Lung", "Lung_R": "Lung Right", "Heart": "Heart", "Esophagus": "Oesophagus",
               "SpinalCord": "SpinalCord"},
}


def _rewrite_names(path: Path, renames: Mapping[str, str | None]) -> Dataset:
    ds = pydicom.dcmread(path)
    removed = {int(item.ROINumber) for item in ds.StructureSetROISequence if renames.get(item.ROIName, "") is None}
    for item in ds.StructureSetROISequence:
        item.ROIName = renames.get(item.ROIName) or item.ROIName
    ds.StructureSetROISequence = [i for i in ds.StructureSetROISequence if int(i.ROINumber) not in removed]
    ds.ROIContourSequence = [i for i in ds.ROIContourSequence if int(i.ReferencedROINumber) not in removed]
    ds.RTROIObservationsSequence = [i for i in ds.RTROIObservationsSequence
                                    if int(i.ReferencedROINumber) not in removed]
    return ds


def _add_roi(ds: Dataset, name: str, interpreted_type: str, like: str | None, point: bool = False) -> None:
    """Append an ROI whose contours copy those of ROI ``like`` (or one point, for a marker)."""
    number = max(int(item.ROINumber) for item in ds.StructureSetROISequence) + 1
    source = next(item for item in ds.StructureSetROISequence if item.ROIName == (like or item.ROIName))
    definition = copy.deepcopy(source)
    definition.ROINumber, definition.ROIName, definition.ROIGenerationAlgorithm = number, name, "MANUAL"
    ds.StructureSetROISequence.append(definition)
    contour_item = copy.deepcopy(next(item for item in ds.ROIContourSequence
                                      if int(item.ReferencedROINumber) == int(source.ROINumber)))
    contour_item.ReferencedROINumber = number
    if point:
        first = contour_item.ContourSequence[0]
        first.ContourGeometricType, first.NumberOfContourPoints = "POINT", 1
        first.ContourData = list(first.ContourData)[:3]
        contour_item.ContourSequence = [first]
    ds.ROIContourSequence.append(contour_item)
    observation = Dataset()
    observation.ObservationNumber = number
    observation.ReferencedROINumber = number
    observation.RTROIInterpretedType = interpreted_type
    observation.ROIInterpreter = ""
    ds.RTROIObservationsSequence.append(observation)


def _copy_series(ct_dir: Path, out_dir: Path, seed: str, **changes: str) -> None:
    """Write a copy of a CT series with new series/SOP UIDs and the given attribute changes."""
    out_dir.mkdir(parents=True)
    series_uid = make_uid(seed, "series")
    for number, path in enumerate(sorted(ct_dir.glob("*.dcm")), start=1):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = make_uid(seed, "sop", number)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        if "SOPClassUID" in changes:
            ds.file_meta.MediaStorageSOPClassUID = changes["SOPClassUID"]
        ds.save_as(out_dir / f"IM{number:05d}", enforce_file_format=True)


def write_example_export(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write the example export (about 25 MB, a few seconds) into the new folder ``out_dir``.

    Returns:
        ``out_dir``.
    """
    from rtdeep.fileio import OutputExistsError
    from rtdeep.phantom import generate_patient
    from rtdeep.phantom.patient import write_patient

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise OutputExistsError("example export folder exists and is not empty", path=out_dir)
    work = out_dir / ".phantoms"
    for index, patient_id in enumerate(EXAMPLE_RENAMES, start=1):
        patient = generate_patient("thorax", index, seed, grid="small")
        patient.patient_info.patient_id = patient_id
        write_patient(patient, work)
        folder = work / patient.patient_id
        target = out_dir / patient_id / "20240101"
        ds = _rewrite_names(folder / "RS.dcm", EXAMPLE_RENAMES[patient_id])
        if patient_id == "EXP-01":
            _add_roi(ds, "Lungs-GTV", "ORGAN", "Lt Lung")
            _add_roi(ds, "SpinalCord_PRV05", "AVOIDANCE", "Cord")
            _add_roi(ds, "z_ring", "ORGAN", "External")
            _add_roi(ds, "CouchSurface", "SUPPORT", "External")
            _add_roi(ds, "Marker1", "MARKER", "GTV", point=True)
        if patient_id == "EXP-02":
            _add_roi(ds, "Lung-CTV", "ORGAN", "LUNG_L")
        (target / "RT").mkdir(parents=True)
        ds.save_as(target / "RT" / "RS1.dcm", enforce_file_format=True)
        shutil.copy(folder / "RP.dcm", target / "RT" / "RP1.dcm")
        shutil.copy(folder / "RD.dcm", target / "RT" / "RD1.dcm")
        ct_files = sorted((folder / "CT").glob("*.dcm"))
        if patient_id == "EXP-01":
            half = len(ct_files) // 2
            for number, path in enumerate(ct_files):
                sub = target / "CT" / ("part1" if number < half else "part2/deeper")
                sub.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, sub / path.name)
            _copy_series(folder / "CT", target / "MR_T1", f"{patient_id}/mr", Modality="MR",
                         SOPClassUID="1.2.840.10008.5.1.4.1.1.4", SeriesDescription="T1 post contrast")
            backup = out_dir / patient_id / "backup"
            backup.mkdir()
            shutil.copy(ct_files[0], backup / "copy_of_slice.dcm")
            shutil.copy(target / "RT" / "RS1.dcm", backup / "RS_copy.dcm")
            (out_dir / patient_id / "notes.txt").write_text("planning notes, not DICOM\n")
            (backup / "broken.dcm").write_bytes(ct_files[1].read_bytes()[:300])
        else:
            shutil.copytree(folder / "CT", target / "CT")
        if patient_id == "EXP-02":
            _copy_series(folder / "CT", target / "CT_repeat", f"{patient_id}/ct2",
                         FrameOfReferenceUID=make_uid(patient_id, "for2"), SeriesDescription="Repeat CT")
        if patient_id == "EXP-03":
            other = pydicom.dcmread(target / "RT" / "RS1.dcm")
            other.SOPInstanceUID = make_uid(patient_id, "rs-other")
            other.file_meta.MediaStorageSOPInstanceUID = other.SOPInstanceUID
            other.StructureSetLabel = "OTHER_FOR"
            other_frame = make_uid(patient_id, "for-other")
            other.FrameOfReferenceUID = other_frame
            other.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = other_frame
            study = other.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
            study.RTReferencedSeriesSequence[0].SeriesInstanceUID = make_uid(patient_id, "absent-series")
            for item in other.StructureSetROISequence:
                item.ReferencedFrameOfReferenceUID = other_frame
            other.save_as(target / "RT" / "RS_other_frame.dcm", enforce_file_format=True)
    # EXP-04: a CT without structures (EXP-03's images under a new patient, study and frame)
    _copy_series(out_dir / "EXP-03" / "20240101" / "CT", out_dir / "EXP-04" / "CT", "EXP-04/ct",
                 PatientID="EXP-04", PatientName="EXP^04", StudyInstanceUID=make_uid("EXP-04", "study"),
                 FrameOfReferenceUID=make_uid("EXP-04", "for"))
    shutil.rmtree(work)
    return out_dir
