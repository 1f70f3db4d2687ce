"""rtdeep.metrics against SimpleITK and against shapes whose answer is known geometrically."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from rtdeep.dicomrt.types import Roi
from rtdeep.metrics import compare_structure_sets, extent_offsets_mm, segment_metrics
from rtdeep.names import pair_roi_names
from rtdeep.volume import Volume, affine_from_geometry

SPACING_IJK = (1.0, 1.25, 3.0)  # anisotropic on purpose: a swapped (i, j, k) order shows up
SHAPE_KJI = (36, 90, 100)


def sphere(centre_mm: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    """Bool mask [k, j, i] of voxel centres within ``radius_mm`` of ``centre_mm`` (i, j, k mm)."""
    k, j, i = np.indices(SHAPE_KJI, dtype=np.float64)
    x, y, z = i * SPACING_IJK[0], j * SPACING_IJK[1], k * SPACING_IJK[2]
    return (x - centre_mm[0]) ** 2 + (y - centre_mm[1]) ** 2 + (z - centre_mm[2]) ** 2 <= radius_mm**2


def sitk_image(mask: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(SPACING_IJK)  # SimpleITK spacing is (i, j, k) while its array is [k, j, i]
    return image


CENTRE = (50.0, 56.0, 54.0)


def test_concentric_spheres_distances_equal_radius_difference() -> None:
    inner, outer = sphere(CENTRE, 20.0), sphere(CENTRE, 26.0)
    values = segment_metrics(inner, outer, SPACING_IJK)
    # every surface point lies 6 mm from the other surface, up to one voxel of discretisation
    assert values["hd95_mm"] == pytest.approx(6.0, abs=1.6)
    assert values["msd_mm"] == pytest.approx(6.0, abs=1.0)
    assert values["surface_dice_2mm"] < 0.1
    expected_dice = 2 * 20.0**3 / (20.0**3 + 26.0**3)
    assert values["dice"] == pytest.approx(expected_dice, abs=0.02)
    assert values["volume_ref_cc"] == pytest.approx(4 / 3 * math.pi * 20.0**3 / 1000, rel=0.03)


def test_offset_along_slices_uses_slice_spacing() -> None:
    """A shift of 3 slices is 9 mm; had the spacing order been swapped it would read 3-3.75 mm."""
    reference = sphere(CENTRE, 18.0)
    shifted = np.roll(reference, 3, axis=0)
    values = segment_metrics(reference, shifted, SPACING_IJK)
    assert values["hd95_mm"] == pytest.approx(9.0, abs=0.5)
    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(sitk_image(reference), sitk_image(shifted))
    assert hausdorff.GetHausdorffDistance() == pytest.approx(9.0, abs=1e-6)
    assert values["hd95_mm"] <= hausdorff.GetHausdorffDistance() + 1e-6


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecation notice
@pytest.mark.parametrize("offset_mm", [(0.0, 0.0, 0.0), (4.0, 0.0, 0.0), (0.0, 5.0, 6.0), (7.0, -2.5, 3.0)])
def test_dice_and_hausdorff_agree_with_simpleitk(offset_mm: tuple[float, float, float]) -> None:
    reference = sphere(CENTRE, 18.0)
    test = sphere(tuple(c + o for c, o in zip(CENTRE, offset_mm)), 15.0)
    values = segment_metrics(reference, test, SPACING_IJK)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(sitk_image(reference), sitk_image(test))
    assert values["dice"] == pytest.approx(overlap.GetDiceCoefficient(), abs=1e-5)
    # MONAI's HD100 (percentile=None) would equal SimpleITK's exactly; HD95 sits at or below it
    import torch
    from monai.metrics import compute_hausdorff_distance

    hd100 = float(
        compute_hausdorff_distance(
            torch.from_numpy(test)[None, None].float(),
            torch.from_numpy(reference)[None, None].float(),
            include_background=True,
            spacing=list(SPACING_IJK[::-1]),
        )[0, 0]
    )
    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(sitk_image(reference), sitk_image(test))
    assert hd100 == pytest.approx(hausdorff.GetHausdorffDistance(), abs=1e-4)
    assert values["hd95_mm"] <= hd100 + 1e-6
    assert values["hd95_mm"] >= 0.5 * hd100


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("offset_mm", [(4.0, 0.0, 0.0), (7.0, -2.5, 3.0), (45.0, 0.0, 0.0)])
def test_surface_metrics_equal_monais_three_compute_functions(offset_mm: tuple[float, float, float]) -> None:
    """segment_metrics (SciPy, one pass of surface distances) gives the numbers of MONAI's
    compute_hausdorff_distance (95), compute_average_surface_distance (symmetric) and
    compute_surface_dice; the last offset cuts the test sphere at the array's edge."""
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    reference = sphere(CENTRE, 18.0)
    test = sphere(tuple(c + o for c, o in zip(CENTRE, offset_mm)), 15.0) | sphere((30.0, 30.0, 30.0), 6.0)
    values = segment_metrics(reference, test, SPACING_IJK)
    y_pred, y = (torch.from_numpy(m)[None, None].float() for m in (test, reference))
    spacing = list(SPACING_IJK[::-1])
    expected = {
        "hd95_mm": compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=spacing),
        "msd_mm": compute_average_surface_distance(y_pred, y, include_background=True, symmetric=True, spacing=spacing),
        "surface_dice_2mm": compute_surface_dice(y_pred, y, [2.0], include_background=True, spacing=spacing),
    }
    for key, value in expected.items():
        assert values[key] == pytest.approx(float(value[0, 0]), abs=1e-5), key
    assert values["surface_dice_2mm"] < 1.0 and values["hd95_mm"] > 2.0


