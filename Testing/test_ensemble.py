"""Ensemble bundles: members' probabilities averaged on the ensemble's model grid, refused when they do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHIPPED_ENSEMBLES

from rtdeep.bundles import (
    MANIFEST_NAME,
    MODEL_CARD_PATH,
    load_bundle,
    models_dir,
    write_bundle,
    write_ensemble_bundle,
)
from rtdeep.errors import BundleError
from rtdeep.inference.segment import predict_model_grid
from rtdeep.models import build_network
from rtdeep.models.architectures import ARCHITECTURES
from rtdeep.resample import sample_on_grid
from rtdeep.sites import SITES
from rtdeep.training.model_card import ensemble_metadata, segmentation_metadata
from rtdeep.volume import Volume


def _member(root: Path, arch_name: str, seed: int, **changes) -> str:
    site, arch = SITES["thorax"], ARCHITECTURES[arch_name]
    torch.manual_seed(seed)
    metadata = segmentation_metadata(site, arch)
    metadata["rtdeep"].update(changes)
    write_bundle(root / f"thorax_{arch_name}", build_network(arch.network_spec(site)), metadata, "# member\n")
    return f"thorax_{arch_name}"


def _ensemble(root: Path, members: list[str]) -> Path:
    titles = {name: name.split("_")[1] for name in members}
    return write_ensemble_bundle(root / "thorax_ensemble", ensemble_metadata(SITES["thorax"], titles, "thorax_ensemble"),
                                 "# ensemble card\n")


def _small_ct() -> Volume:
    """A body-shaped block of soft tissue with a denser core: enough for both networks' grids."""
    rng = np.random.default_rng(0)
    array = np.full((24, 80, 80), -1000.0, np.float32)
    array[:, 10:70, 12:68] = 40.0 + rng.normal(0, 20, (24, 60, 56))
    array[:, 30:50, 30:50] = 400.0
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    return Volume(array, affine)


def test_ensemble_probabilities_are_the_mean_of_its_members(tmp_path: Path) -> None:
    members = [_member(tmp_path, "unet3d", 0), _member(tmp_path, "unet25d", 1)]
    ensemble = load_bundle(_ensemble(tmp_path, members))
    assert [member.path.name for member in ensemble.members] == members
    assert not ensemble.network.training and len(ensemble.network) == 2
    assert set(json.loads((ensemble.path / MANIFEST_NAME).read_text())) == {"configs/metadata.json", MODEL_CARD_PATH}
    torch.set_num_threads(2)
    ct = _small_ct()
    mean, affine = predict_model_grid(ct, ensemble)
    each = [predict_model_grid(ct, member) for member in ensemble.members]
    assert np.allclose(affine, each[0][1])
    assert np.allclose(mean, (each[0][0] + each[1][0]) / 2, atol=1e-6)
    assert not np.allclose(each[0][0], each[1][0], atol=1e-3)  # two different networks, really averaged
    assert np.allclose(mean.sum(axis=0), 1.0, atol=1e-4)


def test_a_member_on_another_grid_is_averaged_on_the_ensembles_grid(tmp_path: Path) -> None:
    """A 3D U-Net on a 4 mm grid and a 2.5D U-Net on the ensemble's 2.5 mm grid: the coarse member's
    probabilities are resampled (trilinear) onto the ensemble's grid before the mean."""
    coarse = _member(tmp_path, "unet3d", 0, spacing_mm=[4.0, 4.0, 3.0])
    ensemble = load_bundle(_ensemble(tmp_path, [coarse, _member(tmp_path, "unet25d", 1)]))
    torch.set_num_threads(2)
    ct = _small_ct()
    mean, affine = predict_model_grid(ct, ensemble)
    (coarse_p, coarse_affine), (fine_p, fine_affine) = (predict_model_grid(ct, m) for m in ensemble.members)
    assert np.allclose(affine, fine_affine) and coarse_p.shape[1:] != fine_p.shape[1:]
    on_grid = np.stack([sample_on_grid(Volume(c, coarse_affine), affine, fine_p.shape[1:], fill=float(v == 0))[0]
                        for v, c in enumerate(coarse_p)])
    assert np.allclose(mean, (on_grid + fine_p) / 2, atol=1e-5)
    assert np.allclose(mean.sum(axis=0), 1.0, atol=1e-4)


def test_organ_box_is_the_organs_rows_and_columns_plus_the_margin_in_mm() -> None:
    from rtdeep.inference.segment import ORGAN_BOX_MARGIN_MM, _organ_box

    probabilities = np.zeros((3, 10, 200, 300), np.float32)
    probabilities[0] = 1.0
    probabilities[:, 4:6, 80:90, 100:150] = [[[[0.2]]], [[[0.7]]], [[[0.1]]]]
    spacing = (1.25, 2.0, 3.0)  # (i, j, k) mm: the margin in voxels differs along i and j
    box = _organ_box(probabilities, spacing)
    margin_i, margin_j = int(np.ceil(ORGAN_BOX_MARGIN_MM / 1.25)), int(np.ceil(ORGAN_BOX_MARGIN_MM / 2.0))
    assert box == (slice(0, 10), slice(80 - margin_j, 90 + margin_j), slice(100 - margin_i, 150 + margin_i))
    probabilities[1:, :, :, :] = 0.0
    assert _organ_box(probabilities, spacing) is None  # nothing found: the later members look everywhere


