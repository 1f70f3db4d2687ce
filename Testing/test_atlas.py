"""Multi-atlas baseline on small phantoms: organ names, colours, a Dice floor, the cache."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pytest

from rtdeep.atlas import ATLAS_SEED, atlas_site, load_atlases, segment_with_atlas
from rtdeep.errors import RtDeepError
from rtdeep.metrics import compare_structure_sets
from rtdeep.sites import SITES

TEST_SEED = 4_242  # a held-out patient: not the atlas seed
N_ATLASES = 3


@pytest.fixture(scope="module")
def atlas_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rtdeep_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RTDEEP_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def thorax_result(atlas_cache: Path):
    from rtdeep.phantom import generate_patient

    patient = generate_patient("thorax", 3, TEST_SEED, grid="small")
    calls: list[tuple[float, str]] = []
    rois = segment_with_atlas(patient.ct, "thorax", n_atlases=N_ATLASES, progress_callback=lambda f, m: calls.append((f, m)))
    return patient, rois, calls


def test_atlases_are_built_from_a_seed_no_project_cohort_uses(atlas_cache: Path) -> None:
    """The atlas library never holds a training, held-out, demo or test patient."""
    from rtdeep.atlas.library import build_atlas
    from rtdeep.commands.demo import DEMO_SEED
    from rtdeep.commands.phantom import add_arguments as phantom_arguments
    from rtdeep.training.train_all import HELDOUT_SEED, TRAIN_SEED

    parser = argparse.ArgumentParser()
    phantom_arguments(parser)
    default_cohort_seed = parser.parse_args(["--site", "thorax", "--patients", "1", "--out", "x"]).seed
    assert ATLAS_SEED not in {TRAIN_SEED, HELDOUT_SEED, DEMO_SEED, default_cohort_seed, TEST_SEED}
    # and the library the segmentation loads is the phantoms of ATLAS_SEED (not a default seed)
    loaded = load_atlases("thorax", 1)[0]
    rebuilt = build_atlas("thorax", 0, ATLAS_SEED)
    assert loaded.patient_id == rebuilt.patient_id
    assert np.array_equal(loaded.labels.array, rebuilt.labels.array)
    assert not np.array_equal(build_atlas("thorax", 0, TRAIN_SEED).labels.array, rebuilt.labels.array)


def test_thorax_rois_are_named_coloured_and_automatic(thorax_result) -> None:
    patient, rois, calls = thorax_result
    assert [roi.name for roi in rois] == list(SITES["thorax"].organ_names)
    for roi in rois:
        assert roi.mask.shape == patient.ct.shape and roi.mask.dtype == bool and roi.mask.any()
        assert roi.generation_algorithm == "AUTOMATIC" and roi.interpreted_type == "ORGAN"
    assert len({roi.color_rgb for roi in rois}) == len(rois)
    assert len({roi.number for roi in rois}) == len(rois)
    assert calls[0][0] == 0.0 and calls[-1][0] == 1.0
    assert all(b[0] >= a[0] for a, b in itertools.pairwise(calls))


def test_thorax_lungs_reach_dice_floor(thorax_result) -> None:
    patient, rois, _ = thorax_result
    rows = {row["roi_name"]: row for row in compare_structure_sets(patient.rois, rois, patient.ct)}
    assert rows["Lung_L"]["dice"] >= 0.8, rows["Lung_L"]
    assert rows["Lung_R"]["dice"] >= 0.8, rows["Lung_R"]
    # a sanity floor for the baseline, not its accuracy (bench_seg_methods measures that): since the
    # issue-9 phantom puts the great vessels against the heart, the atlas reaches 0.57 on this patient
    assert rows["Heart"]["dice"] >= 0.5, rows["Heart"]
    # the lungs must not swap sides: Lung_L lies at larger LPS x (patient's left)
    lung_x = {}
    for roi in rois:
        if roi.name.startswith("Lung_"):
            centre_kji = np.argwhere(roi.mask).mean(axis=0)
            lung_x[roi.name] = patient.ct.index_to_lps(centre_kji[::-1])[0]
    assert lung_x["Lung_L"] > lung_x["Lung_R"]


def test_library_is_cached(thorax_result, atlas_cache: Path) -> None:
    files = sorted((atlas_cache / "atlas").glob("thorax_*.npz"))
    assert len(files) == N_ATLASES
    atlases = load_atlases("thorax", N_ATLASES)
    assert [atlas.organ_names for atlas in atlases] == [SITES["thorax"].organ_names] * N_ATLASES
    assert sorted((atlas_cache / "atlas").glob("thorax_*.npz")) == files


def test_headneck_affine_only_names(atlas_cache: Path) -> None:
    from rtdeep.phantom import generate_patient

    patient = generate_patient("headneck", 2, TEST_SEED, grid="small")
    rois = segment_with_atlas(patient.ct, "headneck", n_atlases=1, demons_iterations=0)
    names = [roi.name for roi in rois]
    assert set(names) <= set(SITES["headneck"].organ_names)
    assert {"Mandible", "Parotid_L", "Parotid_R"} <= set(names)


def test_model_names_and_bad_site() -> None:
    assert atlas_site("thorax_atlas") == "thorax"
    assert atlas_site("HeadNeck_Atlas") == "headneck"
    assert atlas_site("thorax_unet3d") is None
    with pytest.raises(RtDeepError, match="pelvis"):
        load_atlases("pelvis", 1)


def test_listing_models_does_not_import_simpleitk() -> None:
    """The model list (panels, web app) names the atlas baselines without loading SimpleITK (~100 MB
    in a long-lived server); segmenting with an atlas still works through rtdeep.atlas."""
    import subprocess
    import sys

    code = ("import sys; from rtdeep.inference import available_models; "
            "assert 'thorax_atlas' in available_models('thorax'); print('SimpleITK' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
