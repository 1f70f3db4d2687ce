"""Training segmentation models (3D / 2.5D U-Net and GAN) on cohorts of CT + RT Structure Sets."""

from __future__ import annotations

__all__: list[str] = []
