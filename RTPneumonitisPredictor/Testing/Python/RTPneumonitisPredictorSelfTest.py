"""Inside Slicer: the module's own self-test plus a check that the widget builds from its .ui file."""

import unittest

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest


class RTPneumonitisPredictorSelfTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_widgetAndLogic()

    def test_widgetAndLogic(self):
        from RTPneumonitisPredictor import RTPneumonitisPredictorTest

        widget = slicer.util.getModuleWidget("RTPneumonitisPredictor")
        for name in ("ctVolumeSelector", "doseVolumeSelector", "lungSegmentSelectorWidget", "applyButton"):
            self.assertTrue(hasattr(widget.ui, name), name)
        test = RTPneumonitisPredictorTest()
        test.runTest()


if __name__ == "__main__":
    unittest.main()
