"""Shared pytest fixtures: paths to the real DICOM files beside the project, temporary outputs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from rtdeep.volume import Volume

os.environ.setdefault("RTDEEP_NO_PROGRESS", "1")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(os.environ.get("RTDEEP_SHARED_DIR", PROJECT_ROOT.parent / "shared"))
REAL_DICOM_DIR = SHARED_DIR / "data" / "real-dicom"

# Segmentation bundles not shipped (models.json lists them under "not_shipped" with the reason): a
# network with an organ's median held-out Dice below its issue-9 floor (train_all package and
# enforce-floors decide: since 6 December 2026 the four head-and-neck networks on the 2.5 mm grid,
# whose parotids that grid caps, and the thorax 2.5D GAN, esophagus 0.798), or an ensemble that
# its own single member beats, or a fine-grid 3D network not trained yet (models.json says which and
# how to train it). Every other site x architecture must be shipped.
NOT_SHIPPED: frozenset[str] = frozenset({
    "headneck_ensemble", "headneck_unet3d", "headneck_unet25d", "headneck_gan3d", "headneck_gan25d",
    "thorax_unet3d_fine", "thorax_gan3d_fine",
})


#: ensemble bundles (no weights: their members' probabilities averaged) that must be in Resources/Models
SHIPPED_ENSEMBLES: tuple[str, ...] = ("thorax_ensemble",)


def shipped_network_bundles() -> list[str]:
    """``<site>_<arch>`` of every segmentation network bundle that must be in Resources/Models."""
    from rtdeep.models.architectures import ARCHITECTURES
    from rtdeep.sites import SITES

    return [f"{site}_{arch}" for site in SITES for arch in ARCHITECTURES if f"{site}_{arch}" not in NOT_SHIPPED]


def shipped_segmentation_bundles() -> list[str]:
    """Every segmentation bundle that must be in Resources/Models: the networks, then the ensembles."""
    return [*shipped_network_bundles(), *SHIPPED_ENSEMBLES]


def stored_as(volume: Volume, reversed_axes: tuple[int, ...] = (), order: tuple[int, int, int] = (0, 1, 2)) -> Volume:
    """``volume`` (head-first supine) as another scanner would store it: array axes reversed
    (``(2,)``: feet first, i runs to the patient's right; ``(1, 2)``: prone), then transposed to
    ``order``; every voxel keeps its LPS position."""
    array, affine = volume.array, volume.affine.copy()
    for axis in reversed_axes:
        affine[:3, 3] += affine[:3, 2 - axis] * (array.shape[axis] - 1)
        affine[:3, 2 - axis] = -affine[:3, 2 - axis]
        array = np.flip(array, axis)
    transposed = np.eye(4)
    transposed[:3, 3] = affine[:3, 3]
    for new_axis, old_axis in enumerate(order):  # array axes; index axis 2 - axis
        transposed[:3, 2 - new_axis] = affine[:3, 2 - old_axis]
    return Volume(np.ascontiguousarray(np.transpose(array, order)), transposed)


@pytest.fixture(scope="session")
def real_dicom_dir() -> Path:
    """../shared/data/real-dicom: files written by other systems (MIM, GE, oblique CT)."""
    if not REAL_DICOM_DIR.is_dir():
        pytest.fail(f"real DICOM test data not found at {REAL_DICOM_DIR} (set RTDEEP_SHARED_DIR)")
    return REAL_DICOM_DIR


def hash_tree(root: Path) -> dict[str, str]:
    """SHA256 of every file under ``root``: tests compare before and after to prove inputs untouched."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
