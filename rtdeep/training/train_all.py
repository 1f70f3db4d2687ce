"""Train, evaluate and package the eight bundled segmentation models (``Resources/Models``).

Usage (from the project root; each stage can be re-run on its own)::

    python -m rtdeep.training.train_all train    [--sites thorax headneck] [--archs ...] [--minutes 5]
    python -m rtdeep.training.train_all evaluate [--sites ...]   # held-out Dice on the CT grid
    python bench/bench_segment.py --json bench/out/bench_segment.json   # speed and peak RSS
    python -m rtdeep.training.train_all package  # bundles + model cards + models.json
    python -m rtdeep.training.train_all remeasure --note "..." [--speed]  # kept bundles: cards from evaluate --shipped (and bench_segment.py)
    python -m rtdeep.training.train_all select --sites thorax --candidates unet3d unet3d+unet25d_fine
    python -m rtdeep.training.train_all ensemble --sites headneck --archs unet3d unet25d --choice "..."
    python -m rtdeep.training.train_all enforce-floors  # withdraw shipped models below an organ's floor
    python -m rtdeep.training.train_all spread --sites headneck --archs unet3d_fine --seeds 0 1 2  # run-to-run spread

Data (all synthetic, from :func:`rtdeep.phantom.generate_patient` on the clinical 512x512 grid):
training phantoms seed 1 indices 0-25 without 16-17 (24; ``--train-phantoms 72``: indices 0-73), validation
(best epoch) seed 1 indices 16-17, selection (``select``: an ensemble's members) seed 1 indices 200-205,
held-out test seed 2 indices 100-105, never used in training or model selection. Work files go to
``bench/out/train_bundles/<site>_<arch>/`` (checkpoints, ``result.json``, ``heldout.json``); a run with
``--seed N`` other than 0 (network initialisation, patch order, augmentation) to
``<site>_<arch>_seedN/``, so that several runs of one recipe measure how far training alone moves the
held-out Dice (``spread``). ``--device cuda`` trains on a GPU where one is present.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from rtdeep.model_database import organs_below_floor
from rtdeep.sites import ORGANS

__all__ = ["HELDOUT_INDICES", "HELDOUT_SEED", "TRAIN_INDICES", "TRAIN_SEED", "VAL_INDICES", "main"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORK_DIR = PROJECT_ROOT / "bench" / "out" / "train_bundles"
CACHE_DIR = PROJECT_ROOT / "bench" / "out" / "seg_cache"
TRAIN_SEED, HELDOUT_SEED = 1, 2
VAL_INDICES = [16, 17]


def train_indices(n_phantoms: int) -> list[int]:
    """The first ``n_phantoms`` training indices of seed 1 (the validation indices skipped)."""
    return [index for index in range(n_phantoms + len(VAL_INDICES)) if index not in VAL_INDICES][:n_phantoms]


TRAIN_INDICES = train_indices(24)


def run_name(bundle: str, seed: int = 0) -> str:
    """The work folder of one training run of ``bundle``: its name for seed 0 (the shipped runs), with
    ``_seed<N>`` for another training seed."""
    return bundle if seed == 0 else f"{bundle}_seed{seed}"
HELDOUT_INDICES = list(range(100, 106))
#: phantoms for choosing between trained models (an ensemble's members): seed 1 like the training
#: phantoms but indices no model trained on, so the held-out phantoms stay unseen by every choice
SELECTION_INDICES = list(range(200, 206))
GRID = "clinical"


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def train(sites: list[str], archs: list[str], minutes: float, threads: int, iterations: int | None = None,
          finetune_from: Path | None = None, start_note: str = "", decay_from: int | None = None,
          n_train: int = len(TRAIN_INDICES), seed: int = 0, device: str = "cpu") -> None:
    """Train each (site, architecture) on the same phantoms.

    Args:
        minutes: wall-clock cap per model (a safety; the budget is ``iterations`` when given).
        iterations: the equal budget: every model runs this many iterations (epochs of 50).
        finetune_from: a models folder (``Resources/Models``): start each model from the weights of
            the bundle of the same name there (fine-tuning); None trains from scratch.
        start_note: what the starting weights were (their own budget), for the model card.
        decay_from: iteration from which the learning rate decays by cosine to 5 % at ``iterations``
            (:attr:`TrainConfig.decay_from_iteration`); a run resumed with a larger ``iterations``
            continues its checkpoint into the decay.
        n_train: training phantoms (:func:`train_indices`; the shipped bundles had 24).
        seed: training seed (network initialisation, patch order, augmentation); the work folder is
            :func:`run_name`'s.
        device: ``cpu`` or ``cuda``.
    """
    from rtdeep.models.architectures import get_arch
    from rtdeep.phantom import generator_fingerprint
    from rtdeep.sites import get_site
    from rtdeep.training.data import cases_from_phantoms
    from rtdeep.training.model_card import bundle_name
    from rtdeep.training.trainer import TrainConfig, train_segmentation

    for site_name in sites:
        indices = train_indices(n_train)
        cases: dict[tuple, tuple] = {}  # (training, validation) cases per model grid
        for arch_name in archs:
            arch = get_arch(arch_name)
            site = arch.model_site(get_site(site_name))
            if site.spacing_mm not in cases:
                cases[site.spacing_mm] = (cases_from_phantoms(site, indices, TRAIN_SEED, GRID, CACHE_DIR),
                                          cases_from_phantoms(site, VAL_INDICES, TRAIN_SEED, GRID, CACHE_DIR))
            train_cases, val_cases = cases[site.spacing_mm]
            name = run_name(bundle_name(site, arch), seed)
            out = WORK_DIR / name
            _say(f"training {name}: {iterations or 'unlimited'} iterations, at most {minutes} min, seed {seed}, {device}")
            per_epoch = 50
            init = None
            shipped = finetune_from / bundle_name(site, arch) if finetune_from is not None else None
            if shipped is not None and (shipped / "models" / "model.pt").is_file():
                out.mkdir(parents=True, exist_ok=True)
                init = out / "init_model.pt"  # a copy: the bundle may be replaced while this trains
                if not init.is_file():
                    shutil.copyfile(shipped / "models" / "model.pt", init)
            config = TrainConfig(site=site.name, arch=arch.name, seed=seed, device=device, time_budget_s=minutes * 60,
                                 max_epochs=-(-iterations // per_epoch) if iterations else 1000,
                                 iterations_per_epoch=per_epoch, threads=threads,
                                 init_weights=None if init is None else str(init), decay_from_iteration=decay_from)
            result = train_segmentation(config, site, arch, train_cases, val_cases, out, resume=True,
                                        log_callback=lambda line, n=name: _say(f"{n}: {line}"))
            (out / "result.json").write_text(json.dumps({
                "train_seconds": result.train_seconds, "iterations": result.iterations,
                "best_epoch": result.best_epoch, "epochs": len(result.history),
                "best_val_dice": result.best_val_dice, "threads": threads, "batch_size": arch.batch_size,
                "seed": seed, "device": device,
                "train_phantoms": f"seed {TRAIN_SEED}, {len(indices)} phantoms, indices {indices[0]}-{indices[-1]} "
                                  f"without {VAL_INDICES[0]}-{VAL_INDICES[-1]}",
                "val_phantoms": f"seed {TRAIN_SEED}, indices {VAL_INDICES[0]}-{VAL_INDICES[-1]}",
                "iterations_budget": iterations, "minutes_cap": minutes,
                "phantom_generator": generator_fingerprint(site_name),
                "start": ("fine-tuned from the previously shipped bundle of the same name" if init else "from scratch")
                         + (f" ({start_note})" if start_note else ""),
                "augmentation": "rtdeep.training.sampling.augmentation (MONAI)",
                "learning_rate": (f"{arch.learning_rate:g} constant" if decay_from is None else
                                  f"{arch.learning_rate:g} constant to iteration {decay_from}, then cosine "
                                  f"decay to 5 % at iteration {iterations}"),
            }, indent=1))


def prepare(site_name: str, archs: list[str], indices: list[int], workers: int = 1) -> None:
    """Cache the training phantoms ``indices`` of seed 1 on the model grid of each architecture named
    (each phantom generated once for all grids), in ``workers`` processes."""
    from concurrent.futures import ProcessPoolExecutor

    from rtdeep.models.architectures import get_arch
    from rtdeep.sites import get_site
    from rtdeep.training.data import cache_phantoms

    sites = list({site.spacing_mm: site for site in (get_arch(a).model_site(get_site(site_name)) for a in archs)}.values())
    workers = max(workers, 1)
    shares = [indices[w::workers] for w in range(workers)]
    _say(f"caching {len(indices)} {site_name} phantoms on {len(sites)} model grid(s), {len(shares)} process(es)")
    if len(shares) == 1:
        generated = cache_phantoms(sites, indices, TRAIN_SEED, GRID, CACHE_DIR)
    else:
        with ProcessPoolExecutor(len(shares)) as pool:
            generated = sum(pool.map(cache_phantoms, [sites] * len(shares), shares, [TRAIN_SEED] * len(shares),
                                     [GRID] * len(shares), [CACHE_DIR] * len(shares)))
    _say(f"{generated} phantoms generated, the others were cached")


def _staging_bundle(site_name: str, arch_name: str, card: str = "# staging\n", seed: int = 0):  # -> Path
    """Write ``WORK_DIR/<run>/bundle`` from ``best_model.pt`` of the run with training ``seed`` (no
    measured numbers yet)."""
    import torch

    from rtdeep.bundles import write_bundle
    from rtdeep.models import build_network
    from rtdeep.models.architectures import get_arch
    from rtdeep.sites import get_site
    from rtdeep.training.model_card import bundle_name, segmentation_metadata

    site, arch = get_site(site_name), get_arch(arch_name)
    work = WORK_DIR / run_name(bundle_name(site, arch), seed)
    network = build_network(arch.network_spec(site))
    network.load_state_dict(torch.load(work / "best_model.pt", weights_only=True))
    return write_bundle(work / "bundle", network, segmentation_metadata(site, arch), card, overwrite=True)


def heldout_phantom(site_name: str, index: int, seed: int = HELDOUT_SEED):  # -> (Volume, dict, str)
    """A held-out clinical-grid phantom (or, with ``seed`` = TRAIN_SEED, a selection phantom): CT (HU),
    organ masks and patient ID, cached under ``bench/out``."""
    from rtdeep.phantom import generate_patient, generator_fingerprint
    from rtdeep.sites import get_site
    from rtdeep.training.data import save_npz
    from rtdeep.volume import Volume

    site = get_site(site_name)
    # the generator's fingerprint is in the name: phantoms of an older generator are never reused
    path = (PROJECT_ROOT / "bench" / "out" / "heldout_cache"
            / f"{site_name}_{GRID}_p{generator_fingerprint(site_name)}_s{seed}_i{index}.npz")
    if not path.is_file():
        patient = generate_patient(site_name, index, seed, grid=GRID)
        masks = {roi.name: np.packbits(roi.mask) for roi in patient.rois if roi.name in site.organ_names}
        save_npz(path, hu=patient.ct.array.astype(np.int16), affine=patient.ct.affine,
                 patient_id=np.array(patient.patient_id), **masks)
    with np.load(path) as data:
        hu = data["hu"].astype(np.float32)
        masks = {name: np.unpackbits(data[name], count=hu.size).reshape(hu.shape).astype(bool)
                 for name in site.organ_names if name in data}
        return Volume(hu, data["affine"]), masks, str(data["patient_id"])


def evaluate(sites: list[str], archs: list[str], threads: int, shipped: Path | None = None, seed: int = 0) -> None:
    """Held-out Dice, HD95 and surface Dice (2 mm) per organ on the CT grid (full pipeline:
    segment_volume), median and range over the phantoms, plus the plausibility findings.

    Args:
        shipped: evaluate the bundles in this models folder (``heldout_shipped.json``) instead of
            the freshly trained ones (``heldout.json``).
        seed: the training run to evaluate (:func:`run_name`), when not ``shipped``.
    """
    from rtdeep.bundles import load_bundle
    from rtdeep.models.architectures import get_arch
    from rtdeep.sites import get_site
    from rtdeep.training.model_card import bundle_name

    for site_name in sites:
        site = get_site(site_name)
        bundles = {}
        for arch_name in archs:
            name = bundle_name(site, get_arch(arch_name))
            if shipped is not None and (shipped / name).is_dir():
                bundles[name] = load_bundle(shipped / name)
            elif shipped is None and (WORK_DIR / run_name(name, seed) / "best_model.pt").is_file():
                bundles[run_name(name, seed)] = load_bundle(_staging_bundle(site_name, arch_name, seed=seed))
        for name, summary in _evaluate_bundles(site, bundles, threads).items():
            _write_heldout(name, summary, "heldout.json" if shipped is None else "heldout_shipped.json")
            _say(f"{name}{' (shipped)' if shipped else ''}: "
                 + ", ".join(f"{o} {d:.3f}" for o, d in summary["dice_median"].items())
                 + f"; {len(summary['plausibility_findings'])} plausibility findings")


def _write_heldout(name: str, summary: dict, file_name: str) -> None:
    out = WORK_DIR / name
    out.mkdir(parents=True, exist_ok=True)
    (out / file_name).write_text(json.dumps(summary, indent=1))


def _evaluate_bundles(site, bundles: dict, threads: int, seed: int = HELDOUT_SEED,
                      indices: list[int] | None = None) -> dict[str, dict]:  # site: rtdeep.sites.Site
    """The held-out summary of each loaded bundle (by name) of ``site``, on the same phantoms (the
    held-out ones, or the selection phantoms with ``seed``/``indices``)."""
    indices = HELDOUT_INDICES if indices is None else indices
    import torch

    from rtdeep.inference.segment import segment_volume
    from rtdeep.metrics import segment_metrics
    from rtdeep.phantom import generator_fingerprint
    from rtdeep.plausibility import check_plausibility
    from rtdeep.training.data import grid_ceiling_dice

    torch.set_num_threads(threads)
    generator = generator_fingerprint(site.name)  # which phantoms these are: never compared across generators
    metrics = ("dice", "hd95_mm", "surface_dice_2mm")
    scores = {n: {m: {o: [] for o in site.organ_names} for m in metrics} for n in bundles}
    findings: dict[str, list[str]] = {n: [] for n in bundles}
    seconds: dict[str, list[float]] = {n: [] for n in bundles}
    grids = {n: tuple(float(v) for v in bundle.config["spacing_mm"]) for n, bundle in bundles.items()}
    ceiling = {grid: {o: [] for o in site.organ_names} for grid in set(grids.values())}  # per model grid
    for index in indices:
        ct, reference, patient_id = heldout_phantom(site.name, index, seed)
        for grid, per_organ in ceiling.items():
            for organ, value in grid_ceiling_dice(ct, reference, dataclasses.replace(site, spacing_mm=grid)).items():
                per_organ[organ].append(value)
        for name, bundle in bundles.items():
            start = time.perf_counter()
            rois = segment_volume(ct, bundle)
            seconds[name].append(time.perf_counter() - start)
            for roi in rois:
                if roi.name in reference:
                    result = segment_metrics(reference[roi.name], roi.mask, ct.spacing_mm)
                    for metric in metrics:
                        scores[name][metric][roi.name].append(result[metric])
            findings[name] += [f"{patient_id}: {f.message}" for f in check_plausibility(ct, rois)]
        _say(f"{patient_id} (seed {seed}) done")
    return {name: {
        "heldout_phantoms": f"seed {seed}, indices {indices[0]}-{indices[-1]} "
                            f"({len(indices)} phantoms, {GRID} grid, scanner-randomised)",
        "phantom_generator": generator,
        "dice_median": {o: float(np.nanmedian(v)) for o, v in scores[name]["dice"].items()},
        "dice_min": {o: float(np.nanmin(v)) for o, v in scores[name]["dice"].items()},
        "dice_max": {o: float(np.nanmax(v)) for o, v in scores[name]["dice"].items()},
        "hd95_mm_median": {o: float(np.nanmedian(v)) for o, v in scores[name]["hd95_mm"].items()},
        "surface_dice_2mm_median": {o: float(np.nanmedian(v)) for o, v in scores[name]["surface_dice_2mm"].items()},
        "grid_ceiling_dice_median": {o: float(np.nanmedian(v)) for o, v in ceiling[grids[name]].items() if v},
        "all": scores[name],
        "plausibility_findings": findings[name],
        "segment_volume_seconds_median": float(np.median(seconds[name])),
        "threads": threads,
    } for name in bundles}


#: issue 9's floors: held-out Dice every bundled model should reach on phantoms it never saw
FLOORS = {name: organ.dice_floor for name, organ in ORGANS.items() if organ.dice_floor is not None}


def _floors_met(heldout: dict) -> bool:
    return not _below_floors(heldout["dice_median"])


def _below_floors(dice_median: dict) -> list[str]:
    """``"<organ> <median Dice> (floor <floor>)"`` for each organ below its floor
    (:func:`rtdeep.model_database.organs_below_floor`: NaN counts)."""
    return [f"{organ} {dice_median[organ]:.3f} (floor {FLOORS[organ]:.2f})" for organ in organs_below_floor(dice_median)]


def _withdraw(models_dir: Path, name: str, reason: str, entries: dict, withdrawn: dict) -> None:
    """Take ``name`` out of the bundles: folder removed, entry moved to ``not_shipped`` with ``reason``."""
    withdrawn[name] = {"name": name, "reason": reason}
    entries.pop(name, None)
    if (models_dir / name).is_dir():
        shutil.rmtree(models_dir / name)
    _say(f"{name}: NOT shipped ({reason})")


def enforce_floors(models_dir: Path) -> list[str]:
    """Withdraw every bundled model of ``models.json`` whose median held-out Dice misses a floor.

    The rule :func:`package` applies to new models, applied to the ones already shipped (their
    numbers as ``models.json`` holds them). The reason names the organs and the commit that last held
    the bundle, from which its weights can still be read (``git show <commit>:<path>``).

    Raises:
        RtDeepError: a model to withdraw is a member of an ensemble that stays.
    """
    from rtdeep.errors import RtDeepError

    database_path = models_dir / "models.json"
    database = json.loads(database_path.read_text())
    entries = {entry["name"]: entry for entry in database["models"]}
    withdrawn = {entry["name"]: entry for entry in database.get("not_shipped", [])}
    failing = {name: _below_floors(entry.get("heldout_dice_median") or {}) for name, entry in entries.items()}
    failing = {name: below for name, below in failing.items() if below}
    for name, entry in entries.items():
        kept_on = sorted(set(entry.get("members", [])) & set(failing))
        if kept_on and name not in failing:
            raise RtDeepError(f"{', '.join(kept_on)} would leave ensemble {name} without a member", path=database_path)
    done = subprocess.run(["git", "-C", str(models_dir), "log", "-1", "--format=%h", "--", "."],
                          capture_output=True, text=True, check=False)
    commit = done.stdout.strip()
    for name, below in failing.items():
        held = (f"; its last weights: git show {commit}:{(models_dir / name).relative_to(PROJECT_ROOT)}/models/model.pt"
                if commit and models_dir.is_relative_to(PROJECT_ROOT) else "")
        _withdraw(models_dir, name, f"held-out median Dice below the floor: {', '.join(below)} "
                  f"(python -m rtdeep.training.train_all enforce-floors){held}", entries, withdrawn)
    database["models"] = [entries[k] for k in sorted(entries)]
    database["not_shipped"] = [withdrawn[k] for k in sorted(withdrawn)]
    _write_database(database_path, database)
    for site_name in sorted({name.split("_", 1)[0] for name in failing}):  # peers no longer name them
        refresh_budget_peers(models_dir, site_name)
    return sorted(failing)


def _heldout_details(site, heldout: dict, command: str = "evaluate") -> str:  # site: rtdeep.sites.Site
    """Card section: Dice range, HD95, surface Dice, floors and plausibility findings on the held-out
    phantoms, measured by ``train_all <command>``."""
    if not heldout or "hd95_mm_median" not in heldout:
        return ""
    lines = ["", "## Held-out detail (measured)",
             f"{heldout['heldout_phantoms']}; `python -m rtdeep.training.train_all {command} --sites {site.name}`.", "",
             "| organ | Dice median (min-max) | grid ceiling | HD95 mm median | surface Dice 2 mm median | floor | met |",
             "|---|---|---|---|---|---|---|"]
    ceiling = heldout.get("grid_ceiling_dice_median", {})
    below = organs_below_floor(heldout["dice_median"])
    for organ in site.organ_names:
        dice = heldout["dice_median"][organ]
        floor = FLOORS.get(organ)
        limit = f"{ceiling[organ]:.3f}" if organ in ceiling else "-"
        lines.append(f"| {organ} | {dice:.3f} ({heldout['dice_min'][organ]:.3f}-{heldout['dice_max'][organ]:.3f}) | "
                     f"{limit} | {heldout['hd95_mm_median'][organ]:.1f} | {heldout['surface_dice_2mm_median'][organ]:.3f} | "
                     f"{floor if floor is not None else '-'} | {'NO' if organ in below else 'yes'} |")
    verdict = "meets" if _floors_met(heldout) else "does NOT meet"
    lines += ["", ("Grid ceiling: the Dice of a network that reproduces its training labels exactly on this model "
                   "grid (the phantoms' own masks rasterised on it and resampled back; "
                   "`rtdeep.training.data.grid_ceiling_dice`), median."),
              "", f"This model {verdict} the issue-9 floors on these phantoms.",
              (f"Plausibility checks (`rtdeep.plausibility`) failed {len(heldout['plausibility_findings'])} time(s) "
              f"on the {heldout['heldout_phantoms'].split('(')[1].split()[0]} held-out phantoms.")]
    lines += [f"- {line}" for line in heldout["plausibility_findings"][:8]]
    return "\n".join(lines) + "\n"


def _heldout_description(heldout: dict) -> str:
    """The sentence above a card's held-out Dice table."""
    generator = f" of generator {heldout['phantom_generator']}" if heldout.get("phantom_generator") else ""
    return (f"Dice on the CT grid against the phantoms' own structures, {heldout.get('heldout_phantoms', '')}"
            f"{generator}; never seen in training or model selection.")


