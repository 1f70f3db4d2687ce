"""Progress reporting: one callback type for long work, and the terminal's progress bars.

Long-running functions (segmentation, atlas registration) take a :data:`ProgressCallback`, called
with the fraction done (0 to 1) and a short message. The CLI passes :func:`progress_bar`'s callback,
the Slicer worker prints ``PROGRESS <fraction> <message>`` lines, the web app updates its state.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm import tqdm

__all__ = ["ProgressCallback", "progress", "progress_bar", "report_progress", "scaled_progress"]

T = TypeVar("T")

#: called with (fraction done 0-1, message)
ProgressCallback = Callable[[float, str], None]


def _bars_hidden() -> bool:
    """Bars are hidden when ``RTDEEP_NO_PROGRESS=1``, or stderr is no TTY and ``RTDEEP_PROGRESS`` is unset."""
    return os.environ.get("RTDEEP_NO_PROGRESS") == "1" or (
        not sys.stderr.isatty() and os.environ.get("RTDEEP_PROGRESS") != "1"
    )


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr."""
    yield from tqdm(items, desc=description, total=total, disable=_bars_hidden(), file=sys.stderr, leave=False)


@contextmanager
def progress_bar(description: str) -> Iterator[ProgressCallback]:
    """A percentage bar on stderr for the duration of the block; yields its :data:`ProgressCallback`."""
    bar = tqdm(total=100, desc=description, file=sys.stderr, disable=_bars_hidden(), leave=False,
               bar_format="{l_bar}{bar}| {elapsed}")

    def callback(fraction: float, message: str) -> None:
        bar.set_description(message[:40])
        bar.n = round(100 * min(max(fraction, 0.0), 1.0))
        bar.refresh()

    try:
        yield callback
    finally:
        bar.close()


def report_progress(callback: ProgressCallback | None, fraction: float, message: str) -> None:
    """Call ``callback`` (if any) with ``fraction`` clipped to [0, 1]."""
    if callback is not None:
        callback(float(min(max(fraction, 0.0), 1.0)), message)


def scaled_progress(callback: ProgressCallback | None, start: float, stop: float) -> ProgressCallback:
    """A callback that maps its 0-1 onto ``start``-``stop`` of ``callback`` (for one step of several)."""

    def scaled(fraction: float, message: str) -> None:
        report_progress(callback, start + (stop - start) * fraction, message)

    return scaled
