"""The talk's crop comparison for grade >= 2 radiation pneumonitis, on synthetic thorax phantoms.

Trains the CNN on a training cohort for each crop (normal lung and >= 20 Gy, normal lung, whole
body; 20 % of the training cohort kept out of fitting for the epoch, Platt scaling and the
threshold) and evaluates all three on the SAME held-out patients (a seed never used for training
or selection), beside the dose-only models (QUANTEC LKB NTCP; logistic regressions on mean lung
dose and on V20 fitted to the training cohort) and the limit (the outcome model's own
probability). The crops' AUCs are compared pairwise with DeLong's test. Positive class: grade >= 2
radiation pneumonitis.

    python bench/bench_pneumonitis.py --n-train 1000 --n-test 300 --bundles OUT   # the bundled models
    python bench/bench_pneumonitis.py --n-train 120 --n-test 60 --epochs 4        # a quick look
    python bench/bench_pneumonitis.py --reuse                                    # the table again
    python bench/bench_pneumonitis.py --reuse --bundles OUT --install            # ship them

``--install`` replaces the three bundles in Resources/Models by those under ``--bundles`` (each
verified against its manifest first) and rewrites the "classifiers" section of
Resources/Models/models.json from the run's measured metrics; the segmentation entries stay.

Records are cached under ``--cache`` keyed by the phantom generator's fingerprint; results go under
bench/out/pneumonitis/ (git-ignored). CPU only; one process per crop with ``--parallel``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "out" / "pneumonitis"
CROPS = ("lung-dose20", "lung", "body")
BUNDLE_NAMES = {"lung-dose20": "thorax_pneumonitis_lungdose20", "lung": "thorax_pneumonitis_lung",
                "body": "thorax_pneumonitis_body"}
#: the talk / Kawahara 2023 (accuracy %, AUC)
TALK = {"lung-dose20": (75.7, 0.84), "lung": (60.0, 0.64), "body": (53.9, 0.58)}


def _log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def _records(args: argparse.Namespace, crops):
    from rtdeep.pneumonitis.dataset import phantom_records

    generators = [g for g in args.generators.split(",") if g]
    train = phantom_records(args.train_seed, range(args.n_train), crops, None, args.grid, args.cache, _log, generators,
                            args.spacing)
    test = phantom_records(args.test_seed, range(args.n_test), crops, None, args.grid, args.cache, _log, generators,
                           args.spacing)
    return train, test


def _timing_study(args: argparse.Namespace):
    from rtdeep.phantom import generate_patient

    patient = generate_patient("thorax", 0, args.test_seed, args.grid)
    return patient.ct, {roi.name: roi.mask for roi in patient.rois}, patient.dose


def _test_predictions(out: Path, crop: str) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    with open(out / f"run-{crop}" / "predictions.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["cohort"] == "test"]
    others = [k for k in rows[0] if k not in ("patient_id", "cohort", "pneumonitis_grade2plus", "cnn_risk", "mld_gy",
                                               "v5_pct", "v20_pct", "crop_volume_cc", "source")]
    return ([r["patient_id"] for r in rows], np.array([int(r["pneumonitis_grade2plus"]) for r in rows]),
            np.array([float(r["cnn_risk"]) for r in rows]),
            {k: np.array([float(r[k]) for r in rows]) for k in others})


def comparison(out: Path) -> str:
    """The comparison as Markdown: the table with the talk's numbers beside it, DeLong's tests and
    the verdict, from the runs' metrics.json and predictions.csv."""
    from rtdeep.pneumonitis.evaluate import delong_paired

    runs = {crop: json.loads((out / f"run-{crop}" / "metrics.json").read_text()) for crop in CROPS
            if (out / f"run-{crop}" / "metrics.json").is_file()}
    if not runs:
        raise SystemExit(f"no runs under {out}; run without --reuse first")
    first = next(iter(runs.values()))
    cohort = first["cohort"]
    models = {m["name"]: m for m in first["models"][1:]}
    limit = next((m for name, m in models.items() if name.startswith("limit")), None)
    lines = [
        (f"Held-out: {cohort['n_test']} phantoms ({cohort['n_test_positive']} with {first['positive_class']}), "
         f"the same patients for every row; training: {cohort['n_train']} ({cohort['n_train_positive']} positive). "
         "Thresholds chosen on the training cohort."),
    ]
    if limit is not None:
        t = limit["test"]
        lines.append(f"\n**Limit** (the outcome model's own probability): AUC {t['auc']:.3f} "
                     f"[{t['auc_ci_low']:.2f}, {t['auc_ci_high']:.2f}].\n")
    lines += ["| model | AUC [95% CI] | sens % | spec % | acc % | Brier | TP/FN/FP/TN | talk acc % / AUC |",
              "|---|---|---|---|---|---|---|---|"]

    def row(name: str, m: dict, talk: tuple[float, float] | None = None) -> str:
        t = m["test"]
        brier = "n/a" if t["brier"] is None or np.isnan(t["brier"]) else f"{t['brier']:.3f}"
        talk_text = f"{talk[0]:.1f} / {talk[1]:.2f}" if talk else ""
        return (f"| {name} | {t['auc']:.3f} [{t['auc_ci_low']:.2f}, {t['auc_ci_high']:.2f}] | "
                f"{100 * t['sensitivity']:.1f} | {100 * t['specificity']:.1f} | {100 * t['accuracy']:.1f} | {brier} | "
                f"{t['tp']}/{t['fn']}/{t['fp']}/{t['tn']} | {talk_text} |")

    for crop, run in runs.items():
        lines.append(row(run["models"][0].get("name", f"CNN {crop}"), run["models"][0], TALK[crop]))
    for name, m in models.items():
        lines.append(row(name, m))
    predictions = {crop: _test_predictions(out, crop) for crop in runs}
    ids = {crop: p[0] for crop, p in predictions.items()}
    if len({tuple(v) for v in ids.values()}) != 1:
        raise SystemExit("the crops were not tested on the same patients")
    labels = next(iter(predictions.values()))[1]
    scores = {f"CNN {crop}": p[2] for crop, p in predictions.items()}
    dose_only = {k: v for k, v in next(iter(predictions.values()))[3].items() if not k.startswith(("limit", "ILD"))}
    pairs = []
    names = list(scores)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pairs.append((a, b, scores[a], scores[b]))
    if "CNN lung-dose20" in scores:
        best = max(dose_only, key=lambda k: delong_paired(labels, dose_only[k], dose_only[k])["auc_a"])
        pairs.append(("CNN lung-dose20", best, scores["CNN lung-dose20"], dose_only[best]))
    lines += ["", "Paired comparison of AUCs on the same held-out patients (DeLong 1988):", "",
              "| A | B | AUC A - AUC B [95% CI] | p |", "|---|---|---|---|"]
    tests = {}
    for a, b, sa, sb in pairs:
        d = delong_paired(labels, sa, sb)
        tests[(a, b)] = d
        lines.append(f"| {a} | {b} | {d['difference']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] | {d['p']:.2g} |")
    aucs = {crop: run["models"][0]["test"]["auc"] for crop, run in runs.items()}
    verdict = []
    if len(runs) == 3:
        order = aucs["lung-dose20"] > aucs["lung"] > aucs["body"]
        verdict.append(f"The talk's ordering lung-dose20 > lung > body holds in the point estimates: "
                       f"{'yes' if order else 'no'} ({aucs['lung-dose20']:.3f} / {aucs['lung']:.3f} / "
                       f"{aucs['body']:.3f}).")
        for a, b in (("CNN lung-dose20", "CNN lung"), ("CNN lung", "CNN body"), ("CNN lung-dose20", "CNN body")):
            d = tests[(a, b)]
            significant = d["p"] < 0.05
            verdict.append(f"{a} vs {b}: {d['difference']:+.3f} (p = {d['p']:.2g}): "
                           f"{'a significant difference' if significant else 'not significant at 0.05'}.")
    if "lung-dose20" in aucs and limit is not None:
        gap = limit["test"]["auc"] - aucs["lung-dose20"]
        met = aucs["lung-dose20"] >= 0.80 and gap <= 0.05
        verdict.append(f"Goal (CNN lung-dose20 AUC >= 0.80 and within 0.05 of the limit): "
                       f"{'met' if met else 'NOT met'} (AUC {aucs['lung-dose20']:.3f}, limit "
                       f"{limit['test']['auc']:.3f}, gap {gap:.3f}).")
    lines += ["", "**Verdict.** " + " ".join(verdict)]
    return "\n".join(lines)


