"""The atlas baselines' model names (``<site>_atlas``), apart from the registration code, so that
listing models never imports SimpleITK."""

from __future__ import annotations

from rtdeep.sites import SITES

__all__ = ["ATLAS_MODELS", "atlas_site"]

#: model name -> site of every atlas baseline
ATLAS_MODELS: dict[str, str] = {f"{site}_atlas": site for site in SITES}


def atlas_site(model_name: str) -> str | None:
    """The site of an atlas model name (``"thorax_atlas"`` -> ``"thorax"``), or None if it is not one."""
    return ATLAS_MODELS.get(str(model_name).strip().lower())