#: the output step as cards described it before boundaries came from probabilities, and before
#: compact organs' strands were trimmed
_OLD_OUTPUT_STEPS = (
    "  each organ keeps its largest connected component with holes filled.",
    ("  each organ keeps its largest connected component with holes filled, and its boundary falls "
     "where its probability crosses 0.5 between model voxels."),
    ("  each organ keeps its largest connected component with holes filled (lungs and heart lose the strands "
     "under 6 mm wide that reach more than 20 mm out of them), and its boundary falls where its probability "
     "crosses 0.5 between model voxels."),
)


#: the card headings ``package`` and ``remeasure_shipped`` write; any other ``## `` section of a card
#: was written by hand (a design history, say) and survives a rewrite of the card
GENERATED_CARD_HEADINGS = ("## Model", "## Training", "## Held-out accuracy (measured)",
                           "## Speed and memory (measured)", "## Held-out detail (measured)")


def _split_card(card: str) -> tuple[str, str]:
    """A model card as its generated part and the sections written by hand: those whose heading is
    not in :data:`GENERATED_CARD_HEADINGS`, each from its heading to the next, in their order."""
    generated, written = [], []
    for i, section in enumerate(card.split("\n## ")):
        heading = "## " + section.split("\n", 1)[0]
        target = generated if i == 0 or heading in GENERATED_CARD_HEADINGS else written
        target.append(section if i == 0 else "## " + section)
    return "\n".join(generated), "".join("\n" + s.rstrip("\n") + "\n" for s in written)


