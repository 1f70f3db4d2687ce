"""Segmentation models: training lowers the loss, geometry round trips, bundled models reach a
Dice floor on a held-out phantom, and `rtdeep segment` writes an RTSTRUCT that passes the checks."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NOT_SHIPPED, shipped_segmentation_bundles, stored_as

from rtdeep.bundles import load_bundle
from rtdeep.inference.segment import segment_volume
from rtdeep.metrics import dice_coefficient
from rtdeep.models import build_network
from rtdeep.models.architectures import ARCHITECTURES
from rtdeep.resample import resample_box_to_grid, resample_to_spacing
from rtdeep.sites import SITES
from rtdeep.training.data import SegCase, prepare_case
from rtdeep.training.trainer import TrainConfig, train_segmentation
from rtdeep.volume import Volume, affine_from_geometry


def _toy_cases(n: int) -> list[SegCase]:
    """Bright boxes (one per organ) on a dark noisy background, model grid 24 x 48 x 48."""
    rng = np.random.default_rng(1)
    cases = []
    for index in range(n):
        labels = np.zeros((24, 48, 48), np.uint8)
        shift = int(rng.integers(-3, 4))
        labels[4:20, 8 + shift : 24 + shift, 6:20] = 1
        labels[4:20, 8 + shift : 24 + shift, 28:42] = 2
        labels[6:18, 28:40, 16:30] = 3
        labels[2:22, 30:34, 34:38] = 4
        labels[2:22, 40:44, 22:26] = 5
        image = 0.1 + 0.15 * labels + rng.normal(0, 0.03, labels.shape)
        cases.append(SegCase(f"toy{index}", image.astype(np.float32), labels, np.eye(4), np.ones(5, bool)))
    return cases


@pytest.mark.parametrize("arch_name", list(ARCHITECTURES))
def test_tiny_training_run_lowers_the_loss(arch_name: str, tmp_path: Path) -> None:
    site = SITES["thorax"]
    small = {3: (16, 32, 32), 2: (32, 32)}
    arch = dataclasses.replace(ARCHITECTURES[arch_name], patch_size=small[ARCHITECTURES[arch_name].spatial_dims],
                               batch_size=2)
    config = TrainConfig(site="thorax", arch=arch_name, time_budget_s=1e9, max_epochs=3, iterations_per_epoch=6,
                         learning_rate=3e-3, threads=1)
    result = train_segmentation(config, site, arch, _toy_cases(3), [], tmp_path)
    losses = [record["train_loss"] for record in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "best_model.pt").is_file()
    # resume continues from the checkpoint rather than starting again
    config.max_epochs = 4
    resumed = train_segmentation(config, site, arch, _toy_cases(3), [], tmp_path, resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]


@pytest.mark.parametrize("arch_name", list(ARCHITECTURES))
def test_networks_draw_boundaries_from_full_resolution_features(arch_name: str) -> None:
    arch = ARCHITECTURES[arch_name]
    network = build_network(arch.network_spec(SITES["headneck"])).eval()
    first_conv = next(m for m in network.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d))
    assert set(first_conv.stride) == {1}  # the first features are on the model grid itself
    halvings = sum(1 for stride in arch.strides if stride != 1)
    assert arch.size_divisor == 2**halvings
    size = (2 * arch.size_divisor,) * arch.spatial_dims
    with torch.no_grad():
        out = network(torch.zeros(1, arch.context_slices, *size))
    assert out.shape == (1, SITES["headneck"].n_classes, *size)
    strided = dataclasses.replace(arch, full_resolution_level=False)
    assert 1 not in strided.strides and strided.size_divisor == 2 * arch.size_divisor


def test_an_architecture_with_its_own_grid_trains_and_segments_on_it(tmp_path: Path) -> None:
    """unet25d_fine: training caches, bundle metadata, card and inference all use its 1.25 mm grid."""
    from rtdeep.bundles import write_bundle
    from rtdeep.inference.segment import predict_model_grid
    from rtdeep.training.data import _tag
    from rtdeep.training.model_card import model_card, segmentation_metadata

    site, arch = SITES["thorax"], ARCHITECTURES["unet25d_fine"]
    fine = arch.model_site(site)
    assert fine.spacing_mm == (1.25, 1.25, site.spacing_mm[2]) and fine.organ_names == site.organ_names
    assert ARCHITECTURES["unet25d"].model_site(site) is site
    assert _tag(fine) != _tag(site)  # its own training cache
    metadata = segmentation_metadata(site, arch)
    assert metadata["rtdeep"]["spacing_mm"] == [1.25, 1.25, site.spacing_mm[2]]
    assert "resampled to [1.25, 1.25, 3.0] mm" in model_card(site, arch, training={})
    bundle = load_bundle(write_bundle(tmp_path / "fine", build_network(arch.network_spec(site)), metadata, "# card\n"))
    ct = Volume(np.full((20, 64, 64), -1000, np.float32), affine_from_geometry((-40, -40, 0), (1.0, 1.0, 2.0)))
    ct.array[4:16, 12:52, 12:52] = 40.0
    probabilities, affine = predict_model_grid(ct, bundle, device="cpu")
    assert np.allclose(np.linalg.norm(affine[:3, :3], axis=0), [1.25, 1.25, 3.0])
    assert probabilities.shape[0] == site.n_classes and np.allclose(probabilities.sum(axis=0), 1.0, atol=1e-4)


@pytest.mark.parametrize("flip_k", [False, True])
def test_resampling_axis_by_axis_equals_smoothing_the_whole_image_first(flip_k: bool) -> None:
    """``resample_to_spacing`` smooths and samples one axis at a time; the values are those of the
    definition (a Gaussian over all downsampled axes of the whole image, then trilinear sampling,
    uncovered voxels 0), to float rounding, for coarser, finer and mixed grids."""
    from scipy import ndimage

    from rtdeep.resample import model_grid_affine, sample_on_grid

    rng = np.random.default_rng(3)
    direction = np.diag([1.0, 1.0, -1.0 if flip_k else 1.0])
    image = Volume(rng.uniform(-1000, 1500, (23, 61, 57)).astype(np.float32),
                   affine_from_geometry((-20, -30, 10), (0.7, 0.9, 2.0), direction))
    for spacing in ((1.25, 1.25, 3.0), (2.5, 2.5, 3.0), (0.5, 2.1, 1.0), (4.0, 0.45, 5.0), (0.77, 2.5, 2.2)):
        affine, shape = model_grid_affine(image, spacing)
        scale = np.abs(np.diag(np.linalg.inv(image.affine) @ affine)[:3])[::-1]
        sigma = np.maximum(scale - 1.0, 0.0) * 0.5
        smoothed = ndimage.gaussian_filter(image.array, sigma=sigma, mode="nearest", truncate=2.0)
        expected, _ = sample_on_grid(image.with_array(smoothed), affine, shape)
        resampled = resample_to_spacing(image, spacing)
        np.testing.assert_allclose(resampled.affine, affine)
        assert resampled.array.dtype == np.float32 and resampled.array.shape == tuple(shape)
        np.testing.assert_allclose(resampled.array, expected, atol=2e-3)  # HU


def test_lps_ordered_undoes_any_axis_reversal_and_order_exactly() -> None:
    rng = np.random.default_rng(4)
    hfs = Volume(rng.normal(size=(7, 9, 11)).astype(np.float32),
                 affine_from_geometry((-20.0, 31.0, -5.0), (0.8, 0.9, 2.5)))
    assert hfs.lps_ordered() is hfs
    for reversed_axes in ((), (2,), (1, 2), (1,), (0,), (0, 1, 2)):
        for order in ((0, 1, 2), (2, 1, 0), (1, 0, 2), (2, 0, 1)):
            stored = stored_as(hfs, reversed_axes, order)
            ordered = stored.lps_ordered()
            np.testing.assert_array_equal(ordered.array, hfs.array)
            np.testing.assert_allclose(ordered.affine, hfs.affine, atol=1e-9)
            # every voxel of the stored volume sits where the same value sits in the original
            k, j, i = 3, 2, 5
            position = stored.index_to_lps(np.array([i, j, k]))
            original = np.round(hfs.lps_to_index(position)).astype(int)
            assert stored.array[k, j, i] == hfs.array[original[2], original[1], original[0]]


def test_feet_first_and_prone_cts_are_segmented_as_head_first_supine(heldout_small_phantoms) -> None:
    """A feet-first or prone CT is seen by the network in a head-first-supine CT's axes: the organs
    come out where they are (before, a feet-first thorax gave both lungs swapped, Dice 0.00)."""
    from rtdeep.model_database import default_model

    torch.set_num_threads(2)
    patient = heldout_small_phantoms["thorax"]
    bundle = load_bundle(default_model("thorax"))
    supine = {roi.name: roi.mask for roi in segment_volume(patient.ct, bundle)}
    # feet first supine, head first prone, and a series whose axial slices lie along the array's last axis
    for reversed_axes, order in (((2,), (0, 1, 2)), ((1, 2), (0, 1, 2)), ((0,), (2, 0, 1))):
        stored = stored_as(patient.ct, reversed_axes, order)
        for roi in segment_volume(stored, bundle):
            back = stored.with_array(roi.mask).lps_ordered().array
            assert dice_coefficient(supine[roi.name], back) >= 0.99, (reversed_axes, order, roi.name)


@pytest.mark.parametrize("flip_k", [False, True])
def test_mask_survives_the_trip_to_the_model_grid_and_back(flip_k: bool) -> None:
    direction = np.diag([1.0, 1.0, -1.0 if flip_k else 1.0])
    ct = Volume(np.zeros((40, 120, 110), np.float32), affine_from_geometry((-50, -60, 20), (0.9, 0.9, 2.5), direction))
    k, j, i = np.ogrid[:40, :120, :110]
    mask = ((i - 60) / 30.0) ** 2 + ((j - 50) / 25.0) ** 2 + ((k - 22) / 12.0) ** 2 < 1
    on_model = resample_to_spacing(ct.with_array(mask.astype(np.float32)), (2.5, 2.5, 3.0))
    model_mask = on_model.array > 0.5
    box = tuple(slice(0, n) for n in model_mask.shape)
    target_box, values = resample_box_to_grid(model_mask.astype(np.float32), on_model.affine, box, ct)
    back = np.zeros(ct.shape, bool)
    back[target_box] = values > 0.5
    assert dice_coefficient(mask, back) > 0.93
    # the centre of mass stays put (within a voxel) in LPS
    centre = ct.index_to_lps(np.argwhere(mask)[:, ::-1].mean(0))
    centre_back = ct.index_to_lps(np.argwhere(back)[:, ::-1].mean(0))
    assert np.linalg.norm(centre - centre_back) < 1.0


def test_organ_clean_up_inside_the_bounding_box_equals_the_whole_array_definition() -> None:
    """largest_component and fill_holes_axial work inside the organ's bounding box (plus one voxel):
    the same masks as labelling and filling the whole array, on random masks touching every edge."""
    from scipy import ndimage

    from rtdeep.inference.postprocess import fill_holes_axial, largest_component

    def whole_largest(mask):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(labelled.ravel())
        sizes[0] = 0
        return labelled == int(sizes.argmax()) if count else mask.copy()

    def whole_filled(mask):
        return np.stack([ndimage.binary_fill_holes(plane) for plane in mask])

    rng = np.random.default_rng(5)
    for trial in range(200):
        mask = rng.random(tuple(rng.integers(1, 18, 3))) < rng.uniform(0.02, 0.8)
        if trial % 2:
            mask = ndimage.binary_dilation(mask)  # rings around holes
        np.testing.assert_array_equal(largest_component(mask), whole_largest(mask))
        np.testing.assert_array_equal(fill_holes_axial(mask), whole_filled(mask))


def test_strands_leaving_a_compact_organ_are_cut_and_its_thin_edges_stay() -> None:
    """trim_strands on the model grids (2.5 and 1.25 mm in plane, 3 mm slices): a strand under 5 mm
    wide that leaves a lung-sized block and runs 90 mm down is cut within STRAND_REACH_MM of the
    block; a thin wedge at the block's edge shorter than the reach (a costophrenic recess) and a
    thin sheet reaching 35 mm out in front of it, within its slices (the lung's edge in front of
    the heart), stay whole; a mask with no body (a 5 mm tube, like a cord) comes back unchanged;
    clean_organ_mask trims only when given a spacing."""
    from rtdeep.inference.postprocess import STRAND_REACH_MM, clean_organ_mask, trim_strands

    for spacing in ((3.0, 2.5, 2.5), (3.0, 1.25, 1.25)):
        dz, dy, dx = spacing
        shape = (int(200 / dz), int(150 / dy), int(150 / dx))
        z, y, x = np.meshgrid(*(np.arange(n) * d for n, d in zip(shape, spacing)), indexing="ij")
        block = (z < 90) & (abs(y - 75) < 40) & (abs(x - 75) < 40)
        strand = (z >= 90) & (z < 180) & (abs(y - 75) < 2.5) & (abs(x - 60) < 2.5)
        wedge = (z >= 90) & (z < 90 + 15) & (abs(y - 75) < 30) & (x > 95 + (z - 90) * 20 / 15) & (x < 115)
        sheet = (z > 10) & (z < 80) & (y <= 36) & (abs(x - 75) < 2)  # under 4 mm thin, 35 mm out in front
        trimmed = trim_strands(block | strand | wedge | sheet, spacing)
        assert trimmed[block].all() and trimmed[wedge].all() and trimmed[sheet].all()
        kept_strand = trimmed & strand
        lowest_kept_mm = z[kept_strand].max() - 90 if kept_strand.any() else 0.0
        assert lowest_kept_mm <= STRAND_REACH_MM + dz, (spacing, lowest_kept_mm)
        assert strand.sum() > 3 * kept_strand.sum()
        # no body: a thin tube is not trimmed at all
        tube = (abs(y - 75) < 2.5) & (abs(x - 75) < 2.5)
        np.testing.assert_array_equal(trim_strands(tube, spacing), tube)
        # clean_organ_mask: without a spacing (tubular organs) the strand stays
        np.testing.assert_array_equal(clean_organ_mask(block | strand), block | strand)
        assert not (clean_organ_mask(block | strand, spacing) & strand & (z > 90 + STRAND_REACH_MM + dz)).any()


def test_network_probability_places_the_boundary_between_model_voxels() -> None:
    """With the organ's probability, the boundary on a finer CT grid falls where the probability
    crosses 0.5, not half-way between model voxels: a sphere comes back closer to itself, and every
    model-grid voxel keeps its class."""
    from rtdeep.inference.segment import model_mask_to_ct
    from rtdeep.resample import model_grid_affine

    ct = Volume(np.zeros((60, 100, 100), np.float32), affine_from_geometry((-50, -50, -30), (1.0, 1.0, 1.0)))
    centre, radius = np.array([3.3, -1.7, 0.4]), 17.3
    k, j, i = np.indices(ct.shape)
    lps = ct.index_to_lps(np.stack([i, j, k], axis=-1).reshape(-1, 3)).reshape(*ct.shape, 3)
    truth = np.linalg.norm(lps - centre, axis=-1) < radius
    model_affine, model_shape = model_grid_affine(ct, (4.0, 4.0, 4.0))
    mk, mj, mi = np.indices(model_shape)
    model_lps = (np.stack([mi, mj, mk, np.ones_like(mi)], axis=-1) @ model_affine.T)[..., :3]
    distance = np.linalg.norm(model_lps - centre, axis=-1) - radius
    probability = (1.0 / (1.0 + np.exp(distance / 2.0))).astype(np.float32)  # a calibrated network
    organ = probability > 0.5
    hard = model_mask_to_ct(organ, model_affine, ct)
    soft = model_mask_to_ct(organ, model_affine, ct, probability)
    assert dice_coefficient(truth, soft) > dice_coefficient(truth, hard) + 0.01
    at_model_centres = soft[::4, ::4, ::4]  # CT voxels at model-grid voxel centres keep their class
    assert at_model_centres.sum() > 100
    assert np.array_equal(at_model_centres, organ[tuple(slice(0, n) for n in at_model_centres.shape)])
    assert not model_mask_to_ct(np.zeros(model_shape, bool), model_affine, ct, probability).any()


@pytest.fixture(scope="module")
def heldout_small_phantoms():
    from rtdeep.phantom import generate_patient

    return {site: generate_patient(site, 150, 2, grid="small") for site in SITES}


# Floors on a small-grid (3.5 mm) held-out phantom: the models were trained on the clinical grid, so
# these are sanity floors for the whole pipeline, not the accuracy figures in the model cards. Every
# organ must be found where it is (a model that misses one organ, Dice 0.00, fails); the lungs must
# be good.
DICE_FLOORS = {"thorax": {"Lung_L": 0.8, "Lung_R": 0.8}, "headneck": {}}
EVERY_ORGAN_FLOOR = 0.1


SHIPPED = shipped_segmentation_bundles()


def test_withdrawn_bundles_are_listed_with_a_reason_and_absent() -> None:

    from rtdeep.bundles import models_dir

    database = json.loads((models_dir() / "models.json").read_text())
    assert {entry["name"] for entry in database["not_shipped"]} == NOT_SHIPPED
    assert all(entry["reason"] for entry in database["not_shipped"])
    assert {entry["name"] for entry in database["models"]} == set(SHIPPED)
    for name in NOT_SHIPPED:
        assert not (models_dir() / name).exists()


@pytest.mark.parametrize("name", SHIPPED)
def test_bundled_model_reaches_dice_floor_on_heldout_phantom(name: str, heldout_small_phantoms) -> None:
    torch.set_num_threads(2)
    bundle = load_bundle(name)
    patient = heldout_small_phantoms[bundle.site]
    rois = segment_volume(patient.ct, bundle)
    reference = {roi.name: roi.mask for roi in patient.rois}
    scores = {roi.name: dice_coefficient(reference[roi.name], roi.mask) for roi in rois}
    assert sorted(scores) == sorted(SITES[bundle.site].organ_names)
    for roi in rois:
        assert roi.mask.shape == patient.ct.shape and roi.generation_algorithm == "AUTOMATIC"
    for organ, floor in DICE_FLOORS[bundle.site].items():
        assert scores[organ] >= floor, scores
    assert min(scores.values()) >= EVERY_ORGAN_FLOOR, scores


def test_prepare_case_puts_organs_on_the_model_grid(heldout_small_phantoms) -> None:
    patient = heldout_small_phantoms["thorax"]
    site = SITES["thorax"]
    case = prepare_case(patient.patient_id, patient.ct, patient.rois, site)
    assert case.present.all()
    spacing = np.linalg.norm(case.affine[:3, :3], axis=0)
    assert np.allclose(spacing, site.spacing_mm)
    lung_cc = (case.labels == 1).sum() * np.prod(spacing) / 1000
    assert lung_cc == pytest.approx(patient.roi("Lung_L").volume_cc(patient.ct), rel=0.1)


def test_grid_ceiling_is_what_exact_training_labels_lose_to_the_model_grid(heldout_small_phantoms) -> None:
    """The ceiling Dice beside every held-out score: below 1 (the round trip loses detail), higher
    on a finer grid, and lowest for the thin organs (cord, esophagus) on the coarse one."""
    from rtdeep.training.data import grid_ceiling_dice

    patient = heldout_small_phantoms["thorax"]
    site = SITES["thorax"]
    masks = {roi.name: roi.mask for roi in patient.rois if roi.name in site.organ_names}
    coarse = grid_ceiling_dice(patient.ct, masks, dataclasses.replace(site, spacing_mm=(5.0, 5.0, 6.0)))
    fine = grid_ceiling_dice(patient.ct, masks, dataclasses.replace(site, spacing_mm=(2.0, 2.0, 3.0)))
    assert sorted(coarse) == sorted(site.organ_names)
    assert all(0.5 < coarse[organ] < fine[organ] < 1.0 for organ in site.organ_names), (coarse, fine)
    assert min(coarse, key=coarse.get) in ("SpinalCord", "Esophagus")
    assert coarse["Lung_L"] > 0.9


def test_segment_command_writes_a_valid_rtstruct(tmp_path: Path, heldout_small_phantoms) -> None:
    import nibabel as nib
    from conftest import hash_tree

    from rtdeep.cli import main
    from rtdeep.dicomrt.validate import check_rtstruct
    from rtdeep.phantom import write_patient

    folder = write_patient(heldout_small_phantoms["thorax"], tmp_path / "in")
    before = hash_tree(folder)
    out = tmp_path / "out"
    status = main(["segment", str(folder / "CT"), "--model", "thorax_unet3d", "--out", str(out),
                   "--reference", str(folder / "RS.dcm"), "--nifti", "--threads", "2"])
    assert status == 0
    rs_path = out / "RS.thorax_unet3d.dcm"
    errors = [f for f in check_rtstruct(rs_path, folder / "CT") if f.severity == "error"]
    assert errors == []
    import pydicom

    ds = pydicom.dcmread(rs_path)
    names = [roi.ROIName for roi in ds.StructureSetROISequence]
    # the organs the model found, in label order; one it missed is left out, never an empty ROI (checklist 11)
    assert names and names == [name for name in SITES["thorax"].organ_names if name in names]
    assert all("ContourSequence" in item for item in ds.ROIContourSequence)
    assert {roi.ROIGenerationAlgorithm for roi in ds.StructureSetROISequence} == {"AUTOMATIC"}
    label_map = nib.load(str(out / "labels.thorax_unet3d.nii.gz"))
    assert label_map.shape == heldout_small_phantoms["thorax"].ct.size_ijk
    assert set(np.unique(np.asarray(label_map.dataobj))) <= set(range(6))
    assert hash_tree(folder) == before
    # a second run refuses to overwrite
    assert main(["segment", str(folder / "CT"), "--model", "thorax_unet3d", "--out", str(out)]) == 2


def test_segment_command_on_a_feet_first_dicom_ct_puts_each_organ_where_it_is(tmp_path: Path, capsys,
                                                                               heldout_small_phantoms) -> None:
    """A feet-first CT series (ImageOrientationPatient -1\\0\\0\\0\\1\\0, PatientPosition FFS), end to
    end through ``rtdeep segment``: the RTSTRUCT's lungs lie on the reference lungs (swapped, as
    before session 32, they would score 0) and pass the structure-set checks."""
    import pydicom

    from rtdeep.cli import main
    from rtdeep.dicomrt.ct_reader import read_ct_series
    from rtdeep.dicomrt.ct_writer import write_ct_series
    from rtdeep.dicomrt.rtstruct_reader import read_rtstruct
    from rtdeep.dicomrt.validate import check_rtstruct

    patient = heldout_small_phantoms["thorax"]
    series = write_ct_series(stored_as(patient.ct, (2,)), tmp_path / "CT", patient.patient_info)
    first = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    assert first.PatientPosition == "FFS" and [float(v) for v in first.ImageOrientationPatient[:3]] == [-1, 0, 0]
    assert main(["info", str(tmp_path / "CT")]) == 0 and ", orientation FFS" in capsys.readouterr().out
    assert main(["segment", str(tmp_path / "CT"), "--model", "thorax_unet3d", "--out", str(tmp_path / "out"),
                 "--threads", "2"]) == 0
    rs_path = tmp_path / "out" / "RS.thorax_unet3d.dcm"
    assert [f for f in check_rtstruct(rs_path, tmp_path / "CT") if f.severity == "error"] == []
    ct = read_ct_series(tmp_path / "CT")  # slices ordered along the normal, rows x columns: towards the feet
    assert ct.volume.direction[2, 2] < 0
    contours = {roi.name: roi.mask for roi in read_rtstruct(rs_path, ct).rois}
    for organ in ("Lung_L", "Lung_R", "Heart"):  # compared in the head-first-supine order of the phantom
        found = ct.volume.with_array(contours[organ]).lps_ordered().array
        assert dice_coefficient(patient.roi(organ).mask, found) >= 0.9, organ


def test_package_ships_a_good_model_and_withdraws_one_below_a_floor(tmp_path: Path, monkeypatch) -> None:
    """train_all package: an organ below its issue-9 floor (not only a weak organ) keeps a model out
    of the bundles, with the reason in models.json; a model that is good again is shipped and leaves
    the not-shipped list."""
    import shutil

    from rtdeep.model_database import WEAK_DICE
    from rtdeep.models import build_network
    from rtdeep.models.architectures import get_arch
    from rtdeep.sites import get_site
    from rtdeep.training import train_all

    work, models = tmp_path / "work", tmp_path / "models"
    monkeypatch.setattr(train_all, "WORK_DIR", work)
    site = get_site("headneck")
    organs = site.organ_names
    (models / "headneck_gan3d").mkdir(parents=True)  # shipped before, below the parotid floor now
    (models / "headneck_unet3d").mkdir(parents=True)  # shipped, every floor met: its retrained twin is not
    good_before = {o: 0.9 for o in organs}
    (models / "models.json").write_text(json.dumps({
        "models": [{"name": "headneck_gan3d"}, {"name": "headneck_unet3d", "heldout_dice_median": good_before}],
        "not_shipped": [{"name": "headneck_unet25d", "reason": "weak before"}],
        "classifiers": [{"name": "kept as it is"}],
    }))
    below_floor = train_all.FLOORS[organs[0]] - 0.01
    assert below_floor > WEAK_DICE  # not weak: the floor alone withdraws it
    for arch_name, dice in (("gan3d", below_floor), ("unet25d", 0.9), ("unet3d", below_floor)):
        folder = work / f"headneck_{arch_name}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps({
            "train_seconds": 60.0, "iterations": 10, "best_epoch": 1, "epochs": 1, "threads": 1, "batch_size": 2,
            "best_val_dice": {o: 0.9 for o in organs}, "train_phantoms": "t", "val_phantoms": "v",
            "iterations_budget": 10, "minutes_cap": 1, "start": "from scratch"}))
        heldout = {o: 0.9 for o in organs}
        heldout[organs[0]] = dice
        (folder / "heldout.json").write_text(json.dumps({
            "heldout_phantoms": "seed 2, indices 100-105 (6 phantoms, clinical grid)", "dice_median": heldout, "dice_min": heldout, "dice_max": heldout,
            "hd95_mm_median": {o: 2.0 for o in organs}, "surface_dice_2mm_median": {o: 0.9 for o in organs},
            "grid_ceiling_dice_median": {o: 0.937 for o in organs},
            "plausibility_findings": [], "segment_volume_seconds_median": 1.0, "threads": 1}))
        network = build_network(get_arch(arch_name).network_spec(site))
        torch.save(network.state_dict(), folder / "best_model.pt")
    # the bundle the new one replaces, measured before packaging: the card says so
    shutil.copy(work / "headneck_unet25d" / "heldout.json", work / "headneck_unet25d" / "heldout_shipped.json")
    # its training history: the card says how much the last stretch of training still added
    (work / "headneck_unet25d" / "history.json").write_text(json.dumps(
        [{"iterations": i, "val_mean_dice": dice} for i, dice in ((500, 0.5), (1000, 0.8), (1500, 0.85), (2000, 0.86))]))
    train_all.package(["headneck"], ["gan3d", "unet25d", "unet3d"], models, None)
    database = json.loads((models / "models.json").read_text())
    assert [entry["name"] for entry in database["models"]] == ["headneck_unet25d", "headneck_unet3d"]
    assert database["models"][1] == {"name": "headneck_unet3d", "heldout_dice_median": good_before}
    assert (models / "headneck_unet3d").is_dir() and not any((models / "headneck_unet3d").iterdir())  # untouched
    assert (models / "headneck_unet25d" / "models" / "model.pt").is_file()
    card = (models / "headneck_unet25d" / "docs" / "README.md").read_text()
    assert "| grid ceiling |" in card and f"| {organs[1]} | 0.900 (0.900-0.900) | 0.937 |" in card
    assert ("- convergence: best validation mean Dice 0.860 after 2000 iterations; the last 500 iterations added "
            "+0.010 to the best, the 500 before them +0.050") in card
    assert "The bundle this one replaced, on the same held-out phantoms" in card
    # measured on another generator's phantoms: not the same held-out set, so no comparison is printed
    shipped_before = work / "headneck_unet25d" / "heldout_shipped.json"
    same_phantoms = shipped_before.read_text()
    shipped_before.write_text(json.dumps(json.loads(same_phantoms) | {"phantom_generator": "older"}))
    train_all.package(["headneck"], ["unet25d"], models, None)
    assert "The bundle this one replaced" not in (models / "headneck_unet25d" / "docs" / "README.md").read_text()
    shipped_before.write_text(same_phantoms)
    train_all.package(["headneck"], ["unet25d"], models, None)
    assert not (models / "headneck_gan3d").exists()
    assert [entry["name"] for entry in database["not_shipped"]] == ["headneck_gan3d"]
    assert f"{organs[0]} {below_floor:.3f} (floor {train_all.FLOORS[organs[0]]:.2f})" in database["not_shipped"][0]["reason"]
    assert database["classifiers"] == [{"name": "kept as it is"}]

    # remeasure: the kept bundle's card, metadata and database entry take the new measurement,
    # the card says what changed and what it was before, and the bundle still verifies
    # a section written by hand on the card (a design history) survives both rewrites of the card
    from rtdeep.bundles import write_manifest

    card_path = models / "headneck_unet25d" / "docs" / "README.md"
    by_hand = "## Design, and what it replaced\n- written by hand, not by package.\n"
    card_path.write_text(card_path.read_text() + "\n" + by_hand)
    write_manifest(models / "headneck_unet25d")
    remeasured = {o: 0.95 for o in organs}
    shipped_json = json.loads((work / "headneck_unet25d" / "heldout.json").read_text())
    shipped_json.update(dice_median=remeasured, dice_min=remeasured, dice_max=remeasured)
    (work / "headneck_unet25d" / "heldout_shipped.json").write_text(json.dumps(shipped_json))
    bench_json = tmp_path / "bench_segment.json"  # the benchmark measured it again too
    bench_json.write_text(json.dumps({"headneck_unet25d": {"description": "bench", "wall_s_median": 7.25,
                                                           "peak_rss_mb_median": 900.0}}))
    remeasure = ["remeasure", "--sites", "headneck", "--archs", "gan3d", "unet25d", "--models-dir", str(models),
                 "--note", "boundaries from probabilities.", "--bench-json", str(bench_json)]
    database = json.loads((models / "models.json").read_text())
    database["models"][0]["cpu_seconds_median"] = 9.46  # as an earlier benchmark measured it
    (models / "models.json").write_text(json.dumps(database))
    assert train_all.main([*remeasure, "--speed"]) == 0
    card = (models / "headneck_unet25d" / "docs" / "README.md").read_text()
    assert "; wall time median 9.5 s." in card  # the speed before, from the database
    assert "- wall time median s: 7.2" in card and "- peak rss median mb: 900" in card
    assert card.count("Written on ") == 1
    assert f"| {organs[1]} | 0.950 (0.950-0.950) | 0.937 |" in card
    assert "boundaries from probabilities. Before: Dice " + f"{organs[0]} 0.900" in card
    assert card.count("## Held-out detail") == 1
    previous = "The bundle this one replaced, on the same held-out phantoms"
    assert card.count(previous) == 1 and card.index(previous) < card.index("Re-measured with the same weights")
    entry = json.loads((models / "models.json").read_text())["models"][0]
    assert entry["heldout_dice_median"] == remeasured and entry["floors_met"] is True
    assert entry["cpu_seconds_median"] == 7.25
    assert load_bundle(models / "headneck_unet25d").config["heldout_dice_median"] == remeasured
    assert card.count(by_hand) == 1 and card.endswith(by_hand)
    assert card.index("Re-measured with the same weights") < card.index(by_hand)
    # without --speed the card keeps its speed: the default benchmark JSON may hold a stale entry
    bench_json.write_text(json.dumps({"headneck_unet25d": {"description": "stale", "wall_s_median": 30.0,
                                                           "peak_rss_mb_median": 900.0}}))
    assert train_all.main(remeasure) == 0
    assert "- wall time median s: 7.2" in card_path.read_text() and "30.0" not in card_path.read_text()
    train_all.package(["headneck"], ["unet25d"], models, None)  # retrained: a new card, the hand section kept
    card = card_path.read_text()
    assert card.count(by_hand) == 1 and card.count("## Held-out detail") == 1
    assert load_bundle(models / "headneck_unet25d").config["heldout_dice_median"] == {o: 0.9 for o in organs}


def test_equal_budget_means_the_same_iterations_phantoms_and_phantom_generator(tmp_path: Path) -> None:
    """A model card may call a peer's budget equal only when the iterations, the phantom indices and
    the version of the phantom generator they were drawn from all agree; a peer trained on an older
    generator (or from before the generator was recorded) has the same indices but other phantoms."""
    from rtdeep.training import train_all
    from rtdeep.training.model_card import segmentation_metadata

    def peer(name: str, generator: str | None) -> None:
        (tmp_path / name / "models").mkdir(parents=True)
        training = {"budget": "3000 iterations, from scratch", "training_phantoms": "seed 1, 72 phantoms"}
        if generator is not None:
            training["phantom_generator"] = generator
        metadata = segmentation_metadata(SITES["headneck"], ARCHITECTURES["unet25d_fine"], training=training)
        (tmp_path / name / "configs").mkdir()
        (tmp_path / name / "configs" / "metadata.json").write_text(json.dumps(metadata))

    peer("headneck_a", "b3eb6de6a32c")
    peer("headneck_b", None)
    peer("headneck_c", "095832738776")
    result = {"iterations_budget": 3000, "train_phantoms": "seed 1, 72 phantoms", "phantom_generator": "b3eb6de6a32c"}
    line = train_all._budget_peers(tmp_path, "headneck_new", "headneck", result)
    assert line.startswith("the same budget and phantoms as headneck_a (equal budget); the same budget and "
                           "phantom indices as headneck_b, headneck_c, but phantoms of another version")
    (tmp_path / "headneck_a" / "models").rmdir()  # not a network bundle any more
    line = train_all._budget_peers(tmp_path, "headneck_new", "headneck", result)
    assert line.startswith("the same budget and phantom indices as headneck_b, headneck_c, but phantoms of another")
    line = train_all._budget_peers(tmp_path, "headneck_new", "headneck", {**result, "iterations_budget": 1400})
    assert line.startswith("a budget no other shipped model")


def test_packaging_a_peer_brings_the_budget_lines_of_the_cards_before_it_up_to_date(tmp_path: Path) -> None:
    """A card packaged first says no other model had its budget; once its equal-budget twin is packaged,
    its budget line (card and metadata, manifest rewritten) names the twin. Lines written by hand stay."""
    from rtdeep.bundles import verify_bundle, write_manifest
    from rtdeep.training import train_all
    from rtdeep.training.model_card import segmentation_metadata

    tail = "capped at 400.0 min; from scratch"

    def bundle(name: str, budget: str) -> Path:
        path = tmp_path / name
        (path / "models").mkdir(parents=True)
        (path / "models" / "model.pt").write_bytes(b"weights")
        training = {"training_phantoms": "seed 1, 72 phantoms", "phantom_generator": "b3eb6de6a32c", "budget": budget}
        (path / "configs").mkdir()
        (path / "configs" / "metadata.json").write_text(json.dumps(segmentation_metadata(
            SITES["headneck"], ARCHITECTURES["unet25d_fine"], training=training)))
        (path / "docs").mkdir()
        (path / "docs" / "README.md").write_text(f"# {name}\n\n## Training\n- budget: {budget}\n- other: kept\n")
        write_manifest(path)
        return path

    first = bundle("headneck_a", f"3000 iterations, a budget no other shipped model of this site had (their cards "
                                 f"say theirs), {tail}")
    twin = bundle("headneck_b", f"3000 iterations, the same budget and phantoms as headneck_a (equal budget), {tail}")
    by_hand = bundle("headneck_c", "1400 iterations for each of the four architectures (equal budget)")
    card_by_hand = (by_hand / "docs" / "README.md").read_text()

    assert train_all.refresh_budget_peers(tmp_path, "headneck") == ["headneck_a"]
    expected = f"3000 iterations, the same budget and phantoms as headneck_b (equal budget), {tail}"
    assert json.loads((first / "configs" / "metadata.json").read_text())["rtdeep"]["training"]["budget"] == expected
    assert (first / "docs" / "README.md").read_text() == f"# headneck_a\n\n## Training\n- budget: {expected}\n- other: kept\n"
    verify_bundle(first)  # the manifest follows the rewritten card and metadata
    assert (by_hand / "docs" / "README.md").read_text() == card_by_hand
    assert train_all.refresh_budget_peers(tmp_path, "headneck") == []  # up to date: nothing rewritten

    shutil.rmtree(twin / "models")  # the twin withdrawn: the first card says so again
    assert train_all.refresh_budget_peers(tmp_path, "headneck") == ["headneck_a"]
    assert "- budget: 3000 iterations, a budget no other shipped" in (first / "docs" / "README.md").read_text()


def test_enforce_floors_withdraws_shipped_models_below_a_floor_and_keeps_ensembles_whole(tmp_path: Path) -> None:

    from rtdeep.errors import RtDeepError
    from rtdeep.training import train_all

    models = tmp_path / "models"
    good, weak = {"Parotid_L": 0.88, "Mandible": 0.95}, {"Parotid_L": 0.84, "Mandible": 0.95}
    database = {
        "models": [{"name": "headneck_a", "heldout_dice_median": good},
                   {"name": "headneck_b", "heldout_dice_median": weak},
                   {"name": "headneck_ensemble", "members": ["headneck_a", "headneck_b"], "heldout_dice_median": good}],
        "not_shipped": [{"name": "headneck_c", "reason": "earlier"}],
        "classifiers": [{"name": "kept as it is"}],
    }
    for entry in database["models"]:
        (models / entry["name"]).mkdir(parents=True)
    (models / "models.json").write_text(json.dumps(database))
    with pytest.raises(RtDeepError, match="headneck_b would leave ensemble headneck_ensemble"):
        train_all.enforce_floors(models)
    assert (models / "headneck_b").is_dir()  # refused: nothing changed

    database["models"] = database["models"][:2]
    (models / "models.json").write_text(json.dumps(database))
    assert train_all.enforce_floors(models) == ["headneck_b"]
    after = json.loads((models / "models.json").read_text())
    assert [entry["name"] for entry in after["models"]] == ["headneck_a"]
    assert [entry["name"] for entry in after["not_shipped"]] == ["headneck_b", "headneck_c"]
    assert "Parotid_L 0.840 (floor 0.85)" in after["not_shipped"][0]["reason"]
    assert not (models / "headneck_b").exists() and (models / "headneck_a").is_dir()
    assert after["classifiers"] == database["classifiers"]


def test_a_training_seed_repeats_exactly_another_trains_differently_and_spread_compares_runs(
        tmp_path: Path, monkeypatch, capsys) -> None:
    """Runs of one recipe differ only by their seed: the same seed gives the same weights, another
    seed other weights (what ``train --seed`` varies); ``spread`` sets the runs' held-out medians side
    by side with their range, and says when the runs differ in more than the seed."""
    from rtdeep.training import train_all

    site = SITES["thorax"]
    arch = dataclasses.replace(ARCHITECTURES["unet25d"], patch_size=(32, 32), batch_size=2)
    weights = {}
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):
        config = TrainConfig(site="thorax", arch="unet25d", time_budget_s=1e9, max_epochs=1, iterations_per_epoch=3,
                             threads=1, seed=seed)
        train_segmentation(config, site, arch, _toy_cases(2), [], tmp_path / run)
        weights[run] = torch.load(tmp_path / run / "best_model.pt", weights_only=True)
    assert all(torch.equal(weights["a"][key], weights["b"][key]) for key in weights["a"])
    assert not all(torch.equal(weights["a"][key], weights["c"][key]) for key in weights["a"])

    monkeypatch.setattr(train_all, "WORK_DIR", tmp_path / "work")
    organs = SITES["headneck"].organ_names
    assert train_all.run_name("headneck_unet3d_fine", 0) == "headneck_unet3d_fine"
    for seed, dice, generator in ((0, 0.90, "b3eb6de6a32c"), (2, 0.86, "b3eb6de6a32c")):
        run = tmp_path / "work" / train_all.run_name("headneck_unet3d_fine", seed)
        run.mkdir(parents=True)
        (run / "heldout.json").write_text(json.dumps({"dice_median": {o: dice for o in organs}}))
        (run / "result.json").write_text(json.dumps({"iterations_budget": 3000, "phantom_generator": generator}))
    assert (tmp_path / "work" / "headneck_unet3d_fine_seed2").is_dir()
    assert train_all.main(["spread", "--sites", "headneck", "--archs", "unet3d_fine", "--seeds", "0", "1", "2"]) == 0
    table = capsys.readouterr().out
    assert "(not measured: seed 1)" in table and "| seed 0 | seed 2 | range |" in table
    assert f"| {organs[0]} | 0.900 | 0.860 | 0.040 |" in table and "| mean | 0.900 | 0.860 | 0.040 |" in table
    assert "differ in more than the seed" not in table
    result = tmp_path / "work" / "headneck_unet3d_fine_seed2" / "result.json"
    result.write_text(json.dumps({"iterations_budget": 3000, "phantom_generator": "095832738776"}))
    assert train_all.main(["spread", "--sites", "headneck", "--archs", "unet3d_fine", "--seeds", "0", "2"]) == 0
    assert "these runs differ in more than the seed (phantom_generator)" in capsys.readouterr().out


def test_training_phantoms_grow_without_touching_validation_or_heldout() -> None:
    from rtdeep.training.train_all import HELDOUT_INDICES, TRAIN_INDICES, VAL_INDICES, train_indices

    assert TRAIN_INDICES == train_indices(24) and len(TRAIN_INDICES) == 24
    more = train_indices(72)
    assert len(set(more)) == 72 and more[:24] == TRAIN_INDICES  # the shipped bundles' phantoms first
    assert not set(more) & set(VAL_INDICES)
    assert max(more) < min(HELDOUT_INDICES)  # held-out phantoms also have their own seed


def test_default_model_is_the_best_measured_model_of_the_site(tmp_path: Path) -> None:
    """One source for the model the demo, the web app and the panels start with: models.json."""

    from rtdeep.model_database import default_model
    from rtdeep.sites import get_site

    organs = get_site("thorax").organ_names

    def entry(name: str, dice: dict[str, float]) -> dict:
        return {"name": name, "site": "thorax", "segments": organs, "heldout_dice_median": dice}

    good_mean = {o: 0.99 for o in organs} | {"Esophagus": 0.70}  # higher mean, but an organ below its floor
    all_floors = {o: 0.95 for o in organs} | {"Heart": 0.91, "Esophagus": 0.81, "SpinalCord": 0.86}
    (tmp_path / "models.json").write_text(json.dumps({"models": [
        entry("thorax_a", good_mean), entry("thorax_b", all_floors), entry("headneck_c", {})]}))
    assert default_model("thorax", tmp_path) == "thorax_b"
    assert default_model("headneck", tmp_path) == "headneck_atlas"  # nothing measured: the atlas baseline


def test_one_floor_rule_counts_missing_dice_and_ignores_organs_without_a_floor():
    """``organs_below_floor`` is the rule the panel warning, the default model, package, enforce-floors
    and select all apply: a NaN Dice (organ never found) is below its floor, an organ without a floor
    never is, and a Dice equal to the floor meets it."""
    from rtdeep.model_database import organs_below_floor
    from rtdeep.sites import ORGANS

    floors = {"Heart": ORGANS["Heart"].dice_floor, "Esophagus": ORGANS["Esophagus"].dice_floor}
    assert organs_below_floor({"Heart": floors["Heart"], "Esophagus": floors["Esophagus"] - 0.001}) == ["Esophagus"]
    assert organs_below_floor({"Heart": float("nan"), "Unknown_ROI": 0.0}) == ["Heart"]


def test_learning_rate_schedule_is_constant_then_cosine_to_five_percent():
    """The decay starts at ``decay_from_iteration`` and ends at 5 % on the last iteration; without it
    the rate is constant; resuming at any iteration gives the same rate (a function of the count)."""
    from rtdeep.training.trainer import TrainConfig, learning_rate_at

    config = TrainConfig(site="thorax", arch="unet25d", max_epochs=28, iterations_per_epoch=50,
                         decay_from_iteration=1000)
    assert learning_rate_at(config, 1e-3, 0) == learning_rate_at(config, 1e-3, 1000) == 1e-3
    middle = learning_rate_at(config, 1e-3, 1200)
    assert 0.05e-3 < middle < 1e-3 and abs(middle - 0.525e-3) < 1e-9
    assert abs(learning_rate_at(config, 1e-3, 1400) - 0.05e-3) < 1e-12
    assert learning_rate_at(TrainConfig(site="thorax", arch="unet25d"), 1e-3, 999) == 1e-3


def test_fine_grid_3d_network_sees_as_many_mm_in_plane_as_the_2_5_mm_one() -> None:
    """Moved to the 1.25 mm grid with the 2.5 mm network's levels, the 3D U-Net's receptive field
    shrank to half the millimetres (81 against 162 mm) and it missed the submandibular glands; the
    extra in-plane-only level restores the field without halving the 3 mm slices early."""
    from rtdeep.models.registry import receptive_field

    site = SITES["headneck"]
    coarse, fine = ARCHITECTURES["unet3d"], ARCHITECTURES["unet3d_fine"]
    coarse_mm = receptive_field(coarse.network_spec(site), (16, 80, 80))[-1] * coarse.model_site(site).spacing_mm[0]
    fine_field = receptive_field(fine.network_spec(site), (16, 160, 160))
    fine_mm = fine_field[-1] * fine.model_site(site).spacing_mm[0]
    assert fine_field[-2] == fine_field[-1] and abs(fine_mm - coarse_mm) <= coarse.model_site(site).spacing_mm[0]
    first_design = dataclasses.replace(fine, channels=coarse.channels, in_plane_first_halving=False)
    assert receptive_field(first_design.network_spec(site), (16, 160, 160))[-1] * 1.25 < 0.6 * coarse_mm
    assert fine.strides[1] == (1, 2, 2)  # slices kept at the first halving
    network = build_network(fine.network_spec(site)).eval()
    with torch.no_grad():
        out = network(torch.zeros(1, 1, *fine.patch_size))
    assert out.shape == (1, site.n_classes, *fine.patch_size)


@pytest.mark.parametrize("arch_name", ["unet3d_fine", "unet25d_fine"])
def test_loaded_networks_compute_stride_one_transposed_layers_as_convolutions(arch_name: str, tmp_path: Path) -> None:
    """load_bundle runs the full-resolution level's transposed convolution (slow on CPU) as the
    ordinary convolution with the same outputs, and the network still writes the same bundle."""
    from rtdeep.bundles import write_bundle
    from rtdeep.training.model_card import segmentation_metadata

    arch, site = ARCHITECTURES[arch_name], SITES["headneck"]
    torch.manual_seed(0)
    built = build_network(arch.network_spec(site)).eval()
    metadata = segmentation_metadata(site, arch)
    loaded = load_bundle(write_bundle(tmp_path / arch_name, built, metadata, "# card\n"))
    plain = (torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)
    assert any(type(m) in plain and set(m.stride) == {1} for m in built.modules())
    assert not any(type(m) in plain and set(m.stride) == {1} for m in loaded.network.modules())
    size = (16, 64, 64) if arch.spatial_dims == 3 else (64, 64)
    image = torch.rand(2, arch.context_slices, *size)
    with torch.no_grad():
        assert torch.allclose(loaded.network(image), built(image), atol=1e-4)
    again = load_bundle(write_bundle(tmp_path / "again", loaded.network, metadata, "# card\n"))
    assert all(torch.equal(a, b) for a, b in zip(again.network.state_dict().values(),
                                                 built.state_dict().values(), strict=True))


class _PointwiseNetwork(torch.nn.Module):
    """Logits that depend on each voxel alone (a 1x1x1 convolution): any tiling gives the same
    probabilities, so tissue-box tiling must reproduce the whole-image sliding window exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.convolution = torch.nn.Conv3d(1, 3, 1)
        with torch.no_grad():
            self.convolution.weight.copy_(torch.tensor([-40.0, 10.0, 40.0]).view(3, 1, 1, 1, 1))
            self.convolution.bias.copy_(torch.tensor([20.0, 0.0, -16.0]))  # air (0): background
        self.windows = 0

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.windows += batch.shape[0]
        return self.convolution(batch)


