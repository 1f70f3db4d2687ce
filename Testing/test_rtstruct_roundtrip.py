"""Round trip mask -> RTSTRUCT -> mask through rtdeep's writer and reader, on an axial and an
oblique CT grid, for shapes with holes and islands, a one-voxel line and a sphere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import hash_tree
from scipy.spatial.transform import Rotation

from rtdeep.dicomrt.contours import mask_to_contours, slice_polygons
from rtdeep.dicomrt.ct_reader import read_ct_series
from rtdeep.dicomrt.ct_writer import write_ct_series
from rtdeep.dicomrt.rasterize import rasterize_slice
from rtdeep.dicomrt.rtstruct_reader import read_rtstruct
from rtdeep.dicomrt.rtstruct_writer import write_rtstruct
from rtdeep.dicomrt.types import PatientInfo, Roi
from rtdeep.dicomrt.validate import check_rtstruct
from rtdeep.volume import Volume, affine_from_geometry

SHAPE = (14, 72, 80)


def _shapes() -> dict[str, np.ndarray]:
    k, j, i = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    radius = np.hypot(j - 36, i - 40)
    ring = (radius <= 20) & (radius >= 9) & (k >= 2) & (k <= 11)
    islands = (((j - 15) ** 2 + (i - 15) ** 2 <= 25) | ((j - 55) ** 2 + (i - 62) ** 2 <= 36)) & (k >= 3) & (k <= 9)
    line = (j == 65) & (i >= 10) & (i <= 70) & (k >= 4) & (k <= 8)
    sphere = (k - 7) ** 2 * 9 + (j - 36) ** 2 + (i - 40) ** 2 <= 7.5**2
    return {"Ring": ring, "Islands": islands, "Line": line, "Sphere": sphere}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("oblique", [False, True], ids=["axial", "oblique"])
def test_mask_rtstruct_mask_round_trip(tmp_path: Path, oblique: bool) -> None:
    direction = Rotation.from_euler("zyx", [25, 10, -15], degrees=True).as_matrix() if oblique else None
    affine = affine_from_geometry((-150.3, -120.7, 33.25), (0.977, 0.977, 3.0), direction)
    hu = Volume(np.zeros(SHAPE, np.float32), affine)
    written = write_ct_series(hu, tmp_path / "CT", PatientInfo(patient_id="RT1", patient_name="Round^Trip"))
    ct = read_ct_series(tmp_path / "CT")
    shapes = _shapes()
    rois = [Roi(name, mask, color_rgb=(255, 255, 0)) for name, mask in shapes.items()]

    before = hash_tree(tmp_path / "CT")
    rs_path = write_rtstruct(ct, rois, tmp_path / "RS.dcm")
    structure_set = read_rtstruct(rs_path, ct)
    assert hash_tree(tmp_path / "CT") == before
    assert ct.sop_instance_uids == written.sop_instance_uids

    assert structure_set.names() == list(shapes)
    for name, mask in shapes.items():
        back = structure_set[name].mask
        assert _dice(back, mask) >= 0.98, name
        assert np.array_equal(back, mask), f"{name}: {np.sum(back != mask)} voxels differ"
    ring = structure_set["Ring"].mask
    assert not ring[5, 36, 40], "the ring's hole was filled"
    assert check_rtstruct(rs_path, ct) == []


def test_polygons_rasterise_back_exactly_for_random_masks() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        mask = rng.random((23, 31)) < 0.45
        polygons = slice_polygons(mask)
        assert np.array_equal(rasterize_slice([p[:, ::-1] for p in polygons], *mask.shape), mask)


def test_contours_are_simplified_and_lie_in_their_slice() -> None:
    mask = np.zeros((3, 40, 40), bool)
    mask[1, 5:35, 10:30] = True
    affine = affine_from_geometry((0, 0, 0), (1, 1, 2))
    contours = mask_to_contours(mask, affine)
    assert len(contours) == 1 and contours[0].k == 1
    assert len(contours[0].points_lps) == 8  # a rectangle with its corners cut
    assert np.all(contours[0].points_lps[:, 2] == 2.0)


def test_contour_longer_than_64_kib_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    mask = np.zeros((1, 640, 400), bool)
    for j in range(20, 620):
        start = rng.integers(5, 150)
        mask[0, j, start: rng.integers(250, 395)] = True
    hu = Volume(np.zeros(mask.shape, np.float32), affine_from_geometry((-249.123, -249.321, -100.0), (1.0, 1.0, 2.0)))
    written = write_ct_series(hu, tmp_path / "CT", PatientInfo(patient_id="BIG"))
    rs_path = write_rtstruct(written, [Roi("Jagged", mask)], tmp_path / "RS.dcm")
    ct = read_ct_series(tmp_path / "CT")
    back = read_rtstruct(rs_path, ct)["Jagged"].mask
    raw = pydicom.dcmread(rs_path).ROIContourSequence[0].ContourSequence[0].get_item(0x30060050).value
    assert len(raw) > 65536
    assert np.array_equal(back, mask)
