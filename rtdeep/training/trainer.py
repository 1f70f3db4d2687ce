"""The segmentation training loop: U-Net (Dice + cross-entropy) or pix2pix-style GAN, with
validation Dice each epoch, checkpoints and resume.

GAN: the generator is the same U-Net; a PatchGAN critic sees (image, class probabilities) pairs,
real pairs carrying the one-hot reference. Generator loss = Dice + CE + ``adversarial_weight`` x
BCE(critic(image, softmax), real). The critic uses Adam lr 2e-4, beta1 0.5 as in pix2pix; the
generator beta1 0.5 with the same learning rate as the plain U-Net (see :class:`ArchSpec`).

Runs on the CPU by default (the ``device`` argument picks CUDA when asked and present). Training
is deterministic for a given seed on one device and thread count.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from rtdeep.inference.predict import predict_probabilities
from rtdeep.inference.preprocess import tissue_level
from rtdeep.models import build_network
from rtdeep.models.architectures import ArchSpec
from rtdeep.sites import Site
from rtdeep.training.data import SegCase
from rtdeep.training.distributed import (
    DistContext,
    average_gradients,
    broadcast_object,
    mean_over_processes,
    share_of_batch,
    wrap_ddp,
)
from rtdeep.training.sampling import PatchSampler

__all__ = ["TrainConfig", "TrainResult", "dice_per_organ", "learning_rate_at", "partial_label_loss",
           "train_segmentation"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Settings of one training run (saved with checkpoints and in the bundle)."""

    site: str
    arch: str
    seed: int = 0
    time_budget_s: float = 360.0
    max_epochs: int = 1000
    iterations_per_epoch: int = 25
    learning_rate: float | None = None
    device: str = "cpu"
    threads: int = 2
    #: generator weights (a ``state_dict`` file, e.g. a bundle's ``models/model.pt``) to start from
    #: (fine-tuning); ignored when resuming from a checkpoint
    init_weights: str | None = None
    #: the learning rate is constant until this iteration, then decays by cosine to 5 % of it at
    #: the last iteration (``max_epochs * iterations_per_epoch``); None keeps it constant. A function
    #: of the iteration count alone, so a resumed run follows the same schedule.
    decay_from_iteration: int | None = None


def learning_rate_at(config: TrainConfig, base: float, iteration: int) -> float:
    """The generator's learning rate for ``iteration`` (0-based) under ``config``'s schedule."""
    start = config.decay_from_iteration
    last = config.max_epochs * config.iterations_per_epoch
    if start is None or iteration < start or last <= start:
        return base
    progress = min((iteration - start) / (last - start), 1.0)
    return base * (0.05 + 0.95 * 0.5 * (1.0 + float(np.cos(np.pi * progress))))


@dataclass
class TrainResult:
    """What a run produced: the best generator (by validation mean Dice) and its history."""

    network: torch.nn.Module
    best_epoch: int
    best_val_dice: dict[str, float]
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    iterations: int = 0


def dice_per_organ(prediction: np.ndarray, reference: np.ndarray, organ_names: Sequence[str]) -> dict[str, float]:
    """Dice of each organ between two label maps (value = organ position + 1); NaN when both are empty."""
    scores = {}
    for value, name in enumerate(organ_names, start=1):
        pred, ref = prediction == value, reference == value
        total = int(pred.sum()) + int(ref.sum())
        scores[name] = float("nan") if total == 0 else 2.0 * float((pred & ref).sum()) / total
    return scores


def _validate(network: torch.nn.Module, cases: Sequence[SegCase], arch: ArchSpec, site: Site, device: str) -> dict:
    per_organ: dict[str, list[float]] = {name: [] for name in site.organ_names}
    for case in cases:
        probabilities = predict_probabilities(
            network, case.image, spatial_dims=arch.spatial_dims, context_slices=arch.context_slices,
            roi_size=arch.inference_window, size_divisor=arch.size_divisor,
            tissue_level=tissue_level(site.intensity_window), device=device,
        )
        scores = dice_per_organ(probabilities.argmax(0), case.labels, site.organ_names)
        for (name, score), present in zip(scores.items(), case.present, strict=True):
            if present:
                per_organ[name].append(score)
    return {name: float(np.mean(values)) if values else float("nan") for name, values in per_organ.items()}


def _mean(scores: dict[str, float]) -> float:
    values = [v for v in scores.values() if not np.isnan(v)]
    return float(np.mean(values)) if values else 0.0


class _CaseTrackingSampler(PatchSampler):
    """A :class:`PatchSampler` that remembers which case each patch of the last batch came from."""

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        self.drawn: list[int] = []
        return super().sample(batch_size)

    def _centre(self, case_index: int) -> np.ndarray:
        self.drawn.append(case_index)
        return super()._centre(case_index)


