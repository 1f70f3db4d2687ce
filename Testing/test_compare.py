"""``rtdeep compare`` on a phantom study: reference RTSTRUCT against itself and against eroded masks."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import hash_tree
from scipy.ndimage import binary_erosion

from rtdeep.cli import main

SEED = 4_343


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from rtdeep.dicomrt.ct_reader import read_ct_series
    from rtdeep.dicomrt.rtstruct_reader import read_rtstruct
    from rtdeep.dicomrt.rtstruct_writer import write_rtstruct
    from rtdeep.dicomrt.types import Roi
    from rtdeep.phantom import generate_patient, write_patient

    root = tmp_path_factory.mktemp("compare")
    folder = Path(write_patient(generate_patient("thorax", 1, SEED, grid="small"), root / "patient"))
    ct_dir = folder / "CT"
    reference_path = next(folder.glob("RS*.dcm"))
    ct = read_ct_series(ct_dir)
    reference = read_rtstruct(reference_path, ct)
    eroded = [Roi(roi.name.upper(), _degrade(roi.mask), color_rgb=roi.color_rgb) for roi in reference.rois]
    test_path = write_rtstruct(ct, eroded, root / "RS_eroded.dcm", uid_seed=("test", SEED))
    return {"root": root, "ct": ct_dir, "reference": reference_path, "test": Path(test_path), "folder": folder}


def _degrade(mask: np.ndarray) -> np.ndarray:
    """The mask eroded by one voxel; a structure too thin to survive that (the cord on the small grid,
    1-2 voxels across) is shifted by one voxel and loses its top slice instead, so every organ is still
    there, a little wrong and a little smaller."""
    eroded = binary_erosion(mask, iterations=1)
    if eroded.any():
        return eroded
    shifted = np.roll(mask, 1, axis=2)
    shifted[np.nonzero(shifted.any(axis=(1, 2)))[0].max()] = False
    return shifted


def _run(study: dict[str, Path], test: Path, out: Path, *extra: str) -> int:
    return main(
        ["compare", "--ct", str(study["ct"]), "--reference", str(study["reference"]), "--test", str(test),
         "--out", str(out), *extra]
    )


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "metrics.csv", newline="") as handle:
        return {row["roi_name"]: row for row in csv.DictReader(handle)}


ORGANS = ("Lung_L", "Heart", "SpinalCord")


@pytest.fixture(scope="module")
def eroded_out(study: dict[str, Path]) -> Path:
    """One full run (all shared ROIs, overlays) of the eroded set against the reference."""
    before = hash_tree(study["folder"])
    out = study["root"] / "eroded"
    assert _run(study, study["test"], out) == 0
    assert hash_tree(study["folder"]) == before  # inputs untouched
    return out


def test_compare_detects_dice_drop(study: dict[str, Path], eroded_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    same_out = study["root"] / "same"
    roi_args = [arg for name in ORGANS for arg in ("--roi", name)]
    assert _run(study, study["reference"], same_out, "--no-png", *roi_args) == 0
    printed = capsys.readouterr().out
    assert "Dice" in printed and "HD95" in printed and "Heart" in printed

    same, eroded = _rows(same_out), _rows(eroded_out)
    assert set(same) == set(ORGANS) and set(ORGANS) < set(eroded)
    for name, row in same.items():
        assert float(row["dice"]) == pytest.approx(1.0)
        assert float(row["hd95_mm"]) == 0.0
    for name, drop in eroded.items():
        assert drop["test_roi"] == name.upper()  # matched case-insensitively
        test_cc, ref_cc = float(drop["volume_test_cc"]), float(drop["volume_ref_cc"])
        assert test_cc < ref_cc
        # the eroded ROI lies inside its reference, so its Dice is 2 |test| / (|ref| + |test|)
        assert float(drop["dice"]) < 0.98 and float(drop["dice"]) == pytest.approx(
            2 * test_cc / (ref_cc + test_cc), abs=2e-3), (name, drop)
        assert float(drop["hd95_mm"]) > 0.0 and not math.isnan(float(drop["msd_mm"]))


def test_compare_writes_overlays_in_talk_colours(eroded_out: Path) -> None:
    import matplotlib.image

    pngs = sorted(eroded_out.glob("*.png"))
    names = {p.name for p in pngs}
    assert "coronal.png" in names and {f"axial_{organ}.png" for organ in ORGANS} <= names
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rgb = matplotlib.image.imread(eroded_out / "axial_Heart.png")[..., :3]
    yellow = (rgb[..., 0] > 0.9) & (rgb[..., 1] > 0.9) & (rgb[..., 2] < 0.2)
    red = (rgb[..., 0] > 0.9) & (rgb[..., 1] < 0.2) & (rgb[..., 2] < 0.2)
    assert yellow.sum() > 50 and red.sum() > 50


def test_compare_refuses_to_overwrite(study: dict[str, Path], eroded_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert _run(study, study["test"], eroded_out, "--no-png") == 2
    assert "metrics.csv" in capsys.readouterr().err
    assert _run(study, study["test"], eroded_out, "--no-png", "--roi", "Heart", "--overwrite") == 0
    assert list(_rows(eroded_out)) == ["Heart"]


def test_compare_empty_test_roi_does_not_crash(study: dict[str, Path]) -> None:
    from rtdeep.dicomrt.ct_reader import read_ct_series
    from rtdeep.dicomrt.rtstruct_reader import read_rtstruct
    from rtdeep.dicomrt.rtstruct_writer import write_rtstruct

    ct = read_ct_series(study["ct"])
    reference = read_rtstruct(study["reference"], ct, roi_names=["Lung_L", "SpinalCord"])
    partial = write_rtstruct(ct, reference.rois, study["root"] / "RS_no_heart.dcm", uid_seed=("partial", SEED))
    out = study["root"] / "no_heart"
    assert _run(study, Path(partial), out, "--no-png", "--roi", "Heart", "--roi", "Lung_L") == 0
    rows = _rows(out)
    heart = rows["Heart"]
    assert float(heart["dice"]) == 0.0 and heart["hd95_mm"] == "nan" and heart["note"] == "not in test"
    assert float(rows["Lung_L"]["dice"]) == pytest.approx(1.0)
