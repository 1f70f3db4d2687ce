"""Roi masks <-> vtkMRMLSegmentationNode (binary labelmap representation).

Each :class:`rtdeep.dicomrt.types.Roi` becomes one segment whose name and colour come from the Roi;
its ROI number, interpreted type and generation algorithm ride along as segment tags so they survive
a round trip and a saved scene. A segment whose name the organ table knows (:mod:`rtdeep.sites`)
also gets its SNOMED CT terminology (category, type, laterality), as Slicer's Terminologies module
and DICOM SEG export expect. Masks are bool arrays ``[k, j, i]`` on a reference grid (LPS affine).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from rtdeep.dicomrt.types import Roi
from rtdeep.errors import GeometryError, StructureError
from rtdeep.sites import ORGANS, Organ
from rtdeep.slicer.volume_node import node_ijk_to_ras, vtk_matrix_from_array
from rtdeep.volume import Volume, ras_from_lps_affine

__all__ = [
    "ANATOMIC_CONTEXT",
    "TAG_GENERATION_ALGORITHM",
    "TAG_INTERPRETED_TYPE",
    "TAG_ROI_NUMBER",
    "TERMINOLOGY_CONTEXT",
    "add_rois_to_segmentation_node",
    "labelmap_name",
    "rois_from_segmentation_node",
    "segmentation_node_from_rois",
    "terminology_entry",
]

TAG_ROI_NUMBER = "rtdeep.RoiNumber"
TAG_INTERPRETED_TYPE = "rtdeep.RTROIInterpretedType"
TAG_GENERATION_ALGORITHM = "rtdeep.ROIGenerationAlgorithm"
#: the terminology context Slicer ships for anatomy (its category codes are the table's)
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


def terminology_entry(organ: Organ) -> str:
    """Slicer's serialized terminology entry of an organ of the table (``context~category~type~modifier~...``)."""
    codes = [organ.category_code, organ.type_code, organ.laterality]
    parts = [code.as_terminology_string() if code is not None else "^^" for code in codes]
    return "~".join([TERMINOLOGY_CONTEXT, *parts, ANATOMIC_CONTEXT, "^^", "^^"])


def labelmap_name() -> str:
    """Name of the binary labelmap representation ("Binary labelmap")."""
    return slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()


def _oriented_image(array: np.ndarray, ijk_to_ras: np.ndarray) -> slicer.vtkOrientedImageData:
    """A ``vtkOrientedImageData`` holding ``array`` ``[k, j, i]`` (copied) with the given geometry."""
    array = np.ascontiguousarray(array)
    n_k, n_j, n_i = array.shape
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(n_i, n_j, n_k)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(array.ravel(), deep=True))
    image.SetImageToWorldMatrix(vtk_matrix_from_array(ijk_to_ras))
    return image


def _reference_ijk_to_ras(
    reference: Volume | slicer.vtkMRMLVolumeNode,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """IJK-to-RAS matrix and ``[k, j, i]`` shape of a reference grid (Volume or volume node)."""
    if isinstance(reference, Volume):
        return ras_from_lps_affine(reference.affine), reference.shape
    image = reference.GetImageData() if reference is not None else None
    if image is None:
        name = reference.GetName() if reference is not None else "None"
        raise GeometryError(f"reference volume node '{name}' has no image data")
    n_i, n_j, n_k = image.GetDimensions()
    return node_ijk_to_ras(reference), (n_k, n_j, n_i)


def add_rois_to_segmentation_node(
    node: slicer.vtkMRMLSegmentationNode, rois: Sequence[Roi], reference: Volume | slicer.vtkMRMLVolumeNode
) -> list[str]:
    """Add one segment per Roi (mask on ``reference``'s grid) and return the new segment IDs.

    Overlapping masks (a lung and both lungs) stay separate: each segment gets its own labelmap,
    then non-overlapping ones are collapsed into shared layers to save memory.

    Raises:
        StructureError: a mask's shape does not match the reference grid (names the ROI).
    """
    ijk_to_ras, shape = _reference_ijk_to_ras(reference)
    segmentation = node.GetSegmentation()
    segment_ids = []
    for roi in rois:
        if tuple(roi.mask.shape) != tuple(shape):
            raise StructureError(
                f"mask shape {tuple(roi.mask.shape)} does not match the reference grid {tuple(shape)}",
                roi=roi.name,
            )
        segment = slicer.vtkSegment()
        segment.SetName(roi.name)
        segment.SetColor(*(channel / 255.0 for channel in roi.color_rgb))
        segment.SetTag(TAG_ROI_NUMBER, str(int(roi.number)))
        segment.SetTag(TAG_INTERPRETED_TYPE, roi.interpreted_type)
        segment.SetTag(TAG_GENERATION_ALGORITHM, roi.generation_algorithm)
        if roi.name in ORGANS:
            segment.SetTerminology(terminology_entry(ORGANS[roi.name]))
        segment.AddRepresentation(labelmap_name(), _oriented_image(roi.mask.astype(np.uint8), ijk_to_ras))
        segment_id = segmentation.GenerateUniqueSegmentID(roi.name)
        segmentation.AddSegment(segment, segment_id)
        segment_ids.append(segment_id)
    segmentation.CollapseBinaryLabelmaps(False)
    return segment_ids


def segmentation_node_from_rois(
    scene: slicer.vtkMRMLScene,
    rois: Sequence[Roi],
    reference_volume_node: slicer.vtkMRMLVolumeNode,
    name: str,
) -> slicer.vtkMRMLSegmentationNode:
    """A new segmentation node with one named, coloured segment per Roi.

    Args:
        scene: the MRML scene.
        rois: masks ``[k, j, i]`` on the reference volume's grid.
        reference_volume_node: the volume the masks were made on; it becomes the segmentation's
            reference geometry (as Slicer's Segment Editor sets it).
        name: node name (made unique by the scene if taken).

    Returns:
        The new node (binary labelmap source representation, default display nodes).
    """
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    node.GetSegmentation().SetSourceRepresentationName(labelmap_name())
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    node.CreateDefaultDisplayNodes()
    add_rois_to_segmentation_node(node, rois, reference_volume_node)
    return node


def _ensure_labelmaps(
    node: slicer.vtkMRMLSegmentationNode, reference_image: slicer.vtkOrientedImageData
) -> None:
    """Create the binary labelmap representation (on the reference grid) if the source is another one,
    e.g. the planar contours or closed surfaces SlicerRT makes from an RTSTRUCT."""
    segmentation = node.GetSegmentation()
    if segmentation.GetNumberOfSegments() == 0 or segmentation.ContainsRepresentation(labelmap_name()):
        return
    geometry = slicer.vtkSegmentationConverter.SerializeImageGeometry(reference_image)
    segmentation.SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), geometry
    )
    if not segmentation.CreateRepresentation(labelmap_name()):
        raise StructureError(
            f"segmentation '{node.GetName()}' cannot be converted from "
            f"'{segmentation.GetSourceRepresentationName()}' to a binary labelmap"
        )