@pytest.mark.parametrize("name", SHIPPED_ENSEMBLES)
def test_a_later_fine_member_looks_only_near_the_organs_the_first_found(name: str) -> None:
    """The shipped ensemble on a held-out phantom: its fine-grid member runs inside the box of the
    first member's organs (plus 25 mm), smaller than the body box; outside it every voxel is
    background, and the organs are where the first member put them."""
    from rtdeep.inference.segment import _onto_grid, _organ_box
    from rtdeep.phantom import generate_patient

    torch.set_num_threads(2)
    ensemble = load_bundle(name)
    ct = generate_patient("thorax", 150, 2, grid="small").ct
    mean, affine = predict_model_grid(ct, ensemble)
    first, first_affine = predict_model_grid(ct, ensemble.members[0])
    spacing = tuple(float(v) for v in ensemble.config["spacing_mm"])
    box = _organ_box(_onto_grid(first, first_affine, Volume(mean[0], affine)), spacing)
    assert box is not None
    assert (box[1].stop - box[1].start) * (box[2].stop - box[2].start) < mean.shape[2] * mean.shape[3]
    outside = np.ones(mean.shape[1:], bool)
    outside[box] = False
    labels = mean.argmax(axis=0)
    assert outside.any() and not labels[outside].any()
    assert np.allclose(mean.sum(axis=0), 1.0, atol=1e-4)


def test_ensemble_members_must_share_the_window_and_exist(tmp_path: Path) -> None:
    other_window = _member(tmp_path, "unet3d", 0, intensity_window=[-160.0, 240.0])
    ensemble = _ensemble(tmp_path, [other_window, _member(tmp_path, "unet25d", 1)])
    with pytest.raises(BundleError, match="member 'thorax_unet3d' has intensity_window") as raised:
        load_bundle(ensemble)
    assert str(ensemble / "configs" / "metadata.json") in str(raised.value)
    missing = tmp_path / "other"
    _member(missing, "unet25d", 1)
    metadata = json.loads((ensemble / "configs" / "metadata.json").read_text())
    metadata["rtdeep"]["members"] = ["thorax_unet25d", "thorax_no_such_model"]
    write_ensemble_bundle(missing / "thorax_ensemble", metadata, "# card\n")
    with pytest.raises(BundleError, match="no model bundle"):
        load_bundle(missing / "thorax_ensemble")
    with pytest.raises(BundleError, match="two or more"):
        write_ensemble_bundle(tmp_path / "one", metadata | {"rtdeep": metadata["rtdeep"] | {"members": ["x"]}}, "#\n")


def test_changed_ensemble_card_is_refused(tmp_path: Path) -> None:
    ensemble = _ensemble(tmp_path, [_member(tmp_path, "unet3d", 0), _member(tmp_path, "unet25d", 1)])
    (ensemble / MODEL_CARD_PATH).write_text("# edited\n")
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(ensemble)


@pytest.mark.parametrize("name", SHIPPED_ENSEMBLES)
def test_shipped_ensemble_is_measured_and_its_members_are_shipped(name: str) -> None:
    database = {entry["name"]: entry for entry in json.loads((models_dir() / "models.json").read_text())["models"]}
    entry = database[name]
    bundle = load_bundle(name)
    assert [member.path.name for member in bundle.members] == entry["members"]
    assert all(member in database for member in entry["members"])
    assert entry["architecture"] == "ensemble" and entry["segments"] == list(SITES[bundle.site].organ_names)
    card = (bundle.path / MODEL_CARD_PATH).read_text()
    assert "synthetic phantoms" in card.lower() and "Held-out" in card
    for organ, dice in entry["heldout_dice_median"].items():
        assert f"| {organ} | {dice:.3f} |" in card


def _headneck_u_nets(models: Path, archs: tuple[str, ...] = ("unet3d", "unet25d")):  # -> Site
    """Untrained head-and-neck U-Net bundles of ``archs`` in ``models`` (different seeds)."""
    site = SITES["headneck"]
    for seed, arch_name in enumerate(archs):
        arch = ARCHITECTURES[arch_name]
        torch.manual_seed(seed)
        write_bundle(models / f"headneck_{arch_name}", build_network(arch.network_spec(site)),
                     segmentation_metadata(site, arch), "# member\n")
    return site


