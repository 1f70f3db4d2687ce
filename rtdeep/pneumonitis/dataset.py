"""From a study (CT, structures, dose on the CT grid) to what the pneumonitis models take:
the masked crop resampled to a fixed size, and the lung dose figures of the dose-only models.

One function, :func:`prepare_crop`, serves training and prediction, so both see the same input:

* the crop is made by :func:`rtdeep.roi.crop_study` with a preset (``lung-dose20`` = normal lung
  (Lung_L + Lung_R - GTV) and dose >= T Gy, ``lung``, ``body``) and resampled by
  :func:`rtdeep.roi.resample_fixed` to ``size`` ``[k, j, i]`` (the box is stretched to fill it);
* channel 0 is the CT windowed to [-1000, 200] HU -> [0, 1], 0 outside the mask; channel 1 (if
  asked) the dose inside the mask in units of 60 Gy.

:func:`lung_dose_figures` computes the normal-lung DVH figures (mean lung dose, V5, V20) and the
NTCP of :mod:`rtdeep.ntcp` (QUANTEC LKB, QUANTEC logistic MLD).
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rtdeep.dicomrt.types import StructureSet
from rtdeep.dvh import dvh_on_ct_grid
from rtdeep.errors import CropError, RtDeepError, ValidationError
from rtdeep.ntcp import lkb_ntcp_from_dvh, logistic_mld_ntcp
from rtdeep.roi import Crop, FixedCrop, crop_study, get_preset, resample_fixed
from rtdeep.volume import Volume

__all__ = [
    "CROP_NAMES",
    "DOSE_SCALE_GY",
    "HU_WINDOW",
    "LUNG_ROI_NAME",
    "CaseRecord",
    "DoseFigures",
    "ManifestRow",
    "PreparedCrop",
    "build_record",
    "build_records",
    "crop_spec",
    "lung_dose_figures",
    "phantom_records",
    "prepare_crop",
    "read_manifest",
    "window_ct",
]

CROP_NAMES = ("lung-dose20", "lung", "body")
HU_WINDOW = (-1000.0, 200.0)
DOSE_SCALE_GY = 60.0
#: the name the normal-lung DVH is reported under (TG-263 style: both lungs minus the GTV)
LUNG_ROI_NAME = "Lungs-GTV"


@dataclass(frozen=True)
class DoseFigures:
    """Normal-lung (Lung_L + Lung_R - GTV) dose figures and dosimetric NTCP of one study.

    Attributes:
        mld_gy: mean lung dose (Gy, physical, as planned).
        v5_pct, v20_pct: % of the normal lung receiving >= 5 Gy / >= 20 Gy.
        lung_volume_cc: normal-lung volume.
        ntcp_lkb: QUANTEC LKB (TD50 31.4 Gy, m 0.45, n 1) probability of symptomatic pneumonitis.
        ntcp_logistic_mld: QUANTEC logistic MLD probability.
    """

    mld_gy: float
    v5_pct: float
    v20_pct: float
    lung_volume_cc: float
    ntcp_lkb: float
    ntcp_logistic_mld: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class PreparedCrop:
    """One crop ready for the network.

    Attributes:
        array: float32 ``[channels, D, H, W]`` (D, H, W = k, j, i of the fixed grid).
        crop: the crop on the CT sub-grid (CT, mask, dose, LPS box).
        fixed: the fixed-size arrays and their LPS affine.
    """

    array: np.ndarray
    crop: Crop
    fixed: FixedCrop

    @property
    def crop_volume_cc(self) -> float:
        return self.crop.mask_volume_cc


def crop_spec(crop_name: str, threshold_gy: float | None = None):
    """The :class:`rtdeep.roi.CropSpec` of a crop name; ``threshold_gy`` applies to ``lung-dose20``
    only (the other crops have no dose condition)."""
    if crop_name not in CROP_NAMES:
        raise CropError(f"unknown crop '{crop_name}'; expected one of {', '.join(CROP_NAMES)}")
    if crop_name == "lung-dose20" and threshold_gy is not None and float(threshold_gy) != 20.0:
        return get_preset(crop_name, dose_threshold_gy=float(threshold_gy))
    return get_preset(crop_name)


def window_ct(hu: np.ndarray) -> np.ndarray:
    """HU -> [0, 1] over :data:`HU_WINDOW` (air 0, soft tissue ~0.83)."""
    low, high = HU_WINDOW
    return np.clip((np.asarray(hu, dtype=np.float32) - low) / (high - low), 0.0, 1.0)


def prepare_crop(
    ct: Volume,
    structures: StructureSet | Mapping[str, np.ndarray],
    dose_on_ct: Volume | None,
    crop_name: str = "lung-dose20",
    threshold_gy: float | None = None,
    size: Sequence[int] = (32, 32, 32),
    channels: Sequence[str] = ("ct",),
) -> PreparedCrop:
    """Crop, resample and normalise one study for the network.

    Args:
        ct: CT in HU, ``[k, j, i]`` with its LPS affine.
        structures: masks on the CT grid by name (or a StructureSet); lungs as ``Lung_L``/``Lung_R``
            or a TG-263 synonym, optional ``GTV*`` excluded; ``External`` for the body crop.
        dose_on_ct: dose in Gy on the CT grid (or any grid covering the lungs).
        crop_name: ``lung-dose20``, ``lung`` or ``body``.
        threshold_gy: dose threshold of ``lung-dose20`` (default 20 Gy).
        size: fixed grid ``[k, j, i]``.
        channels: ``("ct",)`` or ``("ct", "dose")``.

    Raises:
        StructureError: no lung (or External) structure. CropError: empty crop, e.g. a threshold
        above the maximum lung dose. DoseError: no dose, or dose not covering the lungs.
    """
    spec = crop_spec(crop_name, threshold_gy)
    crop = crop_study(ct, structures, dose_on_ct, spec)
    fixed = resample_fixed(crop, tuple(int(s) for s in size))  # type: ignore[arg-type]
    planes = []
    for channel in channels:
        if channel == "ct":
            planes.append(np.where(fixed.mask, window_ct(fixed.ct), 0.0))
        elif channel == "dose":
            if fixed.dose is None:
                raise CropError(f"channel 'dose' asked for but crop '{crop_name}' has no dose")
            planes.append(np.where(fixed.mask, np.clip(fixed.dose / DOSE_SCALE_GY, 0.0, 1.5), 0.0))
        else:
            raise CropError(f"unknown input channel '{channel}'; expected 'ct' or 'dose'")
    return PreparedCrop(np.stack(planes).astype(np.float32), crop, fixed)


def lung_dose_figures(
    ct: Volume, structures: StructureSet | Mapping[str, np.ndarray], dose_on_ct: Volume
) -> DoseFigures:
    """Normal-lung DVH figures and NTCP (see :class:`DoseFigures`).

    Raises:
        StructureError: no lung structure. DoseError: the dose grid leaves more than 1% of the
        normal lung uncovered (message names ``Lungs-GTV``).
    """
    lung = crop_study(ct, structures, None, get_preset("lung"))
    (k0, k1), (j0, j1), (i0, i1) = lung.bbox_index
    full = np.zeros(ct.shape, dtype=bool)
    full[k0:k1, j0:j1, i0:i1] = lung.mask.array
    dvh = dvh_on_ct_grid(ct, {LUNG_ROI_NAME: full}, dose_on_ct, [LUNG_ROI_NAME])[LUNG_ROI_NAME]
    return DoseFigures(
        mld_gy=dvh.mean_gy,
        v5_pct=dvh.volume_at_dose_pct(5.0),
        v20_pct=dvh.volume_at_dose_pct(20.0),
        lung_volume_cc=dvh.volume_cc,
        ntcp_lkb=lkb_ntcp_from_dvh(dvh, "pneumonitis-quantec"),
        ntcp_logistic_mld=logistic_mld_ntcp(dvh.mean_gy),
    )


@dataclass
class CaseRecord:
    """One training or test patient: outcome, dose figures and the model input of each crop.

    Attributes:
        patient_id: as in the manifest.
        label: 1 = grade >= 2 pneumonitis, 0 = not.
        figures: normal-lung dose figures and NTCP.
        inputs: crop name -> float32 ``[2, D, H, W]`` (CT, dose channels).
        crop_volume_cc: crop name -> mask volume.
        source: the study folder (or phantom seed/index) it came from.
    """

    patient_id: str
    label: int
    figures: DoseFigures
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    crop_volume_cc: dict[str, float] = field(default_factory=dict)
    source: str = ""


def build_record(
    patient_id: str,
    label: int,
    ct: Volume,
    structures: StructureSet | Mapping[str, np.ndarray],
    dose_on_ct: Volume,
    crop_names: Sequence[str] = CROP_NAMES,
    threshold_gy: float | None = None,
    size: Sequence[int] = (32, 32, 32),
    source: str = "",
) -> CaseRecord:
    """Everything a training run needs from one study (CT and dose channels for every crop)."""
    record = CaseRecord(patient_id, int(label), lung_dose_figures(ct, structures, dose_on_ct), source=source)
    for name in crop_names:
        prepared = prepare_crop(ct, structures, dose_on_ct, name, threshold_gy, size, ("ct", "dose"))
        record.inputs[name] = prepared.array
        record.crop_volume_cc[name] = prepared.crop_volume_cc
    return record


@dataclass(frozen=True)
class ManifestRow:
    """One manifest line: the study folder (absolute) and its outcome."""

    patient_id: str
    study_dir: Path
    label: int
    row: dict[str, str]


def read_manifest(path: str | os.PathLike[str], label_column: str = "pneumonitis") -> list[ManifestRow]:
    """Read a cohort manifest CSV (``study_dir`` relative to the manifest's folder, ``patient_id``,
    and the 0/1 ``pneumonitis`` column = grade >= 2 pneumonitis).

    Raises:
        ValidationError: missing columns or a label that is not 0/1, naming the file and line.
    """
    path = Path(path)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"study_dir", "patient_id", label_column} - set(reader.fieldnames or [])
        if missing:
            raise ValidationError(f"manifest lacks column(s) {', '.join(sorted(missing))}", path=path)
        rows = []
        for line, row in enumerate(reader, start=2):
            value = str(row[label_column]).strip()
            if value not in ("0", "1"):
                raise ValidationError(
                    f"line {line}: column '{label_column}' must be 0 or 1 (1 = grade >= 2 pneumonitis), got {value!r}",
                    path=path,
                )
            rows.append(ManifestRow(row["patient_id"], (path.parent / row["study_dir"]).resolve(), int(value), row))
    if not rows:
        raise ValidationError("manifest has no patients", path=path)
    return rows


def _cache_path(cache_dir: Path, row: ManifestRow, crop_name: str, threshold_gy: float | None,
                size: Sequence[int]) -> Path:
    key = f"{row.study_dir}|{crop_name}|{threshold_gy}|{tuple(size)}|v1"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir / f"{row.patient_id}-{crop_name}-{digest}.npz"


def _save_crop(path: Path, record: CaseRecord, crop_name: str) -> None:
    payload = {
        "patient_id": np.array(record.patient_id),
        "label": np.array(record.label),
        "source": np.array(record.source),
        "figures": np.array([getattr(record.figures, k) for k in DoseFigures.__dataclass_fields__]),
        "input": record.inputs[crop_name].astype(np.float16),
        "crop_volume_cc": np.array(record.crop_volume_cc[crop_name]),
    }
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **payload)
    os.replace(tmp, path)


def _load_crop(path: Path, crop_name: str, record: CaseRecord | None) -> CaseRecord:
    with np.load(path) as data:
        if record is None:
            figures = DoseFigures(*[float(v) for v in data["figures"]])
            record = CaseRecord(str(data["patient_id"]), int(data["label"]), figures, source=str(data["source"]))
        record.inputs[crop_name] = data["input"].astype(np.float32)
        record.crop_volume_cc[crop_name] = float(data["crop_volume_cc"])
    return record


def build_records(
    rows: Sequence[ManifestRow],
    load_study: Callable[[Path], tuple[Volume, StructureSet | Mapping[str, np.ndarray], Volume]],
    crop_names: Sequence[str] = CROP_NAMES,
    threshold_gy: float | None = None,
    size: Sequence[int] = (32, 32, 32),
    cache_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[CaseRecord]:
    """Prepare every manifest patient (each crop cached as ``.npz`` under ``cache_dir`` when given).

    Args:
        rows: from :func:`read_manifest`.
        load_study: study folder -> (CT in HU, structures on the CT grid, dose in Gy on the CT grid
            or its own grid).
        crop_names, threshold_gy, size: as :func:`build_record`.
        cache_dir: where to keep prepared crops between runs (keyed by folder, crop and settings).
        log: progress lines.

    Raises:
        RtDeepError: a study that cannot be prepared; the message names the patient and folder.
    """
    cache = None if cache_dir is None else Path(cache_dir)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    records = []
    for number, row in enumerate(rows, start=1):
        paths = {name: None if cache is None else _cache_path(cache, row, name, threshold_gy, size)
                 for name in crop_names}
        record: CaseRecord | None = None
        if all(p is not None and p.is_file() for p in paths.values()):
            for name, path in paths.items():
                record = _load_crop(path, name, record)  # type: ignore[arg-type]
            records.append(record)  # type: ignore[arg-type]
            continue
        try:
            ct, structures, dose = load_study(row.study_dir)
            record = build_record(row.patient_id, row.label, ct, structures, dose, crop_names, threshold_gy, size,
                                  source=str(row.study_dir))
        except RtDeepError as error:
            raise type(error)(f"patient {row.patient_id}: {error.message}", path=error.path or row.study_dir,
                              tag=error.tag, roi=error.roi) from error
        for name, path in paths.items():
            if path is not None:
                _save_crop(path, record, name)
        records.append(record)
        if log and (number % 10 == 0 or number == len(rows)):
            log(f"prepared {number}/{len(rows)} studies")
    return records


def phantom_records(
    seed: int,
    indices: Sequence[int],
    crop_names: Sequence[str] = CROP_NAMES,
    threshold_gy: float | None = None,
    size: Sequence[int] = (32, 32, 32),
    grid: str = "small",
    cache_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[CaseRecord]:
    """Records of synthetic thorax patients generated in memory (:func:`rtdeep.phantom.generate_patient`),
    without the DICOM round trip; label = the phantom's ``pneumonitis`` outcome.

    The phantom's dose on its own 4 mm grid is used (as an RT Dose would be), masks on the CT grid.
    """
    from rtdeep.phantom import generate_patient, generator_fingerprint

    # the phantom's source is part of the cache key: a changed phantom model never reuses old crops
    version = generator_fingerprint()
    rows = [ManifestRow(f"phantom-{seed}-{index}", Path(f"phantom-{version}/thorax/{grid}/{seed}/{index}"), -1, {})
            for index in indices]

    def load(study_dir: Path):
        patient = generate_patient("thorax", int(study_dir.name), seed, grid)
        loaded_labels[study_dir] = int(patient.outcome["pneumonitis"]), patient.patient_id
        return patient.ct, {roi.name: roi.mask for roi in patient.rois}, patient.dose

    loaded_labels: dict[Path, tuple[int, str]] = {}
    cache = None if cache_dir is None else Path(cache_dir)
    records = []
    for number, row in enumerate(rows, start=1):
        paths = {n: None if cache is None else _cache_path(cache, row, n, threshold_gy, size) for n in crop_names}
        if all(p is not None and p.is_file() for p in paths.values()):
            record: CaseRecord | None = None
            for name, path in paths.items():
                record = _load_crop(path, name, record)  # type: ignore[arg-type]
            records.append(record)
            continue
        ct, structures, dose = load(row.study_dir)
        label, patient_id = loaded_labels[row.study_dir]
        record = build_record(patient_id, label, ct, structures, dose, crop_names, threshold_gy, size,
                              source=str(row.study_dir))
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            for name, path in paths.items():
                _save_crop(path, record, name)  # type: ignore[arg-type]
        records.append(record)
        if log and (number % 10 == 0 or number == len(rows)):
            log(f"prepared {number}/{len(rows)} phantoms (seed {seed})")
    return records
