"""Sites (organs, colours, intensity window) and architectures (network, patch, GAN) as data.

Everything a training run needs to know that is not the data itself lives here, so the CLI, the
bundle-training script and the tests build identical models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rtdeep.errors import RtDeepError

__all__ = ["ARCHITECTURES", "SITES", "ArchSpec", "OrganLabel", "SiteSpec", "get_arch", "get_site"]


@dataclass(frozen=True)
class OrganLabel:
    """One organ of a site: TG-263 name, display colour (RGB 0-255), RT ROI interpreted type."""

    name: str
    color_rgb: tuple[int, int, int]
    interpreted_type: str = "ORGAN"


@dataclass(frozen=True)
class SiteSpec:
    """A treatment site: organs (label value = position + 1), model spacing and intensity window.

    Attributes:
        spacing_mm: model grid spacing along i, j, k (mm).
        intensity_window: HU mapped linearly to [0, 1] (clipped) before the network.
    """

    name: str
    title: str
    organs: tuple[OrganLabel, ...]
    spacing_mm: tuple[float, float, float] = (2.5, 2.5, 3.0)
    intensity_window: tuple[float, float] = (-1000.0, 1000.0)

    @property
    def organ_names(self) -> list[str]:
        return [organ.name for organ in self.organs]

    @property
    def n_classes(self) -> int:
        """Output channels: background plus one per organ."""
        return len(self.organs) + 1


@dataclass(frozen=True)
class ArchSpec:
    """An architecture: 3D or 2.5D U-Net generator, with or without the PatchGAN critic.

    Attributes:
        spatial_dims: 3 (volume patches) or 2 (axial slices).
        context_slices: 2.5D only: adjacent axial slices fed as channels (odd; centre predicted).
        patch_size: training patch in array order (k, j, i) for 3D, (j, i) for 2D, model voxels.
        batch_size: patches per iteration.
        channels: MONAI ``UNet`` channel widths per level (first level strided, so the full-resolution
            cost is one transposed convolution: fast on a CPU).
        adversarial_weight: weight of the generator's adversarial loss (0 for plain U-Nets).
        learning_rate: Adam learning rate of the generator (the same for all four, so the U-Net and
            GAN comparison differs only in the adversarial term; GAN generators use beta1 0.5).
        critic_learning_rate: Adam learning rate of the PatchGAN critic (pix2pix: 2e-4, beta1 0.5).
    """

    name: str
    title: str
    spatial_dims: int
    patch_size: tuple[int, ...]
    batch_size: int
    channels: tuple[int, ...]
    context_slices: int = 1
    adversarial_weight: float = 0.0
    learning_rate: float = 1e-3
    critic_learning_rate: float = 2e-4
    critic_features: tuple[int, ...] = field(default=(16, 32, 64))

    @property
    def is_gan(self) -> bool:
        return self.adversarial_weight > 0

    @property
    def size_divisor(self) -> int:
        """Input sizes must be multiples of this (one halving per strided level)."""
        return 2 ** (len(self.channels) - 1)

    def network_spec(self, site: SiteSpec) -> dict[str, Any]:
        """The ``{"name", "kwargs"}`` that rebuilds the generator (stored in bundle metadata)."""
        return {
            "name": "UNet",
            "kwargs": {
                "spatial_dims": self.spatial_dims,
                "in_channels": self.context_slices,
                "out_channels": site.n_classes,
                "channels": list(self.channels),
                "strides": [2] * (len(self.channels) - 1),
                "num_res_units": 1,
            },
        }

    def critic_spec(self, site: SiteSpec) -> dict[str, Any]:
        """The PatchGAN critic's spec: it sees the image channels plus the class probabilities."""
        return {
            "name": "PatchGanDiscriminator",
            "kwargs": {
                "spatial_dims": self.spatial_dims,
                "in_channels": self.context_slices + site.n_classes,
                "features": list(self.critic_features),
            },
        }


# Colours follow common planning-system conventions (lungs blue/cyan, heart red, cord yellow ...).
SITES: dict[str, SiteSpec] = {
    "thorax": SiteSpec(
        name="thorax",
        title="Thorax",
        organs=(
            OrganLabel("Lung_L", (0, 160, 255)),
            OrganLabel("Lung_R", (0, 220, 200)),
            OrganLabel("Heart", (220, 30, 60)),
            OrganLabel("Esophagus", (255, 140, 0)),
            OrganLabel("SpinalCord", (255, 230, 0)),
        ),
        intensity_window=(-1000.0, 600.0),
    ),
    "headneck": SiteSpec(
        name="headneck",
        title="Head and neck",
        organs=(
            OrganLabel("Parotid_L", (0, 200, 120)),
            OrganLabel("Parotid_R", (120, 200, 0)),
            OrganLabel("Glnd_Submand_L", (200, 0, 200)),
            OrganLabel("Glnd_Submand_R", (140, 80, 255)),
            OrganLabel("Mandible", (230, 230, 180)),
            OrganLabel("Brainstem", (255, 100, 100)),
            OrganLabel("SpinalCord", (255, 230, 0)),
        ),
        intensity_window=(-300.0, 700.0),
    ),
}

_UNET3D_CHANNELS = (16, 32, 64, 128)
_UNET25D_CHANNELS = (16, 32, 64, 128, 256)

ARCHITECTURES: dict[str, ArchSpec] = {
    "unet3d": ArchSpec("unet3d", "3D U-Net", 3, (32, 64, 64), 2, _UNET3D_CHANNELS),
    "unet25d": ArchSpec("unet25d", "2.5D U-Net", 2, (128, 128), 8, _UNET25D_CHANNELS, context_slices=5),
    "gan3d": ArchSpec(
        "gan3d", "3D GAN (U-Net generator + PatchGAN)", 3, (32, 64, 64), 2, _UNET3D_CHANNELS,
        adversarial_weight=0.05,
    ),
    "gan25d": ArchSpec(
        "gan25d", "2.5D GAN (U-Net generator + PatchGAN)", 2, (128, 128), 8, _UNET25D_CHANNELS,
        context_slices=5, adversarial_weight=0.05, learning_rate=2e-4,
    ),
}


def get_site(name: str) -> SiteSpec:
    if name not in SITES:
        raise RtDeepError(f"unknown site '{name}'; expected one of {', '.join(SITES)}")
    return SITES[name]


def get_arch(name: str) -> ArchSpec:
    if name not in ARCHITECTURES:
        raise RtDeepError(f"unknown architecture '{name}'; expected one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]
