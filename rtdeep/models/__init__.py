"""Segmentation networks (3D and 2.5D U-Net generators, PatchGAN discriminators) and the registry
that rebuilds them from a bundle's metadata."""

from __future__ import annotations

from rtdeep.models.registry import build_network, register_network, registered_networks

__all__ = ["build_network", "register_network", "registered_networks"]
