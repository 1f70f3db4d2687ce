"""RTDeepSeg: AI contouring of a CT (3D / 2.5D U-Net, GAN, or the atlas baseline), review against
reference contours (Dice, HD95, surface Dice) and export as an RT Structure Set.

The module follows Slicer's scripted-module template: module, parameter node, widget, logic, test.
The logic's work lives in ``RTDeepSegLib/logic.py`` (no qt, tested with pytest against real MRML);
``RTDeepSegLogic`` adds the Slicer parameter node on top. Nothing is installed at import: missing
Python packages are installed at the first Apply, after one confirmation.
"""

import os
import shutil
from typing import Annotated

import qt
import slicer
import vtk
from RTDeepSegLib.logic import SegmentationLogic
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#
# RTDeepSeg
#


class RTDeepSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("RT Deep Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Radiotherapy")]
        self.parent.dependencies = []  # SlicerRT and PyTorch are extension dependencies (CMakeLists.txt)
        self.parent.contributors = ["rtdeep contributors"]
        self.parent.helpText = _(
            "Contour the organs at risk of a thorax or head-and-neck CT with a bundled 3D or 2.5D U-Net, "
            "a GAN-trained U-Net, or the atlas baseline. The result is a new segmentation with named, "
            "coloured segments; with reference contours it computes Dice, 95% Hausdorff distance and "
            "surface Dice per organ, and exports the AI contours as an RT Structure Set. "
            "The bundled models are trained on synthetic phantoms only: see each model card. "
            '<a href="https://github.com/rtdeep/rtdeep#rtdeepseg">Documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "Built on 3D Slicer, SlicerRT, PyTorch and MONAI. Method after a talk on deep learning in "
            "radiotherapy (U-Net, 2.5D U-Net and GAN contouring compared with an atlas tool)."
        )


#
# RTDeepSegParameterNode
#


