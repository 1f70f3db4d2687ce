"""Where the pneumonitis network looked: MONAI's Grad-CAM (Selvaraju 2017) on a 3D crop.

``monai.visualize.GradCAM`` weights the activations of the network's ``cam_target`` block (a grid
of input size / 4) by the spatially averaged gradient of the pneumonitis logit, sums over
channels, rectifies, upsamples to the input and scales to [0, 1]. The map is therefore on the
network's input canvas ``[D, H, W]``; :func:`rtdeep.pneumonitis.predict.predict_pneumonitis`
samples it back onto the crop's CT sub-grid.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.visualize import GradCAM
from torch import nn

__all__ = ["grad_cam"]


class _LogitColumn(nn.Module):
    """``(batch,)`` logit -> ``(batch, 1)``, the class-score layout MONAI's CAM expects."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image_logit = getattr(self.network, "image_logit", self.network)  # per-patient covariates shift, not explain
        return image_logit(x)[:, None]


def grad_cam(network: nn.Module, crop: np.ndarray) -> np.ndarray:
    """Grad-CAM map of one crop.

    Args:
        network: a :class:`~rtdeep.pneumonitis.model.PneumonitisNet` (its ``cam_target`` names the layer).
        crop: float32 ``[channels, D, H, W]`` exactly as fed to the network.

    Returns:
        float32 ``[D, H, W]`` in [0, 1], 0 outside the crop mask (all zeros when no region raises the risk).
    """
    target = getattr(network, "cam_target", None)
    if target is None:
        raise TypeError(f"{type(network).__name__} has no cam_target to explain")
    was_training = network.training
    device = next(network.parameters()).device
    x = torch.as_tensor(np.ascontiguousarray(crop[None]), dtype=torch.float32, device=device)
    try:
        with torch.enable_grad():
            cam = GradCAM(_LogitColumn(network), target_layers=f"network.{target}")(x, class_idx=0)
    finally:
        network.train(was_training)
    values = np.nan_to_num(cam.detach().cpu().numpy()[0, 0].astype(np.float32))
    values = np.where(crop[-1] > 0.5, values, 0.0).astype(np.float32)
    peak = float(values.max())
    return values / peak if peak > 0 else np.zeros_like(values)
