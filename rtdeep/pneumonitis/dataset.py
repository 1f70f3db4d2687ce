"""From a study (CT, structures, dose) to what the pneumonitis models take: the crop at a fixed
physical spacing on a fixed canvas, and the normal lung's dose report.

One function, :func:`prepare_crop`, serves training and prediction, so both see the same input:

* the normal lung is cropped once by :func:`rtdeep.ntcp.lung_dose_report`; the ``lung`` crop is that
  crop, ``lung-dose20`` the part of it receiving >= T Gy (cut from it, not cropped again), ``body``
  the External (:func:`rtdeep.crop.crop_study`);
* the crop is resampled to isotropic voxels (:data:`SPACING_MM` unless a cohort is prepared at
  another spacing; a bundle records its own; a Gaussian anti-alias filter, then trilinear) and
  centred on a canvas of fixed physical size (:data:`CANVAS_MM`, in voxels :func:`canvas_for`):
  never stretched, so
  a voxel is always the same size in mm and a larger crop is a larger object on the canvas. In
  training a crop larger than the canvas loses its edges (the share lost is recorded); in
  prediction the canvas grows to hold the whole crop (the network pools over the mask, so the
  canvas size does not change its answer);
* channels: ``ct`` = CT windowed to [-1000, 200] HU -> [0, 1] inside the mask, 0 outside;
  ``dose`` = dose inside the mask / 60 Gy; ``mask`` = the crop mask (always last: the network
  pools its features over it).
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from rtdeep.crop import Crop, CropSpec, crop_study, get_preset
from rtdeep.dicomrt.types import StructureSet
from rtdeep.dvh import bounding_box
from rtdeep.errors import CropError, RtDeepError, ValidationError
from rtdeep.ntcp import LungDoseReport, lung_dose_report
from rtdeep.volume import Volume

__all__ = [
    "CANVAS",
    "CANVAS_MM",
    "CHANNELS",
    "CROP_NAMES",
    "DOSE_SCALE_GY",
    "HU_WINDOW",
    "SPACING_MM",
    "CaseRecord",
    "ManifestRow",
    "PreparedCrop",
    "build_record",
    "build_records",
    "canvas_for",
    "crop_spec",
    "cut_crop",
    "phantom_records",
    "prepare_crop",
    "read_manifest",
    "report_figures",
    "window_ct",
]

CROP_NAMES = ("lung-dose20", "lung", "body")
HU_WINDOW = (-1000.0, 200.0)
DOSE_SCALE_GY = 60.0
#: default isotropic voxel size (mm) of a network input; a cohort may be prepared at another
#: (``spacing_mm`` of :func:`build_record`), and a bundle records its own
SPACING_MM = 6.0
#: physical canvas [k, j, i] of each crop in mm (centred; never stretched)
CANVAS_MM = {"lung-dose20": (192.0, 192.0, 240.0), "lung": (336.0, 192.0, 336.0), "body": (336.0, 288.0, 480.0)}


def canvas_for(crop_name: str, spacing_mm: float = SPACING_MM) -> tuple[int, int, int]:
    """Voxels [k, j, i] of ``crop_name``'s canvas at ``spacing_mm``: at least :data:`CANVAS_MM`,
    each a multiple of 8 (the network pools three times)."""
    voxels = np.ceil(np.asarray(CANVAS_MM[crop_name]) / float(spacing_mm) - 1e-9).astype(int)
    return tuple(int(v) for v in ((voxels + 7) // 8) * 8)  # type: ignore[return-value]


#: canvas [k, j, i] of each crop at SPACING_MM: (32, 32, 40), (56, 32, 56), (56, 48, 80)
CANVAS = {name: canvas_for(name) for name in CANVAS_MM}
#: every channel a record keeps, in this order; a model takes a subset ending with "mask"
CHANNELS = ("ct", "dose", "mask")
_CACHE_VERSION = "fixed-spacing-v2"


def crop_spec(crop_name: str, threshold_gy: float | None = None) -> CropSpec:
    """The :class:`rtdeep.crop.CropSpec` of a crop name; ``threshold_gy`` applies to ``lung-dose20``
    only (default 20 Gy; 10 Gy gives the spec named ``lung-dose10``)."""
    if crop_name not in CROP_NAMES:
        raise CropError(f"unknown crop '{crop_name}'; expected one of {', '.join(CROP_NAMES)}")
    if crop_name == "lung-dose20" and threshold_gy is not None:
        return get_preset(crop_name, dose_threshold_gy=float(threshold_gy))
    return get_preset(crop_name)


def window_ct(hu: np.ndarray) -> np.ndarray:
    """HU -> [0, 1] over :data:`HU_WINDOW` (air 0, lung ~0.13, soft tissue ~0.86)."""
    low, high = HU_WINDOW
    return np.clip((np.asarray(hu, dtype=np.float32) - low) / (high - low), 0.0, 1.0)


def _dose_part(lung: Crop, threshold_gy: float, spec: CropSpec) -> Crop:
    """The part of the normal-lung crop receiving >= ``threshold_gy``, on its own bounding box."""
    assert lung.dose is not None
    kept = lung.mask.array & (lung.dose.array >= threshold_gy)
    box = bounding_box(kept)
    if box is None:
        max_dose = float(lung.dose.array[lung.mask.array].max())
        raise CropError(f"no voxel of the normal lung receives >= {threshold_gy:g} Gy (maximum {max_dose:.2f} Gy): "
                        "the crop would be empty", roi="Lung_L+Lung_R")
    mask = kept[box]
    affine = lung.ct.affine.copy()
    affine[:, 3] = lung.ct.affine @ np.array([box[2].start, box[1].start, box[0].start, 1.0])
    ct = np.where(mask, lung.ct.array[box], np.float32(spec.fill_hu if spec.fill_hu is not None else -1000.0))
    ct_volume = Volume(ct.astype(np.float32), affine)
    index = tuple((outer[0] + part.start, outer[0] + part.stop) for outer, part in zip(lung.bbox_index, box))
    return Crop(ct=ct_volume, mask=Volume(mask, affine), dose=Volume(lung.dose.array[box], affine),
                bbox_lps=ct_volume.bounds_lps(), bbox_index=index, spec=spec,  # type: ignore[arg-type]
                used_names=list(lung.used_names), warnings=list(lung.warnings))


def cut_crop(
    ct: Volume,
    structures: StructureSet | Mapping[str, np.ndarray],
    dose: Volume | None,
    report: LungDoseReport,
    crop_name: str,
    threshold_gy: float | None = None,
) -> Crop:
    """The crop of ``crop_name``: the report's normal-lung crop, its >= T Gy part, or the body.

    Raises:
        CropError: empty crop (threshold above the maximum lung dose). StructureError: no External.
    """
    spec = crop_spec(crop_name, threshold_gy)
    lung = report.lung_crop
    if not isinstance(lung, Crop):
        raise CropError("the lung-dose report carries no lung crop (it was made from a DVH alone)")
    if crop_name == "lung":
        return lung
    if crop_name == "lung-dose20":
        return _dose_part(lung, float(spec.dose_threshold_gy), spec)  # type: ignore[arg-type]
    return crop_study(ct, structures, dose, spec)


@dataclass
class PreparedCrop:
    """One crop ready for the network.

    Attributes:
        array: float32 ``[channels, D, H, W]`` on the canvas (D, H, W = k, j, i).
        affine: index-to-LPS affine of the canvas (:data:`SPACING_MM` voxels).
        crop: the crop on the CT sub-grid (CT, mask, dose, LPS box).
        lost_fraction: share of the crop mask outside the canvas (0 unless the canvas was fixed).
    """

    array: np.ndarray
    affine: np.ndarray
    crop: Crop
    lost_fraction: float = 0.0

    @property
    def crop_volume_cc(self) -> float:
        return self.crop.mask_volume_cc


def _canvas_shape(crop: Crop, spacing_mm: float, canvas: Sequence[int], fit: bool) -> tuple[int, int, int]:
    if not fit:
        return tuple(int(c) for c in canvas)  # type: ignore[return-value]
    extent = np.array(crop.ct.shape) * crop.ct.spacing_mm[::-1]
    needed = np.ceil(extent / spacing_mm).astype(int)
    needed = ((needed + 7) // 8) * 8
    return tuple(int(max(c, n)) for c, n in zip(canvas, needed))  # type: ignore[return-value]


def prepare_crop(
    crop: Crop,
    channels: Sequence[str] = ("ct", "mask"),
    canvas: Sequence[int] = CANVAS["lung-dose20"],
    spacing_mm: float = SPACING_MM,
    fit: bool = True,
) -> PreparedCrop:
    """Resample a crop to ``spacing_mm`` voxels on a canvas and make the channels.

    Args:
        crop: from :func:`cut_crop` (or :func:`rtdeep.crop.crop_study`).
        channels: names from :data:`CHANNELS`, ``"mask"`` last.
        canvas: ``[k, j, i]`` voxels (multiples of 8).
        spacing_mm: voxel size.
        fit: grow the canvas to hold the whole crop (prediction); False keeps ``canvas`` (training).
    """
    channels = tuple(channels)
    if not channels or channels[-1] != "mask" or any(c not in CHANNELS for c in channels):
        raise CropError(f"channels must be taken from {CHANNELS} and end with 'mask', got {channels}")
    if "dose" in channels and crop.dose is None:
        raise CropError(f"channel 'dose' asked for but crop '{crop.spec.name}' has no dose")
    crop = crop.lps_ordered()  # a feet-first or prone CT's crop in a head-first-supine CT's axes
    shape_out = _canvas_shape(crop, spacing_mm, canvas, fit)
    in_shape = np.array(crop.ct.shape, dtype=np.float64)
    scale = spacing_mm / crop.ct.spacing_mm[::-1]  # input voxels per output voxel, [k, j, i]
    start = (in_shape - 1) / 2.0 - scale * (np.array(shape_out) - 1) / 2.0
    axes = [start[a] + scale[a] * np.arange(shape_out[a]) for a in range(3)]
    outside = np.zeros(shape_out, dtype=bool)
    for a, (coords, n) in enumerate(zip(axes, in_shape)):
        beyond = (coords < -0.5 - 1e-6) | (coords > n - 0.5 + 1e-6)
        outside |= beyond.reshape([-1 if b == a else 1 for b in range(3)])
    grid = np.meshgrid(*[np.clip(c, 0, n - 1) for c, n in zip(axes, in_shape)], indexing="ij")
    sigma = 0.5 * np.sqrt(np.maximum(scale**2 - 1.0, 0.0))

    def resample(array: np.ndarray) -> np.ndarray:
        array = array.astype(np.float32)
        if sigma.max() > 0:
            array = ndimage.gaussian_filter(array, sigma, mode="nearest")
        out = ndimage.map_coordinates(array, grid, order=1)
        out[outside] = 0.0
        return out

    mask = resample(crop.mask.array) >= 0.5
    planes = []
    for channel in channels:
        if channel == "ct":
            planes.append(np.where(mask, resample(window_ct(crop.ct.array)), 0.0))
        elif channel == "dose":
            planes.append(np.where(mask, np.clip(resample(crop.dose.array) / DOSE_SCALE_GY, 0.0, 1.5), 0.0))  # type: ignore[union-attr]
        else:
            planes.append(mask.astype(np.float32))
    affine = crop.ct.affine.copy()
    affine[:3, :3] = crop.ct.direction * spacing_mm
    affine[:3, 3] = crop.ct.index_to_lps(start[::-1])
    kept_cc = float(mask.sum()) * spacing_mm**3 / 1000.0
    lost = 0.0
    if not fit:
        full = _canvas_shape(crop, spacing_mm, canvas, True)
        if full != shape_out:
            lost = max(0.0, 1.0 - kept_cc / max(crop.mask_volume_cc, 1e-6))
    return PreparedCrop(np.stack(planes).astype(np.float32), affine, crop, lost)


@dataclass
class CaseRecord:
    """One training or test patient: outcome, dose report figures and every crop's input.

    Attributes:
        patient_id: as in the manifest.
        label: 1 = grade >= 2 pneumonitis, 0 = not.
        figures: ``mld_gy``, ``v5_pct``, ``v20_pct``, ``ntcp_lkb``, ``ntcp_logistic_mld``,
            ``lung_volume_cc`` and, for phantoms, ``risk`` (the outcome model's own probability: the
            limit) and ``ild_in_v20_cc``.
        inputs: crop name -> float16 ``[3, D, H, W]`` (:data:`CHANNELS`) on that crop's canvas.
        crop_volume_cc, lost_fraction: crop name -> mask volume / share outside the canvas.
        source: the study folder (or phantom seed/index) it came from.
        spacing_mm: voxel size of every input (on :func:`canvas_for` that spacing).
    """

    patient_id: str
    label: int
    figures: dict[str, float]
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    crop_volume_cc: dict[str, float] = field(default_factory=dict)
    lost_fraction: dict[str, float] = field(default_factory=dict)
    source: str = ""
    spacing_mm: float = SPACING_MM


def report_figures(report: LungDoseReport) -> dict[str, float]:
    """The dose figures a record keeps from a :class:`LungDoseReport`."""
    return {"mld_gy": report.mld_gy, "v5_pct": report.v5_pct, "v20_pct": report.v20_pct,
            "ntcp_lkb": report.ntcp_lkb, "ntcp_logistic_mld": report.ntcp_logistic_mld,
            "lung_volume_cc": report.volume_cc}


def build_record(
    patient_id: str,
    label: int,
    ct: Volume,
    structures: StructureSet | Mapping[str, np.ndarray],
    dose: Volume,
    crop_names: Sequence[str] = CROP_NAMES,
    threshold_gy: float | None = None,
    spacing_mm: float = SPACING_MM,
    source: str = "",
    extra: Mapping[str, float] | None = None,
) -> CaseRecord:
    """Everything a training run needs from one study: the report and every crop on its canvas."""
    report = lung_dose_report(ct, structures, dose)
    record = CaseRecord(patient_id, int(label), {**report_figures(report), **(extra or {})}, source=source,
                        spacing_mm=float(spacing_mm))
    for name in crop_names:
        crop = cut_crop(ct, structures, dose, report, name, threshold_gy)
        prepared = prepare_crop(crop, CHANNELS, canvas_for(name, spacing_mm), spacing_mm, fit=False)
        record.inputs[name] = prepared.array.astype(np.float16)
        record.crop_volume_cc[name] = prepared.crop_volume_cc
        record.lost_fraction[name] = prepared.lost_fraction
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


def _cache_path(cache_dir: Path, key: str, patient_id: str, spacing_mm: float = SPACING_MM) -> Path:
    canvases = sorted((name, canvas_for(name, spacing_mm)) for name in CANVAS_MM)
    digest = hashlib.sha256(f"{key}|{_CACHE_VERSION}|{float(spacing_mm)}|{canvases}".encode()).hexdigest()[:16]
    return cache_dir / f"{patient_id}-{digest}.npz"


def _save(path: Path, record: CaseRecord) -> None:
    payload: dict[str, np.ndarray] = {
        "patient_id": np.array(record.patient_id), "label": np.array(record.label),
        "source": np.array(record.source), "figure_names": np.array(list(record.figures)),
        "figures": np.array(list(record.figures.values()), dtype=np.float64),
        "crop_names": np.array(list(record.inputs)), "spacing_mm": np.array(record.spacing_mm),
        "crop_volume_cc": np.array([record.crop_volume_cc[n] for n in record.inputs]),
        "lost_fraction": np.array([record.lost_fraction[n] for n in record.inputs]),
    }
    for name, array in record.inputs.items():
        payload[f"input_{name}"] = array.astype(np.float16)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, **payload)
    os.replace(tmp, path)


def _only(record: CaseRecord, crop_names: Sequence[str]) -> CaseRecord:
    """The record with only ``crop_names`` kept in memory (every crop stays in the cache file)."""
    return replace(record, inputs={n: record.inputs[n] for n in crop_names},
                   crop_volume_cc={n: record.crop_volume_cc[n] for n in crop_names},
                   lost_fraction={n: record.lost_fraction[n] for n in crop_names})


def _load(path: Path, crop_names: Sequence[str]) -> CaseRecord | None:
    try:
        with np.load(path) as data:
            names = [str(n) for n in data["crop_names"]]
            if not set(crop_names) <= set(names):
                return None
            figures = {str(k): float(v) for k, v in zip(data["figure_names"], data["figures"])}
            spacing = float(data["spacing_mm"]) if "spacing_mm" in data.files else SPACING_MM
            record = CaseRecord(str(data["patient_id"]), int(data["label"]), figures, source=str(data["source"]),
                                spacing_mm=spacing)
            for index, name in enumerate(names):
                if name in crop_names:
                    record.inputs[name] = data[f"input_{name}"]
                    record.crop_volume_cc[name] = float(data["crop_volume_cc"][index])
                    record.lost_fraction[name] = float(data["lost_fraction"][index])
    except (OSError, KeyError, ValueError):
        return None
    return record


def build_records(
    rows: Sequence[ManifestRow],
    load_study: Callable[[Path], tuple[Volume, StructureSet | Mapping[str, np.ndarray], Volume]],
    crop_names: Sequence[str] = CROP_NAMES,
    threshold_gy: float | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[CaseRecord]:
    """Prepare every manifest patient (cached as ``.npz`` under ``cache_dir`` when given).

    Args:
        rows: from :func:`read_manifest`.
        load_study: study folder -> (CT in HU, structures on the CT grid, dose in Gy on any grid).
        crop_names, threshold_gy: as :func:`build_record`.
        cache_dir: where to keep prepared records between runs (keyed by folder, crops and settings).
        log: progress lines.

    Raises:
        RtDeepError: a study that cannot be prepared; the message names the patient and folder.
    """
    cache = None if cache_dir is None else Path(cache_dir)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    records = []
    for number, row in enumerate(rows, start=1):
        # every crop is prepared and cached together, so one cache file serves any crop later
        key = f"{row.study_dir}|{sorted(CROP_NAMES)}|{threshold_gy}"
        path = None if cache is None else _cache_path(cache, key, row.patient_id)
        record = _load(path, crop_names) if path is not None and path.is_file() else None
        if record is None:
            try:
                ct, structures, dose = load_study(row.study_dir)
                record = build_record(row.patient_id, row.label, ct, structures, dose, CROP_NAMES, threshold_gy,
                                      source=str(row.study_dir))
            except RtDeepError as error:
                raise type(error)(f"patient {row.patient_id}: {error.message}", path=error.path or row.study_dir,
                                  tag=error.tag, roi=error.roi) from error
            if path is not None:
                _save(path, record)
        records.append(replace(_only(record, crop_names), label=row.label))
        if log and (number % 50 == 0 or number == len(rows)):
            log(f"prepared {number}/{len(rows)} studies")
    return records


def phantom_records(
    seed: int,
    indices: Sequence[int],
    crop_names: Sequence[str] = CROP_NAMES,
    threshold_gy: float | None = None,
    grid: str = "small",
    cache_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
    generators: Sequence[str] = (),
    spacing_mm: float = SPACING_MM,
) -> list[CaseRecord]:
    """Records of synthetic thorax patients generated in memory (:func:`rtdeep.phantom.generate_patient`),
    without the DICOM round trip; label = the phantom's ``pneumonitis`` outcome, and the figures
    keep its ``risk`` (the limit) and ``ild_in_v20_cc``. The dose is the phantom's own 4 mm grid
    (as an RT Dose would be), masks on the CT grid. The cache key holds the generator's
    fingerprint, so a changed phantom model never reuses old records.

    Args:
        generators: generator fingerprints whose cached records to use instead of the current
            one (a fixed cohort across edits of the phantom package that do not change these
            phantoms); a record missing from all of them is an error, never made with other code.
        spacing_mm: voxel size of the inputs. At :data:`SPACING_MM` every crop is prepared and
            cached together (one file serves any crop later); at another spacing only
            ``crop_names`` are (a finer whole-body crop costs more than it is asked for).
    """
    from rtdeep.phantom import generate_patient, generator_fingerprint

    versions = list(generators) or [generator_fingerprint()]
    cache = None if cache_dir is None else Path(cache_dir)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    built = CROP_NAMES if float(spacing_mm) == SPACING_MM else tuple(sorted(crop_names))
    records = []
    for number, index in enumerate(indices, start=1):
        record, path, source = None, None, ""
        for version in versions:
            source = f"phantom-{version}/thorax/{grid}/{seed}/{index}"
            key = f"{source}|{sorted(built)}|{threshold_gy}"
            path = None if cache is None else _cache_path(cache, key, f"phantom-{seed}-{index}", spacing_mm)
            record = _load(path, crop_names) if path is not None and path.is_file() else None
            if record is not None:
                break
        if record is None and generators:
            raise RtDeepError(f"phantom seed {seed} index {index} is not cached for generator(s) "
                              f"{', '.join(generators)}", path=cache)
        if record is None:
            source = f"phantom-{versions[0]}/thorax/{grid}/{seed}/{index}"
            path = None if cache is None else _cache_path(
                cache, f"{source}|{sorted(built)}|{threshold_gy}", f"phantom-{seed}-{index}", spacing_mm)
            patient = generate_patient("thorax", int(index), int(seed), grid)
            extra = {"risk": float(patient.outcome["risk"]), "ild_in_v20_cc": float(patient.outcome["ild_in_v20_cc"])}
            record = build_record(patient.patient_id, int(patient.outcome["pneumonitis"]), patient.ct,
                                  {roi.name: roi.mask for roi in patient.rois}, patient.dose, built,
                                  threshold_gy, spacing_mm, source=source, extra=extra)
            if path is not None:
                _save(path, record)
        records.append(_only(record, crop_names))
        if log and (number % 50 == 0 or number == len(indices)):
            log(f"prepared {number}/{len(indices)} phantoms (seed {seed})")
    return records
