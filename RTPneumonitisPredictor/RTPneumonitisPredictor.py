"""RTPneumonitisPredictor: risk of grade >= 2 radiation pneumonitis from CT, dose and structures.

Crop the normal lung where dose >= T Gy (or the whole lung, or the body), show the crop, the
normal-lung DVH figures (mean lung dose, V5, V20), the dosimetric NTCP models, the cropped-lung
classifier's risk and where in the crop it looked. Same template shape as RTDeepSeg; the logic's
work lives in ``RTPneumonitisPredictorLib/logic.py`` (no qt, tested with pytest against real MRML).
"""

from typing import Annotated

import slicer
import vtk
from RTPneumonitisPredictorLib.logic import DOSE_VOLUME_ATTRIBUTE, POSITIVE_CLASS, PneumonitisLogic
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#
# RTPneumonitisPredictor
#


class RTPneumonitisPredictor(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("RT Pneumonitis Predictor")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Radiotherapy")]
        self.parent.dependencies = []
        self.parent.contributors = ["rtdeep contributors"]
        self.parent.helpText = _(
            "Estimate the risk of grade 2 or worse radiation pneumonitis (the positive class) from the "
            "planning CT, the planned dose and the lung contours. The CT is cropped to the normal lung "
            "receiving at least T Gy (or the whole lung, or the body); the module shows the crop, mean "
            "lung dose, V5 and V20, dosimetric NTCP models and the classifier's risk with a saliency map. "
            "The bundled classifier is trained on synthetic phantoms only: see its model card."
        )
        self.parent.acknowledgementText = _(
            "Built on 3D Slicer, SlicerRT, PyTorch and MONAI. Crops after Phys Eng Sci Med 2023;46:767."
        )


#
# RTPneumonitisPredictorParameterNode
#


@parameterNodeWrapper
class RTPneumonitisPredictorParameterNode:
    """ctVolume - planning CT. doseVolume - planned dose (Gy), a volume SlicerRT marked as dose.
    segmentation - structures with the lungs. lungSegmentIds - comma-separated segment IDs of the
    lungs (segment pickers are not supported by the parameter node: wired by hand; empty = by
    TG-263 name). cropPreset - lung-dose20 / lung / body. thresholdGy - dose threshold T (Gy)."""

    ctVolume: vtkMRMLScalarVolumeNode
    doseVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    lungSegmentIds: str = ""
    cropPreset: Annotated[str, Choice(["lung-dose20", "lung", "body"])] = "lung-dose20"
    thresholdGy: Annotated[float, WithinRange(1.0, 80.0)] = 20.0


#
# RTPneumonitisPredictorWidget
#


class RTPneumonitisPredictorWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/RTPneumonitisPredictor.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        # Only volumes SlicerRT made from an RT Dose are offered as dose.
        self.ui.doseVolumeSelector.addAttribute("vtkMRMLScalarVolumeNode", DOSE_VOLUME_ATTRIBUTE)

        self.logic = RTPneumonitisPredictorLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSegmentationChanged)
        self.ui.lungSegmentSelectorWidget.connect(
            "selectedSegmentIDsChanged(QStringList)", self.onLungSegmentsChanged
        )
        self.ui.progressBar.hide()
        self.ui.positiveClassLabel.text = _("Positive class: {name}").format(name=POSITIVE_CLASS)

        self.initializeParameterNode()

    def cleanup(self) -> None:
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
        p = self._parameterNode
        for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
            if not p.doseVolume and self.logic.isDoseVolume(node):
                p.doseVolume = node
            if not p.ctVolume and not self.logic.isDoseVolume(node):
                p.ctVolume = node
        if not p.segmentation:
            p.segmentation = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self.onSegmentationChanged(self._parameterNode.segmentation)
            self._checkCanApply()

    def onSegmentationChanged(self, node) -> None:
        """The segment picker follows the structures (segment pickers are wired by hand)."""
        self.ui.lungSegmentSelectorWidget.setCurrentNode(node)
        if self._parameterNode and node:
            ids = [i for i in self._parameterNode.lungSegmentIds.split(",") if i]
            self.ui.lungSegmentSelectorWidget.setSelectedSegmentIDs(ids)

    def onLungSegmentsChanged(self, segmentIds) -> None:
        if self._parameterNode:
            self._parameterNode.lungSegmentIds = ",".join(segmentIds)

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        ready = bool(p and p.ctVolume and p.doseVolume and p.segmentation)
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = _("Compute the risk") if ready else _("Select CT, dose and structures")
        self.ui.thresholdSliderWidget.enabled = bool(p and p.cropPreset == "lung-dose20")

    def onApplyButton(self) -> None:
        from rtdeep.slicer.dependencies import ensure_requirements_in_slicer
        from rtdeep.slicer.display import dvh_plot_chart_node, show_as_overlay

        # The classifier is small (a crop of 64^3 voxels): it runs in process, behind a wait cursor.
        with slicer.util.tryWithErrorDisplay(_("Failed to compute the pneumonitis risk."), waitCursor=True):
            if not ensure_requirements_in_slicer("RTPneumonitisPredictor"):
                return
            p = self._parameterNode
            result = self.logic.process(
                p.ctVolume, p.doseVolume, p.segmentation, p.lungSegmentIds, p.cropPreset, p.thresholdGy
            )
            self.ui.resultsTableView.setMRMLTableNode(result.tableNode)
            risk = "n/a" if result.probability is None else f"{100 * result.probability:.0f} %"
            self.ui.riskLabel.text = risk
            self.ui.doseLabel.text = _("MLD {mld:.1f} Gy, V5 {v5:.0f} %, V20 {v20:.0f} %").format(
                mld=result.meanLungDoseGy, v5=result.v5Pct, v20=result.v20Pct
            )
            self.ui.warningsLabel.text = "\n".join(result.warnings)
            if result.lungDoseReport is not None:
                chart = dvh_plot_chart_node(
                    slicer.mrmlScene, {_("Normal lung"): result.lungDoseReport.dvh}, f"{p.ctVolume.GetName()} DVH"
                )
                slicer.modules.plots.logic().ShowChartInLayout(chart)
            if result.saliencyVolumeNode is not None:
                show_as_overlay(result.saliencyVolumeNode, p.ctVolume)
            else:
                slicer.util.setSliceViewerLayers(background=result.cropVolumeNode)