@parameterNodeWrapper
class RTDeepSegParameterNode:
    """The module's state, saved with the scene.

    inputVolume - the CT (HU).
    referenceSegmentation - reference contours to compare with (optional).
    site - anatomical site, which picks the models offered.
    model - bundle name (e.g. thorax_unet3d) or atlas baseline (thorax_atlas); the model combo box is wired by hand
        because its items depend on the site.
    device - "cpu" or "cuda".
    outputSegmentation - the result (a new node when empty).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    referenceSegmentation: vtkMRMLSegmentationNode
    site: Annotated[str, Choice(["thorax", "headneck"])] = "thorax"
    model: str = "thorax_atlas"
    device: Annotated[str, Choice(["cpu", "cuda"])] = "cpu"
    outputSegmentation: vtkMRMLSegmentationNode


#
# RTDeepSegWidget
#


class RTDeepSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._process = None
        self._job = None
        self._log = []
        self._cancelled = False
        self._modelListSite = None
        self._models = []

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/RTDeepSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = RTDeepSegLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.reviewCheckBox.connect("toggled(bool)", self.onReviewToggled)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelSelected)
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.hide()

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.onCancelButton()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self.updateModelList()
            self._checkCanApply()

    def updateModelList(self, _index=None) -> None:
        """Offer the site's models from the model database: title shown, name as item data (wired
        by hand: the items depend on the site)."""
        if not self._parameterNode:
            return
        self._modelListSite = self._parameterNode.site
        self._models = self.logic.modelDescriptions(self._parameterNode.site)
        wasBlocked = self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.clear()
        for index, model in enumerate(self._models):
            self.ui.modelComboBox.addItem(model["title"], model["name"])
            self.ui.modelComboBox.setItemData(index, model["tooltip"], qt.Qt.ToolTipRole)
        index = self.ui.modelComboBox.findData(self._parameterNode.model)
        self.ui.modelComboBox.currentIndex = max(index, 0)
        self.ui.modelComboBox.blockSignals(wasBlocked)
        self.onModelSelected()

    def onModelSelected(self, _index=None) -> None:
        index = self.ui.modelComboBox.currentIndex
        if not self._parameterNode or index < 0 or index >= len(self._models):
            return
        model = self._models[index]
        self._parameterNode.model = model["name"]
        self.ui.modelInfoLabel.text = model["tooltip"]
        self.ui.modelInfoLabel.setStyleSheet("color: #b35900" if model["warning"] else "")

    def _checkCanApply(self, caller=None, event=None) -> None:
        # The site combo box writes the parameter node; the model list follows it from here, after
        # the parameter node has the new site.
        if self._parameterNode and self._parameterNode.site != self._modelListSite:
            self.updateModelList()
        running = self._process is not None
        if self._parameterNode and self._parameterNode.inputVolume and not running:
            self.ui.applyButton.toolTip = _("Segment the input CT")
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.toolTip = _("Select an input CT volume")
            self.ui.applyButton.enabled = False
        self.ui.exportButton.enabled = bool(self._parameterNode and self._parameterNode.outputSegmentation)

    # -- apply: the model runs in a subprocess --------------------------------------------------
    def onApplyButton(self) -> None:
        from rtdeep.slicer.dependencies import ensure_requirements_in_slicer

        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            if not ensure_requirements_in_slicer("RTDeepSeg"):
                return
            p = self._parameterNode
            pythonSlicer = shutil.which("PythonSlicer") or os.path.join(
                os.path.dirname(qt.QCoreApplication.applicationFilePath()), "PythonSlicer"
            )
            self._job = self.logic.startJob(p.inputVolume, p.site, p.model, p.device, python=pythonSlicer)
            try:
                self._startProcess(self._job.command)
            except Exception:
                job, self._job, self._process = self._job, None, None
                job.cancel(None)  # removes the temporary CT
                self.ui.cancelButton.enabled = False
                self.ui.progressBar.hide()
                raise
            self._checkCanApply()

    def _startProcess(self, command) -> None:
        self._log, self._cancelled = [], False
        self._process = qt.QProcess()
        environment = qt.QProcessEnvironment.systemEnvironment()
        import rtdeep

        packageRoot = os.path.dirname(os.path.dirname(rtdeep.__file__))
        paths = [packageRoot, environment.value("PYTHONPATH")]
        environment.insert("PYTHONPATH", os.pathsep.join(path for path in paths if path))
        self._process.setProcessEnvironment(environment)
        self._process.setProcessChannelMode(qt.QProcess.MergedChannels)
        self._process.connect("readyReadStandardOutput()", self.onProcessOutput)
        self._process.connect("finished(int,QProcess::ExitStatus)", self.onProcessFinished)
        self.ui.logTextEdit.clear()
        self.ui.progressBar.show()
        self.ui.progressBar.value = 0
        self.ui.cancelButton.enabled = True
        self._process.start(command[0], command[1:])
        if not self._process.waitForStarted(10000):
            raise ValueError(_("Could not start {program}.").format(program=command[0]))

    def onProcessOutput(self) -> None:
        text = bytes(self._process.readAllStandardOutput().data()).decode(errors="replace")
        for line in text.splitlines():
            progress = self.logic.parseProgressLine(line)
            if progress:
                self.ui.progressBar.value = int(progress[0] * 100)
                self.ui.statusLabel.text = progress[1]
            else:
                self._log.append(line)
                self.ui.logTextEdit.appendPlainText(line)

    def onProcessFinished(self, exitCode, exitStatus) -> None:
        self._process = None
        job, self._job = self._job, None
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.hide()
        self._checkCanApply()
        if job is None or self._cancelled:
            return
        if exitStatus != qt.QProcess.NormalExit:
            exitCode = exitCode or -1
        with slicer.util.tryWithErrorDisplay(_("Failed to load the segmentation."), waitCursor=True):
            p = self._parameterNode
            rois = job.finish(exitCode, "\n".join(self._log))  # removes the temporary CT in any case
            result = self.logic.showResults(
                p.inputVolume, rois, p.model, p.referenceSegmentation, p.outputSegmentation
            )
            p.outputSegmentation = result.segmentationNode
            if result.metricsTableNode is not None:
                self.ui.metricsTableView.setMRMLTableNode(result.metricsTableNode)
                self.onReviewToggled(self.ui.reviewCheckBox.checked)
            self.ui.statusLabel.text = _("{count} structures.").format(count=len(rois))

    def onCancelButton(self) -> None:
        """Kill the worker and every process it started, and delete the temporary CT."""
        if self._job is not None:
            self._cancelled = True
            processId = self._process.processId() if self._process is not None else None
            self._job.cancel(processId)
            self.ui.statusLabel.text = _("Cancelled.")

    def onReviewToggled(self, enabled) -> None:
        p = self._parameterNode
        if p and p.outputSegmentation and p.referenceSegmentation:
            self.logic.showReviewOverlay(p.outputSegmentation, p.referenceSegmentation, enabled)

    def onExportButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to export the RT Structure Set."), waitCursor=True):
            p = self._parameterNode
            path = self.ui.rtStructPathLineEdit.currentPath
            if not path:
                raise ValueError(_("Choose the RTSTRUCT file to write."))
            ctFolder = self.ui.ctFolderButton.directory if self.ui.useCtFolderCheckBox.checked else None
            written = self.logic.exportRtStruct(p.outputSegmentation, p.inputVolume, path, ctFolder=ctFolder)
            self.ui.statusLabel.text = _("Wrote {path}").format(path=written)


#
# RTDeepSegLogic
#


class RTDeepSegLogic(ScriptedLoadableModuleLogic, SegmentationLogic):
    """Slicer-side logic: the parameter node plus everything in :class:`RTDeepSegLib.logic.SegmentationLogic`
    (process, showResults, compare, exportRtStruct), which scripts can call without the widget."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        SegmentationLogic.__init__(self)

    def getParameterNode(self):
        return RTDeepSegParameterNode(super().getParameterNode())


