"""Dose-volume histograms (DVH) and their statistics.

Two ways to sample a structure's dose, for the two kinds of data users have:

* **CT grid** (:func:`dvh_on_ct_grid`): structure masks on the CT grid (what
  :func:`rtdeep.dicomrt.rtstruct_reader.read_rtstruct` returns) and the dose resampled trilinearly
  onto that grid; each mask voxel counts its own volume.
* **Dose grid** (:func:`dvh_on_dose_grid`): for users with only RTSTRUCT + RTDOSE. The structure is
  sampled on its own contour planes, each plane standing for one slice thickness (the smallest
  spacing between contour planes in the structure set). On each plane the contours are rasterised
  at the dose grid's pixel centres (:mod:`rtdeep.dicomrt.rasterize`: even-odd rule, so holes come
  out right), optionally supersampled ``s x s`` per dose pixel with bilinear dose, and the dose of
  the plane is interpolated linearly between the two dose planes that bracket it. Contours are
  thus never interpolated between planes: the dose is. With ``s = 1`` this is the method of
  dicompyler-core's ``get_dvh`` (without its optional interpolation): bench/bench_dvh.py finds
  volume, mean and D95 within 1 % of it for six thorax structures. Coarse dose pixels (2.5 mm)
  under-sample thin structures (a 12 mm cord: -8 % volume); ``s = 2`` or the CT grid come
  within 2 % of the true volume there.

Either way the result is a :class:`DVH`: a differential histogram in cm^3 per dose bin (0.01 Gy
by default) plus exact minimum, mean and maximum. Parts of a structure outside the dose grid are
left out of the histogram and reported as ``uncovered_fraction``; above ``max_uncovered_fraction``
(1 % by default) a :class:`~rtdeep.errors.DoseError` names the ROI and the fraction.

Doses are in Gy, volumes in cm^3, positions in LPS mm, arrays ``[k, j, i]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rtdeep.dicomrt.types import StructureSet
from rtdeep.errors import DoseError, GeometryError, StructureError
from rtdeep.resample import axis_weights, covered_on_grid, sample_on_grid
from rtdeep.volume import Volume

__all__ = [
    "DEFAULT_BIN_WIDTH_GY",
    "DVH",
    "bounding_box",
    "dvh_from_samples",
    "dvh_on_ct_grid",
    "dvh_on_dose_grid",
    "masks_from_structures",
    "mean_dose_gy",
]

DEFAULT_BIN_WIDTH_GY = 0.01


@dataclass
class DVH:
    """A structure's dose-volume histogram.

    Attributes:
        roi_name: the structure.
        differential_cc: volume (cm^3) whose dose lies in ``[n * w, (n + 1) * w)`` Gy, bin ``n``.
        bin_width_gy: ``w``.
        min_gy, mean_gy, max_gy: exact, over the sampled (dose-covered) volume.
        uncovered_fraction: fraction of the structure outside the dose grid (not in the histogram).
        grid: ``"ct"`` or ``"dose"``: which sampling made it.
    """

    roi_name: str
    differential_cc: np.ndarray
    bin_width_gy: float
    min_gy: float
    mean_gy: float
    max_gy: float
    uncovered_fraction: float = 0.0
    grid: str = "ct"

    @property
    def volume_cc(self) -> float:
        """Sampled (dose-covered) volume in cm^3."""
        return float(self.differential_cc.sum())

    @property
    def dose_edges_gy(self) -> np.ndarray:
        """Bin edges ``0, w, 2w, ...`` (one more than bins)."""
        return np.arange(self.differential_cc.size + 1) * self.bin_width_gy

    def cumulative_cc(self) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative DVH: ``(dose edges in Gy, volume in cm^3 receiving at least that dose)``."""
        tail = np.cumsum(self.differential_cc[::-1])[::-1]
        return self.dose_edges_gy, np.append(tail, 0.0)

    def volume_at_dose_cc(self, dose_gy: float) -> float:
        """``V_x`` in cm^3: volume receiving at least ``dose_gy`` (linear within a bin)."""
        edges, cumulative = self.cumulative_cc()
        return float(np.interp(dose_gy, edges, cumulative, right=0.0))

    def volume_at_dose_pct(self, dose_gy: float) -> float:
        """``V_x`` in % of the sampled volume."""
        total = self.volume_cc
        return 100.0 * self.volume_at_dose_cc(dose_gy) / total if total > 0 else math.nan

    def dose_at_volume_cc(self, volume_cc: float) -> float:
        """``D_v``: the minimum dose to the hottest ``volume_cc`` cm^3 (NaN if larger than the structure)."""
        edges, cumulative = self.cumulative_cc()
        if volume_cc > cumulative[0] * (1 + 1e-9) or volume_cc < 0:
            return math.nan
        # the largest dose d with V(>= d) >= volume: last edge still holding the volume, then
        # linear within the next bin (the volume in a bin is taken as spread evenly over it)
        tolerance = 1e-9 * max(cumulative[0], 1e-12)
        last = int(np.count_nonzero(cumulative >= volume_cc - tolerance)) - 1
        if last >= cumulative.size - 1:
            return self.max_gy
        drop = cumulative[last] - cumulative[last + 1]
        fraction = (cumulative[last] - volume_cc) / drop if drop > 0 else 0.0
        dose = float(edges[last] + self.bin_width_gy * min(max(fraction, 0.0), 1.0))
        return min(max(dose, self.min_gy), self.max_gy)

    def dose_at_volume_pct(self, percent: float) -> float:
        """``D_x%``: the minimum dose to the hottest ``percent`` % of the volume."""
        return self.dose_at_volume_cc(self.volume_cc * percent / 100.0)

    def statistics(
        self,
        dose_levels_gy: Sequence[float] = (5.0, 20.0, 30.0),
        volume_pcts: Sequence[float] = (98.0, 95.0, 50.0, 2.0),
        volumes_cc: Sequence[float] = (2.0,),
    ) -> dict[str, float]:
        """The usual DVH figures, keyed ``volume_cc, min_gy, mean_gy, max_gy, D95_gy, D2cc_gy,
        V20_pct, V20_cc, uncovered_pct`` (numbers formatted without trailing ``.0``)."""

        def label(x: float) -> str:
            return f"{x:g}"

        stats: dict[str, float] = {
            "volume_cc": self.volume_cc,
            "min_gy": self.min_gy,
            "mean_gy": self.mean_gy,
            "max_gy": self.max_gy,
        }
        for pct in volume_pcts:
            stats[f"D{label(pct)}_gy"] = self.dose_at_volume_pct(pct)
        for cc in volumes_cc:
            stats[f"D{label(cc)}cc_gy"] = self.dose_at_volume_cc(cc)
        for dose in dose_levels_gy:
            stats[f"V{label(dose)}_pct"] = self.volume_at_dose_pct(dose)
            stats[f"V{label(dose)}_cc"] = self.volume_at_dose_cc(dose)
        stats["uncovered_pct"] = 100.0 * self.uncovered_fraction
        return stats


