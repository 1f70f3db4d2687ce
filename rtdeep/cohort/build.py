"""``build_cohort``: scan a clinic's export and write the cohort folder (manifest, name table, what
was not used and why, a folder of links per study).

Example:
    >>> result = build_cohort("/data/export", "/data/cohort", site="thorax")   # doctest: +SKIP
    >>> print(result.summary())                                                # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rtdeep.cohort.manifest import MANIFEST_COLUMNS, read_outcomes, write_rows_csv
from rtdeep.cohort.names_table import NameTable, read_names_map
from rtdeep.cohort.pairing import PairedStudy, Unused, pair_studies
from rtdeep.cohort.walk import ExportIndex, index_export, read_roi_names
from rtdeep.errors import DicomReadError
from rtdeep.fileio import OutputExistsError
from rtdeep.sites import get_site

__all__ = ["CohortResult", "build_cohort"]

UNUSED_COLUMNS = ["patient_id", "study_instance_uid", "kind", "what", "reason"]


@dataclass
class CohortResult:
    """What :func:`build_cohort` wrote and found."""

    out_dir: Path
    site: str
    index: ExportIndex
    rows: list[dict[str, str]]
    unused: list[Unused]
    names: NameTable
    outcome_warnings: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        return self.out_dir / "manifest.csv"

    def summary(self) -> str:
        """A plain-text table: files, studies, organs found, and what was not used, by reason."""
        lines = [
            f"cohort {self.out_dir} (site {self.site})",
            f"  files read            {len(self.index.files) + len(self.index.duplicates) + len(self.index.skipped)}",
            f"  DICOM instances       {len(self.index.files)}",
            f"  duplicates            {len(self.index.duplicates)}",
            f"  not DICOM             {len(self.index.skipped)}",
            f"  usable studies        {len(self.rows)} ({len({r['patient_id'] for r in self.rows})} patients)",
            "",
            f"  {'organ':<16} {'studies':>8}",
        ]
        for organ in self.names.organs:
            count = sum(organ in row["organs"].split(";") for row in self.rows)
            lines.append(f"  {organ:<16} {count:>8}")
        reasons = Counter(f"{item.kind}: {item.reason.split(':')[0]}" for item in self.unused
                          if item.kind != "file" or not item.reason.startswith(("duplicate", "not DICOM")))
        if reasons:
            lines += ["", f"  {'not used (kind: reason)':<80} {'count':>5}"]
            lines += [f"  {reason[:80]:<80} {count:>5}" for reason, count in reasons.most_common()]
        lines += [f"  warning: {w}" for w in self.outcome_warnings]
        return "\n".join(lines)


def _study_ids(studies: list[PairedStudy]) -> list[str]:
    counts: Counter = Counter()
    ids = []
    for study in studies:
        base = "".join(c if c.isalnum() or c in "-_" else "_" for c in study.patient_id) or "patient"
        counts[base] += 1
        ids.append(f"{base}_{counts[base]}")
    return ids


def _link_study(study: PairedStudy, folder: Path) -> None:
    """``folder/CT/0001.dcm ...``, ``RS.dcm``, ``RP.dcm``, ``RD.dcm`` as links to the export's files."""
    (folder / "CT").mkdir(parents=True)
    for number, path in enumerate(study.ct_files, start=1):
        (folder / "CT" / f"{number:04d}.dcm").symlink_to(path.absolute())
    for name, info in (("RS.dcm", study.rtstruct), ("RP.dcm", study.rtplan), ("RD.dcm", study.rtdose)):
        if info is not None:
            (folder / name).symlink_to(info.path.absolute())


