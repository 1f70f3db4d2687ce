"""Pictures of a pneumonitis prediction: the crop with the Grad-CAM map over it (PNG), and the
map and crop as NIfTI files that Slicer, ITK-SNAP or nibabel place on the CT."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rtdeep.crop_files import save_nifti
from rtdeep.fileio import atomic_write
from rtdeep.pneumonitis.predict import PneumonitisResult

__all__ = ["save_prediction_files", "save_saliency_png"]


def _peak_index(saliency: np.ndarray, mask: np.ndarray) -> tuple[int, int, int]:
    weights = np.where(mask, saliency, 0.0)
    if weights.max() <= 0:
        weights = mask.astype(np.float32)
    k, j, i = np.unravel_index(int(np.argmax(weights)), weights.shape)
    return int(k), int(j), int(i)


def save_saliency_png(result: PneumonitisResult, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Axial, coronal and sagittal planes of the crop through the saliency peak, Grad-CAM in colour.

    Axial is shown as in a radiology viewer (patient left on the image right, anterior up) for an
    axial head-first-supine CT, whose i axis runs to patient left and j to posterior.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    ct = result.crop.ct.array
    mask = result.crop.mask.array
    cam = result.saliency.array
    k, j, i = _peak_index(cam, mask)
    s_i, s_j, s_k = result.crop.ct.spacing_mm
    planes = [
        ("axial", ct[k], cam[k], mask[k], s_j / s_i),
        ("coronal", ct[:, j, :][::-1], cam[:, j, :][::-1], mask[:, j, :][::-1], s_k / s_i),
        ("sagittal", ct[:, :, i][::-1], cam[:, :, i][::-1], mask[:, :, i][::-1], s_k / s_j),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(11, 4))
    for axis, (title, image, heat, inside, aspect) in zip(axes, planes):
        axis.imshow(image, cmap="gray", vmin=-1000, vmax=200, aspect=aspect, interpolation="nearest")
        axis.imshow(np.ma.masked_where(~inside | (heat <= 0.05), heat), cmap="jet", vmin=0, vmax=1, alpha=0.5,
                    aspect=aspect, interpolation="bilinear")
        if inside.any() and not inside.all():
            axis.contour(inside.astype(float), levels=[0.5], colors="yellow", linewidths=0.6)
        axis.set_title(title)
        axis.axis("off")
    crop = result.crop_name if result.threshold_gy is None else f"lung and >= {result.threshold_gy:g} Gy"
    figure.suptitle(
        f"{result.positive_class}: CNN risk {result.risk_pct:.1f} % | LKB {100 * result.ntcp_lkb:.1f} % | "
        f"MLD {result.mld_gy:.1f} Gy\ncrop: {crop} ({result.crop_volume_cc:.0f} cc, yellow); "
        "colour: Grad-CAM (where the network looked)",
        fontsize=9,
    )
    figure.tight_layout()

    def write(tmp: Path) -> None:
        figure.savefig(tmp, format="png", dpi=110)

    try:
        return atomic_write(path, write, overwrite)
    finally:
        plt.close(figure)


def save_prediction_files(
    result: PneumonitisResult, out_dir: str | os.PathLike[str], stem: str = "pneumonitis", overwrite: bool = False
) -> dict[str, Path]:
    """Write ``<stem>_saliency.nii.gz``, ``<stem>_crop_ct.nii.gz``, ``<stem>_crop_mask.nii.gz`` and
    ``<stem>_saliency.png`` under ``out_dir`` (created if needed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "saliency_nifti": save_nifti(result.saliency, out / f"{stem}_saliency.nii.gz", overwrite=overwrite),
        "crop_ct_nifti": save_nifti(result.crop.ct, out / f"{stem}_crop_ct.nii.gz", overwrite=overwrite),
        "crop_mask_nifti": save_nifti(result.crop.mask, out / f"{stem}_crop_mask.nii.gz", overwrite=overwrite),
        "saliency_png": save_saliency_png(result, out / f"{stem}_saliency.png", overwrite=overwrite),
    }
