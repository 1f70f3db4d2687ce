"""Segmentation inference: a CT in, organ masks on the CT grid out."""

from __future__ import annotations

__all__: list[str] = []
