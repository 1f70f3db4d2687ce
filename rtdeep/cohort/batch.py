"""Batch segmentation of a cohort: every study of a manifest, resumable, one folder per study.

For each study the model's contours are written (RTSTRUCT, DICOM SEG or both) into a hidden
staging folder that is renamed to ``OUT/<study_id>/`` only when complete, ending with
``result.json``; a run that is killed leaves no half-written study folder, and the next run skips
every study whose folder exists (and clears stale staging folders of the studies it redoes). A
study that fails is recorded in ``OUT/failed/<study_id>.json`` and the run goes on; it is retried
by the next run. When the manifest names a reference structure set (``rtstruct``, with the
cohort's ``roi_map``), each study also gets ``metrics.csv`` (Dice, HD95 per organ).

At the end ``OUT/summary.csv`` (study, seconds, organs, empty, warnings, error) and, with references,
``OUT/metrics.csv`` (per study and organ, then the mean over studies per organ) are rebuilt from
the study records. Under ``torchrun`` each rank segments every N-th study; rank 0 writes the tables.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rtdeep.cohort.manifest import CohortRow, organ_rois, read_cohort_manifest, write_rows_csv
from rtdeep.errors import RtDeepError
from rtdeep.fileio import atomic_write
from rtdeep.progress import progress

__all__ = ["FORMATS", "StudyResult", "model_version", "segment_manifest", "summary_table"]

#: output formats of ``rtdeep segment --format``
FORMATS = ("rtstruct", "seg", "both")
SUMMARY_COLUMNS = ["study", "seconds", "organs", "empty", "warnings", "error"]
METRICS_COLUMNS = ["study", "organ", "dice", "hd95_mm"]


@dataclass
class StudyResult:
    """What happened to one study.

    Attributes:
        organs: organs written (non-empty); ``empty``: organs the model did not find (not written).
        metrics: per organ ``{"dice", "hd95_mm"}`` against the reference, when there is one.
        error: one line when the study failed (then nothing was written for it).
    """

    study: str
    seconds: float = 0.0
    organs: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str = ""
    files: list[str] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary_row(self) -> dict[str, str]:
        return {"study": self.study, "seconds": f"{self.seconds:.1f}", "organs": ";".join(self.organs),
                "empty": ";".join(self.empty), "warnings": " | ".join(self.warnings), "error": self.error}


def model_version(model: str) -> str:
    """The version of a model: its bundle's ``version``, or rtdeep's for an atlas baseline."""
    from rtdeep import __version__
    from rtdeep.atlas.names import atlas_site
    from rtdeep.bundles import read_metadata, resolve_bundle

    if atlas_site(model) is not None:
        return __version__
    return str(read_metadata(resolve_bundle(model)).get("version", "0"))


def _write_json(path: Path, data: dict, overwrite: bool = False) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1)), overwrite=overwrite)


def _segment_study(row: CohortRow, model: str, formats: Sequence[str], staging: Path, device: str) -> StudyResult:
    """Segment one study into ``staging`` (which the caller renames into place)."""
    from rtdeep.dicomrt.ct_reader import read_ct_series
    from rtdeep.dicomrt.rtstruct_writer import write_rtstruct
    from rtdeep.dicomrt.seg_writer import write_seg
    from rtdeep.inference import model_site, segment_ct
    from rtdeep.sites import get_site

    start = time.perf_counter()
    result = StudyResult(row.study_id)
    ct_source = row.study_dir / "CT" if (row.study_dir / "CT").is_dir() else row.study_dir
    ct = read_ct_series(ct_source, row.row.get("ct_series_uid") or None)
    result.warnings += ct.warnings
    rois = [roi for roi in segment_ct(ct.volume, model, device=device) if roi.mask.any()]
    result.organs = [roi.name for roi in rois]
    result.empty = [name for name in get_site(model_site(model)).organ_names if name not in result.organs]
    name = Path(model).name
    if rois and "rtstruct" in formats:
        path = write_rtstruct(ct, rois, staging / f"RS.{name}.dcm", label="RTDEEP_AI",
                              generation_algorithm="AUTOMATIC", series_description=f"AI contours {name}"[:64])
        result.files.append(path.name)
    if rois and "seg" in formats:
        written = write_seg(ct, rois, staging / f"SEG.{name}.dcm", algorithm_name=name,
                            algorithm_version=model_version(model), series_description=f"AI segmentation {name}")
        result.files.append(written.path.name)
    if not rois:
        result.warnings.append("the model found no organ: nothing written")
    if row.rtstruct is not None:
        result.metrics = _reference_metrics(row, ct, rois, result.warnings)
        write_rows_csv(staging / "metrics.csv", METRICS_COLUMNS, _metric_rows([result]))
    result.seconds = time.perf_counter() - start
    return result


def _reference_metrics(row: CohortRow, ct, rois, warnings: list[str]) -> dict[str, dict[str, float]]:
    """Dice and HD95 of each segmented organ against the study's reference structure set."""
    from rtdeep.dicomrt.rtstruct_reader import read_rtstruct
    from rtdeep.metrics import segment_metrics

    reference = read_rtstruct(row.rtstruct, ct)
    by_name = {roi.name: roi for roi in organ_rois(reference.rois, row.roi_map)}
    metrics = {}
    for roi in rois:
        ref = by_name.get(roi.name)
        if ref is None or not ref.mask.any():
            warnings.append(f"{roi.name}: not in the reference structure set; no Dice")
            continue
        values = segment_metrics(ref.mask, roi.mask, ct.volume.spacing_mm)
        metrics[roi.name] = {"dice": float(values["dice"]), "hd95_mm": float(values["hd95_mm"])}
    return metrics


