"""Write organ masks on a CT grid as a DICOM Segmentation (SEG), with highdicom.

One BINARY segment per organ found: segment label (TG-263 name), SNOMED CT category, type and
laterality from :mod:`rtdeep.sites`, display colour, algorithm type AUTOMATIC and the algorithm's
identification (model name and version, family "Artificial Intelligence"). Frames reference the
CT slices they lie on, so viewers and planning systems place them without resampling.

An organ whose mask is empty is never written as an empty segment (several readers reject them):
it is returned in ``WrittenSeg.empty`` for the caller to report.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtdeep import __version__
from rtdeep.dicomrt.types import CtSeries, Roi
from rtdeep.dicomrt.uids import make_uid
from rtdeep.errors import StructureError
from rtdeep.fileio import atomic_write, ensure_new_path
from rtdeep.sites import ORGANS, Code

__all__ = ["WrittenSeg", "write_seg"]

#: SNOMED CT codes for structures that the organ table does not know
_OTHER_CATEGORY = Code("91723000", "Anatomical Structure")
_TISSUE = Code("85756007", "Tissue")


@dataclass
class WrittenSeg:
    """A written SEG file: its path, the segments written (label order), the organs left out (empty)."""

    path: Path
    segments: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)


def _coded(code: Code):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


def _description(number: int, roi: Roi, algorithm):
    import highdicom as hd

    organ = ORGANS.get(roi.name)
    category = organ.category_code if organ is not None else _OTHER_CATEGORY
    type_code = organ.type_code if organ is not None and organ.type_code is not None else _TISSUE
    color = organ.color_rgb if organ is not None else roi.color_rgb
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=roi.name,
        segmented_property_category=_coded(category),
        segmented_property_type=_coded(type_code),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=hd.UID(),
        tracking_id=roi.name,
        display_color=hd.color.CIELabColor.from_rgb(*(int(np.clip(c, 0, 255)) for c in color)),
    )
    if organ is not None and organ.laterality is not None:
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            _coded(organ.laterality)]
    return description


def write_seg(
    ct: CtSeries,
    rois: Sequence[Roi],
    out_path: str | os.PathLike[str],
    *,
    algorithm_name: str,
    algorithm_version: str,
    series_description: str = "AI segmentation",
    uid_seed: object | None = None,
    overwrite: bool = False,
) -> WrittenSeg:
    """Write ``rois`` (bool masks ``[k, j, i]`` on the CT grid) as a DICOM SEG referencing ``ct``.

    Args:
        ct: the CT series read from disk (its slice files are the SEG's source images).
        rois: the organs; empty masks are left out and listed in the result.
        out_path: the new file.
        algorithm_name: e.g. the model bundle's name (AlgorithmName, LO).
        algorithm_version: e.g. the bundle's version (AlgorithmVersion, LO).
        series_description: SeriesDescription of the new series.
        uid_seed: when given, series and instance UIDs are deterministic.
        overwrite: replace an existing file (default: refuse).

    Returns:
        What was written.

    Raises:
        StructureError: a mask on the wrong grid, or every mask empty (nothing to write).
        SeriesError: a CT series without slice files (an in-memory series has no source images).
        OutputExistsError: ``out_path`` exists and ``overwrite`` is False.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from rtdeep.errors import SeriesError

    out_path = ensure_new_path(out_path, overwrite)
    if len(ct.files) != ct.volume.shape[0]:
        raise SeriesError("a DICOM SEG needs the CT slice files it segments; this CT has none on disk",
                          path=out_path)
    for roi in rois:
        if roi.mask.shape != ct.volume.shape:
            raise StructureError(f"mask shape {roi.mask.shape} does not match the CT grid {ct.volume.shape}",
                                 roi=roi.name)
    found = [roi for roi in rois if roi.mask.any()]
    result = WrittenSeg(out_path, [roi.name for roi in found], [roi.name for roi in rois if not roi.mask.any()])
    if not found:
        raise StructureError("every organ mask is empty: no DICOM SEG written (no empty segments)", path=out_path)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name[:64], family=codes.cid7162.ArtificialIntelligence, version=algorithm_version[:64])
    descriptions = [_description(number, roi, algorithm) for number, roi in enumerate(found, start=1)]
    source_images = [pydicom.dcmread(path) for path in ct.files]
    pixels = np.stack([roi.mask for roi in found], axis=-1).astype(np.uint8)  # (k, rows j, columns i, segment)
    seed = () if uid_seed is None else (uid_seed, "seg")
    seg = hd.seg.Segmentation(
        source_images=source_images,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=make_uid(*seed, "series") if seed else hd.UID(),
        series_number=901,
        sop_instance_uid=make_uid(*seed, "instance") if seed else hd.UID(),
        instance_number=1,
        manufacturer="rtdeep",
        manufacturer_model_name="rtdeep",
        software_versions=__version__,
        device_serial_number="0",
        content_label="RTDEEP_AI",
        content_description=series_description[:64],
        omit_empty_frames=True,
    )
    seg.SeriesDescription = series_description[:64]
    atomic_write(out_path, lambda tmp: seg.save_as(tmp), overwrite=overwrite)
    return result
