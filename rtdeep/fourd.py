"""4D CT analysis: intensity projections, organs and GTV on every phase, the ITV, and motion.

:func:`analyse_four_d` is what ``rtdeep fourd`` runs. For a study folder holding a 4D CT
(:func:`rtdeep.dicomrt.fourd.find_four_d`) it writes, in a new output folder:

* ``AIP/``, ``MIP/``, ``MinIP/``: average, maximum and minimum intensity projections over the
  phases, derived CT series on the 4D CT's frame of reference;
* ``RS_ITV.dcm``: the ITV (union of the phase GTVs) as an RT Structure Set on the AIP;
* ``motion.csv``: per structure and phase the centroid (LPS mm) and volume (cc), with the
  structure's peak-to-peak centroid motion per axis.

The GTV of a phase comes from the structure set drawn on that phase (an RTSTRUCT referencing the
phase's series). Phases without one get the GTV of the nearest phase that has one, carried by a
deformable registration of the two phases (SimpleITK demons). With ``model``, the organs are
segmented on every phase by :func:`rtdeep.inference.segment_ct`; without, organs come from the
phases' structure sets when present.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from rtdeep.dicomrt.fourd import FourDCt, projections, write_projection
from rtdeep.dicomrt.scan import DicomFileInfo
from rtdeep.dicomrt.types import CtSeries, Roi
from rtdeep.errors import SeriesError
from rtdeep.fileio import ensure_new_paths, staged_output
from rtdeep.volume import Volume

__all__ = ["MOTION_COLUMNS", "PROJECTIONS", "FourDResult", "analyse_four_d", "propagate_mask"]

PROJECTIONS = ("AIP", "MIP", "MinIP")  # the derived series' folder names, in series-number order
MOTION_COLUMNS = ["structure", "source", "phase_percent", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
                  "volume_cc", "p2p_x_mm", "p2p_y_mm", "p2p_z_mm"]
_GTV_NAMES = ("GTV", "gtv")


@dataclass
class FourDResult:
    """What :func:`analyse_four_d` wrote and measured."""

    out_dir: Path
    four_d: FourDCt
    projection_dirs: dict[str, Path]
    itv_path: Path | None
    motion_csv: Path
    #: structure -> [(phase percent, centroid LPS mm, volume cc, source)]
    motion: dict[str, list[tuple[float, np.ndarray, float, str]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def peak_to_peak_mm(self, structure: str) -> np.ndarray:
        centroids = np.array([row[1] for row in self.motion[structure]])
        return centroids.max(axis=0) - centroids.min(axis=0)


def _centroid(volume: Volume, mask: np.ndarray) -> np.ndarray:
    kk, jj, ii = np.nonzero(mask)
    return volume.index_to_lps(np.array([ii.mean(), jj.mean(), kk.mean()]))


def _gtv_of(rois: list[Roi]) -> Roi | None:
    gtvs = [roi for roi in rois if roi.interpreted_type == "GTV" or roi.name.upper().startswith("GTV")]
    gtvs = [roi for roi in gtvs if roi.mask.any()]
    if not gtvs:
        return None
    union = np.zeros_like(gtvs[0].mask)
    for roi in gtvs:
        union |= roi.mask
    return Roi("GTV", union, 1, (255, 0, 0), "GTV", gtvs[0].generation_algorithm)


def propagate_mask(fixed: Volume, moving: Volume, mask: np.ndarray, *, iterations: int = 60,
                   smoothing_mm: float = 6.0, margin_mm: float = 40.0) -> np.ndarray:
    """Carry a mask from the ``moving`` phase to the ``fixed`` phase by deformable registration.

    Inside the mask's bounding box grown by ``margin_mm`` (HU clipped to [-1000, 400] so that lung
    and soft tissue drive it): first a translation (SimpleITK, mean squares over the mask grown by
    10 mm, two resolutions), since a tumour moves mostly as a whole and demons alone miss motions
    of several voxels; then fast symmetric-forces demons started from it, the displacement field
    smoothed by a Gaussian of ``smoothing_mm``. The mask is resampled (linear, > 0.5) through the
    field.

    Args:
        fixed, moving: two phases on one grid (HU).
        mask: bool ``[k, j, i]`` on ``moving``.

    Returns:
        The mask on ``fixed``.
    """
    kk, jj, ii = np.nonzero(mask)
    if kk.size == 0:
        return np.zeros_like(mask)
    margin = np.ceil(margin_mm / fixed.spacing_mm[::-1]).astype(int)
    lower = np.maximum(np.array([kk.min(), jj.min(), ii.min()]) - margin, 0)
    upper = np.minimum(np.array([kk.max(), jj.max(), ii.max()]) + margin + 1, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lower, upper))
    corner = fixed.index_to_lps(np.array([lower[2], lower[1], lower[0]], dtype=float))
    affine = fixed.affine.copy()
    affine[:3, 3] = corner
    result = np.zeros_like(mask)
    result[box] = _register_and_warp(Volume(fixed.array[box], affine), Volume(moving.array[box], affine),
                                     mask[box], iterations, smoothing_mm)
    return result


def _register_and_warp(fixed: Volume, moving: Volume, mask: np.ndarray, iterations: int, smoothing_mm: float
                       ) -> np.ndarray:
    import SimpleITK as sitk

    def image(array: np.ndarray, volume: Volume) -> sitk.Image:
        result = sitk.GetImageFromArray(array)
        result.SetSpacing(tuple(float(s) for s in volume.spacing_mm))
        result.SetOrigin(tuple(float(v) for v in volume.origin_lps))
        result.SetDirection(tuple(float(v) for v in volume.direction.ravel()))
        return result

    fixed_image = image(np.clip(fixed.array, -1000, 400).astype(np.float32), fixed)
    moving_image = image(np.clip(moving.array, -1000, 400).astype(np.float32), moving)
    # 1. the tumour moves mostly as a whole: a translation fitted around it (moving mask grown 10 mm)
    near = ndimage.distance_transform_edt(~mask, sampling=tuple(float(v) for v in moving.spacing_mm[::-1])) <= 10.0
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMeanSquares()
    method.SetMetricMovingMask(image(near.astype(np.uint8), moving))
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=4.0, minStep=0.05, numberOfIterations=200)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([1.0, 0.0])
    method.SetInitialTransform(sitk.TranslationTransform(3), inPlace=False)
    method.SetInterpolator(sitk.sitkLinear)
    translation = method.Execute(fixed_image, moving_image)
    # 2. demons for what the translation leaves, coarse to fine, starting from it
    field = sitk.TransformToDisplacementField(translation, sitk.sitkVectorFloat64, fixed_image.GetSize(),
                                              fixed_image.GetOrigin(), fixed_image.GetSpacing(),
                                              fixed_image.GetDirection())
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(iterations)
    demons.SetSmoothDisplacementField(True)
    demons.SetStandardDeviations(max(smoothing_mm / float(min(fixed.spacing_mm)), 1.0))
    field = demons.Execute(fixed_image, moving_image, field)
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    warped = sitk.Resample(image(mask.astype(np.float32), moving), fixed_image, transform, sitk.sitkLinear, 0.0)
    return sitk.GetArrayFromImage(warped) > 0.5


def _phase_structures(infos: list[DicomFileInfo], four_d: FourDCt, phases: list[CtSeries], warnings: list[str]
                      ) -> list[list[Roi]]:
    """Each phase's structure set (an RTSTRUCT referencing the phase's series), or [] when none."""
    from rtdeep.dicomrt.rtstruct_reader import read_rtstruct

    structures = []
    for phase, ct in zip(four_d.phases, phases):
        candidates = [info for info in infos if info.modality == "RTSTRUCT"
                      and phase.series_instance_uid in info.referenced_uids]
        if len(candidates) > 1:
            warnings.append(f"{len(candidates)} structure sets reference phase {phase.percent:g}%; "
                            f"using {candidates[0].path.name}")
        structures.append(read_rtstruct(candidates[0].path, ct).rois if candidates else [])
    return structures


def _phase_gtvs(phases: list[CtSeries], structures: list[list[Roi]], notes: list[str]
                ) -> list[tuple[np.ndarray, str] | None]:
    drawn = [_gtv_of(rois) for rois in structures]
    have = [index for index, roi in enumerate(drawn) if roi is not None]
    gtvs: list[tuple[np.ndarray, str] | None] = []
    for index, roi in enumerate(drawn):
        if roi is not None:
            gtvs.append((roi.mask, "structure set"))
        elif have:
            source = min(have, key=lambda other: (min(abs(other - index), len(phases) - abs(other - index)), other))
            mask = propagate_mask(phases[index].volume, phases[source].volume, drawn[source].mask)  # type: ignore[union-attr]
            gtvs.append((mask, f"registered from phase {source}"))
        else:
            gtvs.append(None)
    if not have:
        notes.append("no GTV on any phase's structure set: no ITV written")
    return gtvs


def analyse_four_d(study_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, model: str | None = None,
                   device: str = "cpu") -> FourDResult:
    """Projections, per-phase structures, ITV and motion of the 4D CT in ``study_dir``.

    Args:
        study_dir: a folder holding one 4D CT (and optionally each phase's structure set).
        out_dir: the output folder (new, or without any of the outputs); nothing is written elsewhere.
        model: segment the organs on every phase with this model (name or bundle folder).
        device: torch device for the model.

    Raises:
        SeriesError: no 4D CT in the folder, or several (on different frames of reference).
        OutputExistsError: one of the outputs (``AIP/``, ``MIP/``, ``MinIP/``, ``RS_ITV.dcm``,
            ``motion.csv``) exists in ``out_dir``; refused before anything is read or written.
    """
    from rtdeep.dicomrt.fourd import read_phase_volumes
    from rtdeep.dicomrt.rtstruct_writer import write_rtstruct
    from rtdeep.dicomrt.study import scan_study_folder

    study_dir, out_dir = Path(study_dir), Path(out_dir)
    ensure_new_paths(out_dir / name for name in (*PROJECTIONS, "RS_ITV.dcm", "motion.csv"))
    scan = scan_study_folder(study_dir)
    four_ds = scan.four_ds
    if not four_ds:
        raise SeriesError("no 4D CT here: it needs two or more CT series on one frame of reference and grid, each "
                          "with a respiratory phase ((0020,9245), (0020,9241), 'NN%' in SeriesDescription or "
                          "(0020,0100))", path=study_dir)
    if len(four_ds) > 1:
        frames = ", ".join(four_d.frame_of_reference_uid for four_d in four_ds)
        raise SeriesError(f"{len(four_ds)} 4D CTs here (frames of reference {frames}); give a folder with one",
                          path=study_dir)
    four_d = four_ds[0]
    phases = read_phase_volumes(four_d)
    notes: list[str] = []
    structures = _phase_structures(scan.infos, four_d, phases, notes)
    gtvs = _phase_gtvs(phases, structures, notes)
    organs: list[list[Roi]] = []
    for ct, rois in zip(phases, structures):
        if model is not None:
            from rtdeep.inference import segment_ct

            organs.append(segment_ct(ct.volume, model, device=device))
        else:
            organs.append([roi for roi in rois if roi.interpreted_type not in ("GTV", "CTV", "PTV")])

    first = phases[0]
    result_dirs = {kind: out_dir / kind for kind in PROJECTIONS}
    itv_path = None
    present = [gtv for gtv in gtvs if gtv is not None]
    motion = _motion(four_d, phases, gtvs, organs, model)
    projected = projections(ct.volume.array for ct in phases)
    with staged_output(out_dir) as stage:  # every file is moved in only when all are written
        aip_series = None
        for number, kind in enumerate(PROJECTIONS, start=101):
            series = write_projection(first.volume.with_array(projected[kind]), stage / kind, first.patient,
                                      kind=kind, n_phases=len(phases),
                                      frame_of_reference_uid=four_d.frame_of_reference_uid, series_number=number)
            if kind == "AIP":
                aip_series = series
        if present and aip_series is not None:
            itv = np.zeros(first.volume.shape, bool)
            for mask, _ in present:
                itv |= mask
            write_rtstruct(aip_series, [Roi("ITV", itv, 1, (255, 128, 0), "CTV", "AUTOMATIC")], stage / "RS_ITV.dcm",
                           label="ITV", series_description=f"ITV: union of {len(present)} phase GTVs")
            itv_path = out_dir / "RS_ITV.dcm"
        _write_motion_csv(motion, stage / "motion.csv")
    return FourDResult(out_dir, four_d, result_dirs, itv_path, out_dir / "motion.csv", motion, notes)


def _motion(four_d: FourDCt, phases: list[CtSeries], gtvs: list[tuple[np.ndarray, str] | None],
            organs: list[list[Roi]], model: str | None) -> dict[str, list[tuple[float, np.ndarray, float, str]]]:
    motion: dict[str, list[tuple[float, np.ndarray, float, str]]] = {}
    for phase, ct, gtv, rois in zip(four_d.phases, phases, gtvs, organs):
        entries = [("GTV", gtv[0], gtv[1])] if gtv is not None and gtv[0].any() else []
        source = f"model {model}" if model is not None else "structure set"
        entries += [(roi.name, roi.mask, source) for roi in rois if roi.mask.any()]
        for name, mask, how in entries:
            motion.setdefault(name, []).append(
                (phase.percent, _centroid(ct.volume, mask), float(mask.sum()) * ct.volume.voxel_volume_cc, how))
    return motion


def _write_motion_csv(motion: dict[str, list[tuple[float, np.ndarray, float, str]]], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MOTION_COLUMNS)
    for name, rows in motion.items():
        centroids = np.array([row[1] for row in rows])
        p2p = centroids.max(axis=0) - centroids.min(axis=0)
        for percent, centroid, volume_cc, source in rows:
            writer.writerow([name, source, f"{percent:g}", *(f"{v:.2f}" for v in centroid), f"{volume_cc:.2f}",
                             *(f"{v:.2f}" for v in p2p)])
    path.write_text(buffer.getvalue(), encoding="utf-8")
