"""Validate DICOM RT files: dicom3tools' validators plus the cross-reference checks they miss.

``dciodvfy`` checks each object against its IOD, ``dcentvfy`` checks that files of one study agree
on patient/study/series attributes. Neither checks RT Structure Set cross-references, which is
what planning systems reject in the wild (../shared/RTSTRUCT_CHECKLIST.md): :func:`check_rtstruct`
does, against the referenced CT. :func:`validate_paths` runs everything applicable.

dicom3tools 1.00 (Debian 2022) aborts on 32-bit pixel data (every RT Dose); such a file is checked
as a 16-bit surrogate copy (same attributes, zero pixels) and a warning says so.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError

from rtdeep.dicomrt.dataset import MALFORMED_ERRORS, quiet_pydicom
from rtdeep.dicomrt.scan import folder_files
from rtdeep.dicomrt.types import CtSeries
from rtdeep.dicomrt.uids import RT_STRUCTURE_SET_STORAGE
from rtdeep.errors import DicomReadError, RtDeepError

__all__ = [
    "CtReference",
    "Finding",
    "check_identifiers",
    "check_rtstruct",
    "reader_findings",
    "run_dcentvfy",
    "run_dciodvfy",
    "run_dcmpschk",
    "validate_paths",
]

_CONTOUR_DATA = 0x30060050
#: what pydicom raises on a file that is not DICOM or is truncated
_READ_ERRORS = (InvalidDicomError, OSError, ValueError, TypeError, KeyError, AttributeError, EOFError,
                OverflowError, struct.error, NotImplementedError, BytesLengthException, UnicodeError)
_Z_TOLERANCE_MM = 0.01
_MAX_DS_CHARS = 16
_MAX_SH = 16
#: attributes that must match the referenced CT exactly (the planning system's patient match)
_MUST_MATCH = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID")
#: Type 2 attributes that must be present (possibly empty) in an RT Structure Set
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber", "OperatorsName", "SeriesNumber",
          "StructureSetDate", "StructureSetTime")


@dataclass(frozen=True)
class Finding:
    """One validation result.

    Attributes:
        severity: ``"error"`` (a planning system may reject the file) or ``"warning"``.
        path: the file (or files) concerned.
        message: what is wrong, naming the tag or ROI.
        source: ``"rtdeep"``, ``"dciodvfy"``, ``"dcmpschk"`` or ``"dcentvfy"``.
    """

    severity: str
    path: str
    message: str
    source: str = "rtdeep"

    def __str__(self) -> str:
        return f"{self.severity.upper()}: {self.path}: [{self.source}] {self.message}"


def _parse_tool_output(text: str, path: str, source: str) -> list[Finding]:
    findings = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Error"):
            findings.append(Finding("error", path, line.partition(" - ")[2] or line, source))
        elif line.startswith("Warning"):
            findings.append(Finding("warning", path, line.partition(" - ")[2] or line, source))
    return findings


def _run_tool(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=False, capture_output=True, text=True, errors="replace",
                          timeout=300)


def _surrogate_16bit(path: Path, tmp_dir: str) -> Path | None:
    """A copy of a 32-bit image as 16-bit zeros (dicom3tools 1.00 asserts on 32-bit pixels)."""
    try:
        ds = pydicom.dcmread(path)
    except _READ_ERRORS:
        return None
    try:
        if int(ds.get("BitsAllocated", 0) or 0) != 32 or "PixelData" not in ds:
            return None
        n_pixels = int(ds.get("NumberOfFrames", 1) or 1) * int(ds.Rows) * int(ds.Columns)
    except _READ_ERRORS:
        return None
    if n_pixels * 4 != len(ds.PixelData or b""):  # a size the data does not hold: the reader's finding says so
        return None
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelData = np.zeros(n_pixels, "<u2").tobytes()
    surrogate = Path(tmp_dir) / path.name
    ds.save_as(surrogate, enforce_file_format=True)
    return surrogate


def run_dciodvfy(path: str | os.PathLike[str]) -> list[Finding]:
    """Run ``dciodvfy`` on one file and return its Error and Warning lines as findings.

    A missing tool gives one warning finding; a crash gives an error finding.
    """
    path = Path(path)
    if shutil.which("dciodvfy") is None:
        return [Finding("warning", str(path), "dciodvfy not installed (apt install dicom3tools); IOD not checked",
                        "dciodvfy")]
    result = _run_tool(["dciodvfy", str(path)])
    output = result.stdout + result.stderr
    if "Assertion" in output and "bitsallocated" in output:
        with tempfile.TemporaryDirectory() as tmp_dir:
            surrogate = _surrogate_16bit(path, tmp_dir)
            if surrogate is not None:
                result = _run_tool(["dciodvfy", str(surrogate)])
                note = Finding("warning", str(path), "dciodvfy cannot read 32-bit pixel data; checked a 16-bit "
                               "copy of the attributes", "dciodvfy")
                return [note, *_parse_tool_output(result.stdout + result.stderr, str(path), "dciodvfy")]
    findings = _parse_tool_output(output, str(path), "dciodvfy")
    if result.returncode < 0 or "Assertion" in output:
        findings.append(Finding("error", str(path), f"dciodvfy failed: {output.strip()[-200:]}", "dciodvfy"))
    return findings


def run_dcentvfy(paths: Sequence[str | os.PathLike[str]]) -> list[Finding]:
    """Run ``dcentvfy`` on files of one study (entity consistency: patient, study, series attributes)."""
    names = [str(p) for p in paths]
    joined = ", ".join(Path(p).name for p in names[:3]) + (" ..." if len(names) > 3 else "")
    if shutil.which("dcentvfy") is None:
        return [Finding("warning", joined, "dcentvfy not installed; entity consistency not checked", "dcentvfy")]
    if len(names) < 2:
        return []
    result = _run_tool(["dcentvfy", *names])
    return _parse_tool_output(result.stdout + result.stderr, joined, "dcentvfy")


def run_dcmpschk(path: str | os.PathLike[str]) -> list[Finding]:
    """Run dcmtk's ``dcmpschk`` (value lengths, VRs and multiplicities of every attribute) on one file."""
    if shutil.which("dcmpschk") is None:
        return [Finding("warning", str(path), "dcmpschk not installed (apt install dcmtk); not checked", "dcmpschk")]
    result = _run_tool(["dcmpschk", str(path)])
    findings: list[Finding] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            severity = "error" if current[0].startswith("Error") else "warning"
            findings.append(Finding(severity, str(path), " ".join(current).partition(": ")[2], "dcmpschk"))
            current.clear()

    for line in (result.stdout + result.stderr).splitlines():
        text = line[2:].strip() if line[1:2] == ":" else line.strip()
        if text.startswith(("Error:", "Warning:")):
            flush()
            current.append(text)
        elif current and text and not text.startswith(("Test ", "Testing:")):
            current.append(" ".join(text.split()))
        elif not text or text.startswith("Test "):
            flush()
    flush()
    return _charset_false_positives(Path(path), findings)


