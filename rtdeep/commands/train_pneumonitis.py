"""``rtdeep train-pneumonitis``: train and calibrate the pneumonitis CNN on a cohort and test it on
held-out patients, beside the dose-only NTCP models."""

from __future__ import annotations

import argparse
import sys

HELP = "train, calibrate and evaluate the grade >= 2 pneumonitis CNN on a cohort (held-out test)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="training cohort manifest.csv (study_dir, patient_id, pneumonitis)")
    parser.add_argument("--crop", default="lung-dose20", choices=("lung-dose20", "lung", "body"),
                        help="crop the network sees (default lung-dose20: normal lung and dose >= threshold)")
    parser.add_argument("--threshold", type=float, default=20.0, metavar="GY",
                        help="dose threshold of the lung-dose20 crop in Gy (default 20)")
    parser.add_argument("--out", required=True, help="results folder (metrics.json, predictions.csv, report.txt)")
    parser.add_argument("--test-manifest", help="held-out cohort manifest (default: hold out --test-fraction)")
    parser.add_argument("--test-fraction", type=float, default=0.25, help="held-out share without --test-manifest")
    parser.add_argument("--channels", default="ct", choices=("ct", "ct+dose"),
                        help="network input channels (the crop mask is always added)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--calibration-fraction", type=float, default=0.2,
                        help="share of the training cohort kept out of fitting for the epoch, Platt scaling and "
                             "the threshold (default 0.2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="train on the CPU (gloo under torchrun) or GPU LOCAL_RANK (NCCL under torchrun)")
    parser.add_argument("--cache", help="folder for prepared crops (default OUT/cache)")
    parser.add_argument("--bundle-out", help="also write the trained network as a model bundle here")
    parser.add_argument("--overwrite", action="store_true", help="replace existing result files / bundle")


def _classifier_manifest(manifest: str | None, out_dir: str, name: str, overwrite: bool) -> str | None:
    """A manifest of `rtdeep cohort` becomes OUT/cohort_<name>_manifest.csv: its studies with an outcome."""
    from pathlib import Path

    from rtdeep.cohort.manifest import is_cohort_manifest, outcome_manifest

    if manifest is None or not is_cohort_manifest(manifest):
        return manifest
    path, left_out = outcome_manifest(manifest, Path(out_dir) / f"cohort_{name}_manifest.csv", overwrite)
    if left_out:
        print(f"{left_out} studies of {manifest} have no outcome and are left out", file=sys.stderr)
    return str(path)


def run(args: argparse.Namespace) -> int:
    from rtdeep.errors import ValidationError
    from rtdeep.pneumonitis.report import format_confusions, format_results_table
    from rtdeep.pneumonitis.run import train_pneumonitis
    from rtdeep.pneumonitis.train import TrainConfig
    from rtdeep.training.distributed import broadcast_object, close_distributed, init_distributed

    if not 0.05 <= args.calibration_fraction <= 0.5:
        raise ValidationError(f"--calibration-fraction must be in [0.05, 0.5], got {args.calibration_fraction}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValidationError("--device cuda: no CUDA device is available")
    config = TrainConfig(epochs=args.epochs, seed=args.seed, threads=args.threads,
                         calibration_fraction=args.calibration_fraction)
    # under torchrun every process trains the same folds together; rank 0 alone writes and prints
    context = init_distributed(args.device)
    manifests = None
    if context.is_main:
        manifests = tuple(_classifier_manifest(path, args.out, name, args.overwrite)
                          for path, name in ((args.manifest, "train"), (args.test_manifest, "test")))
    args.manifest, args.test_manifest = broadcast_object(manifests, context)
    result = train_pneumonitis(
        args.manifest, args.crop, args.out, threshold_gy=args.threshold, test_manifest=args.test_manifest,
        test_fraction=args.test_fraction, channels=(*args.channels.split("+"), "mask"),
        config=config, cache_dir=args.cache, bundle_out=args.bundle_out,
        overwrite=args.overwrite, log=lambda line: print(line, file=sys.stderr), context=context,
    )
    close_distributed()
    if not context.is_main:
        return 0
    results = [result.experiment.cnn, *result.baselines]
    print(format_results_table(results, f"crop {args.crop}"))
    print()
    print(format_confusions(results))
    print(f"\nresults in {result.out_dir}" + (f"; bundle {result.bundle_dir}" if result.bundle_dir else ""))
    return 0
