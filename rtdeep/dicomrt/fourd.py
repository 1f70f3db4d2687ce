"""4D CT: recognise the respiratory phases of a study, tag phases, write intensity projections.

A 4D CT arrives as one CT series per respiratory phase (phase binning: 0 % end-inhale ... 50 %
about end-exhale ... 90 %), all in one study and frame of reference and on one grid. The phase is
read, in this order, from

1. Nominal Percentage of Respiratory Phase (0020,9245), the standard attribute (Respiratory
   Synchronization; enhanced CT puts it in a functional group, some legacy exports at the top);
2. Nominal Percentage of Cardiac Phase (0020,9241), which GE scanners fill for gated series and
   Slicer's MultiVolumeImporter reads;
3. a percentage in Series Description (0008,103E), ``"... 10%"``, ``"Gated, 50.0%"`` (Philips,
   Siemens, GE and Varian exports name the phase there);
4. Temporal Position Identifier (0020,0100) with Number of Temporal Positions (0020,0105)
   (percent = 100 (t - 1) / n), which MultiVolumeImporter also reads.

Several series on one frame of reference and one grid, each with a distinct phase, are a 4D CT.
See ``docs/fourd.md``.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from rtdeep.dicomrt.dataset import optional_float
from rtdeep.dicomrt.types import CtSeries, PatientInfo, RespiratoryPhase
from rtdeep.errors import SeriesError
from rtdeep.volume import Volume

__all__ = [
    "PHASE_TAGS",
    "FourDCt",
    "find_four_d",
    "non_phase_series",
    "phase_from_header",
    "projections",
    "read_phase_volumes",
    "tag_phase_series",
    "write_projection",
]

#: header keywords read to find a phase (in the order they are trusted) and to compare grids
PHASE_TAGS: tuple[str, ...] = (
    "NominalPercentageOfRespiratoryPhase",
    "NominalPercentageOfCardiacPhase",
    "SeriesDescription",
    "TemporalPositionIdentifier",
    "NumberOfTemporalPositions",
)
_GRID_TAGS = ("Rows", "Columns", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient",
              "FrameOfReferenceUID", "SeriesInstanceUID", "ImageType", "Modality")
_PERCENT = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d+)?)\s*%")


def phase_from_header(ds: pydicom.Dataset) -> tuple[float | None, str]:
    """The respiratory phase (percent of the cycle) a CT header states, and the tag it came from.

    Returns:
        ``(percent, source)``; ``(None, "")`` when no tag names a phase.
    """
    for keyword, tag in (("NominalPercentageOfRespiratoryPhase", "(0020,9245)"),
                         ("NominalPercentageOfCardiacPhase", "(0020,9241)")):
        value = optional_float(ds, keyword)
        if value is not None and 0.0 <= value <= 100.0:
            return value, f"{keyword} {tag}"
    match = _PERCENT.search(str(ds.get("SeriesDescription", "") or ""))
    if match and float(match.group(1)) <= 100.0:
        return float(match.group(1)), "SeriesDescription (0008,103E)"
    position, count = optional_float(ds, "TemporalPositionIdentifier"), optional_float(ds, "NumberOfTemporalPositions")
    if position is not None and count and 1 <= position <= count:
        return round(100.0 * (position - 1) / count, 1), "TemporalPositionIdentifier (0020,0100)"
    return None, ""


@dataclass
class FourDCt:
    """The phases of one 4D CT, in phase order, with their slice files (each in file-name order)."""

    frame_of_reference_uid: str
    phases: list[RespiratoryPhase]
    files: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def percents(self) -> list[float]:
        return [phase.percent for phase in self.phases]


@dataclass
class _SeriesHeader:
    uid: str
    frame_of_reference_uid: str
    description: str
    percent: float | None
    source: str
    grid_key: tuple
    files: list[Path]


def _read_series_headers(paths: Sequence[Path]) -> dict[str, _SeriesHeader]:
    series: dict[str, _SeriesHeader] = {}
    positions: dict[str, list[tuple[float, ...]]] = {}
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(PHASE_TAGS + _GRID_TAGS))
        uid = str(ds.get("SeriesInstanceUID", ""))
        if uid not in series:
            percent, source = phase_from_header(ds)
            grid = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0),
                    tuple(round(float(v), 3) for v in ds.get("PixelSpacing", []) or []),
                    tuple(round(float(v), 4) for v in ds.get("ImageOrientationPatient", []) or []))
            series[uid] = _SeriesHeader(uid, str(ds.get("FrameOfReferenceUID", "")),
                                        str(ds.get("SeriesDescription", "") or ""), percent, source, grid, [])
            positions[uid] = []
        series[uid].files.append(Path(path))
        positions[uid].append(tuple(round(float(v), 1) for v in ds.get("ImagePositionPatient", []) or []))
    for uid, header in series.items():
        header.grid_key = header.grid_key + (tuple(sorted(positions[uid])),)
    return series


def find_four_d(ct_files: Sequence[str | os.PathLike[str]]) -> list[FourDCt]:
    """Group CT slice files into 4D CTs.

    Args:
        ct_files: CT image files (any mix of series), e.g. those :func:`scan_folder` found.

    Returns:
        One :class:`FourDCt` per frame of reference and grid holding at least two series with a
        phase (distinct percentages), phases sorted by percent. Series without a phase (a planning
        CT, an average) are not part of it.

    Raises:
        SeriesError: two series of one 4D CT state the same phase.
    """
    headers = _read_series_headers([Path(p) for p in ct_files])
    groups: dict[tuple, list[_SeriesHeader]] = {}
    for header in headers.values():
        if header.percent is not None and header.frame_of_reference_uid:
            groups.setdefault((header.frame_of_reference_uid, header.grid_key), []).append(header)
    found = []
    for (frame_uid, _), members in groups.items():
        if len(members) < 2:
            continue
        members.sort(key=lambda h: (h.percent, h.uid))
        for first, second in itertools.pairwise(members):
            if first.percent == second.percent:
                raise SeriesError(f"two CT series state respiratory phase {first.percent:g}% "
                                  f"({first.uid} and {second.uid}); keep one", path=first.files[0].parent)
        phases = [RespiratoryPhase(h.percent, h.uid, h.description, h.source, len(h.files))  # type: ignore[arg-type]
                  for h in members]
        found.append(FourDCt(frame_uid, phases, {h.uid: sorted(h.files) for h in members}))
    found.sort(key=lambda four_d: four_d.frame_of_reference_uid)
    return found


def non_phase_series(series_frames: dict[str, str], four_ds: Sequence[FourDCt]) -> str | None:
    """The one CT series beside a 4D CT on its frame of reference that is not a phase (the planning CT).

    Args:
        series_frames: every CT series UID in the folder -> its frame of reference UID.
        four_ds: the 4D CTs found there.

    Returns:
        Its SeriesInstanceUID, or None when there is no 4D CT or not exactly one such series.
    """
    phase_uids = {phase.series_instance_uid for four_d in four_ds for phase in four_d.phases}
    frames = {four_d.frame_of_reference_uid for four_d in four_ds}
    others = [uid for uid, frame in series_frames.items() if uid not in phase_uids and frame in frames]
    return others[0] if len(others) == 1 and len(series_frames) == len(others) + len(phase_uids) else None


def read_phase_volumes(four_d: FourDCt) -> list[CtSeries]:
    """Read every phase (in phase order) with :func:`read_ct_series`; all share one grid.

    Raises:
        SeriesError: a phase whose grid differs from the first phase's.
    """
    from rtdeep.dicomrt.ct_reader import read_ct_series

    series = []
    for phase in four_d.phases:
        ct = read_ct_series(four_d.files[phase.series_instance_uid], phase.series_instance_uid)
        if series and not ct.volume.same_grid(series[0].volume):
            raise SeriesError(f"phase {phase.percent:g}% is on another grid than phase {four_d.phases[0].percent:g}%",
                              path=ct.files[0].parent if ct.files else None)
        series.append(ct)
    return series


def tag_phase_series(ct: CtSeries, percent: float, index: int, n_phases: int) -> None:
    """Write the phase into every file of a CT series just written (same files, same UIDs).

    Sets Nominal Percentage of Respiratory Phase (0020,9245) and Temporal Position Identifier
    (0020,0100) / Number of Temporal Positions (0020,0105), which readers of 4D CT look for; the
    caller puts the percentage in the series description too.
    """
    from rtdeep.dicomrt._writer_common import save_dataset

    for path in ct.files:
        ds = pydicom.dcmread(path)
        ds.NominalPercentageOfRespiratoryPhase = float(percent)
        ds.TemporalPositionIdentifier = index + 1
        ds.NumberOfTemporalPositions = n_phases
        save_dataset(ds, path, overwrite=True)


def write_projection(
    volume: Volume,
    out_dir: str | os.PathLike[str],
    patient: PatientInfo,
    *,
    kind: str,
    n_phases: int,
    frame_of_reference_uid: str,
    uid_seed: object | None = None,
    series_number: int = 1,
) -> CtSeries:
    """Write an intensity projection over the phases as a derived CT series.

    Args:
        volume: the projection (HU) on the phases' grid.
        out_dir: new folder for its slices.
        patient: patient and study of the 4D CT.
        kind: ``AIP`` (average), ``MIP`` (maximum) or ``MinIP`` (minimum).
        n_phases: how many phases went into it (said in the description).
        frame_of_reference_uid: the 4D CT's.
        uid_seed: deterministic UIDs when given.

    Returns:
        The written series (ImageType DERIVED\\SECONDARY\\AXIAL, SeriesDescription naming the kind).
    """
    from rtdeep.dicomrt._writer_common import save_dataset
    from rtdeep.dicomrt.ct_writer import write_ct_series

    names = {"AIP": "average", "MIP": "maximum", "MinIP": "minimum"}
    if kind not in names:
        raise ValueError(f"kind must be one of {', '.join(names)}, got '{kind}'")
    description = f"{kind} ({names[kind]} intensity of {n_phases} phases)"
    seed = None if uid_seed is None else f"{uid_seed}/{kind}"
    ct = write_ct_series(volume, out_dir, patient, frame_of_reference_uid=frame_of_reference_uid, uid_seed=seed,
                         series_description=description)
    for path in ct.files:
        ds = pydicom.dcmread(path)
        ds.DerivationDescription = f"{names[kind]} intensity projection over {n_phases} respiratory phases"
        ds.SeriesNumber = series_number
        save_dataset(ds, path, overwrite=True)
    return ct


def projections(phases: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """AIP, MIP and MinIP (float32 HU) of phase arrays on one grid, accumulated one phase at a time.

    ``phases`` may be a generator, so only one phase need be in memory.
    """
    total = highest = lowest = None
    count = 0
    for array in phases:
        if total is None:
            total = np.zeros(array.shape, np.float64)
            highest = np.full(array.shape, -np.inf, np.float32)
            lowest = np.full(array.shape, np.inf, np.float32)
        count += 1
        total += array
        np.maximum(highest, array, out=highest)
        np.minimum(lowest, array, out=lowest)
    if total is None or highest is None or lowest is None:
        raise ValueError("no phases to project")
    return {"AIP": (total / count).astype(np.float32), "MIP": highest, "MinIP": lowest}
