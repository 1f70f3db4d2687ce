"""Load one patient's study from a folder: CT, structure set, dose (resampled to the CT), plan.

Objects are paired by FrameOfReferenceUID and then by their references: the RTSTRUCT that
references the CT series, the RTPLAN that references that RTSTRUCT, the RTDOSE that references
that plan (a PLAN-summed dose preferred over BEAM/FRACTION ones). When several candidates remain,
the first by path is taken and a warning names the others.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rtdeep.dicomrt.ct_reader import read_ct_series
from rtdeep.dicomrt.dataset import reading
from rtdeep.dicomrt.fourd import FourDCt, find_four_d, non_phase_series
from rtdeep.dicomrt.rtdose_reader import read_rtdose, resample_dose
from rtdeep.dicomrt.rtimage_reader import read_rt_image_info
from rtdeep.dicomrt.rtplan_reader import read_rtplan
from rtdeep.dicomrt.rtstruct_reader import read_rtstruct
from rtdeep.dicomrt.scan import DicomFileInfo, scan_folder
from rtdeep.dicomrt.types import Study
from rtdeep.errors import DoseError, FrameOfReferenceError, PlanError, SeriesError, StructureError

__all__ = ["FolderScan", "load_study", "pick_related", "scan_study_folder"]


def pick_related(
    candidates: Sequence[DicomFileInfo],
    kind: str,
    matches: Callable[[DicomFileInfo], bool],
    warnings: list[str],
) -> DicomFileInfo | None:
    """Choose one of ``candidates``: those for which ``matches`` holds if any; warn when ambiguous."""
    if not candidates:
        return None
    preferred = [info for info in candidates if matches(info)] or list(candidates)
    if len(preferred) > 1:
        others = ", ".join(info.path.name for info in preferred[1:])
        warnings.append(f"{len(preferred)} {kind} files match the CT; using {preferred[0].path} (not {others})")
    return preferred[0]


_NAMES = {"RTSTRUCT": ("RT Structure Set", StructureError), "RTDOSE": ("RT Dose", DoseError),
          "RTPLAN": ("RT Plan", PlanError)}


def _missing(modality: str, rejected: Sequence[DicomFileInfo], frame_uid: str, folder: Path) -> Exception:
    """The error for a required object that was not found: why, naming the files that were set aside."""
    name, error = _NAMES[modality]
    if rejected:
        others = "" if len(rejected) == 1 else f" (and {len(rejected) - 1} other {modality} file(s))"
        return FrameOfReferenceError(
            f"this {name} is on frame of reference {rejected[0].frame_of_reference_uid}, not the CT's {frame_uid}, "
            f"so it does not belong to the CT{others}", path=rejected[0].path, tag="FrameOfReferenceUID (0020,0052)")
    return error(f"no {name} ({modality}) for the CT in this folder", path=folder)


@dataclass(frozen=True)
class FolderScan:
    """The headers of a folder's files and the 4D CTs among its CT series: all :func:`load_study` reads
    before any pixel. Made once by :func:`scan_study_folder`, it lets a caller load several series of
    one folder (``rtdeep info`` on a 4D CT) without reading every header again for each."""

    infos: list[DicomFileInfo]
    skipped: list[str]
    four_ds: list[FourDCt]


def scan_study_folder(folder: str | os.PathLike[str]) -> FolderScan:
    """Read every header under ``folder`` once (:func:`scan_folder`) and group its CT series into 4D CTs.

    Raises:
        DicomReadError: a truncated, corrupt or malformed header (named).
        SeriesError: two series of one 4D CT state the same phase.
    """
    infos, skipped = scan_folder(folder)
    ct_infos = [info for info in infos if info.modality == "CT"]
    four_ds: list[FourDCt] = []
    if len({info.series_instance_uid for info in ct_infos}) > 1:
        with reading(folder, "CT series headers"):  # malformed headers: one typed error, pydicom kept quiet
            four_ds = find_four_d([info.path for info in ct_infos])
    return FolderScan(infos, skipped, four_ds)


def load_study(
    folder: str | os.PathLike[str],
    *,
    series_instance_uid: str | None = None,
    prescription_gy: float | None = None,
    require: Sequence[str] = (),
    scan: FolderScan | None = None,
) -> Study:
    """Read the CT series in ``folder`` and the RT objects drawn on it.

    Args:
        folder: a folder (searched recursively) holding one CT series (or several, then choose one
            with ``series_instance_uid``) and any of RTSTRUCT, RTDOSE, RTPLAN.
        series_instance_uid: the CT series to load when the folder holds several.
        prescription_gy: passed to :func:`read_rtdose` for RELATIVE doses.
        require: modalities the caller needs (``"RTSTRUCT"``, ``"RTDOSE"``, ``"RTPLAN"``): when one is
            not found, the error says why (no such file, or the files present are on another frame of
            reference, naming them).
        scan: :func:`scan_study_folder` of ``folder``, made once to load several of its series
            (default: scan it now).

    Returns:
        A :class:`Study`; ``dose_on_ct`` is the dose resampled (trilinear) to the CT grid in Gy.
        ``warnings`` collects skipped files and the readers' warnings.

    Raises:
        SeriesError: no CT series, or several and no UID given (the message lists them).
        FrameOfReferenceError, StructureError, DoseError, PlanError: from the readers, or a required
            object missing.
    """
    folder = Path(folder)
    scan = scan_study_folder(folder) if scan is None else scan
    infos, warnings, four_ds = scan.infos, list(scan.skipped), scan.four_ds
    ct_infos = [info for info in infos if info.modality == "CT"]
    if not ct_infos:
        raise SeriesError("no CT images found", path=folder)
    uids = {info.series_instance_uid for info in ct_infos}
    if series_instance_uid is None and len(uids) == 1:
        series_instance_uid = next(iter(uids))
    if series_instance_uid is None and four_ds:  # a 4D CT beside one planning CT (an AIP, say): load that
        series_instance_uid = non_phase_series(
            {info.series_instance_uid: info.frame_of_reference_uid for info in ct_infos}, four_ds)
    files = [info.path for info in ct_infos if info.series_instance_uid == series_instance_uid]
    ct = read_ct_series(files if files else folder, series_instance_uid)
    warnings.extend(ct.warnings)

    def other_frame(info: DicomFileInfo) -> bool:
        return bool(ct.frame_of_reference_uid and info.frame_of_reference_uid
                    and info.frame_of_reference_uid != ct.frame_of_reference_uid)

    by_modality: dict[str, list[DicomFileInfo]] = {}
    rejected: dict[str, list[DicomFileInfo]] = {}
    for info in infos:
        if info.modality not in ("RTSTRUCT", "RTDOSE", "RTPLAN"):
            continue
        if other_frame(info):
            warnings.append(f"{info.path}: {info.modality} on frame of reference {info.frame_of_reference_uid}, "
                            f"not the CT's {ct.frame_of_reference_uid}; ignored")
            rejected.setdefault(info.modality, []).append(info)
        else:
            by_modality.setdefault(info.modality, []).append(info)

    def related(modality: str, matches: Callable[[DicomFileInfo], bool]) -> DicomFileInfo | None:
        # without a frame of reference on either side, only an object that references its partner counts
        known = bool(ct.frame_of_reference_uid)
        pool = [info for info in by_modality.get(modality, [])
                if (known and info.frame_of_reference_uid) or matches(info)]
        if modality == "RTDOSE" and any(info.dose_summation_type == "PLAN" for info in pool):
            pool = [info for info in pool if info.dose_summation_type == "PLAN"]
        return pick_related(pool, modality, matches, warnings)

    structure_info = related("RTSTRUCT", lambda info: ct.series_instance_uid in info.referenced_uids)
    plan_info = related(
        "RTPLAN", lambda info: structure_info is not None and structure_info.sop_instance_uid in info.referenced_uids)
    dose_info = related(
        "RTDOSE", lambda info: plan_info is not None and plan_info.sop_instance_uid in info.referenced_uids)

    found = {"RTSTRUCT": structure_info, "RTDOSE": dose_info, "RTPLAN": plan_info}
    for modality in require:
        if found.get(modality) is None:
            raise _missing(modality, rejected.get(modality, []), ct.frame_of_reference_uid, folder)

    study = Study(ct=ct, warnings=warnings)
    study.respiratory_phases = [phase for four_d in four_ds if four_d.frame_of_reference_uid == ct.frame_of_reference_uid
                                for phase in four_d.phases]
    for info in infos:
        if info.modality == "RTIMAGE" and not other_frame(info):
            with reading(info.path, "RT Image"):
                study.rt_images.append(read_rt_image_info(info.path))
    if structure_info is not None:
        study.structure_set = read_rtstruct(structure_info.path, ct)
        warnings.extend(study.structure_set.warnings)
    if plan_info is not None:
        study.plan = read_rtplan(plan_info.path)
    if dose_info is not None:
        study.dose = read_rtdose(dose_info.path, prescription_gy=prescription_gy)
        study.dose_on_ct = resample_dose(study.dose, ct)
    return study