def remeasure_shipped(sites: list[str], archs: list[str], models_dir: Path, note: str,
                      bench_json: Path | None = None) -> None:
    """For bundles kept as they are (same weights) after a change of the pipeline around them: their
    card and ``models.json`` get the numbers of ``evaluate --shipped`` (``heldout_shipped.json``),
    with ``note`` saying what changed and the numbers before it, and the speed ``bench_json``
    (``bench/bench_segment.py --json``) holds for them, when it holds any. Only the card's measured
    sections are rewritten (and its description of the output step, in the card and the metadata);
    what it says of the network and its training stays as written when the bundle was made."""
    from rtdeep.models.architectures import get_arch
    from rtdeep.sites import get_site
    from rtdeep.training.model_card import (
        OUTPUT_STEP,
        POSTPROCESS,
        bundle_name,
        held_out_section,
        speed_section,
    )

    bench = json.loads(bench_json.read_text()) if bench_json and bench_json.is_file() else {}
    database_path = models_dir / "models.json"
    database = json.loads(database_path.read_text())
    entries = {entry["name"]: entry for entry in database["models"]}
    for site_name in sites:
        site = get_site(site_name)
        for arch_name in archs:
            name = bundle_name(site, get_arch(arch_name))
            measured, bundle = WORK_DIR / name / "heldout_shipped.json", models_dir / name
            if not measured.is_file() or not bundle.is_dir():
                continue
            metadata_path, card_path = bundle / "configs" / "metadata.json", bundle / "docs" / "README.md"
            metadata = json.loads(metadata_path.read_text())
            heldout, before = json.loads(measured.read_text()), metadata["rtdeep"].get("heldout_dice_median", {})
            old_card = card_path.read_text()
            for old_step in _OLD_OUTPUT_STEPS:
                old_card = old_card.replace(old_step, OUTPUT_STEP)
            metadata["rtdeep"].get("inference", {})["postprocess"] = POSTPROCESS
            head, rest = old_card.split("## Held-out accuracy (measured)\n", 1)
            speed = rest[rest.index("## Speed and memory (measured)"):].split("\n## ", 1)[0].rstrip("\n")
            speed_before = ""
            if name in bench:  # measured again too: the benchmark's lines, the bundle's "Written on" line kept
                written_on = [line for line in speed.splitlines() if line.startswith("Written on")]
                if entries.get(name, {}).get("cpu_seconds_median") is not None:  # the database's wall time
                    speed_before = f"; wall time median {entries[name]['cpu_seconds_median']:.1f} s"
                speed = "\n".join(["## Speed and memory (measured)",
                                   *speed_section(_speed_lines(bench[name], heldout)), "", *written_on])
            table = held_out_section(heldout["dice_median"], _heldout_description(heldout))
            generated, written = _split_card(old_card)
            history = [line for line in generated.splitlines()  # what replaced what, earlier re-measurements
                       if line.startswith(("The bundle this one replaced", "Re-measured with the same weights"))]
            card = (head + "## Held-out accuracy (measured)\n" + "\n".join(table) + "\n\n" + speed + "\n"
                    + _heldout_details(site, heldout) + "".join(f"\n{line}\n" for line in history)
                    + f"\nRe-measured with the same weights ({time.strftime('%Y-%m-%d')}): {note} Before: Dice "
                    + ", ".join(f"{o} {d:.3f}" for o, d in before.items()) + speed_before + ".\n" + written)
            metadata["rtdeep"]["heldout_dice_median"] = heldout["dice_median"]
            _rewrite_card_and_metadata(bundle, card, metadata)
            if name in entries:
                entries[name]["heldout_dice_median"] = heldout["dice_median"]
                entries[name]["floors_met"] = _floors_met(heldout)
                if name in bench:
                    entries[name]["cpu_seconds_median"] = bench[name]["wall_s_median"]
                    entries[name]["peak_rss_mb_median"] = bench[name]["peak_rss_mb_median"]
            _say(f"re-measured {name}")
    database["models"] = [entries[k] for k in sorted(entries)]
    _write_database(database_path, database)


