"""Training cases on the model grid: windowed CT plus an organ label map, cached as ``.npz``.

A case is prepared once per (study, site) and cached, so epochs read small arrays: the CT is
cropped to the body, resampled to the site's model spacing (trilinear with anti-aliasing) and
windowed to [0, 1]; each organ mask is resampled the same way (linear, > 0.5) and painted into a
label map (value = organ position + 1; a later organ wins an overlap). Arrays are ``[k, j, i]``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtdeep.dicomrt.types import Roi
from rtdeep.errors import RtDeepError
from rtdeep.inference.postprocess import clean_organ_mask
from rtdeep.inference.preprocess import body_box, crop_volume, window_hu
from rtdeep.inference.segment import model_mask_to_ct
from rtdeep.metrics import dice_coefficient
from rtdeep.resample import resample_to_spacing
from rtdeep.sites import Site
from rtdeep.volume import Volume

__all__ = ["SegCase", "cases_from_manifest", "cases_from_phantoms", "grid_ceiling_dice", "load_or_prepare", "prepare_case"]

log = logging.getLogger(__name__)


@dataclass
class SegCase:
    """One study on the model grid.

    Attributes:
        case_id: patient or study identifier.
        image: CT on the model grid, float32 ``[k, j, i]``: HU from :func:`prepare_case`, windowed
            to [0, 1] once loaded for training.
        labels: organ label map, uint8 ``[k, j, i]`` (0 background).
        affine: model-grid index (i, j, k) -> LPS mm.
        present: per organ, whether the study had that structure (missing ones are not penalised
            as background in validation Dice).
    """

    case_id: str
    image: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    present: np.ndarray


def prepare_case(case_id: str, ct: Volume, rois: Sequence[Roi], site: Site) -> SegCase:
    """Crop and resample a CT (HU) and rasterise the site's organs on the model grid."""
    box = body_box(ct)
    cropped = crop_volume(ct, box)
    image = resample_to_spacing(cropped, site.spacing_mm)
    labels = np.zeros(image.shape, np.uint8)
    present = np.zeros(len(site.organs), bool)
    by_name = {roi.name: roi for roi in rois}
    for value, organ in enumerate(site.organs, start=1):
        roi = by_name.get(organ.name)
        if roi is None or not roi.mask.any():
            continue
        mask = resample_to_spacing(crop_volume(ct.with_array(roi.mask.astype(np.float32)), box), site.spacing_mm)
        labels[mask.array > 0.5] = value
        present[value - 1] = True
    return SegCase(case_id, image.array, labels, image.affine, present)


