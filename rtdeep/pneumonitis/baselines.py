"""Dose-only comparison models fitted on the training patients: logistic regression on one
dosimetric figure (mean lung dose in Gy, or V20 in %); the same fit serves the CNN's Platt scaling.

The fixed-parameter models (QUANTEC LKB, published logistic MLD) live in :mod:`rtdeep.ntcp`; these
are the same shapes refitted to the cohort at hand, the usual "dose-only" baseline a CNN must beat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LogisticFit", "fit_logistic", "fit_logistic_regression"]


@dataclass(frozen=True)
class LogisticFit:
    """``risk = 1 / (1 + exp(-(intercept + slope * x)))`` for one feature ``x``.

    Attributes:
        feature: what ``x`` is (e.g. ``"mld_gy"``, ``"v20_pct"``).
        intercept, slope: fitted coefficients (slope per unit of ``x``).
        x50: the ``x`` at 50% risk (``-intercept / slope``).
    """

    feature: str
    intercept: float
    slope: float

    @property
    def x50(self) -> float:
        return -self.intercept / self.slope if self.slope else float("inf")

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Risk of grade >= 2 pneumonitis in [0, 1] for values ``x``."""
        z = self.intercept + self.slope * np.asarray(x, dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-z))


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, ridge: float = 1e-4,
                            iterations: int = 100) -> tuple[float, np.ndarray]:
    """Maximum-likelihood logistic regression of ``labels`` (1 = grade >= 2 pneumonitis) on the
    columns of ``features`` ``[n, m]`` by Newton-Raphson on standardised columns, with a small ridge
    penalty on the slopes so a separable set still converges.

    Returns:
        ``(intercept, slopes)``, the slopes per unit of each column.
    """
    x = np.asarray(features, dtype=np.float64).reshape(len(labels), -1)
    y = np.asarray(labels, dtype=np.float64)
    # standardise for a well-conditioned Hessian, then map back
    centre = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    design = np.column_stack([np.ones(len(y)), (x - centre) / scale])
    penalty = ridge * np.diag([0.0] + [1.0] * x.shape[1])
    beta = np.zeros(design.shape[1])
    for _ in range(iterations):
        risk = 1.0 / (1.0 + np.exp(-design @ beta))
        gradient = design.T @ (y - risk) - penalty @ beta
        hessian = (design * (risk * (1 - risk))[:, None]).T @ design + penalty
        step = np.linalg.solve(hessian + 1e-12 * np.eye(len(beta)), gradient)
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    slopes = beta[1:] / scale
    return float(beta[0] - slopes @ centre), slopes


def fit_logistic(feature: str, x: np.ndarray, labels: np.ndarray, ridge: float = 1e-4, iterations: int = 100) -> LogisticFit:
    """:func:`fit_logistic_regression` on one feature ``x``."""
    intercept, slopes = fit_logistic_regression(np.asarray(x, dtype=np.float64)[:, None], labels, ridge, iterations)
    return LogisticFit(feature, intercept, float(slopes[0]))
