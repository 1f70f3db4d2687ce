"""A whole training run from records or cohort manifests to files: what ``rtdeep train-pneumonitis``
and ``bench/bench_pneumonitis.py`` do.

Output folder (nothing overwritten unless asked): ``metrics.json`` (every model's training and
held-out metrics), ``predictions.csv`` (one row per patient), ``report.txt`` (the table and the
confusion matrices with the positive class stated), ``reliability.png`` and, when asked, a model
bundle (written to a temporary folder and moved into place only when complete).

Under ``torchrun`` (a ``context`` of several processes) every process prepares the same records
(rank 0 first, filling the cache, the others then read it) and trains the same network together
(:func:`~rtdeep.pneumonitis.train.train_model`); only rank 0 evaluates the baselines and writes
files, the other processes return the trained network without them.
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
from rtdeep.ntcp import lung_dose_report
from rtdeep.pneumonitis.bundle import pneumonitis_metadata, save_pneumonitis_bundle
from rtdeep.pneumonitis.dataset import (
    SPACING_MM,
    CaseRecord,
    ManifestRow,
    build_records,
    canvas_for,
    crop_spec,
    cut_crop,
    prepare_crop,
    read_manifest,
    report_figures,
)
from rtdeep.pneumonitis.experiment import ExperimentResult, ModelResult, run_baselines, run_cnn
from rtdeep.pneumonitis.report import (
    format_confusions,
    format_results_table,
    model_card,
    results_json,
    save_reliability_png,
)
from rtdeep.pneumonitis.saliency import grad_cam
from rtdeep.pneumonitis.train import TrainConfig, stratified_folds
from rtdeep.training.distributed import DistContext, barrier

__all__ = ["RunResult", "evaluate_and_write", "load_study_arrays", "machine_description", "split_rows",
           "train_pneumonitis"]


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
    card: str = ""


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
    writer.writerow(["patient_id", "cohort", "pneumonitis_grade2plus", "cnn_risk", *names,
                     "mld_gy", "v5_pct", "v20_pct", "crop_volume_cc", "source"])
    calibration = {int(i) for i in result.training.calibration_index}
    rows = [("calibration", record, i) for i, record in enumerate(train) if i in calibration]
    rows += [("test", record, i) for i, record in enumerate(test)]
    positions = {("calibration", i): n for n, i in enumerate(sorted(calibration))}
    for cohort, record, index in rows:
        key = "train_probabilities" if cohort == "calibration" else "test_probabilities"
        at = positions[(cohort, index)] if cohort == "calibration" else index
        baseline_index = index  # baselines hold every training patient
        writer.writerow([
            record.patient_id, cohort, record.label, f"{getattr(result.cnn, key)[at]:.5f}",
            *[f"{getattr(b, key)[baseline_index]:.5f}" for b in baselines],
            f"{record.figures['mld_gy']:.3f}", f"{record.figures['v5_pct']:.2f}", f"{record.figures['v20_pct']:.2f}",
            f"{record.crop_volume_cc[result.crop_name]:.2f}", record.source,
        ])
    return buffer.getvalue()


def time_one_study(result: ExperimentResult, ct, structures, dose, threshold_gy: float | None) -> dict[str, float]:
    """Seconds for one whole study (lung-dose report, crop, network, Grad-CAM) and ms for the network."""
    started = time.perf_counter()
    report = lung_dose_report(ct, structures, dose)
    crop = cut_crop(ct, structures, dose, report, result.crop_name, threshold_gy)
    spacing = result.network.spacing_mm
    prepared = prepare_crop(crop, result.channels, canvas_for(result.crop_name, spacing), spacing, fit=True)
    forward_started = time.perf_counter()
    with torch.no_grad():
        result.network(torch.as_tensor(prepared.array[None]), result.network.covariates_from(report_figures(report)))
    forward = time.perf_counter() - forward_started
    grad_cam(result.network, prepared.array)
    return {"study_seconds": time.perf_counter() - started, "predict_ms_per_patient": 1000 * forward}


def _spacing_of(records: Sequence[CaseRecord]) -> float:
    """The one voxel size of the records' inputs; a cohort prepared at two spacings is an error."""
    spacings = sorted({float(record.spacing_mm) for record in records})
    if len(spacings) > 1:
        raise ValidationError(f"records prepared at different voxel sizes ({', '.join(f'{v:g}' for v in spacings)} mm)")
    return spacings[0] if spacings else SPACING_MM


