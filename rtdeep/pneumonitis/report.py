"""Text output of pneumonitis experiments: the comparison table, confusion matrices, the model
card. Every table states the positive class (grade >= 2 radiation pneumonitis)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from rtdeep.pneumonitis.evaluate import CONFUSION_LEGEND, POSITIVE_CLASS, BinaryMetrics, format_confusion
from rtdeep.pneumonitis.experiment import ExperimentResult, ModelResult

__all__ = ["format_confusions", "format_results_table", "model_card", "results_json"]


def _pct(value: float) -> str:
    return "  n/a" if value is None or math.isnan(value) else f"{100 * value:5.1f}"


def _auc(metrics: BinaryMetrics | None) -> str:
    if metrics is None or math.isnan(metrics.auc):
        return "n/a"
    return f"{metrics.auc:.3f} [{metrics.auc_ci_low:.2f}, {metrics.auc_ci_high:.2f}]"


def format_results_table(results: Sequence[ModelResult], title: str = "") -> str:
    """One line per model: cross-validated AUC on the training cohort; AUC with 95% bootstrap CI,
    sensitivity, specificity, accuracy (%), Brier and confusion counts on the held-out patients."""
    header = (
        f"{'model':<26} {'CV AUC':>6}  {'test AUC [95% CI]':<22} {'sens%':>5} {'spec%':>5} {'acc%':>5} "
        f"{'Brier':>6}  TP FN FP TN  thr"
    )
    lines = [title] if title else []
    lines += [f"positive class: {POSITIVE_CLASS}; thresholds chosen on the training cohort", header,
              "-" * len(header)]
    for result in results:
        test = result.test_metrics
        if test is None:
            lines.append(f"{result.name:<26} {result.train_metrics.auc:6.3f}  (no held-out patients)")
            continue
        brier = "   n/a" if math.isnan(test.brier) else f"{test.brier:6.3f}"
        lines.append(
            f"{result.name:<26} {result.train_metrics.auc:6.3f}  {_auc(test):<22} {_pct(test.sensitivity)} "
            f"{_pct(test.specificity)} {_pct(test.accuracy)} {brier}  {test.tp:2d} {test.fn:2d} {test.fp:2d} "
            f"{test.tn:2d}  {result.threshold:.3f}"
        )
    return "\n".join(lines)


def format_confusions(results: Sequence[ModelResult]) -> str:
    """Each model's held-out confusion matrix with the legend."""
    blocks = [CONFUSION_LEGEND]
    for result in results:
        if result.test_metrics is not None:
            blocks.append(f"{result.name} (held-out patients):\n{format_confusion(result.test_metrics)}")
    return "\n\n".join(blocks)