def _speed_lines(speed: dict, heldout: dict) -> dict[str, str]:
    """A card's speed section: the benchmark's wall time and peak RSS (``bench_segment.py``), and the
    Python API's time as the held-out evaluation measured it (with its own thread count)."""
    lines = {}
    if speed:
        lines = {"benchmark": speed.get("description", ""),
                 "wall_time_median_s": f"{speed['wall_s_median']:.1f}",
                 "peak_rss_median_mb": f"{speed['peak_rss_mb_median']:.0f}"}
    if heldout:
        lines["segment_volume_median_s"] = (f"{heldout['segment_volume_seconds_median']:.1f} (Python API on a "
                                            f"clinical-grid phantom, {heldout['threads']} threads, shared machine)")
    return lines


def _database_entry(name: str, title: str, site, architecture: str, speed: dict, heldout: dict,
                    members: list[str] | None = None) -> dict:  # site: rtdeep.sites.Site
    """A bundle's ``models.json`` entry: what the panels list (title, organs, held-out Dice, time)."""
    return {
        "name": name,
        "title": title,
        "site": site.name,
        "architecture": architecture,
        **({"members": members} if members else {}),
        "segments": site.organ_names,
        "cpu_seconds_median": speed.get("wall_s_median"),
        "peak_rss_mb_median": speed.get("peak_rss_mb_median"),
        "heldout_dice_median": heldout.get("dice_median"),
        "floors_met": _floors_met(heldout) if heldout else None,
        "trained_on": "synthetic phantoms",
    }