def dvh_from_samples(
    roi_name: str,
    dose_gy: np.ndarray,
    volume_cc: float | np.ndarray,
    *,
    bin_width_gy: float = DEFAULT_BIN_WIDTH_GY,
    uncovered_fraction: float = 0.0,
    grid: str = "ct",
) -> DVH:
    """Histogram dose samples into a :class:`DVH`.

    Args:
        roi_name: structure name.
        dose_gy: dose of each sample (Gy); negative values (interpolation noise) count as 0.
        volume_cc: the volume each sample stands for: one number, or one per sample (cm^3).
        bin_width_gy: histogram bin width.
        uncovered_fraction: recorded as is.
        grid: recorded as is.

    Raises:
        StructureError: no samples (an empty structure).
    """
    dose = np.asarray(dose_gy).ravel()
    if dose.size == 0:
        raise StructureError("structure is empty: no voxel to build a DVH from", roi=roi_name)
    if dose.dtype != np.float64:
        dose = dose.astype(np.float32)
    dose = np.maximum(dose, dose.dtype.type(0.0))
    # float32 keeps this fast on millions of voxels; the bin error it adds is < 1e-5 Gy
    bins = np.floor(dose * dose.dtype.type(1.0 / bin_width_gy) + dose.dtype.type(1e-4)).astype(np.int64)
    if np.ndim(volume_cc) == 0:
        differential = np.bincount(bins) * float(volume_cc)
        mean = float(dose.sum(dtype=np.float64) / dose.size)
    else:
        weights = np.asarray(volume_cc, dtype=np.float64).ravel()
        differential = np.bincount(bins, weights=weights)
        mean = float(np.dot(dose.astype(np.float64), weights) / weights.sum())
    return DVH(
        roi_name=roi_name,
        differential_cc=differential,
        bin_width_gy=bin_width_gy,
        min_gy=float(dose.min()),
        mean_gy=mean,
        max_gy=float(dose.max()),
        uncovered_fraction=float(uncovered_fraction),
        grid=grid,
    )