#: most characters a text value may hold, by VR (PS3.5 6.2; characters, not bytes)
_TEXT_VR_CHARS = {"SH": 16, "LO": 64, "PN": 64 * 5, "ST": 1024, "LT": 10240, "UT": 2**32 - 2, "UC": 2**32 - 2}


def _charset_false_positives(path: Path, findings: list[Finding]) -> list[Finding]:
    """dcmpschk checks text byte by byte without decoding SpecificCharacterSet (e.g. ISO_IR 192,
    UTF-8), so it rejects a valid 'Größe'. Such a finding becomes a warning when pydicom decodes the
    value in the file's character set and the text fits its VR (no backslash or control character,
    not too many characters)."""
    suspects = [f for f in findings if f.severity == "error" and "does not conform to data type" in f.message]
    if not suspects:
        return findings
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except _READ_ERRORS:
        return findings
    charset = ds.get("SpecificCharacterSet", "")
    charset = "\\".join(charset) if isinstance(charset, (list, pydicom.multival.MultiValue)) else str(charset)
    if not charset or charset in ("ISO_IR 6", "ISO 2022 IR 6"):
        return findings
    values: dict[str, tuple[str, str]] = {}
    for element in ds.iterall():
        if element.VR in _TEXT_VR_CHARS and element.value is not None:
            values[f"({element.tag.group:04X},{element.tag.element:04X})"] = (element.VR, str(element.value))
    result = []
    for finding in findings:
        tag = next((t for t in values if t in finding.message), None) if finding in suspects else None
        if tag is not None:
            vr, value = values[tag]
            clean = not any(ch == "\\" or ord(ch) < 32 and ch not in "\r\n\t\f\x1b" for ch in value)
            if clean and len(value) <= _TEXT_VR_CHARS[vr]:
                finding = Finding("warning", finding.path, f"{finding.message} (a false positive: dcmpschk does not "
                                  f"decode SpecificCharacterSet {charset}; the value is valid {vr} text)", finding.source)
        result.append(finding)
    return result


