"""Pneumonitis classifier: metrics, a tiny training run, the bundled model, prediction, bad inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from rtdeep.bundles import list_bundles, models_dir, verify_bundle
from rtdeep.cli import main as cli_main
from rtdeep.errors import BundleError, CropError, DoseError, StructureError
from rtdeep.pneumonitis.dataset import build_record, lung_dose_figures, prepare_crop
from rtdeep.pneumonitis.evaluate import (
    POSITIVE_CLASS,
    binary_metrics,
    format_confusion,
    roc_auc,
    youden_threshold,
)
from rtdeep.pneumonitis.experiment import run_baselines, run_cnn
from rtdeep.pneumonitis.predict import predict_pneumonitis
from rtdeep.pneumonitis.train import TrainConfig, stratified_folds
from rtdeep.volume import Volume, affine_from_geometry

BUNDLE = "thorax_pneumonitis_lungdose20"


def synthetic_study(abnormal: bool, seed: int, dose_scale: float = 1.0):
    """A 24x40x48 CT (6 mm) with two ellipsoid lungs, a GTV in the right lung, a dose blob around
    it (max ~60 Gy x dose_scale); ``abnormal`` adds ground glass (-450 HU) where dose >= 20 Gy."""
    rng = np.random.default_rng(seed)
    shape = (24, 40, 48)
    affine = affine_from_geometry((-141.0, -117.0, -69.0), (6.0, 6.0, 6.0))
    k, j, i = np.indices(shape, dtype=np.float32)
    x, y, z = -141 + 6 * i, -117 + 6 * j, -69 + 6 * k
    body = (x / 135) ** 2 + (y / 110) ** 2 <= 1
    lung_r = ((x + 60) / 45) ** 2 + (y / 60) ** 2 + (z / 60) ** 2 <= 1
    lung_l = ((x - 60) / 45) ** 2 + (y / 60) ** 2 + (z / 60) ** 2 <= 1
    gtv_centre = np.array([-55.0, 5.0, 0.0]) + rng.normal(0, 4, 3)
    gtv = ((x - gtv_centre[0]) ** 2 + (y - gtv_centre[1]) ** 2 + (z - gtv_centre[2]) ** 2) <= 15**2
    hu = np.where(body, 30.0, -1000.0) + rng.normal(0, 15, shape)
    hu = np.where(lung_r | lung_l, -850.0 + rng.normal(0, 25, shape), hu)
    hu = np.where(gtv, 20.0, hu).astype(np.float32)
    r2 = (x - gtv_centre[0]) ** 2 + (y - gtv_centre[1]) ** 2 + (z - gtv_centre[2]) ** 2
    dose = (60.0 * dose_scale * np.exp(-r2 / (2 * 30.0**2))).astype(np.float32)
    if abnormal:
        region = (lung_r | lung_l) & ~gtv & (dose >= 20) & (rng.random(shape) < 0.6)
        hu = np.where(region, -450.0, hu).astype(np.float32)
    masks = {"Lung_L": lung_l, "Lung_R": lung_r & ~gtv, "GTV": gtv, "External": body}
    return Volume(hu, affine), masks, Volume(dose, affine)


def test_metrics_positive_class_and_values():
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    assert roc_auc(labels, scores) == pytest.approx(8 / 9)
    threshold = youden_threshold(labels, scores)
    metrics = binary_metrics(labels, scores, threshold, n_boot=200)
    assert (metrics.tp, metrics.fn, metrics.fp, metrics.tn) == (3, 0, 1, 2)
    assert metrics.sensitivity == 1.0 and metrics.specificity == pytest.approx(2 / 3)
    assert metrics.auc_ci_low <= metrics.auc <= metrics.auc_ci_high
    text = format_confusion(metrics)
    assert POSITIVE_CLASS in text and "TP = 3" in text
    folds = stratified_folds(np.array([1] * 10 + [0] * 30), 5)
    assert all((folds[:10] == f).sum() == 2 for f in range(5))


def test_tiny_training_learns_separable_set():
    records = [
        build_record(f"P{n}", n % 2, *synthetic_study(bool(n % 2), seed=n), crop_names=("lung-dose20",), size=(16, 16, 16))
        for n in range(30)
    ]
    train, test = records[:20], records[20:]
    config = TrainConfig(epochs=12, batch_size=4, features=(8, 16, 16), seed=1)
    result = run_cnn(train, test, "lung-dose20", ("ct",), config, n_folds=4)
    assert result.cnn.train_metrics.auc >= 0.9, result.cnn.train_metrics
    assert result.cnn.test_metrics is not None and result.cnn.test_metrics.auc >= 0.9
    # the dose alone cannot separate them here (same dose distribution for both classes)
    baselines = run_baselines(train, test)
    assert [b.name for b in baselines] == ["LKB NTCP (QUANTEC)", "logistic MLD (fitted)", "logistic V20 (fitted)"]


def test_dose_figures_and_crop():
    ct, masks, dose = synthetic_study(False, seed=3)
    figures = lung_dose_figures(ct, masks, dose)
    lung = (masks["Lung_L"] | masks["Lung_R"]) & ~masks["GTV"]
    assert figures.mld_gy == pytest.approx(float(dose.array[lung].mean()), rel=1e-5)
    assert figures.v20_pct == pytest.approx(100 * float((dose.array[lung] >= 20).mean()), abs=0.5)
    assert 0 < figures.ntcp_lkb < 1 and figures.v5_pct >= figures.v20_pct
    prepared = prepare_crop(ct, masks, dose, "lung-dose20", 20.0, (16, 16, 16), ("ct", "dose"))
    assert prepared.array.shape == (2, 16, 16, 16)
    expected_cc = float((lung & (dose.array >= 20)).sum()) * ct.voxel_volume_cc
    assert prepared.crop_volume_cc == pytest.approx(expected_cc)


def test_bad_inputs_give_clear_errors():
    ct, masks, dose = synthetic_study(False, seed=4)
    no_lungs = {name: mask for name, mask in masks.items() if not name.startswith("Lung")}
    with pytest.raises(StructureError, match="Lung"):
        prepare_crop(ct, no_lungs, dose, "lung-dose20")
    with pytest.raises(CropError, match="no voxel receives >= 80 Gy"):
        prepare_crop(ct, masks, dose, "lung-dose20", threshold_gy=80.0)
    # a dose grid covering only the upper half of the slices
    half = Volume(dose.array[12:].copy(), ct.affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 12], [0, 0, 0, 1]]))
    with pytest.raises(DoseError, match="does not cover"):
        lung_dose_figures(ct, masks, half)


def _bundle_or_skip():
    if not any(p.name == BUNDLE for p in list_bundles()):
        pytest.fail(f"bundled model {BUNDLE} missing under {models_dir()}")
    return models_dir() / BUNDLE


def test_bundled_model_verifies_loads_and_repeats():
    path = _bundle_or_skip()
    manifest = verify_bundle(path)
    assert "models/model.pt" in manifest and "docs/README.md" in manifest
    card = (path / "docs" / "README.md").read_text()
    assert "synthetic" in card.lower() and POSITIVE_CLASS in card
    metadata = json.loads((path / "configs" / "metadata.json").read_text())
    assert metadata["rtdeep"]["kind"] == "classification" and metadata["rtdeep"]["crop"] == "lung-dose20"
    ct, masks, dose = synthetic_study(True, seed=5)
    first = predict_pneumonitis(ct, masks, dose)
    second = predict_pneumonitis(ct, masks, dose, threshold_gy=20)
    assert first.risk == second.risk and 0.0 <= first.risk <= 1.0
    assert np.array_equal(first.saliency.array, second.saliency.array)
    assert first.saliency.same_grid(first.crop.ct) and first.saliency.array.max() <= 1.0
    assert first.mld_gy == pytest.approx(lung_dose_figures(ct, masks, dose).mld_gy)
    assert POSITIVE_CLASS in first.summary()


def test_changed_bundle_is_refused(tmp_path):
    copy = tmp_path / BUNDLE
    shutil.copytree(_bundle_or_skip(), copy)
    weights = copy / "models" / "model.pt"
    state = torch.load(weights, weights_only=True)
    next(iter(state.values())).add_(0.01)
    torch.save(state, weights)
    ct, masks, dose = synthetic_study(False, seed=6)
    with pytest.raises(BundleError, match="model.pt"):
        predict_pneumonitis(ct, masks, dose, bundle=copy)


def test_predict_errors_through_api():
    _bundle_or_skip()
    ct, masks, dose = synthetic_study(False, seed=7)
    with pytest.raises(StructureError):
        predict_pneumonitis(ct, {"External": masks["External"]}, dose)
    with pytest.raises(CropError, match="maximum dose"):
        predict_pneumonitis(ct, masks, dose, threshold_gy=90.0)


def test_cli_predict_reports_missing_study(tmp_path, capsys):
    status = cli_main(["predict-pneumonitis", str(tmp_path / "nothing-here"), "--json", str(tmp_path / "r.json")])
    assert status == 2
    assert "predict-pneumonitis: error" in capsys.readouterr().err


def _write_dicom_study(folder, index: int, abnormal: bool):
    from rtdeep.dicomrt.ct_writer import write_ct_series
    from rtdeep.dicomrt.rtdose_writer import write_rtdose
    from rtdeep.dicomrt.rtstruct_writer import write_rtstruct
    from rtdeep.dicomrt.types import PatientInfo, Roi

    ct, masks, dose = synthetic_study(abnormal, seed=100 + index)
    patient = PatientInfo(patient_name=f"TEST^{index}", patient_id=f"T{index:03d}", study_instance_uid=f"1.2.3.{index}")
    series = write_ct_series(ct, folder / "CT", patient, uid_seed=("h7", index))
    rois = [Roi(name, mask, number=n + 1) for n, (name, mask) in enumerate(masks.items())]
    write_rtstruct(series, rois, folder / "RS.dcm", uid_seed=("h7", index))
    write_rtdose(dose, series, folder / "RD.dcm", uid_seed=("h7", index))
    return folder


def test_cli_train_and_predict_on_dicom(tmp_path, capsys):
    cohort = tmp_path / "cohort"
    lines = ["patient_id,study_dir,pneumonitis"]
    for index in range(8):
        _write_dicom_study(cohort / f"T{index:03d}", index, bool(index % 2))
        lines.append(f"T{index:03d},T{index:03d},{index % 2}")
    (cohort / "manifest.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    status = cli_main(["train-pneumonitis", "--manifest", str(cohort / "manifest.csv"), "--crop", "lung-dose20",
                       "--out", str(out), "--size", "16", "--epochs", "2", "--folds", "2", "--test-fraction", "0.34"])
    printed = capsys.readouterr().out
    assert status == 0
    assert POSITIVE_CLASS in printed and "LKB NTCP (QUANTEC)" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["positive_class"] == POSITIVE_CLASS
    assert metrics["cohort"]["n_train"] + metrics["cohort"]["n_test"] == 8
    assert len((out / "predictions.csv").read_text().strip().splitlines()) == 9

    _bundle_or_skip()
    study = cohort / "T001"
    status = cli_main(["predict-pneumonitis", str(study), "--json", str(tmp_path / "risk.json"),
                       "--out", str(tmp_path / "pred")])
    assert status == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert POSITIVE_CLASS in printed
    result = json.loads((tmp_path / "risk.json").read_text())
    assert 0 <= result["risk_pct"] <= 100 and result["mld_gy"] > 0 and result["v5_pct"] >= result["v20_pct"]
    import nibabel as nib

    saliency = nib.load(tmp_path / "pred" / "pneumonitis_saliency.nii.gz")
    crop_ct = nib.load(tmp_path / "pred" / "pneumonitis_crop_ct.nii.gz")
    assert np.allclose(saliency.affine, crop_ct.affine) and saliency.shape == crop_ct.shape
    assert (tmp_path / "pred" / "pneumonitis_saliency.png").stat().st_size > 1000
