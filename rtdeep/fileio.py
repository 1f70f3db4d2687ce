"""Safe output: every file is written to a temporary name and renamed into place, never over
an existing file unless the caller asks, so a failure leaves nothing half-written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from rtdeep.errors import RtDeepError

__all__ = ["OutputExistsError", "atomic_write", "ensure_new_path"]


class OutputExistsError(RtDeepError):
    """The output file already exists and overwriting was not asked for."""


def ensure_new_path(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Return ``path`` as a Path, raising :class:`OutputExistsError` if it exists and not ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError("output exists; choose a new path or pass overwrite", path=path)
    return path


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file to ``path``.

    Args:
        path: final file path; its folder is created if needed.
        write: a function that writes the complete file at the path it is given.
        overwrite: replace an existing file (default: refuse).

    Returns:
        The final path.
    """
    path = ensure_new_path(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        write(tmp_path)
        if not overwrite and path.exists():
            raise OutputExistsError("output appeared while writing; not replaced", path=path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path
