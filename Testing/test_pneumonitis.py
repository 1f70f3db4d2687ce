"""Pneumonitis classifier: metrics, the lung-dose report, crops at a fixed spacing, a tiny training
run, the three bundled models, prediction, cohort mode and bad inputs."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import stored_as

from rtdeep.bundles import list_bundles, models_dir, verify_bundle
from rtdeep.cli import main as cli_main
from rtdeep.errors import BundleError, CropError, DoseError, StructureError
from rtdeep.ntcp import lung_dose_report
from rtdeep.pneumonitis.dataset import build_record, canvas_for, cut_crop, prepare_crop
from rtdeep.pneumonitis.evaluate import (
    POSITIVE_CLASS,
    binary_metrics,
    brier_score,
    delong_paired,
    format_confusion,
    reliability_curve,
    roc_auc,
    youden_threshold,
)
from rtdeep.pneumonitis.experiment import run_baselines, run_cnn, stack_inputs
from rtdeep.pneumonitis.predict import predict_pneumonitis
from rtdeep.pneumonitis.train import TrainConfig, predict_probabilities, stratified_folds, train_model
from rtdeep.volume import Volume, affine_from_geometry

BUNDLE = "thorax_pneumonitis_lungdose20"
BUNDLES = {"lung-dose20": BUNDLE, "lung": "thorax_pneumonitis_lung", "body": "thorax_pneumonitis_body"}
ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


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


def test_delong_and_reliability():
    rng = np.random.default_rng(0)
    labels = rng.random(400) < 0.4
    strong = labels + rng.normal(0, 0.6, 400)
    weak = labels + rng.normal(0, 2.0, 400)
    same = delong_paired(labels, strong, strong)
    assert same["difference"] == 0 and same["p"] == pytest.approx(1.0)
    test = delong_paired(labels, strong, weak)
    assert test["auc_a"] == pytest.approx(roc_auc(labels, strong)) and test["auc_b"] == pytest.approx(roc_auc(labels, weak))
    assert test["difference"] > 0.1 and test["p"] < 1e-4 and test["ci_low"] > 0
    noise = delong_paired(labels, weak, weak + rng.normal(0, 0.01, 400))
    assert noise["p"] > 0.05
    rows = reliability_curve(labels, np.full(400, labels.mean()), n_bins=4)
    assert sum(r["n"] for r in rows) == 400 and all(abs(r["predicted"] - labels.mean()) < 1e-12 for r in rows)


def test_lung_dose_report_and_crops_at_a_fixed_spacing():
    ct, masks, dose = synthetic_study(False, seed=3)
    report = lung_dose_report(ct, masks, dose)
    lung = (masks["Lung_L"] | masks["Lung_R"]) & ~masks["GTV"]
    assert report.mld_gy == pytest.approx(float(dose.array[lung].mean()), rel=1e-5)
    assert report.v20_pct == pytest.approx(100 * float((dose.array[lung] >= 20).mean()), abs=0.5)
    assert report.volume_cc == pytest.approx(float(lung.sum()) * ct.voxel_volume_cc)
    assert 0 < report.ntcp_lkb < 1 and report.v5_pct >= report.v20_pct
    hypo = lung_dose_report(ct, masks, dose, n_fractions=5)
    assert hypo.mld_gy == report.mld_gy and hypo.mld_eqd2_gy > report.mld_eqd2_gy and hypo.ntcp_lkb > report.ntcp_lkb
    crop = cut_crop(ct, masks, dose, report, "lung-dose20")
    expected_cc = float((lung & (dose.array >= 20)).sum()) * ct.voxel_volume_cc
    assert crop.mask_volume_cc == pytest.approx(expected_cc)
    # the same crop on a fixed 6 mm canvas: not stretched, the mask keeps its volume
    prepared = prepare_crop(crop, ("ct", "dose", "mask"), (16, 16, 16), spacing_mm=6.0, fit=False)
    assert prepared.array.shape == (3, 16, 16, 16)
    assert np.allclose(np.linalg.norm(prepared.affine[:3, :3], axis=0), 6.0)
    assert prepared.array[2].sum() * 0.216 == pytest.approx(expected_cc, rel=0.15)  # half-voxel partial volume
    assert prepared.array[0][prepared.array[2] == 0].max() == 0
    # a canvas too small for the crop: training cuts (and says how much), prediction grows the canvas
    small = prepare_crop(crop, ("ct", "mask"), (8, 8, 8), fit=False)
    grown = prepare_crop(crop, ("ct", "mask"), (8, 8, 8), fit=True)
    assert small.lost_fraction > 0.2 and grown.array.shape[1] >= 16 and grown.lost_fraction == 0
    body = cut_crop(ct, masks, dose, report, "body")
    assert body.mask_volume_cc == pytest.approx(float(masks["External"].sum()) * ct.voxel_volume_cc)
    assert cut_crop(ct, masks, dose, report, "lung") is report.lung_crop


def test_a_cohort_at_a_finer_spacing_keeps_the_physical_canvas(tmp_path):
    """At 4 mm the lung-dose20 canvas holds the same 192 x 192 x 240 mm (rounded up to multiples of 8
    voxels), the record says its spacing, it survives the cache, and a cohort of two spacings is refused."""
    from rtdeep.errors import ValidationError
    from rtdeep.pneumonitis.dataset import CANVAS_MM, _cache_path, _load, _save
    from rtdeep.pneumonitis.run import _spacing_of

    assert canvas_for("lung-dose20", 6.0) == (32, 32, 40) and canvas_for("lung-dose20", 4.0) == (48, 48, 64)
    assert all(c * 4.0 >= mm for c, mm in zip(canvas_for("body", 4.0), CANVAS_MM["body"]))
    fine = build_record("P1", 1, *synthetic_study(True, seed=2), crop_names=("lung-dose20",), spacing_mm=4.0)
    coarse = build_record("P1", 1, *synthetic_study(True, seed=2), crop_names=("lung-dose20",))
    assert fine.inputs["lung-dose20"].shape == (3, 48, 48, 64) and fine.spacing_mm == 4.0
    assert fine.crop_volume_cc["lung-dose20"] == pytest.approx(coarse.crop_volume_cc["lung-dose20"], rel=0.15)
    path = _cache_path(tmp_path, "key", "P1", 4.0)
    assert path != _cache_path(tmp_path, "key", "P1")
    _save(path, fine)
    assert _load(path, ("lung-dose20",)).spacing_mm == 4.0
    assert _spacing_of([fine, fine]) == 4.0
    with pytest.raises(ValidationError, match="different voxel sizes"):
        _spacing_of([fine, coarse])


def _records(n: int, canvas_name: str = "lung-dose20"):
    return [build_record(f"P{k}", k % 2, *synthetic_study(bool(k % 2), seed=k), crop_names=(canvas_name,))
            for k in range(n)]


def test_training_loss_falls_and_a_tiny_cohort_is_learned():
    records = _records(36)
    train, test = records[:28], records[28:]
    x = stack_inputs(train, "lung-dose20", ("ct", "mask")).astype(np.float32)
    y = np.array([r.label for r in train])
    config = TrainConfig(epochs=12, batch_size=4, features=(8, 8, 16, 16), calibration_fraction=0.25, seed=1)
    trained = train_model(x, y, config)
    losses = [row["train_loss"] for row in trained.history]
    assert losses[-1] < 0.7 * losses[0], losses
    assert len(trained.calibration_index) == 8 and trained.platt[0] > 0
    result = run_cnn(train, test, "lung-dose20", ("ct", "mask"), config)
    assert result.cnn.test_metrics is not None and result.cnn.test_metrics.auc >= 0.9, result.cnn.test_metrics
    # the dose alone cannot separate them here (same dose distribution for both classes)
    baselines = run_baselines(train, test)
    assert [b.name for b in baselines] == ["LKB NTCP (QUANTEC)", "logistic MLD (fitted)", "logistic V20 (fitted)"]


def test_a_dose_covariate_joins_the_calibration_and_travels_with_the_bundle(tmp_path):
    """covariates=("mld_gy",): the Platt scaling is fitted on [CNN logit, MLD] of the calibration part
    (an informative MLD gets a positive weight), the network refuses to give a risk without it, its
    Grad-CAM is the image part's, and a bundle written by evaluate_and_write predicts from the study's
    own dose report."""
    from rtdeep.pneumonitis.bundle import load_pneumonitis_bundle
    from rtdeep.pneumonitis.run import evaluate_and_write
    from rtdeep.pneumonitis.saliency import grad_cam

    records = [replace(r, figures={**r.figures, "mld_gy": 8.0 + 3.0 * r.label + (k % 5)})
               for k, r in enumerate(_records(36))]
    train, test = records[:28], records[28:]
    config = TrainConfig(epochs=6, batch_size=4, features=(8, 8, 16, 16), calibration_fraction=0.25, seed=1,
                         average_last=3, covariates=("mld_gy",))
    x = stack_inputs(train, "lung-dose20", ("ct", "mask")).astype(np.float32)
    covariates = np.array([[r.figures["mld_gy"]] for r in train])
    with pytest.raises(ValueError, match="mld_gy"):
        train_model(x, np.array([r.label for r in train]), config)
    trained = train_model(x, np.array([r.label for r in train]), config, covariates=covariates)
    assert len(trained.platt) == 3 and trained.platt[2] > 0, trained.platt
    with pytest.raises(ValueError, match="mld_gy"):
        trained.network(torch.as_tensor(x[:2]))
    risks = predict_probabilities(trained.network, x[:2], covariates=covariates[:2])
    assert risks.shape == (2,) and np.all((risks > 0) & (risks < 1))
    assert grad_cam(trained.network, x[0]).shape == x.shape[2:]
    run = evaluate_and_write(train, test, "lung-dose20", tmp_path / "run", config=config,
                             bundle_out=tmp_path / "bundle", overwrite=True)
    assert run.experiment.cnn.name == "CNN lung-dose20 + mld_gy" and "mld_gy" in run.card
    ct, masks, dose = synthetic_study(True, seed=5)
    result = predict_pneumonitis(ct, masks, dose, bundle=tmp_path / "bundle")
    network = load_pneumonitis_bundle(tmp_path / "bundle").network
    assert network.covariates == ("mld_gy",)
    crop = prepare_crop(result.crop, ("ct", "mask"), canvas_for("lung-dose20"), fit=True).array
    with torch.no_grad():
        expected = torch.sigmoid(network(torch.as_tensor(crop[None]), torch.tensor([[result.report.mld_gy]])))
    assert result.risk == pytest.approx(float(expected[0]), rel=1e-5)


def test_weight_averaging_of_the_last_epochs_is_chosen_on_the_calibration_part():
    """average_last: the averaged weights (batch-norm statistics recomputed) compete with the best
    single epoch on the calibration part; whichever is kept, it is a working, calibrated model."""
    records = _records(36)
    x = stack_inputs(records, "lung-dose20", ("ct", "mask")).astype(np.float32)
    y = np.array([r.label for r in records])
    config = TrainConfig(epochs=10, batch_size=4, features=(8, 8, 16, 16), calibration_fraction=0.25, seed=1,
                         average_last=4)
    lines: list[str] = []
    trained = train_model(x, y, config, log=lines.append)
    assert any(line.startswith("average of epochs 7-10: calibration_loss") for line in lines), lines
    kept_loss = min(row["calibration_loss"] for row in trained.history)
    averaged_line = next(line for line in lines if line.startswith("average of epochs"))
    averaged_loss = float(averaged_line.split("calibration_loss ")[1].split()[0])
    assert trained.averaged == (averaged_loss <= kept_loss)
    if trained.averaged:
        assert trained.best_epoch == 10
    cal = trained.calibration_index
    assert roc_auc(y[cal], predict_probabilities(trained.network, x[cal])) >= 0.9
    off = train_model(x, y, replace(config, average_last=0))
    assert not off.averaged


def test_lungs_cut_by_the_scan_are_reported_with_the_figures():
    """A CT that stops through the lungs still gives the figures of the part scanned, with a warning
    naming the edge; the whole study gives none."""
    ct, masks, dose = synthetic_study(False, seed=4)
    assert not [w for w in lung_dose_report(ct, masks, dose).warnings if "cut by the CT" in w]
    lungs = np.flatnonzero((masks["Lung_L"] | masks["Lung_R"]).any(axis=(1, 2)))
    top = int(lungs[0] + lungs[-1]) // 2  # slices from the lungs' middle on are not scanned
    cut = Volume(ct.array[:top].copy(), ct.affine)
    report = lung_dose_report(cut, {name: mask[:top] for name, mask in masks.items()},
                              Volume(dose.array[:top].copy(), dose.affine))
    superior = "superior" if ct.index_to_lps(np.array([0.0, 0.0, top]))[2] > ct.affine[2, 3] else "inferior"
    assert [w for w in report.warnings if "cut by the CT" in w] == [w for w in report.warnings if
                                                                     f"cut by the CT's {superior} edge" in w]
    assert len([w for w in report.warnings if "cut by the CT" in w]) == 1 and "part scanned" in report.warnings[-1]


def test_bad_inputs_give_clear_errors():
    ct, masks, dose = synthetic_study(False, seed=4)
    no_lungs = {name: mask for name, mask in masks.items() if not name.startswith("Lung")}
    with pytest.raises(StructureError, match="Lung"):
        lung_dose_report(ct, no_lungs, dose)
    report = lung_dose_report(ct, masks, dose)
    with pytest.raises(CropError, match="receives >= 80 Gy"):
        cut_crop(ct, masks, dose, report, "lung-dose20", threshold_gy=80.0)
    with pytest.raises(CropError, match="unknown crop"):
        cut_crop(ct, masks, dose, report, "liver")
    # a dose grid covering only the upper half of the slices
    half = Volume(dose.array[12:].copy(), ct.affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 12], [0, 0, 0, 1]]))
    with pytest.raises(DoseError, match="Lungs-GTV"):
        lung_dose_report(ct, masks, half)


def _bundle(name: str = BUNDLE):
    if not any(p.name == name for p in list_bundles()):
        pytest.fail(f"bundled model {name} missing under {models_dir()}")
    return models_dir() / name


@pytest.mark.parametrize("crop_name", list(BUNDLES))
def test_three_bundles_verify_load_and_repeat(crop_name):
    path = _bundle(BUNDLES[crop_name])
    manifest = verify_bundle(path)
    assert "models/model.pt" in manifest and "docs/README.md" in manifest
    card = (path / "docs" / "README.md").read_text()
    assert "synthetic" in card.lower() and POSITIVE_CLASS in card and "limit" in card.lower()
    metadata = json.loads((path / "configs" / "metadata.json").read_text())
    assert metadata["rtdeep"]["kind"] == "classification" and metadata["rtdeep"]["crop"] == crop_name
    spacing = metadata["rtdeep"]["spacing_mm"][0]
    assert metadata["rtdeep"]["canvas"] == list(canvas_for(crop_name, spacing))
    ct, masks, dose = synthetic_study(True, seed=5)
    first = predict_pneumonitis(ct, masks, dose, bundle=path.name)
    second = predict_pneumonitis(ct, masks, dose, threshold_gy=20, bundle=path.name, report=first.report)
    assert first.risk == second.risk and 0.0 <= first.risk <= 1.0
    assert np.array_equal(first.saliency.array, second.saliency.array)
    assert first.saliency.same_grid(first.crop.ct) and first.saliency.array.max() <= 1.0
    assert first.crop_name == crop_name and POSITIVE_CLASS in first.summary()


def test_a_feet_first_study_gets_the_crop_and_risk_of_the_head_first_one():
    """A feet-first CT, its masks and dose (i runs to the patient's right) give the crop of the
    head-first-supine study, voxel for voxel, and its risk: the network and the figures see both
    in a head-first-supine CT's axes."""
    ct, masks, dose = synthetic_study(True, seed=5)
    supine = predict_pneumonitis(ct, masks, dose)
    feet_first = predict_pneumonitis(stored_as(ct, (2,)), {name: np.flip(mask, 2) for name, mask in masks.items()},
                                     stored_as(dose, (2,)))
    np.testing.assert_array_equal(feet_first.crop.ct.array, supine.crop.ct.array)
    np.testing.assert_allclose(feet_first.crop.ct.affine, supine.crop.ct.affine, atol=1e-9)
    assert feet_first.risk == pytest.approx(supine.risk, abs=1e-5)
    assert feet_first.report.mld_gy == pytest.approx(supine.report.mld_gy, abs=1e-4)


def test_bundled_model_beats_a_constant_on_held_out_phantoms():
    """The default bundle on 40 held-out phantoms (seed 8713, indices 300-339 of the current generator:
    never trained on or used for selection), their 4 mm network inputs (and mean lung doses, for a
    model that takes them) stored in Testing/data: a floor that can fail."""
    data = np.load(ROOT / "Testing" / "data" / "pneumonitis_heldout_lungdose20.npz")
    from rtdeep.bundles import load_bundle

    bundle = load_bundle(BUNDLE)
    assert bundle.config["spacing_mm"][0] == 4.0 and list(data["inputs"].shape[2:]) == bundle.config["canvas"]
    covariates = np.stack([data[name] for name in bundle.network.covariates], 1) if bundle.network.covariates else None
    risk = predict_probabilities(bundle.network, data["inputs"].astype(np.float32), covariates=covariates)
    labels = data["labels"]
    constant = brier_score(labels, np.full(len(labels), labels.mean()))
    assert roc_auc(labels, risk) >= 0.65  # measured 0.80 on these 40 (0.83 on the 300 of the model card)
    assert brier_score(labels, risk) < constant


def test_changed_bundle_is_refused(tmp_path):
    copy = tmp_path / BUNDLE
    shutil.copytree(_bundle(), copy)
    weights = copy / "models" / "model.pt"
    state = torch.load(weights, weights_only=True)
    next(iter(state.values())).add_(0.01)
    torch.save(state, weights)
    ct, masks, dose = synthetic_study(False, seed=6)
    with pytest.raises(BundleError, match="model.pt"):
        predict_pneumonitis(ct, masks, dose, bundle=copy)


def test_predict_errors_through_api():
    _bundle()
    ct, masks, dose = synthetic_study(False, seed=7)
    with pytest.raises(StructureError):
        predict_pneumonitis(ct, {"External": masks["External"]}, dose)
    with pytest.raises(CropError, match="maximum"):
        predict_pneumonitis(ct, masks, dose, threshold_gy=90.0)


def test_cli_predict_reports_missing_study(tmp_path, capsys):
    status = cli_main(["predict-pneumonitis", str(tmp_path / "nothing-here"), "--json", str(tmp_path / "r.json")])
    assert status == 2
    assert "predict-pneumonitis: error" in capsys.readouterr().err


def _write_dicom_study(folder, index: int, abnormal: bool, patient_id: str | None = None):
    from rtdeep.dicomrt.ct_writer import write_ct_series
    from rtdeep.dicomrt.rtdose_writer import write_rtdose
    from rtdeep.dicomrt.rtstruct_writer import write_rtstruct
    from rtdeep.dicomrt.types import PatientInfo, Roi

    ct, masks, dose = synthetic_study(abnormal, seed=100 + index)
    patient = PatientInfo(patient_name=f"TEST^{index}", patient_id=patient_id or f"T{index:03d}",
                          study_instance_uid=f"1.2.3.{index}")
    series = write_ct_series(ct, folder / "CT", patient, uid_seed=("h7", index))
    rois = [Roi(name, mask, number=n + 1) for n, (name, mask) in enumerate(masks.items())]
    write_rtstruct(series, rois, folder / "RS.dcm", uid_seed=("h7", index))
    write_rtdose(dose, series, folder / "RD.dcm", uid_seed=("h7", index))
    return folder


def test_cli_train_and_predict_on_dicom(tmp_path, capsys):
    cohort = tmp_path / "cohort"
    lines = ["patient_id,study_dir,pneumonitis"]
    for index in range(10):
        _write_dicom_study(cohort / f"T{index:03d}", index, bool(index % 2))
        lines.append(f"T{index:03d},T{index:03d},{index % 2}")
    (cohort / "manifest.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    status = cli_main(["train-pneumonitis", "--manifest", str(cohort / "manifest.csv"), "--crop", "lung-dose20",
                       "--out", str(out), "--epochs", "2", "--test-fraction", "0.2", "--calibration-fraction", "0.25"])
    printed = capsys.readouterr().out
    assert status == 0
    assert POSITIVE_CLASS in printed and "LKB NTCP (QUANTEC)" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["positive_class"] == POSITIVE_CLASS
    assert metrics["cohort"]["n_train"] + metrics["cohort"]["n_test"] == 10

    _bundle()
    status = cli_main(["predict-pneumonitis", str(cohort / "T001"), "--json", str(tmp_path / "risk.json"),
                       "--out", str(tmp_path / "pred")])
    assert status == 0, capsys.readouterr().err
    assert POSITIVE_CLASS in capsys.readouterr().out
    result = json.loads((tmp_path / "risk.json").read_text())
    assert 0 <= result["risk_pct"] <= 100 and result["mld_gy"] > 0 and result["v5_pct"] >= result["v20_pct"]
    import nibabel as nib

    saliency = nib.load(tmp_path / "pred" / "pneumonitis_saliency.nii.gz")
    crop_ct = nib.load(tmp_path / "pred" / "pneumonitis_crop_ct.nii.gz")
    assert np.allclose(saliency.affine, crop_ct.affine) and saliency.shape == crop_ct.shape
    assert (tmp_path / "pred" / "pneumonitis_saliency.png").stat().st_size > 1000