def _segment_mask(
    node: slicer.vtkMRMLSegmentationNode, segment_id: str, reference_image: slicer.vtkOrientedImageData
) -> np.ndarray:
    # The labelmap returned is the segment's whole layer, shared with other segments that do not
    # overlap it: the segment is the voxels holding its label value.
    label_value = node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    labelmap = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
        node, segment_id, labelmap, True
    )
    n_i, n_j, n_k = reference_image.GetDimensions()
    mask = np.zeros((n_k, n_j, n_i), dtype=bool)
    if labelmap.GetPointData().GetScalars() is None or labelmap.IsEmpty():
        return mask
    resampled = slicer.vtkOrientedImageData()
    ok = slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        labelmap, reference_image, resampled, False, False
    )
    if not ok or resampled.GetPointData().GetScalars() is None:
        return mask
    extent = resampled.GetExtent()
    values = numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars())
    values = values.reshape(extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    # The resampled extent may be a sub-box of the reference: place it, clipped to the grid.
    i0, j0, k0 = max(extent[0], 0), max(extent[2], 0), max(extent[4], 0)
    i1, j1, k1 = min(extent[1], n_i - 1), min(extent[3], n_j - 1), min(extent[5], n_k - 1)
    if i0 > i1 or j0 > j1 or k0 > k1:
        return mask
    mask[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1] = (
        values[
            k0 - extent[4] : k1 - extent[4] + 1,
            j0 - extent[2] : j1 - extent[2] + 1,
            i0 - extent[0] : i1 - extent[0] + 1,
        ]
        == label_value
    )
    return mask


def _tag(segment: slicer.vtkSegment, name: str) -> str:
    value = vtk.reference("")
    return str(value.get()) if segment.GetTag(name, value) else ""


def rois_from_segmentation_node(
    node: slicer.vtkMRMLSegmentationNode,
    reference: Volume | slicer.vtkMRMLVolumeNode,
    *,
    segment_ids: Sequence[str] | None = None,
) -> list[Roi]:
    """Read segments back as Rois with bool masks ``[k, j, i]`` on ``reference``'s grid.

    Segments on another grid are resampled (nearest neighbour) onto the reference grid; a
    segmentation whose source is planar contours or closed surfaces is first converted to labelmaps
    on the reference grid. Names and colours come from the segments.

    Args:
        node: the segmentation node.
        reference: the grid the masks must be on (a Volume in LPS, or a volume node).
        segment_ids: segments to read (all, in order, when None).

    Raises:
        StructureError: an unknown segment ID, or a segmentation that cannot become labelmaps.
    """
    ijk_to_ras, shape = _reference_ijk_to_ras(reference)
    reference_image = _oriented_image(np.zeros(shape, dtype=np.uint8), ijk_to_ras)
    _ensure_labelmaps(node, reference_image)
    segmentation = node.GetSegmentation()
    if segment_ids is None:
        segment_ids = [
            segmentation.GetNthSegmentID(index) for index in range(segmentation.GetNumberOfSegments())
        ]
    rois = []
    for segment_id in segment_ids:
        segment = segmentation.GetSegment(segment_id)
        if segment is None:
            raise StructureError(f"segmentation '{node.GetName()}' has no segment with ID '{segment_id}'")
        number_text = _tag(segment, TAG_ROI_NUMBER)
        number = int(number_text) if number_text.isdigit() else 0
        interpreted_type = _tag(segment, TAG_INTERPRETED_TYPE) or "ORGAN"
        algorithm = _tag(segment, TAG_GENERATION_ALGORITHM) or "MANUAL"
        color = tuple(round(channel * 255.0) for channel in segment.GetColor())
        rois.append(
            Roi(
                name=segment.GetName(),
                mask=_segment_mask(node, segment_id, reference_image),
                number=number or len(rois) + 1,
                color_rgb=color,  # type: ignore[arg-type]
                interpreted_type=interpreted_type,
                generation_algorithm=algorithm,
            )
        )
    return rois
