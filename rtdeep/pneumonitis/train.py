"""Training of the pneumonitis CNN: a stratified split of the training cohort into a fitting part
and a calibration part, the epoch with the lowest calibration-part loss kept, and Platt scaling
fitted on the calibration part. The held-out test cohort is never seen here.

Crops come in as one array ``[n_patients, channels, D, H, W]`` (float16 or float32, mask last; see
:mod:`rtdeep.pneumonitis.dataset`); labels are 1 for grade >= 2 pneumonitis. Everything is seeded,
so a run repeats exactly on the same machine and thread count.

Under ``torchrun`` (a :class:`~rtdeep.training.distributed.DistContext` of several processes) every
process draws the same global batch and augmentation from the same generator and trains on its
share of the batch in DistributedDataParallel; batch norm uses the statistics of the global batch
(:class:`GlobalBatchNorm3d`) and dropout the global batch's mask (every process draws it from the
same seeded stream and keeps its share's rows), so 1 and N processes follow the same trajectory up
to rounding. Every process evaluates the calibration part; rank 0's choice of the best epoch is
broadcast.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from rtdeep.pneumonitis.baselines import fit_logistic_regression
from rtdeep.pneumonitis.evaluate import roc_auc
from rtdeep.pneumonitis.model import PneumonitisNet
from rtdeep.training.distributed import DistContext, broadcast_object, mean_over_processes, wrap_ddp

__all__ = ["GlobalBatchNorm3d", "TrainConfig", "TrainResult", "predict_probabilities", "stratified_folds",
           "train_model"]


@dataclass
class TrainConfig:
    """Optimiser and schedule settings.

    Attributes:
        epochs: passes over the fitting patients (60: on 1,000 phantoms the calibration-part AUC of
            the lung-dose20 model was still rising at 40 epochs, 0.71 at 10, 0.84 at 35-40).
        batch_size: patients per step.
        learning_rate, weight_decay: AdamW settings; the rate decays by cosine to 5% at the end.
        features, dropout: network shape (see :class:`PneumonitisNet`).
        augment: random flips along the three axes and a small intensity jitter.
        average_last: also average the weights of the last this many epochs (stochastic weight
            averaging, batch-norm statistics then recomputed on the fitting patients); the
            calibration part decides between the average and the best single epoch. One epoch's
            weights are noisy here: held-out AUC 0.73-0.80 over runs that differ only in length.
            0 turns it off.
        calibration_fraction: share of the training cohort kept out of fitting, for choosing the
            epoch, Platt scaling and the decision threshold.
        seed: seeds the split, weights, batch order and augmentation.
        threads: torch CPU threads.
        covariates: per-patient dose figures (e.g. ``("mld_gy",)``) the Platt scaling also takes
            (see :class:`PneumonitisNet`); empty for an image-only model.
    """

    epochs: int = 60
    batch_size: int = 16
    learning_rate: float = 3e-3
    weight_decay: float = 1e-3
    features: tuple[int, ...] = (8, 16, 32, 32)
    dropout: float = 0.2
    augment: bool = True
    average_last: int = 20
    calibration_fraction: float = 0.2
    seed: int = 0
    threads: int = 1
    covariates: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        values = asdict(self)
        values["features"] = list(self.features)
        values["covariates"] = list(self.covariates)
        return values


@dataclass
class TrainResult:
    """A trained, calibrated network and how it got there.

    Attributes:
        network: :class:`PneumonitisNet` in eval mode, Platt scaling set.
        calibration_index: indices (into the training arrays) of the calibration part.
        calibration_probabilities: calibrated risks of the calibration part (for the threshold).
        history: per epoch ``{"epoch", "train_loss", "calibration_loss", "calibration_auc"}``.
        best_epoch: the epoch kept (1-based); with ``averaged``, the last epoch averaged.
        averaged: the weights kept are the average of epochs ``best_epoch - average_last + 1`` to
            ``best_epoch`` (see :attr:`TrainConfig.average_last`).
        platt: ``(a, b)``, then one weight per covariate.
        seconds: training wall time.
    """

    network: PneumonitisNet
    calibration_index: np.ndarray
    calibration_probabilities: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    averaged: bool = False
    platt: tuple[float, ...] = (1.0, 0.0)
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


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient: every process's loss reaches
    the inputs of every other process through the shared statistics."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        import torch.distributed as dist

        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _SumOverProcesses.apply(grad)


class GlobalBatchNorm3d(nn.BatchNorm3d):
    """Batch norm whose training statistics are those of the whole batch over all processes.

    ``torch.nn.SyncBatchNorm`` refuses CPU tensors (gloo), so this one all-reduces the channel sums
    (then the squared deviations) with a differentiable all-reduce; it serves gloo and NCCL alike.
    Without a process group, or in eval mode, it is ``BatchNorm3d``. A share of one sample per
    process is fine: the statistics are the global batch's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        all_reduce = _SumOverProcesses.apply
        dims, shape = (0, 2, 3, 4), (1, -1, 1, 1, 1)
        count_here = x.new_full((1,), x.numel() / x.shape[1])
        sums = all_reduce(torch.cat([x.sum(dims), count_here]))
        count = sums[-1].detach()
        mean = sums[:-1] / count
        variance = all_reduce(((x - mean.view(shape)) ** 2).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(variance.detach() * count / (count - 1).clamp_min(1.0), factor)
        out = (x - mean.view(shape)) * torch.rsqrt(variance + self.eps).view(shape)
        return out * self.weight.view(shape) + self.bias.view(shape) if self.affine else out


def _global_batch_norm(module: nn.Module) -> None:
    """Replace every ``BatchNorm3d`` under ``module`` by a :class:`GlobalBatchNorm3d` (same state)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm3d) and not isinstance(child, GlobalBatchNorm3d):
            replacement = GlobalBatchNorm3d(child.num_features, child.eps, child.momentum, child.affine,
                                            child.track_running_stats)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement)
        else:
            _global_batch_norm(child)


class _DropoutOfShare(nn.Dropout):
    """Dropout of this process's rows of the global batch: the mask is drawn for the whole batch
    (as ``nn.Dropout`` on one process draws it, from the same seeded stream) and sliced. Set
    :attr:`rows` = ``(global batch size, this process's rows)`` before each training step."""

    rows: tuple[int, np.ndarray] = (0, np.zeros(0, dtype=int))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        size, rows = self.rows
        noise = torch.empty((size, *x.shape[1:]), dtype=x.dtype).bernoulli_(1 - self.p).div_(1 - self.p)
        return x * noise[torch.as_tensor(rows)].to(x.device)


class _Uncalibrated(nn.Module):
    """``network.uncalibrated`` as ``forward``, for DistributedDataParallel (which wraps ``forward``)."""

    def __init__(self, network: PneumonitisNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, crop: torch.Tensor) -> torch.Tensor:
        return self.network.uncalibrated(crop)


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    for axis in (2, 3, 4):
        flip = torch.rand(batch.shape[0], generator=generator) < 0.5
        if flip.any():
            batch[flip] = batch[flip].flip(axis)
    jitter = 1.0 + 0.03 * torch.randn(batch.shape[0], 1, 1, 1, 1, generator=generator)
    batch[:, :-1] = batch[:, :-1] * jitter  # the mask channel stays 0/1
    return batch


def _with_batch_norm_of(module: nn.Module, crops: np.ndarray, index: np.ndarray, batch_size: int,
                        device: torch.device) -> dict[str, torch.Tensor]:
    """``module``'s state with batch-norm running statistics recomputed over ``crops[index]`` (the
    averaged weights need their own: torch.optim.swa_utils.update_bn, without augmentation)."""
    module = copy.deepcopy(module)
    batches = [_batch(crops, index[start : start + batch_size]).to(device)
               for start in range(0, len(index), batch_size) if len(index[start : start + batch_size]) > 1]
    with torch.no_grad():  # batch norm is in the image path alone (covariates only shift the calibrated logit)
        torch.optim.swa_utils.update_bn(batches, _Uncalibrated(module), device=device)
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def _batch(crops: np.ndarray, index: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(crops[index]), dtype=torch.float32)


@torch.no_grad()
def _logits(network: nn.Module, crops: np.ndarray, batch_size: int = 16, calibrated: bool = True,
            covariates: np.ndarray | None = None) -> np.ndarray:
    network.eval()
    device = next(network.parameters()).device
    out = []
    for start in range(0, len(crops), batch_size):
        rows = np.arange(start, min(start + batch_size, len(crops)))
        batch = _batch(crops, rows).to(device)
        if not calibrated:
            logit = network.uncalibrated(batch)  # type: ignore[operator]
        elif covariates is None:
            logit = network(batch)
        else:
            logit = network(batch, torch.as_tensor(np.asarray(covariates)[rows], dtype=torch.float32, device=device))
        out.append(logit.cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def predict_probabilities(network: nn.Module, crops: np.ndarray, batch_size: int = 16,
                          covariates: np.ndarray | None = None) -> np.ndarray:
    """Calibrated risk of grade >= 2 pneumonitis for each crop ``[n, channels, D, H, W]`` -> ``(n,)``;
    ``covariates`` ``[n, m]`` for a model with covariates."""
    return 1.0 / (1.0 + np.exp(-_logits(network, crops, batch_size, covariates=covariates)))


def _bce(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


def train_model(
    crops: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    log: Callable[[str], None] | None = None,
    spacing_mm: float = 6.0,
    context: DistContext | None = None,
    covariates: np.ndarray | None = None,
) -> TrainResult:
    """Train one :class:`PneumonitisNet` from scratch and calibrate it.

    Args:
        crops: ``[n, channels, D, H, W]`` with the mask last.
        labels: ``(n,)`` 0/1, 1 = grade >= 2 pneumonitis.
        config: settings; ``config.seed`` makes the run repeatable.
        covariates: ``[n, len(config.covariates)]`` per-patient values of ``config.covariates``
            (needed when there are any; used only by the Platt scaling).
        log: called with one line per epoch, if given.
        spacing_mm: voxel size of the crops.
        context: the processes under ``torchrun`` (default: this one process, on the CPU); every
            process calls this with the same arguments and gets the same result; only rank 0 logs.
    """
    context = context or DistContext()
    if config.covariates and (covariates is None or np.shape(covariates) != (len(labels), len(config.covariates))):
        raise ValueError(f"covariates {', '.join(config.covariates)} need an [n, {len(config.covariates)}] array")
    device = torch.device(context.device)
    started = time.perf_counter()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    labels = np.asarray(labels).astype(int)
    parts = max(2, round(1.0 / config.calibration_fraction))
    held = stratified_folds(labels, parts, config.seed + 11) == 0
    fit_index, cal_index = np.flatnonzero(~held), np.flatnonzero(held)
    y_fit = torch.as_tensor(labels[fit_index], dtype=torch.float32).to(device)
    network_kwargs = {"in_channels": crops.shape[1], "features": config.features, "dropout": config.dropout,
                      "spacing_mm": spacing_mm, "covariates": tuple(config.covariates)}
    network = PneumonitisNet(**network_kwargs)
    if context.distributed:
        _global_batch_norm(network)
        network.dropout = _DropoutOfShare(config.dropout)
    network.to(device)
    step = wrap_ddp(_Uncalibrated(network), context) if context.distributed else network.uncalibrated
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(len(fit_index) / config.batch_size)))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=config.epochs * steps_per_epoch, eta_min=config.learning_rate * 0.05
    )
    loss_fn = nn.BCEWithLogitsLoss()
    history: list[dict[str, float]] = []
    best_state, best_loss, best_epoch = None, np.inf, 0
    average_from = config.epochs - config.average_last + 1 if 0 < config.average_last < config.epochs else None
    averaged_model = None
    for epoch in range(1, config.epochs + 1):
        network.train()
        order = torch.randperm(len(fit_index), generator=generator).numpy()
        total, seen = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            chosen = order[start : start + config.batch_size]
            if len(chosen) < max(2, context.world_size):  # batch norm needs two samples, each process one
                continue
            batch = _batch(crops, fit_index[chosen])
            if config.augment:
                batch = _augment(batch, generator)
            optimiser.zero_grad()
            if context.distributed:  # this process's share; the sum over shares / the batch is its mean loss
                share = np.array_split(np.arange(len(chosen)), context.world_size)[context.rank]
                network.dropout.rows = (len(chosen), share)
                loss = functional.binary_cross_entropy_with_logits(
                    step(batch[share].to(device)), y_fit[chosen[share]], reduction="sum"
                ) * (context.world_size / len(chosen))  # DDP averages the gradients over processes
            else:
                loss = loss_fn(step(batch.to(device)), y_fit[chosen])
            loss.backward()
            optimiser.step()
            schedule.step()
            total += mean_over_processes(float(loss.detach()), context) * len(chosen)
            seen += len(chosen)
        row = {"epoch": epoch, "train_loss": total / max(seen, 1)}
        if len(cal_index):
            cal_logits = _logits(network, crops[cal_index], calibrated=False)
            row["calibration_loss"] = _bce(cal_logits, labels[cal_index])
            row["calibration_auc"] = roc_auc(labels[cal_index], cal_logits)
            if broadcast_object(row["calibration_loss"] < best_loss, context):  # rank 0 decides
                best_loss, best_epoch, best_state = row["calibration_loss"], epoch, copy.deepcopy(network.state_dict())
        if average_from is not None and epoch >= average_from:
            if averaged_model is None:
                averaged_model = torch.optim.swa_utils.AveragedModel(network)
            else:
                averaged_model.update_parameters(network)
        history.append(row)
        if log and context.is_main:
            log(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    averaged = False
    if averaged_model is not None:
        averaged_state = _with_batch_norm_of(averaged_model.module, crops, fit_index, config.batch_size, device)
        if len(cal_index):  # the network's own weights are replaced below by the state kept either way
            network.load_state_dict(averaged_state)
            averaged_loss = _bce(_logits(network, crops[cal_index], calibrated=False), labels[cal_index])
            averaged = bool(broadcast_object(averaged_loss <= best_loss, context))
            if log and context.is_main:
                log(f"average of epochs {average_from}-{config.epochs}: calibration_loss {averaged_loss:.4f} "
                    f"({'kept' if averaged else 'not kept'}; best single epoch {best_epoch}: {best_loss:.4f})")
        else:
            averaged = True
        if averaged:
            best_state, best_epoch = averaged_state, config.epochs
    if best_state is not None:
        network.load_state_dict(best_state)
    if context.distributed or device.type != "cpu":  # a plain network on the CPU, as one process returns
        trained, network = network, PneumonitisNet(**network_kwargs)
        network.load_state_dict({key: value.cpu() for key, value in trained.state_dict().items()})
    network.eval()
    n_covariates = len(config.covariates)
    platt: tuple[float, ...] = (1.0, 0.0, *([0.0] * n_covariates))
    cal_probabilities = np.zeros(0)
    cal_covariates = None if covariates is None or not n_covariates else np.asarray(covariates, float)[cal_index]
    if len(cal_index) and 0 < labels[cal_index].sum() < len(cal_index):
        # Platt scaling: logistic regression on [CNN logit, covariates...] -> (a, b, w...)
        features = _logits(network, crops[cal_index], calibrated=False)[:, None]
        if cal_covariates is not None:
            features = np.column_stack([features, cal_covariates])
        intercept, slopes = fit_logistic_regression(features, labels[cal_index])
        platt = (float(slopes[0]), intercept, *(float(w) for w in slopes[1:]))
        if platt[0] <= 0:  # no ranking on unseen patients: never invert it; the risk becomes the base rate
            rate = float(labels[cal_index].mean())
            platt = (0.0, float(np.log(rate / (1.0 - rate))), *([0.0] * n_covariates))
            if cal_covariates is not None:  # ... or the covariates' own model
                intercept, slopes = fit_logistic_regression(cal_covariates, labels[cal_index])
                platt = (0.0, intercept, *(float(w) for w in slopes))
        network.calibration.copy_(torch.tensor(platt[:2], dtype=torch.float32))
        if n_covariates:
            network.covariate_weights.copy_(torch.tensor(platt[2:], dtype=torch.float32))
        cal_probabilities = predict_probabilities(network, crops[cal_index], covariates=cal_covariates)
    return TrainResult(network, cal_index, cal_probabilities, history, best_epoch or config.epochs, averaged, platt,
                       time.perf_counter() - started)