#
# RTDeepSegTest
#


class RTDeepSegTest(ScriptedLoadableModuleTest):
    """Cheap self-test: a synthetic CT and two box ROIs through the adapters, metrics and export
    checks. Set RTDEEP_HEAVY_TESTS=1 to also run the atlas end to end."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_RTDeepSeg_showResultsAndCompare()
        if os.environ.get("RTDEEP_HEAVY_TESTS") == "1":
            self.setUp()
            self.test_RTDeepSeg_atlas()

    def _phantom(self):
        import numpy as np

        from rtdeep.dicomrt.types import Roi
        from rtdeep.slicer.volume_node import node_from_volume
        from rtdeep.volume import Volume, affine_from_geometry

        ct = np.full((12, 32, 32), -1000.0, np.float32)
        lung = np.zeros(ct.shape, bool)
        lung[3:9, 8:24, 4:14] = True
        ct[lung] = -800.0
        volume = Volume(ct, affine_from_geometry((-40.0, -40.0, 0.0), (2.5, 2.5, 3.0)))
        return node_from_volume(slicer.mrmlScene, volume, "CT"), [Roi("Lung_L", lung, 1, (0, 200, 255))]

    def test_RTDeepSeg_showResultsAndCompare(self):
        self.delayDisplay("Starting the test")
        from rtdeep.slicer.segmentation_node import segmentation_node_from_rois

        ctNode, rois = self._phantom()
        reference = segmentation_node_from_rois(slicer.mrmlScene, rois, ctNode, "Reference")
        logic = RTDeepSegLogic()
        result = logic.showResults(ctNode, rois, "test", referenceSegmentation=reference)
        self.assertEqual(result.segmentationNode.GetSegmentation().GetNumberOfSegments(), 1)
        self.assertAlmostEqual(result.dice("Lung_L"), 1.0, places=6)
        with self.assertRaises(ValueError):
            logic.validateInputs(None, "thorax", "thorax_atlas")
        self.delayDisplay("Test passed")

    def test_RTDeepSeg_atlas(self):
        ctNode, _rois = self._phantom()
        result = RTDeepSegLogic().process(ctNode, "thorax", "thorax_atlas")
        self.assertGreater(len(result.rois), 0)
