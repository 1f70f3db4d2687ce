"""MRML adapters: the edge where rtdeep data types become Slicer nodes and back.

Nodes get RAS geometry through the one LPS <-> RAS helper (:func:`rtdeep.volume.ras_from_lps_affine`).
The modules here import ``slicer`` (the desktop application's module or the ``slicer-core`` wheel) and ``vtk``;
the rest of rtdeep never does. Import the submodules directly, e.g.
``from rtdeep.slicer.volume_node import volume_from_node``.
"""

from __future__ import annotations

__all__ = [
    "dependencies",
    "display",
    "processes",
    "segmentation_node",
    "subject_hierarchy",
    "table_node",
    "testing_scene",
    "volume_node",
    "worker",
]
