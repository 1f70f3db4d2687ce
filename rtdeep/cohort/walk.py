"""Index a clinic's export folder: every file's DICOM header once, duplicates and non-DICOM files noted.

The folder may have any shape (nested, several patients, studies and series in one folder). Only
headers are read (never pixel data), each file once; a file whose SOPInstanceUID was already seen
is a duplicate (the first path by sorted order is kept).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from rtdeep.dicomrt.scan import DicomFileInfo, read_header
from rtdeep.errors import DicomReadError
from rtdeep.progress import progress

__all__ = ["ExportIndex", "index_export", "read_roi_names"]


@dataclass
class ExportIndex:
    """What an export folder holds.

    Attributes:
        root: the folder that was walked.
        files: one header per unique SOP instance, in path order.
        duplicates: ``(duplicate path, path kept)`` for files repeating a SOPInstanceUID.
        skipped: ``(path, reason)`` for files that are not DICOM or whose header is unreadable.
    """

    root: Path
    files: list[DicomFileInfo] = field(default_factory=list)
    duplicates: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _all_files(root: Path, unreadable: list[tuple[Path, str]]) -> list[Path]:
    found = []

    def note(error: OSError) -> None:  # an unreadable folder is listed, not skipped silently
        unreadable.append((Path(error.filename or root), f"unreadable folder ({error.strerror})"))

    for folder, dirs, names in os.walk(root, onerror=note):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(folder) / name for name in names if not name.startswith(".") and name != "DICOMDIR")
    return sorted(found)


def index_export(root: str | os.PathLike[str]) -> ExportIndex:
    """Read the header of every file under ``root`` (recursively), with a progress bar on stderr.

    Raises:
        FileNotFoundError / NotADirectoryError: ``root`` is missing or not a folder.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: folder not found")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    index = ExportIndex(root)
    first_path: dict[str, Path] = {}
    paths = _all_files(root, index.skipped)
    for path in progress(paths, "reading headers", total=len(paths)):
        try:
            info = read_header(path)
        except DicomReadError as error:
            index.skipped.append((path, error.message))
            continue
        kept = first_path.setdefault(info.sop_instance_uid, path)
        if kept != path:
            index.duplicates.append((path, kept))
        else:
            index.files.append(info)
    return index


def read_roi_names(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(ROIName, RTROIInterpretedType)`` of each ROI of an RT Structure Set, without its contours.

    Raises:
        DicomReadError: the file cannot be parsed.
    """
    try:
        ds = pydicom.dcmread(path, specific_tags=["StructureSetROISequence", "RTROIObservationsSequence"],
                             force=True)
    except Exception as error:  # pydicom raises many types on a broken file
        raise DicomReadError(f"unreadable RT Structure Set ({type(error).__name__}: {error})", path=path) from error
    types = {}
    for item in ds.get("RTROIObservationsSequence", []) or []:
        if "ReferencedROINumber" in item:
            types[int(item.ReferencedROINumber)] = str(item.get("RTROIInterpretedType", "") or "").strip()
    names = []
    for item in ds.get("StructureSetROISequence", []) or []:
        number = int(item.ROINumber) if "ROINumber" in item else -1
        name = str(item.get("ROIName", "") or "").strip() or f"ROI_{number}"
        names.append((name, types.get(number, "")))
    return names