def partial_label_loss(
    seg_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    logits: torch.Tensor,
    labels: torch.Tensor,
    present: torch.Tensor,
) -> torch.Tensor:
    """Dice + cross-entropy where an organ a study did not delineate is unknown, not background.

    A clinic's structure set often lacks an organ; teaching its voxels as background would teach
    the network to miss it. For each patch, the probabilities of the organs its study lacks are
    merged into background (the marginal loss of Shi et al., MedIA 2021) and their Dice terms left
    out. When every organ is present this is ``seg_loss`` itself (MONAI ``DiceCELoss``).

    Args:
        seg_loss: the loss used when every organ is present.
        logits: ``[b, classes, *spatial]``.
        labels: ``[b, 1, *spatial]`` int64 (0 background, organ position + 1).
        present: ``[b, classes]`` bool: background and the organs each patch's study delineates.
    """
    if bool(present.all()):
        return seg_loss(logits, labels)
    spatial = tuple(range(2, logits.ndim))
    missing = (~present).to(logits.dtype).view(*present.shape, *([1] * len(spatial)))
    probabilities = torch.softmax(logits, dim=1)
    background = probabilities[:, :1] + (probabilities * missing).sum(1, keepdim=True)
    merged = torch.cat([background, probabilities[:, 1:]], 1) * torch.cat(
        [torch.ones_like(missing[:, :1]), 1.0 - missing[:, 1:]], 1)
    onehot = torch.zeros_like(merged).scatter_(1, labels, 1.0)
    intersection = (merged * onehot).sum(spatial)
    dice = 1.0 - (2.0 * intersection + 1e-5) / (merged.sum(spatial) + onehot.sum(spatial) + 1e-5)
    cross_entropy = -(torch.log(merged.clamp_min(1e-8)) * onehot).sum(1).mean()
    # Dice averaged over each patch's known classes, then over patches: a batch split across
    # processes gives the same loss as the whole batch
    per_patch = (dice * present).sum(1) / present.sum(1)
    return per_patch.mean() + cross_entropy


