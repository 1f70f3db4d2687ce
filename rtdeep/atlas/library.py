"""The atlas library: phantom patients, kept on disk so a segmentation does not regenerate them.

Nothing binary is shipped. Each atlas is a synthetic patient made by
:func:`rtdeep.phantom.generate_patient` (``grid="small"``) with :data:`ATLAS_SEED`, a seed that no
training, validation or test cohort of this project uses, so the atlases never see a held-out
patient. The first use builds the atlases (a few seconds each) and caches them as ``.npz`` files
under ``$RTDEEP_CACHE_DIR/atlas`` (default ``~/.cache/rtdeep/atlas``). The cache key holds a
fingerprint of the phantom generator's source, so a changed generator rebuilds the library instead
of reusing stale anatomy. An unwritable cache folder only costs the rebuild.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtdeep.errors import RtDeepError
from rtdeep.fileio import atomic_write
from rtdeep.sites import SITES
from rtdeep.volume import Volume

__all__ = [
    "ATLAS_SEED",
    "ATLAS_SPACING_MM",
    "Atlas",
    "atlas_cache_dir",
    "build_atlas",
    "load_atlases",
]

log = logging.getLogger(__name__)

#: the phantom seed of every atlas patient; project cohorts use other seeds (see docs/atlas.md)
ATLAS_SEED = 880_001
#: isotropic spacing (mm) of the atlas CTs: the registration grid
ATLAS_SPACING_MM = 4.0
#: bump when the cached file layout changes
_FORMAT_VERSION = 2


@dataclass(frozen=True)
class Atlas:
    """One atlas patient.

    Attributes:
        patient_id: the phantom's patient ID.
        ct: HU, float32 ``[k, j, i]``, resampled to :data:`ATLAS_SPACING_MM` (registration image).
        labels: uint8 ``[k, j, i]`` label map on the phantom's own grid; value ``n`` is
            ``organ_names[n - 1]``, 0 is background.
        organ_names: TG-263 names in label-value order.
    """

    patient_id: str
    ct: Volume
    labels: Volume
    organ_names: tuple[str, ...]


def atlas_cache_dir() -> Path:
    """Folder of cached atlases: ``$RTDEEP_CACHE_DIR/atlas`` or ``~/.cache/rtdeep/atlas``."""
    root = os.environ.get("RTDEEP_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "rtdeep") / "atlas"


def _generator_fingerprint() -> str:
    """Short hash of the phantom generator's source files (changes when its anatomy may change)."""
    phantom = importlib.import_module("rtdeep.phantom")
    key = f"{_FORMAT_VERSION}:{phantom.generator_fingerprint()}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _label_map(rois: list, organ_names: tuple[str, ...], shape: tuple[int, int, int], site: str) -> np.ndarray:
    """uint8 label map from phantom ROIs (later organs win where two overlap)."""
    by_name = {roi.name.lower(): roi for roi in rois}
    labels = np.zeros(shape, np.uint8)
    for value, name in enumerate(organ_names, start=1):
        roi = by_name.get(name.lower())
        if roi is None:
            raise RtDeepError(f"phantom for site '{site}' has no ROI '{name}'", roi=name)
        labels[np.asarray(roi.mask, bool)] = value
    return labels


def build_atlas(site: str, index: int, seed: int = ATLAS_SEED) -> Atlas:
    """Generate phantom ``index`` of ``site`` and turn it into an :class:`Atlas` (no caching)."""
    from rtdeep.phantom import generate_patient
    from rtdeep.resample import resample_to_spacing

    organ_names = SITES[site].organ_names
    patient = generate_patient(site, index, seed, grid="small")
    ct = resample_to_spacing(patient.ct, (ATLAS_SPACING_MM,) * 3)
    labels = _label_map(patient.rois, organ_names, patient.ct.shape, site)
    return Atlas(
        patient_id=str(patient.patient_id),
        ct=Volume(ct.array.astype(np.float32), ct.affine),
        labels=Volume(labels, patient.ct.affine),
        organ_names=organ_names,
    )


def _save(atlas: Atlas, path: Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                patient_id=np.array(atlas.patient_id),
                ct=np.round(atlas.ct.array).astype(np.int16),  # HU: int16 halves the file
                ct_affine=atlas.ct.affine,
                labels=atlas.labels.array,
                labels_affine=atlas.labels.affine,
                organ_names=np.array(atlas.organ_names),
            )

    atomic_write(path, write, overwrite=True)


def _load(path: Path) -> Atlas:
    with np.load(path, allow_pickle=False) as data:
        return Atlas(
            patient_id=str(data["patient_id"]),
            ct=Volume(data["ct"].astype(np.float32), data["ct_affine"]),
            labels=Volume(data["labels"], data["labels_affine"]),
            organ_names=tuple(str(name) for name in data["organ_names"]),
        )


def load_atlases(site: str, n_atlases: int, seed: int = ATLAS_SEED) -> list[Atlas]:
    """The first ``n_atlases`` atlases of ``site`` (phantom indices 0..n-1 of ``seed``), cached.

    Raises:
        RtDeepError: unknown site or ``n_atlases`` < 1.
    """
    if site not in SITES:
        raise RtDeepError(f"no atlas for site '{site}'; expected one of {', '.join(SITES)}")
    if n_atlases < 1:
        raise RtDeepError(f"n_atlases must be at least 1, got {n_atlases}")
    folder = atlas_cache_dir()
    fingerprint = _generator_fingerprint()
    atlases = []
    for index in range(n_atlases):
        path = folder / f"{site}_s{seed}_i{index}_{fingerprint}.npz"
        if path.is_file():
            try:
                atlases.append(_load(path))
                continue
            except (OSError, ValueError, KeyError) as error:
                log.warning("atlas cache %s unreadable (%s); rebuilding", path, error)
        atlas = build_atlas(site, index, seed)
        try:
            _save(atlas, path)
        except OSError as error:
            log.warning("atlas cache %s not written (%s); continuing without it", path, error)
        atlases.append(atlas)
    return atlases
