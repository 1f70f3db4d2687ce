# ruff: noqa: N999 (Slicer names a module's helper package <Module>Lib)
"""RTPneumonitisPredictor's logic, kept free of qt so pytest can drive it against real MRML.

``RTPneumonitisPredictor.py`` subclasses :class:`RTPneumonitisPredictorLib.logic.PneumonitisLogic`
together with ``ScriptedLoadableModuleLogic``; tests import this package directly.
"""

from RTPneumonitisPredictorLib.logic import PneumonitisLogic, PneumonitisResult

__all__ = ["PneumonitisLogic", "PneumonitisResult"]
