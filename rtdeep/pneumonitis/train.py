"""Training loops for the pneumonitis CNN: one model, stratified folds, cross-validation.

Crops come in as one float32 array ``[n_patients, channels, D, H, W]`` (already masked, windowed and
resampled, see :mod:`rtdeep.pneumonitis.dataset`); labels are 1 for grade >= 2 pneumonitis.
Everything is seeded, so a run repeats exactly on the same machine and thread count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from rtdeep.pneumonitis.model import PneumonitisCNN

__all__ = ["CvResult", "TrainConfig", "cross_validate", "predict_probabilities", "stratified_folds", "train_model"]


@dataclass
class TrainConfig:
    """Optimiser and schedule settings.

    Attributes:
        epochs: passes over the training patients.
        batch_size: patients per step.
        learning_rate, weight_decay: Adam(W) settings; the rate decays by cosine to 5% at the end.
        features, dropout: network shape (see :class:`PneumonitisCNN`).
        augment: random flips along the three axes and a small intensity jitter.
        balance: weight positives by n_negative / n_positive in the loss.
        seed: seeds weights, batch order and augmentation.
        threads: torch CPU threads.
    """

    epochs: int = 30
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-3
    features: tuple[int, ...] = (8, 16, 32, 64)
    dropout: float = 0.3
    augment: bool = True
    balance: bool = True
    seed: int = 0
    threads: int = 1

    def to_dict(self) -> dict[str, object]:
        values = asdict(self)
        values["features"] = list(self.features)
        return values


@dataclass
class CvResult:
    """Out-of-fold predictions of a k-fold cross-validation.

    Attributes:
        oof_probabilities: each patient's risk predicted by the model that did not see it, ``(n,)``.
        fold_of_patient: which fold each patient was held out in, ``(n,)``.
        models: the fold models (eval mode), in fold order.
        seconds: wall time of all folds.
    """

    oof_probabilities: np.ndarray
    fold_of_patient: np.ndarray
    models: list[PneumonitisCNN] = field(default_factory=list)
    seconds: float = 0.0


def stratified_folds(labels: np.ndarray, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Assign each patient to one of ``n_folds`` folds with the same share of positives in each.

    Returns:
        ``(n,)`` int array of fold numbers.
    """
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
    scale = 1.0 + 0.05 * torch.randn(batch.shape[0], 1, 1, 1, 1, generator=generator)
    return batch * scale


def train_model(
    crops: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    log: Callable[[str], None] | None = None,
) -> PneumonitisCNN:
    """Train one :class:`PneumonitisCNN` from scratch.

    Args:
        crops: float32 ``[n, channels, D, H, W]``.
        labels: ``(n,)`` 0/1, 1 = grade >= 2 pneumonitis.
        config: settings; ``config.seed`` makes the run repeatable.
        log: called with one line per few epochs (loss), if given.

    Returns:
        The trained network in eval mode.
    """
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x_all = torch.as_tensor(np.ascontiguousarray(crops), dtype=torch.float32)
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    network = PneumonitisCNN(in_channels=x_all.shape[1], features=config.features, dropout=config.dropout)
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(len(y_all) / config.batch_size)))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=config.epochs * steps_per_epoch, eta_min=config.learning_rate * 0.05
    )
    n_pos = float(y_all.sum())
    pos_weight = (len(y_all) - n_pos) / n_pos if config.balance and 0 < n_pos < len(y_all) else 1.0
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
    network.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(y_all), generator=generator)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            if len(index) < 2:  # batch norm needs two samples
                continue
            batch = x_all[index].clone()
            if config.augment:
                batch = _augment(batch, generator)
            optimiser.zero_grad()
            loss = loss_fn(network(batch), y_all[index])
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(index)
        if log and (epoch % 10 == 9 or epoch == config.epochs - 1):
            log(f"epoch {epoch + 1}/{config.epochs} loss {total / len(y_all):.4f}")
    return network.eval()


@torch.no_grad()
def predict_probabilities(network: nn.Module, crops: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Risk of grade >= 2 pneumonitis for each crop ``[n, channels, D, H, W]`` -> ``(n,)`` in [0, 1]."""
    network.eval()
    out = []
    for start in range(0, len(crops), batch_size):
        batch = torch.as_tensor(np.ascontiguousarray(crops[start : start + batch_size]), dtype=torch.float32)
        out.append(torch.sigmoid(network(batch)).numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def cross_validate(
    crops: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    n_folds: int = 5,
    log: Callable[[str], None] | None = None,
    folds: Sequence[int] | np.ndarray | None = None,
) -> CvResult:
    """Stratified k-fold cross-validation: train on k-1 folds, predict the held-out fold.

    Returns:
        :class:`CvResult` with out-of-fold risks and the k fold models.
    """
    labels = np.asarray(labels).astype(int)
    fold_of_patient = stratified_folds(labels, n_folds, config.seed) if folds is None else np.asarray(folds)
    oof = np.full(len(labels), np.nan)
    models = []
    started = time.perf_counter()
    for fold in range(n_folds):
        held_out = fold_of_patient == fold
        fold_config = TrainConfig(**{**asdict(config), "seed": config.seed + 1000 * (fold + 1)})
        if log:
            log(f"fold {fold + 1}/{n_folds}: {int((~held_out).sum())} training, {int(held_out.sum())} held out")
        model = train_model(crops[~held_out], labels[~held_out], fold_config, log=log)
        oof[held_out] = predict_probabilities(model, crops[held_out])
        models.append(model)
    return CvResult(oof, fold_of_patient, models, time.perf_counter() - started)
