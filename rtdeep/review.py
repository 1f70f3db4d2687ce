"""Review pictures: reference contours (yellow) against a method's contours (red) on the CT.

As in the talk's figures: one axial slice through each organ's centroid, zoomed to the organ, plus
one coronal slice through the centre of all reference organs. Drawn with matplotlib's Agg canvas
(no display, no pyplot state), written atomically as PNG; nothing is overwritten unless asked.

Display convention: axial images are viewed from the feet (patient's right on the viewer's left,
anterior up) and coronal images from the front (superior up), whatever the CT's direction
cosines, by placing each voxel at its LPS position.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rtdeep.dicomrt.types import Roi
from rtdeep.fileio import atomic_write
from rtdeep.volume import Volume

__all__ = [
    "REFERENCE_COLOUR",
    "TEST_COLOUR",
    "format_table",
    "overlay_pngs",
    "safe_file_name",
    "write_metrics_csv",
]

REFERENCE_COLOUR = "#ffff00"  # yellow, as in the talk
TEST_COLOUR = "#ff0000"  # red
_WINDOW_HU = (-700.0, 500.0)  # one window that shows lungs, soft tissue and bone together


def write_metrics_csv(
    rows: Sequence[Mapping[str, object]], path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write :func:`rtdeep.metrics.compare_structure_sets` rows as CSV (columns
    :data:`rtdeep.metrics.METRIC_COLUMNS`; NaN written as ``nan``), atomically."""
    import csv

    from rtdeep.metrics import METRIC_COLUMNS

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({key: _csv_value(row.get(key, "")) for key in METRIC_COLUMNS})

    return atomic_write(path, write, overwrite=overwrite)


def _csv_value(value: object) -> object:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return value


def format_table(rows: Sequence[Mapping[str, object]], *, tolerance_mm: float = 2.0) -> str:
    """The rows as a fixed-width text table (Dice, HD95 mm, MSD mm, surface Dice, volumes cc)."""
    header = (
        f"{'ROI':<16} {'Dice':>6} {'HD95 mm':>8} {'MSD mm':>7} {f'sDice@{tolerance_mm:g}mm':>12} "
        f"{'ref cc':>8} {'test cc':>8} {'ratio':>6}  note"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['roi_name']!s:<16} {_fmt(row['dice'], 3):>6} {_fmt(row['hd95_mm'], 1):>8} "
            f"{_fmt(row['msd_mm'], 2):>7} {_fmt(row['surface_dice_2mm'], 3):>12} {_fmt(row['volume_ref_cc'], 1):>8} "
            f"{_fmt(row['volume_test_cc'], 1):>8} {_fmt(row['volume_ratio'], 2):>6}  {row.get('note', '')}"
        )
    return "\n".join(lines)


def _fmt(value: object, digits: int) -> str:
    if not isinstance(value, (int, float)):
        return str(value)
    return "nan" if math.isnan(float(value)) else f"{float(value):.{digits}f}"


def safe_file_name(name: str) -> str:
    """``name`` reduced to letters, digits, ``-`` and ``_`` (ROI names may hold spaces or slashes)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "roi"


def _centroid_index(mask: np.ndarray) -> np.ndarray:
    """Centroid ``(k, j, i)`` of a mask, rounded to the nearest voxel that lies in the mask."""
    points = np.argwhere(mask)
    centre = points.mean(axis=0)
    return points[np.argmin(((points - centre) ** 2).sum(axis=1))]


def _axial_plane(ct: Volume, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS x and y (mm) of every voxel centre of slice ``k``, shaped ``[j, i]``."""
    n_i, n_j, _ = ct.size_ijk
    j, i = np.meshgrid(np.arange(n_j), np.arange(n_i), indexing="ij")
    lps = ct.index_to_lps(np.stack([i, j, np.full_like(i, k)], axis=-1))
    return lps[..., 0], lps[..., 1], lps[..., 2]


