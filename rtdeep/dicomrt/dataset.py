"""Small pydicom helpers shared by the readers: strict attribute access, truncation checks, size
limits, and opening one RT object.

Every helper raises a typed :class:`rtdeep.errors.RtDeepError` naming the file and the tag, so a
reader never lets a ``ValueError`` from pydicom or numpy escape as a traceback.

Size limit: a reader refuses, before allocating, any object whose declared size (Rows x Columns x
frames or slices) exceeds :func:`max_voxels` voxels; the bound is 2**29 (536,870,912) voxels, 2 GiB
as float32, and the environment variable ``RTDEEP_MAX_VOXELS`` raises or lowers it.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import BytesLengthException, InvalidDicomError

from rtdeep.errors import DicomReadError, NotDicomError, RtDeepError

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "MALFORMED_ERRORS",
    "MAX_VOXELS_ENV",
    "check_complete",
    "check_voxels",
    "element_spans",
    "finite_floats",
    "int_value",
    "max_voxels",
    "optional_float",
    "quiet_pydicom",
    "read_rt_dataset",
    "reading",
    "text",
]

#: default bound on the voxels of one object (2**29: e.g. 512 x 512 x 2048, 2 GiB as float32)
DEFAULT_MAX_VOXELS = 1 << 29
#: environment variable that replaces :data:`DEFAULT_MAX_VOXELS`
MAX_VOXELS_ENV = "RTDEEP_MAX_VOXELS"

#: what pydicom and numpy raise on malformed values; readers turn these into DicomReadError
MALFORMED_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, EOFError,
                    struct.error, NotImplementedError, UnicodeError, RecursionError, BytesLengthException)

_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_VRS = _LONG_VRS | {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH",
                    b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}


def text(ds: pydicom.Dataset, keyword: str) -> str:
    """The attribute's value as stripped text; "" when absent, empty or unreadable (quietly: a
    reader that needs the value raises its own error)."""
    try:
        with quiet_pydicom():
            value = ds.get(keyword, "")
            return "" if value is None else str(value).strip()
    except MALFORMED_ERRORS:
        return ""


def optional_float(ds: pydicom.Dataset, keyword: str) -> float | None:
    """The attribute's value as a float; None when absent, empty or not a number (for optional
    attributes; a required one is read with :func:`finite_floats` or :func:`int_value`)."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def max_voxels() -> int:
    """The voxel bound: ``RTDEEP_MAX_VOXELS`` if set (a positive integer), else :data:`DEFAULT_MAX_VOXELS`."""
    raw = os.environ.get(MAX_VOXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_VOXELS
    try:
        value = int(float(raw))
    except ValueError:
        raise RtDeepError(f"{MAX_VOXELS_ENV}='{raw}' is not a number of voxels") from None
    if value <= 0:
        raise RtDeepError(f"{MAX_VOXELS_ENV}='{raw}' must be positive")
    return value


def check_voxels(count: int, path: str | os.PathLike[str], what: str, tag: str) -> None:
    """Refuse (before allocating) an object declaring more than :func:`max_voxels` voxels."""
    bound = max_voxels()
    if count > bound:
        raise DicomReadError(
            f"{what} declares {count:,} voxels, more than the limit of {bound:,} (about "
            f"{4 * count / 2**30:.1f} GiB as float32); set {MAX_VOXELS_ENV} to raise the limit", path=path, tag=tag)


def int_value(ds: pydicom.Dataset, keyword: str, tag: str, path: str | os.PathLike[str], *,
              default: int | None = None, roi: str | None = None) -> int:
    """One integer attribute, strictly: missing or empty gives ``default`` (an error when None);
    several values, a non-number or a fraction is an error naming the tag."""
    where = f"{keyword} {tag}"
    try:
        value = ds.get(keyword)
    except MALFORMED_ERRORS as error:
        raise DicomReadError(f"unreadable {keyword} ({error})", path=path, tag=where, roi=roi) from error
    if value is None or value == "" or (isinstance(value, (list, tuple, pydicom.multival.MultiValue)) and not value):
        if default is None:
            raise DicomReadError(f"{keyword} is missing or empty", path=path, tag=where, roi=roi)
        return default
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        raise DicomReadError(f"{keyword} holds {len(value)} values, expected one", path=path, tag=where, roi=roi)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DicomReadError(f"{keyword} '{str(value)[:40]}' is not a number", path=path, tag=where,
                             roi=roi) from None
    if not np.isfinite(number) or number != int(number):
        raise DicomReadError(f"{keyword} {value} is not an integer", path=path, tag=where, roi=roi)
    return int(number)


def finite_floats(ds: pydicom.Dataset, keyword: str, tag: str, path: str | os.PathLike[str],
                  count: int | None = None, error: type[RtDeepError] = DicomReadError) -> np.ndarray:
    """A numeric attribute as float64 values, all finite, ``count`` of them when given."""
    where = f"{keyword} {tag}"
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            raise error(f"{keyword} is missing or empty", path=path, tag=where)
        values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
        array = np.asarray([float(v) for v in values], dtype=np.float64)
    except MALFORMED_ERRORS as exc:
        if isinstance(exc, RtDeepError):
            raise
        raise error(f"{keyword} is not numeric ({exc})", path=path, tag=where) from exc
    if count is not None and array.size != count:
        raise error(f"{keyword} must have {count} values, found {array.size}", path=path, tag=where)
    if not np.all(np.isfinite(array)):
        raise error(f"{keyword} holds a non-finite value ({array.tolist()})", path=path, tag=where)
    return array


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's log records and warnings (the reader raises its own one-line error)."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@contextmanager
def reading(path: str | os.PathLike[str], object_name: str) -> Iterator[None]:
    """Turn any malformed-value exception raised inside into one DicomReadError naming the file
    (pydicom's own warnings about invalid values are silenced: the reader's error says it once)."""
    try:
        with quiet_pydicom():
            yield
    except RtDeepError:
        raise
    except MemoryError as error:
        raise DicomReadError(f"{object_name} too large to hold in memory", path=path) from error
    except MALFORMED_ERRORS as error:
        raise DicomReadError(f"malformed {object_name} ({type(error).__name__}: {error})", path=path) from error
    except OSError as error:  # pydicom's lazy parsing of a corrupt sequence, or a file gone meanwhile
        raise DicomReadError(f"cannot read {object_name} ({error.strerror or error})", path=path) from error


class _Truncated(Exception):
    def __init__(self, message: str, tag: int | None = None) -> None:
        super().__init__(message)
        self.tag = tag


def _tag_text(tag: int | None) -> str | None:
    if tag is None:
        return None
    keyword = pydicom.datadict.keyword_for_tag(tag) if pydicom.datadict.dictionary_has_tag(tag) else ""
    return f"{keyword + ' ' if keyword else ''}({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _walk_elements(data: mmap.mmap | bytes, pos: int, explicit: bool, in_item: bool, meta_only: bool = False,
                   spans: list[tuple[int, bytes | None, int, int]] | None = None, stop: int | None = None) -> int:
    """Walk element headers from ``pos`` to the end of the file (or of a defined-length item,
    ``stop``), descending into sequences; raise _Truncated where a length does not fit."""
    end = len(data) if stop is None else stop
    where = "file" if stop is None else "item"
    while True:
        if pos >= end:
            if in_item:
                raise _Truncated("file ends inside a sequence item")
            return pos
        if pos + 8 > end:
            raise _Truncated(f"{where} ends inside an element header")
        group, element = struct.unpack_from("<HH", data, pos)
        tag = (group << 16) | element
        if meta_only and group != 0x0002:
            return pos
        if tag == _ITEM_END and in_item:
            return pos + 8
        vr: bytes | None = None
        if (explicit or group == 0x0002) and group != 0xFFFE:
            vr = bytes(data[pos + 4:pos + 6])
            if vr not in _VRS:
                raise _Truncated(f"unknown VR '{vr.decode('latin-1')}'", tag)
            if vr in _LONG_VRS:
                if pos + 12 > end:
                    raise _Truncated(f"{where} ends inside an element header", tag)
                length, pos = struct.unpack_from("<I", data, pos + 8)[0], pos + 12
            else:
                length, pos = struct.unpack_from("<H", data, pos + 6)[0], pos + 8
        else:
            length, pos = struct.unpack_from("<I", data, pos + 4)[0], pos + 8
        if length == _UNDEFINED:  # a sequence; as UN, its items are in implicit VR (PS3.5 6.2.2)
            pos = _walk_items(data, pos, explicit and vr != b"UN", tag, spans)
            if pos > end:
                raise _Truncated(f"sequence runs past the end of its {where}", tag)
        elif pos + length > end:
            raise _Truncated(f"value declares {length} bytes, {end - pos} left in the {where}", tag)
        else:
            if vr == b"SQ" or (vr is None and _is_sequence(tag)):
                _walk_defined_items(data, pos, pos + length, explicit, tag, spans)
            elif spans is not None:
                spans.append((tag, vr, pos, length))
            pos += length


