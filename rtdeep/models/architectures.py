"""Architectures as data: network, patch, batch and GAN settings of each segmentation model.

The CLI, the bundle-training script and the tests build identical models from these entries; the
organs and intensity window come from the site (:mod:`rtdeep.sites`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rtdeep.errors import RtDeepError
from rtdeep.sites import Site

__all__ = ["ARCHITECTURES", "DEFAULT_INFERENCE_OVERLAP", "DEFAULT_INFERENCE_WINDOW", "ArchSpec", "get_arch"]

#: the 3D sliding window ``(k, j, i)`` in model voxels of an architecture that sets none (and of a
#: bundle whose metadata names none)
DEFAULT_INFERENCE_WINDOW = (64, 128, 128)
#: the fraction by which neighbouring 3D windows overlap (MONAI ``sliding_window_inference``), likewise
DEFAULT_INFERENCE_OVERLAP = 0.25


@dataclass(frozen=True)
class ArchSpec:
    """An architecture: 3D or 2.5D U-Net generator, with or without the PatchGAN critic.

    Attributes:
        spatial_dims: 3 (volume patches) or 2 (axial slices).
        context_slices: 2.5D only: adjacent axial slices fed as channels (odd; centre predicted).
        patch_size: training patch in array order (k, j, i) for 3D, (j, i) for 2D, model voxels.
        batch_size: patches per iteration.
        channels: MONAI ``UNet`` channel widths per level.
        full_resolution_level: the first level keeps the model grid's resolution (stride 1) and
            every later level halves it, so boundaries are drawn from full-resolution features; when
            False every level halves (the first features are at twice the model spacing: about a
            third cheaper, but small organs lose a voxel of boundary precision).
        adversarial_weight: weight of the generator's adversarial loss (0 for plain U-Nets).
        learning_rate: Adam learning rate of the generator (the same for all four, so the U-Net and
            GAN comparison differs only in the adversarial term; GAN generators use beta1 0.5). The
            2.5D GAN once had pix2pix's 2e-4: from scratch at the equal budget of 3,000 iterations it
            reached validation Dice 0.47 (head and neck; 1e-3: 0.85), so it now has the others' rate.
        critic_learning_rate: Adam learning rate of the PatchGAN critic (pix2pix: 2e-4, beta1 0.5).
        critic_channels: channels of the critic's first convolution (doubled at each later one).
        critic_layers: strided (halving) convolutions of the critic.
        in_plane_mm: the model grid's in-plane spacing when it is finer than the site's
            (``Site.spacing_mm``; the slice spacing stays the site's): small organs a few model voxels
            across (esophagus, cord, salivary glands) get their boundaries from finer voxels, at
            about (site / this)^2 times the compute per slice. None: the site's grid.
        in_plane_first_halving: 3D on an anisotropic grid only: the first strided level halves rows
            and columns but not slices (1.25 x 1.25 x 3 mm features become 2.5 x 2.5 x 3 mm), and
            every later level halves all three, as nnU-Net plans anisotropic grids. With one more
            level than the 2.5 mm network, the receptive field in mm stays what it is there.
        inference_window: 3D only: the sliding window ``(k, j, i)`` in model voxels
            for validation and inference. Larger than the training patch, so a CT needs fewer
            windows; each window's instance norm sees its own content, so much larger windows
            than the patch change the features (on the fine grid 192 x 192 in-plane lost 0.03-0.08
            Dice on the submandibular glands).
        inference_overlap: 3D only: the fraction by which neighbouring windows overlap.
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
    critic_channels: int = 16
    critic_layers: int = 3
    full_resolution_level: bool = True
    in_plane_mm: float | None = None
    in_plane_first_halving: bool = False
    inference_window: tuple[int, int, int] = DEFAULT_INFERENCE_WINDOW
    inference_overlap: float = DEFAULT_INFERENCE_OVERLAP

    def model_site(self, site: Site) -> Site:
        """``site`` on this architecture's model grid (what training, metadata and cards read)."""
        if self.in_plane_mm is None:
            return site
        return dataclasses.replace(site, spacing_mm=(self.in_plane_mm, self.in_plane_mm, site.spacing_mm[2]))

    @property
    def is_gan(self) -> bool:
        return self.adversarial_weight > 0

    @property
    def strides(self) -> list[int | tuple[int, ...]]:
        """MONAI ``UNet`` strides between levels: 1 for a full-resolution first level, then 2 (or
        (1, 2, 2), slices kept, for the first strided level with ``in_plane_first_halving``)."""
        halvings: list[int | tuple[int, ...]] = [2] * (len(self.channels) - 1)
        strides = [1, *halvings[1:]] if self.full_resolution_level else halvings
        if self.in_plane_first_halving:
            first = strides.index(2)
            strides[first] = (1, 2, 2)
        return strides

    @property
    def size_divisor(self) -> int:
        """Input sizes must be multiples of this: 2 to the number of strided levels (in-plane, where
        slices are halved once less, a multiple of it is a multiple of theirs too)."""
        return 2 ** sum(1 for stride in self.strides if stride != 1)

    def network_spec(self, site: Site) -> dict[str, Any]:
        """The ``{"name", "kwargs"}`` that rebuilds the generator (stored in bundle metadata)."""
        return {
            "name": "UNet",
            "kwargs": {
                "spatial_dims": self.spatial_dims,
                "in_channels": self.context_slices,
                "out_channels": site.n_classes,
                "channels": list(self.channels),
                "strides": self.strides,
                "num_res_units": 1,
            },
        }

    def critic_spec(self, site: Site) -> dict[str, Any]:
        """The PatchGAN critic's spec (MONAI ``PatchDiscriminator``, instance norm as in pix2pix): it
        sees the image channels plus the class probabilities; its last output holds one logit per patch."""
        return {
            "name": "PatchDiscriminator",
            "kwargs": {
                "spatial_dims": self.spatial_dims,
                "in_channels": self.context_slices + site.n_classes,
                "channels": self.critic_channels,
                "num_layers_d": self.critic_layers,
                "norm": "INSTANCE",
                "last_conv_kernel_size": 3,
            },
        }


# an 8-channel full-resolution level on top of 3 (3D) or 4 (2.5D) halvings: the same depth and
# receptive field as the strided designs these replace, with full-resolution boundaries
_UNET3D_CHANNELS = (8, 16, 32, 64, 128)
_UNET25D_CHANNELS = (8, 16, 32, 64, 128, 256)
# the fine-grid 3D networks: one level more than at 2.5 mm, its halving in-plane only
_UNET3D_FINE_CHANNELS = (*_UNET3D_CHANNELS, 256)

ARCHITECTURES: dict[str, ArchSpec] = {
    "unet3d": ArchSpec("unet3d", "3D U-Net", 3, (32, 64, 64), 2, _UNET3D_CHANNELS),
    "unet25d": ArchSpec("unet25d", "2.5D U-Net", 2, (128, 128), 8, _UNET25D_CHANNELS, context_slices=5),
    "gan3d": ArchSpec(
        "gan3d", "3D GAN (U-Net generator + PatchGAN)", 3, (32, 64, 64), 2, _UNET3D_CHANNELS,
        adversarial_weight=0.05,
    ),
    "gan25d": ArchSpec(
        "gan25d", "2.5D GAN (U-Net generator + PatchGAN)", 2, (128, 128), 8, _UNET25D_CHANNELS,
        context_slices=5, adversarial_weight=0.05,
    ),
    # the 2.5D U-Net on a 1.25 mm in-plane grid (the site's 3 mm slices): the 2.5 mm grid alone caps
    # the esophagus at Dice 0.935 and the cord at 0.921 (bench/bench_grid_ceiling.py); 192 x 192
    # patches cover 240 mm, as 96 would at 2.5 mm
    "unet25d_fine": ArchSpec(
        "unet25d_fine", "2.5D U-Net, 1.25 mm grid", 2, (192, 192), 8, _UNET25D_CHANNELS, context_slices=5,
        in_plane_mm=1.25,
    ),
    # the 2.5D GAN on the same 1.25 mm grid, so that the talk's U-Net vs GAN comparison is made on
    # the grid where the 2.5 mm ceiling no longer decides it
    "gan25d_fine": ArchSpec(
        "gan25d_fine", "2.5D GAN, 1.25 mm grid", 2, (192, 192), 8, _UNET25D_CHANNELS, context_slices=5,
        adversarial_weight=0.05, in_plane_mm=1.25,
    ),
    # the 3D U-Net and GAN on the same 1.25 mm grid, so that all four networks of the talk's table
    # can be compared where the grid no longer caps the small organs; 24 x 96 x 96 patches (72 x 120
    # x 120 mm). One more level than at 2.5 mm, halving rows and columns first: with the 2.5 mm
    # design's levels the receptive field was 65 voxels in-plane, 81 mm at 1.25 mm against 162 mm
    # for every other network (bench/bench_receptive_field.py), and the first such network missed
    # the submandibular glands by 0.06-0.11 against its 2.5 mm twin
    # Windows of 48 slices: on a 512x512x113 head-and-neck CT (113 x 169 x 282 model voxels, the
    # shoulders widen the box) 64-slice windows needed 3 in z as 48-slice ones do, at 1.6 times
    # the compute (14.9 against 9.2 s)
    "unet3d_fine": ArchSpec(
        "unet3d_fine", "3D U-Net, 1.25 mm grid", 3, (24, 96, 96), 2, _UNET3D_FINE_CHANNELS, in_plane_mm=1.25,
        in_plane_first_halving=True, inference_window=(48, 128, 128),
    ),
    "gan3d_fine": ArchSpec(
        "gan3d_fine", "3D GAN, 1.25 mm grid", 3, (24, 96, 96), 2, _UNET3D_FINE_CHANNELS,
        adversarial_weight=0.05, in_plane_mm=1.25, in_plane_first_halving=True, inference_window=(48, 128, 128),
    ),
}


def get_arch(name: str) -> ArchSpec:
    if name not in ARCHITECTURES:
        raise RtDeepError(f"unknown architecture '{name}'; expected one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]