def build_cohort(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    site: str = "thorax",
    names_csv: str | os.PathLike[str] | None = None,
    outcomes_csv: str | os.PathLike[str] | None = None,
) -> CohortResult:
    """Scan ``source`` and write ``out_dir`` with ``manifest.csv``, ``roi_names.csv``, ``unused.csv``
    and ``studies/<study_id>/`` (links).

    Args:
        source: the export folder (any shape).
        out_dir: a new or empty folder.
        site: whose organs are mapped (``thorax`` or ``headneck``).
        names_csv: the user's name map (``name,tg263``), overriding the rules.
        outcomes_csv: ``patient_id,grade``: fills the manifest's ``grade`` and ``pneumonitis``
            (1 = grade >= 2) columns.

    Raises:
        OutputExistsError: ``out_dir`` exists and is not empty.
        ValidationError: a malformed name map or outcomes file.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise OutputExistsError("cohort folder exists and is not empty; choose a new one", path=out_dir)
    organs = list(get_site(site).organ_names)
    names = NameTable(organs, read_names_map(names_csv, organs) if names_csv else {})
    outcomes = read_outcomes(outcomes_csv) if outcomes_csv else None

    index = index_export(source)
    roi_lists: dict[Path, list[tuple[str, str]]] = {}
    table_only = NameTable(organs, names.user_map)

    def organ_count(info) -> int:
        if info.path not in roi_lists:
            try:
                roi_lists[info.path] = read_roi_names(info.path)
            except DicomReadError:
                roi_lists[info.path] = []
        return len(table_only.map_study(roi_lists[info.path])[0])

    studies, unused = pair_studies(index, organ_count)
    rows: list[dict[str, str]] = []
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    staging.mkdir(parents=True)
    try:
        for study, study_id in zip(studies, _study_ids(studies), strict=True):
            roi_map, warnings = names.map_study(roi_lists.get(study.rtstruct.path) or read_roi_names(study.rtstruct.path))
            _link_study(study, staging / "studies" / study_id)
            row = {
                "study_id": study_id, "patient_id": study.patient_id, "study_dir": f"studies/{study_id}",
                "study_instance_uid": study.study_instance_uid, "ct_series_uid": study.ct_series_uid,
                "frame_of_reference_uid": study.frame_of_reference_uid, "ct_files": str(len(study.ct_files)),
                "rtstruct": str(study.rtstruct.path.absolute()),
                "rtplan": str(study.rtplan.path.absolute()) if study.rtplan else "",
                "rtdose": str(study.rtdose.path.absolute()) if study.rtdose else "",
                "organs": ";".join(roi_map), "missing_organs": ";".join(o for o in organs if o not in roi_map),
                "roi_map": json.dumps(roi_map), "warnings": " | ".join(study.warnings + warnings),
                "grade": "", "pneumonitis": "",
            }
            rows.append(row)
        outcome_warnings = _join_outcomes(rows, outcomes) if outcomes is not None else []
        write_rows_csv(staging / "manifest.csv", MANIFEST_COLUMNS, rows)
        names.write_csv(staging / "roi_names.csv")
        write_rows_csv(staging / "unused.csv", UNUSED_COLUMNS, [item.__dict__ for item in unused])
        out_dir.mkdir(parents=True, exist_ok=True)
        for entry in staging.iterdir():
            entry.rename(out_dir / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CohortResult(out_dir, site, index, rows, unused, names, outcome_warnings)


def _join_outcomes(rows: list[dict[str, str]], outcomes: dict[str, int]) -> list[str]:
    """Fill ``grade`` and ``pneumonitis`` of each row; warn about patients on one side only."""
    for row in rows:
        grade = outcomes.get(row["patient_id"])
        if grade is not None:
            row["grade"], row["pneumonitis"] = str(grade), str(int(grade >= 2))
    in_cohort = {row["patient_id"] for row in rows}
    warnings = []
    without = sorted(in_cohort - set(outcomes))
    if without:
        warnings.append(f"{len(without)} patient(s) of the cohort have no outcome: {', '.join(without[:10])}")
    unmatched = sorted(set(outcomes) - in_cohort)
    if unmatched:
        warnings.append(f"{len(unmatched)} outcome(s) match no usable study: {', '.join(unmatched[:10])}")
    return warnings
