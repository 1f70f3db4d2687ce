"""Pieces shared by the DICOM writers: file meta, DS formatting, study attributes, safe saving.

Private to :mod:`rtdeep.dicomrt` (the ``*_writer`` modules); not a public API.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from rtdeep import __version__
from rtdeep.dicomrt.types import CtSeries, PatientInfo
from rtdeep.dicomrt.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from rtdeep.errors import ValidationError
from rtdeep.fileio import atomic_write

__all__ = [
    "PATIENT_STUDY_KEYWORDS",
    "copy_patient_study_from_ct",
    "ct_reference_header",
    "ds_multi_value_bytes",
    "ds_value_texts",
    "format_ds",
    "new_dataset",
    "now_date_time",
    "save_dataset",
    "set_equipment",
    "set_patient_study",
]

#: Patient and General Study module attributes copied verbatim from the referenced CT.
PATIENT_STUDY_KEYWORDS = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDsSequence",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "PatientComments",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)

_MAX_DS_CHARS = 16


def format_ds(value: float, significant: int = 12) -> str:
    """A decimal string of at most 16 characters for ``value`` (never Python's float repr).

    Uses up to ``significant`` significant digits (exponent notation for very small or large
    values, which DS allows), dropping digits until the string fits.

    Raises:
        ValidationError: a value that is not finite.
    """
    value = float(value)
    if not np.isfinite(value):
        raise ValidationError(f"cannot encode non-finite value {value} as DS")
    for digits in range(significant, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= _MAX_DS_CHARS:
            return "0" if text == "-0" else text
    raise ValidationError(f"cannot encode {value} as a DS of 16 characters")


def ds_value_texts(values: np.ndarray, decimals: int = 3) -> list[str]:
    """Format many numbers as DS texts with fixed ``decimals`` (each at most 16 characters).

    Contour coordinates repeat a lot (vertices sit on half-voxel positions), so each distinct value
    is formatted once: several times faster than formatting every value.

    Raises:
        ValidationError: a value with ``|value| >= 1e11`` (it would not fit 16 characters) or not finite.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return []
    if not np.all(np.isfinite(values)) or float(np.abs(values).max()) >= 1e11:
        raise ValidationError("coordinate not finite or too large to encode as DS (|value| >= 1e11 mm)")
    unique, inverse = np.unique(values, return_inverse=True)
    fmt = f"%.{decimals}f"
    texts = [fmt % v for v in unique.tolist()]
    return [texts[i] for i in inverse.tolist()]


def ds_multi_value_bytes(values: np.ndarray, decimals: int = 3, texts: list[str] | None = None) -> bytes:
    """Encode many numbers as one backslash-separated DS value (even length, space padded).

    Args:
        values: the numbers (ignored when ``texts`` is given).
        decimals: fixed decimals.
        texts: already formatted values (see :func:`ds_value_texts`).
    """
    if texts is None:
        texts = ds_value_texts(values, decimals)
    data = "\\".join(texts).encode("ascii")
    if len(data) % 2:
        data += b" "
    return data


def new_dataset(sop_class_uid: str, sop_instance_uid: str, *, implicit_vr: bool = False) -> Dataset:
    """A dataset with Part-10 file meta and the SOP Common identifiers filled in."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = sop_class_uid
    dataset.SOPInstanceUID = sop_instance_uid
    return dataset


def set_patient_study(dataset: Dataset, patient: PatientInfo) -> None:
    """Fill the Patient and General Study modules from ``patient`` (Type 2 attributes present even if empty)."""
    dataset.SpecificCharacterSet = "ISO_IR 192" if _needs_utf8(patient) else "ISO_IR 100"
    dataset.PatientName = patient.patient_name
    dataset.PatientID = patient.patient_id
    dataset.PatientBirthDate = patient.patient_birth_date
    dataset.PatientSex = patient.patient_sex
    dataset.StudyInstanceUID = patient.study_instance_uid
    dataset.StudyDate = patient.study_date
    dataset.StudyTime = patient.study_time
    dataset.ReferringPhysicianName = patient.referring_physician_name
    dataset.StudyID = patient.study_id
    dataset.AccessionNumber = patient.accession_number
    if patient.study_description:
        dataset.StudyDescription = patient.study_description


def _needs_utf8(patient: PatientInfo) -> bool:
    text = "".join(str(v) for v in vars(patient).values())
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return True
    return False


def ct_reference_header(ct: CtSeries) -> Dataset | None:
    """The header of the CT's first file (no pixels), or None for an in-memory series."""
    for path in ct.files[:1]:
        if Path(path).is_file():
            return pydicom.dcmread(path, stop_before_pixels=True)
    return None


def copy_patient_study_from_ct(dataset: Dataset, ct: CtSeries, header: Dataset | None) -> None:
    """Copy patient and study attributes verbatim from the CT file header (else from ``ct.patient``).

    Type 2 attributes missing from the CT are added empty.
    """
    if header is None:
        set_patient_study(dataset, ct.patient)
        return
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in header:
            dataset[Tag(keyword)] = copy.deepcopy(header[keyword])
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        if keyword not in dataset:
            setattr(dataset, keyword, "")
    if "StudyInstanceUID" not in dataset:
        dataset.StudyInstanceUID = ct.patient.study_instance_uid


def set_equipment(dataset: Dataset) -> None:
    """General Equipment module: rtdeep as manufacturer and software."""
    dataset.Manufacturer = "rtdeep"
    dataset.ManufacturerModelName = "rtdeep"
    dataset.SoftwareVersions = __version__


def now_date_time(fixed: bool) -> tuple[str, str]:
    """Today's DICOM date and time, or a fixed pair when output must be reproducible."""
    if fixed:
        return "20000101", "000000"
    now = dt.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def save_dataset(dataset: Dataset, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``dataset`` as a Part-10 file through :func:`rtdeep.fileio.atomic_write`."""

    def write(tmp_path: Path) -> None:
        dataset.save_as(tmp_path, enforce_file_format=True)

    return atomic_write(path, write, overwrite=overwrite)


def new_rt_object(
    sop_class_uid: str, modality: str, ct: CtSeries, uid_seed: object | None, *, implicit_vr: bool = False
) -> tuple[Dataset, str, str]:
    """A new RT object (RTSTRUCT, RTDOSE, RTPLAN) in the CT's study and frame of reference.

    Sets the SOP, series, patient/study (copied from the CT), equipment and frame-of-reference
    attributes every RT object shares. UIDs are deterministic when ``uid_seed`` is given.

    Returns:
        (dataset, creation date, creation time).
    """
    from rtdeep.dicomrt.uids import make_uid

    seeded = uid_seed is not None
    kind = modality.lower()
    sop_uid = make_uid(uid_seed, kind, "instance") if seeded else make_uid()
    series_uid = make_uid(uid_seed, kind, "series") if seeded else make_uid()
    header = ct_reference_header(ct)
    dataset = new_dataset(sop_class_uid, sop_uid, implicit_vr=implicit_vr)
    copy_patient_study_from_ct(dataset, ct, header)
    date, time = now_date_time(seeded)
    dataset.InstanceCreationDate = date
    dataset.InstanceCreationTime = time
    dataset.Modality = modality
    dataset.SeriesInstanceUID = series_uid
    dataset.SeriesNumber = 1
    dataset.OperatorsName = ""
    dataset.FrameOfReferenceUID = ct.frame_of_reference_uid
    dataset.PositionReferenceIndicator = header.get("PositionReferenceIndicator", "") if header is not None else ""
    set_equipment(dataset)
    return dataset, date, time
