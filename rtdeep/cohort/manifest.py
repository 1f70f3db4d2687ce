"""The cohort folder: ``manifest.csv`` (one row per usable study), its study folders of links, and
the readers that training and batch inference use.

A study folder ``studies/<study_id>/`` holds symbolic links to the export's files (``CT/0001.dcm``
..., ``RS.dcm``, ``RP.dcm``, ``RD.dcm``): images are referenced, never copied, and every reader
that takes a study folder (``load_study``, ``rtdeep segment``, training) works on it unchanged. The
``roi_map`` column (JSON, TG-263 organ -> ROI name in that study's structure set) carries the name
mapping, so training reads the clinic's structures under the site's names.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rtdeep.dicomrt.types import Roi
from rtdeep.errors import ValidationError
from rtdeep.fileio import atomic_write

__all__ = [
    "MANIFEST_COLUMNS",
    "CohortRow",
    "is_cohort_manifest",
    "organ_rois",
    "outcome_manifest",
    "read_cohort_manifest",
    "read_outcomes",
    "write_rows_csv",
]

#: manifest.csv columns in order (``grade`` and ``pneumonitis`` filled from ``--outcomes``)
MANIFEST_COLUMNS = [
    "study_id", "patient_id", "study_dir", "study_instance_uid", "ct_series_uid", "frame_of_reference_uid",
    "ct_files", "rtstruct", "rtplan", "rtdose", "organs", "missing_organs", "roi_map", "warnings",
    "grade", "pneumonitis",
]


@dataclass(frozen=True)
class CohortRow:
    """One manifest row.

    Attributes:
        study_dir: the study folder of links (absolute).
        rtstruct: the reference structure set (absolute path in the export, or the link).
        roi_map: TG-263 organ -> ROI name in ``rtstruct``.
        row: the raw CSV row.
    """

    study_id: str
    patient_id: str
    study_dir: Path
    rtstruct: Path | None
    roi_map: dict[str, str]
    row: dict[str, str]


def write_rows_csv(path: str | os.PathLike[str], columns: Sequence[str], rows: Sequence[Mapping[str, object]],
                   overwrite: bool = False) -> Path:
    """Write rows as CSV atomically (a temporary file renamed into place; refuses to overwrite)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "") for key in columns})
    return atomic_write(path, lambda tmp: tmp.write_text(buffer.getvalue(), encoding="utf-8"), overwrite=overwrite)


def is_cohort_manifest(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a manifest written by ``rtdeep cohort`` (it has a ``roi_map`` column)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return "roi_map" in (csv.DictReader(handle).fieldnames or [])


def read_cohort_manifest(path: str | os.PathLike[str]) -> list[CohortRow]:
    """Read ``manifest.csv`` (``study_dir`` relative to its folder).

    Raises:
        ValidationError: no ``study_dir`` column, no rows, or a ``roi_map`` that is not JSON
            (naming the file and line).
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "study_dir" not in (reader.fieldnames or []):
            raise ValidationError("manifest has no 'study_dir' column", path=path)
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                roi_map = json.loads(row.get("roi_map") or "{}")
            except json.JSONDecodeError as error:
                raise ValidationError(f"line {line}: column 'roi_map' is not JSON ({error})", path=path) from error
            study_dir = (path.parent / row["study_dir"]).absolute()
            rtstruct = row.get("rtstruct") or ""
            rows.append(CohortRow(
                study_id=row.get("study_id") or study_dir.name,
                patient_id=row.get("patient_id") or study_dir.name,
                study_dir=study_dir,
                rtstruct=(path.parent / rtstruct).absolute() if rtstruct else None,
                roi_map={str(k): str(v) for k, v in roi_map.items()},
                row=row,
            ))
    if not rows:
        raise ValidationError("manifest has no studies", path=path)
    return rows


def organ_rois(rois: Sequence[Roi], roi_map: Mapping[str, str] | None) -> list[Roi]:
    """The structures a manifest row maps to organs, renamed to their TG-263 names.

    Without a map (a phantom cohort's manifest) the structures are returned unchanged.
    """
    if not roi_map:
        return list(rois)
    by_name = {roi.name: roi for roi in rois}
    renamed = []
    for organ, name in roi_map.items():
        roi = by_name.get(name)
        if roi is not None:
            renamed.append(Roi(organ, roi.mask, roi.number, roi.color_rgb, roi.interpreted_type or "ORGAN",
                               roi.generation_algorithm))
    return renamed


def read_outcomes(path: str | os.PathLike[str]) -> dict[str, int]:
    """A clinic's outcomes CSV: ``patient_id`` and the pneumonitis ``grade`` (0-5; CTCAE).

    A ``pneumonitis`` column (0/1, 1 = grade >= 2) is accepted instead of ``grade``.

    Returns:
        patient_id -> grade (a 0/1 label is read as grade 0 or 2).

    Raises:
        ValidationError: columns missing or a value that is not a whole number in range.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        column = next((c for c in ("grade", "pneumonitis_grade", "pneumonitis") if c in columns), None)
        if "patient_id" not in columns or column is None:
            raise ValidationError("outcomes need columns patient_id and grade (or pneumonitis 0/1)", path=path)
        outcomes: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            value = (row[column] or "").strip()
            allowed = ("0", "1") if column == "pneumonitis" else tuple(str(g) for g in range(6))
            if value not in allowed:
                raise ValidationError(f"line {line}: column '{column}' must be one of {', '.join(allowed)}, "
                                      f"got {value!r}", path=path)
            grade = int(value)
            outcomes[row["patient_id"].strip()] = 2 * grade if column == "pneumonitis" else grade
    return outcomes


def outcome_manifest(cohort_manifest: str | os.PathLike[str], out_path: str | os.PathLike[str],
                     overwrite: bool = False) -> tuple[Path, int]:
    """The studies of a cohort manifest that have an outcome, as a manifest the pneumonitis
    classifier reads (``patient_id``, absolute ``study_dir``, ``pneumonitis`` 0/1, ``grade``).

    Returns:
        ``(path written, number of studies left out for lack of an outcome)``.

    Raises:
        ValidationError: no study has an outcome (``rtdeep cohort --outcomes`` fills them).
    """
    rows = read_cohort_manifest(cohort_manifest)
    labelled = [row for row in rows if (row.row.get("pneumonitis") or "").strip() in ("0", "1")]
    if not labelled:
        raise ValidationError("no study has a pneumonitis outcome; build the cohort with `rtdeep cohort --outcomes "
                              "OUTCOMES.csv` (patient_id,grade)", path=cohort_manifest)
    columns = ["patient_id", "study_dir", "pneumonitis", "grade", "study_id"]
    table = [{"patient_id": row.patient_id, "study_dir": str(row.study_dir), "pneumonitis": row.row["pneumonitis"],
              "grade": row.row.get("grade", ""), "study_id": row.study_id} for row in labelled]
    return write_rows_csv(out_path, columns, table, overwrite=overwrite), len(rows) - len(labelled)
