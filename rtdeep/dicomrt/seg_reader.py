"""Read a DICOM Segmentation (SEG) back onto its CT grid, with pydicom only.

Each frame is placed on the CT slice it references (DerivationImageSequence ->
SourceImageSequence), or failing that on the slice at its ImagePositionPatient; each segment
becomes a :class:`~rtdeep.dicomrt.types.Roi` named by its SegmentLabel. BINARY and FRACTIONAL
(threshold at half the maximum) segmentations are read; the SEG's frame of reference must be the
CT's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom

from rtdeep.dicomrt.types import CtSeries, Roi
from rtdeep.errors import FrameOfReferenceError, StructureError
from rtdeep.sites import ORGANS

__all__ = ["SEG_STORAGE", "read_seg"]

#: Segmentation Storage SOP Class UID
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def _frame_slice(frame_item: pydicom.Dataset, ct: CtSeries, slice_of_uid: dict[str, int], path: Path) -> int:
    for derivation in frame_item.get("DerivationImageSequence", []) or []:
        for source in derivation.get("SourceImageSequence", []) or []:
            k = slice_of_uid.get(str(source.get("ReferencedSOPInstanceUID", "")))
            if k is not None:
                return k
    for plane in frame_item.get("PlanePositionSequence", []) or []:
        position = np.asarray([float(v) for v in plane.ImagePositionPatient] + [1.0])
        k = float((np.linalg.inv(ct.volume.affine) @ position)[2])
        if abs(k - round(k)) < 0.25 and 0 <= round(k) < ct.volume.shape[0]:
            return round(k)
    raise StructureError("a SEG frame lies on no slice of the CT", path=path,
                         tag="PerFrameFunctionalGroupsSequence (5200,9230)")


def read_seg(path: str | os.PathLike[str], ct: CtSeries) -> list[Roi]:
    """Read every segment of a SEG as a bool mask ``[k, j, i]`` on ``ct``'s grid.

    Raises:
        StructureError: not a SEG, frames off the CT's slices, or a grid that differs from the CT's.
        FrameOfReferenceError: the SEG's frame of reference differs from the CT's.
    """
    path = Path(path)
    ds = pydicom.dcmread(path)
    if str(ds.get("SOPClassUID", "")) != SEG_STORAGE:
        raise StructureError(f"not a DICOM Segmentation (SOPClassUID {ds.get('SOPClassUID', '')})", path=path,
                             tag="SOPClassUID (0008,0016)")
    frame = str(ds.get("FrameOfReferenceUID", ""))
    if ct.frame_of_reference_uid and frame and frame != ct.frame_of_reference_uid:
        raise FrameOfReferenceError(f"SEG on frame of reference {frame}, CT on {ct.frame_of_reference_uid}",
                                    path=path, tag="FrameOfReferenceUID (0020,0052)")
    if (int(ds.Rows), int(ds.Columns)) != ct.volume.shape[1:]:
        raise StructureError(f"SEG frames of {ds.Rows}x{ds.Columns} on a CT of {ct.volume.shape[1:]}", path=path,
                             tag="Rows (0028,0010)")
    pixels = ds.pixel_array.reshape(-1, int(ds.Rows), int(ds.Columns))
    threshold = 0.5 if ds.get("SegmentationType", "BINARY") == "BINARY" else int(ds.MaximumFractionalValue) / 2
    slice_of_uid = {uid: k for k, uid in enumerate(ct.sop_instance_uids)}
    masks: dict[int, np.ndarray] = {}
    for index, frame_item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        number = int(frame_item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        mask = masks.setdefault(number, np.zeros(ct.volume.shape, bool))
        mask[_frame_slice(frame_item, ct, slice_of_uid, path)] |= pixels[index] > threshold
    rois = []
    for item in ds.SegmentSequence:
        number = int(item.SegmentNumber)
        name = str(item.SegmentLabel)
        organ = ORGANS.get(name)
        rois.append(Roi(name=name, mask=masks.get(number, np.zeros(ct.volume.shape, bool)), number=number,
                        color_rgb=organ.color_rgb if organ is not None else (255, 0, 0),
                        interpreted_type=organ.interpreted_type if organ is not None else "ORGAN",
                        generation_algorithm=str(item.get("SegmentAlgorithmType", "AUTOMATIC"))))
    return rois