def results_json(results: Sequence[ModelResult]) -> dict[str, object]:
    """Plain-data form of the results (metrics, thresholds, details) for metrics.json."""
    return {
        "positive_class": POSITIVE_CLASS,
        "models": [
            {
                "name": r.name,
                "threshold": r.threshold,
                "cross_validation": r.train_metrics.to_dict(),
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


def model_card(
    experiment: ExperimentResult,
    baselines: Sequence[ModelResult],
    cohort: Mapping[str, object],
    timings: Mapping[str, object],
) -> str:
    """The bundle's docs/README.md, filled from the measured run (no number typed by hand).

    Args:
        experiment: the CNN run.
        baselines: dose-only models on the same patients.
        cohort: ``n_train``, ``n_train_positive``, ``n_test``, ``n_test_positive``, ``train_source``,
            ``test_source``, ``grid``, ``threshold_gy``, ``input_size``.
        timings: ``cv_seconds``, ``predict_ms_per_patient``, ``study_seconds``, ``machine``.
    """
    cnn, cfg = experiment.cnn, experiment.config
    n_members = len(experiment.ensemble.members)
    size = "x".join(str(s) for s in cohort.get("input_size", ()))  # type: ignore[union-attr]
    threshold_gy = cohort.get("threshold_gy") or 20
    region = (
        f"the normal lung (Lung_L + Lung_R - GTV) receiving >= {threshold_gy:g} Gy"
        if experiment.crop_name == "lung-dose20"
        else f"the `{experiment.crop_name}` crop"
    )
    train_m = cnn.train_metrics
    fold_seconds = float(timings.get("cv_seconds", float("nan"))) / max(n_members, 1)  # type: ignore[arg-type]
    test_part = "No held-out patients were given."
    if cnn.test_metrics is not None:
        test_part = (
            "Held-out test patients (thresholds chosen on the training cohort, then applied unchanged):\n\n"
            f"{_test_table([cnn, *baselines])}\n\n```\n{format_confusion(cnn.test_metrics)}\n```\n\n"
            f"{CONFUSION_LEGEND}"
        )
    return f"""# Thorax pneumonitis classifier ({experiment.crop_name})

**Trained on synthetic data only.** Every training and test patient is a digital phantom made by
`rtdeep.phantom` (CT, structures, plan, dose and a simulated outcome). No real patient data was
used: the numbers below say how well the network recovers the phantom's own outcome model, not how
it would do in a clinic. Not for clinical use. Retrain on your institution's data with
`rtdeep train-pneumonitis`.

## What it predicts
The probability of **{POSITIVE_CLASS}** (the positive class) from the CT inside {region}
(crop `{experiment.crop_name}`), resampled to {size} voxels [k, j, i]; input channels:
{", ".join(experiment.channels)} (CT windowed [-1000, 200] HU to [0, 1], 0 outside the crop mask).
Decision threshold {cnn.threshold:.3f}: Youden's J on the out-of-fold risks of the training cohort.

## Network, and why this one
An ensemble of the {n_members} cross-validation fold models; the risk is the mean of their
probabilities. Each member is `PneumonitisCNN`: {len(cfg.features)} blocks of 3x3x3 convolution, batch
norm and ReLU with channels {list(cfg.features)} (max-pool between blocks), global average pooling,
dropout {cfg.dropout} and one logit: {cnn.details.get("n_parameters_per_member")} parameters per member.
MONAI's DenseNet121 (about 11 M parameters) was not used: with a cohort of this size (and the talk's
54 + 23 patients) it overfits, and it is too slow for 5-fold cross-validation of three crops on a
CPU; this network trained one fold in {fold_seconds:.0f} s here on one thread of a shared 2-core
machine. Grad-CAM on the second to last block shows where it looked.

## Training data (synthetic)
- training cohort: {cohort.get("n_train")} phantom thorax patients, {cohort.get("n_train_positive")} with
  grade >= 2 pneumonitis ({cohort.get("train_source")})
- held-out test cohort: {cohort.get("n_test")} phantom patients, {cohort.get("n_test_positive")} positive
  ({cohort.get("test_source")})
- CT grid: {cohort.get("grid", "small")}; labels from the phantom's outcome model
- AdamW, learning rate {cfg.learning_rate} (cosine decay), weight decay {cfg.weight_decay}, {cfg.epochs}
  epochs, batch {cfg.batch_size}, random flips and intensity jitter, positives weighted by
  n_negative / n_positive, seed {cfg.seed}, stratified {n_members}-fold cross-validation
- training time: {float(timings.get("cv_seconds", float("nan"))):.0f} s for the {n_members} folds on
  {cfg.threads} CPU thread(s) ({timings.get("machine", "CPU")})

## Measured performance
Cross-validated (out-of-fold) on the training cohort: AUC {train_m.auc:.3f}
[{train_m.auc_ci_low:.2f}, {train_m.auc_ci_high:.2f}], accuracy {100 * train_m.accuracy:.1f} %. These are single
fold models, each trained on {n_members - 1}/{n_members} of the cohort; the held-out numbers below are of the
{n_members}-model ensemble (the bundled model), which is why they can be higher.

{test_part}

## Speed (CPU)
Network on one crop: {float(timings.get("predict_ms_per_patient", float("nan"))):.1f} ms; a whole study
(lung DVH, crop, network, Grad-CAM): {float(timings.get("study_seconds", float("nan"))):.2f} s.

## Limits
- Synthetic phantoms: the lung texture that drives the outcome is the phantom's own; real CT differs.
- The outcome model, not clinical follow-up, defines the labels.
- The dose-only models in the table are evaluated on the same held-out patients.
"""
