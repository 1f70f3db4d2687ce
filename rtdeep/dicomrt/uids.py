"""DICOM UIDs: random by default, deterministic when the caller gives a seed.

UIDs use the ``2.25`` root (a UID made from a 128-bit integer, ISO/IEC 9834-8), so no organisation
root is needed and every UID is at most 44 characters.
"""

from __future__ import annotations

import hashlib
import uuid

__all__ = [
    "CT_IMAGE_STORAGE",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "RT_DOSE_STORAGE",
    "RT_PLAN_STORAGE",
    "RT_STRUCTURE_SET_STORAGE",
    "make_uid",
]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
IMPLEMENTATION_CLASS_UID = "2.25.286210725861537519123880402146473468214"
IMPLEMENTATION_VERSION_NAME = "RTDEEP_010"


def make_uid(*seed_parts: object) -> str:
    """A new UID.

    Args:
        seed_parts: when given, the UID is a deterministic function of their ``str`` values
            (same parts, same UID: reproducible synthetic cohorts); when empty, a random UID.

    Returns:
        A UID string of the form ``2.25.<decimal>``.
    """
    if seed_parts:
        digest = hashlib.sha256("\x1f".join(str(p) for p in seed_parts).encode()).digest()
        value = int.from_bytes(digest[:16], "big")
    else:
        value = uuid.uuid4().int
    return f"2.25.{value}"
