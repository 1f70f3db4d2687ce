"""Segmentation networks by name: MONAI's U-Net generators and PatchGAN discriminator, the registry
that rebuilds them from a bundle's metadata, and the architectures (:mod:`rtdeep.models.architectures`).

The registry (torch and MONAI, seconds to import) loads on first use of one of its names, so that
code that only reads the architectures (the CLI's parser, the web server) never imports torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_network", "receptive_field", "register_network", "registered_networks"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from rtdeep.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'rtdeep.models' has no attribute '{name}'")