def train_segmentation(
    config: TrainConfig,
    site: Site,
    arch: ArchSpec,
    train_cases: Sequence[SegCase],
    val_cases: Sequence[SegCase],
    out_dir: str | Path,
    resume: bool = False,
    log_callback: Callable[[str], None] | None = None,
    context: DistContext | None = None,
) -> TrainResult:
    """Train until ``config.time_budget_s`` or ``config.max_epochs``, keeping the best epoch.

    Writes ``out_dir/checkpoint.pt`` (latest state: networks, optimisers, RNG, history) after each
    epoch, ``out_dir/best_model.pt`` (best generator state_dict) and ``out_dir/history.json``.
    With ``resume``, continues from ``checkpoint.pt``; the time budget counts the earlier time too.

    Organs a training case lacks (``SegCase.present``) are left out of its loss
    (:func:`partial_label_loss`). Under ``torchrun`` (``context`` from
    :func:`rtdeep.training.distributed.init_distributed`) the generator trains in
    DistributedDataParallel, each process on its share of the same global batch; rank 0 validates,
    decides when to stop and alone writes files.
    """
    context = context or DistContext(device=config.device)
    out_dir = Path(out_dir)
    if context.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    say = (log_callback or log.info) if context.is_main else (lambda line: None)
    torch.set_num_threads(max(int(config.threads), 1))
    torch.manual_seed(config.seed)
    device = config.device

    generator = build_network(arch.network_spec(site)).to(device)
    if config.init_weights:
        generator.load_state_dict(torch.load(config.init_weights, map_location=device, weights_only=True))
    lr = config.learning_rate or arch.learning_rate
    betas = (0.5, 0.999) if arch.is_gan else (0.9, 0.999)
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
    critic = optimizer_d = None
    if arch.is_gan:
        critic = build_network(arch.critic_spec(site)).to(device)
        optimizer_d = torch.optim.Adam(critic.parameters(), lr=arch.critic_learning_rate, betas=(0.5, 0.999))

    from monai.losses import DiceCELoss

    seg_loss = DiceCELoss(to_onehot_y=True, softmax=True)
    bce = torch.nn.BCEWithLogitsLoss()
    sampler = _CaseTrackingSampler(train_cases, arch.spatial_dims, arch.patch_size, arch.context_slices,
                                   seed=config.seed)
    presence = np.array([np.concatenate([[True], np.asarray(case.present, bool)]) for case in train_cases])
    share = share_of_batch(arch.batch_size, context)
    net = wrap_ddp(generator, context)

    history: list[dict] = []
    epoch, iterations, elapsed_before = 0, 0, 0.0
    best_epoch, best_scores, best_mean = -1, {}, -float("inf")
    checkpoint_path = out_dir / "checkpoint.pt"
    if resume and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        generator.load_state_dict(state["generator"])
        optimizer_g.load_state_dict(state["optimizer_g"])
        if critic is not None and state.get("critic") is not None:
            critic.load_state_dict(state["critic"])
            optimizer_d.load_state_dict(state["optimizer_d"])  # type: ignore[union-attr]
        sampler.rng.bit_generator.state = state["sampler_rng"]
        torch.set_rng_state(state["torch_rng"])
        epoch, iterations, elapsed_before = state["epoch"], state["iterations"], state["elapsed_s"]
        history = state["history"]
        best_epoch, best_scores, best_mean = state["best_epoch"], state["best_scores"], state["best_mean"]
        say(f"resumed at epoch {epoch} ({elapsed_before:.0f} s trained)")

    start = time.perf_counter()
    while broadcast_object(
            epoch < config.max_epochs and elapsed_before + (time.perf_counter() - start) < config.time_budget_s,
            context):
        generator.train()
        losses = []
        for _ in range(config.iterations_per_epoch):
            images_np, labels_np = sampler.sample(arch.batch_size)
            present = torch.from_numpy(presence[sampler.drawn][share]).to(device)
            images = torch.from_numpy(images_np[share]).to(device)
            labels = torch.from_numpy(labels_np[share]).to(device)
            logits = net(images)
            loss = partial_label_loss(seg_loss, logits, labels, present)
            adversarial = torch.zeros(())
            if critic is not None:
                probabilities = torch.softmax(logits, dim=1)
                onehot = torch.zeros_like(probabilities).scatter_(1, labels, 1.0)
                # critic step: real (image, reference) vs fake (image, prediction)
                optimizer_d.zero_grad()  # type: ignore[union-attr]
                # MONAI's PatchDiscriminator returns every stage's features; the last is the patch logits
                real_logits = critic(torch.cat([images, onehot], 1))[-1]
                fake_logits = critic(torch.cat([images, probabilities.detach()], 1))[-1]
                critic_loss = 0.5 * (
                    bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))
                )
                critic_loss.backward()
                average_gradients(critic, context)
                optimizer_d.step()  # type: ignore[union-attr]
                fooled = critic(torch.cat([images, probabilities], 1))[-1]
                adversarial = bce(fooled, torch.ones_like(fooled))
                loss = loss + arch.adversarial_weight * adversarial
            for group in optimizer_g.param_groups:
                group["lr"] = learning_rate_at(config, lr, iterations)
            optimizer_g.zero_grad()
            loss.backward()
            optimizer_g.step()
            losses.append(float(loss.detach()))
            iterations += 1
        epoch += 1
        train_loss = mean_over_processes(float(np.mean(losses)), context)
        scores = _validate(generator, val_cases, arch, site, device) if val_cases and context.is_main else {}
        mean = _mean(scores) if scores else -train_loss
        scores, mean = broadcast_object((scores, mean), context)
        elapsed = elapsed_before + time.perf_counter() - start
        record = {"epoch": epoch, "iterations": iterations, "elapsed_s": round(elapsed, 1),
                  "train_loss": train_loss, "val_dice": scores, "val_mean_dice": mean}
        history.append(record)
        say(f"epoch {epoch}: loss {record['train_loss']:.4f}, validation mean Dice {mean:.3f}, {elapsed:.0f} s")
        if mean > best_mean:
            best_epoch, best_scores, best_mean = epoch, scores, mean
            if context.is_main:
                torch.save(generator.state_dict(), out_dir / "best_model.pt")
        if context.is_main:
            _save_checkpoint(out_dir, {
                "generator": generator.state_dict(), "optimizer_g": optimizer_g.state_dict(),
                "critic": None if critic is None else critic.state_dict(),
                "optimizer_d": None if optimizer_d is None else optimizer_d.state_dict(),
                "sampler_rng": sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "epoch": epoch, "iterations": iterations, "elapsed_s": elapsed, "history": history,
                "best_epoch": best_epoch, "best_scores": best_scores, "best_mean": best_mean,
                "config": asdict(config),
            }, history)

    if context.is_main and (out_dir / "best_model.pt").is_file():
        generator.load_state_dict(torch.load(out_dir / "best_model.pt", map_location=device, weights_only=True))
    generator.eval()
    return TrainResult(
        network=generator, best_epoch=best_epoch, best_val_dice=best_scores, history=history,
        train_seconds=elapsed_before + time.perf_counter() - start, iterations=iterations,
    )


def _save_checkpoint(out_dir: Path, state: dict, history: list[dict]) -> None:
    """``checkpoint.pt`` and ``history.json``, each written to a temporary name and renamed."""
    torch.save(state, out_dir / "checkpoint.tmp")
    (out_dir / "checkpoint.tmp").replace(out_dir / "checkpoint.pt")
    (out_dir / "history.tmp").write_text(json.dumps(history, indent=1))
    (out_dir / "history.tmp").replace(out_dir / "history.json")