def test_metrics_need_neither_torch_nor_monai() -> None:
    """The web server shows review metrics without importing torch (seconds of start-up)."""
    code = ("import sys, numpy as np; from rtdeep.metrics import segment_metrics; "
            "m = np.zeros((8, 8, 8), bool); m[2:6, 2:6, 2:6] = True; "
            "assert segment_metrics(m, np.roll(m, 1, 0), (1, 1, 1))['hd95_mm'] == 1.0; "
            "print(sorted(name for name in ('torch', 'monai') if name in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


@pytest.mark.parametrize("z_step_mm", [3.0, -3.0])  # slices stored head first or feet first
def test_extent_offsets_count_slices_beyond_or_short_of_the_reference(z_step_mm: float) -> None:
    affine = np.diag([1.0, 1.25, z_step_mm, 1.0])
    volume = Volume(np.zeros(SHAPE_KJI, np.float32), affine)
    reference = np.zeros(SHAPE_KJI, bool)
    reference[10:30, 40:50, 40:50] = True
    test = np.zeros(SHAPE_KJI, bool)
    test[12:33, 42:48, 42:48] = True  # two slices missing at k = 10-11, three added at k = 30-32
    inferior, superior = extent_offsets_mm(reference, test, volume)
    if z_step_mm > 0:  # k grows upwards: the missing slices are the reference's lowest
        assert (inferior, superior) == (-6.0, 9.0)
    else:  # k grows downwards: the same slices are now the reference's highest
        assert (inferior, superior) == (9.0, -6.0)
    assert all(math.isnan(v) for v in extent_offsets_mm(reference, np.zeros(SHAPE_KJI, bool), volume))
    with pytest.raises(ValueError, match="differ"):
        extent_offsets_mm(reference, test[:-1], volume)


def test_identical_masks_are_perfect() -> None:
    mask = sphere(CENTRE, 15.0)
    values = segment_metrics(mask, mask.copy(), SPACING_IJK)
    assert values["dice"] == pytest.approx(1.0)
    assert values["hd95_mm"] == 0.0 and values["msd_mm"] == 0.0
    assert values["surface_dice_2mm"] == pytest.approx(1.0)


def test_erosion_lowers_dice_and_surface_dice() -> None:
    from scipy.ndimage import binary_erosion

    mask = sphere(CENTRE, 18.0)
    eroded = binary_erosion(mask, iterations=2)
    values = segment_metrics(mask, eroded, SPACING_IJK)
    assert 0.3 < values["dice"] < 0.9
    assert values["volume_test_cc"] < values["volume_ref_cc"]
    assert values["hd95_mm"] >= 3.0


def test_empty_masks_never_raise() -> None:
    empty = np.zeros(SHAPE_KJI, bool)
    mask = sphere(CENTRE, 10.0)
    both = segment_metrics(empty, empty, SPACING_IJK)
    assert all(math.isnan(both[key]) for key in ("dice", "hd95_mm", "msd_mm", "surface_dice_2mm"))
    assert both["volume_ref_cc"] == 0.0
    for reference, test in ((mask, empty), (empty, mask)):
        one = segment_metrics(reference, test, SPACING_IJK)
        assert one["dice"] == 0.0 and one["surface_dice_2mm"] == 0.0
        assert math.isnan(one["hd95_mm"]) and math.isnan(one["msd_mm"])


def test_mismatched_shapes_raise() -> None:
    with pytest.raises(ValueError, match="shape"):
        segment_metrics(np.zeros((3, 4, 5), bool), np.zeros((3, 4, 6), bool), SPACING_IJK)


def test_pair_roi_names_is_case_insensitive() -> None:
    pairing = pair_roi_names(["Lung_L", "Heart", "SpinalCord"], ["HEART", "lung_l", "Esophagus"])
    assert pairing.pairs == {"Lung_L": "lung_l", "Heart": "HEART"} and pairing.ambiguous == {}


def test_pair_roi_names_uses_tg263_synonyms() -> None:
    pairing = pair_roi_names(["Lung_L", "Lung_R", "SpinalCord"], ["LUNG LT", "Right Lung", "Cord", "GTV"])
    assert pairing.pairs == {"Lung_L": "LUNG LT", "Lung_R": "Right Lung", "SpinalCord": "Cord"}


def test_ambiguous_names_are_not_paired_and_are_reported(caplog) -> None:
    pairing = pair_roi_names(["Lung_L", "Heart"], ["L Lung", "LUNG_LT", "Heart"])
    assert pairing.pairs == {"Heart": "Heart"}
    assert pairing.ambiguous == {"Lung_L": ("L Lung", "LUNG_LT")}
    assert pairing.warnings() == [
        "ROI 'Lung_L' not compared: it matches 'L Lung', 'LUNG_LT' of the test set; rename one of them"
    ]
    grid = Volume(np.zeros(SHAPE_KJI, np.float32), affine_from_geometry((0, 0, 0), SPACING_IJK))
    ball = sphere(CENTRE, 10.0)
    rows = compare_structure_sets([Roi("Lung_L", ball)], [Roi("L Lung", ball), Roi("LUNG_LT", ball)], grid)
    assert rows == [] and "ROI 'Lung_L' not compared" in caplog.text


def test_compare_structure_sets_rows() -> None:
    grid = Volume(np.zeros(SHAPE_KJI, np.float32), affine_from_geometry((0, 0, 0), SPACING_IJK))
    heart = sphere(CENTRE, 15.0)
    reference = [Roi("Heart", heart), Roi("Lung_L", sphere((20.0, 20.0, 20.0), 8.0))]
    test = [Roi("heart", np.roll(heart, 2, axis=2), generation_algorithm="AUTOMATIC")]
    rows = compare_structure_sets(reference, test, grid)
    assert [row["roi_name"] for row in rows] == ["Heart"]
    assert rows[0]["test_roi"] == "heart"
    assert 0.8 < rows[0]["dice"] < 1.0
    assert rows[0]["volume_ratio"] == pytest.approx(1.0)
    rows = compare_structure_sets(reference, test, grid, roi_names=["Heart", "lung_l"])
    assert rows[1]["roi_name"] == "Lung_L" and rows[1]["note"] == "not in test"
    assert rows[1]["dice"] == 0.0
