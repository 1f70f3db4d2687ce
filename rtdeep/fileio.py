"""Safe output: every file is written to a temporary name and renamed into place, never over
an existing file unless the caller asks, so a failure leaves nothing half-written.

A command that writes several files stages them all in a hidden folder beside the output folder
(:func:`staged_output`) and moves them in only when every one was written and none exists there,
so a refusal or a crash leaves no partial output. A folder that cannot be written gives one
:class:`rtdeep.errors.OutputError` naming the output, never an ``[Errno 13]`` on a temporary path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rtdeep.errors import OutputError

__all__ = ["OutputExistsError", "atomic_write", "ensure_new_path", "ensure_new_paths", "staged_output"]


class OutputExistsError(OutputError):
    """The output file already exists and overwriting was not asked for."""


def ensure_new_path(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Return ``path`` as a Path, raising :class:`OutputExistsError` if it exists and not ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError("output exists; choose a new path or pass overwrite", path=path)
    return path


def ensure_new_paths(paths: Iterable[str | os.PathLike[str]], overwrite: bool = False) -> list[Path]:
    """:func:`ensure_new_path` on every path before any is written (the first clash is named)."""
    return [ensure_new_path(path, overwrite) for path in paths]


def _output_error(error: OSError, path: Path) -> OutputError:
    reason = error.strerror or type(error).__name__
    return OutputError(f"cannot write the output here ({reason})", path=path)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file to ``path``.

    Args:
        path: final file path; its folder is created if needed.
        write: a function that writes the complete file at the path it is given.
        overwrite: replace an existing file (default: refuse).

    Returns:
        The final path.

    Raises:
        OutputExistsError: ``path`` exists and not ``overwrite``.
        OutputError: the folder cannot be created or written (names ``path``).
    """
    path = ensure_new_path(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise _output_error(error, path) from error
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        try:
            write(tmp_path)
        except OSError as error:
            raise _output_error(error, path) from error
        if not overwrite and path.exists():
            raise OutputExistsError("output appeared while writing; not replaced", path=path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


@contextmanager
def staged_output(out_dir: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """A hidden folder beside ``out_dir`` to write into; its files move into ``out_dir`` at the end.

    On leaving the block without an error, every staged file is moved to the same place under
    ``out_dir``, after checking (before moving any) that none exists there unless ``overwrite``.
    On an error, nothing is moved and the staging folder is removed.

    Raises:
        OutputExistsError: a staged file's name exists in ``out_dir`` (nothing moved).
        OutputError: ``out_dir`` or its parent cannot be written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError("output folder is a file", path=out_dir)
    parent = out_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.rtdeep-", dir=parent))
    except OSError as error:
        raise _output_error(error, out_dir) from error
    try:
        yield stage
        staged = [p for p in sorted(stage.rglob("*")) if p.is_file()]
        targets = [out_dir / p.relative_to(stage) for p in staged]
        clashes = [t for t in targets if t.exists()]
        if clashes and not overwrite:
            raise OutputExistsError(f"output exists ({len(clashes)} file(s)); nothing was written; choose a new "
                                    "output folder or pass --overwrite", path=clashes[0])
        try:
            for source, target in zip(staged, targets):
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
        except OSError as error:
            raise _output_error(error, out_dir) from error
    finally:
        shutil.rmtree(stage, ignore_errors=True)