def test_body_box_is_the_patient_not_the_couch_top_under_it() -> None:
    """A head on a flat RT couch top (1.5 mm carbon-fibre skins over foam below the body threshold,
    530 mm wide): the crop is the head's, as without the couch; a solid 20 mm board stays (not a
    sheet); an object thinner than the sheets keeps its plain box; the MONAI bundle config's
    ``body_voxels`` gives the same box."""
    from monai.data import MetaTensor

    from rtdeep.inference.preprocess import body_box, body_voxels

    spacing = 1.0  # mm, in-plane; 3 mm slices
    affine = np.diag([spacing, spacing, 3.0, 1.0])
    jj, ii = np.mgrid[0:560, 0:560]
    head = ((ii - 280) / 80.0) ** 2 + ((jj - 250) / 100.0) ** 2 <= 1.0  # 161 x 201 pixels
    hu = np.full((12, 560, 560), -1000.0, np.float32)
    hu[:, head] = 40.0
    alone = body_box(Volume(hu, affine))
    assert (alone[1].start, alone[1].stop, alone[2].start, alone[2].stop) == (146, 355, 196, 365)

    on_couch = hu.copy()
    on_couch[:, 352:392, 15:545] = -900.0  # foam core, 40 mm
    on_couch[:, 351, 15:545] = on_couch[:, 392, 15:545] = 250.0  # the skins
    assert body_box(Volume(on_couch, affine)) == alone
    board = hu.copy()
    board[:, 352:372, 15:545] = 100.0  # 20 mm solid: thicker than a sheet, so it is kept
    assert body_box(Volume(board, affine))[2] == slice(11, 549)
    wire = np.full((12, 560, 560), -1000.0, np.float32)
    wire[:, 100:103, 50:400] = 500.0  # 3 mm: thinner than the sheets, and all there is
    assert body_box(Volume(wire, affine))[1:] == (slice(96, 107), slice(46, 404))

    image = MetaTensor(torch.from_numpy(on_couch.transpose(2, 1, 0)[None].copy()), affine=torch.tensor(affine))
    mask = body_voxels(image)[0].numpy()  # [i, j, k]
    columns, rows = np.flatnonzero(mask.any(axis=(1, 2))), np.flatnonzero(mask.any(axis=(0, 2)))
    assert (rows[0] - 4, rows[-1] + 5, columns[0] - 4, columns[-1] + 5) == (146, 355, 196, 365)
    assert mask.any(axis=(0, 1)).all()  # every slice kept


