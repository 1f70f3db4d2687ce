"""Typed errors. Every message names the file and the tag or ROI, and what was expected.

All derive from :class:`RtDeepError` (a ``ValueError``), so callers (the CLI, a Slicer logic) can
catch one type and print one line.
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "BundleError",
    "CropError",
    "DicomReadError",
    "DoseError",
    "FrameOfReferenceError",
    "GeometryError",
    "NotDicomError",
    "OutputError",
    "PlanError",
    "RtDeepError",
    "SeriesError",
    "StructureError",
    "ValidationError",
]


class RtDeepError(ValueError):
    """Base class: a problem with the user's input that they can act on.

    Args:
        message: what is wrong and what was expected.
        path: the file or folder concerned, if any.
        tag: the DICOM keyword (and tag) concerned, if any, e.g. ``"DoseUnits (3004,0002)"``.
        roi: the ROI (structure) name concerned, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike[str] | None = None,
        tag: str | None = None,
        roi: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.tag = tag
        self.roi = roi
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.path:
            where.append(self.path)
        if self.tag:
            where.append(f"tag {self.tag}")
        if self.roi:
            where.append(f"ROI '{self.roi}'")
        return f"{': '.join(where)}: {self.message}" if where else self.message


class DicomReadError(RtDeepError):
    """A file is not DICOM, is truncated, or lacks a required attribute."""


class NotDicomError(DicomReadError):
    """A file that is not DICOM at all (folder readers skip these with a warning)."""


class SeriesError(RtDeepError):
    """A CT series is missing, ambiguous, or inconsistent (missing slices, mixed sizes)."""


class GeometryError(RtDeepError):
    """Orientation, spacing or position data that cannot form one regular grid."""


class FrameOfReferenceError(RtDeepError):
    """Objects that should share a FrameOfReferenceUID do not."""


class StructureError(RtDeepError):
    """An RT Structure Set problem: unknown or empty ROI, malformed contour."""


class DoseError(RtDeepError):
    """An RT Dose problem: relative units, no overlap with the CT, bad grid."""


class PlanError(RtDeepError):
    """An RT Plan problem."""


class CropError(RtDeepError):
    """A crop that cannot be made: empty mask, threshold above maximum dose."""


class BundleError(RtDeepError):
    """A model bundle that is missing files, fails its checksum, or does not load."""


class OutputError(RtDeepError):
    """An output that cannot be written: folder not writable, disk full, or the output exists."""


class ValidationError(RtDeepError):
    """A written or read object that fails the project's checks."""
