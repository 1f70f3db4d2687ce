"""Volume <-> vtkMRMLScalarVolumeNode, flipping LPS (rtdeep) and RAS (Slicer).

A :class:`rtdeep.volume.Volume` holds an array ``[k, j, i]`` and an index-to-LPS affine. A MRML volume
node holds a ``vtkImageData`` (x fastest, so the same memory order as ``[k, j, i]``) and an IJK-to-RAS
matrix. RAS = diag(-1, -1, 1) LPS: this module and :mod:`rtdeep.slicer.segmentation_node` are the only
places where that sign flip happens.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from rtdeep.errors import GeometryError
from rtdeep.volume import Volume, lps_from_ras_affine, ras_from_lps_affine

__all__ = [
    "array_from_vtk_matrix",
    "grid_from_node",
    "node_from_volume",
    "node_ijk_to_ras",
    "update_node_from_volume",
    "volume_from_node",
    "vtk_matrix_from_array",
]


def vtk_matrix_from_array(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    """A new ``vtkMatrix4x4`` holding ``matrix`` (4x4)."""
    result = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            result.SetElement(row, column, float(matrix[row, column]))
    return result


def array_from_vtk_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """A 4x4 float64 array copied from a ``vtkMatrix4x4``."""
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def node_ijk_to_ras(node: slicer.vtkMRMLVolumeNode, *, world: bool = True) -> np.ndarray:
    """The node's IJK-to-RAS matrix, with its linear parent transforms applied when ``world``.

    Raises:
        GeometryError: the node is under a non-linear (warping) transform.
    """
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = array_from_vtk_matrix(matrix)
    transform_node = node.GetParentTransformNode() if world else None
    if transform_node is not None:
        if not transform_node.IsTransformToWorldLinear():
            raise GeometryError(
                f"volume node '{node.GetName()}' is under the non-linear transform "
                f"'{transform_node.GetName()}': harden the transform first"
            )
        to_world = vtk.vtkMatrix4x4()
        transform_node.GetMatrixTransformToWorld(to_world)
        ijk_to_ras = array_from_vtk_matrix(to_world) @ ijk_to_ras
    return ijk_to_ras


def _scalar_image(node: slicer.vtkMRMLVolumeNode) -> vtk.vtkImageData:
    """The node's image data, checked to hold one scalar component.

    Raises:
        GeometryError: no node, no image data or several components.
    """
    if node is None:
        raise GeometryError("no volume node given")
    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise GeometryError(f"volume node '{node.GetName()}' has no image data")
    if image.GetNumberOfScalarComponents() != 1:
        raise GeometryError(
            f"volume node '{node.GetName()}' has {image.GetNumberOfScalarComponents()} components; "
            "expected one (a scalar volume)"
        )
    return image


def volume_from_node(node: slicer.vtkMRMLVolumeNode, *, world: bool = True) -> Volume:
    """Copy a scalar volume node into a :class:`Volume` (array ``[k, j, i]``, LPS affine).

    Args:
        node: a ``vtkMRMLScalarVolumeNode`` (or label map) with one scalar component.
        world: apply the node's linear parent transforms, as Slicer displays it.

    Returns:
        A Volume whose array is a copy (same dtype as the image data).

    Raises:
        GeometryError: no image data, several components, or a non-linear parent transform.
    """
    image = _scalar_image(node)
    n_i, n_j, n_k = image.GetDimensions()
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    array = np.array(values.reshape(n_k, n_j, n_i), copy=True)
    return Volume(array, lps_from_ras_affine(node_ijk_to_ras(node, world=world)))


def grid_from_node(node: slicer.vtkMRMLVolumeNode, *, world: bool = True) -> Volume:
    """A scalar volume node's grid (shape, spacing, origin, direction) without copying its voxels.

    For callers that need only the geometry, such as reading masks onto the CT grid or checking
    that a result lies on it: :func:`volume_from_node` would copy the whole image (333 MB for a
    512 x 512 x 318 float32 CT).

    Args:
        node: as for :func:`volume_from_node`.
        world: as for :func:`volume_from_node`.

    Returns:
        A Volume with the node's shape ``[k, j, i]``, LPS affine and dtype whose array holds no
        voxels: a read-only view of a single zero (no memory per voxel; writing to it raises).

    Raises:
        GeometryError: as for :func:`volume_from_node`.
    """
    image = _scalar_image(node)
    n_i, n_j, n_k = image.GetDimensions()
    dtype = numpy_support.get_numpy_array_type(image.GetScalarType())
    array = np.broadcast_to(np.zeros((), dtype=dtype), (n_k, n_j, n_i))
    return Volume(array, lps_from_ras_affine(node_ijk_to_ras(node, world=world)))


def _image_data_from_array(array: np.ndarray) -> vtk.vtkImageData:
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    array = np.ascontiguousarray(array)
    n_k, n_j, n_i = array.shape
    image = vtk.vtkImageData()
    image.SetDimensions(n_i, n_j, n_k)
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    return image


def update_node_from_volume(node: slicer.vtkMRMLVolumeNode, volume: Volume) -> None:
    """Replace a volume node's voxels and geometry with ``volume`` (bool masks stored as uint8)."""
    node.SetIJKToRASMatrix(vtk_matrix_from_array(ras_from_lps_affine(volume.affine)))
    node.SetAndObserveImageData(_image_data_from_array(volume.array))


def node_from_volume(
    scene: slicer.vtkMRMLScene,
    volume: Volume,
    name: str,
    *,
    node_class: str = "vtkMRMLScalarVolumeNode",
    attributes: dict[str, str] | None = None,
) -> slicer.vtkMRMLVolumeNode:
    """Add a new volume node holding a copy of ``volume`` to ``scene``.

    Args:
        scene: the MRML scene.
        volume: array ``[k, j, i]`` with its index-to-LPS affine.
        name: node name (made unique by the scene if taken).
        node_class: ``vtkMRMLScalarVolumeNode`` or ``vtkMRMLLabelMapVolumeNode``.
        attributes: node attributes to set, e.g. ``{"DicomRtImport.DoseVolume": "1"}``.

    Returns:
        The new node, with default display nodes.
    """
    node = scene.AddNewNodeByClass(node_class, scene.GenerateUniqueName(name))
    update_node_from_volume(node, volume)
    for key, value in (attributes or {}).items():
        node.SetAttribute(key, value)
    node.CreateDefaultDisplayNodes()
    return node
