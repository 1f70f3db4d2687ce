"""A plain Dice coefficient, used only when :mod:`rtdeep.metrics` is not installed."""

from __future__ import annotations

import numpy as np

__all__ = ["dice_coefficient"]


def dice_coefficient(reference: np.ndarray, test: np.ndarray) -> float:
    """2|A∩B| / (|A| + |B|) of two bool masks on one grid; NaN when both are empty."""
    reference, test = np.asarray(reference, bool), np.asarray(test, bool)
    total = int(reference.sum()) + int(test.sum())
    return float("nan") if total == 0 else 2.0 * float((reference & test).sum()) / total
