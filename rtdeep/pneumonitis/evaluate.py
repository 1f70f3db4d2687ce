"""Binary classification metrics for pneumonitis risk: AUC with a bootstrap CI, a threshold chosen on
training predictions, the confusion matrix and the Brier score.

The positive class is always **grade >= 2 radiation pneumonitis** (label 1). Sensitivity is the
fraction of patients with grade >= 2 pneumonitis that the model flags; specificity the fraction of
patients without it that the model clears. The published crop comparison this project follows
(Kawahara, Phys Eng Sci Med 2023) swapped the two between the talk and the paper, which is why every
report here prints the confusion matrix with its legend.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "CONFUSION_LEGEND",
    "POSITIVE_CLASS",
    "BinaryMetrics",
    "binary_metrics",
    "bootstrap_auc_ci",
    "brier_score",
    "delong_paired",
    "format_confusion",
    "reliability_curve",
    "roc_auc",
    "youden_threshold",
]

#: the class that "positive", sensitivity and the risk refer to
POSITIVE_CLASS = "grade >= 2 radiation pneumonitis"
CONFUSION_LEGEND = (
    f"positive class = {POSITIVE_CLASS}; TP = pneumonitis predicted and observed, "
    "FN = pneumonitis observed but not predicted, FP = predicted but not observed, TN = neither"
)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); NaN with one class only."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # mid-ranks for tied scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(scores)]))
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = 0.5 * (start + end - 1) + 1.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def bootstrap_auc_ci(
    labels: np.ndarray, scores: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the AUC (patients resampled with replacement,
    stratified by class so every resample holds both classes)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    if len(pos) == 0 or len(neg) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_boot)
    for b in range(n_boot):
        index = np.concatenate((rng.choice(pos, len(pos)), rng.choice(neg, len(neg))))
        aucs[b] = roc_auc(labels[index], scores[index])
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(aucs, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold maximising sensitivity + specificity - 1 (predict positive when
    ``score >= threshold``); the midpoint between neighbouring scores so it generalises; 0.5 when
    only one class is present."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.all() or not labels.any():
        return 0.5
    unique = np.unique(scores)
    candidates = np.concatenate(([unique[0] - 1e-6], (unique[:-1] + unique[1:]) / 2.0, [unique[-1] + 1e-6]))
    best, best_j = 0.5, -np.inf
    for threshold in candidates:
        predicted = scores >= threshold
        j = predicted[labels].mean() + (~predicted[~labels]).mean() - 1.0
        if j > best_j + 1e-12:
            best, best_j = float(threshold), j
    return best


def brier_score(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean squared difference between predicted probability and outcome (0 best, 0.25 = coin)."""
    labels = np.asarray(labels, dtype=np.float64)
    return float(np.mean((np.asarray(probabilities, dtype=np.float64) - labels) ** 2))


