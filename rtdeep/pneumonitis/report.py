"""Text output of pneumonitis experiments: the comparison table (with the limit beside it when the
cohort is synthetic), confusion matrices, the reliability table and plot, the model card. Every
table states the positive class (grade >= 2 radiation pneumonitis)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rtdeep.pneumonitis.evaluate import (
    CONFUSION_LEGEND,
    POSITIVE_CLASS,
    BinaryMetrics,
    format_confusion,
    reliability_curve,
)
from rtdeep.pneumonitis.experiment import LIMIT_NAME, ExperimentResult, ModelResult

__all__ = [
    "format_confusions",
    "format_reliability",
    "format_results_table",
    "model_card",
    "results_json",
    "save_reliability_png",
]


def _pct(value: float) -> str:
    return "  n/a" if value is None or math.isnan(value) else f"{100 * value:5.1f}"


def _auc(metrics: BinaryMetrics | None) -> str:
    if metrics is None or math.isnan(metrics.auc):
        return "n/a"
    return f"{metrics.auc:.3f} [{metrics.auc_ci_low:.2f}, {metrics.auc_ci_high:.2f}]"


def _limit(results: Sequence[ModelResult]) -> ModelResult | None:
    return next((r for r in results if r.name == LIMIT_NAME), None)


def format_results_table(results: Sequence[ModelResult], title: str = "") -> str:
    """One line per model: training AUC (CNN: its calibration part); held-out AUC with 95%
    bootstrap CI, sensitivity, specificity, accuracy (%), Brier and confusion counts; the limit
    (the outcome model's own probability, phantoms only) is printed above the table."""
    header = (
        f"{'model':<34} {'train AUC':>9}  {'test AUC [95% CI]':<22} {'sens%':>5} {'spec%':>5} {'acc%':>5} "
        f"{'Brier':>6}   TP  FN  FP  TN  thr"
    )
    lines = [title] if title else []
    limit = _limit(results)
    if limit is not None and limit.test_metrics is not None:
        lines.append(f"limit (the outcome model's own probability) on these held-out patients: AUC {_auc(limit.test_metrics)}")
    lines += [f"positive class: {POSITIVE_CLASS}; thresholds chosen on the training cohort", header, "-" * len(header)]
    for result in results:
        test = result.test_metrics
        if test is None:
            lines.append(f"{result.name:<34} {result.train_metrics.auc:9.3f}  (no held-out patients)")
            continue
        brier = "   n/a" if math.isnan(test.brier) else f"{test.brier:6.3f}"
        lines.append(
            f"{result.name:<34} {result.train_metrics.auc:9.3f}  {_auc(test):<22} {_pct(test.sensitivity)} "
            f"{_pct(test.specificity)} {_pct(test.accuracy)} {brier}  {test.tp:3d} {test.fn:3d} {test.fp:3d} "
            f"{test.tn:3d}  {result.threshold:.3g}"
        )
    return "\n".join(lines)


def format_confusions(results: Sequence[ModelResult]) -> str:
    """Each model's held-out confusion matrix with the legend."""
    blocks = [CONFUSION_LEGEND]
    for result in results:
        if result.test_metrics is not None:
            blocks.append(f"{result.name} (held-out patients):\n{format_confusion(result.test_metrics)}")
    return "\n\n".join(blocks)


def format_reliability(labels: np.ndarray, probabilities: np.ndarray, n_bins: int = 10) -> str:
    """The reliability (calibration) table as Markdown: predicted vs observed per risk decile."""
    rows = ["| patients | mean predicted risk % | observed grade >= 2 pneumonitis % |", "|---|---|---|"]
    for row in reliability_curve(labels, probabilities, n_bins):
        rows.append(f"| {row['n']} | {100 * row['predicted']:.1f} | {100 * row['observed']:.1f} |")
    return "\n".join(rows)


def save_reliability_png(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike[str],
                         n_bins: int = 10) -> Path:
    """Reliability plot (observed rate vs mean predicted risk per decile) of one or more models."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 5), dpi=100)
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for name, (labels, probabilities) in curves.items():
        rows = reliability_curve(labels, probabilities, n_bins)
        axis.plot([r["predicted"] for r in rows], [r["observed"] for r in rows], marker="o", label=name)
    axis.set_xlabel("predicted risk")
    axis.set_ylabel(f"observed rate of {POSITIVE_CLASS}")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def results_json(results: Sequence[ModelResult]) -> dict[str, object]:
    """Plain-data form of the results (metrics, thresholds, details) for metrics.json."""
    return {
        "positive_class": POSITIVE_CLASS,
        "models": [
            {
                "name": r.name,
                "threshold": r.threshold,
                "training": r.train_metrics.to_dict(),
                "test": None if r.test_metrics is None else r.test_metrics.to_dict(),
                "details": r.details,
            }
            for r in results
        ],
    }


def _test_table(results: Sequence[ModelResult]) -> str:
    rows = [
        "| model | AUC [95% CI] | sensitivity % | specificity % | accuracy % | Brier |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        m = result.test_metrics
        if m is None:
            continue
        brier = "n/a" if math.isnan(m.brier) else f"{m.brier:.3f}"
        rows.append(
            f"| {result.name} | {m.auc:.3f} [{m.auc_ci_low:.2f}, {m.auc_ci_high:.2f}] | {100 * m.sensitivity:.1f} | "
            f"{100 * m.specificity:.1f} | {100 * m.accuracy:.1f} | {brier} |"
        )
    return "\n".join(rows)


def _kept_weights(details: dict, cfg) -> str:
    """Which weights the bundle holds: one epoch, or the average of the last epochs."""
    last = int(details.get("best_epoch") or cfg.epochs)
    if details.get("averaged"):
        return f"the weights averaged over epochs {last - cfg.average_last + 1}-{last}"
    return f"epoch {last}"


def model_card(
    experiment: ExperimentResult,
    baselines: Sequence[ModelResult],
    cohort: Mapping[str, object],
    timings: Mapping[str, object],
    test_labels: np.ndarray | None = None,
    extra_sections: str = "",
) -> str:
    """The bundle's docs/README.md, filled from the measured run (no number typed by hand).

    Args:
        experiment: the CNN run.
        baselines: dose-only models (and the limit, for phantoms) on the same patients.
        cohort: ``n_train``, ``n_train_positive``, ``n_test``, ``n_test_positive``, ``train_source``,
            ``test_source``, ``grid``, ``threshold_gy``, ``spacing_mm``, ``canvas``, ``generator``,
            ``lost_train`` (share of training crops cut by the canvas).
        timings: ``train_seconds``, ``predict_ms_per_patient``, ``study_seconds``, ``machine``.
        test_labels: held-out labels for the reliability table.
        extra_sections: Markdown appended before "Limits" (e.g. the crop comparison).
    """
    cnn, cfg = experiment.cnn, experiment.config
    canvas = "x".join(str(s) for s in cohort.get("canvas", ()))  # type: ignore[union-attr]
    spacing = cohort.get("spacing_mm", 6.0)
    covariate_text = ""
    if cfg.covariates:
        weights = ", ".join(f"{name} {weight:+.4f}" for name, weight in zip(cfg.covariates, cnn.details["platt"][2:]))
        covariate_text = (f" The calibrated logit also takes the whole normal lung's {', '.join(cfg.covariates)} "
                          f"(from the dose report; the crop cannot see the dose outside itself): "
                          f"Platt a {cnn.details['platt'][0]:.4f}, b {cnn.details['platt'][1]:+.4f}, {weights}.")
    threshold_gy = cohort.get("threshold_gy") or 20
    region = {
        "lung-dose20": f"the normal lung (Lung_L + Lung_R - GTV*) receiving >= {threshold_gy:g} Gy",
        "lung": "the normal lung (Lung_L + Lung_R - GTV*)",
        "body": "the body (External)",
    }.get(experiment.crop_name, f"the `{experiment.crop_name}` crop")
    train_m = cnn.train_metrics
    details = cnn.details
    limit = _limit(baselines)
    limit_line = ""
    if limit is not None and limit.test_metrics is not None:
        limit_line = (f"\n**The limit** (the probability the phantom outcome was drawn from) on the same held-out "
                      f"patients: AUC {_auc(limit.test_metrics)}. No model can be expected above it.\n")
    test_part = "No held-out patients were given."
    if cnn.test_metrics is not None:
        test_part = (
            f"Held-out test patients (thresholds chosen on the training cohort, then applied unchanged):\n{limit_line}\n"
            f"{_test_table([cnn, *baselines])}\n\n```\n{format_confusion(cnn.test_metrics)}\n```\n\n"
            f"{CONFUSION_LEGEND}"
        )
    calibration = ""
    if test_labels is not None and len(test_labels):
        calibration = (
            "\n## Calibration (held-out patients)\nThe risk is Platt-scaled (a * logit + b, a = "
            f"{details['platt'][0]:.3f}, b = {details['platt'][1]:.3f}) on the {details['n_calibration']} training "
            "patients kept out of fitting. Reliability per decile of predicted risk "
            "(`docs/reliability.png`):\n\n"
            f"{format_reliability(test_labels, cnn.test_probabilities)}\n"
        )
    history = details.get("history") or []
    curve = ", ".join(f"{row['train_loss']:.3f}" for row in history)  # type: ignore[index]
    return f"""# Thorax pneumonitis classifier ({experiment.crop_name})

**Trained on synthetic data only.** Every training and test patient is a digital phantom made by
`rtdeep.phantom` (CT, structures, plan, dose and a simulated outcome). No real patient data was
used: the numbers below say how well the network recovers the phantom's own outcome model, not how
it would do in a clinic. Not for clinical use. Retrain on your institution's data with
`rtdeep train-pneumonitis`.

## What it predicts
The calibrated probability of **{POSITIVE_CLASS}** (the positive class) from the CT inside {region}
(crop `{experiment.crop_name}`). The crop is resampled to {spacing:g} mm isotropic voxels (never
stretched) and centred on a {canvas} canvas [k, j, i]; in prediction the canvas grows to hold the
whole crop. Input channels: {", ".join(experiment.channels)} (CT windowed [-1000, 200] HU to [0, 1],
0 outside the crop mask; the mask last).{covariate_text} Decision threshold {cnn.threshold:.3f}: Youden's J
on the calibrated risks of the training patients kept out of fitting.

## Network, and why this size
`PneumonitisNet`: {len(cfg.features)} MONAI `Convolution` blocks (3x3x3, batch norm, ReLU) with channels
{list(cfg.features)}, max-pool between them, then each feature summarised over the crop mask as its mean
and as log(1 + its integral in cm^3), dropout {cfg.dropout}, one linear logit and Platt scaling:
{details.get("n_parameters")} parameters. The outcome grows with the *volume* of abnormal lung in the
crop, which the integral pools directly; with {details.get("n_fit")} patients to fit, a network of tens of
thousands of weights with shared 3x3x3 kernels is what the cohort supports (MONAI's DenseNet121 has
about 11 M). Grad-CAM (MONAI `GradCAM` on `{experiment.network.cam_target}`) shows where it looked.

## Training data (synthetic)
- training cohort: {cohort.get("n_train")} phantom thorax patients, {cohort.get("n_train_positive")} with
  grade >= 2 pneumonitis ({cohort.get("train_source")}); {details.get("n_fit")} fitted,
  {details.get("n_calibration")} kept out for choosing the epoch, Platt scaling and the threshold
- held-out test cohort: {cohort.get("n_test")} phantom patients, {cohort.get("n_test_positive")} positive
  ({cohort.get("test_source")}): a seed never used for training or selection
- phantom generator: {cohort.get("generator", "n/a")}; CT grid: {cohort.get("grid", "small")}
  (the small grid renders the interstitial abnormality at its mean attenuation, ground glass
  plus averaged reticulation; reticulation lines themselves are not drawn at that voxel size)
- training crops cut by the canvas: {100 * float(cohort.get("lost_train", 0.0)):.2f} % of crop volume on average
- AdamW, learning rate {cfg.learning_rate} (cosine decay), weight decay {cfg.weight_decay}, {cfg.epochs}
  epochs (kept: {_kept_weights(details, cfg)}, lowest loss on the calibration part), batch
  {cfg.batch_size}, random flips and intensity jitter, seed {cfg.seed}
- training loss per epoch: {curve}
- training time: {float(timings.get("train_seconds", float("nan"))):.0f} s on {cfg.threads} CPU thread(s)
  of a shared machine ({timings.get("machine", "CPU")})

## Measured performance
On the training patients kept out of fitting ({details.get("n_calibration")}): AUC {train_m.auc:.3f}
[{train_m.auc_ci_low:.2f}, {train_m.auc_ci_high:.2f}].

{test_part}
{calibration}
## Speed (CPU)
Network on one crop: {float(timings.get("predict_ms_per_patient", float("nan"))):.1f} ms; a whole study
(lung-dose report, crop, network, Grad-CAM): {float(timings.get("study_seconds", float("nan"))):.2f} s.
{extra_sections}
## Limits
- Synthetic phantoms: the lung texture that drives the outcome is the phantom's own; real CT differs.
- The outcome model (`rtdeep/phantom/outcome.py`), not clinical follow-up, defines the labels.
- The dose-only models in the table are evaluated on the same held-out patients.
"""