def evaluate_and_write(
    train: Sequence[CaseRecord],
    test: Sequence[CaseRecord],
    crop_name: str,
    out_dir: str | os.PathLike[str],
    *,
    threshold_gy: float | None = 20.0,
    channels: Sequence[str] = ("ct", "mask"),
    config: TrainConfig | None = None,
    cohort: dict[str, object] | None = None,
    bundle_out: str | os.PathLike[str] | None = None,
    timing_study: tuple | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    context: DistContext | None = None,
) -> RunResult:
    """Train on prepared ``train`` records, test on ``test``, write the result files (and a bundle
    when ``bundle_out`` is given; ``timing_study`` = (ct, structures, dose) times one study).
    Under ``torchrun`` every process trains; processes other than rank 0 return without baselines,
    files or bundle."""
    started = time.perf_counter()
    config = config or TrainConfig()
    context = context or DistContext()
    spec = crop_spec(crop_name, threshold_gy)
    out = Path(out_dir)
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
    spacing = _spacing_of([*train, *test])
    experiment = run_cnn(train, test, crop_name, channels, config, log if context.is_main else None, spacing,
                         context)
    if not context.is_main:
        return RunResult(experiment, [], list(train), list(test), out, None, time.perf_counter() - started)
    baselines = run_baselines(train, test, seed=config.seed)
    results = [experiment.cnn, *baselines]
    table = format_results_table(results, f"crop {spec.name}, channels {'+'.join(channels)}")
    report = f"{table}\n\n{format_confusions(results)}\n"
    cohort = {
        "n_train": len(train), "n_train_positive": sum(r.label for r in train),
        "n_test": len(test), "n_test_positive": sum(r.label for r in test),
        **(cohort or {}), "threshold_gy": spec.dose_threshold_gy, "spacing_mm": spacing,
        "canvas": list(canvas_for(crop_name, spacing)),
        "lost_train": float(np.mean([r.lost_fraction.get(crop_name, 0.0) for r in train])) if train else 0.0,
    }
    payload = {
        "crop": crop_name, "crop_spec": spec.to_dict(), "channels": list(channels), "config": config.to_dict(),
        "cohort": cohort, **results_json(results), "machine": machine_description(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    metrics_text = json.dumps(payload, indent=2, default=float) + "\n"
    for name, text in (("metrics.json", metrics_text),
                       ("predictions.csv", _predictions_csv(experiment, baselines, train, test)),
                       ("report.txt", report)):
        atomic_write(out / name, lambda tmp, text=text: tmp.write_text(text), overwrite)
    test_labels = np.array([r.label for r in test], dtype=int)
    curves = {f"CNN {crop_name}": (test_labels, experiment.cnn.test_probabilities)}
    curves.update({b.name: (test_labels, b.test_probabilities) for b in baselines
                   if b.test_metrics is not None and not np.isnan(b.test_metrics.brier)})
    if len(test):
        save_reliability_png(curves, out / "reliability.png")

    bundle_dir, card = None, ""
    timings: dict[str, object] = {"train_seconds": experiment.cnn.details["train_seconds"],
                                  "machine": machine_description()}
    if timing_study is not None:
        timings.update(time_one_study(experiment, *timing_study, spec.dose_threshold_gy))
    card = model_card(experiment, baselines, cohort, timings, test_labels if len(test) else None)
    if bundle_out is not None:
        kwargs = {"in_channels": len(channels), "features": list(config.features), "dropout": config.dropout,
                  "spacing_mm": spacing, "covariates": list(config.covariates)}
        metadata = pneumonitis_metadata(
            crop_name=crop_name, dose_threshold_gy=spec.dose_threshold_gy, spacing_mm=spacing,
            canvas=canvas_for(crop_name, spacing), channels=tuple(channels),
            decision_threshold=experiment.cnn.threshold, network_kwargs=kwargs,
        )
        extra = {"docs/metrics.json": metrics_text.encode()}
        if len(test):
            extra["docs/reliability.png"] = (out / "reliability.png").read_bytes()
        bundle_dir = save_pneumonitis_bundle(bundle_out, experiment.network, metadata, card, overwrite, extra)
    return RunResult(experiment, baselines, list(train), list(test), out, bundle_dir,
                     time.perf_counter() - started, card)


def train_pneumonitis(
    manifest: str | os.PathLike[str],
    crop_name: str,
    out_dir: str | os.PathLike[str],
    *,
    threshold_gy: float | None = 20.0,
    test_manifest: str | os.PathLike[str] | None = None,
    test_fraction: float = 0.25,
    channels: Sequence[str] = ("ct", "mask"),
    config: TrainConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    bundle_out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    context: DistContext | None = None,
) -> RunResult:
    """Train the CNN on a cohort, test it on held-out patients, write the results.

    Args:
        manifest: training cohort CSV (``study_dir``, ``patient_id``, ``pneumonitis`` 0/1).
        crop_name: ``lung-dose20``, ``lung`` or ``body``.
        out_dir: results folder (created; existing result files are not overwritten).
        threshold_gy: dose threshold of ``lung-dose20``.
        test_manifest: held-out cohort; without it a stratified ``test_fraction`` of ``manifest``.
        channels: ``("ct", "mask")`` or ``("ct", "dose", "mask")``.
        config: training settings.
        cache_dir: prepared records are kept here (default ``out_dir/cache``).
        bundle_out: write the network as a model bundle here (with its model card).
        overwrite: replace existing result files and bundle.
        log: progress lines.
        context: the processes under ``torchrun`` (default one process); only rank 0 writes and logs.
    """
    started = time.perf_counter()
    config = config or TrainConfig()
    context = context or DistContext()
    log = log if context.is_main else None
    spec = crop_spec(crop_name, threshold_gy)
    out = Path(out_dir)
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    rows = read_manifest(manifest)
    if test_manifest is not None:
        train_rows, test_rows = rows, read_manifest(test_manifest)
        test_source = f"manifest {Path(test_manifest).resolve()}"
    else:
        train_rows, test_rows = split_rows(rows, test_fraction, config.seed)
        test_source = f"stratified {100 * test_fraction:.0f}% of {Path(manifest).resolve()}"
    positives = sum(r.label for r in train_rows)
    if positives < 2 or len(train_rows) - positives < 2:
        raise ValidationError("need at least 2 patients with and 2 without grade >= 2 pneumonitis in the training "
                              "cohort", path=manifest)
    if log:
        log(f"preparing {len(train_rows)} training and {len(test_rows)} held-out studies (crop {spec.name})")
    if not context.is_main:  # rank 0 fills the cache first; the others then read it
        barrier(context)
    train = build_records(train_rows, load_study_arrays, (crop_name,), spec.dose_threshold_gy, cache, log)
    test = build_records(test_rows, load_study_arrays, (crop_name,), spec.dose_threshold_gy, cache, log)
    if context.is_main:
        barrier(context)
    timing = (load_study_arrays((test_rows or train_rows)[0].study_dir)
              if bundle_out is not None and context.is_main else None)
    result = evaluate_and_write(
        train, test, crop_name, out, threshold_gy=threshold_gy, channels=channels, config=config,
        cohort={"train_source": f"manifest {Path(manifest).resolve()}", "test_source": test_source,
                "grid": "as in the manifest's studies"},
        bundle_out=bundle_out, timing_study=timing, overwrite=overwrite, log=log, context=context,
    )
    result.seconds = time.perf_counter() - started
    return result
