"""Crops (rtdeep.crop), TG-263 name matching (rtdeep.names) and crop files (rtdeep.crop_files)."""

from __future__ import annotations

import numpy as np
import pytest

from rtdeep.crop import PRESETS, CropSpec, crop_study, get_preset, resample_fixed
from rtdeep.dicomrt.types import DoseGrid, Roi, StructureSet
from rtdeep.errors import CropError, DoseError, StructureError
from rtdeep.fileio import OutputExistsError
from rtdeep.names import canonical_key, match_roi_name, resolve_roi_names
from rtdeep.volume import Volume, affine_from_geometry

# ---------------------------------------------------------------- a small synthetic thorax


def _ellipsoid(shape, centre_kji, radii_kji):
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    c, r = centre_kji, radii_kji
    return ((k - c[0]) / r[0]) ** 2 + ((j - c[1]) / r[1]) ** 2 + ((i - c[2]) / r[2]) ** 2 <= 1.0


@pytest.fixture(scope="module")
def thorax():
    """CT 30x48x64 (3 mm slices, 2 mm pixels, origin off zero), lungs, GTV, body and a dose that
    rises 1 Gy per column (i): dose >= 20 Gy is exactly i >= 20."""
    shape = (30, 48, 64)
    affine = affine_from_geometry((-60.0, -40.0, 100.0), (2.0, 2.0, 3.0))
    body = _ellipsoid(shape, (15, 24, 32), (14, 22, 30))
    hu = np.where(body, 40.0, -1000.0).astype(np.float32)
    lung_r = _ellipsoid(shape, (15, 24, 18), (10, 14, 10))  # patient's right = low i (LPS x)
    lung_l = _ellipsoid(shape, (15, 24, 46), (10, 14, 10))
    hu[lung_r | lung_l] = -800.0
    hu += np.arange(shape[2], dtype=np.float32)[None, None, :] * 0.01  # makes every column distinct
    gtv = _ellipsoid(shape, (15, 24, 46), (3, 4, 3))
    dose = np.broadcast_to(np.arange(shape[2], dtype=np.float32), shape).copy()
    ct = Volume(hu, affine)
    structures = {"LUNG_LT": lung_l, "Lung R": lung_r, "GTVp": gtv, "BODY": body}
    return ct, structures, Volume(dose, affine)


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("spelling", ["Lung L", "L_Lung", "LUNG_LT", "lung_l", "Left Lung", "LungLeft"])
def test_tg263_lung_synonyms_share_a_key(spelling):
    assert canonical_key(spelling) == canonical_key("Lung_L") == "lung_L"


def test_synonym_keys_keep_organs_and_sides_apart():
    keys = {canonical_key(n) for n in ["Lung_L", "Lung_R", "Lungs", "Heart", "SpinalCord", "Esophagus"]}
    assert len(keys) == 6
    assert canonical_key("Spinal Cord") == canonical_key("SpinalCord") == canonical_key("Cord")
    assert canonical_key("Oesophagus") == canonical_key("Esophagus")
    assert canonical_key("BODY") == canonical_key("External") == canonical_key("Skin")
    assert canonical_key("Lung_Total") == canonical_key("Lungs") == canonical_key("Both Lungs")
    assert canonical_key("Parotid Gland Left") == canonical_key("Parotid_L")


def test_match_prefers_exact_then_case_then_synonym():
    assert match_roi_name("Lung_L", ["lung_l", "Lung_L"]).how == "exact"
    match = match_roi_name("Lung_L", ["LUNG_L", "LUNG_LT"])
    assert (match.used, match.how) == ("LUNG_L", "case")
    match = match_roi_name("Lung_L", ["LUNG_LT", "LUNG_RT", "GTV"])
    assert (match.used, match.how) == ("LUNG_LT", "synonym")
    assert "LUNG_LT" in match.describe() and "TG-263" in match.describe()


def test_missing_name_lists_available_names():
    with pytest.raises(StructureError) as error:
        match_roi_name("Heart", ["Lung_L", "Lung_R", "GTV"])
    message = str(error.value)
    assert "Heart" in message and "'Lung_L'" in message and "'GTV'" in message


def test_ambiguous_synonym_is_refused():
    with pytest.raises(StructureError, match="ambiguous"):
        match_roi_name("Lung_L", ["L Lung", "LUNG_LT"])


def test_patterns_match_many_or_none():
    matches = resolve_roi_names(["GTV*"], ["GTVp", "gtv_n1", "Lung_L"])
    assert [m.used for m in matches] == ["GTVp", "gtv_n1"]
    assert resolve_roi_names(["GTV*"], ["Lung_L"]) == []


# ---------------------------------------------------------------- crops


