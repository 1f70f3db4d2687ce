"""Dose-masked region-of-interest crops: the inputs of the talk's pneumonitis classifier.

A crop is defined by a :class:`CropSpec`: structures to include (their union), structures to
exclude (for "normal lung" = Lung_L + Lung_R minus GTV, as in clinical practice), an optional dose
threshold (keep voxels with dose >= T Gy), a margin (mm) added around the mask's bounding box, and
the value written outside the mask in the CT crop. Three presets reproduce the talk's crops:

=============  =======================================  ===============================
preset         mask                                     talk's column
=============  =======================================  ===============================
lung-dose20    (Lung_L + Lung_R - GTV*) and dose >= 20  normal lung and >= 20 Gy
lung           Lung_L + Lung_R - GTV*                   normal lung
body           External                                 whole body
=============  =======================================  ===============================

Names are matched with TG-263 synonyms (:mod:`rtdeep.names`); ``GTV*`` is a pattern, so a study
without a GTV gets a warning, not an error. :func:`crop_study` returns a :class:`Crop` whose
volumes live on a sub-grid of the CT grid (same spacing and direction, origin shifted), so they
still map to LPS; :func:`resample_fixed` makes the fixed-size arrays a model takes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from scipy import ndimage

from rtdeep.dicomrt.types import DoseGrid, StructureSet
from rtdeep.dvh import bounding_box, masks_from_structures
from rtdeep.errors import CropError, DoseError, GeometryError
from rtdeep.names import NameMatch, is_pattern, resolve_roi_names
from rtdeep.resample import sample_on_grid
from rtdeep.volume import Volume

__all__ = ["PRESETS", "Crop", "CropSpec", "FixedCrop", "crop_study", "get_preset", "resample_fixed"]


@dataclass(frozen=True)
class CropSpec:
    """What to crop.

    Attributes:
        include: structure names (or patterns) whose union forms the mask.
        exclude: names or patterns removed from it; a pattern that matches nothing is allowed.
        dose_threshold_gy: keep only voxels with dose >= this (None: no dose condition).
        margin_mm: added on every side of the mask's bounding box (clipped to the CT).
        fill_hu: CT value outside the mask (None: keep the CT everywhere in the box).
        name: a label for file names and the index CSV.
    """

    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    dose_threshold_gy: float | None = None
    margin_mm: float = 0.0
    fill_hu: float | None = -1000.0
    name: str = "custom"

    def __post_init__(self) -> None:
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if not self.include:
            raise CropError("a crop needs at least one structure to include")
        if self.margin_mm < 0:
            raise CropError(f"margin must be >= 0 mm, got {self.margin_mm}")

    def to_dict(self) -> dict:
        """Plain-data form (for .mat, .npz and JSON)."""
        return asdict(self)


PRESETS: dict[str, CropSpec] = {
    "lung-dose20": CropSpec(("Lung_L", "Lung_R"), ("GTV*",), 20.0, 0.0, -1000.0, "lung-dose20"),
    "lung": CropSpec(("Lung_L", "Lung_R"), ("GTV*",), None, 0.0, -1000.0, "lung"),
    "body": CropSpec(("External",), (), None, 0.0, -1000.0, "body"),
}


def get_preset(name: str, *, dose_threshold_gy: float | None = None, **changes) -> CropSpec:
    """A preset, optionally with another threshold (``lung-dose20`` at 10 Gy is named ``lung-dose10``).

    Raises:
        CropError: unknown preset (the message lists the presets).
    """
    if name not in PRESETS:
        raise CropError(f"unknown crop preset '{name}'; presets: {', '.join(PRESETS)}")
    spec = PRESETS[name]
    if dose_threshold_gy is not None:
        label = f"lung-dose{dose_threshold_gy:g}" if name == "lung-dose20" else f"{name}-dose{dose_threshold_gy:g}"
        spec = replace(spec, dose_threshold_gy=float(dose_threshold_gy), name=label)
    return replace(spec, **changes) if changes else spec


@dataclass
class Crop:
    """A cropped region of one study.

    Attributes:
        ct: HU on the crop grid, ``fill_hu`` outside the mask (float32 ``[k, j, i]``).
        mask: bool mask on the crop grid.
        dose: dose in Gy on the crop grid (not masked; 0 outside the dose grid), or None.
        bbox_lps: ``(min corner, max corner)`` LPS mm of the crop's voxel centres.
        bbox_index: ``((k0, k1), (j0, j1), (i0, i1))`` half-open index ranges in the CT grid.
        spec: the definition used.
        used_names: how each requested name was matched (see :class:`rtdeep.names.NameMatch`).
        warnings: what the user should know (missing optional exclusions, uncovered dose).
    """

    ct: Volume
    mask: Volume
    dose: Volume | None
    bbox_lps: tuple[np.ndarray, np.ndarray]
    bbox_index: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    spec: CropSpec
    used_names: list[NameMatch]
    warnings: list[str] = field(default_factory=list)

    @property
    def mask_volume_cc(self) -> float:
        """Mask volume in cm^3."""
        return float(self.mask.array.sum()) * self.mask.voxel_volume_cc

    def mean_dose_gy(self) -> float | None:
        """Mean dose in the mask (Gy), or None without dose."""
        if self.dose is None:
            return None
        return float(self.dose.array[self.mask.array].mean())

    def lps_ordered(self) -> Crop:
        """This crop with its CT, mask and dose in :meth:`rtdeep.volume.Volume.lps_ordered` axes
        (as a head-first-supine CT's: what the pneumonitis networks were trained on and what the
        figures assume); itself when they already are."""
        ct = self.ct.lps_ordered()
        if ct is self.ct:
            return self
        return replace(self, ct=ct, mask=self.mask.lps_ordered(),
                       dose=None if self.dose is None else self.dose.lps_ordered())


@dataclass
class FixedCrop:
    """A crop resampled to a fixed grid for a model.

    Attributes:
        ct, dose: float32 ``[k, j, i]`` (dose None when the crop has none).
        mask: bool ``[k, j, i]``.
        affine: index-to-LPS affine of the fixed grid.
    """

    ct: np.ndarray
    mask: np.ndarray
    dose: np.ndarray | None
    affine: np.ndarray

    @property
    def spacing_mm(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def _union(masks: Mapping[str, np.ndarray], names: Sequence[str], shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for name in names:
        mask = masks[name]
        if mask.shape != shape:
            raise GeometryError(f"mask shape {mask.shape} is not the CT grid {shape}", roi=name)
        out |= mask
    return out


def _dose_on_box(
    dose: Volume, ct: Volume, box: tuple[slice, slice, slice]
) -> tuple[np.ndarray, np.ndarray]:
    """Dose (Gy) and coverage on the CT sub-grid ``box``."""
    if dose.same_grid(ct):
        values = dose.array[box].astype(np.float32)
        covered = ~np.isnan(values)
        return np.where(covered, values, np.float32(0.0)), covered
    shape = tuple(s.stop - s.start for s in box)
    return sample_on_grid(dose, _sub_affine(ct.affine, box), shape)  # type: ignore[arg-type]


def _sub_affine(affine: np.ndarray, box: tuple[slice, slice, slice]) -> np.ndarray:
    sub = affine.copy()
    sub[:, 3] = affine @ np.array([box[2].start, box[1].start, box[0].start, 1.0])
    return sub


def crop_study(
    ct: Volume,
    structures: StructureSet | Mapping[str, np.ndarray],
    dose_gy: Volume | DoseGrid | None,
    spec: CropSpec | str,
    *,
    max_uncovered_fraction: float = 0.01,
) -> Crop:
    """Crop one study.

    Args:
        ct: the CT in HU.
        structures: masks ``[k, j, i]`` on the CT grid, by name (or a StructureSet).
        dose_gy: dose in Gy on the CT grid or on its own grid (a DoseGrid or Volume); needed for
            a dose threshold, optional otherwise.
        spec: a :class:`CropSpec` or a preset name.
        max_uncovered_fraction: with a dose threshold, the largest fraction of the structure
            allowed outside the dose grid.

    Returns:
        The crop.

    Raises:
        StructureError: an included (or named, non-pattern excluded) structure is missing;
            the message lists the available names.
        CropError: the mask is empty (e.g. the threshold is above the maximum dose).
        DoseError: a threshold without dose, or dose that does not cover the structure.
    """
    spec = get_preset(spec) if isinstance(spec, str) else spec
    masks = masks_from_structures(structures)
    available = list(masks)
    include = resolve_roi_names(spec.include, available)
    exclude = resolve_roi_names(spec.exclude, available)
    warnings: list[str] = []
    label = "+".join(spec.include)
    for pattern in spec.exclude:
        if is_pattern(pattern) and not any(m.requested == pattern for m in exclude):
            warnings.append(f"no structure matches exclusion '{pattern}'; nothing excluded for it")
    if not include:
        raise CropError(f"no structure matches {', '.join(spec.include)}; available: {', '.join(available)}")
    for match in include + exclude:
        if match.how == "synonym":
            warnings.append(f"using '{match.used}' for '{match.requested}' (TG-263 synonym)")

    mask = _union(masks, [m.used for m in include], ct.shape)
    if exclude:
        mask &= ~_union(masks, [m.used for m in exclude], ct.shape)
    box = bounding_box(mask)
    if box is None:
        raise CropError("the structures minus the exclusions leave an empty mask", roi=label)

    dose_volume = dose_gy.dose if isinstance(dose_gy, DoseGrid) else dose_gy
    if spec.dose_threshold_gy is not None:
        if dose_volume is None:
            raise DoseError(f"crop '{spec.name}' needs a dose (threshold {spec.dose_threshold_gy:g} Gy)")
        dose_box, covered = _dose_on_box(dose_volume, ct, box)
        inside = mask[box]
        uncovered = 1.0 - float((inside & covered).sum()) / float(inside.sum())
        if uncovered > max_uncovered_fraction:
            raise DoseError(
                f"the dose grid does not cover the structure: {100 * uncovered:.1f}% of it lies outside "
                f"(allowed {100 * max_uncovered_fraction:.1f}%)", roi=label,
            )
        kept = inside & (dose_box >= spec.dose_threshold_gy)
        if not kept.any():
            max_dose = float(dose_box[inside].max())
            raise CropError(
                f"no voxel receives >= {spec.dose_threshold_gy:g} Gy (maximum dose in the structure "
                f"{max_dose:.2f} Gy): the crop would be empty", roi=label,
            )
        inner = bounding_box(kept)
        assert inner is not None
        mask = np.zeros_like(mask)
        mask[box] = kept
        box = tuple(slice(outer.start + part.start, outer.start + part.stop) for outer, part in zip(box, inner))

    box = _pad_box(box, ct, spec.margin_mm)
    mask_crop = mask[box]
    ct_crop = ct.array[box].astype(np.float32)
    if spec.fill_hu is not None:
        ct_crop = np.where(mask_crop, ct_crop, np.float32(spec.fill_hu))
    affine = _sub_affine(ct.affine, box)
    dose_crop = None
    if dose_volume is not None:
        values, covered = _dose_on_box(dose_volume, ct, box)
        missing = 1.0 - float((mask_crop & covered).sum()) / float(mask_crop.sum())
        if missing > 0:
            warnings.append(f"{100 * missing:.1f}% of the crop mask lies outside the dose grid (dose 0 there)")
        dose_crop = Volume(values, affine)
    ct_volume = Volume(ct_crop, affine)
    bbox_index = tuple((s.start, s.stop) for s in box)
    return Crop(
        ct=ct_volume,
        mask=Volume(mask_crop, affine),
        dose=dose_crop,
        bbox_lps=ct_volume.bounds_lps(),
        bbox_index=bbox_index,  # type: ignore[arg-type]
        spec=spec,
        used_names=include + exclude,
        warnings=warnings,
    )


def _pad_box(box: tuple[slice, slice, slice], ct: Volume, margin_mm: float) -> tuple[slice, slice, slice]:
    if margin_mm <= 0:
        return box
    spacing_kji = ct.spacing_mm[::-1]
    pad = np.ceil(margin_mm / spacing_kji - 1e-9).astype(int)
    return tuple(  # type: ignore[return-value]
        slice(max(s.start - p, 0), min(s.stop + p, n)) for s, p, n in zip(box, pad, ct.shape)
    )


def resample_fixed(
    crop: Crop, size: tuple[int, int, int] = (64, 64, 64), *, keep_aspect: bool = False
) -> FixedCrop:
    """Resample a crop to ``size`` ``[k, j, i]`` voxels for a model.

    The crop's extent (voxel edges) is mapped onto the new grid; CT and dose are trilinear, the
    mask is the trilinear mask >= 0.5. With ``keep_aspect`` the extent is first enlarged on the
    short axes so one scale fits all axes (voxels stay in the crop's proportions), and the added
    border gets ``fill_hu`` (CT), False (mask) and 0 (dose).

    Returns:
        The fixed-size arrays and the affine of their grid (LPS).
    """
    in_shape = np.array(crop.ct.shape, dtype=np.float64)
    out_shape = np.array(size, dtype=np.float64)
    spacing_kji = crop.ct.spacing_mm[::-1]
    extent_mm = in_shape * spacing_kji
    if keep_aspect:
        out_spacing = np.full(3, np.max(extent_mm / out_shape))
    else:
        out_spacing = extent_mm / out_shape
    # input continuous index of each output voxel centre, centred on the crop's centre
    scale = out_spacing / spacing_kji
    start = (in_shape - 1) / 2.0 - scale * (out_shape - 1) / 2.0
    axes = [start[a] + scale[a] * np.arange(size[a]) for a in range(3)]
    coords = np.meshgrid(*axes, indexing="ij")
    fill = -1000.0 if crop.spec.fill_hu is None else float(crop.spec.fill_hu)

    def sample_edge(array: np.ndarray, cval: float) -> np.ndarray:
        # inside the crop, clamp at its edge voxels (half a voxel beyond the centres); beyond, cval
        clamped = [np.clip(c, 0, n - 1) for c, n in zip(coords, in_shape)]
        out = ndimage.map_coordinates(array.astype(np.float32), clamped, order=1)
        outside = np.zeros(out.shape, dtype=bool)
        for c, n in zip(coords, in_shape):
            outside |= (c < -0.5 - 1e-6) | (c > n - 0.5 + 1e-6)
        out[outside] = cval
        return out

    ct = sample_edge(crop.ct.array, fill)
    mask = sample_edge(crop.mask.array, 0.0) >= 0.5
    dose = None if crop.dose is None else sample_edge(crop.dose.array, 0.0)
    affine = crop.ct.affine.copy()
    direction = crop.ct.direction
    affine[:3, :3] = direction * out_spacing[::-1][None, :]
    affine[:3, 3] = crop.ct.index_to_lps(start[::-1])
    return FixedCrop(ct=ct.astype(np.float32), mask=mask, dose=dose, affine=affine)
