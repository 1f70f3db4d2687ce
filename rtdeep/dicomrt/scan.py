"""Find the DICOM objects in a folder by reading headers only.

:func:`scan_folder` walks a folder recursively, reads each file's header (never its pixel data)
and returns one :class:`DicomFileInfo` per DICOM file, plus a warning string for each file it
skipped (not DICOM, truncated, unreadable), naming the file.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.errors import InvalidDicomError

from rtdeep.errors import DicomReadError

__all__ = ["HEADER_TAGS", "DicomFileInfo", "read_header", "scan_folder"]

_PIXEL_MODALITIES = {"CT", "MR", "PT", "RTDOSE", "RTIMAGE", "CR", "DX", "NM", "US"}

#: Header keywords :func:`read_header` keeps (pixel data is never read).
HEADER_TAGS: tuple[str, ...] = (
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "FrameOfReferenceUID",
    "PatientID",
    "PatientName",
    "SeriesDescription",
    "StudyDescription",
    "StudyDate",
    "ReferencedFrameOfReferenceSequence",  # RTSTRUCT: frame of reference and referenced CT series
    "ReferencedRTPlanSequence",  # RTDOSE -> RTPLAN
    "ReferencedStructureSetSequence",  # RTPLAN -> RTSTRUCT
    "DoseSummationType",
)


@dataclass(frozen=True)
class DicomFileInfo:
    """What a header says about one DICOM file.

    ``frame_of_reference_uid`` comes from FrameOfReferenceUID (0020,0052), or for an RT Structure
    Set without it, from ReferencedFrameOfReferenceSequence (3006,0010). ``referenced_uids`` holds
    the series and SOP instance UIDs the object references (RTSTRUCT: CT series; RTDOSE: plan;
    RTPLAN: structure set), used to pair objects of one study.
    """

    path: Path
    modality: str
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str
    patient_id: str
    patient_name: str
    series_description: str = ""
    study_description: str = ""
    study_date: str = ""
    referenced_uids: tuple[str, ...] = ()
    dose_summation_type: str = ""


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _referenced_uids(ds: pydicom.Dataset) -> tuple[str, ...]:
    uids: list[str] = []
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        for study in frame.get("RTReferencedStudySequence", []) or []:
            for series in study.get("RTReferencedSeriesSequence", []) or []:
                uids.append(_text(series, "SeriesInstanceUID"))
    for keyword in ("ReferencedRTPlanSequence", "ReferencedStructureSetSequence"):
        for item in ds.get(keyword, []) or []:
            uids.append(_text(item, "ReferencedSOPInstanceUID"))
    return tuple(uid for uid in uids if uid)


def _frame_of_reference(ds: pydicom.Dataset) -> str:
    uid = _text(ds, "FrameOfReferenceUID")
    if not uid:
        for frame in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
            uid = _text(frame, "FrameOfReferenceUID")
            if uid:
                break
    return uid


def read_header(path: str | os.PathLike[str]) -> DicomFileInfo:
    """Read one file's header (no pixel data).

    Files without the Part-10 preamble are accepted when they parse as a dataset with a
    SOPInstanceUID or Modality (older RT files are written that way).

    Raises:
        DicomReadError: the file is not DICOM, or is truncated inside its header.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fp:
            try:
                ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
            except InvalidDicomError:
                ds = _read_forced(path)
            else:
                _check_complete(fp, os.fstat(fp.fileno()).st_size, ds, path)
    except DicomReadError:
        raise
    except (EOFError, OSError, ValueError, TypeError, KeyError, IndexError, struct.error) as error:
        raise DicomReadError(f"truncated or corrupt DICOM header ({error})", path=path) from error
    for keyword, tag in (("SOPInstanceUID", "(0008,0018)"), ("Modality", "(0008,0060)")):
        if not _text(ds, keyword):
            raise DicomReadError(f"no {keyword}: truncated or incomplete DICOM header", path=path,
                                 tag=f"{keyword} {tag}")
    return DicomFileInfo(
        path=path,
        modality=_text(ds, "Modality"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        frame_of_reference_uid=_frame_of_reference(ds),
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        series_description=_text(ds, "SeriesDescription"),
        study_description=_text(ds, "StudyDescription"),
        study_date=_text(ds, "StudyDate"),
        referenced_uids=_referenced_uids(ds),
        dose_summation_type=_text(ds, "DoseSummationType"),
    )


def _check_complete(fp: BinaryIO, size: int, ds: pydicom.Dataset, path: Path) -> None:
    """Raise DicomReadError if the file ends before its header or its pixel data does.

    pydicom stops quietly at the end of a short file; here the read position tells: past the end
    (a skipped value longer than the rest of the file), or stopped at PixelData whose declared
    length exceeds what is left, or no PixelData at all in an image object.
    """
    end = fp.tell()
    if end > size:
        raise DicomReadError(f"truncated file: header runs {end - size} bytes past the end of the file", path=path)
    if end == size:
        if _text(ds, "Modality") in _PIXEL_MODALITIES:
            raise DicomReadError("truncated file: no pixel data", path=path, tag="PixelData (7FE0,0010)")
        return
    transfer_syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if transfer_syntax is None or not transfer_syntax.is_little_endian:
        return
    header = fp.read(12)
    if len(header) < 8:
        raise DicomReadError("truncated file inside the PixelData header", path=path, tag="PixelData (7FE0,0010)")
    if transfer_syntax.is_implicit_VR:
        length, header_size = struct.unpack("<I", header[4:8])[0], 8
    elif header[4:6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"UN"):
        length, header_size = struct.unpack("<I", header[8:12])[0], 12
    else:
        length, header_size = struct.unpack("<H", header[6:8])[0], 8
    if length != 0xFFFFFFFF and end + header_size + length > size:
        raise DicomReadError(
            f"truncated file: PixelData declares {length} bytes, {size - end - header_size} present",
            path=path, tag="PixelData (7FE0,0010)")


def _read_forced(path: Path) -> pydicom.Dataset:
    """A file without the DICOM preamble: accept it only if it really parses as DICOM."""
    try:
        with warnings.catch_warnings():  # pydicom's guesses about a random file's encoding are noise here
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS), force=True)
        ok = bool(_text(ds, "SOPInstanceUID") or _text(ds, "Modality"))
    except Exception as error:
        raise DicomReadError(f"not a DICOM file, or truncated ({type(error).__name__}: {error})", path=path) from error
    if not ok:
        raise DicomReadError("not a DICOM file (no DICM preamble, no SOPInstanceUID)", path=path)
    return ds


def scan_folder(folder: str | os.PathLike[str]) -> tuple[list[DicomFileInfo], list[str]]:
    """Read the header of every file under ``folder`` (recursively, sorted by path).

    Args:
        folder: a directory.

    Returns:
        ``(infos, skipped)``: one :class:`DicomFileInfo` per DICOM file, and one warning string per
        skipped file (each names the file and why: not DICOM, truncated header).

    Raises:
        FileNotFoundError / NotADirectoryError: ``folder`` is missing or a file.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: folder not found")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    infos: list[DicomFileInfo] = []
    skipped: list[str] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name.startswith(".") or path.name == "DICOMDIR":
            continue
        try:
            infos.append(read_header(path))
        except DicomReadError as error:
            skipped.append(f"skipped {error}")
    return infos, skipped