def test_lung_dose20_mask_is_lungs_minus_gtv_at_or_above_threshold(thorax):
    ct, structures, dose = thorax
    crop = crop_study(ct, structures, dose, "lung-dose20")
    expected = (structures["LUNG_LT"] | structures["Lung R"]) & ~structures["GTVp"] & (dose.array >= 20)
    (k0, k1), (j0, j1), (i0, i1) = crop.bbox_index
    assert crop.mask.array.sum() == expected.sum()
    assert np.array_equal(crop.mask.array, expected[k0:k1, j0:j1, i0:i1])
    assert i0 == 20  # the right lung below 20 Gy is cut away
    # the crop grid is a sub-grid: its voxel (0,0,0) is the CT's (i0, j0, k0) in LPS
    assert np.allclose(crop.ct.index_to_lps([0, 0, 0]), ct.index_to_lps([i0, j0, k0]))
    assert np.allclose(crop.ct.spacing_mm, ct.spacing_mm)
    assert np.allclose(crop.bbox_lps[0], ct.index_to_lps([i0, j0, k0]))
    assert np.allclose(crop.bbox_lps[1], ct.index_to_lps([i1 - 1, j1 - 1, k1 - 1]))
    inside = crop.mask.array
    assert np.array_equal(crop.ct.array[inside], ct.array[k0:k1, j0:j1, i0:i1][inside])
    assert np.all(crop.ct.array[~inside] == -1000.0)
    assert crop.dose is not None and crop.dose.array[inside].min() >= 20.0
    used = {m.requested: m.used for m in crop.used_names}
    assert used == {"Lung_L": "LUNG_LT", "Lung_R": "Lung R", "GTV*": "GTVp"}
    assert any("LUNG_LT" in w and "Lung_L" in w for w in crop.warnings)


def test_threshold_is_configurable_and_lung_and_body_presets(thorax):
    ct, structures, dose = thorax
    at_40 = crop_study(ct, structures, dose, get_preset("lung-dose20", dose_threshold_gy=40))
    assert at_40.spec.name == "lung-dose40"
    assert at_40.bbox_index[2][0] == 40
    lung = crop_study(ct, structures, None, "lung")
    lungs = (structures["LUNG_LT"] | structures["Lung R"]) & ~structures["GTVp"]
    assert lung.mask.array.sum() == lungs.sum() and lung.dose is None
    body = crop_study(ct, structures, dose, "body")
    assert body.mask.array.sum() == structures["BODY"].sum()
    assert body.mask_volume_cc == pytest.approx(structures["BODY"].sum() * ct.voxel_volume_cc)


def test_margin_pads_the_box_in_mm_and_fill_none_keeps_ct(thorax):
    ct, structures, dose = thorax
    plain = crop_study(ct, structures, dose, "lung-dose20")
    padded = crop_study(ct, structures, dose, get_preset("lung-dose20", margin_mm=6.0, fill_hu=None))
    (k0, k1), (j0, j1), (i0, i1) = plain.bbox_index
    # 6 mm = 3 pixels in i, j (2 mm) and 2 slices in k (3 mm); the CT ends at i = 64
    assert padded.bbox_index == ((k0 - 2, k1 + 2), (j0 - 3, j1 + 3), (i0 - 3, min(i1 + 3, 64)))
    (pk0, pk1), (pj0, pj1), (pi0, pi1) = padded.bbox_index
    assert np.array_equal(padded.ct.array, ct.array[pk0:pk1, pj0:pj1, pi0:pi1])
    assert padded.mask.array.sum() == plain.mask.array.sum()


def test_structure_set_input_and_dose_on_its_own_grid_give_the_same_crop(thorax):
    ct, structures, dose = thorax
    rois = StructureSet([Roi(name, mask) for name, mask in structures.items()], frame_of_reference_uid="1.2")
    # dose on a coarser grid (4 mm x 4 mm x 6 mm, shifted): trilinear of a linear field is exact
    coarse_affine = affine_from_geometry((-62.0, -42.0, 97.0), (4.0, 4.0, 6.0))
    coarse = Volume(np.zeros((17, 26, 34), np.float32), coarse_affine)
    i_ct = coarse.index_to_lps(np.stack(np.meshgrid(np.arange(34), 0, 0, indexing="ij"), -1).reshape(-1, 3))
    per_column = (i_ct[:, 0] - ct.origin_lps[0]) / 2.0
    coarse = coarse.with_array(np.broadcast_to(per_column.astype(np.float32), (17, 26, 34)).copy())
    on_grid = crop_study(ct, structures, dose, "lung-dose20")
    native = crop_study(ct, rois, DoseGrid(coarse, frame_of_reference_uid="1.2"), "lung-dose20")
    assert np.array_equal(native.mask.array, on_grid.mask.array)
    assert np.allclose(native.dose.array, on_grid.dose.array, atol=1e-3)


def test_threshold_above_maximum_dose_is_a_crop_error(thorax):
    ct, structures, dose = thorax
    with pytest.raises(CropError) as error:
        crop_study(ct, structures, dose, get_preset("lung-dose20", dose_threshold_gy=80))
    assert "80 Gy" in str(error.value) and "maximum dose" in str(error.value)


def test_missing_structure_names_the_roi_and_lists_available(thorax):
    ct, structures, dose = thorax
    with pytest.raises(StructureError) as error:
        crop_study(ct, structures, dose, CropSpec(("Heart",)))
    assert "Heart" in str(error.value) and "'LUNG_LT'" in str(error.value)