def test_cohort_mode_goes_on_past_a_broken_study(tmp_path):
    """Three studies, two sharing a patient ID, one without its RT Dose: a real subprocess."""
    cohort = tmp_path / "cohort"
    _write_dicom_study(cohort / "a", 1, True, patient_id="SAME")
    _write_dicom_study(cohort / "b", 2, False, patient_id="SAME")
    (_write_dicom_study(cohort / "c", 3, False, patient_id="BROKEN") / "RD.dcm").unlink()
    (cohort / "manifest.csv").write_text("study_dir,patient_id\na,SAME\nb,SAME\nc,BROKEN\n")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "rtdeep", "predict-pneumonitis", "--manifest",
                           str(cohort / "manifest.csv"), "--out", str(out)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=False)
    assert done.returncode == 1, done.stderr
    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["patient_id"] for r in rows] == ["SAME", "SAME", "BROKEN"]
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    assert "RTDOSE" in rows[2]["error"] and rows[2]["risk_pct"] == ""
    assert rows[0]["folder"] != rows[1]["folder"]
    for row in rows[:2]:
        assert 0 <= float(row["risk_pct"]) <= 100 and float(row["mld_gy"]) > 0 and row["flagged"] in ("True", "False")
        assert (out / row["folder"] / "pneumonitis_saliency.nii.gz").is_file()
    assert not (out / "BROKEN").exists() or not any((out / "BROKEN").iterdir())
    assert "BROKEN" in done.stderr and "2 of 3 studies predicted" in done.stdout


def test_single_study_without_out_writes_a_folder_named_after_the_patient(tmp_path, monkeypatch, capsys):
    study = _write_dicom_study(tmp_path / "study", 4, True, patient_id="PAT/42")
    monkeypatch.chdir(tmp_path)
    assert cli_main(["predict-pneumonitis", str(study)]) == 0, capsys.readouterr().err
    folder = tmp_path / "pneumonitis_PAT_42"
    assert (folder / "pneumonitis_saliency.nii.gz").is_file() and (folder / "pneumonitis_saliency.png").is_file()
