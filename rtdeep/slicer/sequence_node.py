"""4D CT phases <-> a vtkMRMLSequenceNode with a sequence browser (Slicer's Sequences module).

Each phase is stored as a scalar volume in the sequence at index value ``"<percent>"`` (numeric
index named ``phase``, unit ``%``); the browser node's proxy volume shows the selected phase, so
the phases play as a cine loop in Slicer's views. Geometry goes through
:mod:`rtdeep.slicer.volume_node` (LPS <-> RAS there only).
"""

from __future__ import annotations

from collections.abc import Sequence

import slicer

from rtdeep.slicer.volume_node import update_node_from_volume, volume_from_node
from rtdeep.volume import Volume

__all__ = ["phases_from_sequence", "sequence_from_phases"]


def sequence_from_phases(
    scene: slicer.vtkMRMLScene,
    volumes: Sequence[Volume],
    percents: Sequence[float],
    name: str = "4D CT",
) -> tuple[slicer.vtkMRMLSequenceNode, slicer.vtkMRMLSequenceBrowserNode, slicer.vtkMRMLScalarVolumeNode]:
    """Add the phases as a sequence with a browser and a proxy volume showing the first phase.

    Args:
        scene: the MRML scene.
        volumes: phase volumes (HU ``[k, j, i]`` with LPS affines), in phase order.
        percents: each phase's percentage of the respiratory cycle.
        name: base name of the new nodes.

    Returns:
        (sequence node, browser node, proxy scalar volume node).

    Raises:
        ValueError: different numbers of volumes and percents, or none.
    """
    if len(volumes) != len(percents) or not volumes:
        raise ValueError(f"need one percent per phase volume, got {len(volumes)} volumes and {len(percents)} percents")
    for node_class in (slicer.vtkMRMLSequenceNode, slicer.vtkMRMLSequenceBrowserNode):
        if not scene.IsNodeClassRegistered(node_class.__name__):  # the desktop app's Sequences module does this
            scene.RegisterNodeClass(node_class())
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", scene.GenerateUniqueName(name))
    sequence.SetIndexName("phase")
    sequence.SetIndexUnit("%")
    sequence.SetIndexType(slicer.vtkMRMLSequenceNode.NumericIndex)
    for volume, percent in zip(volumes, percents):
        phase_node = slicer.vtkMRMLScalarVolumeNode()
        phase_node.SetName(f"{name} {percent:g}%")
        update_node_from_volume(phase_node, volume)
        sequence.SetDataNodeAtValue(phase_node, f"{percent:g}")
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", scene.GenerateUniqueName(f"{name} browser"))
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    browser.SetPlaybackItemSkippingEnabled(False)
    proxy = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(f"{name} proxy"))
    proxy.CopyContent(sequence.GetNthDataNode(0))
    proxy.SetName(f"{name} proxy")
    browser.AddProxyNode(proxy, sequence, False)
    browser.SetSelectedItemNumber(0)
    proxy.CreateDefaultDisplayNodes()
    return sequence, browser, proxy


def phases_from_sequence(sequence: slicer.vtkMRMLSequenceNode) -> tuple[list[Volume], list[float]]:
    """The phases of a sequence node (volumes in LPS, percents from the index values), in index order."""
    volumes, percents = [], []
    for item in range(sequence.GetNumberOfDataNodes()):
        volumes.append(volume_from_node(sequence.GetNthDataNode(item), world=False))
        percents.append(float(sequence.GetNthIndexValue(item)))
    return volumes, percents
