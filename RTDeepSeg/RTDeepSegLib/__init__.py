# ruff: noqa: N999 (Slicer names a module's helper package <Module>Lib)
"""RTDeepSeg's logic, kept free of qt so pytest can drive it against a real MRML scene (slicer-core).

``RTDeepSeg.py`` (the Slicer module) subclasses :class:`RTDeepSegLib.logic.SegmentationLogic` together
with ``ScriptedLoadableModuleLogic``; tests import this package directly.
"""

from RTDeepSegLib.logic import SegmentationJob, SegmentationLogic, SegmentationResult

__all__ = ["SegmentationJob", "SegmentationLogic", "SegmentationResult"]
