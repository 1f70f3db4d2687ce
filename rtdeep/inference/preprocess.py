"""What a CT goes through before a network: crop to the body, window the HU.

Resampling to the model grid and back is :mod:`rtdeep.resample`. Arrays are ``[k, j, i]``; affines
map (i, j, k) to LPS mm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rtdeep.volume import Volume

__all__ = ["BODY_THRESHOLD_HU", "THIN_SHEET_MM", "body_box", "body_voxels", "crop_volume", "open_thin_sheets",
           "patient_projection", "rows_columns_box", "tissue_level", "window_hu"]

#: HU above which a voxel is the patient or the couch, not air: where :func:`body_box` crops and
#: where 3D windows go (:func:`tissue_level`)
BODY_THRESHOLD_HU = -500.0

#: Radius (mm) of the disk that opens the body's axial projection in :func:`body_box`: sheets
#: thinner than about twice this are not the patient. A couch top's carbon-fibre skins (1-3 mm over
#: foam below the body threshold), a thermoplastic mask, a vacuum bag's film; the patient's arms,
#: nose and fingers are thicker.
THIN_SHEET_MM = 4.0


def window_hu(hu: np.ndarray, window: Sequence[float]) -> np.ndarray:
    """Map HU linearly so ``window[0]`` -> 0 and ``window[1]`` -> 1, clipped; float32."""
    low, high = float(window[0]), float(window[1])
    return np.clip((np.asarray(hu, dtype=np.float32) - low) / (high - low), 0.0, 1.0)


def tissue_level(window: Sequence[float]) -> float:
    """:data:`BODY_THRESHOLD_HU` after :func:`window_hu` with ``window`` (0 when the window starts
    above it: then every value above the window's floor is tissue)."""
    return float(window_hu(np.float32(BODY_THRESHOLD_HU), window))


def crop_volume(volume: Volume, box_kji: tuple[slice, slice, slice]) -> Volume:
    """The part of ``volume`` inside ``box_kji`` (array order), with its affine shifted to match."""
    start_ijk = np.array([box_kji[2].start or 0, box_kji[1].start or 0, box_kji[0].start or 0], float)
    affine = volume.affine.copy()
    affine[:3, 3] = volume.index_to_lps(start_ijk)
    return Volume(volume.array[box_kji], affine)


def rows_columns_box(mask: np.ndarray, margin_rows: int, margin_columns: int) -> tuple[slice, slice, slice] | None:
    """Bounding box ``[k, j, i]`` of the true voxels of ``mask`` in rows and columns, plus the margins
    (clipped at the array's edge); slices are kept whole. None when no voxel is true."""
    rows = np.flatnonzero(mask.any(axis=(0, 2)))
    cols = np.flatnonzero(mask.any(axis=(0, 1)))
    if rows.size == 0 or cols.size == 0:
        return None
    return (
        slice(0, mask.shape[0]),
        slice(max(int(rows[0]) - margin_rows, 0), min(int(rows[-1]) + margin_rows + 1, mask.shape[1])),
        slice(max(int(cols[0]) - margin_columns, 0), min(int(cols[-1]) + margin_columns + 1, mask.shape[2])),
    )


def open_thin_sheets(mask: np.ndarray, radius_rows: float, radius_columns: float) -> np.ndarray:
    """``mask`` (2D, ``[j, i]``) opened with an ellipse of these radii (pixels): what is thinner than
    the ellipse (a couch top's skins, a mask's shell) drops out, the rest keeps its outline."""
    from scipy import ndimage

    half_rows, half_columns = int(radius_rows), int(radius_columns)
    rows, columns = np.mgrid[-half_rows:half_rows + 1, -half_columns:half_columns + 1]
    ellipse = (rows / max(radius_rows, 1e-6)) ** 2 + (columns / max(radius_columns, 1e-6)) ** 2 <= 1.0
    return ndimage.binary_opening(mask, structure=ellipse)


def patient_projection(tissue: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    """The patient in ``tissue``, a 2D projection along the slices of the voxels above
    :data:`BODY_THRESHOLD_HU` with pixel sizes ``spacing_mm`` (its two axes, in their order): the
    projection opened by :data:`THIN_SHEET_MM` (:func:`open_thin_sheets`), or the projection itself
    when the opening leaves nothing (an object thinner than the sheets, as in a test)."""
    patient = open_thin_sheets(tissue, THIN_SHEET_MM / float(spacing_mm[0]), THIN_SHEET_MM / float(spacing_mm[1]))
    return patient if patient.any() else tissue


def body_box(ct: Volume, margin: int = 4) -> tuple[slice, slice, slice]:
    """Bounding box ``[k, j, i]`` of the patient (:func:`patient_projection` of the voxels above
    :data:`BODY_THRESHOLD_HU`), plus a margin in rows and columns; slices are kept whole.

    A couch top is as wide as the field of view but thin above the threshold; kept, it would make
    every network process its width (a head is about 200 mm wide, a couch top 500 mm). Returns the
    full grid when nothing is above the threshold.
    """
    hu = np.asarray(ct.array)
    spacing_i, spacing_j = (float(v) for v in ct.spacing_mm[:2])
    patient = patient_projection((hu > BODY_THRESHOLD_HU).any(axis=0), (spacing_j, spacing_i))
    box = rows_columns_box(patient[None], margin, margin)
    if box is None:
        return (slice(0, hu.shape[0]), slice(0, hu.shape[1]), slice(0, hu.shape[2]))
    return (slice(0, hu.shape[0]), box[1], box[2])


def body_voxels(image):  # torch.Tensor -> torch.Tensor
    """:func:`body_box` for MONAI's ``CropForegroundd`` (``select_fn`` in a bundle's ``inference.json``):
    a channel-first CT ``[c, i, j, k]`` in HU (a ``MetaTensor`` with ``pixdim``, as ``LoadImaged``
    gives a NIfTI) -> a bool mask whose bounding box is the patient's rows and columns on every slice."""
    import torch

    if not hasattr(image, "pixdim"):
        raise ValueError("body_voxels needs the image's voxel sizes: a MONAI MetaTensor from LoadImaged")
    hu = image.detach().cpu().numpy()
    spacing = [float(v) for v in np.asarray(image.pixdim)[:2]]
    patient = patient_projection((hu > BODY_THRESHOLD_HU).any(axis=(0, 3)), spacing)  # [i, j]
    return torch.from_numpy(np.broadcast_to(patient[None, :, :, None], hu.shape).copy())
