"""The talk's crop comparison for grade >= 2 radiation pneumonitis, on synthetic thorax phantoms.

Trains the 3D CNN with 5-fold cross-validation on a training cohort for each crop (normal lung and
>= 20 Gy, normal lung, whole body) and evaluates the fold ensembles on the SAME held-out patients,
beside the dose-only models (QUANTEC LKB NTCP; logistic regressions on mean lung dose and on V20
fitted to the training cohort). Thresholds are chosen on the training cohort. Positive class:
grade >= 2 radiation pneumonitis.

    python bench/bench_pneumonitis.py --parallel         # 150 training + 50 held-out phantoms
    python bench/bench_pneumonitis.py --reuse            # print the table from an earlier run

Cohorts and results go under bench/out/pneumonitis/ (git-ignored). CPU only, one thread per crop.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "out" / "pneumonitis"
CROPS = ("lung-dose20", "lung", "body")
#: the talk / Kawahara 2023 (accuracy %, AUC)
TALK = {"lung-dose20": (75.7, 0.84), "lung": (60.0, 0.64), "body": (53.9, 0.58)}


def _log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def _cohort(out: Path, name: str, n: int, seed: int, grid: str) -> Path:
    from rtdeep.phantom import generate_cohort

    manifest = out / name / "manifest.csv"
    if manifest.is_file():
        return manifest
    _log(f"generating {n} thorax phantoms ({name}, seed {seed}, grid {grid})")
    return Path(generate_cohort("thorax", n, seed, out / name, grid))


def _row(name: str, model: dict, talk: tuple[float, float] | None = None) -> str:
    test, cv = model["test"], model["cross_validation"]
    talk_text = f"   {talk[0]:5.1f} / {talk[1]:.2f}" if talk else ""
    brier = test["brier"]
    brier_text = "   n/a" if math.isnan(brier) else f"{brier:6.3f}"
    return (
        f"{name:<28} {cv['auc']:6.3f}  {test['auc']:.3f} [{test['auc_ci_low']:.2f}, {test['auc_ci_high']:.2f}]  "
        f"{100 * test['sensitivity']:5.1f} {100 * test['specificity']:5.1f} {100 * test['accuracy']:5.1f} "
        f"{brier_text}  {test['tp']:2d} {test['fn']:2d} {test['fp']:2d} {test['tn']:2d}{talk_text}"
    )


def print_table(out: Path) -> dict[str, dict]:
    """Print the comparison from the runs' metrics.json files; return them by crop."""
    runs = {crop: json.loads((out / f"run-{crop}" / "metrics.json").read_text()) for crop in CROPS
            if (out / f"run-{crop}" / "metrics.json").is_file()}
    if not runs:
        raise SystemExit(f"no runs under {out}; run without --reuse first")
    first = next(iter(runs.values()))
    cohort = first["cohort"]
    print(f"Pneumonitis crop comparison on synthetic thorax phantoms ({first['machine']})")
    print(f"training cohort {cohort['n_train']} ({cohort['n_train_positive']} positive), 5-fold CV; "
          f"held-out {cohort['n_test']} ({cohort['n_test_positive']} positive), the same patients for every row")
    print(f"positive class: {first['positive_class']}; thresholds chosen on the training cohort; "
          f"input {'x'.join(map(str, first['input_size']))}, channels {'+'.join(first['channels'])}")
    header = (f"{'model':<28} {'CV AUC':>6}  {'test AUC [95% CI]':<21} {'sens%':>5} {'spec%':>5} {'acc%':>5} "
              f"{'Brier':>6}  TP FN FP TN   talk acc% / AUC")
    print(header)
    print("-" * len(header))
    for crop, run in runs.items():
        print(_row(f"CNN {crop}", run["models"][0], TALK[crop]))
    for model in first["models"][1:]:
        print(_row(model["name"], model))
    aucs = {crop: run["models"][0]["test"]["auc"] for crop, run in runs.items()}
    accs = {crop: run["models"][0]["test"]["accuracy"] for crop, run in runs.items()}
    best_dose = max(m["test"]["auc"] for m in first["models"][1:])
    if len(runs) == 3:
        order_auc = aucs["lung-dose20"] > aucs["lung"] > aucs["body"]
        order_acc = accs["lung-dose20"] > accs["lung"] > accs["body"]
        print(f"\ntalk's ordering lung-dose20 > lung > body: AUC {'yes' if order_auc else 'no'}, "
              f"accuracy {'yes' if order_acc else 'no'}")
    if "lung-dose20" in aucs:
        print(f"CNN lung-dose20 test AUC minus best dose-only test AUC: {aucs['lung-dose20'] - best_dose:+.3f}")
    for crop, run in runs.items():
        print(f"training time {crop}: {run['models'][0]['details']['cv_seconds']:.0f} s (5 folds)")
    return runs