def test_3d_windows_cover_each_slab_s_tissue_only_and_change_nothing_there() -> None:
    """A head above wide shoulders: the head's slabs get narrower boxes (fewer windows), every
    tissue voxel lies in its slab's box, a slab of air gets none, and a network whose output depends
    on each voxel alone gives the whole-image sliding window's probabilities."""
    from rtdeep.inference.predict import TISSUE_MARGIN, predict_probabilities, tissue_slabs

    rng = np.random.default_rng(0)
    image = np.zeros((40, 96, 160), np.float32)  # [k, j, i], windowed: air 0
    image[0:14, 20:80, 10:150] = rng.uniform(0.2, 1.0, (14, 60, 140))  # shoulders
    image[14:30, 30:70, 60:100] = rng.uniform(0.2, 1.0, (16, 40, 40))  # neck and head; slices 30-39 air
    roi, overlap = (8, 32, 32), 0.25
    slabs = tissue_slabs(image, 0.0, roi, overlap)
    assert [slab.start for slab, _ in slabs][:3] == [0, 6, 12] and slabs[-1][0].stop == 40
    for slab, box in slabs:
        tissue = image[slab] > 0
        if not tissue.any():
            assert box is None
            continue
        inside = np.zeros_like(tissue)
        inside[:, box[1], box[2]] = True
        assert not (tissue & ~inside).any()  # no tissue outside the box
        rows = np.flatnonzero(tissue.any(axis=(0, 2)))
        assert box[1].start == max(rows[0] - TISSUE_MARGIN, 0) or box[1].stop - box[1].start == roi[1]
        assert all(b.stop - b.start >= w for b, w in zip(box[1:], roi[1:], strict=True))
    widths = {slab.start: box[2].stop - box[2].start for slab, box in slabs if box is not None}
    assert widths[18] == 48 < widths[0] == 148  # the head's slab: 40 columns + margins
    assert any(box is None for _, box in slabs)
    on_couch = image.copy()  # a couch top's skins, 1 voxel thick and as wide as the image, in every slice
    on_couch[:, 84, :] = on_couch[:, 88, :] = 0.6
    assert tissue_slabs(on_couch, 0.0, roi, overlap) == slabs  # thin sheets widen no box, fill no slab of air
    masked = image.copy()  # a thermoplastic mask: a 1-voxel shell 2 voxels off the head, its outline
    for k in range(14, 30):  # growing by a voxel every second slice: a band 8 voxels wide in projection
        grow = (k - 14) // 2
        r0, r1, c0, c1 = 27 - grow, 72 + grow, 57 - grow, 102 + grow
        masked[k, r0, c0:c1 + 1] = masked[k, r1, c0:c1 + 1] = masked[k, r0:r1 + 1, c0] = masked[k, r0:r1 + 1, c1] = 0.5
    masked[14:30, 48:53, 112:117] = 0.8  # and the rim of its frame beside the head: 25 voxels, 1.6 % of the head
    assert tissue_slabs(masked, 0.0, roi, overlap) == slabs
    with_arm = masked.copy()
    with_arm[14:30, 40:50, 120:130] = 0.5  # a piece 6 % of the head (an arm beside a chest): tissue
    widths_arm = {slab.start: box[2].stop - box[2].start for slab, box in tissue_slabs(with_arm, 0.0, roi, overlap)
                  if box is not None}
    assert widths_arm[18] == 130 + TISSUE_MARGIN - (60 - TISSUE_MARGIN)

    network = _PointwiseNetwork().eval()
    whole = predict_probabilities(network, image, spatial_dims=3, roi_size=roi, overlap=overlap, size_divisor=8)
    whole_windows, network.windows = network.windows, 0
    tiled = predict_probabilities(network, image, spatial_dims=3, roi_size=roi, overlap=overlap, size_divisor=8,
                                  tissue_level=0.0)
    assert network.windows < 0.6 * whole_windows
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    np.testing.assert_allclose(tiled.sum(axis=0), 1.0, atol=1e-5)


