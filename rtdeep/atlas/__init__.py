"""Multi-atlas segmentation, the baseline the deep models are compared with.

Atlases are synthetic phantom patients (:mod:`rtdeep.atlas.library`), registered to the CT with
SimpleITK (affine + demons at 4 mm, :mod:`rtdeep.atlas.register`), their labels fused by majority
vote (:mod:`rtdeep.atlas.segment`).
"""

from __future__ import annotations

from typing import Any

from rtdeep.atlas.names import ATLAS_MODELS, atlas_site

__all__ = [
    "ATLAS_MODELS",
    "ATLAS_SEED",
    "DEFAULT_N_ATLASES",
    "atlas_site",
    "load_atlases",
    "segment_with_atlas",
]

#: names served from the registration modules, imported on first use (they import SimpleITK)
_LAZY = {"ATLAS_SEED": "rtdeep.atlas.library", "load_atlases": "rtdeep.atlas.library",
         "DEFAULT_N_ATLASES": "rtdeep.atlas.segment", "segment_with_atlas": "rtdeep.atlas.segment"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rtdeep.atlas' has no attribute {name!r}")
