"""Find the DICOM objects in a folder by reading headers only.

:func:`scan_folder` walks a folder recursively, reads each file's header (never its pixel data)
and returns one :class:`DicomFileInfo` per DICOM file, plus a warning string for each file it
skipped (not DICOM, truncated, unreadable), naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from rtdeep.dicomrt.dataset import check_complete, quiet_pydicom, reading
from rtdeep.dicomrt.dataset import text as _text
from rtdeep.errors import DicomReadError, NotDicomError

__all__ = ["HEADER_TAGS", "DicomFileInfo", "folder_files", "read_header", "scan_folder"]

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


def folder_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Every file under ``folder`` (recursively, sorted), hidden names and DICOMDIR left out.

    Symbolic links are followed; a link back to a folder already on the path is an error, as is a
    folder or file that cannot be read (a folder reader must never miss files silently).

    Raises:
        FileNotFoundError / NotADirectoryError: ``folder`` is missing or a file.
        DicomReadError: a symbolic-link loop, an unreadable folder or file.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: folder not found")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    files: list[Path] = []

    def visit(directory: Path, ancestors: tuple[str, ...]) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except PermissionError:
            raise DicomReadError("folder cannot be read (permission denied)", path=directory) from None
        except OSError as error:
            raise DicomReadError(f"folder cannot be read ({error.strerror or error})", path=directory) from None
        for entry in entries:
            if entry.name.startswith(".") or entry.name == "DICOMDIR":
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError as error:
                raise DicomReadError(f"cannot follow this path ({error.strerror or error})", path=path) from None
            if is_dir:
                real = os.path.realpath(path)
                if real in ancestors:
                    raise DicomReadError(f"symbolic link loop: it leads back to {real}", path=path)
                visit(path, (*ancestors, real))
            elif is_file:
                if not os.access(path, os.R_OK):
                    raise DicomReadError("file cannot be read (permission denied)", path=path)
                files.append(path)
            elif entry.is_symlink():
                raise DicomReadError(f"broken symbolic link (to {os.readlink(path)})", path=path)

    visit(folder, (os.path.realpath(folder),))
    return files


def read_header(path: str | os.PathLike[str]) -> DicomFileInfo:
    """Read one file's header (no pixel data) after checking the whole file is there.

    Files without the Part-10 preamble are accepted when they parse as a dataset with a
    SOPInstanceUID or Modality (older RT files are written that way).

    Raises:
        NotDicomError: the file is not DICOM.
        DicomReadError: the file is truncated or corrupt, lacks SOPInstanceUID or Modality, or
            cannot be read.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        fp = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as error:  # unreadable, vanished, a broken link: named like any other bad file
        raise DicomReadError(f"file cannot be read ({error.strerror or error})", path=path) from error
    if size == 0:
        fp.close()
        raise DicomReadError("empty file (0 bytes): an interrupted copy?", path=path)
    try:
        with fp, quiet_pydicom():
            try:
                ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
            except InvalidDicomError:
                ds = _read_forced(path)
    except DicomReadError:
        raise
    except Exception as error:
        raise DicomReadError(f"truncated or corrupt DICOM header ({type(error).__name__}: {error})",
                             path=path) from error
    check_complete(path, ds)
    with reading(path, "DICOM header"):
        return _info(path, ds)


def _info(path: Path, ds: pydicom.Dataset) -> DicomFileInfo:
    for keyword, tag in (("SOPInstanceUID", "(0008,0018)"), ("Modality", "(0008,0060)")):
        if not _text(ds, keyword):
            raise DicomReadError(f"no {keyword}: truncated or incomplete DICOM header", path=path,
                                 tag=f"{keyword} {tag}")
    if _text(ds, "Modality") in _PIXEL_MODALITIES and not _has_pixel_data(path):
        raise DicomReadError("image without pixel data (truncated file?)", path=path, tag="PixelData (7FE0,0010)")
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


def _has_pixel_data(path: Path) -> bool:
    with quiet_pydicom():
        ds = pydicom.dcmread(path, force=True, defer_size=256, specific_tags=["PixelData", "FloatPixelData",
                                                                             "DoubleFloatPixelData"])
    return any(keyword in ds for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def _read_forced(path: Path) -> pydicom.Dataset:
    """A file without the DICOM preamble: accept it only if it really parses as DICOM."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS), force=True)
        ok = bool(_text(ds, "SOPInstanceUID") or _text(ds, "Modality"))
    except Exception as error:
        raise NotDicomError(f"not a DICOM file ({type(error).__name__}: {error})", path=path) from error
    if not ok:
        raise NotDicomError("not a DICOM file (no DICM preamble, no SOPInstanceUID)", path=path)
    return ds


def scan_folder(folder: str | os.PathLike[str]) -> tuple[list[DicomFileInfo], list[str]]:
    """Read the header of every file under ``folder`` (recursively, sorted by path).

    Files that are not DICOM at all are skipped with a warning; a DICOM file that is truncated or
    corrupt is an error (reading the study without it would give a wrong result).

    Args:
        folder: a directory.

    Returns:
        ``(infos, skipped)``: one :class:`DicomFileInfo` per DICOM file, and one warning string per
        skipped (non-DICOM) file, naming it.

    Raises:
        FileNotFoundError / NotADirectoryError: ``folder`` is missing or a file.
        DicomReadError: a truncated or corrupt DICOM file, a symbolic-link loop, an unreadable folder.
    """
    infos: list[DicomFileInfo] = []
    skipped: list[str] = []
    for path in folder_files(folder):
        try:
            infos.append(read_header(path))
        except NotDicomError as error:
            skipped.append(f"skipped {error}")
    return infos, skipped
