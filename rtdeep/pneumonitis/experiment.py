"""One pneumonitis experiment: the CNN trained and calibrated on a training cohort, evaluated on
held-out patients, beside the dose-only models and (for phantoms) the limit.

The decision threshold of every model is chosen on the training cohort only (Youden's J: for the
CNN on the calibrated risks of the training patients kept out of fitting; for the dose-only models
on the training-set risks) and then applied to the held-out patients unchanged. The positive class
is grade >= 2 radiation pneumonitis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rtdeep.pneumonitis.baselines import fit_logistic
from rtdeep.pneumonitis.dataset import CHANNELS, CaseRecord
from rtdeep.pneumonitis.evaluate import BinaryMetrics, binary_metrics, youden_threshold
from rtdeep.pneumonitis.model import PneumonitisNet
from rtdeep.pneumonitis.train import TrainConfig, TrainResult, predict_probabilities, train_model
from rtdeep.training.distributed import DistContext

__all__ = ["LIMIT_NAME", "ExperimentResult", "ModelResult", "covariate_values", "run_baselines", "run_cnn",
           "stack_inputs"]

#: the row of the phantom outcome model's own probability
LIMIT_NAME = "limit: outcome model's own risk"


@dataclass
class ModelResult:
    """One model's predictions and metrics on the training and held-out patients.

    Attributes:
        name: e.g. ``"CNN lung-dose20"``, ``"LKB NTCP (QUANTEC)"``.
        threshold: chosen on the training cohort.
        train_probabilities: risks of the training patients the threshold was chosen on (for the CNN:
            the calibration part, which the network did not fit).
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
    """A CNN result plus its network (for a bundle) and training record."""

    cnn: ModelResult
    network: PneumonitisNet
    crop_name: str
    channels: tuple[str, ...]
    config: TrainConfig
    training: TrainResult


def stack_inputs(records: Sequence[CaseRecord], crop_name: str, channels: Sequence[str]) -> np.ndarray:
    """``[n, len(channels), D, H, W]`` (float16) from the records' stored channels."""
    planes = [CHANNELS.index(c) for c in channels]
    return np.stack([record.inputs[crop_name][planes] for record in records])


def covariate_values(records: Sequence[CaseRecord], names: Sequence[str]) -> np.ndarray | None:
    """``[n, len(names)]`` of the records' dose figures (None without names)."""
    if not names:
        return None
    return np.array([[record.figures[name] for name in names] for record in records], dtype=np.float64)


def _labels(records: Sequence[CaseRecord]) -> np.ndarray:
    return np.array([record.label for record in records], dtype=int)


def _metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float, seed: int,
             is_probability: bool = True) -> BinaryMetrics | None:
    if len(labels) == 0:
        return None
    return binary_metrics(labels, probabilities, threshold, seed=seed, is_probability=is_probability)


def run_cnn(
    train: Sequence[CaseRecord],
    test: Sequence[CaseRecord],
    crop_name: str,
    channels: Sequence[str] = ("ct", "mask"),
    config: TrainConfig | None = None,
    log: Callable[[str], None] | None = None,
    spacing_mm: float = 6.0,
    context: DistContext | None = None,
) -> ExperimentResult:
    """Train and calibrate the CNN on ``train``, evaluate it on ``test`` (``context``: see
    :func:`~rtdeep.pneumonitis.train.train_model`)."""
    config = config or TrainConfig()
    y_train = _labels(train)
    x_train = stack_inputs(train, crop_name, channels)
    training = train_model(x_train, y_train, config, log=log, spacing_mm=spacing_mm, context=context,
                           covariates=covariate_values(train, config.covariates))
    del x_train
    y_cal = y_train[training.calibration_index]
    threshold = youden_threshold(y_cal, training.calibration_probabilities)
    started = time.perf_counter()
    test_probabilities = (predict_probabilities(training.network, stack_inputs(test, crop_name, channels),
                                                covariates=covariate_values(test, config.covariates))
                          if len(test) else np.zeros(0))
    result = ModelResult(
        name=f"CNN {crop_name}" + (" +dose" if "dose" in channels else "")
             + "".join(f" + {name}" for name in config.covariates),
        threshold=threshold,
        train_probabilities=training.calibration_probabilities,
        test_probabilities=test_probabilities,
        train_metrics=binary_metrics(y_cal, training.calibration_probabilities, threshold, seed=config.seed),
        test_metrics=_metrics(_labels(test), test_probabilities, threshold, config.seed),
        details={
            "train_seconds": round(training.seconds, 1),
            "test_predict_seconds": round(time.perf_counter() - started, 3),
            "n_parameters": sum(p.numel() for p in training.network.parameters()),
            "n_fit": int(len(y_train) - len(y_cal)), "n_calibration": len(y_cal),
            "best_epoch": training.best_epoch, "averaged": training.averaged, "platt": list(training.platt),
            "history": training.history,
        },
    )
    return ExperimentResult(result, training.network, crop_name, tuple(channels), config, training)


def run_baselines(train: Sequence[CaseRecord], test: Sequence[CaseRecord], seed: int = 0) -> list[ModelResult]:
    """The dose-only models on the same patients: QUANTEC LKB (fixed parameters), logistic regressions
    on mean lung dose and on V20 fitted to the training cohort; for phantoms also the limit (the
    outcome model's own probability) and the image factor it uses (ILD volume in V20) alone."""
    y_train, y_test = _labels(train), _labels(test)
    results = []

    def add(name: str, train_p: np.ndarray, test_p: np.ndarray, details: dict[str, object],
            is_probability: bool = True) -> None:
        threshold = youden_threshold(y_train, train_p)
        results.append(ModelResult(
            name, threshold, train_p, test_p,
            binary_metrics(y_train, train_p, threshold, seed=seed, is_probability=is_probability),
            _metrics(y_test, test_p, threshold, seed, is_probability), details,
        ))

    def figure(records: Sequence[CaseRecord], key: str) -> np.ndarray:
        return np.array([record.figures.get(key, np.nan) for record in records], dtype=np.float64)

    add("LKB NTCP (QUANTEC)", figure(train, "ntcp_lkb"), figure(test, "ntcp_lkb"),
        {"parameters": "TD50 31.4 Gy, m 0.45, n 1 (not refitted)"})
    for key, label in (("mld_gy", "logistic MLD (fitted)"), ("v20_pct", "logistic V20 (fitted)")):
        fit = fit_logistic(key, figure(train, key), y_train)
        add(label, fit.predict(figure(train, key)), fit.predict(figure(test, key)),
            {"intercept": fit.intercept, "slope": fit.slope, "x50": fit.x50})
    if all("risk" in r.figures for r in [*train, *test]):
        add(LIMIT_NAME, figure(train, "risk"), figure(test, "risk"),
            {"what": "the probability the phantom's outcome was drawn from (rtdeep.phantom.outcome)"})
        add("ILD volume in V20 (cc, score)", figure(train, "ild_in_v20_cc"), figure(test, "ild_in_v20_cc"),
            {"what": "the outcome model's image factor alone"}, is_probability=False)
    return results