def _metric_rows(results: Sequence[StudyResult]) -> list[dict[str, str]]:
    rows, by_organ = [], {}
    for result in results:
        for organ, values in result.metrics.items():
            rows.append({"study": result.study, "organ": organ, "dice": f"{values['dice']:.4f}",
                         "hd95_mm": f"{values['hd95_mm']:.2f}"})
            by_organ.setdefault(organ, []).append(values)
    if len(results) > 1:
        for organ, values in by_organ.items():
            rows.append({"study": f"mean of {len(values)}", "organ": organ,
                         "dice": f"{np.mean([v['dice'] for v in values]):.4f}",
                         "hd95_mm": f"{np.nanmean([v['hd95_mm'] for v in values]):.2f}"})
    return rows


def _run_one(row: CohortRow, model: str, formats: Sequence[str], out_dir: Path, device: str) -> StudyResult:
    final = out_dir / row.study_id
    failed = out_dir / "failed" / f"{row.study_id}.json"
    staging = out_dir / f".{row.study_id}.partial"
    if staging.exists():
        shutil.rmtree(staging)  # left by a killed run: this study is redone from the start
    staging.mkdir()
    try:
        result = _segment_study(row, model, formats, staging, device)
        _write_json(staging / "result.json", asdict(result))
        os.rename(staging, final)
        if failed.exists():
            failed.unlink()
    except Exception as error:  # noqa: BLE001 - one study's failure is reported; the others go on
        message = str(error) if isinstance(error, RtDeepError) else f"{type(error).__name__}: {error}"
        result = StudyResult(row.study_id, error=message.replace("\n", " "))
        _write_json(failed, asdict(result), overwrite=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return result


def segment_manifest(
    manifest: str | os.PathLike[str],
    model: str,
    out_dir: str | os.PathLike[str],
    *,
    output_format: str = "rtstruct",
    device: str = "cpu",
    context=None,
) -> list[StudyResult]:
    """Segment every study of ``manifest`` with ``model`` into ``out_dir`` (see the module notes).

    Args:
        manifest: ``manifest.csv`` of ``rtdeep cohort`` (or of ``rtdeep phantom``).
        model: model name or bundle folder (as ``rtdeep segment --model``).
        out_dir: output folder; studies already done there are skipped.
        output_format: ``rtstruct``, ``seg`` or ``both``.
        device: torch device.
        context: a :class:`rtdeep.training.distributed.DistContext` (default: one process).

    Returns:
        One result per manifest study (rank 0; other ranks get their own share), in manifest order.
    """
    from rtdeep.inference import model_site
    from rtdeep.training.distributed import DistContext, barrier, shard

    context = context or DistContext(device=device)
    if output_format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got '{output_format}'")
    formats = ("rtstruct", "seg") if output_format == "both" else (output_format,)
    model_site(model)  # an unknown model fails before any study is read
    rows = read_cohort_manifest(manifest)
    out_dir = Path(out_dir)
    (out_dir / "failed").mkdir(parents=True, exist_ok=True)
    mine = shard(rows, context)
    todo = [row for row in mine if not (out_dir / row.study_id / "result.json").is_file()]
    if len(todo) < len(mine):
        print(f"resuming: {len(mine) - len(todo)} of {len(mine)} studies already done in {out_dir}", file=sys.stderr)
    results = [_run_one(row, model, formats, out_dir, device)
               for row in progress(todo, f"segment {Path(model).name}", total=len(todo))]
    barrier(context)
    if not context.is_main:
        return results
    results = [_recorded(row, out_dir) for row in rows]
    write_rows_csv(out_dir / "summary.csv", SUMMARY_COLUMNS, [r.summary_row() for r in results], overwrite=True)
    if any(row.rtstruct is not None for row in rows):
        write_rows_csv(out_dir / "metrics.csv", METRICS_COLUMNS, _metric_rows(results), overwrite=True)
    return results


def _recorded(row: CohortRow, out_dir: Path) -> StudyResult:
    for path in (out_dir / row.study_id / "result.json", out_dir / "failed" / f"{row.study_id}.json"):
        if path.is_file():
            return StudyResult(**json.loads(path.read_text()))
    return StudyResult(row.study_id, error="not segmented (no record)")


def summary_table(results: Sequence[StudyResult]) -> str:
    """A plain-text table: one line per study, then the mean Dice per organ when measured."""
    lines = [f"{'study':<24} {'seconds':>8} {'organs':>6}  {'empty / error'}"]
    for result in results:
        note = result.error or ";".join(result.empty)
        lines.append(f"{result.study:<24} {result.seconds:>8.1f} {len(result.organs):>6}  {note}")
    measured = [r for r in results if r.metrics]
    if measured:
        organs = sorted({organ for r in measured for organ in r.metrics})
        lines += ["", f"{'organ':<16} {'Dice mean':>10} {'HD95 mm':>8} {'studies':>8}"]
        for organ in organs:
            values = [r.metrics[organ] for r in measured if organ in r.metrics]
            lines.append(f"{organ:<16} {np.mean([v['dice'] for v in values]):>10.3f} "
                         f"{np.nanmean([v['hd95_mm'] for v in values]):>8.2f} {len(values):>8}")
    failed = sum(bool(r.error) for r in results)
    lines.append(f"\n{len(results) - failed} of {len(results)} studies segmented" + (f", {failed} failed" if failed else ""))
    return "\n".join(lines)