def _walk_defined_items(data: mmap.mmap | bytes, pos: int, end: int, explicit: bool, parent: int,
                        spans: list[tuple[int, bytes | None, int, int]] | None) -> None:
    """The items of a sequence of defined length: each an item tag whose length fits the sequence."""
    while pos < end:
        if pos + 8 > end:
            raise _Truncated("corrupt sequence: item header runs past the end of the sequence", parent)
        group, element, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        if (group << 16) | element != _ITEM:
            raise _Truncated(f"corrupt sequence: tag {_tag_text((group << 16) | element)} where an item was expected",
                             parent)
        if length == _UNDEFINED:
            pos = _walk_elements(data, pos, explicit, in_item=True, spans=spans)
            if pos > end:
                raise _Truncated("corrupt sequence: an item runs past the end of the sequence", parent)
        elif pos + length > end:
            raise _Truncated(f"corrupt sequence: an item declares {length} bytes, {end - pos} left in the sequence",
                             parent)
        else:
            _walk_elements(data, pos, explicit, in_item=False, spans=spans, stop=pos + length)
            pos += length


def _is_sequence(tag: int) -> bool:
    return pydicom.datadict.dictionary_has_tag(tag) and pydicom.datadict.dictionary_VR(tag) == "SQ"


def element_spans(data: bytes, implicit: bool) -> list[tuple[int, bytes | None, int, int]]:
    """``(tag, VR bytes or None, value offset, value length)`` of every element (nested ones
    included) of a whole little-endian file, found by the walk of :func:`check_complete`; the
    fuzzer uses it to change values in place."""
    spans: list[tuple[int, bytes | None, int, int]] = []
    pos = 132 if len(data) >= 132 and data[128:132] == b"DICM" else 0
    pos = _walk_elements(data, pos, True, in_item=False, meta_only=True, spans=spans)
    _walk_elements(data, pos, not implicit, in_item=False, spans=spans)
    return spans


