"""Pneumonitis risk of one study: the bundled CNN on its crop, the lung-dose report (DVH figures
and NTCP) beside it, and where the network looked (MONAI Grad-CAM).

Example:
    >>> result = predict_pneumonitis(ct, structure_set, dose)        # doctest: +SKIP
    >>> print(result.summary())                                    # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from rtdeep.bundles import LoadedBundle
from rtdeep.crop import Crop
from rtdeep.dicomrt.types import DoseGrid, StructureSet
from rtdeep.dvh import sample_on_grid
from rtdeep.errors import DoseError
from rtdeep.ntcp import LungDoseReport, lung_dose_report
from rtdeep.pneumonitis.bundle import load_pneumonitis_bundle
from rtdeep.pneumonitis.dataset import cut_crop, prepare_crop, report_figures
from rtdeep.pneumonitis.evaluate import POSITIVE_CLASS
from rtdeep.pneumonitis.saliency import grad_cam
from rtdeep.volume import Volume

__all__ = ["PneumonitisResult", "predict_pneumonitis"]


@dataclass
class PneumonitisResult:
    """Pneumonitis risk of one study (positive class: grade >= 2 radiation pneumonitis).

    Attributes:
        risk: calibrated CNN probability of grade >= 2 pneumonitis, in [0, 1].
        flagged: ``risk >= decision_threshold`` (the threshold chosen on training data).
        decision_threshold: from the bundle.
        report: the normal lung's :class:`~rtdeep.ntcp.LungDoseReport` (DVH, MLD, V5, V20, NTCP).
        crop_volume_cc: volume of the crop mask (e.g. normal lung receiving >= 20 Gy).
        threshold_gy: dose threshold of the crop (None for the lung and body crops).
        crop_name: the bundle's crop preset.
        saliency: Grad-CAM map in [0, 1] on the crop grid (a sub-grid of the CT; LPS affine).
        crop: the crop (CT, mask, dose on the crop grid).
        bundle_name, seconds: which model, and how long the prediction took.
        warnings: what the user should know (synonym names used, threshold differs from training).
    """

    risk: float
    flagged: bool
    decision_threshold: float
    report: LungDoseReport
    crop_volume_cc: float
    threshold_gy: float | None
    crop_name: str
    saliency: Volume
    crop: Crop
    bundle_name: str = ""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    positive_class: str = POSITIVE_CLASS

    @property
    def risk_pct(self) -> float:
        return 100.0 * self.risk

    @property
    def mld_gy(self) -> float:
        return self.report.mld_gy

    @property
    def v5_pct(self) -> float:
        return self.report.v5_pct

    @property
    def v20_pct(self) -> float:
        return self.report.v20_pct

    @property
    def ntcp_lkb(self) -> float:
        return self.report.ntcp_lkb

    @property
    def ntcp_logistic_mld(self) -> float:
        return self.report.ntcp_logistic_mld

    def to_dict(self) -> dict[str, object]:
        """The numbers (no arrays), for JSON and CSV."""
        return {
            "positive_class": self.positive_class,
            "risk_pct": round(self.risk_pct, 2),
            "flagged": self.flagged,
            "decision_threshold_pct": round(100 * self.decision_threshold, 2),
            **self.report.to_dict(),
            "crop_volume_cc": round(self.crop_volume_cc, 2),
            "crop": self.crop_name,
            "threshold_gy": self.threshold_gy,
            "bundle": self.bundle_name,
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
        }

    def summary(self) -> str:
        """Human-readable lines, stating the positive class."""
        verdict = "flagged" if self.flagged else "not flagged"
        crop = self.crop_name if self.threshold_gy is None else f"{self.crop_name} (>= {self.threshold_gy:g} Gy)"
        lines = [
            f"positive class: {self.positive_class}",
            (f"CNN risk             {self.risk_pct:6.1f} %  ({verdict}; model threshold "
             f"{100 * self.decision_threshold:.1f} %, chosen on training data)"),
            f"LKB NTCP (QUANTEC)   {100 * self.ntcp_lkb:6.1f} %",
            f"logistic MLD (QUANTEC) {100 * self.ntcp_logistic_mld:4.1f} %",
            f"mean lung dose       {self.mld_gy:6.2f} Gy   V5 {self.v5_pct:.1f} %   V20 {self.v20_pct:.1f} %",
            f"crop {crop}: {self.crop_volume_cc:.1f} cc",
            f"model: {self.bundle_name} (trained on synthetic phantoms only; not for clinical use)",
        ]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _saliency_on_crop(cam: np.ndarray, canvas_affine: np.ndarray, crop: Crop) -> Volume:
    grid = crop.ct
    values, _ = sample_on_grid(Volume(cam.astype(np.float32), canvas_affine), grid.affine, grid.shape)
    return grid.with_array(np.where(crop.mask.array, values, 0.0).astype(np.float32))


def predict_pneumonitis(
    ct: Volume,
    structures: StructureSet | Mapping[str, np.ndarray],
    dose: Volume | DoseGrid,
    threshold_gy: float = 20.0,
    bundle: str | os.PathLike[str] | LoadedBundle | None = None,
    *,
    report: LungDoseReport | None = None,
    lung_names: Sequence[str] = (),
) -> PneumonitisResult:
    """Risk of grade >= 2 radiation pneumonitis for one study.

    Args:
        ct: CT in HU, ``[k, j, i]`` with its LPS affine.
        structures: a StructureSet or ``{name: bool mask [k, j, i]}`` on the CT grid; needs the lungs
            (``Lung_L`` and ``Lung_R`` or TG-263 synonyms, or ``lung_names``); a ``GTV*`` is excluded
            when present; ``External`` for a body-crop bundle.
        dose: dose in Gy, on the CT grid or on its own grid (a DoseGrid or Volume).
        threshold_gy: dose threshold of the ``lung-dose20`` crop (another value than the bundle's
            training threshold gives a warning).
        bundle: a bundle name or folder, a loaded bundle, or None for ``thorax_pneumonitis_lungdose20``.
        report: the study's lung-dose report when already computed (else computed here, once).
        lung_names: the lung structures when not found by name.

    Raises:
        StructureError: no lung (or External) structure. CropError: empty crop (threshold above the
        maximum lung dose). DoseError: no dose or dose not covering the lungs. BundleError: the
        bundle is missing, changed or not a pneumonitis classifier.
    """
    started = time.perf_counter()
    loaded = load_pneumonitis_bundle(bundle)
    config = loaded.config
    dose_volume = dose.dose if isinstance(dose, DoseGrid) else dose
    if dose_volume is None:
        raise DoseError("pneumonitis prediction needs a dose (Gy) on or covering the CT")
    crop_name = str(config["crop"])
    trained_threshold = config.get("dose_threshold_gy")
    crop_threshold = float(threshold_gy) if crop_name == "lung-dose20" else None
    warnings: list[str] = []
    if crop_threshold is not None and trained_threshold is not None and crop_threshold != float(trained_threshold):
        warnings.append(f"the model was trained on the >= {float(trained_threshold):g} Gy crop; "
                        f"threshold {crop_threshold:g} Gy gives an input it has not seen")
    if report is None:
        report = lung_dose_report(ct, structures, dose_volume, lung_names=lung_names)
    # in a head-first-supine CT's axes (as prepare_crop takes it), so the saliency and its figure share them
    crop = cut_crop(ct, structures, dose_volume, report, crop_name, crop_threshold).lps_ordered()
    spacing = float(config["spacing_mm"][0])
    prepared = prepare_crop(crop, tuple(config["channels"]), tuple(config["canvas"]), spacing, fit=True)
    if prepared.array.shape[1:] != tuple(config["canvas"]):
        warnings.append(f"the crop is larger than the training canvas {config['canvas']} at {spacing:g} mm; "
                        f"the network saw it whole on a {list(prepared.array.shape[1:])} canvas")
    network = loaded.network
    with torch.no_grad():
        logit = network(torch.as_tensor(prepared.array[None], device=loaded.device),
                        network.covariates_from(report_figures(report)))
    risk = float(torch.sigmoid(logit).cpu()[0])
    cam = grad_cam(network, prepared.array)
    decision = float(config["decision_threshold"])
    return PneumonitisResult(
        risk=risk,
        flagged=risk >= decision,
        decision_threshold=decision,
        report=report,
        crop_volume_cc=prepared.crop_volume_cc,
        threshold_gy=crop_threshold,
        crop_name=crop_name,
        saliency=_saliency_on_crop(cam, prepared.affine, crop),
        crop=crop,
        bundle_name=loaded.name,
        seconds=time.perf_counter() - started,
        warnings=list(dict.fromkeys([*report.warnings, *crop.warnings, *warnings])),
    )