def grid_ceiling_dice(ct: Volume, masks: dict[str, np.ndarray], site: Site) -> dict[str, float]:
    """Per organ in ``masks``: the Dice of a network that reproduces its training labels exactly.

    The masks take the round trip every prediction takes: rasterised on the model grid as the
    training labels are (:func:`prepare_case`), post-processed and resampled back onto the CT grid
    as :func:`rtdeep.inference.segment.segment_volume` does (probabilities 0 or 1); the Dice against
    the original masks is the ceiling the grid spacing sets for such a network (detail finer than
    the model grid is lost; a network's own probabilities can place boundaries between model voxels
    and recover a little of it).
    """
    rois = [Roi(name=name, mask=mask) for name, mask in masks.items()]
    case = prepare_case("grid-ceiling", ct, rois, site)
    spacing_kji = tuple(reversed(site.spacing_mm))
    return {
        organ.name: dice_coefficient(
            masks[organ.name],
            model_mask_to_ct(clean_organ_mask(case.labels == value, spacing_kji if organ.compact else None), case.affine, ct),
        )
        for value, organ in enumerate(site.organs, start=1)
        if organ.name in masks
    }


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` to ``path`` through :func:`rtdeep.fileio.atomic_write` (a temporary file
    of its own, then renamed): a reader never sees a half-written cache, and processes caching the
    same case never share a file."""
    from rtdeep.fileio import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file object: numpy appends no ".npz" to the temporary name
            np.savez_compressed(handle, **arrays)

    atomic_write(path, write, overwrite=True)


def _save(case: SegCase, path: Path) -> None:
    save_npz(path, hu=case.image.astype(np.float16), labels=case.labels, affine=case.affine, present=case.present,
             case_id=np.array(case.case_id))


def _load(path: Path) -> SegCase:
    with np.load(path) as data:
        return SegCase(
            str(data["case_id"]), data["hu"].astype(np.float32), data["labels"], data["affine"], data["present"]
        )


def load_or_prepare(cache_path: Path | None, make: Callable[[], SegCase], site: Site) -> SegCase:
    """Read ``cache_path`` if it exists, else ``make()`` the case (HU) and cache it there; then window it."""
    if cache_path is not None and cache_path.is_file():
        case = _load(cache_path)
    else:
        case = make()
        if cache_path is not None:
            _save(case, cache_path)
    case.image = window_hu(case.image, site.intensity_window)
    return case


#: Version of :func:`prepare_case`'s crop and resampling, in every cache file's name: a case cached
#: before a change is prepared again (2: :func:`body_box` leaves out thin sheets such as a couch top)
PREPARATION_VERSION = 2


def _tag(site: Site) -> str:
    return f"{site.name}_{'x'.join(f'{s:g}' for s in site.spacing_mm)}_v{PREPARATION_VERSION}"


def cases_from_manifest(
    data_dir: str | Path, site: Site, cache_dir: Path | None, limit: int | None = None
) -> list[SegCase]:
    """Cases from a cohort folder with ``manifest.csv`` (column ``study_dir`` relative to it).

    Each study is read with :func:`rtdeep.dicomrt.study.load_study` (CT plus RT Structure Set).
    A manifest from ``rtdeep cohort`` maps the clinic's structure names to the site's organs
    (column ``roi_map``); organs a study lacks are marked absent (``SegCase.present``), not background.

    Raises:
        RtDeepError: no manifest, or a study without a structure set.
    """
    from rtdeep.cohort.manifest import organ_rois
    from rtdeep.dicomrt.study import load_study

    data_dir = Path(data_dir)
    manifest = data_dir / "manifest.csv"
    if not manifest.is_file():
        raise RtDeepError("training data needs a manifest.csv (written by `rtdeep phantom` or `rtdeep cohort`)",
                          path=manifest)
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "study_dir" not in rows[0]:
        raise RtDeepError("manifest.csv has no rows with a 'study_dir' column", path=manifest)
    rows = rows[:limit] if limit else rows
    cases = []
    for row in rows:
        study_dir = data_dir / row["study_dir"]
        case_id = row.get("study_id") or row.get("patient_id") or study_dir.name
        roi_map = _roi_map(row, manifest)
        # the name map is part of the cache key: a cohort rebuilt with another map is prepared again
        map_tag = f"_{hashlib.sha256(json.dumps(roi_map, sort_keys=True).encode()).hexdigest()[:8]}" if roi_map else ""

        def make(study_dir: Path = study_dir, case_id: str = case_id, roi_map: dict = roi_map) -> SegCase:
            study = load_study(study_dir)
            if study.structure_set is None:
                raise RtDeepError("study has no RT Structure Set to train on", path=study_dir)
            return prepare_case(case_id, study.ct.volume, organ_rois(study.structure_set.rois, roi_map), site)

        cache = None if cache_dir is None else cache_dir / f"{_tag(site)}_{_safe(case_id)}{map_tag}.npz"
        cases.append(load_or_prepare(cache, make, site))
    return cases


def _roi_map(row: dict[str, str], manifest: Path) -> dict[str, str]:
    """A cohort manifest row's ``roi_map`` (TG-263 organ -> ROI name); empty for other manifests."""
    try:
        return {str(k): str(v) for k, v in json.loads(row.get("roi_map") or "{}").items()}
    except (json.JSONDecodeError, AttributeError) as error:
        raise RtDeepError(f"study {row.get('study_dir')}: column 'roi_map' is not a JSON object ({error})",
                          path=manifest) from error


def _phantom_cache(site: Site, grid: str, seed: int, index: int, cache_dir: Path) -> Path:
    from rtdeep.phantom import generator_fingerprint

    # the generator's fingerprint is in the file name: arrays of an older phantom are never reused
    return cache_dir / f"{_tag(site)}_{grid}_p{generator_fingerprint(site.name)}_s{seed}_i{index}.npz"


def cases_from_phantoms(
    site: Site, indices: Sequence[int], seed: int, grid: str, cache_dir: Path | None
) -> list[SegCase]:
    """Cases generated in memory by :func:`rtdeep.phantom.generate_patient` (cached when ``cache_dir``)."""
    from rtdeep.phantom import generate_patient

    cases = []
    for index in indices:

        def make(index: int = index) -> SegCase:
            patient = generate_patient(site.name, index, seed, grid=grid)
            return prepare_case(patient.patient_id, patient.ct, patient.rois, site)

        cache = None if cache_dir is None else _phantom_cache(site, grid, seed, index, cache_dir)
        cases.append(load_or_prepare(cache, make, site))
    return cases


def cache_phantoms(sites: Sequence[Site], indices: Sequence[int], seed: int, grid: str, cache_dir: Path) -> int:
    """Write the missing caches of :func:`cases_from_phantoms` for every model grid in ``sites`` (one
    anatomical site), generating each phantom once for all grids. Returns the phantoms generated."""
    from rtdeep.phantom import generate_patient

    generated = 0
    for index in indices:
        missing = [(site, _phantom_cache(site, grid, seed, index, cache_dir)) for site in sites]
        missing = [(site, path) for site, path in missing if not path.is_file()]
        if not missing:
            continue
        patient = generate_patient(missing[0][0].name, index, seed, grid=grid)
        for site, path in missing:
            _save(prepare_case(patient.patient_id, patient.ct, patient.rois, site), path)
        generated += 1
    return generated


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