def test_train_all_ensemble_measures_once_then_adds_the_speed(tmp_path: Path, monkeypatch) -> None:
    """``train_all ensemble``: the ensemble of two shipped-style members is measured on a held-out
    phantom through the real pipeline, written with its card and models.json entry; a second run with
    a benchmark re-uses the measurement (same member weights) and adds the speed."""
    from rtdeep.training import train_all

    models, work = tmp_path / "models", tmp_path / "work"
    monkeypatch.setattr(train_all, "WORK_DIR", work)
    monkeypatch.setattr(train_all, "HELDOUT_INDICES", [100])  # one small-grid held-out phantom keeps it short
    monkeypatch.setattr(train_all, "GRID", "small")
    site = _headneck_u_nets(models, ("unet3d", "unet25d_fine"))
    (models / "models.json").write_text(json.dumps({"models": [{"name": "headneck_unet3d"}]}))
    train_all.package_ensemble(["headneck", "thorax"], ["unet3d", "unet25d_fine"], models, None, 2, "the two U-Nets")
    database = json.loads((models / "models.json").read_text())
    assert [entry["name"] for entry in database["models"]] == ["headneck_ensemble", "headneck_unet3d"]
    entry = database["models"][0]
    assert entry["members"] == ["headneck_unet3d", "headneck_unet25d_fine"] and entry["architecture"] == "ensemble"
    assert sorted(entry["heldout_dice_median"]) == sorted(site.organ_names)
    bundle = load_bundle(models / "headneck_ensemble")
    assert [member.path for member in bundle.members] == [models / "headneck_unet3d", models / "headneck_unet25d_fine"]
    assert bundle.config["members"] == entry["members"]  # by name: the folder can move with its members
    card = (bundle.path / MODEL_CARD_PATH).read_text()
    assert "Choice of members: the two U-Nets" in card and "train_all ensemble --sites headneck" in card
    fine = [1.25, 1.25, 3.0]  # the finest member's grid, where the probabilities are averaged and the CT goes
    assert bundle.config["spacing_mm"] == fine
    assert f"averaged on the model grid {fine} mm" in card and f"resampled to {fine} mm" in card
    assert not (work / "headneck_ensemble" / "staging").exists()
    measured = work / "headneck_ensemble" / "heldout.json"
    before = measured.stat().st_mtime_ns
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"headneck_ensemble": {"description": "bench", "wall_s_median": 12.5,
                                                       "peak_rss_mb_median": 1500.0}}))
    train_all.package_ensemble(["headneck"], ["unet3d", "unet25d_fine"], models, bench, 2, "the two U-Nets")
    assert measured.stat().st_mtime_ns == before
    # measured on another phantom generator's phantoms: measured again, never reused
    measured.write_text(json.dumps(json.loads(measured.read_text()) | {"phantom_generator": "older"}))
    train_all.package_ensemble(["headneck"], ["unet3d", "unet25d_fine"], models, bench, 2, "the two U-Nets")
    assert json.loads(measured.read_text())["phantom_generator"] != "older"
    assert "- wall time median s: 12.5" in (models / "headneck_ensemble" / MODEL_CARD_PATH).read_text()
    assert json.loads((models / "models.json").read_text())["models"][0]["cpu_seconds_median"] == 12.5


def test_train_all_select_compares_candidates_on_selection_phantoms(tmp_path: Path, monkeypatch) -> None:
    """``train_all select``: single bundles and '+'-joined ensembles measured through the real pipeline
    on a selection phantom (seed 1, an index no model trained on; never a held-out one), ranked by the
    default-model rule; a candidate whose bundle is missing is skipped, staging is removed."""
    from rtdeep.training import train_all

    models, work = tmp_path / "models", tmp_path / "work"
    monkeypatch.setattr(train_all, "WORK_DIR", work)
    monkeypatch.setattr(train_all, "SELECTION_INDICES", [200])
    monkeypatch.setattr(train_all, "GRID", "small")  # a small-grid phantom keeps the test short
    _headneck_u_nets(models)
    chosen = train_all.select(["headneck"], ["unet3d", "unet3d+unet25d", "gan3d"], models, 2)["headneck"]
    assert list(chosen["candidates"]) in (["unet3d", "unet3d+unet25d"], ["unet3d+unet25d", "unet3d"])
    assert chosen["phantoms"].startswith(f"seed {train_all.TRAIN_SEED}, indices 200-200")
    assert train_all.TRAIN_SEED != train_all.HELDOUT_SEED and 200 not in train_all.train_indices(72)

    def rank(candidate: str) -> tuple:
        dice = chosen["candidates"][candidate]["dice_median"]
        below = sum(1 for organ, value in dice.items() if organ in train_all.FLOORS and value < train_all.FLOORS[organ])
        return below, -float(np.mean(list(dice.values())))

    assert chosen["best"] == min(chosen["candidates"], key=rank)
    assert json.loads((work / "headneck_selection.json").read_text())["best"] == chosen["best"]
    assert not (work / "headneck_selection").exists()
