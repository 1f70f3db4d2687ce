"""A whole training run from cohort manifests to files: what ``rtdeep train-pneumonitis`` and
``bench/bench_pneumonitis.py`` do.

Output folder (nothing overwritten): ``metrics.json`` (every model's cross-validated and held-out
metrics), ``predictions.csv`` (one row per patient and model input), ``report.txt`` (the table and
the confusion matrices with the positive class stated) and, when asked, a model bundle.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rtdeep.errors import DoseError, StructureError, ValidationError
from rtdeep.fileio import atomic_write
from rtdeep.pneumonitis.bundle import pneumonitis_metadata, save_pneumonitis_bundle
from rtdeep.pneumonitis.dataset import (
    CaseRecord,
    ManifestRow,
    build_records,
    crop_spec,
    lung_dose_figures,
    prepare_crop,
    read_manifest,
)
from rtdeep.pneumonitis.experiment import ExperimentResult, ModelResult, run_baselines, run_cnn
from rtdeep.pneumonitis.report import format_confusions, format_results_table, model_card, results_json
from rtdeep.pneumonitis.saliency import grad_cam
from rtdeep.pneumonitis.train import TrainConfig, stratified_folds

__all__ = ["RunResult", "load_study_arrays", "machine_description", "split_rows", "train_pneumonitis"]


@dataclass
class RunResult:
    """What one training run produced."""

    experiment: ExperimentResult
    baselines: list[ModelResult]
    train: list[CaseRecord]
    test: list[CaseRecord]
    out_dir: Path
    bundle_dir: Path | None
    seconds: float


def machine_description() -> str:
    """CPU model and core count, for timings in reports."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def load_study_arrays(folder: Path):
    """(CT Volume in HU, StructureSet, dose Volume in Gy on its own grid) of a study folder."""
    from rtdeep.dicomrt.study import load_study

    study = load_study(folder)
    if study.structure_set is None:
        raise StructureError("no RTSTRUCT drawn on the CT was found", path=folder)
    if study.dose is None:
        raise DoseError("no RTDOSE on the CT's frame of reference was found", path=folder)
    return study.ct.volume, study.structure_set, study.dose.dose


def split_rows(rows: Sequence[ManifestRow], test_fraction: float, seed: int) -> tuple[list[ManifestRow], list[ManifestRow]]:
    """Stratified split of one manifest into training and held-out rows."""
    if not 0.0 < test_fraction < 1.0:
        raise ValidationError(f"test fraction must be in (0, 1), got {test_fraction}")
    labels = np.array([row.label for row in rows])
    n_parts = max(2, round(1.0 / test_fraction))
    held_out = stratified_folds(labels, n_parts, seed + 7) == 0
    return [r for r, h in zip(rows, held_out) if not h], [r for r, h in zip(rows, held_out) if h]