def _write_database(database_path: Path, database: dict) -> None:
    """Replace ``models.json`` atomically (written beside it, then renamed); for the shipped models,
    the README's table of them too (:func:`rtdeep.model_database.update_readme`)."""
    from rtdeep.fileio import atomic_write

    atomic_write(database_path, lambda tmp: tmp.write_text(json.dumps(database, indent=1) + "\n"), overwrite=True)
    readme = PROJECT_ROOT / "README.md"
    if database_path.parent.resolve() == (PROJECT_ROOT / "Resources" / "Models").resolve() and readme.is_file():
        from rtdeep.model_database import update_readme

        update_readme(readme, database_path.parent)  # the README's table of the bundled models follows


def _rewrite_card_and_metadata(bundle: Path, card: str, metadata: dict) -> None:
    """Replace a bundle's model card and ``metadata.json`` (each written beside it, then renamed) and
    its manifest, whose checksums they change."""
    from rtdeep.bundles import METADATA_PATH, MODEL_CARD_PATH, write_manifest
    from rtdeep.fileio import atomic_write

    for relative, text in ((MODEL_CARD_PATH, card), (METADATA_PATH, json.dumps(metadata, indent=2) + "\n")):
        atomic_write(bundle / relative, lambda tmp, text=text: tmp.write_text(text), overwrite=True)
    write_manifest(bundle)


def _budget_peers(models_dir: Path, name: str, site_name: str, result: dict) -> str:
    """Which of the site's shipped network bundles had the same budget: iterations, phantom indices and
    phantom generator (``phantom_generator``, the fingerprint of :mod:`rtdeep.phantom`; bundles from
    before it was recorded count as another generator)."""
    from rtdeep.bundles import read_metadata

    peers, other_generator = [], []
    for other in sorted(models_dir.glob(f"{site_name}_*")):
        if other.name == name or not (other / "models").is_dir():
            continue
        training = read_metadata(other)["rtdeep"].get("training", {})
        if (str(training.get("budget", "")).split(" ")[0] == str(result.get("iterations_budget"))
                and training.get("training_phantoms") == result["train_phantoms"]):
            same = training.get("phantom_generator") == result.get("phantom_generator") is not None
            (peers if same else other_generator).append(other.name)
    parts = [f"the same budget and phantoms as {', '.join(peers)} (equal budget)"] if peers else []
    if other_generator:
        parts.append(f"the same budget and phantom indices as {', '.join(other_generator)}, but phantoms of another "
                     "version of the generator than theirs (their cards say which)")
    return "; ".join(parts) or "a budget no other shipped model of this site had (their cards say theirs)"


#: a budget line as :func:`package` writes it: iterations, then :func:`_budget_peers`' words, then the cap
_GENERATED_BUDGET = re.compile(r"^(\d+) iterations, ((?:the same budget|a budget no other).*?), capped at ")


def refresh_budget_peers(models_dir: Path, site_name: str) -> list[str]:
    """Name each shipped network bundle of the site in the budget line of its peers' cards.

    A card's budget line names the bundles that had the same budget *when it was packaged*; a peer
    packaged or withdrawn later would leave it stale. This rewrites the peers' words of every budget
    line that :func:`package` generated (a line written by hand is kept), in ``metadata.json`` and the
    card, and the bundle's manifest. Returns the bundles rewritten."""
    rewritten = []
    for bundle in sorted(models_dir.glob(f"{site_name}_*")):
        metadata_path, card_path = bundle / "configs" / "metadata.json", bundle / "docs" / "README.md"
        if not (bundle / "models").is_dir() or not metadata_path.is_file():
            continue
        metadata = json.loads(metadata_path.read_text())
        training = metadata["rtdeep"].get("training", {})
        old = str(training.get("budget", ""))
        match = _GENERATED_BUDGET.match(old)
        if match is None:
            continue
        facts = {"iterations_budget": int(match[1]), "train_phantoms": training.get("training_phantoms"),
                 "phantom_generator": training.get("phantom_generator")}
        new = f"{match[1]} iterations, {_budget_peers(models_dir, bundle.name, site_name, facts)}, " + old[
            match.end() - len("capped at "):]
        card = card_path.read_text()
        if new == old or f"- budget: {old}\n" not in card:
            continue
        training["budget"] = new
        _rewrite_card_and_metadata(bundle, card.replace(f"- budget: {old}\n", f"- budget: {new}\n"), metadata)
        rewritten.append(bundle.name)
    return rewritten


def _history(work: Path) -> list[dict]:
    """The per-epoch record a training run wrote (``history.json``), or [] where there is none."""
    path = work / "history.json"
    return json.loads(path.read_text()) if path.is_file() else []


#: the last stretch of training (iterations) over which :func:`convergence` measures the gain
CONVERGENCE_WINDOW = 500


