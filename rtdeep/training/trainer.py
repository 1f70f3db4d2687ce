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
from rtdeep.models import build_network
from rtdeep.models.architectures import ArchSpec
from rtdeep.sites import Site
from rtdeep.training.data import SegCase
from rtdeep.training.sampling import PatchSampler

__all__ = ["INFERENCE_ROI", "TrainConfig", "TrainResult", "dice_per_organ", "train_segmentation"]

log = logging.getLogger(__name__)

#: sliding-window size (k, j, i) for 3D inference and validation, model voxels
INFERENCE_ROI = (64, 128, 128)


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
            roi_size=INFERENCE_ROI, size_divisor=arch.size_divisor, device=device,
        )
        scores = dice_per_organ(probabilities.argmax(0), case.labels, site.organ_names)
        for (name, score), present in zip(scores.items(), case.present, strict=True):
            if present:
                per_organ[name].append(score)
    return {name: float(np.mean(values)) if values else float("nan") for name, values in per_organ.items()}


def _mean(scores: dict[str, float]) -> float:
    values = [v for v in scores.values() if not np.isnan(v)]
    return float(np.mean(values)) if values else 0.0


def train_segmentation(
    config: TrainConfig,
    site: Site,
    arch: ArchSpec,
    train_cases: Sequence[SegCase],
    val_cases: Sequence[SegCase],
    out_dir: str | Path,
    resume: bool = False,
    log_callback: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train until ``config.time_budget_s`` or ``config.max_epochs``, keeping the best epoch.

    Writes ``out_dir/checkpoint.pt`` (latest state: networks, optimisers, RNG, history) after each
    epoch, ``out_dir/best_model.pt`` (best generator state_dict) and ``out_dir/history.json``.
    With ``resume``, continues from ``checkpoint.pt``; the time budget counts the earlier time too.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    say = log_callback or log.info
    torch.set_num_threads(max(int(config.threads), 1))
    torch.manual_seed(config.seed)
    device = config.device

    generator = build_network(arch.network_spec(site)).to(device)
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
    sampler = PatchSampler(train_cases, arch.spatial_dims, arch.patch_size, arch.context_slices, seed=config.seed)

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
    while epoch < config.max_epochs and elapsed_before + (time.perf_counter() - start) < config.time_budget_s:
        generator.train()
        losses = []
        for _ in range(config.iterations_per_epoch):
            images_np, labels_np = sampler.sample(arch.batch_size)
            images = torch.from_numpy(images_np).to(device)
            labels = torch.from_numpy(labels_np).to(device)
            logits = generator(images)
            loss = seg_loss(logits, labels)
            adversarial = torch.zeros(())
            if critic is not None:
                probabilities = torch.softmax(logits, dim=1)
                onehot = torch.zeros_like(probabilities).scatter_(1, labels, 1.0)
                # critic step: real (image, reference) vs fake (image, prediction)
                optimizer_d.zero_grad()  # type: ignore[union-attr]
                real_logits = critic(torch.cat([images, onehot], 1))
                fake_logits = critic(torch.cat([images, probabilities.detach()], 1))
                critic_loss = 0.5 * (
                    bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))
                )
                critic_loss.backward()
                optimizer_d.step()  # type: ignore[union-attr]
                fooled = critic(torch.cat([images, probabilities], 1))
                adversarial = bce(fooled, torch.ones_like(fooled))
                loss = loss + arch.adversarial_weight * adversarial
            optimizer_g.zero_grad()
            loss.backward()
            optimizer_g.step()
            losses.append(float(loss.detach()))
            iterations += 1
        epoch += 1
        scores = _validate(generator, val_cases, arch, site, device) if val_cases else {}
        mean = _mean(scores) if scores else -float(np.mean(losses))
        elapsed = elapsed_before + time.perf_counter() - start
        record = {"epoch": epoch, "iterations": iterations, "elapsed_s": round(elapsed, 1),
                  "train_loss": float(np.mean(losses)), "val_dice": scores, "val_mean_dice": mean}
        history.append(record)
        say(f"epoch {epoch}: loss {record['train_loss']:.4f}, validation mean Dice {mean:.3f}, {elapsed:.0f} s")
        if mean > best_mean:
            best_epoch, best_scores, best_mean = epoch, scores, mean
            torch.save(generator.state_dict(), out_dir / "best_model.pt")
        torch.save(
            {
                "generator": generator.state_dict(), "optimizer_g": optimizer_g.state_dict(),
                "critic": None if critic is None else critic.state_dict(),
                "optimizer_d": None if optimizer_d is None else optimizer_d.state_dict(),
                "sampler_rng": sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "epoch": epoch, "iterations": iterations, "elapsed_s": elapsed, "history": history,
                "best_epoch": best_epoch, "best_scores": best_scores, "best_mean": best_mean,
                "config": asdict(config),
            },
            out_dir / "checkpoint.tmp",
        )
        (out_dir / "checkpoint.tmp").replace(checkpoint_path)
        (out_dir / "history.json").write_text(json.dumps(history, indent=1))

    if (out_dir / "best_model.pt").is_file():
        generator.load_state_dict(torch.load(out_dir / "best_model.pt", map_location=device, weights_only=True))
    generator.eval()
    return TrainResult(
        network=generator, best_epoch=best_epoch, best_val_dice=best_scores, history=history,
        train_seconds=elapsed_before + time.perf_counter() - start, iterations=iterations,
    )