def _records(args: argparse.Namespace, crop: str):
    """Training and held-out records, from phantoms in memory (default) or from DICOM cohorts."""
    from rtdeep.pneumonitis.dataset import build_records, phantom_records, read_manifest
    from rtdeep.pneumonitis.run import load_study_arrays

    size = (args.size,) * 3
    if args.source == "memory":
        cache = args.out / "cache-memory"
        train = phantom_records(args.train_seed, range(args.n_train), (crop,), None, size, args.grid, cache, _log)
        test = phantom_records(args.test_seed, range(args.n_test), (crop,), None, size, args.grid, cache, _log)
        cohort = {"train_source": f"phantoms generated in memory, seed {args.train_seed}, indices 0-{args.n_train - 1}",
                  "test_source": f"phantoms generated in memory, seed {args.test_seed}, indices 0-{args.n_test - 1}",
                  "grid": args.grid}
        return train, test, cohort
    train_manifest = _cohort(args.out, f"train-{args.train_seed}", args.n_train, args.train_seed, args.grid)
    test_manifest = _cohort(args.out, f"test-{args.test_seed}", args.n_test, args.test_seed, args.grid)
    cache = args.out / "cache-dicom"
    train = build_records(read_manifest(train_manifest), load_study_arrays, (crop,), None, size, cache, _log)
    test = build_records(read_manifest(test_manifest), load_study_arrays, (crop,), None, size, cache, _log)
    cohort = {"train_source": f"DICOM cohort {train_manifest}", "test_source": f"DICOM cohort {test_manifest}",
              "grid": args.grid}
    return train, test, cohort


def _timing_study(args: argparse.Namespace):
    from rtdeep.phantom import generate_patient

    patient = generate_patient("thorax", 0, args.test_seed, args.grid)
    return patient.ct, {roi.name: roi.mask for roi in patient.rois}, patient.dose


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--source", choices=("memory", "dicom"), default="memory",
                        help="phantoms generated in memory (default) or written as DICOM and read back")
    parser.add_argument("--n-train", type=int, default=150)
    parser.add_argument("--n-test", type=int, default=50)
    parser.add_argument("--train-seed", type=int, default=2026)
    parser.add_argument("--test-seed", type=int, default=7331)
    parser.add_argument("--grid", default="small")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", default="ct", choices=("ct", "ct+dose"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--crops", default=",".join(CROPS))
    parser.add_argument("--parallel", action="store_true", help="train the crops in parallel processes")
    parser.add_argument("--bundle-out", type=Path, help="write the lung-dose20 ensemble as a bundle here")
    parser.add_argument("--reuse", action="store_true", help="only print the table of an earlier run")
    parser.add_argument("--no-table", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    crops = args.crops.split(",")
    if not args.reuse and args.parallel and len(crops) > 1:
        if args.source == "memory":
            # prepare every crop in one pass over the phantoms; the children then read the cache
            from rtdeep.pneumonitis.dataset import phantom_records

            size, cache = (args.size,) * 3, args.out / "cache-memory"
            phantom_records(args.train_seed, range(args.n_train), crops, None, size, args.grid, cache, _log)
            phantom_records(args.test_seed, range(args.n_test), crops, None, size, args.grid, cache, _log)
        forwarded = [a for a in sys.argv[1:] if a != "--parallel"]
        children = []
        for crop in crops:
            command = [sys.executable, __file__, *forwarded, "--crops", crop, "--no-table"]
            children.append(subprocess.Popen(command))
        if any(child.wait() for child in children):
            return 1
    elif not args.reuse:
        from rtdeep.pneumonitis.run import evaluate_and_write
        from rtdeep.pneumonitis.train import TrainConfig

        args.out.mkdir(parents=True, exist_ok=True)
        for crop in crops:
            _log(f"crop {crop}")
            train, test, cohort = _records(args, crop)
            bundle = args.bundle_out if crop == "lung-dose20" else None
            evaluate_and_write(
                train, test, crop, args.out / f"run-{crop}", threshold_gy=None,
                channels=tuple(args.channels.split("+")), size=(args.size,) * 3,
                config=TrainConfig(epochs=args.epochs, threads=args.threads), cohort=cohort, bundle_out=bundle,
                timing_study=_timing_study(args) if bundle else None, overwrite=True, log=_log,
            )
        if args.no_table:
            return 0
    print_table(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
