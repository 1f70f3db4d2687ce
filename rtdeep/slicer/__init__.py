"""MRML adapters: the edge where rtdeep data types become Slicer nodes and back.

This is the only package that flips LPS (rtdeep, DICOM) and RAS (Slicer): x and y change sign.
It imports ``slicer`` (the desktop application's module or the ``slicer-core`` wheel) and ``vtk``;
the rest of rtdeep never does. Import the submodules directly, e.g.
``from rtdeep.slicer.volume_node import volume_from_node``.
"""

from __future__ import annotations

__all__ = [
    "segmentation_node",
    "subject_hierarchy",
    "table_node",
    "testing_scene",
    "volume_node",
    "worker",
]
