"""Train, evaluate and package the eight bundled segmentation models (``Resources/Models``).

Usage (from the project root; each stage can be re-run on its own)::

    python -m rtdeep.training.train_all train    [--sites thorax headneck] [--archs ...] [--minutes 5]
    python -m rtdeep.training.train_all evaluate [--sites ...]   # held-out Dice on the CT grid
    python bench/bench_segment.py --json bench/out/bench_segment.json   # speed and peak RSS
    python -m rtdeep.training.train_all package  # bundles + model cards + models.json

Data (all synthetic, from :func:`rtdeep.phantom.generate_patient` on the clinical 512x512 grid):
training phantoms seed 1 indices 0-15, validation (best epoch) seed 1 indices 16-17, held-out
test seed 2 indices 100-105, never used in training or model selection. Work files go to
``bench/out/train_bundles/<site>_<arch>/`` (checkpoints, ``result.json``, ``heldout.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["HELDOUT_INDICES", "HELDOUT_SEED", "TRAIN_INDICES", "TRAIN_SEED", "VAL_INDICES", "main"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORK_DIR = PROJECT_ROOT / "bench" / "out" / "train_bundles"
CACHE_DIR = PROJECT_ROOT / "bench" / "out" / "seg_cache"
TRAIN_SEED, HELDOUT_SEED = 1, 2
TRAIN_INDICES = list(range(16))
VAL_INDICES = [16, 17]
HELDOUT_INDICES = list(range(100, 106))
GRID = "clinical"


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def train(sites: list[str], archs: list[str], minutes: float, threads: int) -> None:
    from rtdeep.models.architectures import get_arch
    from rtdeep.sites import get_site
    from rtdeep.training.data import cases_from_phantoms
    from rtdeep.training.model_card import bundle_name
    from rtdeep.training.trainer import TrainConfig, train_segmentation

    for site_name in sites:
        site = get_site(site_name)
        train_cases = cases_from_phantoms(site, TRAIN_INDICES, TRAIN_SEED, GRID, CACHE_DIR)
        val_cases = cases_from_phantoms(site, VAL_INDICES, TRAIN_SEED, GRID, CACHE_DIR)
        for arch_name in archs:
            arch = get_arch(arch_name)
            name = bundle_name(site, arch)
            out = WORK_DIR / name
            _say(f"training {name} for {minutes} min")
            config = TrainConfig(site=site.name, arch=arch.name, seed=0, time_budget_s=minutes * 60,
                                 iterations_per_epoch=40, threads=threads)
            result = train_segmentation(config, site, arch, train_cases, val_cases, out, resume=True,
                                        log_callback=lambda line, n=name: _say(f"{n}: {line}"))
            (out / "result.json").write_text(json.dumps({
                "train_seconds": result.train_seconds, "iterations": result.iterations,
                "best_epoch": result.best_epoch, "epochs": len(result.history),
                "best_val_dice": result.best_val_dice, "threads": threads, "batch_size": arch.batch_size,
                "train_phantoms": f"seed {TRAIN_SEED}, indices {TRAIN_INDICES[0]}-{TRAIN_INDICES[-1]}",
                "val_phantoms": f"seed {TRAIN_SEED}, indices {VAL_INDICES[0]}-{VAL_INDICES[-1]}",
            }, indent=1))


def _staging_bundle(site_name: str, arch_name: str, card: str = "# staging\n"):  # -> Path
    """Write ``WORK_DIR/<name>/bundle`` from ``best_model.pt`` (no measured numbers yet)."""
    import torch

    from rtdeep.bundles import write_bundle
    from rtdeep.models import build_network
    from rtdeep.models.architectures import get_arch
    from rtdeep.sites import get_site
    from rtdeep.training.model_card import bundle_name, segmentation_metadata

    site, arch = get_site(site_name), get_arch(arch_name)
    work = WORK_DIR / bundle_name(site, arch)
    network = build_network(arch.network_spec(site))
    network.load_state_dict(torch.load(work / "best_model.pt", weights_only=True))
    return write_bundle(work / "bundle", network, segmentation_metadata(site, arch), card, overwrite=True)


def heldout_phantom(site_name: str, index: int):  # -> (Volume, dict[str, np.ndarray])
    """A held-out clinical-grid phantom: CT (HU) and organ masks, cached under ``bench/out``."""
    from rtdeep.phantom import generate_patient
    from rtdeep.sites import get_site
    from rtdeep.volume import Volume

    site = get_site(site_name)
    from rtdeep.phantom import generator_fingerprint

    # the generator's fingerprint is in the name: phantoms of an older generator are never reused
    path = (PROJECT_ROOT / "bench" / "out" / "heldout_cache"
            / f"{site_name}_p{generator_fingerprint()}_s{HELDOUT_SEED}_i{index}.npz")
    if not path.is_file():
        patient = generate_patient(site_name, index, HELDOUT_SEED, grid=GRID)
        masks = {roi.name: np.packbits(roi.mask) for roi in patient.rois if roi.name in site.organ_names}
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path.with_suffix(".tmp.npz"), hu=patient.ct.array.astype(np.int16),
                            affine=patient.ct.affine, patient_id=np.array(patient.patient_id), **masks)
        path.with_suffix(".tmp.npz").replace(path)
    with np.load(path) as data:
        hu = data["hu"].astype(np.float32)
        masks = {name: np.unpackbits(data[name], count=hu.size).reshape(hu.shape).astype(bool)
                 for name in site.organ_names if name in data}
        return Volume(hu, data["affine"]), masks, str(data["patient_id"])


def evaluate(sites: list[str], archs: list[str], threads: int) -> None:
    """Held-out Dice per organ on the CT grid (full pipeline: segment_volume), median over phantoms."""
    import torch

    from rtdeep.bundles import load_bundle
    from rtdeep.inference.segment import segment_volume
    from rtdeep.metrics import dice_coefficient
    from rtdeep.models.architectures import get_arch
    from rtdeep.sites import get_site
    from rtdeep.training.model_card import bundle_name

    torch.set_num_threads(threads)
    for site_name in sites:
        site = get_site(site_name)
        names = [bundle_name(site, get_arch(a)) for a in archs if (WORK_DIR / bundle_name(site, get_arch(a)) / "best_model.pt").is_file()]
        bundles = {}
        for arch_name in archs:
            name = bundle_name(site, get_arch(arch_name))
            if name in names:
                bundles[name] = load_bundle(_staging_bundle(site_name, arch_name))
        scores: dict[str, dict[str, list[float]]] = {n: {o: [] for o in site.organ_names} for n in bundles}
        seconds: dict[str, list[float]] = {n: [] for n in bundles}
        for index in HELDOUT_INDICES:
            ct, reference, patient_id = heldout_phantom(site.name, index)
            for name, bundle in bundles.items():
                start = time.perf_counter()
                rois = segment_volume(ct, bundle)
                seconds[name].append(time.perf_counter() - start)
                for roi in rois:
                    if roi.name in reference:
                        scores[name][roi.name].append(dice_coefficient(reference[roi.name], roi.mask))
            _say(f"held-out {patient_id} done")
        for name in bundles:
            summary = {
                "heldout_phantoms": f"seed {HELDOUT_SEED}, indices {HELDOUT_INDICES[0]}-{HELDOUT_INDICES[-1]} "
                                    f"({len(HELDOUT_INDICES)} phantoms, clinical grid)",
                "dice_median": {o: float(np.nanmedian(v)) for o, v in scores[name].items()},
                "dice_min": {o: float(np.nanmin(v)) for o, v in scores[name].items()},
                "dice_all": scores[name],
                "segment_volume_seconds_median": float(np.median(seconds[name])),
                "threads": threads,
            }
            (WORK_DIR / name / "heldout.json").write_text(json.dumps(summary, indent=1))
            _say(f"{name}: " + ", ".join(f"{o} {d:.3f}" for o, d in summary["dice_median"].items()))


def package(sites: list[str], archs: list[str], models_dir: Path, bench_json: Path | None) -> None:
    """Final bundles with model cards (training time, held-out Dice, speed) and ``models.json``."""
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
    for site_name in sites:
        for arch_name in archs:
            site, arch = get_site(site_name), get_arch(arch_name)
            name = bundle_name(site, arch)
            work = WORK_DIR / name
            if not (work / "result.json").is_file():
                _say(f"{name}: not trained, skipped")
                continue
            result = json.loads((work / "result.json").read_text())
            heldout = json.loads((work / "heldout.json").read_text()) if (work / "heldout.json").is_file() else {}
            speed = bench.get(name, {})
            training = {
                "data": "synthetic phantoms from rtdeep.phantom.generate_patient, clinical grid (512x512, "
                        "0.8-1.2 mm pixels, 2.5-3 mm slices), no patient data",
                "training_phantoms": result["train_phantoms"],
                "validation_phantoms": result["val_phantoms"] + " (used to pick the best epoch)",
                "training_time": f"{result['train_seconds'] / 60:.1f} min wall on CPU ({result['threads']} thread(s), "
                                 f"machine shared with other jobs), {result['iterations']} iterations of batch "
                                 f"{result['batch_size']}, {result['epochs']} epochs, best epoch {result['best_epoch']}",
                "validation_dice_model_grid": ", ".join(f"{k} {v:.3f}" for k, v in result["best_val_dice"].items()),
            }
            speed_lines = {}
            if speed:
                speed_lines = {
                    "benchmark": speed.get("description", ""),
                    "wall_time_median_s": f"{speed['wall_s_median']:.1f}",
                    "peak_rss_median_mb": f"{speed['peak_rss_mb_median']:.0f}",
                }
            if heldout:
                speed_lines["segment_volume_median_s"] = (
                    f"{heldout['segment_volume_seconds_median']:.1f} (Python API on a clinical-grid phantom, "
                    f"{heldout['threads']} threads, shared machine)"
                )
            metadata = segmentation_metadata(site, arch, training=training)
            if heldout:
                metadata["rtdeep"]["heldout_dice_median"] = heldout["dice_median"]
            card = model_card(
                site, arch, training=training, held_out_dice=heldout.get("dice_median"),
                held_out_description=(
                    f"Dice on the CT grid against the phantoms' own structures, {heldout.get('heldout_phantoms', '')}; "
                    "never seen in training or model selection." if heldout else ""
                ),
                speed=speed_lines,
            )
            network = build_network(arch.network_spec(site))
            network.load_state_dict(torch.load(work / "best_model.pt", weights_only=True))
            write_bundle(models_dir / name, network, metadata, card, overwrite=True)
            entries[name] = {
                "name": name,
                "title": f"{site.title}: {arch.title}",
                "site": site.name,
                "architecture": arch.name,
                "segments": site.organ_names,
                "cpu_seconds_median": speed.get("wall_s_median"),
                "peak_rss_mb_median": speed.get("peak_rss_mb_median"),
                "heldout_dice_median": heldout.get("dice_median"),
                "trained_on": "synthetic phantoms",
            }
            _say(f"packaged {models_dir / name}")
    database = {
        "description": "rtdeep bundled segmentation models (trained on synthetic phantoms only); "
                       "cpu_seconds_median: `rtdeep segment` wall time, DICOM folder to RTSTRUCT, 512x512 CT, 2 threads",
        "models": [entries[k] for k in sorted(entries)],
    }
    database_path.parent.mkdir(parents=True, exist_ok=True)
    database_path.write_text(json.dumps(database, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["train", "heldout", "evaluate", "package"])
    parser.add_argument("--sites", nargs="+", default=["thorax", "headneck"])
    parser.add_argument("--archs", nargs="+", default=["unet3d", "unet25d", "gan3d", "gan25d"])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models-dir", type=Path, default=PROJECT_ROOT / "Resources" / "Models")
    parser.add_argument("--bench-json", type=Path, default=PROJECT_ROOT / "bench" / "out" / "bench_segment.json")
    args = parser.parse_args(argv)
    if args.stage == "train":
        train(args.sites, args.archs, args.minutes, args.threads)
    elif args.stage == "heldout":
        for site_name in args.sites:
            for index in HELDOUT_INDICES:
                heldout_phantom(site_name, index)
    elif args.stage == "evaluate":
        evaluate(args.sites, args.archs, args.threads)
    else:
        package(args.sites, args.archs, args.models_dir, args.bench_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
