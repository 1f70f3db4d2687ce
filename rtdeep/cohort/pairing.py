"""Pair the objects of an export into studies: one CT series, the RTSTRUCT drawn on it, and the
RTPLAN and RTDOSE that go with that structure set.

Rules, per patient:

* An RTSTRUCT belongs to the CT series it references (ReferencedFrameOfReferenceSequence ->
  RTReferencedSeriesSequence) when that series is in the export and shares its frame of reference;
  without such a reference, to the one CT series on its frame of reference.
* A CT series with several structure sets takes the one naming most of the site's organs (then the
  first by path); the others are listed as not used.
* An RTPLAN belongs to the structure set it references; an RTDOSE to the plan it references (a
  PLAN-summed dose preferred); either falls back to the one object on the CT's frame of reference.
* Everything else is listed with the reason: series of other modalities (MR, PT ...), CT series
  without a structure set, structure sets on another frame of reference, studies without CT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rtdeep.cohort.walk import ExportIndex
from rtdeep.dicomrt.scan import DicomFileInfo

__all__ = ["PairedStudy", "Unused", "pair_studies"]

_RT_MODALITIES = ("RTSTRUCT", "RTPLAN", "RTDOSE")


@dataclass
class PairedStudy:
    """One usable study: a CT series and the RT objects that belong to it.

    Attributes:
        ct_files: the CT slice files (paths in the export, in path order).
        rtstruct, rtplan, rtdose: headers of the paired objects (plan and dose may be None).
        how: how each RT object was paired, e.g. ``{"RTSTRUCT": "references the CT series"}``.
        warnings: choices the pairing made that the user should know.
    """

    patient_id: str
    study_instance_uid: str
    ct_series_uid: str
    frame_of_reference_uid: str
    ct_files: list[Path]
    rtstruct: DicomFileInfo
    rtplan: DicomFileInfo | None = None
    rtdose: DicomFileInfo | None = None
    how: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Unused:
    """Something in the export that no study uses, and why.

    Attributes:
        kind: ``study``, ``series`` or ``file``.
        what: the series UID (with its modality) or the file path.
    """

    patient_id: str
    study_instance_uid: str
    kind: str
    what: str
    reason: str


def _series_label(infos: Sequence[DicomFileInfo]) -> str:
    first = infos[0]
    description = f" '{first.series_description}'" if first.series_description else ""
    return f"{first.modality} series {first.series_instance_uid}{description} ({len(infos)} files)"


def _pick(candidates: Sequence[DicomFileInfo], rules: Sequence[tuple[str, Callable[[DicomFileInfo], bool]]]
          ) -> tuple[DicomFileInfo | None, str]:
    """The first candidate satisfying the first rule that any candidate satisfies, and that rule."""
    for description, rule in rules:
        matching = [info for info in candidates if rule(info)]
        if matching:
            return matching[0], description
    return None, ""


def pair_studies(
    index: ExportIndex, organ_count: Callable[[DicomFileInfo], int] | None = None
) -> tuple[list[PairedStudy], list[Unused]]:
    """Pair CT series with structure sets, plans and doses (see the module rules).

    Args:
        index: the export's headers from :func:`rtdeep.cohort.walk.index_export`.
        organ_count: how many of the site's organs an RTSTRUCT names (to choose between several).

    Returns:
        ``(studies, unused)``: usable studies in patient and path order, and every series, file or
        study not used, with the reason (duplicates and non-DICOM files included).
    """
    unused: list[Unused] = [
        Unused("", "", "file", str(path), reason if reason.startswith("unreadable") else f"not DICOM: {reason}")
        for path, reason in index.skipped]
    unused += [Unused("", "", "file", str(path), f"duplicate of {kept} (same SOPInstanceUID)")
               for path, kept in index.duplicates]
    by_patient: dict[str, list[DicomFileInfo]] = {}
    for info in index.files:
        by_patient.setdefault(info.patient_id, []).append(info)
    studies: list[PairedStudy] = []
    for patient_id in sorted(by_patient):
        found, left = _pair_patient(patient_id, by_patient[patient_id], organ_count or (lambda info: 0))
        studies += found
        unused += left
    return studies, unused


def _pair_patient(patient_id: str, infos: list[DicomFileInfo], organ_count: Callable[[DicomFileInfo], int]
                  ) -> tuple[list[PairedStudy], list[Unused]]:
    series: dict[str, list[DicomFileInfo]] = {}
    rt: dict[str, list[DicomFileInfo]] = {modality: [] for modality in _RT_MODALITIES}
    for info in infos:
        if info.modality in rt:
            rt[info.modality].append(info)
        else:
            series.setdefault(info.series_instance_uid, []).append(info)
    unused: list[Unused] = []
    ct_series: dict[str, list[DicomFileInfo]] = {}
    for uid, members in series.items():
        if members[0].modality == "CT":
            ct_series[uid] = members
        else:
            unused.append(Unused(patient_id, members[0].study_instance_uid, "series", _series_label(members),
                                 f"{members[0].modality} images: only CT is segmented and trained on"))

    structures_of: dict[str, list[DicomFileInfo]] = {}
    for structure in rt["RTSTRUCT"]:
        uid, why = _ct_of_structure(structure, ct_series)
        if uid is None:
            unused.append(Unused(patient_id, structure.study_instance_uid, "file", str(structure.path), why))
        else:
            structures_of.setdefault(uid, []).append(structure)

    studies: list[PairedStudy] = []
    used_rt: set[str] = set()
    for uid, members in sorted(ct_series.items(), key=lambda item: str(item[1][0].path)):
        first = members[0]
        candidates = structures_of.get(uid, [])
        if not candidates:
            unused.append(Unused(patient_id, first.study_instance_uid, "series", _series_label(members),
                                 "CT series without a structure set"))
            continue
        if len(members) < 2:
            unused.append(Unused(patient_id, first.study_instance_uid, "series", _series_label(members),
                                 "CT series of a single slice"))
            continue
        ranked = sorted(candidates, key=lambda info: (-organ_count(info), str(info.path)))
        study = PairedStudy(patient_id, first.study_instance_uid, uid, first.frame_of_reference_uid,
                            [info.path for info in members], ranked[0])
        study.how["RTSTRUCT"] = ("references the CT series" if uid in ranked[0].referenced_uids
                                 else "same frame of reference")
        for other in ranked[1:]:
            unused.append(Unused(patient_id, other.study_instance_uid, "file", str(other.path),
                                 f"another structure set on the same CT; {ranked[0].path.name} names more organs "
                                 "or comes first"))
            study.warnings.append(f"{len(ranked)} structure sets on this CT; using {ranked[0].path}")
        _attach_plan_and_dose(study, rt["RTPLAN"], rt["RTDOSE"])
        for info in (study.rtstruct, study.rtplan, study.rtdose):
            if info is not None:
                used_rt.add(info.sop_instance_uid)
        studies.append(study)

    for info in rt["RTPLAN"] + rt["RTDOSE"]:
        if info.sop_instance_uid not in used_rt:
            unused.append(Unused(patient_id, info.study_instance_uid, "file", str(info.path),
                                 f"{info.modality} not paired with a used structure set or plan"))
    paired = {study.study_instance_uid for study in studies}
    for study_uid in sorted({info.study_instance_uid for info in infos} - paired):
        members = [info for info in infos if info.study_instance_uid == study_uid]
        if not any(info.modality == "CT" for info in members):
            reason = "no CT series in this study"
        elif not any(info.modality == "RTSTRUCT" for info in members):
            reason = "no structure set in this study"
        else:
            reason = "no structure set drawn on a CT series of this study"
        unused.append(Unused(patient_id, study_uid, "study", study_uid, reason))
    return studies, unused


def _attach_plan_and_dose(study: PairedStudy, plans: Sequence[DicomFileInfo], doses: Sequence[DicomFileInfo]) -> None:
    """Set ``study.rtplan`` and ``study.rtdose`` by reference, else by frame of reference."""

    def same_frame(info: DicomFileInfo) -> bool:
        return info.frame_of_reference_uid == study.frame_of_reference_uid

    study.rtplan, study.how["RTPLAN"] = _pick(plans, [
        ("references the structure set", lambda info: study.rtstruct.sop_instance_uid in info.referenced_uids),
        ("same frame of reference", same_frame),
    ])
    plan_uid = study.rtplan.sop_instance_uid if study.rtplan else None
    ordered = sorted(doses, key=lambda info: (info.dose_summation_type != "PLAN", str(info.path)))
    study.rtdose, study.how["RTDOSE"] = _pick(ordered, [
        ("references the plan", lambda info: plan_uid is not None and plan_uid in info.referenced_uids),
        ("same frame of reference", same_frame),
    ])


def _ct_of_structure(structure: DicomFileInfo, ct_series: dict[str, list[DicomFileInfo]]) -> tuple[str | None, str]:
    """The CT series UID an RTSTRUCT is drawn on, or None and why not."""
    frame = structure.frame_of_reference_uid
    referenced = [uid for uid in structure.referenced_uids if uid in ct_series]
    for uid in referenced:
        ct_frame = ct_series[uid][0].frame_of_reference_uid
        if not frame or not ct_frame or ct_frame == frame:
            return uid, ""
    if referenced:
        return None, (f"RTSTRUCT on another frame of reference: it is on {frame}, the CT series it references "
                      f"on {ct_series[referenced[0]][0].frame_of_reference_uid}")
    on_frame = [uid for uid, members in ct_series.items() if frame and members[0].frame_of_reference_uid == frame]
    if len(on_frame) == 1:
        return on_frame[0], ""
    if len(on_frame) > 1:
        return None, f"RTSTRUCT references no CT series of the export and {len(on_frame)} CT series share its frame"
    return None, f"RTSTRUCT on another frame of reference: no CT series of frame {frame or '(none)'} in the export"
