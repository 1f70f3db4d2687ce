"""A short hash of the phantom generator's source, for cache keys: caches of generated phantoms
(training arrays, atlases, crops) must never outlive a change of the generator."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

__all__ = ["generator_fingerprint"]


#: anatomy modules that only one site's phantoms run; every other module counts for every site
_SITE_MODULES = {"thorax": "anatomy_thorax.py", "headneck": "anatomy_headneck.py"}


@cache
def generator_fingerprint(site: str | None = None) -> str:
    """12 hex digits of SHA256 over the names and contents of ``rtdeep/phantom/*.py`` (this module,
    which makes no phantom, left out).

    Args:
        site: ``"thorax"`` or ``"headneck"``: leave out the other site's anatomy module, so that an
            edit of the thorax anatomy does not invalidate head-and-neck caches (and the reverse);
            every shared module still counts. None: every module (caches that mix sites).
    """
    package_dir = Path(__file__).parent
    others = {name for key, name in _SITE_MODULES.items() if site is not None and key != site}
    digest = hashlib.sha256()
    for source in sorted(package_dir.rglob("*.py")):
        if source.name in others or source.name == "fingerprint.py":
            continue
        digest.update(source.relative_to(package_dir).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:12]