def _walk_items(data: mmap.mmap | bytes, pos: int, explicit: bool, parent: int,
                spans: list[tuple[int, bytes | None, int, int]] | None = None) -> int:
    """The items of a sequence (or encapsulated pixel data) of undefined length, to its delimiter."""
    size = len(data)
    while True:
        if pos + 8 > size:
            raise _Truncated("file ends inside a sequence (no sequence delimiter)", parent)
        tag = (struct.unpack_from("<H", data, pos)[0] << 16) | struct.unpack_from("<H", data, pos + 2)[0]
        length = struct.unpack_from("<I", data, pos + 4)[0]
        pos += 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise _Truncated(f"corrupt sequence: tag {_tag_text(tag)} where an item was expected", parent)
        if length == _UNDEFINED:
            pos = _walk_elements(data, pos, explicit, in_item=True, spans=spans)
        elif pos + length > size:
            raise _Truncated(f"sequence item declares {length} bytes, {size - pos} left in the file", parent)
        elif parent == 0x7FE00010:  # encapsulated pixel data: fragments are opaque
            pos += length
        else:
            _walk_elements(data, pos, explicit, in_item=False, spans=spans, stop=pos + length)
            pos += length


def check_complete(path: str | os.PathLike[str], ds: pydicom.Dataset) -> None:
    """Raise DicomReadError when the file ends before its last element does.

    pydicom reads a truncated file quietly (a structure set cut in half gives half its contours)
    and parses sequences only when they are used; this walks the element headers of the file,
    sequences and their items included (values are skipped, never read), and checks that every
    declared length fits in the file and in its item. Only little-endian uncompressed-header files are walked (all but
    the retired big-endian and deflated syntaxes).
    """
    with quiet_pydicom():
        implicit, little = getattr(ds, "original_encoding", (None, None))
        meta = getattr(ds, "file_meta", None)
        transfer_syntax = text(meta, "TransferSyntaxUID") if meta is not None else ""
    if little is False or transfer_syntax == "1.2.840.10008.1.2.1.99":
        return
    if implicit is None:
        implicit = transfer_syntax in ("", "1.2.840.10008.1.2")
    path = Path(path)
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise DicomReadError("empty file", path=path)
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            pos = 132 if size >= 132 and data[128:132] == b"DICM" else 0
            try:
                pos = _walk_elements(data, pos, True, in_item=False, meta_only=True)
                _walk_elements(data, pos, not implicit, in_item=False)
            except _Truncated as error:
                try:  # a file whose transfer syntax names the other VR encoding (pydicom reads it so too)
                    _walk_elements(data, pos, bool(implicit), in_item=False)
                except _Truncated:
                    raise DicomReadError(f"truncated or corrupt file: {error}", path=path,
                                         tag=_tag_text(error.tag)) from None


def read_rt_dataset(
    path: str | os.PathLike[str], modality: str, object_name: str, wrong_kind_error: type[RtDeepError]
) -> pydicom.Dataset:
    """Open a DICOM RT file (with or without the Part-10 preamble), check it is whole and its Modality.

    Args:
        path: the file.
        modality: the expected Modality, e.g. ``"RTDOSE"``.
        object_name: what to call it in messages, e.g. ``"RT Dose"``.
        wrong_kind_error: the error raised when the Modality differs.

    Raises:
        FileNotFoundError: no such file.
        NotDicomError: not parseable as DICOM.
        DicomReadError: truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {object_name} file not found")
    try:
        with quiet_pydicom():
            try:
                ds = pydicom.dcmread(path)
            except InvalidDicomError:
                ds = pydicom.dcmread(path, force=True)
    except PermissionError:
        raise
    except Exception as error:
        raise NotDicomError(f"cannot read {object_name} ({type(error).__name__}: {error})", path=path) from error
    if not text(ds, "Modality") and not text(ds, "SOPInstanceUID"):
        raise NotDicomError(f"not a DICOM {object_name} (no Modality, no SOPInstanceUID)", path=path)
    check_complete(path, ds)
    if text(ds, "Modality") != modality:
        raise wrong_kind_error(f"not an {object_name} (Modality '{text(ds, 'Modality')}')", path=path,
                               tag="Modality (0008,0060)")
    return ds
