"""One pneumonitis experiment: k-fold cross-validation on a training cohort, the fold models
averaged into an ensemble, evaluated on held-out patients, beside the dose-only models.

The decision threshold of every model is chosen on the training cohort only (Youden's J on the
out-of-fold CNN risks; on the training-set risks of the dose-only models) and then applied to the
held-out patients unchanged. The positive class is grade >= 2 radiation pneumonitis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rtdeep.pneumonitis.baselines import fit_logistic
from rtdeep.pneumonitis.dataset import CaseRecord
from rtdeep.pneumonitis.evaluate import BinaryMetrics, binary_metrics, youden_threshold
from rtdeep.pneumonitis.model import PneumonitisEnsemble
from rtdeep.pneumonitis.train import TrainConfig, cross_validate, predict_probabilities

__all__ = ["CHANNEL_INDEX", "ExperimentResult", "ModelResult", "run_baselines", "run_cnn", "stack_inputs"]

#: which plane of a record's ``[2, D, H, W]`` input each channel name is
CHANNEL_INDEX = {"ct": 0, "dose": 1}


@dataclass
class ModelResult:
    """One model's predictions and metrics on the training (cross-validated) and held-out patients.

    Attributes:
        name: e.g. ``"CNN lung-dose20"``, ``"LKB NTCP (QUANTEC)"``.
        threshold: chosen on the training cohort.
        train_probabilities: out-of-fold CNN risks (or the fitted dose model's risks), training cohort.
        test_probabilities: risks of the held-out patients.
        train_metrics, test_metrics: :class:`BinaryMetrics` at ``threshold``.
        details: model-specific facts (fit coefficients, training seconds, ...).
    """

    name: str
    threshold: float
    train_probabilities: np.ndarray
    test_probabilities: np.ndarray
    train_metrics: BinaryMetrics
    test_metrics: BinaryMetrics | None
    details: dict[str, object] = field(default_factory=dict)


@dataclass
class ExperimentResult:
    """A CNN result plus its ensemble network (for a bundle)."""

    cnn: ModelResult
    ensemble: PneumonitisEnsemble
    crop_name: str
    channels: tuple[str, ...]
    config: TrainConfig
    fold_of_patient: np.ndarray


def stack_inputs(records: Sequence[CaseRecord], crop_name: str, channels: Sequence[str]) -> np.ndarray:
    """``[n, len(channels), D, H, W]`` float32 from the records' cached two-channel inputs."""
    planes = [CHANNEL_INDEX[c] for c in channels]
    return np.stack([record.inputs[crop_name][planes] for record in records]).astype(np.float32)


def _labels(records: Sequence[CaseRecord]) -> np.ndarray:
    return np.array([record.label for record in records], dtype=int)


def _metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float, seed: int) -> BinaryMetrics | None:
    if len(labels) == 0:
        return None
    return binary_metrics(labels, probabilities, threshold, seed=seed)


def run_cnn(
    train: Sequence[CaseRecord],
    test: Sequence[CaseRecord],
    crop_name: str,
    channels: Sequence[str] = ("ct",),
    config: TrainConfig | None = None,
    n_folds: int = 5,
    log: Callable[[str], None] | None = None,
) -> ExperimentResult:
    """Cross-validate the CNN on ``train``, evaluate the fold ensemble on ``test``.

    Returns:
        :class:`ExperimentResult`; ``cnn.details`` holds ``cv_seconds`` and per-fold AUCs.
    """
    config = config or TrainConfig()
    x_train = stack_inputs(train, crop_name, channels)
    y_train = _labels(train)
    cv = cross_validate(x_train, y_train, config, n_folds=n_folds, log=log)
    ensemble = PneumonitisEnsemble.from_members(
        cv.models, in_channels=len(channels), features=config.features, dropout=config.dropout
    ).eval()
    started = time.perf_counter()
    test_probabilities = (
        predict_probabilities(ensemble, stack_inputs(test, crop_name, channels)) if len(test) else np.zeros(0)
    )
    predict_seconds = time.perf_counter() - started
    threshold = youden_threshold(y_train, cv.oof_probabilities)
    result = ModelResult(
        name=f"CNN {crop_name}" + (" +dose" if "dose" in channels else ""),
        threshold=threshold,
        train_probabilities=cv.oof_probabilities,
        test_probabilities=test_probabilities,
        train_metrics=binary_metrics(y_train, cv.oof_probabilities, threshold, seed=config.seed),
        test_metrics=_metrics(_labels(test), test_probabilities, threshold, config.seed),
        details={
            "cv_seconds": round(cv.seconds, 1),
            "test_predict_seconds": round(predict_seconds, 3),
            "n_parameters_per_member": sum(p.numel() for p in cv.models[0].parameters()),
        },
    )
    return ExperimentResult(result, ensemble, crop_name, tuple(channels), config, cv.fold_of_patient)


def run_baselines(train: Sequence[CaseRecord], test: Sequence[CaseRecord], seed: int = 0) -> list[ModelResult]:
    """The dose-only models on the same patients: QUANTEC LKB (fixed parameters), and logistic
    regressions on mean lung dose and on V20 fitted to the training cohort."""
    y_train, y_test = _labels(train), _labels(test)
    results = []

    def add(name: str, train_p: np.ndarray, test_p: np.ndarray, details: dict[str, object]) -> None:
        threshold = youden_threshold(y_train, train_p)
        results.append(ModelResult(
            name, threshold, train_p, test_p, binary_metrics(y_train, train_p, threshold, seed=seed),
            _metrics(y_test, test_p, threshold, seed), details,
        ))

    def figure(records: Sequence[CaseRecord], key: str) -> np.ndarray:
        return np.array([getattr(record.figures, key) for record in records], dtype=np.float64)

    add("LKB NTCP (QUANTEC)", figure(train, "ntcp_lkb"), figure(test, "ntcp_lkb"),
        {"parameters": "TD50 31.4 Gy, m 0.45, n 1 (not refitted)"})
    for key, label in (("mld_gy", "logistic MLD (fitted)"), ("v20_pct", "logistic V20 (fitted)")):
        fit = fit_logistic(key, figure(train, key), y_train)
        add(label, fit.predict(figure(train, key)), fit.predict(figure(test, key)),
            {"intercept": fit.intercept, "slope": fit.slope, "x50": fit.x50})
    return results