def _train_one(args: argparse.Namespace, crop: str) -> None:
    from rtdeep.phantom import generator_fingerprint
    from rtdeep.pneumonitis.run import evaluate_and_write
    from rtdeep.pneumonitis.train import TrainConfig

    train, test = _records(args, (crop,))
    cohort = {"train_source": f"phantoms generated in memory, seed {args.train_seed}, indices 0-{args.n_train - 1}",
              "test_source": f"phantoms generated in memory, seed {args.test_seed}, indices 0-{args.n_test - 1}",
              "grid": args.grid,
              "generator": f"rtdeep.phantom fingerprint {args.generators or generator_fingerprint()}"}
    bundle = None if args.bundles is None else args.bundles / BUNDLE_NAMES[crop]
    config = TrainConfig(epochs=args.epochs, threads=args.threads, seed=args.seed, batch_size=args.batch_size,
                         covariates=tuple(c for c in args.covariates.split(",") if c))
    result = evaluate_and_write(
        train, test, crop, args.out / f"run-{crop}", threshold_gy=None, channels=tuple(args.channels.split("+")),
        config=config, cohort=cohort, bundle_out=bundle, timing_study=_timing_study(args) if bundle else None,
        overwrite=True, log=lambda line: _log(f"{crop}: {line}"),
    )
    (args.out / f"run-{crop}" / "model_card.md").write_text(result.card)