@pytest.mark.parametrize(("shape", "roi", "overlap"), [
    ((20, 70, 45), (8, 32, 32), 0.25),   # several windows, the last ones flush with the ends
    ((5, 32, 19), (8, 32, 32), 0.25),    # shorter than the window along k and i: padded, cropped back
    ((16, 64, 64), (16, 32, 32), 0.5),   # one window along k (exactly its size)
])
def test_sliding_window_is_monai_s_constant_mode_sliding_window(shape: tuple[int, ...], roi: tuple[int, ...],
                                                                  overlap: float) -> None:
    """rtdeep runs 3D networks without importing MONAI; its window placement, zero padding and
    averaging must give what MONAI's sliding_window_inference gives, for a predictor whose output
    depends on where each voxel lies in its window (so a window or a padding put elsewhere shows)."""
    from monai.inferers import sliding_window_inference

    from rtdeep.inference.predict import sliding_window

    torch.manual_seed(0)
    convolution = torch.nn.Conv3d(2, 3, 3, padding=1).eval()
    inputs = torch.rand(1, 2, *shape)
    calls: list[tuple[int, ...]] = []

    ramp = sum(torch.linspace(0.0, float(axis + 1), size).reshape([-1 if a == axis else 1 for a in range(3)])
               for axis, size in enumerate(roi))

    def predictor(window: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(window.shape))
        return torch.softmax(convolution(window) + ramp, dim=1)

    with torch.no_grad():
        ours = sliding_window(inputs, roi, overlap, predictor)
        n_ours = len(calls)
        theirs = sliding_window_inference(inputs, roi, sw_batch_size=1, predictor=predictor, overlap=overlap,
                                          mode="constant")
    assert ours.shape == (1, 3, *shape)
    assert n_ours == len(calls) - n_ours and all(call == (1, 2, *roi) for call in calls)
    torch.testing.assert_close(ours, theirs, rtol=0.0, atol=1e-6)


def test_convergence_reads_the_gain_of_the_last_iterations_from_the_best_so_far() -> None:
    """A dip at the end does not count as a loss (the best epoch is what ships); too short a history
    says nothing."""
    from rtdeep.training.train_all import convergence

    history = [{"iterations": i, "val_mean_dice": d} for i, d in ((100, 0.6), (200, 0.7), (300, 0.9), (400, 0.85))]
    assert convergence(history, window=100) == ("best validation mean Dice 0.900 after 400 iterations; the last 100 "
                                                "iterations added +0.000 to the best, the 100 before them +0.200")
    assert convergence(history, window=300) == ""
    assert convergence([]) == ""
