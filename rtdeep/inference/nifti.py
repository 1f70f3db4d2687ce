"""Write AI contours as a NIfTI label map (value = ROI number) for tools that read NIfTI."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rtdeep.dicomrt.types import Roi
from rtdeep.fileio import atomic_write
from rtdeep.volume import Volume, ras_from_lps_affine

__all__ = ["write_label_map"]


def write_label_map(
    grid: Volume, rois: Sequence[Roi], path: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Write ``rois`` (bool masks on ``grid``) as a uint8 NIfTI label map; label = ``Roi.number``.

    NIfTI stores ``[i, j, k]`` with an index-to-RAS affine, so the array is transposed from
    ``[k, j, i]`` and the LPS affine has x and y negated. A later ROI wins an overlap.
    """
    import nibabel as nib

    labels = np.zeros(grid.shape, np.uint8)
    for index, roi in enumerate(rois, start=1):
        labels[roi.mask] = roi.number or index
    image = nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)), ras_from_lps_affine(grid.affine))
    image.header.set_xyzt_units("mm")

    def write(tmp: Path) -> None:
        nib.save(image, str(tmp) + ".nii.gz")
        os.replace(str(tmp) + ".nii.gz", tmp)

    return atomic_write(path, write, overwrite=overwrite)