def _coronal_plane(ct: Volume, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS x, y and z (mm) of every voxel centre of row ``j``, shaped ``[k, i]``."""
    n_i, _, n_k = ct.size_ijk
    k, i = np.meshgrid(np.arange(n_k), np.arange(n_i), indexing="ij")
    lps = ct.index_to_lps(np.stack([i, np.full_like(i, j), k], axis=-1))
    return lps[..., 0], lps[..., 1], lps[..., 2]


def _draw(
    axes,
    image: np.ndarray,
    horizontal_mm: np.ndarray,
    vertical_mm: np.ndarray,
    contours: Sequence[tuple[np.ndarray, str]],
) -> None:
    """Draw a CT plane and mask outlines at the voxel centres' positions (mm)."""
    axes.pcolormesh(
        horizontal_mm, vertical_mm, np.clip(image, *_WINDOW_HU), cmap="gray", shading="nearest",
        vmin=_WINDOW_HU[0], vmax=_WINDOW_HU[1], rasterized=True,
    )
    for mask, colour in contours:
        if mask.any() and not mask.all():
            axes.contour(horizontal_mm, vertical_mm, mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.4)
    axes.set_aspect("equal")
    axes.set_facecolor("black")


def _zoom(axes, horizontal_mm: np.ndarray, vertical_mm: np.ndarray, masks: Sequence[np.ndarray], margin_mm: float) -> None:
    union = np.zeros(horizontal_mm.shape, bool)
    for mask in masks:
        union |= mask
    if not union.any():
        return
    axes.set_xlim(horizontal_mm[union].min() - margin_mm, horizontal_mm[union].max() + margin_mm)
    axes.set_ylim(vertical_mm[union].min() - margin_mm, vertical_mm[union].max() + margin_mm)


def _legend_and_title(axes, title: str) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=REFERENCE_COLOUR, label="reference"),
        Line2D([], [], color=TEST_COLOUR, label="test (AI)"),
    ]
    axes.legend(handles=handles, loc="lower right", fontsize=7, facecolor="black", labelcolor="white", framealpha=0.6)
    axes.set_title(title, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])


def _save(figure, path: Path, overwrite: bool) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110), overwrite=overwrite)


def overlay_pngs(
    ct: Volume,
    reference: Sequence[Roi],
    test: Sequence[Roi],
    out_dir: str | os.PathLike[str],
    pairs: Mapping[str, str],
    *,
    captions: Mapping[str, str] | None = None,
    zoom_margin_mm: float = 40.0,
    overwrite: bool = False,
) -> list[Path]:
    """Write the review overlays of ``test`` against ``reference`` as PNG files.

    Args:
        ct: the CT (HU ``[k, j, i]``, LPS affine) both structure sets lie on.
        reference: reference ROIs (drawn yellow).
        test: ROIs to review (drawn red).
        out_dir: folder for the PNGs (created if needed).
        pairs: ``{reference ROI name: test ROI name}`` (see :func:`rtdeep.names.pair_roi_names`);
            a reference ROI missing from it is drawn without a test contour.
        captions: optional text per reference ROI name (e.g. "Dice 0.91, HD95 3.2 mm").
        zoom_margin_mm: margin around the organ in the axial views.
        overwrite: replace existing PNGs.

    Returns:
        The PNG paths: ``axial_<roi>.png`` per reference ROI with voxels, then ``coronal.png``.
    """
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    test_by_name = {roi.name: roi for roi in test}
    captions = dict(captions or {})
    written: list[Path] = []
    reference = [roi for roi in reference if roi.mask.any()]
    for roi in reference:
        partner = test_by_name.get(pairs.get(roi.name, ""))
        test_mask = partner.mask if partner is not None else np.zeros(ct.shape, bool)
        k = int(_centroid_index(roi.mask)[0])
        x, y, _ = _axial_plane(ct, k)
        figure = Figure(figsize=(4.2, 4.4))
        axes = figure.add_subplot()
        _draw(axes, ct.array[k], x, y, [(roi.mask[k], REFERENCE_COLOUR), (test_mask[k], TEST_COLOUR)])
        _zoom(axes, x, y, [roi.mask[k], test_mask[k]], zoom_margin_mm)
        axes.invert_yaxis()  # LPS y grows posterior: anterior at the top
        caption = captions.get(roi.name, "")
        _legend_and_title(axes, f"{roi.name} axial (slice {k})" + (f"\n{caption}" if caption else ""))
        figure.tight_layout()
        written.append(_save(figure, out_dir / f"axial_{safe_file_name(roi.name)}.png", overwrite))

    if reference:
        union = np.zeros(ct.shape, bool)
        for roi in reference:
            union |= roi.mask
        j = int(_centroid_index(union)[1])
        x, _, z = _coronal_plane(ct, j)
        figure = Figure(figsize=(5.5, 5.0))
        axes = figure.add_subplot()
        contours = []
        for roi in reference:
            contours.append((roi.mask[:, j, :], REFERENCE_COLOUR))
            partner = test_by_name.get(pairs.get(roi.name, ""))
            if partner is not None:
                contours.append((partner.mask[:, j, :], TEST_COLOUR))
        _draw(axes, ct.array[:, j, :], x, z, contours)
        _legend_and_title(axes, f"coronal (row {j}): all organs")
        figure.tight_layout()
        written.append(_save(figure, out_dir / "coronal.png", overwrite))
    return written
