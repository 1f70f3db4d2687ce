"""Radiation pneumonitis (grade >= 2) risk from dose-masked lung crops: a small 3D CNN, its
training and evaluation, prediction with Grad-CAM, and the dose-only NTCP baselines beside it.

Modules: :mod:`.dataset` (crop -> network input, lung dose figures, manifests), :mod:`.model`
(network), :mod:`.train` (cross-validation), :mod:`.evaluate` (AUC, CI, confusion matrix, Brier),
:mod:`.baselines` (fitted logistic dose models), :mod:`.experiment` (a whole run),
:mod:`.bundle` (model bundle), :mod:`.predict` (one study), :mod:`.saliency` (Grad-CAM),
:mod:`.figures` (PNG / NIfTI output), :mod:`.report` (tables and model card), :mod:`.run`
(a whole training run from manifests to files).

The positive class everywhere is **grade >= 2 radiation pneumonitis**.
"""

from __future__ import annotations

from rtdeep.pneumonitis.evaluate import CONFUSION_LEGEND, POSITIVE_CLASS, BinaryMetrics, binary_metrics
from rtdeep.pneumonitis.predict import PneumonitisResult, predict_pneumonitis

__all__ = [
    "CONFUSION_LEGEND",
    "POSITIVE_CLASS",
    "BinaryMetrics",
    "PneumonitisResult",
    "binary_metrics",
    "predict_pneumonitis",
]
