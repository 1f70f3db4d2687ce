"""The pneumonitis classifier: a small 3D CNN on a masked crop, and an ensemble of them.

Why a small network of our own rather than a MONAI classifier (DenseNet121, ResNet): the training
sets this targets are small (tens to a few hundred patients, as in the talk's 54 + 23), the input is
a 32^3 to 64^3 crop, and training must run on a laptop CPU. MONAI's DenseNet121 has ~11 M
parameters and overfits such a cohort; four convolution blocks (~70 k parameters) train in about a
minute per fold on one CPU thread and leave room for 5-fold cross-validation of three crops.

Input ``[batch, channels, D, H, W]`` (D = slices k, H = rows j, W = columns i): channel 0 is the
windowed CT inside the crop mask, optional channel 1 the dose inside the mask (Gy / 60). Output:
one logit per patient for **grade >= 2 radiation pneumonitis**; ``sigmoid(logit)`` is the risk.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ENSEMBLE_NAME", "NETWORK_NAME", "PneumonitisCNN", "PneumonitisEnsemble"]

#: dotted names the bundle registry rebuilds these from (``rtdeep`` is a trusted package)
NETWORK_NAME = "rtdeep.pneumonitis.model:PneumonitisCNN"
ENSEMBLE_NAME = "rtdeep.pneumonitis.model:PneumonitisEnsemble"


def _block(in_channels: int, out_channels: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool3d(2))
    return nn.Sequential(*layers)


class PneumonitisCNN(nn.Module):
    """Conv blocks (3x3x3 conv, batch norm, ReLU, 2x max-pool except the last), global average
    pooling, dropout and one linear output.

    Args:
        in_channels: 1 (CT) or 2 (CT and dose).
        features: channels of each block; ``len(features) - 1`` pooling steps, so the input size
            must be divisible by ``2 ** (len(features) - 1)``.
        dropout: dropout before the linear layer.

    Attributes:
        cam_layer: the block whose output Grad-CAM explains (the second to last, whose grid is
            input size / 4 with four blocks).

    Example:
        >>> net = PneumonitisCNN(in_channels=2)
        >>> net(torch.zeros(3, 2, 32, 32, 32)).shape
        torch.Size([3])
    """

    def __init__(self, in_channels: int = 1, features: Sequence[int] = (8, 16, 32, 64), dropout: float = 0.3) -> None:
        super().__init__()
        features = [int(f) for f in features]
        blocks = []
        channels = in_channels
        for index, width in enumerate(features):
            blocks.append(_block(channels, width, pool=index < len(features) - 1))
            channels = width
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, 1))

    @property
    def cam_layer(self) -> nn.Module:
        # the last block's grid (size / 8) is too coarse to show where in the crop the network looked
        return self.blocks[-2][2] if len(self.blocks) > 1 else self.blocks[-1][2]

    def forward(self, crop: torch.Tensor) -> torch.Tensor:
        features = crop
        for block in self.blocks:
            features = block(features)
        return self.head(features).squeeze(1)


class PneumonitisEnsemble(nn.Module):
    """The cross-validation fold models averaged: the risk is the mean of the members' probabilities.

    ``forward`` returns the logit of that mean probability, so ``sigmoid(forward(x))`` is the
    ensemble risk and the ensemble is a drop-in for one :class:`PneumonitisCNN`.

    Args:
        n_members: number of fold models.
        in_channels, features, dropout: as :class:`PneumonitisCNN`.
    """

    def __init__(
        self, n_members: int = 5, in_channels: int = 1, features: Sequence[int] = (8, 16, 32, 64), dropout: float = 0.3
    ) -> None:
        super().__init__()
        self.members = nn.ModuleList(PneumonitisCNN(in_channels, features, dropout) for _ in range(n_members))

    @classmethod
    def from_members(cls, members: Sequence[PneumonitisCNN], **kwargs: object) -> PneumonitisEnsemble:
        """An ensemble holding copies of trained ``members`` (kwargs must match their construction)."""
        ensemble = cls(n_members=len(members), **kwargs)  # type: ignore[arg-type]
        for target, source in zip(ensemble.members, members):
            target.load_state_dict(source.state_dict())
        return ensemble

    @property
    def cam_layers(self) -> list[nn.Module]:
        return [member.cam_layer for member in self.members]

    def forward(self, crop: torch.Tensor) -> torch.Tensor:
        probability = torch.stack([torch.sigmoid(member(crop)) for member in self.members]).mean(0)
        probability = probability.clamp(1e-6, 1 - 1e-6)
        return torch.log(probability) - torch.log1p(-probability)