def check_identifiers(ds: Dataset, path: str) -> list[Finding]:
    """SOP identifiers every object needs: meta class equals SOPClassUID, instance differs from series."""
    findings = []
    meta = getattr(ds, "file_meta", None)
    sop_class = str(ds.get("SOPClassUID", ""))
    if meta is None or "MediaStorageSOPClassUID" not in meta:
        findings.append(Finding("warning", path, "no Part-10 file meta (MediaStorageSOPClassUID)"))
    else:
        if str(meta.MediaStorageSOPClassUID) != sop_class:
            findings.append(Finding("error", path, f"MediaStorageSOPClassUID {meta.MediaStorageSOPClassUID} "
                                    f"differs from SOPClassUID {sop_class}"))
        if str(meta.get("MediaStorageSOPInstanceUID", "")) != str(ds.get("SOPInstanceUID", "")):
            findings.append(Finding("error", path, "MediaStorageSOPInstanceUID differs from SOPInstanceUID"))
    if "SOPInstanceUID" in ds and str(ds.SOPInstanceUID) == str(ds.get("SeriesInstanceUID", "")):
        findings.append(Finding("error", path, "SOPInstanceUID equals SeriesInstanceUID"))
    return findings


@dataclass
class CtReference:
    """What an RT Structure Set is checked against: the CT's slices and identifying attributes.

    Attributes:
        positions_mm: each slice's position along ``normal`` (mm), by SOP instance UID.
        sop_class_uids: each slice's SOP class, by SOP instance UID.
    """

    series_instance_uid: str
    frame_of_reference_uid: str
    normal: np.ndarray
    positions_mm: dict[str, float]
    sop_class_uids: dict[str, str]
    attributes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_series(cls, ct: CtSeries) -> CtReference:
        """From a :class:`CtSeries` (its first file's header supplies patient/study attributes)."""
        affine = ct.volume.affine
        row, col = affine[:3, 0], affine[:3, 1]
        normal = np.cross(row / np.linalg.norm(row), col / np.linalg.norm(col))
        positions = {uid: float(ct.volume.index_to_lps(np.array([0.0, 0.0, k])) @ normal)
                     for k, uid in enumerate(ct.sop_instance_uids)}
        if ct.files and Path(ct.files[0]).is_file():
            header = pydicom.dcmread(ct.files[0], stop_before_pixels=True)
            attributes = {key: str(header.get(key, "")) for key in _MUST_MATCH}
        else:
            patient = ct.patient
            attributes = {"PatientName": patient.patient_name, "PatientID": patient.patient_id,
                          "PatientBirthDate": patient.patient_birth_date, "PatientSex": patient.patient_sex,
                          "StudyInstanceUID": patient.study_instance_uid}
        return cls(ct.series_instance_uid, ct.frame_of_reference_uid, normal, positions,
                   dict.fromkeys(ct.sop_instance_uids, ct.sop_class_uid), attributes)

    @classmethod
    def from_headers(cls, headers: Sequence[Dataset]) -> CtReference:
        """From the headers of one image series (ImagePositionPatient / ImageOrientationPatient)."""
        first = headers[0]
        orientation = np.array([float(v) for v in first.ImageOrientationPatient])
        normal = np.cross(orientation[:3], orientation[3:])
        positions = {str(h.SOPInstanceUID): float(np.array([float(v) for v in h.ImagePositionPatient]) @ normal)
                     for h in headers}
        return cls(str(first.SeriesInstanceUID), str(first.get("FrameOfReferenceUID", "")), normal, positions,
                   {str(h.SOPInstanceUID): str(h.SOPClassUID) for h in headers},
                   {key: str(first.get(key, "")) for key in _MUST_MATCH})


def _read_header(path: Path) -> Dataset | None:
    with quiet_pydicom():  # a malformed file's warnings: the readers' findings name the problem once
        return _read_header_loud(path)


