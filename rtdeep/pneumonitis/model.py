"""The pneumonitis classifier: a compact 3D CNN that pools its features over the crop mask.

Input ``[batch, channels, D, H, W]`` at a fixed voxel size (D = slices k, H = rows j, W = columns
i; see :mod:`rtdeep.pneumonitis.dataset`), the crop mask as the last channel. Four MONAI
``Convolution`` blocks (3x3x3 convolution, batch norm, ReLU; 2x max-pool after the first three)
make non-negative feature maps; each is then summarised over the crop mask (downsampled to the
feature grid) twice: its mean over the mask, and ``log(1 + feature integrated over the mask in
cm^3)``. The second is what "how much abnormal lung lies in the crop" needs (the phantom outcome
and the clinical literature both grow with the *volume* of abnormal lung in the high-dose region),
and it does not depend on the canvas: voxels outside the mask never count, so a crop padded onto a
larger canvas gives the same answer. One linear layer makes the logit; a fixed Platt scaling
``a * logit + b`` fitted on training data after training makes ``sigmoid(output)`` a calibrated
probability of **grade >= 2 radiation pneumonitis**.

Optionally the Platt scaling also takes dose figures of the whole normal lung (``covariates``, e.g.
``("mld_gy",)``): ``a * logit + b + w . covariates``, fitted with the rest on the calibration part.
A crop of the >= 20 Gy lung cannot see the dose the rest of the lung gets, which the outcome of
the phantoms (and the clinical literature: QUANTEC's mean-lung-dose model) depends on too. The
network and its Grad-CAM stay image-only; the covariates shift each patient's logit.

Why this size (about 46 k weights with the default features (8, 16, 32, 32)): the cohorts are
hundreds to about a thousand patients (the talk had 54 + 23), training is on CPU, and the signal
is the extent of abnormal parenchyma, not fine shape. MONAI's DenseNet121 (11 M weights) or
ResNet-10 (14 M) would have more weights per patient than voxels of signal and would need a GPU
for three crops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn
from torch.nn import functional

__all__ = ["NETWORK_NAME", "PneumonitisNet"]

#: dotted name the bundle registry rebuilds this from (``rtdeep`` is a trusted package)
NETWORK_NAME = "rtdeep.pneumonitis.model:PneumonitisNet"


class PneumonitisNet(nn.Module):
    """Conv blocks, mask-weighted pooling, one logit, Platt scaling.

    Args:
        in_channels: input channels including the mask (last).
        features: channels of each block; ``len(features) - 1`` pooling steps, so the canvas must
            be divisible by ``2 ** (len(features) - 1)``.
        dropout: dropout before the linear layer.
        spacing_mm: the input voxel size (for the integrated-volume feature in cm^3).
        covariates: names of per-patient dose figures (:func:`rtdeep.pneumonitis.dataset.report_figures`)
            the calibrated logit also takes; empty for an image-only model.

    Attributes:
        calibration: buffer ``[a, b]`` of the Platt scaling (``[1, 0]`` until fitted).
        covariate_weights: buffer of one weight per covariate (only when there are covariates).
        cam_target: the layer Grad-CAM explains (the third convolution, before its pooling: a grid of
            input / 4, 24 mm cells at 6 mm voxels).

    Example:
        >>> net = PneumonitisNet(in_channels=2)
        >>> net(torch.ones(3, 2, 32, 32, 32)).shape
        torch.Size([3])
    """

    cam_target = "blocks.2.0"

    def __init__(
        self,
        in_channels: int = 2,
        features: Sequence[int] = (8, 16, 32, 32),
        dropout: float = 0.2,
        spacing_mm: float = 6.0,
        covariates: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.covariates = tuple(str(name) for name in covariates)
        features = [int(f) for f in features]
        blocks: list[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(features):
            conv = Convolution(3, channels, width, kernel_size=3, act="RELU", norm="BATCH", bias=False)
            blocks.append(nn.Sequential(conv, nn.MaxPool3d(2)) if index < len(features) - 1 else conv)
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.n_pools = len(features) - 1
        self.spacing_mm = float(spacing_mm)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(2 * channels, 1)
        self.register_buffer("calibration", torch.tensor([1.0, 0.0]))
        if self.covariates:
            self.register_buffer("covariate_weights", torch.zeros(len(self.covariates)))

    def uncalibrated(self, crop: torch.Tensor) -> torch.Tensor:
        """The logit before Platt scaling, ``(batch,)``."""
        mask = crop[:, -1:]
        features = self.blocks(crop)
        cell = 2**self.n_pools
        weight = functional.avg_pool3d(mask, cell, cell, ceil_mode=True)[..., : features.shape[2], : features.shape[3],
                                                                          : features.shape[4]]
        cell_cc = (cell * self.spacing_mm) ** 3 / 1000.0
        integrated = (features * weight).sum(dim=(2, 3, 4))
        mean = integrated / weight.sum(dim=(2, 3, 4)).clamp_min(1e-6)
        pooled = torch.cat([mean, torch.log1p(integrated * cell_cc)], dim=1)
        return self.linear(self.dropout(pooled)).squeeze(1)

    def image_logit(self, crop: torch.Tensor) -> torch.Tensor:
        """The calibrated logit without the covariate terms (what Grad-CAM explains), ``(batch,)``."""
        return self.uncalibrated(crop) * self.calibration[0] + self.calibration[1]

    def covariates_from(self, figures: Mapping[str, float]) -> torch.Tensor | None:
        """``[1, m]`` of this model's covariates from one study's dose figures
        (:func:`rtdeep.pneumonitis.dataset.report_figures`); None for an image-only model."""
        if not self.covariates:
            return None
        return torch.tensor([[float(figures[name]) for name in self.covariates]], dtype=torch.float32,
                            device=self.calibration.device)

    def forward(self, crop: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        """Calibrated logit of grade >= 2 pneumonitis, ``(batch,)``.

        Args:
            crop: ``[batch, channels, D, H, W]``.
            covariates: ``[batch, len(self.covariates)]``, required when the model has covariates.
        """
        logit = self.image_logit(crop)
        if not self.covariates:
            return logit
        if covariates is None or covariates.shape[-1] != len(self.covariates):
            raise ValueError(f"this model also takes {', '.join(self.covariates)} per patient")
        return logit + covariates.to(logit) @ self.covariate_weights