def mean_dose_gy(dvh: DVH) -> float:
    """Mean dose (Gy) of a DVH; for the lungs this is the mean lung dose (MLD)."""
    return dvh.mean_gy


def masks_from_structures(structures: StructureSet | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Name -> bool mask ``[k, j, i]`` from a StructureSet or a mapping."""
    if isinstance(structures, StructureSet):
        return {roi.name: roi.mask for roi in structures.rois}
    return dict(structures)


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice, slice] | None:
    """Smallest box ``[k, j, i]`` holding all True voxels, grown by ``margin`` voxels on each side
    (clipped at the array's edge); None when empty."""
    box = []
    for axis, axes in enumerate(((1, 2), (0, 2), (0, 1))):
        hits = np.flatnonzero(mask.any(axis=axes))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)  # type: ignore[return-value]


def _box_affine(grid: Volume, box: tuple[slice, slice, slice]) -> np.ndarray:
    """Affine of the sub-grid ``box`` of ``grid`` (same axes, origin at the box's first voxel)."""
    affine = grid.affine.copy()
    affine[:, 3] = grid.affine @ np.array([box[2].start, box[1].start, box[0].start, 1.0])
    return affine


def _check_coverage(roi_name: str, uncovered: float, limit: float) -> None:
    if uncovered > limit:
        raise DoseError(
            f"the dose grid does not cover the structure: {100 * uncovered:.1f}% of its volume lies "
            f"outside the dose grid (allowed {100 * limit:.1f}%)",
            roi=roi_name,
        )


def dvh_on_ct_grid(
    grid: Volume,
    structures: StructureSet | Mapping[str, np.ndarray],
    dose_gy: Volume,
    roi_names: Iterable[str] | None = None,
    *,
    dose_grid: Volume | None = None,
    combined: Mapping[str, tuple[Sequence[str], Sequence[str]]] | None = None,
    bin_width_gy: float = DEFAULT_BIN_WIDTH_GY,
    max_uncovered_fraction: float = 0.01,
) -> dict[str, DVH]:
    """DVHs from masks on the CT grid.

    Args:
        grid: the CT (its geometry is used; masks are on this grid).
        structures: masks ``[k, j, i]`` by name.
        dose_gy: dose in Gy, on the CT grid (used as is; NaN = not covered) or on its own grid
            (sampled trilinearly within each structure's bounding box).
        roi_names: the structures to use (exact names; default all).
        dose_grid: the native dose grid when ``dose_gy`` was already resampled onto the CT (e.g.
            ``Study.dose_on_ct``, which is 0 outside the dose): CT voxels beyond the centres of its
            edge voxels count as uncovered. Without it, NaN in ``dose_gy`` marks uncovered voxels
            (a dose of 0 is taken as a real 0 Gy).
        combined: extra DVHs of combined structures, name -> (include names, exclude names):
            the union of the include masks minus the exclude masks (e.g. lungs minus GTV).
        bin_width_gy: histogram bin width.
        max_uncovered_fraction: above this uncovered fraction a DoseError is raised.

    Returns:
        name -> DVH, in the order asked.
    """
    masks = masks_from_structures(structures)
    names = list(masks) if roi_names is None else list(roi_names)
    for name, (include, exclude) in (combined or {}).items():
        for part in list(include) + list(exclude):
            if part not in masks:
                raise StructureError(f"structure not found; available: {', '.join(masks)}", roi=part)
        mask = np.zeros(grid.shape, dtype=bool)
        for part in include:
            mask |= masks[part]
        for part in exclude:
            mask &= ~masks[part]
        masks[name] = mask
        names.append(name)
    on_grid = dose_gy.same_grid(grid)
    result: dict[str, DVH] = {}
    for name in names:
        if name not in masks:
            raise StructureError(f"structure not found; available: {', '.join(masks)}", roi=name)
        mask = np.asarray(masks[name], dtype=bool)
        if mask.shape != grid.shape:
            raise GeometryError(f"mask shape {mask.shape} is not the CT grid {grid.shape}", roi=name)
        box = bounding_box(mask)
        if box is None:
            raise StructureError("structure is empty: no voxel to build a DVH from", roi=name)
        inside = mask[box]
        if on_grid:
            dose_box = dose_gy.array[box]
            nan = np.isnan(dose_box) if np.issubdtype(dose_box.dtype, np.floating) else None
            covered = None if nan is None or not nan.any() else ~nan
            if dose_grid is not None:
                # Study.dose_on_ct is 0 where the dose grid does not reach: count only what it covers
                extent = covered_on_grid(dose_grid, _box_affine(grid, box), inside.shape)
                covered = extent if covered is None else covered & extent
        else:
            dose_box, covered = sample_on_grid(dose_gy, _box_affine(grid, box), inside.shape)
        samples_covered = inside if covered is None else inside & covered
        n_inside = np.count_nonzero(inside)
        uncovered = 1.0 - np.count_nonzero(samples_covered) / n_inside
        _check_coverage(name, uncovered, max_uncovered_fraction)
        result[name] = dvh_from_samples(
            name, dose_box[samples_covered], grid.voxel_volume_cc, bin_width_gy=bin_width_gy,
            uncovered_fraction=uncovered, grid="ct",
        )
    return result


_PLANE_TOLERANCE_MM = 0.05  # contours closer than this along the normal lie on one plane


def _cluster_positions(positions_mm: np.ndarray) -> np.ndarray:
    """Plane id of each position: sorted positions less than the tolerance apart share one."""
    order = np.argsort(positions_mm)
    gaps = np.diff(positions_mm[order]) > _PLANE_TOLERANCE_MM
    ids = np.empty(positions_mm.size, dtype=np.int64)
    ids[order] = np.concatenate([[0], np.cumsum(gaps)]) if positions_mm.size else []
    return ids


def _plane_groups(
    contours: Sequence[np.ndarray], dose: Volume, roi_name: str
) -> dict[float, list[np.ndarray]]:
    """Group contours by plane (key: position along the dose grid's k axis in mm); each contour
    as ``(n, 3)`` continuous dose indices (i, j, k), k set to its plane's."""
    spacing_k = dose.spacing_mm[2]
    items: list[np.ndarray] = []
    for points in contours:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        if points.shape[0] < 3:
            continue
        ijk = dose.lps_to_index(points)
        if np.ptp(ijk[:, 2]) * spacing_k > _PLANE_TOLERANCE_MM:
            raise GeometryError(
                "contour is not parallel to the dose grid planes; use the CT-grid DVH", roi=roi_name
            )
        items.append(ijk)
    if not items:
        return {}
    positions = np.array([float(ijk[:, 2].mean()) * spacing_k for ijk in items])
    ids = _cluster_positions(positions)
    planes: dict[float, list[np.ndarray]] = {}
    for plane_id in np.unique(ids):
        members = np.flatnonzero(ids == plane_id)
        key = float(positions[members].mean())
        planes[key] = [items[m] for m in members]
    return planes


def _snap_planes(grouped: Mapping[str, Mapping[float, list[np.ndarray]]]) -> dict[str, dict[float, list]]:
    """Give every ROI's plane the same key when the planes coincide (within the tolerance), so
    samples of different ROIs on one CT slice can be matched (union, difference)."""
    keys = np.array([key for planes in grouped.values() for key in planes], dtype=np.float64)
    if keys.size == 0:
        return {name: dict(planes) for name, planes in grouped.items()}
    ids = _cluster_positions(keys)
    centre = {i: float(keys[ids == i].mean()) for i in np.unique(ids)}
    canonical = {float(k): centre[i] for k, i in zip(keys, ids)}
    snapped: dict[str, dict[float, list]] = {}
    for name, planes in grouped.items():
        snapped[name] = {}
        for key, items in planes.items():
            snapped[name].setdefault(canonical[float(key)], []).extend(items)
    return snapped


def _min_plane_spacing_mm(plane_keys: Iterable[float]) -> float | None:
    keys = np.asarray(list(plane_keys), dtype=np.float64)
    if keys.size < 2:
        return None
    ids = _cluster_positions(keys)
    centres = np.sort([keys[ids == i].mean() for i in np.unique(ids)])
    steps = np.diff(centres)
    return float(steps.min()) if steps.size else None


def _sample_roi_on_dose_grid(
    planes: Mapping[float, list[np.ndarray]], dose: Volume, supersample: int, with_keys: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples at the (sub)pixel centres inside the contours.

    Returns:
        ``(keys, covered, dose_gy)``, one entry per sample: ``keys`` (int64, only ``with_keys``,
        else empty) identify the sample position (plane, sub-row, sub-column) so samples of
        different ROIs can be compared (union, difference); ``covered`` marks samples on the dose
        grid; ``dose_gy`` is 0 elsewhere.
    """
    from rtdeep.dicomrt.rasterize import rasterize_planes

    if not planes:
        return np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0)
    keys = sorted(planes)
    everything = np.concatenate([p for key in keys for p in planes[key]])
    i_lo, j_lo = np.floor(everything[:, :2].min(axis=0)).astype(int) - 1
    i_hi, j_hi = np.ceil(everything[:, :2].max(axis=0)).astype(int) + 1
    s = supersample
    polygons, plane_index = [], []
    for index, key in enumerate(keys):
        for points in planes[key]:
            sub = np.empty((len(points), 2))
            sub[:, 0] = (points[:, 0] - i_lo + 0.5) * s - 0.5
            sub[:, 1] = (points[:, 1] - j_lo + 0.5) * s - 0.5
            polygons.append(sub)
            plane_index.append(index)
    inside = rasterize_planes(polygons, plane_index, len(keys), (j_hi - j_lo + 1) * s, (i_hi - i_lo + 1) * s)
    p, r, c = np.nonzero(inside)
    # dose on the whole sample lattice of the ROI's box, one axis at a time (k, then j, then i)
    xs = i_lo - 0.5 + (np.arange(inside.shape[2]) + 0.5) / s
    ys = j_lo - 0.5 + (np.arange(inside.shape[1]) + 0.5) / s
    plane_mm = np.asarray(keys)
    ks = plane_mm / dose.spacing_mm[2]
    n_k, n_j, n_i = dose.shape
    lk, hk, wk, ok_k = axis_weights(ks, n_k)
    lj, hj, wj, ok_j = axis_weights(ys, n_j)
    li, hi, wi, ok_i = axis_weights(xs, n_i)
    src = dose.array.astype(np.float32, copy=False)
    lattice = src[lk] * (1 - wk)[:, None, None] + src[hk] * wk[:, None, None]
    lattice = lattice[:, lj] * (1 - wj)[None, :, None] + lattice[:, hj] * wj[None, :, None]
    lattice = lattice[:, :, li] * (1 - wi) + lattice[:, :, hi] * wi
    ok = ok_k[p] & ok_j[r] & ok_i[c]
    values = lattice[p, r, c]
    values[~ok] = 0.0
    if not with_keys:
        return np.zeros(0, np.int64), ok, values
    plane_code = np.round(plane_mm[p] * 100).astype(np.int64) + (1 << 20)
    row_code = r.astype(np.int64) + j_lo * s + (1 << 19)
    col_code = c.astype(np.int64) + i_lo * s + (1 << 19)
    return (plane_code << 40) | (row_code << 20) | col_code, ok, values


def _combine_samples(
    samples: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    include: Sequence[str],
    exclude: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union of the include ROIs' samples minus any sample position of the exclude ROIs."""
    keys = np.concatenate([samples[n][0] for n in include])
    ok = np.concatenate([samples[n][1] for n in include])
    values = np.concatenate([samples[n][2] for n in include])
    keys, first = np.unique(keys, return_index=True)
    ok, values = ok[first], values[first]
    if exclude:
        removed = np.isin(keys, np.concatenate([samples[n][0] for n in exclude]))
        keys, ok, values = keys[~removed], ok[~removed], values[~removed]
    return keys, ok, values


def dvh_on_dose_grid(
    dose_gy: Volume,
    contours: Mapping[str, Sequence[np.ndarray]],
    roi_names: Iterable[str] | None = None,
    *,
    combined: Mapping[str, tuple[Sequence[str], Sequence[str]]] | None = None,
    supersample: int = 1,
    slice_thickness_mm: float | None = None,
    bin_width_gy: float = DEFAULT_BIN_WIDTH_GY,
    max_uncovered_fraction: float = 0.01,
) -> dict[str, DVH]:
    """DVHs from contour polygons sampled on the dose grid (see the module docstring).

    Args:
        dose_gy: the RT Dose in Gy on its own grid.
        contours: name -> closed planar contours, each ``(n, 3)`` LPS mm.
        roi_names: structures to use (default all).
        combined: extra DVHs of combined structures, name -> (include names, exclude names),
            e.g. ``{"Lungs-GTV": (["Lung_L", "Lung_R"], ["GTV"])}``: the union of the include
            structures' samples minus every sample position inside an exclude structure.
        supersample: ``s``: sample ``s x s`` points per dose pixel (dose bilinear between pixels).
        slice_thickness_mm: the volume one contour plane stands for along the normal; default the
            smallest spacing between contour planes over all structures given.
        bin_width_gy: histogram bin width.
        max_uncovered_fraction: above this uncovered fraction a DoseError is raised.

    Returns:
        name -> DVH, in the order asked.
    """
    names = list(contours) if roi_names is None else list(roi_names)
    grouped = {name: _plane_groups(contours.get(name, ()), dose_gy, name) for name in contours}
    grouped = _snap_planes(grouped)
    if slice_thickness_mm is None:
        slice_thickness_mm = _min_plane_spacing_mm(k for planes in grouped.values() for k in planes)
        if slice_thickness_mm is None:
            slice_thickness_mm = float(dose_gy.spacing_mm[2])
    pixel_area_mm2 = float(np.linalg.norm(np.cross(dose_gy.affine[:3, 0], dose_gy.affine[:3, 1])))
    sample_cc = pixel_area_mm2 * slice_thickness_mm / (supersample**2) / 1000.0
    needed = set(names)
    for include, exclude in (combined or {}).values():
        needed.update(include)
        needed.update(exclude)
    for name in needed:
        if name not in grouped:
            raise StructureError(f"structure not found; available: {', '.join(contours)}", roi=name)
    keyed = {part for include, exclude in (combined or {}).values() for part in list(include) + list(exclude)}
    samples = {name: _sample_roi_on_dose_grid(grouped[name], dose_gy, supersample, name in keyed)
               for name in needed}
    jobs = [(name, samples[name]) for name in names]
    jobs += [(name, _combine_samples(samples, inc, exc)) for name, (inc, exc) in (combined or {}).items()]
    result: dict[str, DVH] = {}
    for name, (_, ok, values) in jobs:
        if ok.size == 0:
            raise StructureError("structure encloses no dose-grid sample on any plane", roi=name)
        uncovered = 1.0 - np.count_nonzero(ok) / ok.size
        _check_coverage(name, uncovered, max_uncovered_fraction)
        result[name] = dvh_from_samples(
            name, values[ok], sample_cc, bin_width_gy=bin_width_gy, uncovered_fraction=uncovered, grid="dose"
        )
    return result
