"""What the web app may read and where uploads go: the ``--data`` folder and a private upload area.

The browser never names a file directly: it names a folder relative to the data root, and
:class:`DataRoot` resolves it (symbolic links included) and refuses anything that leads outside the
root, including links inside a study folder that point elsewhere. Uploaded DICOM files go to a
private temporary folder (mode 0700) that :class:`UploadArea` removes when the app exits.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from rtdeep.errors import RtDeepError

__all__ = ["DataRoot", "OutsideDataError", "UploadArea", "UploadTooLargeError"]

#: folders below the data root the picker lists (deeper studies are still loadable by path)
PICKER_DEPTH = 3


class OutsideDataError(RtDeepError):
    """A path the browser asked for lies outside the ``--data`` folder."""


class UploadTooLargeError(RtDeepError):
    """An upload larger than the app's limit."""


def _holds_dicom(folder: Path) -> bool:
    try:
        return any(entry.is_file() and entry.name.lower().endswith(".dcm") for entry in folder.iterdir())
    except OSError:
        return False


class DataRoot:
    """The folder the app serves studies from.

    Args:
        root: the ``--data`` folder (must exist).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise RtDeepError("data folder does not exist", path=path)
        self.root = path.resolve()

    def resolve(self, relative: str) -> Path:
        """The folder ``relative`` names (relative to the root; ``""`` or ``"."`` is the root).

        Raises:
            OutsideDataError: the path (after resolving links) lies outside the root, or a file or
                link inside it points outside.
            RtDeepError: it does not exist or is not a folder.
        """
        text = (relative or ".").strip()
        shown = text if len(text) <= 200 else text[:200] + "..."
        candidate = Path(text)
        if candidate.is_absolute() or ".." in candidate.parts:
            raise OutsideDataError("path is outside the data folder; choose a folder inside it", path=shown)
        path = (self.root / candidate).resolve()
        if not path.is_relative_to(self.root):
            raise OutsideDataError("path is outside the data folder; choose a folder inside it", path=shown)
        if not path.is_dir():
            raise RtDeepError("no such folder in the data folder", path=shown)
        for inner in path.rglob("*"):
            if inner.is_symlink() and not inner.resolve().is_relative_to(self.root):
                raise OutsideDataError(
                    f"holds a link to a file outside the data folder ({inner.relative_to(path)})", path=shown
                )
        return path

    def relative(self, path: Path) -> str:
        """``path`` relative to the root, as the picker shows it (``"."`` for the root)."""
        text = path.resolve().relative_to(self.root).as_posix()
        return text or "."

    def study_folders(self) -> list[str]:
        """Folders (relative paths) up to :data:`PICKER_DEPTH` deep that hold DICOM files."""
        found = []
        for folder in self._folders(self.root, PICKER_DEPTH):
            if _holds_dicom(folder):
                found.append(self.relative(folder))
        return found

    def is_single_study(self) -> bool:
        """True when the root itself is a study (DICOM files in it or in its ``CT`` folder)."""
        return _holds_dicom(self.root) or _holds_dicom(self.root / "CT")

    @staticmethod
    def _folders(folder: Path, depth: int) -> Iterable[Path]:
        yield folder
        if depth == 0:
            return
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            if child.is_symlink():
                continue
            yield from DataRoot._folders(child, depth - 1)


class UploadArea:
    """A private temporary folder for uploaded files, removed by :meth:`cleanup` (and at exit).

    Args:
        max_bytes: the most bytes one upload (all its files together) may hold.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.folder = Path(tempfile.mkdtemp(prefix="rtdeep-web-upload-"))
        os.chmod(self.folder, 0o700)
        self._count = 0

    def store(self, files: list[tuple[str, bytes]]) -> Path:
        """Write one upload (``(file name, content)`` pairs) into a new sub-folder and return it.

        Only the base name of each file is kept; names that repeat get a number.

        Raises:
            UploadTooLargeError: more than :attr:`max_bytes` in total.
            RtDeepError: no files.
        """
        if not files:
            raise RtDeepError("no files were uploaded")
        total = sum(len(content) for _, content in files)
        if total > self.max_bytes:
            raise UploadTooLargeError(
                f"upload of {total / 1e6:.1f} MB is over the limit of {self.max_bytes / 1e6:.0f} MB"
            )
        self._count += 1
        target = self.folder / f"upload-{self._count:03d}"
        target.mkdir(mode=0o700)
        for index, (name, content) in enumerate(files):
            base = Path(name.replace("\\", "/")).name or f"file{index}"
            if base.startswith("."):
                base = f"file{index}{base}"
            path = target / base
            if path.exists():
                path = target / f"{index:05d}_{base}"
            path.write_bytes(content)
        return target

    def cleanup(self) -> None:
        """Remove the folder and everything uploaded."""
        shutil.rmtree(self.folder, ignore_errors=True)
