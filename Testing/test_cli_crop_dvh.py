"""``rtdeep crop`` and ``rtdeep dvh`` end to end on DICOM studies written to disk."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import hash_tree

from rtdeep.cli import main
from rtdeep.dicomrt.types import PatientInfo, Roi
from rtdeep.volume import Volume, affine_from_geometry

SHAPE = (24, 40, 48)
AFFINE = affine_from_geometry((-70.0, -60.0, -40.0), (3.0, 3.0, 3.5))


def _ellipsoid(centre_kji, radii_kji):
    k, j, i = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    return sum(((g - c) / r) ** 2 for g, c, r in zip((k, j, i), centre_kji, radii_kji)) <= 1.0


def _write_study(folder: Path, patient_id: str, names: dict[str, str], dose_max_gy: float,
                 dose_slices: slice = slice(None)) -> dict[str, np.ndarray]:
    """CT + RTSTRUCT + RTDOSE of a box thorax; dose rises along i to ``dose_max_gy``."""
    from rtdeep.dicomrt.ct_writer import write_ct_series
    from rtdeep.dicomrt.rtdose_writer import write_rtdose
    from rtdeep.dicomrt.rtstruct_writer import write_rtstruct

    body = _ellipsoid((12, 20, 24), (11, 18, 22))
    masks = {
        "External": body,
        "Lung_R": _ellipsoid((12, 20, 14), (8, 12, 8)),
        "Lung_L": _ellipsoid((12, 20, 34), (8, 12, 8)),
        "GTV": _ellipsoid((12, 20, 34), (2, 3, 2)),
    }
    hu = np.where(body, 30.0, -1000.0).astype(np.float32)
    hu[masks["Lung_R"] | masks["Lung_L"]] = -820.0
    series = write_ct_series(Volume(hu, AFFINE), folder / "CT", PatientInfo(patient_id=patient_id),
                             uid_seed=patient_id)
    rois = [Roi(names.get(n, n), m, number=i + 1) for i, (n, m) in enumerate(masks.items())]
    write_rtstruct(series, rois, folder / "RS.dcm", uid_seed=patient_id)
    dose = np.broadcast_to(np.linspace(0, dose_max_gy, SHAPE[2], dtype=np.float32), SHAPE)[dose_slices]
    k0 = dose_slices.start or 0
    dose_affine = AFFINE.copy()
    dose_affine[:3, 3] = AFFINE[:3, :3] @ [0, 0, k0] + AFFINE[:3, 3]
    write_rtdose(Volume(np.ascontiguousarray(dose), dose_affine), series, folder / "RD.dcm", uid_seed=patient_id)
    return masks


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    first = _write_study(root / "studies" / "p1", "P1", {"Lung_R": "LUNG_RT"}, 60.0)
    _write_study(root / "studies" / "p2", "P2", {"Lung_L": "Lung L", "Lung_R": "Lung R", "GTV": "GTVp",
                                                 "External": "BODY"}, 40.0)
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study_dir", "patient_id", "site", "pneumonitis", "grade"])
        writer.writerow(["studies/p1", "P1", "thorax", "1", "2"])
        writer.writerow(["studies/p2", "P2", "thorax", "0", "0"])
    return root, first


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_crop_one_study_writes_files_and_index(cohort, tmp_path, capsys):
    from scipy.io import loadmat

    root, masks = cohort
    before = hash_tree(root)
    out = tmp_path / "crops"
    status = main(["crop", str(root / "studies" / "p1"), "--roi", "lung-dose20", "--out", str(out),
                   "--format", "mat", "npz", "nifti", "--size", "16", "16", "16"])
    assert status == 0
    rows = _read_csv(out / "index.csv")
    assert len(rows) == 1 and rows[0]["patient_id"] == "P1" and rows[0]["error"] == ""
    assert "LUNG_RT" in rows[0]["used_names"]
    dose = np.broadcast_to(np.linspace(0, 60.0, SHAPE[2]), SHAPE)
    expected = (masks["Lung_L"] | masks["Lung_R"]) & ~masks["GTV"] & (dose >= 20.0)
    assert int(rows[0]["mask_voxels"]) == pytest.approx(expected.sum(), abs=expected.sum() * 0.01)
    files = rows[0]["files"].split(";")
    assert {Path(f).suffix for f in files} == {".mat", ".npz", ".gz"}
    data = loadmat(out / files[0])
    assert data["mask"].sum() == int(rows[0]["mask_voxels"])
    assert float(data["dose"][data["mask"].astype(bool)].min()) >= 20.0 - 1e-3
    with np.load(out / files[1]) as npz:
        assert npz["fixed_ct"].shape == (16, 16, 16) and npz["fixed_mask"].any()
    assert hash_tree(root) == before  # inputs untouched
    assert "P1" not in capsys.readouterr().err


def test_crop_manifest_carries_labels_through(cohort, tmp_path):
    root, _ = cohort
    out = tmp_path / "dataset"
    status = main(["crop", "--manifest", str(root / "manifest.csv"), "--roi", "lung-dose20",
                   "--threshold", "10", "--out", str(out)])
    assert status == 0
    rows = _read_csv(out / "index.csv")
    assert [r["patient_id"] for r in rows] == ["P1", "P2"]
    assert [r["pneumonitis"] for r in rows] == ["1", "0"] and [r["grade"] for r in rows] == ["2", "0"]
    assert [r["study_dir"] for r in rows] == ["studies/p1", "studies/p2"]
    assert all(r["roi"] == "lung-dose10" and float(r["dose_threshold_gy"]) == 10.0 for r in rows)
    # P2 gets less dose: a smaller region receives >= 10 Gy
    assert float(rows[1]["mask_volume_cc"]) < float(rows[0]["mask_volume_cc"])
    for row in rows:
        for name in row["files"].split(";"):
            assert (out / name).is_file()
    # running again into the same folder refuses and leaves it as it was
    before = hash_tree(out)
    assert main(["crop", "--manifest", str(root / "manifest.csv"), "--out", str(out)]) == 2
    assert hash_tree(out) == before


def test_crop_bad_input_errors_write_nothing(cohort, tmp_path, capsys):
    root, _ = cohort
    study = str(root / "studies" / "p1")
    out = tmp_path / "nothing"
    assert main(["crop", study, "--threshold", "90", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "90 Gy" in err and "maximum dose" in err and "p1" in err
    assert main(["crop", study, "--roi", "custom", "--include", "Heart", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Heart" in err and "'LUNG_RT'" in err and "'GTV'" in err
    # the second patient fails (threshold above its 40 Gy maximum): nothing at all is written
    assert main(["crop", "--manifest", str(root / "manifest.csv"), "--threshold", "50", "--out", str(out)]) == 2
    assert not out.exists() and not list(tmp_path.glob(".nothing*"))
    # with --keep-going the failure is recorded in the index instead
    assert main(["crop", "--manifest", str(root / "manifest.csv"), "--threshold", "50", "--keep-going",
                 "--out", str(out)]) == 0
    rows = _read_csv(out / "index.csv")
    assert rows[0]["error"] == "" and "maximum dose" in rows[1]["error"] and rows[1]["pneumonitis"] == "0"


def test_dvh_on_study_and_on_rtstruct_rtdose_agree(cohort, tmp_path, capsys):
    root, masks = cohort
    study = root / "studies" / "p1"
    out_ct, out_dose = tmp_path / "dvh_ct", tmp_path / "dvh_dose"
    assert main(["dvh", str(study), "--out", str(out_ct)]) == 0
    printed = capsys.readouterr().out
    assert "pneumonitis" in printed and "Lungs-GTV = Lung_L + LUNG_RT - GTV" in printed
    stats = {r["roi"]: r for r in _read_csv(out_ct / "dvh_stats.csv")}
    assert set(stats) == {"External", "LUNG_RT", "Lung_L", "GTV", "Lungs-GTV"}
    lungs = (masks["Lung_L"] | masks["Lung_R"]) & ~masks["GTV"]
    voxel_cc = 3.0 * 3.0 * 3.5 / 1000
    assert float(stats["Lungs-GTV"]["volume_cc"]) == pytest.approx(lungs.sum() * voxel_cc, rel=1e-5)
    dose = np.broadcast_to(np.linspace(0, 60.0, SHAPE[2]), SHAPE)
    assert float(stats["Lungs-GTV"]["mean_gy"]) == pytest.approx(dose[lungs].mean(), abs=0.05)
    assert float(stats["Lungs-GTV"]["V20_pct"]) == pytest.approx(100 * (dose[lungs] >= 20).mean(), abs=1.0)
    assert 0 < float(stats["Lungs-GTV"]["ntcp_logistic_mld"]) < 1
    assert (out_ct / "dvh.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = _read_csv(out_ct / "dvh_cumulative.csv")
    assert float(curves[0]["Lung_L_volume_pct"]) == pytest.approx(100.0)
    at_20 = next(r for r in curves if r["dose_gy"] == "20.0")
    assert float(at_20["Lungs-GTV_volume_pct"]) == pytest.approx(float(stats["Lungs-GTV"]["V20_pct"]), abs=0.01)
    differential = _read_csv(out_ct / "dvh_differential.csv")
    total = sum(float(r["Lungs-GTV_cc"]) for r in differential)
    assert total == pytest.approx(float(stats["Lungs-GTV"]["volume_cc"]), rel=1e-4)

    assert main(["dvh", "--rtstruct", str(study / "RS.dcm"), "--rtdose", str(study / "RD.dcm"),
                 "--structures", "Lung R", "Lung_L", "--supersample", "3", "--out", str(out_dose)]) == 0
    assert "Lung R -> 'LUNG_RT'" in capsys.readouterr().out
    on_dose = {r["roi"]: r for r in _read_csv(out_dose / "dvh_stats.csv")}
    assert set(on_dose) == {"LUNG_RT", "Lung_L", "Lungs-GTV"} and on_dose["Lung_L"]["grid"] == "dose"
    for name in on_dose:
        assert float(on_dose[name]["mean_gy"]) == pytest.approx(float(stats[name]["mean_gy"]), rel=0.02)
        assert float(on_dose[name]["volume_cc"]) == pytest.approx(float(stats[name]["volume_cc"]), rel=0.05)


def test_dvh_relative_dose_and_uncovered_structure_are_clear_errors(cohort, tmp_path, capsys):
    root, _ = cohort
    study = root / "studies" / "p1"
    relative = tmp_path / "relative"
    relative.mkdir()
    ds = pydicom.dcmread(study / "RD.dcm")
    ds.DoseUnits = "RELATIVE"
    ds.save_as(relative / "RD.dcm")
    out = tmp_path / "out"
    assert main(["dvh", "--rtstruct", str(study / "RS.dcm"), "--rtdose", str(relative / "RD.dcm"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "RELATIVE" in err and "DoseUnits" in err
    assert not out.exists()

    partial = tmp_path / "partial"
    _write_study(partial, "P3", {}, 60.0, dose_slices=slice(0, 12))
    assert main(["dvh", str(partial), "--structures", "Lung_L", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Lung_L" in err and "outside the dose grid" in err and "%" in err
    assert main(["crop", str(partial), "--out", str(out)]) == 2
    assert "outside" in capsys.readouterr().err
    assert not out.exists()


def test_phantom_patient_crop_and_dvh_agree_with_the_phantom_outcome(tmp_path, capsys):
    """A thorax phantom (rtdeep.phantom, small grid) through `rtdeep crop` and `rtdeep dvh`: the
    normal-lung MLD and V20 match the figures the phantom's outcome model computed on its own."""
    from rtdeep.phantom import generate_patient, write_patient

    patient = generate_patient("thorax", 3, 11, grid="small")
    folder = write_patient(patient, tmp_path / "cohort")
    row = patient.outcome
    with open(tmp_path / "cohort" / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row) + ["study_dir"])
        writer.writeheader()
        writer.writerow({**row, "study_dir": folder.name})
    out = tmp_path / "dataset"
    assert main(["crop", "--manifest", str(tmp_path / "cohort" / "manifest.csv"), "--out", str(out),
                 "--size", "32", "32", "32"]) == 0
    index = _read_csv(out / "index.csv")
    assert index[0]["patient_id"] == patient.patient_id
    assert index[0]["pneumonitis"] == str(row["pneumonitis"]) and index[0]["grade"] == str(row["grade"])
    assert float(index[0]["mean_dose_gy"]) >= 20.0 and float(index[0]["mask_volume_cc"]) > 0

    assert main(["dvh", str(folder), "--structures", "Lung_L", "Lung_R", "--out", str(tmp_path / "dvh")]) == 0
    stats = {r["roi"]: r for r in _read_csv(tmp_path / "dvh" / "dvh_stats.csv")}
    lungs = stats["Lungs-GTV"]
    assert float(lungs["mean_gy"]) == pytest.approx(row["mld_gy"], abs=0.05)
    assert float(lungs["V20_pct"]) == pytest.approx(row["v20_pct"], abs=0.2)
    assert float(lungs["V5_pct"]) == pytest.approx(row["v5_pct"], abs=0.2)
    assert float(lungs["ntcp_lkb_pneumonitis_quantec"]) == pytest.approx(row["lkb_ntcp"], abs=0.01)
