"""The phantom generator's fingerprint: per site, an edit of one site's anatomy leaves the other
site's caches valid, and any edit of a shared module invalidates both."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import rtdeep.phantom

PHANTOM_DIR = Path(rtdeep.phantom.__file__).parent


def _fingerprints(package: Path) -> dict[str | None, str]:
    spec = importlib.util.spec_from_file_location(f"fingerprint_copy_{abs(hash(package))}", package / "fingerprint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {site: module.generator_fingerprint(site) for site in (None, "thorax", "headneck")}


def _edited_copy(tmp_path: Path, name: str, module: str) -> dict[str | None, str]:
    package = tmp_path / name
    shutil.copytree(PHANTOM_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    with open(package / module, "a") as handle:
        handle.write("\n# an edit\n")
    return _fingerprints(package)


def test_site_fingerprints_follow_only_their_own_anatomy(tmp_path):
    original = _fingerprints(PHANTOM_DIR)
    assert len(set(original.values())) == 3
    thorax_edit = _edited_copy(tmp_path, "thorax_edit", "anatomy_thorax.py")
    assert thorax_edit["headneck"] == original["headneck"]
    assert thorax_edit["thorax"] != original["thorax"] and thorax_edit[None] != original[None]
    headneck_edit = _edited_copy(tmp_path, "headneck_edit", "anatomy_headneck.py")
    assert headneck_edit["thorax"] == original["thorax"]
    assert headneck_edit["headneck"] != original["headneck"]
    shared_edit = _edited_copy(tmp_path, "shared_edit", "scanner.py")
    assert all(shared_edit[site] != original[site] for site in original)