def test_threshold_needs_dose_and_dose_must_cover_the_structure(thorax):
    ct, structures, _ = thorax
    with pytest.raises(DoseError, match="needs a dose"):
        crop_study(ct, structures, None, "lung-dose20")
    # dose grid covering only slices k < 15 of the CT: half the lungs are outside
    half = Volume(np.full((15, 48, 64), 30.0, np.float32), ct.affine)
    with pytest.raises(DoseError) as error:
        crop_study(ct, structures, half, "lung-dose20")
    message = str(error.value)
    assert "outside" in message and "%" in message
    fraction = float(message.split("%")[0].split()[-1]) / 100
    lungs = (structures["LUNG_LT"] | structures["Lung R"]) & ~structures["GTVp"]
    assert fraction == pytest.approx(lungs[15:].sum() / lungs.sum(), abs=0.001)


def test_missing_gtv_is_a_warning_not_an_error(thorax):
    ct, structures, dose = thorax
    without = {k: v for k, v in structures.items() if k != "GTVp"}
    crop = crop_study(ct, without, dose, "lung")
    assert any("GTV*" in w for w in crop.warnings)


def test_presets_are_the_talks_three_crops():
    assert set(PRESETS) == {"lung-dose20", "lung", "body"}
    assert PRESETS["lung-dose20"].dose_threshold_gy == 20.0
    with pytest.raises(CropError, match="lung-dose20"):
        get_preset("liver")


def test_resample_fixed_keeps_extent_and_mask_fraction(thorax):
    ct, structures, dose = thorax
    crop = crop_study(ct, structures, dose, "lung")
    fixed = resample_fixed(crop, (16, 32, 32))
    assert fixed.ct.shape == fixed.mask.shape == fixed.dose.shape == (16, 32, 32)
    assert fixed.mask.dtype == bool and fixed.ct.dtype == np.float32
    assert fixed.mask.mean() == pytest.approx(crop.mask.array.mean(), rel=0.1)
    # same physical extent: the fixed grid's edge voxel boundaries coincide with the crop's
    extent_crop = np.array(crop.ct.size_ijk) * crop.ct.spacing_mm
    assert np.allclose(np.array([32, 32, 16]) * fixed.spacing_mm, extent_crop)
    # the dose is linear in LPS x: resampled values equal the dose at the new voxel centres
    centre = fixed.affine @ np.array([5, 7, 3, 1.0])
    expected = (centre[0] - ct.origin_lps[0]) / 2.0
    assert fixed.dose[3, 7, 5] == pytest.approx(expected, abs=0.05)
    square = resample_fixed(crop, (32, 32, 32), keep_aspect=True)
    assert np.allclose(square.spacing_mm, square.spacing_mm[0])
    assert square.mask.sum() * np.prod(square.spacing_mm) == pytest.approx(
        crop.mask_volume_cc * 1000, rel=0.1)


# ---------------------------------------------------------------- exports


def test_mat_npz_and_nifti_exports_round_trip(thorax, tmp_path):
    import nibabel as nib
    from scipy.io import loadmat

    from rtdeep.crop_files import load_crop_npz, save_crop_mat, save_crop_nifti, save_crop_npz

    ct, structures, dose = thorax
    crop = crop_study(ct, structures, dose, "lung-dose20")
    mat_path = save_crop_mat(crop, tmp_path / "p1.mat", patient_id="P1")
    data = loadmat(mat_path, squeeze_me=True)
    assert data["ct"].shape == (crop.ct.shape[1], crop.ct.shape[2], crop.ct.shape[0])  # row, col, slice
    assert np.array_equal(data["ct"][:, :, 2], crop.ct.array[2])
    assert data["mask"].sum() == crop.mask.array.sum()
    assert np.allclose(data["dose"][:, :, 0], crop.dose.array[0])
    assert np.allclose(data["affine_lps"], crop.ct.affine) and data["patient_id"] == "P1"
    assert float(data["crop"]["dose_threshold_gy"]) == 20.0
    assert list(data["crop"]["include"].item()) == ["Lung_L", "Lung_R"]

    npz_path = save_crop_npz(crop, tmp_path / "p1.npz", patient_id="P1")
    back, patient_id = load_crop_npz(npz_path)
    assert patient_id == "P1" and back.spec == crop.spec
    assert np.array_equal(back.mask.array, crop.mask.array) and np.allclose(back.ct.affine, crop.ct.affine)
    assert [m.used for m in back.used_names] == [m.used for m in crop.used_names]

    paths = save_crop_nifti(crop, tmp_path / "p1")
    image = nib.load(paths["ct"])
    assert image.shape == crop.ct.size_ijk
    i, j, k = 3, 5, 2
    assert image.get_fdata()[i, j, k] == pytest.approx(crop.ct.array[k, j, i])
    ras = image.affine @ np.array([i, j, k, 1.0])
    lps = crop.ct.index_to_lps([i, j, k])
    assert np.allclose(ras[:3], [-lps[0], -lps[1], lps[2]])
    assert nib.load(paths["mask"]).get_fdata().sum() == crop.mask.array.sum()

    with pytest.raises(OutputExistsError):
        save_crop_mat(crop, mat_path)