def convergence(history: list[dict], window: int = CONVERGENCE_WINDOW) -> str:
    """One line for a model card on how near its plateau a run ended: its best validation mean Dice,
    and what its last ``window`` iterations and the ``window`` before them added to the best so far.
    A small last gain at a decayed learning rate is what a converged run shows; it is not proof (a
    longer run could still climb). Empty without a history that long."""
    if not history:
        return ""
    end = history[-1]["iterations"]

    def best_until(iterations: float) -> float | None:
        scores = [record["val_mean_dice"] for record in history if record["iterations"] <= iterations]
        return max(scores) if scores else None

    before, earlier, final = best_until(end - window), best_until(end - 2 * window), best_until(end)
    if before is None or earlier is None:
        return ""
    return (f"best validation mean Dice {final:.3f} after {end} iterations; the last {window} iterations added "
            f"{final - before:+.3f} to the best, the {window} before them {before - earlier:+.3f}")


def package(sites: list[str], archs: list[str], models_dir: Path, bench_json: Path | None, seed: int = 0) -> None:
    """Final bundles with model cards (training time, held-out Dice, speed) and ``models.json``.

    A model with an organ's median held-out Dice below its issue-9 floor (:data:`FLOORS`) is not
    shipped: its bundle is removed and ``models.json`` lists it under ``not_shipped`` with the
    reason; a model that is shipped again leaves that list. A retrained model below a floor never
    replaces a shipped bundle of its name that meets every floor (by its ``models.json`` numbers):
    that bundle is kept as it is. ``seed`` picks the training run (:func:`run_name`); choose it before
    any held-out number is seen (choosing the best seed by them would tune on the test phantoms)."""
    import torch

    from rtdeep.bundles import write_bundle
    from rtdeep.models import build_network
    from rtdeep.models.architectures import get_arch
    from rtdeep.sites import get_site
    from rtdeep.training.model_card import bundle_name, model_card, segmentation_metadata

    bench = json.loads(bench_json.read_text()) if bench_json and bench_json.is_file() else {}
    database_path = models_dir / "models.json"
    database = json.loads(database_path.read_text()) if database_path.is_file() else {"models": []}
    entries = {entry["name"]: entry for entry in database.get("models", [])}
    withdrawn = {entry["name"]: entry for entry in database.get("not_shipped", [])}
    for site_name in sites:
        for arch_name in archs:
            site, arch = get_site(site_name), get_arch(arch_name)
            name = bundle_name(site, arch)
            work = WORK_DIR / run_name(name, seed)
            if not (work / "result.json").is_file():
                _say(f"{name}: not trained, skipped")
                continue
            result = json.loads((work / "result.json").read_text())
            heldout = json.loads((work / "heldout.json").read_text()) if (work / "heldout.json").is_file() else {}
            below = _below_floors(heldout.get("dice_median", {}))
            shipped = entries.get(name, {}).get("heldout_dice_median")
            if below and shipped and (models_dir / name).is_dir() and not _below_floors(shipped):
                _say(f"{name}: the retrained model is below the floor ({', '.join(below)}); the shipped bundle, "
                     "which meets every floor, is kept as it is")
                continue
            if below:  # not shipped: a clinic would get contours below the accuracy the product promises
                _withdraw(models_dir, name, f"held-out median Dice below the floor: {', '.join(below)}, after "
                          f"{result['iterations']} iterations ({result.get('start', '')}); "
                          "python -m rtdeep.training.train_all evaluate", entries, withdrawn)
                continue
            withdrawn.pop(name, None)
            speed = bench.get(name, {})
            devices = "couch, headrest, thermoplastic mask" if site.name == "headneck" else "couch"
            training = {
                "data": "synthetic phantoms from rtdeep.phantom.generate_patient, clinical grid with per-patient "
                        "scanner randomisation (512x512, 0.5-1.2 mm pixels, 1-5 mm slices, noise, kernel, contrast "
                        f"phase, streaks, {devices}; docs/phantom.md), no patient data",
                "training_phantoms": result["train_phantoms"],
                **({"phantom_generator": result["phantom_generator"]} if "phantom_generator" in result else {}),
                "validation_phantoms": result["val_phantoms"] + " (used to pick the best epoch)",
                "training_time": f"{result['train_seconds'] / 60:.1f} min wall on CPU ({result['threads']} thread(s), "
                                 f"machine shared with other jobs), {result['iterations']} iterations of batch "
                                 f"{result['batch_size']}, {result['epochs']} epochs, best epoch {result['best_epoch']}",
                "budget": (f"{result.get('iterations_budget')} iterations, "
                           + _budget_peers(models_dir, name, site.name, result) + ", "
                           f"capped at {result.get('minutes_cap')} min; {result.get('start', 'from scratch')}; "
                           f"augmentation: {result.get('augmentation', 'intensity jitter')}; learning rate "
                           f"{result.get('learning_rate', 'constant')}"),
                "validation_dice_model_grid": ", ".join(f"{k} {v:.3f}" for k, v in result["best_val_dice"].items()),
                **({"convergence": line} if (line := convergence(_history(work))) else {}),
                "training_seed": f"{result.get('seed', 0)} (network initialisation, patch order, augmentation)",
            }
            metadata = segmentation_metadata(site, arch, training=training)
            if heldout:
                metadata["rtdeep"]["heldout_dice_median"] = heldout["dice_median"]
            card = model_card(
                site, arch, training=training, held_out_dice=heldout.get("dice_median"),
                held_out_description=_heldout_description(heldout) if heldout else "",
                speed=_speed_lines(speed, heldout),
            )
            card += _heldout_details(site, heldout)
            previous = work / "heldout_shipped.json"
            before = json.loads(previous.read_text()) if previous.is_file() else {}
            if before and before.get("phantom_generator") == heldout.get("phantom_generator"):
                # the bundle this one replaced, measured on the same phantoms before packaging
                card += ("\nThe bundle this one replaced, on the same held-out phantoms (`evaluate --shipped` before "
                         "packaging): Dice " + ", ".join(f"{o} {d:.3f}" for o, d in before["dice_median"].items())
                         + f"; {len(before['plausibility_findings'])} plausibility findings.\n")
            old_card = models_dir / name / "docs" / "README.md"
            if old_card.is_file():  # a retrained bundle keeps what was written by hand on the one it replaces
                card += _split_card(old_card.read_text())[1]
            network = build_network(arch.network_spec(site))
            network.load_state_dict(torch.load(work / "best_model.pt", weights_only=True))
            write_bundle(models_dir / name, network, metadata, card, overwrite=True)
            entries[name] = _database_entry(name, f"{site.title}: {arch.title}", site, arch.name, speed, heldout)
            _say(f"packaged {models_dir / name}")
        for peer in refresh_budget_peers(models_dir, site_name):  # the cards packaged before name it too
            _say(f"budget line of {peer} brought up to date")
    # other sections (the pneumonitis "classifiers") belong to other writers: keep them as they are
    database["description"] = ("rtdeep bundled segmentation models (trained on synthetic phantoms only); "
                               "cpu_seconds_median: `rtdeep segment` wall time, DICOM folder to RTSTRUCT, 512x512 CT, "
                               "2 threads")
    database["models"] = [entries[k] for k in sorted(entries)]
    database["not_shipped"] = [withdrawn[k] for k in sorted(withdrawn)]
    database_path.parent.mkdir(parents=True, exist_ok=True)
    _write_database(database_path, database)