@dataclass
class BinaryMetrics:
    """Metrics of one model on one set of patients (positive class: grade >= 2 pneumonitis).

    Attributes:
        auc, auc_ci_low, auc_ci_high: ROC AUC and its bootstrap 95% CI.
        threshold: the probability (or score) threshold used, chosen on training predictions.
        sensitivity, specificity, accuracy: at ``threshold``, as fractions.
        tp, fn, fp, tn: confusion matrix counts.
        brier: Brier score (NaN when the scores are not probabilities).
        n, n_positive: patients and patients with grade >= 2 pneumonitis.
    """

    auc: float
    auc_ci_low: float
    auc_ci_high: float
    threshold: float
    sensitivity: float
    specificity: float
    accuracy: float
    tp: int
    fn: int
    fp: int
    tn: int
    brier: float
    n: int
    n_positive: int
    positive_class: str = POSITIVE_CLASS

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def binary_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    n_boot: int = 2000,
    seed: int = 0,
    is_probability: bool = True,
) -> BinaryMetrics:
    """All metrics of one model on one set of patients.

    Args:
        labels: 1 = grade >= 2 pneumonitis, 0 = not, shape ``(n,)``.
        probabilities: predicted probability (or any score when ``is_probability`` is False).
        threshold: predict pneumonitis when ``probability >= threshold``.
        n_boot: bootstrap resamples for the AUC CI; seed: their random seed.
    """
    labels = np.asarray(labels).astype(bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = probabilities >= threshold
    tp = int((predicted & labels).sum())
    fn = int((~predicted & labels).sum())
    fp = int((predicted & ~labels).sum())
    tn = int((~predicted & ~labels).sum())
    low, high = bootstrap_auc_ci(labels, probabilities, n_boot=n_boot, seed=seed)
    return BinaryMetrics(
        auc=roc_auc(labels, probabilities),
        auc_ci_low=low,
        auc_ci_high=high,
        threshold=float(threshold),
        sensitivity=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        accuracy=_ratio(tp + tn, len(labels)),
        tp=tp,
        fn=fn,
        fp=fp,
        tn=tn,
        brier=brier_score(labels, probabilities) if is_probability else float("nan"),
        n=len(labels),
        n_positive=int(labels.sum()),
    )


def format_confusion(metrics: BinaryMetrics) -> str:
    """The confusion matrix as text, with the positive class stated."""
    return "\n".join(
        [
            f"confusion matrix (positive class: {POSITIVE_CLASS}; threshold {metrics.threshold:.3f})",
            "                        predicted pneumonitis   predicted none",
            f"  observed pneumonitis  TP = {metrics.tp:<18d} FN = {metrics.fn}",
            f"  observed none         FP = {metrics.fp:<18d} TN = {metrics.tn}",
        ]
    )


def _placements(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: for each positive the share of negatives it outranks
    (ties count half), and for each negative the share of positives that outrank it."""
    pos, neg = scores[labels], scores[~labels]
    greater = (pos[:, None] > neg[None, :]).astype(np.float64) + 0.5 * (pos[:, None] == neg[None, :])
    return greater.mean(axis=1), greater.mean(axis=0)


def delong_paired(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> dict[str, float]:
    """DeLong's test (DeLong, DeLong & Clarke-Pearson 1988) of two correlated AUCs on the same patients.

    Returns:
        ``auc_a``, ``auc_b``, ``difference`` (a - b), its ``se``, the 95% CI ``ci_low``/``ci_high``,
        ``z`` and the two-sided ``p`` value.
    """
    labels = np.asarray(labels).astype(bool)
    a_pos, a_neg = _placements(labels, np.asarray(scores_a, dtype=np.float64))
    b_pos, b_neg = _placements(labels, np.asarray(scores_b, dtype=np.float64))
    auc_a, auc_b = float(a_pos.mean()), float(b_pos.mean())
    s_pos = np.cov(np.vstack([a_pos, b_pos]))
    s_neg = np.cov(np.vstack([a_neg, b_neg]))
    covariance = s_pos / len(a_pos) + s_neg / len(a_neg)
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    se = math.sqrt(max(variance, 0.0))
    difference = auc_a - auc_b
    z = difference / se if se > 0 else 0.0
    p = math.erfc(abs(z) / math.sqrt(2.0))
    return {"auc_a": auc_a, "auc_b": auc_b, "difference": difference, "se": se,
            "ci_low": difference - 1.959964 * se, "ci_high": difference + 1.959964 * se, "z": z, "p": p}


def reliability_curve(labels: np.ndarray, probabilities: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Calibration table: patients sorted by predicted risk into ``n_bins`` groups of equal size;
    per group the mean predicted risk and the observed rate of grade >= 2 pneumonitis."""
    labels = np.asarray(labels, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(probabilities, kind="mergesort")
    rows = []
    for group in np.array_split(order, n_bins):
        if len(group):
            rows.append({"n": len(group), "predicted": float(probabilities[group].mean()),
                         "observed": float(labels[group].mean())})
    return rows
