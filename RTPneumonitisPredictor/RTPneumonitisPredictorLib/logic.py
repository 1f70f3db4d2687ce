"""Pneumonitis risk on MRML nodes: dose-masked lung crop, DVH figures, NTCP and the classifier.

Steps of :meth:`PneumonitisLogic.process` (all numbers from rtdeep, the nodes only carry them):

1. CT, dose (Gy; SlicerRT's RTDOSE volume or any scalar volume marked ``DicomRtImport.DoseVolume``)
   and the structures become rtdeep Volumes and masks on the CT grid (:mod:`rtdeep.slicer`).
2. The one lung-dose report (:func:`rtdeep.ntcp.lung_dose_report`) crops the normal lung once and
   gives its DVH, mean lung dose, V5, V20 and the dosimetric NTCP models.
3. The crop (``lung-dose20``: normal lung with dose >= T Gy, cut from the report's lung crop;
   ``lung``; ``body``) is shown as a new volume node (:func:`rtdeep.pneumonitis.dataset.cut_crop`).
4. The classifier bundled for that crop (``thorax_pneumonitis_lungdose20`` / ``_lung`` / ``_body``,
   :func:`rtdeep.pneumonitis.predict.predict_pneumonitis`, given the same report) gives the
   calibrated risk of grade >= 2 pneumonitis (the positive class) and a MONAI Grad-CAM map, shown
   as a volume node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import slicer

from rtdeep.slicer.segmentation_node import rois_from_segmentation_node
from rtdeep.slicer.subject_hierarchy import place_beside
from rtdeep.slicer.table_node import table_node_from_rows
from rtdeep.slicer.volume_node import node_from_volume, volume_from_node
from rtdeep.volume import Volume

__all__ = ["CROP_PRESETS", "DOSE_VOLUME_ATTRIBUTE", "POSITIVE_CLASS", "PneumonitisLogic", "PneumonitisResult"]

CROP_PRESETS = ("lung-dose20", "lung", "body")
#: attribute SlicerRT sets on the scalar volume it makes from an RT Dose
DOSE_VOLUME_ATTRIBUTE = "DicomRtImport.DoseVolume"
POSITIVE_CLASS = "grade >= 2 radiation pneumonitis"


@dataclass
class PneumonitisResult:
    """What :meth:`PneumonitisLogic.process` computed and made.

    Attributes:
        cropName: the crop used, e.g. ``lung-dose20``.
        meanLungDoseGy, v5Pct, v20Pct: normal-lung DVH figures (Gy, % of lung volume).
        vThresholdPct: % of normal lung receiving at least the crop threshold.
        ntcp: dosimetric models (``logistic_mld``, ``lkb_...``), probabilities 0..1.
        probability: the classifier's risk of the positive class (None without a model).
        cropVolumeNode, saliencyVolumeNode, tableNode: the nodes made (saliency None without a model).
        warnings: what the user should know (missing model, synonyms used).
        lungDoseReport: the :class:`rtdeep.ntcp.LungDoseReport` all the dose figures come from; its
            ``dvh`` (``cumulative_cc()``, ``volume_at_dose_pct``) is what a DVH plot shows.
    """

    cropName: str
    meanLungDoseGy: float
    v5Pct: float
    v20Pct: float
    vThresholdPct: float
    ntcp: dict[str, float]
    probability: float | None
    cropVolumeNode: Any
    tableNode: Any
    saliencyVolumeNode: Any = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lungDoseReport: Any = None


class PneumonitisLogic:
    """Pneumonitis figures from CT, dose and structure nodes.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` when None, read at each call).
    """

    def __init__(self, scene: Any = None) -> None:
        self._scene = scene

    @property
    def scene(self) -> Any:
        return self._scene if self._scene is not None else slicer.mrmlScene

    @staticmethod
    def isDoseVolume(node: Any) -> bool:
        """True for a scalar volume that holds dose (SlicerRT marks it ``DicomRtImport.DoseVolume``)."""
        return node is not None and bool(node.GetAttribute(DOSE_VOLUME_ATTRIBUTE))

    @staticmethod
    def lungSegmentNames(segmentation: Any, lungSegmentIds: str) -> list[str]:
        """Names of the comma-separated segment IDs (an empty string: none chosen).

        Raises:
            ValueError: an ID that the segmentation does not have.
        """
        names = []
        for segment_id in (part.strip() for part in lungSegmentIds.split(",")):
            if not segment_id:
                continue
            segment = segmentation.GetSegmentation().GetSegment(segment_id)
            if segment is None:
                raise ValueError(f"Segmentation '{segmentation.GetName()}' has no segment '{segment_id}'.")
            names.append(segment.GetName())
        return names

    def validateInputs(
        self, ctVolume: Any, doseVolume: Any, segmentation: Any, cropPreset: str, thresholdGy: float
    ) -> None:
        """Raise ``ValueError`` naming what is wrong with the inputs of :meth:`process`."""
        if ctVolume is None or ctVolume.GetImageData() is None:
            raise ValueError("Select the planning CT volume.")
        if doseVolume is None or doseVolume.GetImageData() is None:
            raise ValueError("Select the dose volume (an RT Dose loaded by SlicerRT).")
        if not self.isDoseVolume(doseVolume):
            raise ValueError(
                f"Volume '{doseVolume.GetName()}' is not a dose volume (no {DOSE_VOLUME_ATTRIBUTE} attribute): "
                "load the RT Dose through the DICOM module with SlicerRT."
            )
        if segmentation is None or segmentation.GetSegmentation().GetNumberOfSegments() == 0:
            raise ValueError("Select the structures (a segmentation with the lungs).")
        if cropPreset not in CROP_PRESETS:
            raise ValueError(f"Unknown crop '{cropPreset}': choose one of {', '.join(CROP_PRESETS)}.")
        if not (math.isfinite(thresholdGy) and thresholdGy > 0):
            raise ValueError(f"Dose threshold must be a positive number of Gy, got {thresholdGy}.")

    def process(
        self,
        ctVolume: Any,
        doseVolume: Any,
        segmentation: Any,
        lungSegmentIds: str = "",
        cropPreset: str = "lung-dose20",
        thresholdGy: float = 20.0,
        tableNode: Any = None,
    ) -> PneumonitisResult:
        """Crop, DVH figures, NTCP and classifier risk; fills a table and makes crop/saliency volumes.

        Args:
            ctVolume: planning CT (HU).
            doseVolume: planned dose (Gy), on its own grid or the CT's.
            segmentation: structures; the lungs are found by TG-263 name (Lung_L, Lung_R, synonyms)
                unless ``lungSegmentIds`` names them.
            lungSegmentIds: comma-separated segment IDs of the lungs (empty: by name).
            cropPreset: ``lung-dose20`` (lung with dose >= ``thresholdGy``), ``lung`` or ``body``.
            thresholdGy: dose threshold T of the lung-dose crop, Gy.
            tableNode: table to refill (a new one when None).

        Raises:
            ValueError: bad inputs; rtdeep's StructureError / CropError / DoseError (ValueErrors)
                name the structure when lungs are missing, the crop is empty or dose does not cover.
        """
        from rtdeep.ntcp import lung_dose_report
        from rtdeep.pneumonitis.dataset import cut_crop

        self.validateInputs(ctVolume, doseVolume, segmentation, cropPreset, thresholdGy)
        ct = volume_from_node(ctVolume)
        dose_volume = volume_from_node(doseVolume)
        dose = Volume(dose_volume.array.astype(np.float32, copy=False), dose_volume.affine)  # already a copy
        structures = {roi.name: roi.mask for roi in rois_from_segmentation_node(segmentation, ct)}
        lung_names = tuple(self.lungSegmentNames(segmentation, lungSegmentIds))

        # the one lung-dose report: normal lung cropped once, its DVH, MLD/V5/V20 and NTCP
        report = lung_dose_report(ct, structures, dose, lung_names=lung_names)
        crop_threshold = float(thresholdGy) if cropPreset == "lung-dose20" else None
        crop = cut_crop(ct, structures, dose, report, cropPreset, crop_threshold)
        spec = crop.spec
        ntcp = {"logistic_mld": report.ntcp_logistic_mld, "lkb_pneumonitis-quantec": report.ntcp_lkb,
                "lkb_pneumonitis-seppenwoolde": report.ntcp_lkb_seppenwoolde}

        warnings = list(dict.fromkeys([*report.warnings, *crop.warnings]))
        probability, saliency = self._classify(ct, structures, dose, cropPreset, thresholdGy, warnings, report,
                                               lung_names)

        name = ctVolume.GetName()
        crop_node = node_from_volume(self.scene, crop.ct, f"{name} crop {spec.name}")
        place_beside(crop_node, ctVolume)
        saliency_node = None
        if saliency is not None:
            saliency_node = node_from_volume(self.scene, saliency, f"{name} saliency {spec.name}")
            place_beside(saliency_node, ctVolume)

        result = PneumonitisResult(
            cropName=spec.name,
            meanLungDoseGy=report.mld_gy,
            v5Pct=report.v5_pct,
            v20Pct=report.v20_pct,
            vThresholdPct=report.volume_at_dose_pct(float(thresholdGy)),
            ntcp=ntcp,
            probability=probability,
            cropVolumeNode=crop_node,
            tableNode=None,
            saliencyVolumeNode=saliency_node,
            warnings=warnings,
            lungDoseReport=report,
        )
        result.rows = self.resultRows(result, crop.mask_volume_cc, thresholdGy)
        result.tableNode = table_node_from_rows(
            self.scene, result.rows, f"{name} pneumonitis", node=tableNode
        )
        place_beside(result.tableNode, ctVolume)
        return result

    @staticmethod
    def classifierBundle(cropPreset: str) -> str | None:
        """Bundle name of the classifier trained on ``cropPreset`` (None: the default lung-dose one)."""
        return None if cropPreset == "lung-dose20" else f"thorax_pneumonitis_{cropPreset.replace('-', '')}"

    def _classify(
        self,
        ct: Volume,
        structures: dict[str, np.ndarray],
        dose: Volume,
        cropPreset: str,
        thresholdGy: float,
        warnings: list[str],
        report: Any = None,
        lungNames: tuple[str, ...] = (),
    ) -> tuple[float | None, Volume | None]:
        """The classifier's calibrated probability and Grad-CAM map (LPS Volume on the crop grid, in
        [0, 1]), or (None, None) with a warning when no classifier for this crop is installed.

        ``report`` (a :class:`rtdeep.ntcp.LungDoseReport`) is reused, not recomputed."""
        from rtdeep.errors import BundleError

        try:
            from rtdeep.pneumonitis.predict import predict_pneumonitis
        except ImportError as error:
            warnings.append(f"pneumonitis classifier unavailable: {error}")
            return None, None
        bundle = self.classifierBundle(cropPreset)
        try:
            prediction = predict_pneumonitis(ct, structures, dose, float(thresholdGy), bundle=bundle, report=report,
                                             lung_names=lungNames)
        except BundleError as error:
            warnings.append(f"no classifier for crop '{cropPreset}': {error}")
            return None, None
        warnings.extend(prediction.warnings)
        return float(prediction.risk), prediction.saliency

    @staticmethod
    def resultRows(
        result: PneumonitisResult, cropVolumeCc: float, thresholdGy: float
    ) -> list[dict[str, Any]]:
        """The table: one row per figure, with its unit and where it comes from."""
        rows: list[dict[str, Any]] = [
            {"quantity": "crop", "value": result.cropName, "unit": "", "source": "rtdeep.crop"},
            {"quantity": "crop volume", "value": f"{cropVolumeCc:.1f}", "unit": "cc", "source": "rtdeep.crop"},
            {
                "quantity": "mean lung dose",
                "value": f"{result.meanLungDoseGy:.2f}",
                "unit": "Gy",
                "source": "normal-lung DVH",
            },
            {"quantity": "V5", "value": f"{result.v5Pct:.1f}", "unit": "%", "source": "normal-lung DVH"},
            {"quantity": "V20", "value": f"{result.v20Pct:.1f}", "unit": "%", "source": "normal-lung DVH"},
        ]
        if f"{thresholdGy:g}" not in ("5", "20"):
            rows.append(
                {
                    "quantity": f"V{thresholdGy:g}",
                    "value": f"{result.vThresholdPct:.1f}",
                    "unit": "%",
                    "source": "normal-lung DVH",
                }
            )
        for model, value in result.ntcp.items():
            rows.append(
                {
                    "quantity": f"NTCP {model}",
                    "value": f"{100 * value:.1f}",
                    "unit": "%",
                    "source": "rtdeep.ntcp",
                }
            )
        risk = "not available" if result.probability is None else f"{100 * result.probability:.1f}"
        rows.append(
            {
                "quantity": f"classifier risk of {POSITIVE_CLASS}",
                "value": risk,
                "unit": "%",
                "source": "rtdeep.pneumonitis",
            }
        )
        return rows
