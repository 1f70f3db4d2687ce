"""Progress reporting shared by the CLI and the Slicer subprocess runner."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

__all__ = ["progress"]

T = TypeVar("T")


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr (hidden when ``RTDEEP_NO_PROGRESS=1`` or not a TTY
    and ``RTDEEP_PROGRESS`` is unset)."""
    disable = os.environ.get("RTDEEP_NO_PROGRESS") == "1" or (
        not sys.stderr.isatty() and os.environ.get("RTDEEP_PROGRESS") != "1"
    )
    yield from tqdm(items, desc=description, total=total, disable=disable, file=sys.stderr, leave=False)
