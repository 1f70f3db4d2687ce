"""Radiation pneumonitis (grade >= 2) risk from dose-masked crops: a compact 3D CNN, its training,
calibration and evaluation, prediction with Grad-CAM, and the dose-only NTCP baselines beside it.

Modules: :mod:`.dataset` (crop at a fixed spacing on a canvas, records, manifests), :mod:`.model`
(network), :mod:`.train` (training, Platt calibration), :mod:`.evaluate` (AUC, CI, DeLong,
confusion matrix, Brier, reliability), :mod:`.baselines` (fitted logistic dose models),
:mod:`.experiment` (a whole run), :mod:`.bundle` (model bundle), :mod:`.predict` (one study),
:mod:`.saliency` (MONAI Grad-CAM), :mod:`.figures` (PNG / NIfTI output), :mod:`.report` (tables and
model card), :mod:`.run` (a whole training run from manifests to files). The normal lung's dose
report (DVH, MLD, V5, V20, NTCP) is :func:`rtdeep.ntcp.lung_dose_report`.

The positive class everywhere is **grade >= 2 radiation pneumonitis**.
"""

from __future__ import annotations

from typing import Any

from rtdeep.pneumonitis.evaluate import CONFUSION_LEGEND, POSITIVE_CLASS, BinaryMetrics, binary_metrics

__all__ = [
    "CONFUSION_LEGEND",
    "POSITIVE_CLASS",
    "BinaryMetrics",
    "PneumonitisResult",
    "binary_metrics",
    "predict_pneumonitis",
]


def __getattr__(name: str) -> Any:
    # prediction needs torch and MONAI; import them only when it is asked for
    if name in ("PneumonitisResult", "predict_pneumonitis"):
        from rtdeep.pneumonitis import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'rtdeep.pneumonitis' has no attribute '{name}'")