#: what must be equal for two training runs to differ by their seed alone
_RECIPE_KEYS = ("iterations_budget", "train_phantoms", "phantom_generator", "learning_rate", "start", "batch_size")


def spread(sites: list[str], archs: list[str], seeds: list[int]) -> str:
    """Markdown: the held-out median Dice per organ of each training run (seed) of each site x
    architecture that ``evaluate --seed`` measured, with the range (max - min) between the runs: how
    far training alone moves a column of the talk's table. Runs whose recipe differs (budget,
    phantoms, generator, schedule) are named, since their spread is not the seed's alone."""
    from rtdeep.models.architectures import get_arch
    from rtdeep.sites import get_site
    from rtdeep.training.model_card import bundle_name

    lines: list[str] = []
    for site_name in sites:
        site = get_site(site_name)
        for arch_name in archs:
            name = bundle_name(site, get_arch(arch_name))
            runs = {seed: WORK_DIR / run_name(name, seed) for seed in seeds}
            measured = {seed: json.loads((run / "heldout.json").read_text())["dice_median"]
                        for seed, run in runs.items() if (run / "heldout.json").is_file()}
            missing = [seed for seed in seeds if seed not in measured]
            lines.append(f"**{name}**: median Dice on the held-out phantoms per training seed"
                         + (f" (not measured: seed {', '.join(map(str, missing))})" if missing else ""))
            if not measured:
                lines.append("")
                continue
            recipes = {seed: tuple(json.loads((runs[seed] / "result.json").read_text()).get(key)
                                   for key in _RECIPE_KEYS) if (runs[seed] / "result.json").is_file() else None
                       for seed in measured}
            if len(set(recipes.values())) > 1:
                lines.append("Note: these runs differ in more than the seed ("
                             + ", ".join(key for i, key in enumerate(_RECIPE_KEYS)
                                         if len({r[i] if r else None for r in recipes.values()}) > 1) + ").")
            lines += ["", "| organ | " + " | ".join(f"seed {seed}" for seed in measured) + " | range |",
                      "|---|" + "---|" * (len(measured) + 1)]
            for organ in site.organ_names:
                values = [measured[seed].get(organ, float("nan")) for seed in measured]
                lines.append(f"| {organ} | " + " | ".join(f"{v:.3f}" for v in values)
                             + f" | {np.nanmax(values) - np.nanmin(values):.3f} |")
            means = [float(np.nanmean([measured[seed].get(o, np.nan) for o in site.organ_names])) for seed in measured]
            lines += ["| mean | " + " | ".join(f"{m:.3f}" for m in means) + f" | {max(means) - min(means):.3f} |", ""]
    return "\n".join(lines)


def _ensemble_metadata(site, archs: list[str], models_dir: Path) -> tuple[dict[str, str], dict]:
    """{member bundle name: architecture title} and the metadata of the ensemble of ``archs``' bundles
    in ``models_dir`` (site: rtdeep.sites.Site), averaged on the finest member's grid."""
    from rtdeep.bundles import read_metadata
    from rtdeep.models.architectures import get_arch
    from rtdeep.training.model_card import bundle_name, ensemble_metadata

    names = [bundle_name(site, get_arch(arch)) for arch in archs]
    members = {name: read_metadata(models_dir / name)["rtdeep"]["architecture_title"] for name in names}
    finest = min((get_arch(arch).model_site(site) for arch in archs), key=lambda s: np.prod(s.spacing_mm))
    return members, ensemble_metadata(finest, members, f"{site.name}_ensemble")


def _write_staging_ensemble(path: Path, metadata: dict, models_dir: Path) -> Path:
    """The ensemble of ``metadata`` written at ``path`` with its members by path (those in
    ``models_dir``), so it is measured against exactly those bundles."""
    from rtdeep.bundles import write_ensemble_bundle

    members = [str((models_dir / member).resolve()) for member in metadata["rtdeep"]["members"]]
    return write_ensemble_bundle(path, metadata | {"rtdeep": metadata["rtdeep"] | {"members": members}},
                                 "# staging\n", overwrite=True)


def package_ensemble(sites: list[str], archs: list[str], models_dir: Path, bench_json: Path | None, threads: int,
                     choice: str) -> None:
    """The ensemble bundle ``<site>_ensemble`` of the shipped bundles ``<site>_<arch>`` (mean of their
    probabilities; :func:`rtdeep.bundles.write_ensemble_bundle`), measured on the held-out phantoms like
    every other bundle (``heldout.json``; re-used while the members' weights are unchanged, so a
    second run after ``bench_segment.py`` only adds the speed), with its card and ``models.json``
    entry. ``choice`` says in the card how the members were chosen."""
    from rtdeep.bundles import MANIFEST_NAME, WEIGHTS_PATH, load_bundle, write_ensemble_bundle
    from rtdeep.models.architectures import get_arch
    from rtdeep.phantom import generator_fingerprint
    from rtdeep.sites import get_site
    from rtdeep.training.model_card import bundle_name, ensemble_card

    bench = json.loads(bench_json.read_text()) if bench_json and bench_json.is_file() else {}
    database_path = models_dir / "models.json"
    database = json.loads(database_path.read_text())
    entries = {entry["name"]: entry for entry in database["models"]}
    for site_name in sites:
        site = get_site(site_name)
        names = [bundle_name(site, get_arch(arch)) for arch in archs]
        missing = [name for name in names if not (models_dir / name).is_dir()]
        if missing or len(names) < 2:
            _say(f"{site.name} ensemble: skipped (needs two or more shipped members; missing {missing})")
            continue
        name = f"{site.name}_ensemble"
        members, metadata = _ensemble_metadata(site, archs, models_dir)
        fingerprint = {member: json.loads((models_dir / member / MANIFEST_NAME).read_text())[WEIGHTS_PATH]
                       for member in names}  # the members' weights (their cards may change without them)
        measured = WORK_DIR / name / "heldout.json"
        heldout = json.loads(measured.read_text()) if measured.is_file() else {}
        if (heldout.get("members_weights_sha256") != fingerprint
                or heldout.get("phantom_generator") != generator_fingerprint(site.name)):
            # else measured with these very weights on these very phantoms: reused
            staging = _write_staging_ensemble(WORK_DIR / name / "staging", metadata, models_dir)
            heldout = _evaluate_bundles(site, {name: load_bundle(staging)}, threads)[name]
            heldout["members_weights_sha256"] = fingerprint
            _write_heldout(name, heldout, "heldout.json")
            shutil.rmtree(staging)
        speed = bench.get(name, {})
        metadata["rtdeep"]["heldout_dice_median"] = heldout["dice_median"]
        description = (f"Dice on the CT grid against the phantoms' own structures, {heldout['heldout_phantoms']}; "
                       "never seen in training (how the members were chosen: see Training).")
        grid = dataclasses.replace(site, spacing_mm=tuple(metadata["rtdeep"]["spacing_mm"]))  # the finest member's
        card = ensemble_card(grid, members, held_out_dice=heldout["dice_median"], held_out_description=description,
                             speed=_speed_lines(speed, heldout), choice=choice)
        write_ensemble_bundle(models_dir / name, metadata, card + _heldout_details(site, heldout, "ensemble"),
                              overwrite=True)
        entries[name] = _database_entry(name, f"{site.title}: ensemble ({' + '.join(members.values())})", site,
                                        "ensemble", speed, heldout, members=names)
        _say(f"packaged {models_dir / name}: " + ", ".join(f"{o} {d:.3f}" for o, d in heldout["dice_median"].items()))
    database["models"] = [entries[k] for k in sorted(entries)]
    _write_database(database_path, database)


