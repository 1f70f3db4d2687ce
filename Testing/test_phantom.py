"""Tests of the synthetic cohort generator (rtdeep.phantom) and ``rtdeep phantom``."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import hash_tree

from rtdeep.cli import main
from rtdeep.fileio import OutputExistsError
from rtdeep.phantom import generate_cohort, generate_patient, write_patient
from rtdeep.phantom.outcome import lkb_ntcp, pneumonitis_risk
from rtdeep.phantom.scanner import CONTRAST_PHASES, COUCH_TYPES, SLICE_CHOICES_MM, sample_scanner

THORAX_ROIS = {"External", "Lung_L", "Lung_R", "Heart", "Esophagus", "SpinalCord", "GTV", "PTV"}
HEADNECK_ROIS = {"External", "Parotid_L", "Parotid_R", "Glnd_Submand_L", "Glnd_Submand_R", "Mandible", "Brainstem",
                 "SpinalCord", "GTV", "PTV"}


@pytest.fixture(scope="module")
def thorax_small():
    return generate_patient("thorax", 3, 5, "small")


@pytest.fixture(scope="module")
def headneck_small():
    return generate_patient("headneck", 2, 5, "small")


def _centroid_x(patient, name: str) -> float:
    ii = np.nonzero(patient.roi(name).mask)[2]
    return float(patient.ct.index_to_lps(np.array([ii.mean(), 0, 0]))[0])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def test_thorax_patient_api_and_geometry(thorax_small):
    p = thorax_small
    assert p.patient_id == "RTD-THX-0003" and p.site == "thorax"
    assert {r.name for r in p.rois} == THORAX_ROIS
    assert len({r.color_rgb for r in p.rois}) == len(p.rois)
    assert {r.interpreted_type for r in p.rois} == {"EXTERNAL", "ORGAN", "GTV", "PTV"}
    assert p.ct.array.dtype == np.float32 and p.ct.shape[1:] == (128, 128)
    assert 2.0 <= p.ct.spacing_mm[0] <= 4.8 and 3.0 <= p.ct.spacing_mm[2] <= 4.0  # 128 pixels over a 256-614 mm FOV
    assert np.allclose(p.ct.direction, np.eye(3))
    assert p.dose_on_ct.same_grid(p.ct)
    for roi in p.rois:
        assert roi.mask.shape == p.ct.shape and roi.mask.any(), roi.name
    assert not (p.roi("GTV").mask & p.roi("Lung_L").mask).any()


def test_thorax_anatomy_sanity(thorax_small):
    p = thorax_small
    hu = p.ct.array
    lungs = p.roi("Lung_L").mask | p.roi("Lung_R").mask
    assert np.mean(hu[lungs] < -500) > 0.85
    assert float(np.median(hu[lungs])) < -700
    assert _centroid_x(p, "Lung_R") < _centroid_x(p, "Heart") < _centroid_x(p, "Lung_L")
    assert _centroid_x(p, "Lung_R") < 0 < _centroid_x(p, "Lung_L")  # LPS: +x is the patient's left
    # the cord lies in the vertebral canal: bone in front of and behind it on most slices
    cord = p.roi("SpinalCord").mask
    both, either = 0, 0
    slices = np.nonzero(cord.any(axis=(1, 2)))[0]
    for k in slices:
        jj, ii = np.nonzero(cord[k])
        j, i = int(jj.mean()), int(ii.mean())
        column = hu[k, :, i]
        front, back = column[max(j - 12, 0):j].max() > 250, column[j + 1:j + 12].max() > 250
        both += front and back  # discs and the gaps between laminae interrupt the ring on some slices
        either += front or back
    # both: 0.44-0.83 over five small thorax patients (seed 7 indices 0-3 and this one); 0 without the arch
    assert both / len(slices) > 0.4 and either / len(slices) > 0.95
    assert float(np.median(hu[cord])) < 100
    # segmentation is not a threshold: noise and partial volume
    body = p.roi("External").mask
    # pericardial fat (about -100 HU) lies inside the clinical heart contour beside blood and myocardium
    heart_hu = hu[p.roi("Heart").mask]
    assert 3 < float(np.std(heart_hu)) < 80 and float(np.median(heart_hu)) > 0
    assert float(np.median(hu[body])) > -200


def test_headneck_anatomy_sanity(headneck_small):
    p = headneck_small
    assert {r.name for r in p.rois} == HEADNECK_ROIS and p.patient_id == "RTD-HN-0002"
    hu = p.ct.array
    mandible = p.roi("Mandible").mask
    kk, jj, ii = np.nonzero(mandible)
    x = p.ct.index_to_lps(np.stack([ii, jj, kk], axis=1).astype(float))[:, 0]
    assert _centroid_x(p, "Parotid_L") > np.percentile(x[x > 0], 90)
    assert _centroid_x(p, "Parotid_R") < np.percentile(x[x < 0], 10)
    assert _centroid_x(p, "Glnd_Submand_R") < 0 < _centroid_x(p, "Glnd_Submand_L")
    parotid = float(np.median(hu[p.roi("Parotid_L").mask | p.roi("Parotid_R").mask]))
    assert -45 < parotid < 40  # fatty parotids, about -30 to +30 HU: darker than muscle (~45 HU)
    assert float(np.median(hu[mandible])) > 300
    cord_top = np.nonzero(p.roi("SpinalCord").mask.any(axis=(1, 2)))[0].max()
    brainstem_bottom = np.nonzero(p.roi("Brainstem").mask.any(axis=(1, 2)))[0].min()
    assert brainstem_bottom >= cord_top - 1
    body = p.roi("External").mask
    for roi in p.rois:
        assert not (roi.mask & ~body).any(), roi.name


@pytest.mark.parametrize("site,index", [("thorax", 3), ("thorax", 8), ("headneck", 2)])
def test_dose_normalised_to_ptv_d95(site, index, thorax_small, headneck_small):
    p = {("thorax", 3): thorax_small, ("headneck", 2): headneck_small}.get((site, index)) or generate_patient(site, index, 5, "small")
    rx = p.plan.prescription_gy
    ptv_dose = p.dose_on_ct.array[p.roi("PTV").mask]
    assert abs(np.percentile(ptv_dose, 5) - rx) <= 0.02 * rx
    assert p.dose_on_ct.array.max() < 1.15 * rx
    from scipy import ndimage

    near_body = ndimage.binary_dilation(p.roi("External").mask, iterations=2)  # the 4 mm dose grid's edge
    # outside the reconstruction circle (a truncated FOV) the body has dose but no External contour
    n_j, n_i = p.ct.shape[1:]
    jj, ii = np.mgrid[0:n_j, 0:n_i]
    radius_px = p.outcome["scanner_fov_mm"] / 2 / p.ct.spacing_mm[0] - 1
    in_fov = (jj - (n_j - 1) / 2) ** 2 + (ii - (n_i - 1) / 2) ** 2 < radius_px ** 2
    assert p.dose_on_ct.array[~near_body & in_fov[None]].max() < 0.05 * rx
    assert p.plan.fractions == (30 if site == "thorax" else 35) and len(p.plan.beams) >= 5
    if site == "thorax":
        assert 0 < p.outcome["mld_gy"] < 30 and 0 <= p.outcome["v20_pct"] <= p.outcome["v5_pct"] <= 100


def test_same_patient_on_both_grids(thorax_small):
    clinical = generate_patient("thorax", 3, 5, "clinical")
    assert clinical.ct.shape[1:] == (512, 512)
    assert 0.5 <= clinical.ct.spacing_mm[0] <= 1.2 and clinical.ct.spacing_mm[2] in SLICE_CHOICES_MM
    assert clinical.ct.spacing_mm[2] == clinical.outcome["scanner_slice_mm"]
    fov_small = thorax_small.ct.spacing_mm[0] * 128
    assert fov_small == pytest.approx(clinical.ct.spacing_mm[0] * 512)
    for name in ("Lung_L", "Heart", "GTV", "PTV"):
        small_cc = thorax_small.roi(name).volume_cc(thorax_small.ct)
        assert clinical.roi(name).volume_cc(clinical.ct) == pytest.approx(small_cc, rel=0.08), name
    assert clinical.outcome["gtv_cc"] == pytest.approx(thorax_small.outcome["gtv_cc"], rel=0.05)
    assert clinical.outcome["mld_gy"] == pytest.approx(thorax_small.outcome["mld_gy"], rel=0.05)


def test_outcome_model_and_rate():
    assert lkb_ntcp(31.4) == pytest.approx(0.5)
    assert lkb_ntcp(20.0) == pytest.approx(0.21, abs=0.01)  # QUANTEC: ~20% at MLD 20 Gy
    assert pneumonitis_risk(12.0, 30.0) > pneumonitis_risk(12.0, 0.0) + 0.4
    assert pneumonitis_risk(18.0, 0.0) > pneumonitis_risk(8.0, 0.0)
    # 16 patients keep the test fast; the mean model risk (not the draws) has a standard error
    # of about 0.08 here (150 patients: see docs/phantom.md)
    rows = [generate_patient("thorax", i, 21, "small").outcome for i in range(1, 17)]
    risks = np.array([r["risk"] for r in rows])
    assert 0.22 <= risks.mean() <= 0.62
    assert np.mean([r["ild_volume_cc"] > 0 for r in rows]) > np.mean([r["ild_in_v20_cc"] > 1 for r in rows])
    assert all(r["pneumonitis"] == int(r["grade"] >= 2) for r in rows)


def test_write_read_back_validate_and_determinism(tmp_path, thorax_small):
    from rtdeep.dicomrt.study import load_study
    from rtdeep.dicomrt.validate import validate_paths

    folder = write_patient(thorax_small, tmp_path / "a")
    assert folder.name == "RTD-THX-0003" and (folder / "RS.dcm").exists() and (folder / "RP.dcm").exists()
    study = load_study(folder)
    assert study.ct.volume.same_grid(thorax_small.ct)
    assert np.abs(study.ct.volume.array - np.rint(thorax_small.ct.array)).max() <= 0.5
    for roi in thorax_small.rois:
        assert _dice(study.structure_set[roi.name].mask, roi.mask) >= 0.98, roi.name
        assert study.structure_set[roi.name].color_rgb == roi.color_rgb
    assert study.plan.prescription_gy == 60.0 and len(study.plan.beams) == len(thorax_small.plan.beams)
    assert np.abs(study.dose_on_ct.array - thorax_small.dose_on_ct.array).max() < 0.05
    findings = validate_paths([folder])
    errors = [f for f in findings if f.severity == "error"]
    assert not errors, errors
    again = write_patient(generate_patient("thorax", 3, 5, "small"), tmp_path / "b")
    assert hash_tree(folder) == hash_tree(again)
    with pytest.raises(OutputExistsError):
        write_patient(thorax_small, tmp_path / "a")


def test_cli_cohort_manifest(tmp_path):
    out = tmp_path / "cohort"
    assert main(["phantom", "--site", "headneck", "--patients", "2", "--seed", "4", "--out", str(out), "--small"]) == 0
    with (out / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["patient_id"] for r in rows] == ["RTD-HN-0001", "RTD-HN-0002"]
    for row in rows:
        assert (out / row["study_dir"] / "CT").is_dir() and (out / row["study_dir"] / "RD.dcm").exists()
        assert float(row["prescription_gy"]) == 70.0 and row["site"] == "headneck"
    assert main(["phantom", "--site", "headneck", "--patients", "1", "--seed", "4", "--out", str(out), "--small"]) == 2


def test_cohort_thorax_manifest_columns(tmp_path):
    manifest = generate_cohort("thorax", 1, 9, tmp_path, "small")
    with Path(manifest).open() as handle:
        row = next(csv.DictReader(handle))
    for column in ("study_dir", "mld_gy", "v20_pct", "v5_pct", "lkb_ntcp", "ild_volume_cc", "ild_in_v20_cc", "risk",
                   "grade", "pneumonitis", "tumour_x_mm", "gtv_cc", "prescription_gy", "image_factor"):
        assert row[column] != "", column
    assert row["pneumonitis"] in ("0", "1")


def test_small_grid_is_fast():
    start = time.perf_counter()
    generate_patient("thorax", 30, 5, "small")
    assert time.perf_counter() - start < 5.0  # < 1 s on an idle core; generous for a loaded CI machine


def test_scanner_settings_cover_documented_ranges_and_are_deterministic():
    rng = np.random.default_rng(0)
    settings = [sample_scanner(rng, 380.0) for _ in range(300)]
    assert {s.contrast for s in settings} == set(CONTRAST_PHASES) and {s.couch for s in settings} == set(COUCH_TYPES)
    assert {s.slice_mm for s in settings} == set(SLICE_CHOICES_MM)
    assert all(0.5 <= s.pixel_mm <= 1.2 and 6 <= s.noise_hu <= 45 and -15 <= s.hu_offset <= 15 for s in settings)
    truncated = np.mean([s.fov_mm < 380.0 for s in settings])
    assert 0.1 < truncated < 0.3  # about 20 % of the reconstructions cut the sides of the body
    arterial = [s for s in settings if s.contrast == "arterial"]
    assert all(s.blood_left_hu > 200 and s.svc_hu > 350 for s in arterial)
    assert all(30 <= s.blood_left_hu <= 50 for s in settings if s.contrast == "none")
    again = sample_scanner(np.random.default_rng(0), 380.0)
    assert again == settings[0]
    a, b = generate_patient("thorax", 4, 5, "small"), generate_patient("thorax", 4, 5, "small")
    assert np.array_equal(a.ct.array, b.ct.array)
    scanner_a = {k: v for k, v in a.outcome.items() if k.startswith("scanner_")}
    assert scanner_a == {k: v for k, v in b.outcome.items() if k.startswith("scanner_")}
    assert scanner_a["scanner_contrast"] in CONTRAST_PHASES and len(scanner_a) == 16


def test_cord_contour_is_the_canal_with_csf_like_density(thorax_small):
    """The SpinalCord contour follows the canal on every slice; cord and CSF are both about 0-40 HU."""
    from rtdeep.phantom.anatomy_thorax import sample_thorax

    spines = [sample_thorax(np.random.default_rng([9, 1, i, 0])).spine for i in range(12)]
    assert all(0 <= s.csf_hu <= 15 and s.csf_hu < s.cord_hu <= 40 for s in spines)
    cord = thorax_small.roi("SpinalCord").mask
    assert cord.any(axis=(1, 2)).all()  # every slice of the scan
    area_cm2 = cord.sum(axis=(1, 2)) * thorax_small.ct.spacing_mm[0] * thorax_small.ct.spacing_mm[1] / 100.0
    assert 0.6 < float(np.median(area_cm2)) < 2.0  # thecal sac; the cord alone would be about 0.6-0.9 cm2


def _render_thorax_box(model, lo_mm, hi_mm, spacing_mm):
    """Noise-free HU and masks of ``model`` on a fine grid covering the box ``[lo_mm, hi_mm]`` (x, y, z)."""
    from rtdeep.phantom.anatomy_thorax import render_thorax
    from rtdeep.phantom.grid import GridSpec

    lo, hi = np.asarray(lo_mm, float), np.asarray(hi_mm, float)
    shape = tuple(int(n) for n in np.floor((hi - lo) / spacing_mm).astype(int)[::-1] + 1)
    grid = GridSpec(shape, tuple(float(s) for s in spacing_mm), tuple(float(v) for v in lo))
    return render_thorax(model, grid, edge_mm=1.1, fine_texture=False)


def test_thorax_back_lies_on_the_couch():
    """Every couch type: on every slice the posterior-most skin touches the couch top or the vacuum
    bag: no more than 2 mm of air below it (noise-free render, 0.5 mm rows)."""
    from rtdeep.phantom.anatomy_thorax import sample_thorax

    seen = set()
    for index in range(12):
        model = sample_thorax(np.random.default_rng([5, 1, index, 0]))
        if model.scanner.couch in seen:
            continue
        seen.add(model.scanner.couch)
        z0, z1 = model.z_range
        canvas = _render_thorax_box(model, (-60, 0, z0), (60, model.body_half_y + 30, z1), (1.0, 0.5, 12.0))
        external = canvas.masks["External"]
        for k in range(external.shape[0]):
            rows, cols = np.nonzero(external[k])
            j = rows.max()
            back = cols[rows == j]
            below = canvas.hu[k, j + 1:, back[len(back) // 2]]
            air = np.argmax(below > -960)  # voxels of air (-1000 HU) before the couch/bag material
            assert below[air] > -960 and air * 0.5 <= 2.0, (model.scanner.couch, k, air * 0.5)
    assert seen == set(COUCH_TYPES)


def test_thorax_lungs_wrap_around_the_mediastinum():
    """The medial pleura follows the mediastinal organs, not a straight line: the lungs come within a
    few mm of each other in front (anterior junction line) and the right lung reaches the esophagus
    behind the heart and below the carina (azygo-esophageal recess)."""
    from scipy import ndimage

    from rtdeep.phantom.anatomy_thorax import sample_thorax

    for index in range(3):
        model = sample_thorax(np.random.default_rng([5, 1, index, 0]))
        half_y = model.cavity_half_y + 10
        z0 = model.heart.centre[2]
        canvas = _render_thorax_box(model, (-80, model.cavity_centre_y - half_y, z0),
                                    (80, model.cavity_centre_y + half_y, model.carina_z + 40), (1.0, 1.0, 8.0))
        left, right = canvas.masks["Lung_L"], canvas.masks["Lung_R"]
        esophagus = canvas.masks["Esophagus"]
        gaps, recess = [], []
        for k in range(left.shape[0]):
            if not (left[k].any() and right[k].any()):
                continue
            to_right = ndimage.distance_transform_edt(~right[k])
            gaps.append(float(to_right[left[k]].min()))
            if esophagus[k].any():
                recess.append(float(to_right[esophagus[k]].min()))
        assert min(gaps) <= model.junction_mm + 3.0, (index, min(gaps))  # anterior junction line
        assert min(recess) <= model.mediastinal_fat_mm + 3.0, (index, min(recess))


def test_thorax_heart_stays_inside_the_thoracic_cavity():
    """The heart (Heart contour, myocardium and blood pools) lies behind the sternum and the chest
    wall: every Heart voxel is at least 2 mm inside the cavity bounded by the ribs and the
    intercostal layer (none in the chest-wall muscles, the fat or the breast), with a plausible volume.
    Before the fix these patients' hearts crossed the anterior chest wall by 39-51 mm."""
    from rtdeep.phantom.anatomy_thorax import sample_thorax
    from rtdeep.sites import ORGANS

    low, high = ORGANS["Heart"].volume_cc
    spacing = np.array([2.0, 2.0, 3.0])
    for index in range(4):
        model = sample_thorax(np.random.default_rng([5, 1, index, 0]))
        lo, hi = (np.asarray(v, float) for v in model.heart.bbox(16))
        heart = _render_thorax_box(model, lo, hi, tuple(spacing)).masks["Heart"]
        k, j, i = np.nonzero(heart)
        x, y, z = ((lo[a] + idx * spacing[a]).astype(np.float32) for a, idx in ((0, i), (1, j), (2, k)))
        depth = -model.cavity_sd(x, y, z)
        assert depth.min() >= 2.0, (index, float(depth.min()))
        assert low <= heart.sum() * spacing.prod() / 1000 <= high, index


