"""Multi-atlas segmentation, the baseline the deep models are compared with.

Atlases are synthetic phantom patients (:mod:`rtdeep.atlas.library`), registered to the CT with
SimpleITK (affine + demons at 4 mm, :mod:`rtdeep.atlas.register`), their labels fused by majority
vote (:mod:`rtdeep.atlas.segment`).
"""

from __future__ import annotations

from rtdeep.atlas.library import ATLAS_SEED, load_atlases
from rtdeep.atlas.segment import ATLAS_MODELS, DEFAULT_N_ATLASES, atlas_site, segment_with_atlas

__all__ = [
    "ATLAS_MODELS",
    "ATLAS_SEED",
    "DEFAULT_N_ATLASES",
    "atlas_site",
    "load_atlases",
    "segment_with_atlas",
]