def select(sites: list[str], candidates: list[str], models_dir: Path, threads: int) -> dict[str, dict]:
    """Compare candidate models (a shipped bundle's architecture, or ``+``-joined architectures: their
    ensemble) on the selection phantoms (seed 1, :data:`SELECTION_INDICES`; never the held-out ones) and
    name the best by the rule :func:`rtdeep.model_database.default_model` applies: fewest organs below
    their floor, then the highest mean Dice. Writes ``WORK_DIR/<site>_selection.json``.

    Returns:
        {site: {"candidates": {candidate: summary}, "best": candidate, "phantoms": description}}.
    """
    from rtdeep.bundles import load_bundle
    from rtdeep.models.architectures import get_arch
    from rtdeep.sites import get_site
    from rtdeep.training.model_card import bundle_name

    chosen = {}
    for site_name in sites:
        site = get_site(site_name)
        bundles = {}
        for candidate in candidates:
            archs = candidate.split("+")
            names = [bundle_name(site, get_arch(arch)) for arch in archs]
            missing = [name for name in names if not (models_dir / name).is_dir()]
            if missing:
                _say(f"{site.name} {candidate}: skipped ({', '.join(missing)} not in {models_dir})")
                continue
            if len(names) == 1:
                bundles[candidate] = load_bundle(models_dir / names[0])
                continue
            staging = WORK_DIR / f"{site.name}_selection" / candidate
            bundles[candidate] = load_bundle(_write_staging_ensemble(staging, _ensemble_metadata(site, archs, models_dir)[1],
                                                                     models_dir))
        summaries = _evaluate_bundles(site, bundles, threads, TRAIN_SEED, SELECTION_INDICES)
        ranked = sorted(summaries, key=lambda c: (
            len(organs_below_floor(summaries[c]["dice_median"])),
            -float(np.mean(list(summaries[c]["dice_median"].values())))))
        chosen[site.name] = {"phantoms": summaries[ranked[0]]["heldout_phantoms"] if ranked else "",
                             "best": ranked[0] if ranked else None,
                             "candidates": {c: summaries[c] for c in ranked}}
        (WORK_DIR / f"{site.name}_selection.json").write_text(json.dumps(chosen[site.name], indent=1))
        for candidate in ranked:
            dice = summaries[candidate]["dice_median"]
            _say(f"{site.name} selection {candidate}: mean {np.mean(list(dice.values())):.3f}; "
                 + ", ".join(f"{o} {d:.3f}" for o, d in dice.items()))
        shutil.rmtree(WORK_DIR / f"{site.name}_selection", ignore_errors=True)
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["prepare", "train", "heldout", "evaluate", "package", "remeasure",
                                          "ensemble", "select", "enforce-floors", "spread"])
    parser.add_argument("--sites", nargs="+", default=["thorax", "headneck"])
    parser.add_argument("--archs", nargs="+", default=["unet3d", "unet25d", "gan3d", "gan25d"])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="prepare: processes generating phantoms")
    parser.add_argument("--iterations", type=int, help="equal training budget: iterations per model")
    parser.add_argument("--finetune", action="store_true",
                        help="start each model from the bundle of the same name in --models-dir")
    parser.add_argument("--start-note", default="", help="train: what the starting weights were, for the card")
    parser.add_argument("--decay-from", type=int, help="train: iteration where the cosine learning-rate decay "
                        "starts (it ends at --iterations); resume a run with more --iterations to add the decay")
    parser.add_argument("--seed", type=int, default=0, help="train/evaluate/package: the training run's seed "
                        "(work folder <site>_<arch>_seed<N> unless 0)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="spread: the runs to compare")
    parser.add_argument("--device", default="cpu", help="train: cpu or cuda")
    parser.add_argument("--train-phantoms", type=int, default=len(TRAIN_INDICES),
                        help="prepare/train: training phantoms of seed 1 (default 24, as the shipped bundles)")
    parser.add_argument("--choice", default="", help="ensemble: how its members were chosen, for the card")
    parser.add_argument("--candidates", nargs="+", default=["unet3d+unet25d"],
                        help="select: shipped architectures, or '+'-joined architectures (their ensemble)")
    parser.add_argument("--note", default="", help="remeasure: what changed around the kept bundles")
    parser.add_argument("--speed", action="store_true",
                        help="remeasure: also take the bundles' speed from --bench-json (run bench_segment.py first)")
    parser.add_argument("--shipped", action="store_true", help="evaluate: the bundles in --models-dir, not the new ones")
    parser.add_argument("--models-dir", type=Path, default=PROJECT_ROOT / "Resources" / "Models")
    parser.add_argument("--bench-json", type=Path, default=PROJECT_ROOT / "bench" / "out" / "bench_segment.json")
    args = parser.parse_args(argv)
    if args.stage == "train":
        train(args.sites, args.archs, args.minutes, args.threads, args.iterations,
              args.models_dir if args.finetune else None, args.start_note, args.decay_from, args.train_phantoms,
              args.seed, args.device)
    elif args.stage == "prepare":  # training caches, once, before the models train in parallel
        for site_name in args.sites:
            prepare(site_name, args.archs, VAL_INDICES + train_indices(args.train_phantoms), args.workers)
    elif args.stage == "heldout":
        for site_name in args.sites:
            for index in HELDOUT_INDICES:
                heldout_phantom(site_name, index)
    elif args.stage == "remeasure":
        remeasure_shipped(args.sites, args.archs, args.models_dir, args.note,
                          args.bench_json if args.speed else None)
    elif args.stage == "enforce-floors":
        enforce_floors(args.models_dir)
    elif args.stage == "select":
        select(args.sites, args.candidates, args.models_dir, args.threads)
    elif args.stage == "ensemble":
        package_ensemble(args.sites, args.archs, args.models_dir, args.bench_json, args.threads, args.choice)
    elif args.stage == "evaluate":
        evaluate(args.sites, args.archs, args.threads, args.models_dir if args.shipped else None, args.seed)
    elif args.stage == "spread":
        print(spread(args.sites, args.archs, args.seeds))
    else:
        package(args.sites, args.archs, args.models_dir, args.bench_json, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
