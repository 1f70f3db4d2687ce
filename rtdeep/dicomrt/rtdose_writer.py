"""Write a dose :class:`~rtdeep.volume.Volume` in Gy as a multi-frame RT Dose object.

The dose keeps its own grid (often coarser than the CT): ``ImagePositionPatient`` is the first
frame's voxel (0, 0, 0), ``GridFrameOffsetVector`` the frame offsets along the slice normal relative
to it (first 0, increasing). Pixels are unsigned 32-bit with ``DoseGridScaling`` chosen so the
maximum dose maps near 2^31 (a reader that wrongly reads them as signed still gets them right).
DoseUnits GY, DoseType PHYSICAL, DoseSummationType PLAN; frame of reference and study are the CT's.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from rtdeep.dicomrt._writer_common import (
    format_ds,
    new_rt_object,
    save_dataset,
)
from rtdeep.dicomrt.ct_writer import slice_geometry
from rtdeep.dicomrt.types import CtSeries
from rtdeep.dicomrt.uids import RT_DOSE_STORAGE, RT_PLAN_STORAGE
from rtdeep.errors import DoseError
from rtdeep.fileio import ensure_new_path
from rtdeep.volume import Volume

__all__ = ["dose_grid_scaling", "write_rtdose"]

log = logging.getLogger(__name__)
_MAX_STORED = 2**31 - 1


def dose_grid_scaling(max_dose_gy: float) -> float:
    """DoseGridScaling (Gy per stored unit) as it will read back from its DS string."""
    if max_dose_gy <= 0:
        return 1e-6
    return float(format_ds(max_dose_gy / _MAX_STORED, 8))


def write_rtdose(
    dose_gy: Volume,
    ct: CtSeries,
    out_path: str | os.PathLike[str],
    *,
    referenced_plan_uid: str = "",
    uid_seed: object | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``dose_gy`` as an RT Dose in the CT's frame of reference and study.

    Args:
        dose_gy: physical dose in Gy ``[k, j, i]`` on its own grid (index -> LPS mm affine),
            e.g. 2.5 mm axis-aligned; negative values are clipped to 0 with a warning.
        ct: the planning CT (study, patient and frame of reference are copied from it).
        out_path: the new file.
        referenced_plan_uid: SOPInstanceUID of the RT Plan; adds ReferencedRTPlanSequence. Give it:
            with DoseSummationType PLAN the standard requires that sequence (dciodvfy reports its
            absence as an error), so a dose written without a plan is for internal use only.
        uid_seed: when given, UIDs and dates are deterministic.
        overwrite: replace an existing file (default: refuse).

    Returns:
        The written path.

    Raises:
        DoseError: non-finite dose values.
        GeometryError: a grid that cannot be stored as parallel frames.
    """
    out_path = ensure_new_path(out_path, overwrite)
    volume, row_dir, col_dir = slice_geometry(dose_gy)
    values = np.asarray(volume.array, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise DoseError("dose contains NaN or infinite values", path=out_path)
    if values.size and values.min() < 0:
        log.warning("negative dose values (min %.3g Gy) clipped to 0 in %s", values.min(), out_path)
        values = np.clip(values, 0, None)
    scaling = dose_grid_scaling(float(values.max()) if values.size else 0.0)
    stored = np.clip(np.rint(values / scaling), 0, 2**32 - 1).astype("<u4")

    dataset, date, time = new_rt_object(RT_DOSE_STORAGE, "RTDOSE", ct, uid_seed, implicit_vr=True)
    dataset.InstanceNumber = 1
    dataset.ContentDate = date
    dataset.ContentTime = time

    n_frames, n_rows, n_cols = volume.shape
    spacing = volume.spacing_mm
    dataset.ImagePositionPatient = [format_ds(v) for v in volume.origin_lps]
    dataset.ImageOrientationPatient = [format_ds(v) for v in (*row_dir, *col_dir)]
    dataset.PixelSpacing = [format_ds(spacing[1]), format_ds(spacing[0])]
    dataset.SliceThickness = format_ds(spacing[2]) if n_frames > 1 else ""
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows = n_rows
    dataset.Columns = n_cols
    dataset.BitsAllocated = 32
    dataset.BitsStored = 32
    dataset.HighBit = 31
    dataset.PixelRepresentation = 0
    dataset.NumberOfFrames = n_frames
    dataset.FrameIncrementPointer = Tag("GridFrameOffsetVector")
    dataset.GridFrameOffsetVector = [format_ds(k * spacing[2]) for k in range(n_frames)]
    dataset.DoseUnits = "GY"
    dataset.DoseType = "PHYSICAL"
    dataset.DoseSummationType = "PLAN"
    dataset.DoseGridScaling = format_ds(scaling, 8)
    dataset.TissueHeterogeneityCorrection = "IMAGE"
    if not referenced_plan_uid:
        log.info("%s: RT Dose written without ReferencedRTPlanSequence (no plan UID given)", out_path)
    else:
        plan = Dataset()
        plan.ReferencedSOPClassUID = RT_PLAN_STORAGE
        plan.ReferencedSOPInstanceUID = referenced_plan_uid
        dataset.ReferencedRTPlanSequence = [plan]
    dataset.PixelData = stored.tobytes()
    return save_dataset(dataset, out_path, overwrite=overwrite)