def _predictions_csv(result: ExperimentResult, baselines: Sequence[ModelResult], train: Sequence[CaseRecord],
                     test: Sequence[CaseRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    names = [b.name for b in baselines]
    writer.writerow(["patient_id", "cohort", "fold", "pneumonitis_grade2plus", "cnn_risk", *names,
                     "mld_gy", "v5_pct", "v20_pct", "crop_volume_cc", "source"])
    for cohort, records, key in (("train", train, "train_probabilities"), ("test", test, "test_probabilities")):
        for index, record in enumerate(records):
            fold = int(result.fold_of_patient[index]) if cohort == "train" else ""
            writer.writerow([
                record.patient_id, cohort, fold, record.label, f"{getattr(result.cnn, key)[index]:.5f}",
                *[f"{getattr(b, key)[index]:.5f}" for b in baselines],
                f"{record.figures.mld_gy:.3f}", f"{record.figures.v5_pct:.2f}", f"{record.figures.v20_pct:.2f}",
                f"{record.crop_volume_cc[result.crop_name]:.2f}", record.source,
            ])
    return buffer.getvalue()


def time_one_study(result: ExperimentResult, ct, structures, dose, threshold_gy: float | None,
                   size: Sequence[int]) -> dict[str, float]:
    """Seconds for one whole study (lung DVH, crop, network, Grad-CAM) and ms for the network alone."""
    started = time.perf_counter()
    lung_dose_figures(ct, structures, dose)
    prepared = prepare_crop(ct, structures, dose, result.crop_name, threshold_gy, size, result.channels)
    forward_started = time.perf_counter()
    with torch.no_grad():
        result.ensemble(torch.as_tensor(prepared.array[None]))
    forward = time.perf_counter() - forward_started
    grad_cam(result.ensemble, prepared.array)
    return {"study_seconds": time.perf_counter() - started, "predict_ms_per_patient": 1000 * forward}


def evaluate_and_write(
    train: Sequence[CaseRecord],
    test: Sequence[CaseRecord],
    crop_name: str,
    out_dir: str | os.PathLike[str],
    *,
    threshold_gy: float | None = 20.0,
    channels: Sequence[str] = ("ct",),
    size: Sequence[int] = (32, 32, 32),
    config: TrainConfig | None = None,
    n_folds: int = 5,
    cohort: dict[str, object] | None = None,
    bundle_out: str | os.PathLike[str] | None = None,
    timing_study: tuple | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Cross-validate on prepared ``train`` records, test on ``test``, write the result files (and a
    bundle when ``bundle_out`` is given; ``timing_study`` = (ct, structures, dose) times one study)."""
    started = time.perf_counter()
    config = config or TrainConfig()
    spec = crop_spec(crop_name, threshold_gy)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    experiment = run_cnn(train, test, crop_name, channels, config, n_folds, log)
    baselines = run_baselines(train, test, seed=config.seed)
    results = [experiment.cnn, *baselines]
    table = format_results_table(results, f"crop {spec.name}, channels {'+'.join(channels)}")
    report = f"{table}\n\n{format_confusions(results)}\n"
    cohort = {
        "n_train": len(train), "n_train_positive": sum(r.label for r in train),
        "n_test": len(test), "n_test_positive": sum(r.label for r in test),
        **(cohort or {}), "threshold_gy": spec.dose_threshold_gy, "input_size": [int(s) for s in size],
    }
    payload = {
        "crop": crop_name, "crop_spec": spec.to_dict(), "channels": list(channels), "input_size": list(size),
        "folds": n_folds, "config": config.to_dict(), "cohort": cohort, **results_json(results),
        "machine": machine_description(), "seconds": round(time.perf_counter() - started, 1),
    }
    metrics_text = json.dumps(payload, indent=2, default=float) + "\n"
    for name, text in (("metrics.json", metrics_text),
                       ("predictions.csv", _predictions_csv(experiment, baselines, train, test)),
                       ("report.txt", report)):
        atomic_write(out / name, lambda tmp, text=text: tmp.write_text(text), overwrite)

    bundle_dir = None
    if bundle_out is not None:
        timings: dict[str, object] = {"cv_seconds": experiment.cnn.details["cv_seconds"],
                                      "machine": machine_description()}
        if timing_study is not None:
            timings.update(time_one_study(experiment, *timing_study, spec.dose_threshold_gy, size))
        kwargs = {"n_members": n_folds, "in_channels": len(channels), "features": list(config.features),
                  "dropout": config.dropout}
        metadata = pneumonitis_metadata(
            experiment.ensemble, crop_name=crop_name, dose_threshold_gy=spec.dose_threshold_gy,
            input_size=tuple(int(s) for s in size), channels=tuple(channels),  # type: ignore[arg-type]
            decision_threshold=experiment.cnn.threshold, network_kwargs=kwargs,
        )
        card = model_card(experiment, baselines, cohort, timings)
        bundle_dir = save_pneumonitis_bundle(bundle_out, experiment.ensemble, metadata, card, overwrite,
                                             {"docs/metrics.json": metrics_text.encode()})
    return RunResult(experiment, baselines, list(train), list(test), out, bundle_dir, time.perf_counter() - started)


def train_pneumonitis(
    manifest: str | os.PathLike[str],
    crop_name: str,
    out_dir: str | os.PathLike[str],
    *,
    threshold_gy: float | None = 20.0,
    test_manifest: str | os.PathLike[str] | None = None,
    test_fraction: float = 0.25,
    channels: Sequence[str] = ("ct",),
    size: Sequence[int] = (32, 32, 32),
    config: TrainConfig | None = None,
    n_folds: int = 5,
    cache_dir: str | os.PathLike[str] | None = None,
    bundle_out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Cross-validate the CNN on a cohort, test it on held-out patients, write the results.

    Args:
        manifest: training cohort CSV (``study_dir``, ``patient_id``, ``pneumonitis`` 0/1).
        crop_name: ``lung-dose20``, ``lung`` or ``body``.
        out_dir: results folder (created; existing result files are not overwritten).
        threshold_gy: dose threshold of ``lung-dose20``.
        test_manifest: held-out cohort; without it a stratified ``test_fraction`` of ``manifest``.
        channels: ``("ct",)`` or ``("ct", "dose")``.
        size: network input size ``[k, j, i]``.
        config: training settings.
        n_folds: cross-validation folds.
        cache_dir: prepared crops are kept here (default ``out_dir/cache``).
        bundle_out: write the fold ensemble as a model bundle here (with its model card).
        overwrite: replace existing result files and bundle.
        log: progress lines.
    """
    started = time.perf_counter()
    config = config or TrainConfig()
    spec = crop_spec(crop_name, threshold_gy)
    crop_threshold = spec.dose_threshold_gy
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    rows = read_manifest(manifest)
    if test_manifest is not None:
        train_rows, test_rows = rows, read_manifest(test_manifest)
        test_source = f"manifest {Path(test_manifest).resolve()}"
    else:
        train_rows, test_rows = split_rows(rows, test_fraction, config.seed)
        test_source = f"stratified {100 * test_fraction:.0f}% of {Path(manifest).resolve()}"
    if sum(r.label for r in train_rows) < n_folds or sum(1 - r.label for r in train_rows) < n_folds:
        raise ValidationError(f"need at least {n_folds} patients with and {n_folds} without grade >= 2 "
                              "pneumonitis in the training cohort for stratified folds", path=manifest)
    if log:
        log(f"preparing {len(train_rows)} training and {len(test_rows)} held-out studies (crop {spec.name})")
    train = build_records(train_rows, load_study_arrays, (crop_name,), crop_threshold, size, cache, log)
    test = build_records(test_rows, load_study_arrays, (crop_name,), crop_threshold, size, cache, log)
    timing = load_study_arrays((test_rows or train_rows)[0].study_dir) if bundle_out is not None else None
    result = evaluate_and_write(
        train, test, crop_name, out, threshold_gy=threshold_gy, channels=channels, size=size, config=config,
        n_folds=n_folds, cohort={"train_source": f"manifest {Path(manifest).resolve()}", "test_source": test_source,
                                 "grid": "as in the manifest's studies"},
        bundle_out=bundle_out, timing_study=timing, overwrite=overwrite, log=log,
    )
    result.seconds = time.perf_counter() - started
    return result
