"""A short hash of the phantom generator's source, for cache keys: caches of generated phantoms
(training arrays, atlases, crops) must never outlive a change of the generator."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

__all__ = ["generator_fingerprint"]


@lru_cache(maxsize=1)
def generator_fingerprint() -> str:
    """12 hex digits of SHA256 over the names and contents of ``rtdeep/phantom/*.py``."""
    package_dir = Path(__file__).parent
    digest = hashlib.sha256()
    for source in sorted(package_dir.rglob("*.py")):
        digest.update(source.relative_to(package_dir).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:12]
