"""Training of the pneumonitis CNN: a stratified split of the training cohort into a fitting part
and a calibration part, the epoch with the lowest calibration-part loss kept, and Platt scaling
fitted on the calibration part. The held-out test cohort is never seen here.

Crops come in as one array ``[n_patients, channels, D, H, W]`` (float16 or float32, mask last; see
:mod:`rtdeep.pneumonitis.dataset`); labels are 1 for grade >= 2 pneumonitis. Everything is seeded,
so a run repeats exactly on the same machine and thread count.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from rtdeep.pneumonitis.baselines import fit_logistic
from rtdeep.pneumonitis.evaluate import roc_auc
from rtdeep.pneumonitis.model import PneumonitisNet

__all__ = ["TrainConfig", "TrainResult", "predict_probabilities", "stratified_folds", "train_model"]


@dataclass
class TrainConfig:
    """Optimiser and schedule settings.

    Attributes:
        epochs: passes over the fitting patients.
        batch_size: patients per step.
        learning_rate, weight_decay: AdamW settings; the rate decays by cosine to 5% at the end.
        features, dropout: network shape (see :class:`PneumonitisNet`).
        augment: random flips along the three axes and a small intensity jitter.
        calibration_fraction: share of the training cohort kept out of fitting, for choosing the
            epoch, Platt scaling and the decision threshold.
        seed: seeds the split, weights, batch order and augmentation.
        threads: torch CPU threads.
    """

    epochs: int = 16
    batch_size: int = 16
    learning_rate: float = 3e-3
    weight_decay: float = 1e-3
    features: tuple[int, ...] = (8, 16, 32, 32)
    dropout: float = 0.2
    augment: bool = True
    calibration_fraction: float = 0.2
    seed: int = 0
    threads: int = 1

    def to_dict(self) -> dict[str, object]:
        values = asdict(self)
        values["features"] = list(self.features)
        return values


@dataclass
class TrainResult:
    """A trained, calibrated network and how it got there.

    Attributes:
        network: :class:`PneumonitisNet` in eval mode, Platt scaling set.
        calibration_index: indices (into the training arrays) of the calibration part.
        calibration_probabilities: calibrated risks of the calibration part (for the threshold).
        history: per epoch ``{"epoch", "train_loss", "calibration_loss", "calibration_auc"}``.
        best_epoch: the epoch kept (1-based).
        platt: ``(a, b)``.
        seconds: training wall time.
    """

    network: PneumonitisNet
    calibration_index: np.ndarray
    calibration_probabilities: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    platt: tuple[float, float] = (1.0, 0.0)
    seconds: float = 0.0


def stratified_folds(labels: np.ndarray, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Assign each patient to one of ``n_folds`` folds with the same share of positives in each."""
    labels = np.asarray(labels).astype(int)
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=int)
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        rng.shuffle(members)
        folds[members] = np.arange(len(members)) % n_folds
    return folds


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    for axis in (2, 3, 4):
        flip = torch.rand(batch.shape[0], generator=generator) < 0.5
        if flip.any():
            batch[flip] = batch[flip].flip(axis)
    jitter = 1.0 + 0.03 * torch.randn(batch.shape[0], 1, 1, 1, 1, generator=generator)
    batch[:, :-1] = batch[:, :-1] * jitter  # the mask channel stays 0/1
    return batch


def _batch(crops: np.ndarray, index: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(crops[index]), dtype=torch.float32)


@torch.no_grad()
def _logits(network: nn.Module, crops: np.ndarray, batch_size: int = 16, calibrated: bool = True) -> np.ndarray:
    network.eval()
    out = []
    for start in range(0, len(crops), batch_size):
        batch = _batch(crops, np.arange(start, min(start + batch_size, len(crops))))
        logit = network(batch) if calibrated else network.uncalibrated(batch)  # type: ignore[operator]
        out.append(logit.numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def predict_probabilities(network: nn.Module, crops: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Calibrated risk of grade >= 2 pneumonitis for each crop ``[n, channels, D, H, W]`` -> ``(n,)``."""
    return 1.0 / (1.0 + np.exp(-_logits(network, crops, batch_size)))


def _bce(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


def train_model(
    crops: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    log: Callable[[str], None] | None = None,
    spacing_mm: float = 6.0,
) -> TrainResult:
    """Train one :class:`PneumonitisNet` from scratch and calibrate it.

    Args:
        crops: ``[n, channels, D, H, W]`` with the mask last.
        labels: ``(n,)`` 0/1, 1 = grade >= 2 pneumonitis.
        config: settings; ``config.seed`` makes the run repeatable.
        log: called with one line per epoch, if given.
        spacing_mm: voxel size of the crops.
    """
    started = time.perf_counter()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    labels = np.asarray(labels).astype(int)
    parts = max(2, round(1.0 / config.calibration_fraction))
    held = stratified_folds(labels, parts, config.seed + 11) == 0
    fit_index, cal_index = np.flatnonzero(~held), np.flatnonzero(held)
    y_fit = torch.as_tensor(labels[fit_index], dtype=torch.float32)
    network = PneumonitisNet(in_channels=crops.shape[1], features=config.features, dropout=config.dropout,
                             spacing_mm=spacing_mm)
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(len(fit_index) / config.batch_size)))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=config.epochs * steps_per_epoch, eta_min=config.learning_rate * 0.05
    )
    loss_fn = nn.BCEWithLogitsLoss()
    history: list[dict[str, float]] = []
    best_state, best_loss, best_epoch = None, np.inf, 0
    for epoch in range(1, config.epochs + 1):
        network.train()
        order = torch.randperm(len(fit_index), generator=generator).numpy()
        total, seen = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            chosen = order[start : start + config.batch_size]
            if len(chosen) < 2:  # batch norm needs two samples
                continue
            batch = _batch(crops, fit_index[chosen])
            if config.augment:
                batch = _augment(batch, generator)
            optimiser.zero_grad()
            loss = loss_fn(network.uncalibrated(batch), y_fit[chosen])
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(chosen)
            seen += len(chosen)
        row = {"epoch": epoch, "train_loss": total / max(seen, 1)}
        if len(cal_index):
            cal_logits = _logits(network, crops[cal_index], calibrated=False)
            row["calibration_loss"] = _bce(cal_logits, labels[cal_index])
            row["calibration_auc"] = roc_auc(labels[cal_index], cal_logits)
            if row["calibration_loss"] < best_loss:
                best_loss, best_epoch, best_state = row["calibration_loss"], epoch, copy.deepcopy(network.state_dict())
        history.append(row)
        if log:
            log(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    platt = (1.0, 0.0)
    cal_probabilities = np.zeros(0)
    if len(cal_index) and 0 < labels[cal_index].sum() < len(cal_index):
        fit = fit_logistic("cnn_logit", _logits(network, crops[cal_index], calibrated=False), labels[cal_index])
        platt = (float(fit.slope), float(fit.intercept))
        if platt[0] <= 0:  # no ranking on unseen patients: never invert it; the risk becomes the base rate
            rate = float(labels[cal_index].mean())
            platt = (0.0, float(np.log(rate / (1.0 - rate))))
        network.calibration.copy_(torch.tensor(platt, dtype=torch.float32))
        cal_probabilities = predict_probabilities(network, crops[cal_index])
    return TrainResult(network, cal_index, cal_probabilities, history, best_epoch or config.epochs, platt,
                       time.perf_counter() - started)