def add_comparison_to_bundles(bundles: Path, text: str) -> None:
    """Append the crop comparison to every bundle's model card and refresh its checksums."""
    from rtdeep.bundles import MODEL_CARD_PATH, write_manifest

    for name in BUNDLE_NAMES.values():
        card = bundles / name / MODEL_CARD_PATH
        if card.is_file():
            body = card.read_text()
            marker = "\n## The talk's crop comparison"
            body = body.split(marker)[0].rstrip() + "\n" + marker + " (measured: bench/bench_pneumonitis.py)\n\n" + text + "\n"
            card.write_text(body)
            write_manifest(bundles / name)


TITLES = {"lung-dose20": "Thorax: grade >= 2 pneumonitis risk, CNN on normal lung receiving >= 20 Gy",
          "lung": "Thorax: grade >= 2 pneumonitis risk, CNN on the normal lung",
          "body": "Thorax: grade >= 2 pneumonitis risk, CNN on the whole body"}


def classifier_entry(crop: str, metrics: dict) -> dict:
    """The models.json "classifiers" entry of one crop's bundle, from its run's metrics.json."""
    cnn = metrics["models"][0]["test"]
    limit = next(m for m in metrics["models"] if m["name"].startswith("limit"))["test"]
    return {"name": BUNDLE_NAMES[crop], "title": TITLES[crop], "site": "thorax", "kind": "classification",
            "crop": crop, "positive_class": metrics["positive_class"], "heldout_auc": cnn["auc"],
            "heldout_auc_ci95": [cnn["auc_ci_low"], cnn["auc_ci_high"]], "heldout_brier": cnn["brier"],
            "heldout_limit_auc": limit["auc"], "n_heldout": cnn["n"], "n_heldout_positive": cnn["n_positive"],
            "epochs": metrics["config"]["epochs"], "spacing_mm": metrics["cohort"].get("spacing_mm", 6.0),
            "measured_by": "python bench/bench_pneumonitis.py",
            "trained_on": "synthetic phantoms"}


def install_bundles(bundles: Path, out: Path, models_dir: Path = ROOT / "Resources" / "Models") -> None:
    """Ship the bundles under ``bundles`` (any of the three; the others stay as they are): verify
    each, swap it into ``models_dir`` (a staged copy renamed over the old one), then replace their
    entries in models.json's "classifiers" by the measured runs under ``out``."""
    import shutil

    from rtdeep.bundles import verify_bundle

    shipped = {crop: name for crop, name in BUNDLE_NAMES.items() if (bundles / name).is_dir()}
    if not shipped:
        raise SystemExit(f"no bundle under {bundles}")
    entries = {}
    for crop, name in shipped.items():
        verify_bundle(bundles / name)
        entries[name] = classifier_entry(crop, json.loads((out / f"run-{crop}" / "metrics.json").read_text()))
    for name in shipped.values():
        staged, target = models_dir / f".{name}.new", models_dir / name
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(bundles / name, staged)
        shutil.rmtree(target, ignore_errors=True)
        staged.rename(target)
    database = models_dir / "models.json"
    content = json.loads(database.read_text())
    kept = {entry["name"]: entry for entry in content.get("classifiers", [])}
    kept.update(entries)
    content["classifiers"] = [kept[name] for name in BUNDLE_NAMES.values() if name in kept]
    database.write_text(json.dumps(content, indent=1) + "\n")
    _log(f"installed {', '.join(shipped.values())} into {models_dir}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=DEFAULT_OUT / "cache")
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--train-seed", type=int, default=4242)
    parser.add_argument("--test-seed", type=int, default=8713)
    parser.add_argument("--grid", default="small")
    parser.add_argument("--generators", default="", help="use cached phantoms of these generator fingerprints "
                        "(comma-separated; none missing) instead of the current one")
    parser.add_argument("--spacing", type=float, default=6.0,
                        help="voxel size (mm) of the network inputs; 6 prepares and caches all three crops together")
    parser.add_argument("--covariates", default="", help="dose figures of the whole lung the calibration also "
                        "takes, comma-separated (e.g. mld_gy); empty: image only")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels", default="ct+mask", choices=("ct+mask", "ct+dose+mask"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--crops", default=",".join(CROPS))
    parser.add_argument("--parallel", action="store_true", help="train the crops in parallel processes")
    parser.add_argument("--bundles", type=Path, help="write the three bundles under this folder")
    parser.add_argument("--reuse", action="store_true", help="only print the comparison of an earlier run")
    parser.add_argument("--install", action="store_true", help="ship the bundles under --bundles into Resources/Models")
    parser.add_argument("--no-table", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    crops = args.crops.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.reuse:
        if args.parallel and len(crops) > 1:
            forwarded = [a for a in sys.argv[1:] if a != "--parallel"]
            children = [subprocess.Popen([sys.executable, __file__, *forwarded, "--crops", crop, "--no-table"])
                        for crop in crops]
            if any(child.wait() for child in children):
                return 1
        else:
            for crop in crops:
                _log(f"crop {crop}")
                _train_one(args, crop)
        if args.no_table:
            return 0
    text = comparison(args.out)
    (args.out / "comparison.md").write_text(text + "\n")
    if args.bundles is not None:
        add_comparison_to_bundles(args.bundles, text)
    print(text)
    if args.install:
        if args.bundles is None:
            raise SystemExit("--install needs --bundles")
        install_bundles(args.bundles, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
