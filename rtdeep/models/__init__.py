"""Segmentation networks by name: MONAI's U-Net generators and PatchGAN discriminator, the registry
that rebuilds them from a bundle's metadata, and the architectures (:mod:`rtdeep.models.architectures`)."""

from __future__ import annotations

from rtdeep.models.registry import build_network, register_network, registered_networks

__all__ = ["build_network", "register_network", "registered_networks"]
