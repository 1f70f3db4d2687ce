"""Where the pneumonitis network looked: Grad-CAM (Selvaraju 2017) on a 3D crop.

For each member network, the activations ``A`` of its Grad-CAM layer (``cam_layer``: the second to
last block, a grid of input size / 4) are weighted by the spatially averaged gradient of the
pneumonitis logit, summed over channels and rectified; the members' maps are averaged,
upsampled trilinearly to the input size and scaled to [0, 1]. The map is therefore in the
network's input grid ``[D, H, W]`` (= crop ``[k, j, i]`` resampled to the fixed size).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional

__all__ = ["grad_cam"]


def _cam_layers(network: nn.Module) -> list[nn.Module]:
    if hasattr(network, "cam_layers"):
        return list(network.cam_layers)  # type: ignore[arg-type]
    if hasattr(network, "cam_layer"):
        return [network.cam_layer]  # type: ignore[list-item]
    raise TypeError(f"{type(network).__name__} has no cam_layer/cam_layers to explain")


def grad_cam(network: nn.Module, crop: np.ndarray) -> np.ndarray:
    """Grad-CAM map of one crop.

    Args:
        network: a :class:`~rtdeep.pneumonitis.model.PneumonitisCNN` or ensemble (eval mode kept).
        crop: float32 ``[channels, D, H, W]`` exactly as fed to the network.

    Returns:
        float32 ``[D, H, W]`` in [0, 1] (all zeros when no region raises the risk).
    """
    layers = _cam_layers(network)
    activations: list[torch.Tensor] = []
    handles = [layer.register_forward_hook(lambda _m, _i, out: activations.append(out)) for layer in layers]
    was_training = network.training
    network.eval()
    try:
        device = next(network.parameters()).device
        x = torch.as_tensor(np.ascontiguousarray(crop[None]), dtype=torch.float32, device=device)
        with torch.enable_grad():
            logit = network(x).sum()
            gradients = torch.autograd.grad(logit, activations, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
        network.train(was_training)
    maps = []
    for activation, gradient in zip(activations, gradients):
        if gradient is None:
            continue
        weights = gradient.mean(dim=(2, 3, 4), keepdim=True)
        maps.append(functional.relu((weights * activation).sum(1, keepdim=True)))
    if not maps:
        return np.zeros(crop.shape[1:], dtype=np.float32)
    cam = torch.stack(maps).mean(0)
    cam = functional.interpolate(cam, size=crop.shape[1:], mode="trilinear", align_corners=False)[0, 0]
    cam = cam.detach().cpu().numpy().astype(np.float32)
    peak = float(cam.max())
    return cam / peak if peak > 0 else np.zeros_like(cam)