def _read_header_loud(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        try:
            with warnings.catch_warnings():  # forced reads of non-DICOM files warn; they are skipped
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except _READ_ERRORS:
            return None
        return ds if "SOPClassUID" in ds else None
    except _READ_ERRORS:
        return None


def _ct_reference_from_folder(folder: Path, series_uid: str) -> CtReference | None:
    headers = [h for p in sorted(folder.rglob("*")) if p.is_file() and (h := _read_header(p)) is not None]
    return _ct_reference_from(headers, series_uid)


def _ct_reference_from(headers: Iterable[Dataset], series_uid: str) -> CtReference | None:
    by_series: dict[str, list[Dataset]] = defaultdict(list)
    for h in headers:
        if "ImagePositionPatient" in h and "ImageOrientationPatient" in h and h.get("Modality") != "RTDOSE":
            by_series[str(h.get("SeriesInstanceUID", ""))].append(h)
    if series_uid in by_series:
        return CtReference.from_headers(by_series[series_uid])
    if not series_uid and len(by_series) == 1:
        return CtReference.from_headers(next(iter(by_series.values())))
    return None


def _referenced_series_uid(ds: Dataset) -> str:
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                return str(series.get("SeriesInstanceUID", ""))
    return ""


def _contour_values(item: Dataset) -> tuple[list[bytes], np.ndarray | None]:
    element = item.get_item(_CONTOUR_DATA)
    if element is None or element.value is None:
        return [], None
    raw = element.value
    if isinstance(raw, bytes):
        texts = [t.strip() for t in raw.split(b"\\")]
    else:
        values = raw if isinstance(raw, (list, pydicom.multival.MultiValue)) else [raw]
        texts = [str(getattr(v, "original_string", v)).strip().encode() for v in values]
    try:
        return texts, np.array([float(t) for t in texts], dtype=np.float64)
    except ValueError:
        return texts, None


def _as_int(value: object) -> int | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return int(number) if np.isfinite(number) and number == int(number) else None


class _RtstructChecker:
    """Collects findings for one RT Structure Set (optionally against its CT)."""

    def __init__(self, ds: Dataset, path: str, ct: CtReference | None) -> None:
        self.ds, self.path, self.ct = ds, path, ct
        self.findings: list[Finding] = []

    def add(self, severity: str, message: str) -> None:
        self.findings.append(Finding(severity, self.path, message))

    def number(self, item: Dataset, keyword: str) -> int:
        """An ROI number; -1 (and an error finding) when absent, several or not an integer."""
        value = _as_int(item.get(keyword, -1))
        if value is None:
            self.add("error", f"{keyword} '{item.get(keyword)}' is not one integer")
            return -1
        return value

    def run(self) -> list[Finding]:
        self.findings.extend(check_identifiers(self.ds, self.path))
        self.header()
        self.references()
        numbers = self.structure_set_rois()
        self.roi_contours(numbers)
        self.observations(numbers)
        return self.findings

    def header(self) -> None:
        ds = self.ds
        if str(ds.get("SOPClassUID", "")) != RT_STRUCTURE_SET_STORAGE:
            self.add("error", f"SOPClassUID {ds.get('SOPClassUID', '')} is not RT Structure Set Storage")
        if ds.get("Modality") != "RTSTRUCT":
            self.add("error", f"Modality (0008,0060) is '{ds.get('Modality', '')}', expected RTSTRUCT")
        for keyword in _TYPE2:
            if keyword not in ds:
                self.add("error", f"Type 2 attribute {keyword} is missing (must be present, may be empty)")
        label = str(ds.get("StructureSetLabel", ""))
        if not label:
            self.add("error", "StructureSetLabel (3006,0002) is missing or empty")
        elif len(label) > _MAX_SH:
            self.add("error", f"StructureSetLabel (3006,0002) '{label}' is longer than 16 characters")
        if self.ct is not None:
            for keyword in _MUST_MATCH:
                ours, theirs = str(ds.get(keyword, "")), self.ct.attributes.get(keyword, "")
                if ours != theirs:
                    self.add("error", f"{keyword} '{ours}' differs from the CT's '{theirs}'")

    def references(self) -> None:
        ds, ct = self.ds, self.ct
        frames = ds.get("ReferencedFrameOfReferenceSequence", [])
        if not frames:
            self.add("error", "ReferencedFrameOfReferenceSequence (3006,0010) is missing")
            return
        if "FrameOfReferenceUID" not in ds:
            self.add("warning", "no top-level FrameOfReferenceUID (0020,0052)")
        if "PositionReferenceIndicator" not in ds:
            self.add("warning", "no PositionReferenceIndicator (0020,1040)")
        if ct is None:
            return
        if "FrameOfReferenceUID" in ds and str(ds.FrameOfReferenceUID) != ct.frame_of_reference_uid:
            self.add("error", "FrameOfReferenceUID (0020,0052) differs from the CT's")
        listed: set[str] = set()
        for frame in frames:
            if str(frame.get("FrameOfReferenceUID", "")) != ct.frame_of_reference_uid:
                self.add("error", f"ReferencedFrameOfReferenceSequence FrameOfReferenceUID "
                         f"{frame.get('FrameOfReferenceUID', '')} is not the CT's {ct.frame_of_reference_uid}")
            for study in frame.get("RTReferencedStudySequence", []):
                if str(study.get("ReferencedSOPInstanceUID", "")) != ct.attributes.get("StudyInstanceUID", ""):
                    self.add("error", "RTReferencedStudySequence does not reference the CT's study")
                for series in study.get("RTReferencedSeriesSequence", []):
                    if str(series.get("SeriesInstanceUID", "")) != ct.series_instance_uid:
                        self.add("error", "RTReferencedSeriesSequence does not reference the CT series")
                    for image in series.get("ContourImageSequence", []):
                        listed.add(str(image.get("ReferencedSOPInstanceUID", "")))
        missing = set(ct.positions_mm) - listed
        dangling = listed - set(ct.positions_mm)
        if missing:
            self.add("error", f"ContourImageSequence of the referenced series lists {len(listed)} images; "
                     f"{len(missing)} CT slices are not listed")
        if dangling:
            self.add("error", f"ContourImageSequence references {len(dangling)} images not in the CT series")

    def structure_set_rois(self) -> dict[int, str]:
        numbers: dict[int, str] = {}
        items = self.ds.get("StructureSetROISequence", [])
        if not items:
            self.add("error", "StructureSetROISequence (3006,0020) is missing or empty")
        names: set[str] = set()
        for item in items:
            name = str(item.get("ROIName", ""))
            number = self.number(item, "ROINumber")
            if number in numbers:
                self.add("error", f"duplicate ROINumber {number} (ROIs '{numbers[number]}' and '{name}')")
            else:
                numbers[number] = name
            if not name:
                self.add("error", f"ROI {number} has no ROIName")
            elif len(name) > _MAX_SH:
                self.add("warning", f"ROI '{name}': ROIName longer than 16 characters (TG-263 limit)")
            if name in names:
                self.add("warning", f"ROI '{name}': name used by more than one ROI")
            names.add(name)
            if "ROIGenerationAlgorithm" not in item:
                self.add("error", f"ROI '{name}': ROIGenerationAlgorithm (3006,0036) missing")
            referenced_for = str(item.get("ReferencedFrameOfReferenceUID", ""))
            if self.ct is not None and referenced_for != self.ct.frame_of_reference_uid:
                self.add("error", f"ROI '{name}': ReferencedFrameOfReferenceUID is not the CT's")
        return numbers

    def roi_contours(self, numbers: dict[int, str]) -> None:
        seen: set[int] = set()
        for roi_item in self.ds.get("ROIContourSequence", []):
            number = self.number(roi_item, "ReferencedROINumber")
            name = numbers.get(number, f"#{number}")
            if number not in numbers:
                self.add("error", f"ROIContourSequence ReferencedROINumber {number} is not a defined ROI")
            seen.add(number)
            if "ROIDisplayColor" not in roi_item:
                self.add("warning", f"ROI '{name}': no ROIDisplayColor")
            for index, contour in enumerate(roi_item.get("ContourSequence", [])):
                self.contour(contour, f"ROI '{name}' contour {index + 1}")
        for number, name in numbers.items():
            if number not in seen:
                self.add("warning", f"ROI '{name}': no ROIContourSequence item")

    def contour(self, item: Dataset, where: str) -> None:
        geometric_type = str(item.get("ContourGeometricType", ""))
        if geometric_type != "CLOSED_PLANAR":
            self.add("warning", f"{where}: ContourGeometricType '{geometric_type}', expected CLOSED_PLANAR")
        texts, values = _contour_values(item)
        long_values = [t for t in texts if len(t) > _MAX_DS_CHARS]
        if long_values:
            self.add("error", f"{where}: ContourData has {len(long_values)} DS values longer than 16 characters "
                     f"(e.g. '{long_values[0].decode(errors='replace')}')")
        if values is None:
            self.add("error", f"{where}: ContourData missing or not numeric")
            return
        if values.size % 3:
            self.add("error", f"{where}: ContourData has {values.size} values, not a multiple of 3")
            return
        points = values.reshape(-1, 3)
        declared = item.get("NumberOfContourPoints")
        if declared is None or _as_int(declared) != len(points):
            self.add("error", f"{where}: NumberOfContourPoints {declared} but ContourData holds {len(points)} points")
        if len(points) > 1 and np.allclose(points[0], points[-1], atol=1e-6):
            self.add("error", f"{where}: first point repeated at the end (CLOSED_PLANAR contours are closed "
                     "implicitly)")
        images = item.get("ContourImageSequence", [])
        if self.ct is None:
            if not images:
                self.add("error", f"{where}: no ContourImageSequence")
            return
        self.contour_on_slice(points, images, where)

    def contour_on_slice(self, points: np.ndarray, images: Sequence[Dataset], where: str) -> None:
        ct = self.ct
        assert ct is not None
        heights = points @ ct.normal
        uids = list(ct.positions_mm)
        positions = np.array([ct.positions_mm[u] for u in uids])
        nearest = int(np.argmin(np.abs(positions - heights.mean())))
        slice_uid = uids[nearest]
        if np.max(np.abs(heights - positions[nearest])) > _Z_TOLERANCE_MM:
            self.add("error", f"{where}: points at {heights.min():.3f}..{heights.max():.3f} mm along the slice "
                     f"normal are not on a CT slice (nearest {positions[nearest]:.3f} mm)")
            return
        if not images:
            self.add("error", f"{where}: no ContourImageSequence item (the slice at {positions[nearest]:.3f} mm)")
            return
        referenced = {str(i.get("ReferencedSOPInstanceUID", "")): str(i.get("ReferencedSOPClassUID", ""))
                      for i in images}
        if slice_uid not in referenced:
            self.add("error", f"{where}: ContourImageSequence does not reference the slice at "
                     f"{positions[nearest]:.3f} mm")
        elif referenced[slice_uid] != ct.sop_class_uids[slice_uid]:
            self.add("error", f"{where}: ContourImageSequence has SOP class {referenced[slice_uid]}, "
                     f"the slice is {ct.sop_class_uids[slice_uid]}")

    def observations(self, numbers: dict[int, str]) -> None:
        items = self.ds.get("RTROIObservationsSequence", [])
        if not items:
            self.add("error", "RTROIObservationsSequence (3006,0080) is missing or empty")
            return
        observed: set[int] = set()
        for item in items:
            number = self.number(item, "ReferencedROINumber")
            if number not in numbers:
                self.add("error", f"RTROIObservationsSequence ReferencedROINumber {number} is not a defined ROI")
            observed.add(number)
            if "RTROIInterpretedType" not in item:
                self.add("error", f"ROI '{numbers.get(number, number)}': RTROIInterpretedType missing")
            elif not str(item.RTROIInterpretedType):
                self.add("warning", f"ROI '{numbers.get(number, number)}': RTROIInterpretedType empty")
        for number, name in numbers.items():
            if number not in observed:
                self.add("error", f"ROI '{name}': no RTROIObservationsSequence item")


def check_rtstruct(rs_path: str | os.PathLike[str], ct: CtSeries | CtReference | str | os.PathLike[str] | None
                   ) -> list[Finding]:
    """The project's cross-reference checks of an RT Structure Set against its CT.

    Args:
        rs_path: the RTSTRUCT file.
        ct: the referenced CT as a :class:`CtSeries`, a :class:`CtReference`, or a folder searched
            (recursively) for the series the RTSTRUCT references; ``None`` runs the checks that need
            no CT.

    Returns:
        Findings (empty when the file passes).

    Raises:
        DicomReadError: ``rs_path`` is not a readable DICOM file.
    """
    rs_path = Path(rs_path)
    ds = _read_header(rs_path)
    if ds is None or "SOPClassUID" not in ds:
        raise DicomReadError("not a readable DICOM file", path=rs_path)
    try:
        ds = pydicom.dcmread(rs_path, force=True)
    except _READ_ERRORS as error:
        raise DicomReadError(f"not a readable DICOM file ({type(error).__name__}: {error})", path=rs_path) from error
    reference: CtReference | None
    findings: list[Finding] = []
    if isinstance(ct, CtSeries):
        reference = CtReference.from_series(ct)
    elif isinstance(ct, CtReference) or ct is None:
        reference = ct
    else:
        reference = _ct_reference_from_folder(Path(ct), _referenced_series_uid(ds))
        if reference is None:
            findings.append(Finding("warning", str(rs_path), f"referenced CT series not found under {ct}; "
                                    "checks against the CT skipped"))
    with warnings.catch_warnings():  # pydicom's value warnings duplicate the findings below
        warnings.simplefilter("ignore", UserWarning)
        checker = _RtstructChecker(ds, str(rs_path), reference)
        try:
            return findings + checker.run()
        except (*MALFORMED_ERRORS, OSError) as error:  # the reader's finding names the attribute
            return [*findings, *checker.findings,
                    Finding("error", str(rs_path), f"malformed structure set ({type(error).__name__}: {error})")]


def _reader_finding(error: RtDeepError, where: str | os.PathLike[str]) -> Finding:
    parts = ([f"tag {error.tag}"] if error.tag else []) + ([f"ROI '{error.roi}'"] if error.roi else [])
    return Finding("error", error.path or str(where), ": ".join([*parts, error.message]), "reader")


def reader_findings(paths: Sequence[str | os.PathLike[str]], *, series_instance_uid: str | None = None,
                    prescription_gy: float | None = None) -> list[Finding]:
    """Run the readers every command uses; each refusal becomes an error finding (source ``reader``).

    For a folder: every file's header and completeness (:func:`scan_folder`), each CT series with
    the objects paired to it (:func:`load_study`: CT, structure set rasterised on it, dose resampled
    to it, plan), then every other RTSTRUCT, RTDOSE and RTPLAN on its own, against the CT of its
    frame of reference when there is one. For a file: the reader of its modality. So ``validate``
    reports whatever ``info``, ``dvh``, ``crop``, ``compare``, ``segment`` or
    ``predict-pneumonitis`` would refuse.

    Args:
        paths: files and folders.
        series_instance_uid: check only this CT series of each folder.
        prescription_gy: for RELATIVE doses (without it a RELATIVE dose is reported, as the commands
            refuse it).
    """
    from rtdeep.dicomrt.scan import read_header

    findings: list[Finding] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            findings.extend(_folder_reader_findings(entry, series_instance_uid, prescription_gy))
        elif entry.is_file():
            try:
                info = read_header(entry)
            except RtDeepError as error:
                findings.append(_reader_finding(error, entry))
                continue
            findings.extend(_object_findings(info.path, info.modality, None, prescription_gy))
    return findings


def _object_findings(path: Path, modality: str, ct: CtSeries | None, prescription_gy: float | None) -> list[Finding]:
    from rtdeep.dicomrt.ct_reader import read_ct_series
    from rtdeep.dicomrt.rtdose_reader import read_rtdose, resample_dose
    from rtdeep.dicomrt.rtplan_reader import read_rtplan
    from rtdeep.dicomrt.rtstruct_reader import read_rtstruct, read_structure_dataset

    try:
        if modality == "RTSTRUCT":
            if ct is not None:
                read_rtstruct(path, ct)
            else:
                read_structure_dataset(path)
        elif modality == "RTDOSE":
            dose = read_rtdose(path, prescription_gy=prescription_gy)
            if ct is not None:
                resample_dose(dose, ct)
        elif modality == "RTPLAN":
            read_rtplan(path)
        elif modality == "CT" and ct is None:
            read_ct_series([path])
    except RtDeepError as error:
        return [_reader_finding(error, path)]
    return []


def _folder_reader_findings(folder: Path, series_uid: str | None, prescription_gy: float | None) -> list[Finding]:
    from rtdeep.dicomrt.scan import scan_folder
    from rtdeep.dicomrt.study import load_study

    try:
        infos, skipped = scan_folder(folder)
    except RtDeepError as error:
        return [_reader_finding(error, folder)]
    findings = [Finding("warning", str(folder), line, "reader") for line in skipped]
    if not infos:
        return [*findings, Finding("error", str(folder), f"no DICOM files found ({len(skipped)} other file(s))",
                                   "reader")]
    ct_uids = sorted({info.series_instance_uid for info in infos if info.modality == "CT"})
    if series_uid is not None:
        ct_uids = [series_uid]
    if not ct_uids:
        findings.append(Finding("warning", str(folder), "no CT images: commands that need the CT will refuse "
                                "this folder", "reader"))
    cts: dict[str, CtSeries] = {}
    done: set[Path] = set()
    all_read = True
    for uid in ct_uids:
        try:
            study = load_study(folder, series_instance_uid=uid, prescription_gy=prescription_gy)
        except RtDeepError as error:
            findings.append(_reader_finding(error, folder))
            all_read = False
            continue
        cts[study.ct.frame_of_reference_uid] = study.ct
        done.update(obj.path for obj in (study.structure_set, study.dose, study.plan) if obj is not None)
    for info in infos:
        if info.modality not in ("RTSTRUCT", "RTDOSE", "RTPLAN") or info.path in done:
            continue
        ct = cts.get(info.frame_of_reference_uid)
        found = _object_findings(info.path, info.modality, ct, prescription_gy)
        findings.extend(found)
        if not found and ct is None and cts and all_read and info.modality != "RTPLAN":
            findings.append(Finding(
                "error", str(info.path), f"{info.modality} on frame of reference {info.frame_of_reference_uid or '(none)'}"
                f"; no CT series here has it (the CT's: {', '.join(sorted(cts))}), so no command can use it", "reader"))
    return findings


def _collect(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[Path, Dataset]]:
    collected: list[tuple[Path, Dataset]] = []
    for entry in paths:
        entry = Path(entry)
        if entry.is_dir():
            for file in folder_files(entry):
                if (h := _read_header(file)) is not None:
                    collected.append((file, h))
        elif entry.is_file():
            header = _read_header(entry)
            if header is None:
                raise DicomReadError("not a readable DICOM file", path=entry)
            collected.append((entry, header))
        else:
            raise DicomReadError("no such file or folder", path=entry)
    return collected


def _file_findings(path: Path, header: Dataset, headers: list[Dataset], by_study: dict[str, list[Path]],
                   use_tools: bool) -> list[Finding]:
    """dicom3tools, identifier checks and (for an RTSTRUCT) the cross-reference checks of one file."""
    findings: list[Finding] = []
    by_study[str(header.get("StudyInstanceUID", ""))].append(path)
    if use_tools:
        findings.extend(run_dciodvfy(path))
        findings.extend(run_dcmpschk(path))
    if str(header.get("SOPClassUID", "")) == RT_STRUCTURE_SET_STORAGE or header.get("Modality") == "RTSTRUCT":
        series_uid = _referenced_series_uid(header)
        reference = _ct_reference_from(headers, series_uid)
        if reference is None:
            reference = _ct_reference_from_folder(path.parent, series_uid)
        if reference is None:
            findings.append(Finding("warning", str(path), "referenced CT series not found; checks against the CT "
                                    "skipped"))
        findings.extend(check_rtstruct(path, reference))
    else:
        findings.extend(check_identifiers(header, str(path)))
    return findings


def validate_paths(paths: Sequence[str | os.PathLike[str]], *, use_tools: bool = True,
                   series_instance_uid: str | None = None, prescription_gy: float | None = None) -> list[Finding]:
    """Validate files and folders (searched recursively).

    Runs the readers of every command (:func:`reader_findings`: what any command would refuse is
    an error here), ``dciodvfy`` and ``dcmpschk`` on every DICOM file, ``dcentvfy`` on the files of
    each study, identifier checks on every file, and :func:`check_rtstruct` on each RT Structure Set
    against its referenced CT (among the given files, else in the RTSTRUCT's own folder tree).

    Args:
        paths: files and folders.
        use_tools: run dciodvfy, dcmpschk and dcentvfy (False: only the project's own checks).
        series_instance_uid: read only this CT series of each folder.
        prescription_gy: for RELATIVE doses.

    Returns:
        All findings, errors and warnings, in file order.

    Raises:
        DicomReadError: a path that does not exist or a file given by name that is not DICOM.
    """
    collected = _collect(paths)
    findings = reader_findings(paths, series_instance_uid=series_instance_uid, prescription_gy=prescription_gy)
    by_study: dict[str, list[Path]] = defaultdict(list)
    headers = [h for _, h in collected]
    for path, header in collected:
        with warnings.catch_warnings():  # pydicom's value warnings: the findings say it once
            warnings.simplefilter("ignore")
            try:
                findings.extend(_file_findings(path, header, headers, by_study, use_tools))
            except RtDeepError as error:
                findings.append(_reader_finding(error, path))
            except (*MALFORMED_ERRORS, OSError) as error:  # the readers' findings above name the attribute
                findings.append(Finding("error", str(path), f"checks stopped: malformed header ({type(error).__name__}: "
                                        f"{error})"))
    if use_tools:
        for study_paths in by_study.values():
            findings.extend(run_dcentvfy(study_paths))
    return findings
