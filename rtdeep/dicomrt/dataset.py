"""Small pydicom helpers shared by the readers: tolerant text access and opening one RT object."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from rtdeep.errors import DicomReadError, RtDeepError

__all__ = ["read_rt_dataset", "text"]


def text(ds: pydicom.Dataset, keyword: str) -> str:
    """The attribute's value as stripped text; "" when absent or empty."""
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def read_rt_dataset(
    path: str | os.PathLike[str], modality: str, object_name: str, wrong_kind_error: type[RtDeepError]
) -> pydicom.Dataset:
    """Open a DICOM RT file (with or without the Part-10 preamble) and check its Modality.

    Args:
        path: the file.
        modality: the expected Modality, e.g. ``"RTDOSE"``.
        object_name: what to call it in messages, e.g. ``"RT Dose"``.
        wrong_kind_error: the error raised when the Modality differs.

    Raises:
        FileNotFoundError: no such file.
        DicomReadError: not parseable as DICOM.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {object_name} file not found")
    try:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            ds = pydicom.dcmread(path, force=True)
    except Exception as error:
        raise DicomReadError(f"cannot read {object_name} ({error})", path=path) from error
    if text(ds, "Modality") != modality:
        raise wrong_kind_error(f"not an {object_name} (Modality '{text(ds, 'Modality')}')", path=path,
                               tag="Modality (0008,0060)")
    return ds
