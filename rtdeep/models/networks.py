"""rtdeep's own small networks: the PatchGAN discriminator of the pix2pix-style GANs.

The generators are MONAI's ``BasicUNet`` (3D for ``unet3d``/``gan3d``, 2D fed ``k`` adjacent axial
slices as channels for ``unet25d``/``gan25d``); they are built by name through the registry.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rtdeep.models.registry import register_network

__all__ = ["PatchGanDiscriminator"]


@register_network("PatchGanDiscriminator")
class PatchGanDiscriminator(nn.Module):
    """PatchGAN critic (Isola 2017) scoring (image, mask) pairs patch by patch.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels plus mask channels (the pair is concatenated on channels).
        features: channels of the strided convolution stages; each halves the grid.

    Input ``[batch, in_channels, *spatial]``; output logits ``[batch, 1, *spatial / 2**len(features)]``
    (one real/fake logit per receptive-field patch).

    Example:
        >>> critic = PatchGanDiscriminator(3, 7, (8, 16))
        >>> critic(torch.zeros(1, 7, 16, 16, 16)).shape
        torch.Size([1, 1, 4, 4, 4])
    """

    def __init__(self, spatial_dims: int, in_channels: int, features: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        norm = nn.InstanceNorm3d if spatial_dims == 3 else nn.InstanceNorm2d
        layers: list[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(features):
            layers.append(conv(channels, width, kernel_size=4, stride=2, padding=1))
            if index > 0:
                layers.append(norm(width, affine=True))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            channels = width
        layers.append(conv(channels, 1, kernel_size=3, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return self.layers(pair)
