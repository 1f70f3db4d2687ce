"""Pneumonitis risk of one study: the bundled CNN on the dose-masked lung crop, the dosimetric
NTCP models beside it, and where the network looked.

Example:
    >>> result = predict_pneumonitis(ct, structure_set, dose_on_ct)        # doctest: +SKIP
    >>> print(result.summary())                                          # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from rtdeep.bundles import LoadedBundle
from rtdeep.crop import Crop
from rtdeep.dicomrt.types import DoseGrid, StructureSet
from rtdeep.dvh import sample_on_grid
from rtdeep.errors import DoseError
from rtdeep.pneumonitis.bundle import load_pneumonitis_bundle
from rtdeep.pneumonitis.dataset import PreparedCrop, lung_dose_figures, prepare_crop
from rtdeep.pneumonitis.evaluate import POSITIVE_CLASS
from rtdeep.pneumonitis.saliency import grad_cam
from rtdeep.volume import Volume

__all__ = ["PneumonitisResult", "predict_pneumonitis"]


@dataclass
class PneumonitisResult:
    """Pneumonitis risk of one study (positive class: grade >= 2 radiation pneumonitis).

    Attributes:
        risk: CNN probability of grade >= 2 pneumonitis, in [0, 1].
        flagged: ``risk >= decision_threshold`` (the threshold chosen on the training folds).
        decision_threshold: from the bundle.
        ntcp_lkb: QUANTEC LKB NTCP (TD50 31.4 Gy, m 0.45, n 1) of the normal lung.
        ntcp_logistic_mld: QUANTEC logistic model on the mean lung dose.
        mld_gy, v5_pct, v20_pct: normal-lung (Lung_L + Lung_R - GTV) mean dose (Gy), V5 and V20 (%).
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
    ntcp_lkb: float
    ntcp_logistic_mld: float
    mld_gy: float
    v5_pct: float
    v20_pct: float
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

    def to_dict(self) -> dict[str, object]:
        """The numbers (no arrays), for JSON."""
        return {
            "positive_class": self.positive_class,
            "risk_pct": round(self.risk_pct, 2),
            "flagged": self.flagged,
            "decision_threshold_pct": round(100 * self.decision_threshold, 2),
            "ntcp_lkb_pct": round(100 * self.ntcp_lkb, 2),
            "ntcp_logistic_mld_pct": round(100 * self.ntcp_logistic_mld, 2),
            "mld_gy": round(self.mld_gy, 3),
            "v5_pct": round(self.v5_pct, 2),
            "v20_pct": round(self.v20_pct, 2),
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
            (
                f"CNN risk             {self.risk_pct:6.1f} %  ({verdict}; model threshold "
                f"{100 * self.decision_threshold:.1f} %, chosen on the training folds)"
            ),
            f"LKB NTCP (QUANTEC)   {100 * self.ntcp_lkb:6.1f} %",
            f"logistic MLD (QUANTEC) {100 * self.ntcp_logistic_mld:4.1f} %",
            f"mean lung dose       {self.mld_gy:6.2f} Gy   V5 {self.v5_pct:.1f} %   V20 {self.v20_pct:.1f} %",
            f"crop {crop}: {self.crop_volume_cc:.1f} cc",
            f"model: {self.bundle_name} (trained on synthetic phantoms only; not for clinical use)",
        ]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _saliency_on_crop(cam: np.ndarray, prepared: PreparedCrop) -> Volume:
    grid = prepared.crop.ct
    values, _ = sample_on_grid(Volume(cam.astype(np.float32), prepared.fixed.affine), grid.affine, grid.shape)
    return grid.with_array(np.where(prepared.crop.mask.array, values, 0.0).astype(np.float32))


def predict_pneumonitis(
    ct: Volume,
    structures: StructureSet | Mapping[str, np.ndarray],
    dose_on_ct: Volume | DoseGrid,
    threshold_gy: float = 20.0,
    bundle: str | os.PathLike[str] | LoadedBundle | None = None,
) -> PneumonitisResult:
    """Risk of grade >= 2 radiation pneumonitis for one study.

    Args:
        ct: CT in HU, ``[k, j, i]`` with its LPS affine.
        structures: a StructureSet or ``{name: bool mask [k, j, i]}`` on the CT grid; needs the lungs
            (``Lung_L`` and ``Lung_R`` or TG-263 synonyms); a ``GTV*`` is excluded when present.
        dose_on_ct: dose in Gy, on the CT grid or on its own grid (a DoseGrid or Volume; on its own
            grid, coverage of the lungs is checked exactly).
        threshold_gy: dose threshold of the ``lung-dose20`` crop (the bundle was trained at its
            ``dose_threshold_gy``; another value gives a warning).
        bundle: a bundle name or folder, a loaded bundle, or None for the bundled
            ``thorax_pneumonitis_lungdose20``.

    Returns:
        :class:`PneumonitisResult`.

    Raises:
        StructureError: no lung structure (the message lists the structures found).
        CropError: the threshold is above the maximum lung dose (empty crop).
        DoseError: the dose does not cover the lungs.
        BundleError: the bundle is missing, changed or not a pneumonitis classifier.
    """
    started = time.perf_counter()
    loaded = load_pneumonitis_bundle(bundle)
    config = loaded.config
    dose = dose_on_ct.dose if isinstance(dose_on_ct, DoseGrid) else dose_on_ct
    if dose is None:
        raise DoseError("pneumonitis prediction needs a dose (Gy) on or covering the CT")
    warnings: list[str] = []
    crop_name = str(config["crop"])
    trained_threshold = config.get("dose_threshold_gy")
    crop_threshold = float(threshold_gy) if crop_name == "lung-dose20" else None
    if crop_threshold is not None and trained_threshold is not None and crop_threshold != float(trained_threshold):
        warnings.append(f"the model was trained on the >= {float(trained_threshold):g} Gy crop; "
                        f"threshold {crop_threshold:g} Gy gives an input it has not seen")
    figures = lung_dose_figures(ct, structures, dose)
    prepared = prepare_crop(ct, structures, dose, crop_name, crop_threshold, tuple(config["input_size"]),
                            tuple(config["channels"]))
    warnings = prepared.crop.warnings + warnings
    network = loaded.network
    with torch.no_grad():
        logit = network(torch.as_tensor(prepared.array[None], device=loaded.device))
    risk = float(torch.sigmoid(logit).cpu()[0])
    cam = grad_cam(network, prepared.array)
    decision = float(config["decision_threshold"])
    return PneumonitisResult(
        risk=risk,
        flagged=risk >= decision,
        decision_threshold=decision,
        ntcp_lkb=figures.ntcp_lkb,
        ntcp_logistic_mld=figures.ntcp_logistic_mld,
        mld_gy=figures.mld_gy,
        v5_pct=figures.v5_pct,
        v20_pct=figures.v20_pct,
        crop_volume_cc=prepared.crop_volume_cc,
        threshold_gy=crop_threshold,
        crop_name=crop_name,
        saliency=_saliency_on_crop(cam, prepared),
        crop=prepared.crop,
        bundle_name=loaded.name,
        seconds=time.perf_counter() - started,
        warnings=warnings,
    )
