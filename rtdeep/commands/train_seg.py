"""``rtdeep train-seg``: train a 3D / 2.5D U-Net or GAN organ segmentation model and write a bundle."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rtdeep.models.architectures import ARCHITECTURES
from rtdeep.sites import SITES

HELP = "train an organ segmentation model (3D/2.5D U-Net or GAN) on a cohort folder and write a model bundle"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site", required=True, choices=list(SITES), help="treatment site (organ set)")
    parser.add_argument("--arch", required=True, choices=list(ARCHITECTURES),
                        help="network: 3D or 2.5D U-Net, or the same as a pix2pix-style GAN generator; "
                             "*_fine: the same network on a 1.25 mm in-plane grid")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="cohort folder with manifest.csv (e.g. from `rtdeep phantom`)")
    source.add_argument("--phantoms", type=int, metavar="N",
                        help="instead of --data: generate N synthetic phantoms in memory (indices 0..N-1)")
    parser.add_argument("--phantom-seed", type=int, default=0, help="seed of the --phantoms cohort")
    parser.add_argument("--phantom-grid", default="small", choices=["small", "clinical"], help="grid of --phantoms")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder: cache/ (resampled .npz), checkpoint.pt, history.json, bundle/<site>_<arch>/")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="share of studies kept for validation")
    parser.add_argument("--minutes", type=float, default=10.0, help="training time budget (minutes)")
    parser.add_argument("--epochs", type=int, default=1000, help="maximum epochs")
    parser.add_argument("--iterations-per-epoch", type=int, default=25)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CUDA when present, else CPU")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle in OUT/bundle")


def run(args: argparse.Namespace) -> int:
    import torch

    from rtdeep.bundles import write_bundle
    from rtdeep.errors import RtDeepError
    from rtdeep.models.architectures import get_arch
    from rtdeep.sites import get_site
    from rtdeep.training.data import cases_from_manifest, cases_from_phantoms
    from rtdeep.training.distributed import barrier, close_distributed, init_distributed
    from rtdeep.training.model_card import bundle_name, model_card, segmentation_metadata
    from rtdeep.training.trainer import TrainConfig, train_segmentation

    arch = get_arch(args.arch)
    site = arch.model_site(get_site(args.site))  # on the architecture's model grid
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise RtDeepError("--device cuda asked but torch sees no CUDA device")
    # under torchrun: one process per GPU (NCCL) or per CPU share (gloo); alone: rank 0 of 1
    context = init_distributed(device)
    device = context.device
    if arch.batch_size % context.world_size:
        raise RtDeepError(f"{arch.name} trains on batches of {arch.batch_size}: run a number of processes that "
                          f"divides it, not {context.world_size}")
    out_dir: Path = args.out
    cache_dir = out_dir / "cache"
    if context.is_main:
        print(f"preparing cases (cached in {cache_dir}) ...", file=sys.stderr)
    else:
        barrier(context)  # rank 0 prepares and caches the cases first; the others read its cache
    if args.data is not None:
        cases = cases_from_manifest(args.data, site, cache_dir)
        source = f"cohort {args.data}"
    else:
        cases = cases_from_phantoms(site, range(args.phantoms), args.phantom_seed, args.phantom_grid, cache_dir)
        source = f"{args.phantoms} synthetic phantoms (seed {args.phantom_seed}, {args.phantom_grid} grid)"
    if context.is_main:
        barrier(context)
    if len(cases) < 2:
        raise RtDeepError(f"need at least 2 studies (training + validation), found {len(cases)}", path=args.data)
    n_val = min(max(1, round(len(cases) * args.val_fraction)), len(cases) - 1)
    train_cases, val_cases = cases[:-n_val], cases[-n_val:]
    config = TrainConfig(
        site=site.name, arch=arch.name, seed=args.seed, time_budget_s=args.minutes * 60.0,
        max_epochs=args.epochs, iterations_per_epoch=args.iterations_per_epoch, device=device, threads=args.threads,
    )
    result = train_segmentation(
        config, site, arch, train_cases, val_cases, out_dir, resume=args.resume,
        log_callback=lambda line: print(line, file=sys.stderr), context=context,
    )
    if not context.is_main:  # only rank 0 writes the bundle
        close_distributed()
        return 0
    training = {
        "data": source,
        "studies": f"{len(train_cases)} training, {len(val_cases)} validation "
                   f"({', '.join(c.case_id for c in val_cases)})",
        "time": f"{result.train_seconds / 60:.1f} min on {context.world_size} x {device} ({config.threads} threads), "
                f"{result.iterations} iterations of batch {arch.batch_size}",
        "best_epoch": result.best_epoch,
        "validation_dice": json.dumps({k: round(v, 3) for k, v in result.best_val_dice.items()}),
    }
    metadata = segmentation_metadata(site, arch, training=training)
    card = model_card(site, arch, training=training)
    bundle_dir = write_bundle(out_dir / "bundle" / bundle_name(site, arch), result.network, metadata, card,
                              overwrite=args.overwrite)
    print(f"wrote {bundle_dir}")
    close_distributed()
    return 0
