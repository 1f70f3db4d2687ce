"""Write ROI masks on a CT grid as an RT Structure Set that planning systems import.

Follows ../shared/RTSTRUCT_CHECKLIST.md line by line: patient and study attributes copied verbatim
from the CT file, the CT's frame of reference and every CT slice referenced, unique ROI numbers,
CLOSED_PLANAR contours on CT slice planes each with its ContourImageSequence item, DS values of at
most 16 characters, first point not repeated, one RT ROI Observation per ROI.

Choices:
    * ROI numbers: ``Roi.number`` is kept when positive and unique; the others get the smallest
      free numbers from 1.
    * ``generation_algorithm`` applies to every ROI; pass ``None`` to keep each ``Roi``'s own.
    * An empty mask is left out (checklist 11: several planning systems reject or crash on ROIs
      without contours) and logged as a warning; callers report it. All masks empty is an error.
    * Coordinates are written with 3 decimals (0.001 mm), at most 16 characters each.
    * The file uses Implicit VR Little Endian: a long contour's ContourData can exceed the 64 KiB
      that an explicit-VR DS value can hold.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from rtdeep.dicomrt._writer_common import (
    ds_multi_value_bytes,
    ds_value_texts,
    new_rt_object,
    save_dataset,
)
from rtdeep.dicomrt.contours import mask_to_contours
from rtdeep.dicomrt.types import CtSeries, Roi
from rtdeep.dicomrt.uids import RT_STRUCTURE_SET_STORAGE
from rtdeep.errors import StructureError
from rtdeep.fileio import ensure_new_path

__all__ = ["STUDY_REFERENCE_SOP_CLASS_UID", "assign_roi_numbers", "write_rtstruct"]

log = logging.getLogger(__name__)

#: ReferencedSOPClassUID of an RT Referenced Study item (Detached Study Management, as TPSs expect).
STUDY_REFERENCE_SOP_CLASS_UID = "1.2.840.10008.3.1.2.3.1"
_MAX_SH = 16


def assign_roi_numbers(rois: Sequence[Roi]) -> list[int]:
    """ROI numbers: each ``Roi.number`` kept when positive and not already taken, else the next free one."""
    numbers: list[int] = []
    taken: set[int] = set()
    for roi in rois:
        if roi.number > 0 and roi.number not in taken:
            taken.add(roi.number)
    kept: set[int] = set()
    next_free = 1
    for roi in rois:
        if roi.number > 0 and roi.number not in kept:
            kept.add(roi.number)
            numbers.append(roi.number)
            continue
        while next_free in taken:
            next_free += 1
        taken.add(next_free)
        numbers.append(next_free)
    return numbers


def write_rtstruct(
    ct: CtSeries,
    rois: Sequence[Roi],
    out_path: str | os.PathLike[str],
    *,
    label: str = "RTDEEP",
    generation_algorithm: str | None = "AUTOMATIC",
    uid_seed: object | None = None,
    series_description: str = "",
    overwrite: bool = False,
) -> Path:
    """Write ``rois`` (bool masks on the CT grid) as an RT Structure Set referencing ``ct``.

    Args:
        ct: the CT series the masks lie on (``ct.files[0]`` supplies patient/study attributes
            when present, else ``ct.patient``).
        rois: structures; each ``mask`` is ``[k, j, i]`` with the CT volume's shape.
        out_path: the new file.
        label: StructureSetLabel (SH, at most 16 characters).
        generation_algorithm: ROIGenerationAlgorithm for every ROI (``AUTOMATIC`` for AI contours);
            ``None`` keeps each ``Roi.generation_algorithm``.
        uid_seed: when given, UIDs and dates are deterministic.
        series_description: SeriesDescription of the new RT series.
        overwrite: replace an existing file (default: refuse).

    Returns:
        The written path.

    Raises:
        StructureError: a mask on the wrong grid, a label that is too long, or every mask empty.
        OutputExistsError: ``out_path`` exists and ``overwrite`` is False.
    """
    out_path = ensure_new_path(out_path, overwrite)
    if len(label) > _MAX_SH or not label:
        raise StructureError(f"label '{label}' must be 1 to 16 characters", path=out_path,
                             tag="StructureSetLabel (3006,0002)")
    for roi in rois:
        if roi.mask.shape != ct.volume.shape:
            raise StructureError(
                f"mask shape {roi.mask.shape} does not match the CT grid {ct.volume.shape}", roi=roi.name
            )
        if len(roi.name) > _MAX_SH:
            log.warning("ROI name '%s' is longer than 16 characters; some planning systems truncate it", roi.name)
    for roi in rois:
        if not roi.mask.any():
            log.warning("ROI '%s' has an empty mask: left out of the structure set", roi.name)
    rois = [roi for roi in rois if roi.mask.any()]
    if not rois:
        raise StructureError("every ROI mask is empty: no structure set written (no empty ROIs)", path=out_path)

    dataset, date, time = new_rt_object(RT_STRUCTURE_SET_STORAGE, "RTSTRUCT", ct, uid_seed, implicit_vr=True)
    dataset.SeriesDescription = series_description
    dataset.StructureSetLabel = label
    dataset.StructureSetDate = date
    dataset.StructureSetTime = time
    dataset.ReferencedFrameOfReferenceSequence = [_frame_of_reference_item(ct, dataset.StudyInstanceUID)]

    numbers = assign_roi_numbers(rois)
    dataset.StructureSetROISequence = [
        _structure_set_roi_item(roi, number, ct.frame_of_reference_uid, generation_algorithm)
        for roi, number in zip(rois, numbers)
    ]
    image_refs = [_image_reference_bytes(ct.sop_class_uid, uid) for uid in ct.sop_instance_uids]
    dataset.ROIContourSequence = [
        _roi_contour_item(roi, number, ct, image_refs) for roi, number in zip(rois, numbers)
    ]
    dataset.RTROIObservationsSequence = [
        _observation_item(roi, number, index + 1) for index, (roi, number) in enumerate(zip(rois, numbers))
    ]
    _mark_raw_encoding(dataset)
    return save_dataset(dataset, out_path, overwrite=overwrite)


def _mark_raw_encoding(dataset: Dataset) -> None:
    """Tell pydicom the ROI contour items are already in the output encoding, so their pre-encoded
    ContourSequence is written as is (otherwise pydicom parses it back first)."""
    dataset.set_original_encoding(True, True, dataset._character_set)
    for roi_item in dataset.ROIContourSequence:
        roi_item.set_original_encoding(True, True, roi_item._character_set)


def _image_item(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


def _frame_of_reference_item(ct: CtSeries, study_uid: str) -> Dataset:
    series = Dataset()
    series.SeriesInstanceUID = ct.series_instance_uid
    series.ContourImageSequence = [_image_item(ct.sop_class_uid, uid) for uid in ct.sop_instance_uids]
    study = Dataset()
    study.ReferencedSOPClassUID = STUDY_REFERENCE_SOP_CLASS_UID
    study.ReferencedSOPInstanceUID = study_uid
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = ct.frame_of_reference_uid
    frame.RTReferencedStudySequence = [study]
    return frame


def _structure_set_roi_item(roi: Roi, number: int, for_uid: str, generation_algorithm: str | None) -> Dataset:
    item = Dataset()
    item.ROINumber = number
    item.ReferencedFrameOfReferenceUID = for_uid
    item.ROIName = roi.name
    item.ROIGenerationAlgorithm = (generation_algorithm or roi.generation_algorithm or "AUTOMATIC").upper()
    return item


def _roi_contour_item(roi: Roi, number: int, ct: CtSeries, image_refs: list[bytes]) -> Dataset:
    item = Dataset()
    item.ROIDisplayColor = [int(np.clip(c, 0, 255)) for c in roi.color_rgb]
    item.ReferencedROINumber = number
    contours = mask_to_contours(roi.mask, ct.volume.affine)
    if not contours:
        log.warning("ROI '%s' has an empty mask: listed without contours", roi.name)
        return item
    texts = ds_value_texts(np.concatenate([c.points_lps for c in contours]))
    items, offset = [], 0
    for contour in contours:
        n_values = 3 * len(contour.points_lps)
        items.append(_contour_item_bytes(image_refs[contour.k], texts[offset: offset + n_values]))
        offset += n_values
    items = b"".join(items)
    item[_CONTOUR_SEQUENCE] = RawDataElement(  # type: ignore[assignment]
        Tag(_CONTOUR_SEQUENCE), "SQ", len(items), items, 0, True, True)
    return item


# The ContourSequence is encoded here (Implicit VR Little Endian, explicit lengths) rather than
# through pydicom Datasets: building and writing thousands of contour items is what makes RTSTRUCT
# export slow; this keeps it a string join. Read-back and dciodvfy tests check the encoding.
_CONTOUR_SEQUENCE = 0x30060040


def _element(group: int, element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, element, len(value)) + value


def _item(content: bytes) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content


def _padded(text: str, pad: bytes) -> bytes:
    data = text.encode("ascii")
    return data + pad if len(data) % 2 else data


def _image_reference_bytes(sop_class_uid: str, sop_instance_uid: str) -> bytes:
    """A ContourImageSequence element holding one item that references one CT slice."""
    content = _element(0x0008, 0x1150, _padded(sop_class_uid, b"\0")) + _element(
        0x0008, 0x1155, _padded(sop_instance_uid, b"\0"))
    return _element(0x3006, 0x0016, _item(content))


def _contour_item_bytes(image_reference: bytes, coordinate_texts: list[str]) -> bytes:
    content = (
        image_reference
        + _element(0x3006, 0x0042, b"CLOSED_PLANAR ")
        + _element(0x3006, 0x0046, _padded(str(len(coordinate_texts) // 3), b" "))
        + _element(0x3006, 0x0050, ds_multi_value_bytes(None, texts=coordinate_texts))
    )
    return _item(content)


def _observation_item(roi: Roi, number: int, observation_number: int) -> Dataset:
    item = Dataset()
    item.ObservationNumber = observation_number
    item.ReferencedROINumber = number
    item.RTROIInterpretedType = (roi.interpreted_type or "").upper()
    item.ROIInterpreter = ""
    return item