#
# RTPneumonitisPredictorLogic
#


class RTPneumonitisPredictorLogic(ScriptedLoadableModuleLogic, PneumonitisLogic):
    """Slicer-side logic: the parameter node plus :class:`RTPneumonitisPredictorLib.logic.PneumonitisLogic`."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        PneumonitisLogic.__init__(self)

    def getParameterNode(self):
        return RTPneumonitisPredictorParameterNode(super().getParameterNode())


#
# RTPneumonitisPredictorTest
#


class RTPneumonitisPredictorTest(ScriptedLoadableModuleTest):
    """Cheap self-test: a box phantom with a dose gradient through crop and DVH (no classifier)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_RTPneumonitisPredictor_inputsAndDvh()

    def test_RTPneumonitisPredictor_inputsAndDvh(self):
        import numpy as np

        from rtdeep.dicomrt.types import Roi
        from rtdeep.slicer.segmentation_node import segmentation_node_from_rois
        from rtdeep.slicer.volume_node import node_from_volume
        from rtdeep.volume import Volume, affine_from_geometry

        self.delayDisplay("Starting the test")
        affine = affine_from_geometry((-40.0, -40.0, 0.0), (2.5, 2.5, 3.0))
        ct = np.full((10, 32, 32), -800.0, np.float32)
        dose = np.tile(np.linspace(0.0, 40.0, 32, dtype=np.float32), (10, 32, 1))
        lung_l = np.zeros(ct.shape, bool)
        lung_l[2:8, 4:28, 2:30] = True
        ctNode = node_from_volume(slicer.mrmlScene, Volume(ct, affine), "CT")
        doseNode = node_from_volume(
            slicer.mrmlScene, Volume(dose, affine), "Dose", attributes={DOSE_VOLUME_ATTRIBUTE: "1"}
        )
        seg = segmentation_node_from_rois(slicer.mrmlScene, [Roi("Lung_L", lung_l, 1)], ctNode, "Structures")
        logic = RTPneumonitisPredictorLogic()
        with self.assertRaises(ValueError):
            logic.process(ctNode, ctNode, seg)  # the CT is not a dose volume
        result = logic.process(ctNode, doseNode, seg, "", "lung", 20.0)
        self.assertAlmostEqual(result.meanLungDoseGy, float(dose[lung_l].mean()), delta=0.1)
        self.delayDisplay("Test passed")