def test_thorax_esophagus_runs_behind_the_heart_not_through_it():
    """The esophagus and the descending aorta lie behind the left atrium with a thin fat plane: no
    Heart voxel touches them (in-plane neighbours on a 1.5 mm grid), and the heart is still in the
    plausible volume range. Before the fix the esophagus ran 10-57 mm deep through the heart of every
    one of 32 training and held-out patients, so a network had to learn an esophagus inside the heart."""
    from scipy import ndimage

    from rtdeep.phantom.anatomy_thorax import sample_thorax

    spacing = np.array([1.5, 1.5, 3.0])
    for index in range(3):
        model = sample_thorax(np.random.default_rng([1, 1, index, 0]))
        lo, hi = (np.asarray(v, float) for v in model.heart.bbox(10))
        masks = _render_thorax_box(model, lo, hi, tuple(spacing)).masks
        heart, behind = masks["Heart"], masks["Esophagus"]
        assert behind.any() and heart.any(), index
        touching = heart & ndimage.binary_dilation(behind, structure=np.ones((1, 3, 3), bool))
        assert touching.sum() <= 0.01 * behind.sum(), (index, int(touching.sum()), int(behind.sum()))


def test_thorax_scan_may_go_on_into_the_upper_abdomen():
    """Some scans end below the lung bases, others go on 90-170 mm into the abdomen, as planning CTs
    do. There, below the lowest lung voxel: gas in the bowel or stomach that is no lung (no organ
    contour), kidneys beside the spine, and no ribs below the costal margin (only the spine and the
    arms are bone). A network trained on these must leave abdominal gas and soft tissue alone."""
    from rtdeep.phantom.anatomy_thorax import sample_thorax

    models = [sample_thorax(np.random.default_rng([5, 1, index, 0])) for index in range(8)]
    reach = [-m.z_range[0] for m in models]
    assert min(reach) < 75 and max(reach) > 90, reach  # both kinds of scan
    model = models[int(np.argmax(reach))]
    half_x, half_y = model.body_half_x + 5, model.body_half_y + 5
    z0 = model.z_range[0]
    canvas = _render_thorax_box(model, (-half_x, -half_y, z0), (half_x, half_y, 0.0), (2.0, 2.0, 5.0))
    hu, masks = canvas.hu, canvas.masks
    lungs = masks["Lung_L"] | masks["Lung_R"]
    lowest = int(np.nonzero(lungs.any(axis=(1, 2)))[0].min())
    abdomen = slice(0, max(lowest - 2, 1))
    contoured = np.zeros_like(lungs)
    for name in ("Lung_L", "Lung_R", "Heart", "Esophagus"):
        contoured |= masks[name]
    gas = (hu[abdomen] < -900) & masks["External"][abdomen]
    assert gas.sum() > 50 and not (gas & contoured[abdomen]).any()
    for kidney in model.kidneys:
        k = round((kidney.centre[2] - z0) / 5.0)
        j, i = (round((kidney.centre[a] + h) / 2.0) for a, h in ((1, half_y), (0, half_x)))
        assert abs(hu[k, j, i] - model.kidney_hu) < 1.0, (hu[k, j, i], model.kidney_hu)
    below_ribs = int((min(model.costal_margin_mm) - 8 - z0) // 5.0)
    assert below_ribs > 0
    x = (-half_x + 2.0 * np.arange(hu.shape[2], dtype=np.float32))[None, None, :]
    y = (-half_y + 2.0 * np.arange(hu.shape[1], dtype=np.float32))[None, :, None]
    z = (z0 + 5.0 * np.arange(below_ribs, dtype=np.float32))[:, None, None]
    trunk = (model.body_sd(x, y, z) < -3.0) & (np.abs(x) > 50)  # the trunk (no arms) beside the spine
    assert trunk.sum() > 1000 and (hu[:below_ribs][trunk] < 300).all()


def test_headneck_brainstem_and_submandibular_glands_have_visible_boundaries():
    """On CT the brainstem is seen by the CSF of the cisterns and the fourth ventricle around it, and
    the submandibular glands by the fat of the submandibular space. Noise-free render: the 1-3 mm
    shell around the brainstem (above the foramen magnum) is at least 10 HU darker than the
    brainstem, and a third of the shell around each gland is fat. Before, the brainstem was 3 HU
    darker than the brain around it (shell 3 HU brighter) and the glands lay in muscle."""
    from scipy import ndimage

    from rtdeep.phantom.anatomy_headneck import render_headneck, sample_headneck
    from rtdeep.phantom.grid import GridSpec

    spacing = np.array([1.0, 1.0, 2.0])
    for index in range(3):
        model = sample_headneck(np.random.default_rng([5, 2, index, 0]))
        lo = np.array([-70.0, -100.0, -30.0])
        hi = np.array([70.0, 60.0, model.brainstem.b[2] + 20])
        shape = tuple(int(n) for n in np.floor((hi - lo) / spacing).astype(int)[::-1] + 1)
        canvas = render_headneck(model, GridSpec(shape, tuple(spacing), tuple(lo)), edge_mm=1.0, fine_texture=False)
        stem = canvas.masks["Brainstem"]
        z = lo[2] + np.arange(shape[0]) * spacing[2]
        stem[z < model.cord_top_z + 6] = False
        in_plane = np.ones((1, 3, 3), bool)
        shell = ndimage.binary_dilation(stem, in_plane, iterations=3) & ~ndimage.binary_dilation(stem, in_plane)
        inner = ndimage.binary_erosion(stem, in_plane, iterations=2)
        assert np.median(canvas.hu[shell]) <= np.median(canvas.hu[inner]) - 10, index
        for name in ("Glnd_Submand_L", "Glnd_Submand_R"):
            gland = canvas.masks[name]
            ring = ndimage.binary_dilation(gland, in_plane, iterations=2) & ~gland
            ring &= ~canvas.masks["Mandible"]
            assert (canvas.hu[ring] < -40).mean() >= 0.33, (index, name, float((canvas.hu[ring] < -40).mean()))


def test_headneck_patient_lies_on_a_couch_and_headrest_under_a_mask():
    """Head-and-neck phantoms are scanned as in a clinic (docs/phantom.md): on every couch type, with
    and without a thermoplastic mask. Noise-free renders: the shoulders touch the couch top (at most
    2 mm of air on any full-shoulder slice; the occiput touches instead where it reaches further
    back), the couch, headrest and mask lie outside the External, every organ's mask is the same as
    without them, and a masked face has the shell within a few mm in front of it."""
    from scipy import ndimage

    from rtdeep.phantom.anatomy_headneck import render_headneck, sample_headneck
    from rtdeep.phantom.grid import GridSpec

    models = [sample_headneck(np.random.default_rng([5, 2, index, 0])) for index in range(40)]
    assert {m.scanner.couch for m in models} == set(COUCH_TYPES)
    assert {m.immobilisation.mask for m in models} == {True, False}
    assert {m.immobilisation.mask_bottom_z < m.shoulder_z for m in models if m.immobilisation.mask} == {True, False}
    picked = {}
    for model in models:
        picked.setdefault((model.scanner.couch, model.immobilisation.mask), model)
    spacing = np.array([1.0, 1.0, 6.0])
    for (couch, masked), model in sorted(picked.items()):
        immobilisation = model.immobilisation
        lo = np.array([-90.0, -140.0, model.z_range[0]])
        hi = np.array([90.0, immobilisation.couch_top_y + 45, model.z_range[1]])
        shape = tuple(int(n) for n in np.floor((hi - lo) / spacing).astype(int)[::-1] + 1)
        grid = GridSpec(shape, tuple(spacing), tuple(lo))
        canvas = render_headneck(model, grid, edge_mm=1.0, fine_texture=False)
        model.immobilisation = None
        bare = render_headneck(model, grid, edge_mm=1.0, fine_texture=False)
        model.immobilisation = immobilisation
        external = canvas.masks["External"]
        for name, mask in canvas.masks.items():
            if name != "External":
                assert np.array_equal(mask, bare.masks[name]), (couch, masked, name)
        assert not (external & ~bare.masks["External"]).any()  # flattened on the couch, never grown
        devices = (canvas.hu > -990) & ~ndimage.binary_dilation(bare.masks["External"], iterations=2)
        assert devices.sum() > 1000, (couch, masked)  # the couch top and headrest at least
        y = lo[1] + np.arange(shape[1]) * spacing[1]
        front = ndimage.binary_erosion(external, iterations=2) & (y < immobilisation.couch_top_y - 30)[None, :, None]
        assert np.abs(canvas.hu[front] - bare.hu[front]).max() < 1e-3, (couch, masked)  # nothing painted inside
        z = lo[2] + np.arange(shape[0]) * spacing[2]
        column = shape[2] // 2
        gaps = []
        for k in range(shape[0]):
            rows = np.flatnonzero(external[k, :, column])
            if rows.size:
                below = canvas.hu[k, rows[-1] + 1:, column]
                gaps.append((z[k], int(np.argmax(below > -960)) * spacing[1]))
        assert min(gap for _, gap in gaps) <= 1.0, (couch, masked)  # the patient lies on something
        shoulder_gaps = [gap for zk, gap in gaps if zk < model.shoulder_z - 35]
        occiput_rests = min(gap for zk, gap in gaps if zk > model.shoulder_z + 15) <= 1.0
        assert occiput_rests or max(shoulder_gaps, default=0.0) <= 2.0, (couch, masked, shoulder_gaps)
        # the face: in front of the skin at the eyes' level, the mask's shell within gap + 4 mm
        k = int(np.argmin(np.abs(z - model.eyes[0].centre[2])))
        face = np.flatnonzero(external[k].any(axis=1))[0]
        in_front = canvas.hu[k, max(face - int(immobilisation.mask_gap_mm + 4), 0):face, 60:121]
        assert bool((in_front > -500).any()) == masked, (couch, masked)
