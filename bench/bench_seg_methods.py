"""The talk's method comparison: atlas vs 3D/2.5D U-Net and GAN, per organ, on held-out phantoms.

For each site (thorax, head and neck) it takes held-out synthetic patients: by default the
clinical-grid (512 x 512) held-out phantoms of ``rtdeep.training.train_all`` (seed 2, indices
100-105, never trained on nor used to select a model; the models' own held-out set), or with
``--grid small`` small-grid phantoms of seed ``--seed`` (never the atlas seed nor a training seed:
bundles whose model card names the same seed are refused). It contours them with every method, and prints per organ the mean Dice and HD95 (mm)
of each method (with the standard deviation of Dice over the patients) and which method wins
(highest mean Dice, ties to lower HD95), then each column's training budget from its model card. It also prints the
mean volume ratio test/reference per method (below 1 = under-segmentation, which the talk reports
for the commercial atlas tool) and the wall and CPU seconds per CT (on a busy machine the CPU
seconds, summed over threads, are the fairer measure).

Deep models come from ``Resources/Models/<site>_<arch>`` bundles (``<site>_ensemble``: the mean of
its members' probabilities); ``--extra-bundles`` adds bundle folders from elsewhere (a model withdrawn
for missing a floor, or staged, keeps its column: the folder's metadata names its site and
architecture); a missing bundle is skipped with one line saying so. The grid ceiling is given for
each model grid of the methods compared (2.5 mm, and 1.25 mm for the fine-grid networks).

Run:
    python bench/bench_seg_methods.py                       # both sites, 5 clinical-grid patients each
    git archive 1bacfcf Resources/Models/headneck_unet3d | tar -x -C bench/out/withdrawn   # a withdrawn model
    python bench/bench_seg_methods.py --extra-bundles bench/out/withdrawn/Resources/Models/headneck_unet3d
    python bench/bench_seg_methods.py --sites thorax --n-patients 2 --methods atlas
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from rtdeep.models.architectures import ARCHITECTURES

CEILING = "grid ceiling"
#: phantom seed of the held-out patients (training uses --phantom-seed 0 by default; atlases 880001)
HELD_OUT_SEED = 990_001
#: the columns: the atlas, every architecture (rtdeep.models.architectures), the site's ensemble
METHODS = {
    "atlas": "atlas (multi-atlas, majority vote)",
    **{name: arch.title for name, arch in ARCHITECTURES.items()},
    "ensemble": "ensemble (mean probabilities of its member bundles)",
}


def _seeds_in(value: Any) -> list[int]:
    """Every integer stored under a key containing 'seed' anywhere in a metadata tree."""
    found: list[int] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if "seed" in str(key).lower() and isinstance(item, int):
                found.append(item)
            else:
                found.extend(_seeds_in(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_seeds_in(item))
    return found


def _bundle_path(site: str, method: str) -> Path | str:
    """The bundle of a column: an ``--extra-bundles`` folder made for ``<site>_<method>``, else the name."""
    name = f"{site}_{method}"
    for folder in _ARGS.extra_bundles:
        rtdeep_metadata = json.loads((folder / "configs" / "metadata.json").read_text()).get("rtdeep", {})
        if f"{rtdeep_metadata.get('site')}_{rtdeep_metadata.get('architecture')}" == name:
            return folder
    return name


def _load_method(site: str, method: str, seed: int):
    """A function ct -> list[Roi] for ``method``, or (None, reason) when it cannot run."""
    if method == "atlas":
        from rtdeep.atlas import segment_with_atlas

        return (lambda ct, n=_ARGS.n_atlases: segment_with_atlas(ct, site, n_atlases=n)), ""
    from rtdeep.bundles import load_bundle
    from rtdeep.errors import BundleError

    name = f"{site}_{method}"
    try:
        bundle = load_bundle(_bundle_path(site, method))
    except BundleError as error:
        return None, f"skip {name} ({METHODS[method]}): {error}"
    if _ARGS.grid == "small" and seed in _seeds_in([bundle.metadata, *(m.metadata for m in bundle.members)]):
        return None, f"skip {name}: its metadata names seed {seed}, the held-out seed; pick another --seed"
    from rtdeep.inference.segment import segment_volume

    return (lambda ct: segment_volume(ct, bundle)), ""


def _patients(site: str, n_patients: int, seed: int):
    """(patient ID, CT, reference ROIs) of the held-out patients of ``--grid``."""
    from rtdeep.dicomrt.types import Roi
    from rtdeep.phantom import generate_patient
    from rtdeep.sites import get_site

    organs = get_site(site).organ_names
    if _ARGS.grid == "small":
        for index in range(n_patients):
            patient = generate_patient(site, index, seed, grid="small")
            yield patient.patient_id, patient.ct, [roi for roi in patient.rois if roi.name in organs]
        return
    from rtdeep.training.train_all import HELDOUT_INDICES, heldout_phantom

    if n_patients > len(HELDOUT_INDICES):
        raise SystemExit(f"--grid clinical has {len(HELDOUT_INDICES)} held-out patients per site")
    for index in HELDOUT_INDICES[:n_patients]:
        ct, masks, patient_id = heldout_phantom(site, index)
        yield patient_id, ct, [Roi(name=organ, mask=masks[organ]) for organ in organs if organ in masks]


def _evaluate(site: str, methods: list[str], n_patients: int, seed: int) -> list[dict[str, Any]]:
    from rtdeep.metrics import compare_structure_sets
    from rtdeep.models.architectures import ARCHITECTURES
    from rtdeep.sites import get_site
    from rtdeep.training.data import grid_ceiling_dice

    organs = get_site(site).organ_names
    runners = {}
    for method in methods:
        runner, reason = _load_method(site, method, seed)
        if runner is None:
            print(reason, flush=True)
        else:
            runners[method] = runner
    # the model grids of the methods compared (an ensemble's members are on the 2.5 mm and fine grids)
    grids = {get_site(site).spacing_mm} | {ARCHITECTURES[m].model_site(get_site(site)).spacing_mm
                                          for m in runners if m in ARCHITECTURES}
    records: list[dict[str, Any]] = []
    for patient_id, ct, reference in _patients(site, n_patients, seed):
        # the limit a model grid sets: the Dice of a network that reproduces its training labels exactly
        for spacing in sorted(grids, reverse=True):
            grid_site = dataclasses.replace(get_site(site), spacing_mm=spacing)
            ceiling = grid_ceiling_dice(ct, {roi.name: roi.mask for roi in reference}, grid_site)
            records += [{"site": site, "patient": patient_id, "method": _ceiling_name(spacing), "roi_name": organ,
                         "dice": value} for organ, value in ceiling.items()]
        for method, runner in runners.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            rois = runner(ct)
            seconds = time.perf_counter() - start
            cpu_seconds = time.process_time() - start_cpu
            rows = compare_structure_sets(reference, rois, ct, roi_names=organs)
            for row in rows:
                records.append({"site": site, "patient": patient_id, "method": method, "seconds": seconds,
                                "cpu_seconds": cpu_seconds, **row})
            dice = np.nanmean([row["dice"] for row in rows])
            print(f"  {site} {patient_id} {method:8s} mean Dice {dice:.3f}  {seconds:6.1f} s wall"
                  f"  {cpu_seconds:6.1f} s CPU", flush=True)
    return records


def _ceiling_name(spacing_mm: tuple[float, float, float]) -> str:
    return f"{CEILING} {spacing_mm[0]:g} mm"


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _report(site: str, records: list[dict[str, Any]], methods: list[str]) -> None:
    from rtdeep.sites import get_site

    ceilings = sorted({r["method"] for r in records if r["method"].startswith(CEILING)}, reverse=True)
    ceiling = {(organ, name): _mean([r["dice"] for r in records if r["method"] == name and r["roi_name"] == organ])
               for organ in get_site(site).organ_names for name in ceilings}
    records = [r for r in records if not r["method"].startswith(CEILING)]
    present = [m for m in methods if any(r["method"] == m for r in records)]
    if not present:
        print(f"\n{site}: no method ran")
        return
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_key[(record["roi_name"], record["method"])].append(record)
    n_patients = len({r["patient"] for r in records})
    print(f"\n{get_site(site).title}: mean Dice +- sd / mean HD95 (mm) over {n_patients} held-out phantoms")
    width = 22
    print(f"{'organ':<16}" + "".join(f"{m:>{width}}" for m in [*present, *ceilings]) + "   best (Dice)")
    wins: dict[str, int] = defaultdict(int)
    for organ in get_site(site).organ_names:
        cells, scores = [], {}
        for method in present:
            rows = by_key[(organ, method)]
            dice = _mean([r["dice"] for r in rows])
            hd95 = _mean([r["hd95_mm"] for r in rows])
            scores[method] = (dice, -hd95 if not math.isnan(hd95) else -math.inf)
            spread = float(np.nanstd([r["dice"] for r in rows])) if rows else math.nan
            cells.append(f"{dice:.3f}+-{spread:.3f} / {hd95:5.1f}")
        best = max(present, key=lambda m: (scores[m][0] if not math.isnan(scores[m][0]) else -1.0, scores[m][1]))
        wins[best] += 1
        cells += [f"{ceiling[(organ, name)]:.3f}" for name in ceilings]
        print(f"{organ:<16}" + "".join(f"{c:>{width}}" for c in cells) + f"   {best}")
    ratio_cells, time_cells, cpu_cells = [], [], []
    for method in present:
        rows = [r for r in records if r["method"] == method]
        ratio_cells.append(f"{_mean([r['volume_ratio'] for r in rows]):.3f}")
        per_ct = {r["patient"]: r["seconds"] for r in rows}
        time_cells.append(f"{float(np.median(list(per_ct.values()))):.1f}")
        per_ct_cpu = {r["patient"]: r["cpu_seconds"] for r in rows}
        cpu_cells.append(f"{float(np.median(list(per_ct_cpu.values()))):.1f}")
    print(f"{'vol test/ref':<16}" + "".join(f"{c:>{width}}" for c in ratio_cells))
    print(f"{'s per CT (med)':<16}" + "".join(f"{c:>{width}}" for c in time_cells))
    print(f"{'CPU s per CT':<16}" + "".join(f"{c:>{width}}" for c in cpu_cells))
    print("organs won: " + ", ".join(f"{m} {wins[m]}" for m in present))
    print(f"{CEILING}: mean Dice of a network that reproduces its training labels exactly on that model grid "
          "(rtdeep.training.data.grid_ceiling_dice: the reference rasterised on the grid and resampled back); "
          "the atlas works on the CT grid")
    for method in present:
        print(f"budget {method}: {_budget(site, method)}")


def _budget(site: str, method: str) -> str:
    """The training budget a column had, as its model card states it."""
    if method == "atlas":
        return f"no training; {_ARGS.n_atlases} atlases registered per CT"
    from rtdeep.bundles import load_bundle

    bundle = load_bundle(_bundle_path(site, method))
    if bundle.members:
        return "no training of its own; members " + ", ".join(member.path.name for member in bundle.members)
    training = bundle.metadata.get("rtdeep", {}).get("training", {})
    return "; ".join(str(training[key]) for key in ("budget", "training_time") if key in training) or "not stated"


_ARGS: argparse.Namespace


def main(argv: list[str] | None = None) -> int:
    global _ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", nargs="+", default=["thorax", "headneck"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--n-patients", type=int, default=5)
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="phantom seed of the held-out patients")
    parser.add_argument("--n-atlases", type=int, default=5)
    parser.add_argument("--csv", type=Path, default=None, help="also write every per-patient row here")
    parser.add_argument("--grid", choices=["clinical", "small"], default="clinical",
                        help="clinical: train_all's held-out phantoms (512 x 512); small: seed --seed, small grid")
    parser.add_argument("--extra-bundles", nargs="+", type=Path, default=[],
                        help="bundle folders outside Resources/Models (withdrawn or staged models)")
    _ARGS = parser.parse_args(argv)
    os.environ.setdefault("RTDEEP_NO_PROGRESS", "1")
    from rtdeep.atlas import ATLAS_SEED

    if _ARGS.seed == ATLAS_SEED:
        print(f"--seed {_ARGS.seed} is the atlas seed; held-out patients must differ", file=sys.stderr)
        return 2
    held_out = (f"seed {_ARGS.seed}, indices 0..{_ARGS.n_patients - 1}, small grid" if _ARGS.grid == "small" else
                "train_all's held-out set: seed 2, indices from 100, clinical grid")
    print(f"held-out phantoms: {held_out}, {_ARGS.n_patients} per site; "
          f"atlases: seed {ATLAS_SEED}, {_ARGS.n_atlases} per CT; threads: torch {_torch_threads()}")
    all_records: list[dict[str, Any]] = []
    for site in _ARGS.sites:
        records = _evaluate(site, _ARGS.methods, _ARGS.n_patients, _ARGS.seed)
        _report(site, records, _ARGS.methods)
        all_records.extend(records)
    if _ARGS.csv is not None and all_records:
        with open(_ARGS.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(key for r in all_records for key in r)))
            writer.writeheader()
            writer.writerows(all_records)
        print(f"rows: {_ARGS.csv}")
    return 0


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
