"""Segmentation inference: a CT in, organ masks on the CT grid out.

:func:`segment_ct` is the one entry point (bundled network or atlas baseline, by model name);
:func:`rtdeep.inference.segment.segment_volume` runs a loaded bundle.
"""

from __future__ import annotations

from rtdeep.inference.models import available_models, model_site, segment_ct

__all__ = ["available_models", "model_site", "segment_ct"]
