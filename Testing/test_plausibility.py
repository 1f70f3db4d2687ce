"""Plausibility checks (rtdeep.plausibility): pass on phantoms, fail on deliberately broken masks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import stored_as
from scipy import ndimage

from rtdeep.phantom import generate_patient
from rtdeep.plausibility import check_plausibility


@pytest.fixture(scope="module")
def thorax():
    # a seed no bundle was trained or selected on (training uses seed 1, held-out evaluation seed 2)
    return generate_patient("thorax", 5, 31, "small")


def _replace(rois, name, mask=None, new_name=None):
    out = []
    for roi in rois:
        if roi.name == name:
            roi = dataclasses.replace(roi, mask=roi.mask if mask is None else mask, name=new_name or roi.name)
        out.append(roi)
    return out


@pytest.mark.parametrize("site,index", [("thorax", 6), ("thorax", 7), ("headneck", 3), ("headneck", 4)])
def test_checks_pass_on_held_out_phantoms(site, index):
    patient = generate_patient(site, index, 31, "small")
    assert check_plausibility(patient.ct, patient.rois) == []


def test_pass_on_fixture_and_report_as_dicts(thorax):
    assert check_plausibility(thorax.ct, thorax.rois) == []


def test_cord_removed_on_slices_fails_continuity(thorax):
    cord = thorax.roi("SpinalCord").mask.copy()
    slices = np.nonzero(cord.any(axis=(1, 2)))[0]
    cord[slices[len(slices) // 3:len(slices) // 3 + 4]] = False  # a 4-slice gap in the chest
    findings = check_plausibility(thorax.ct, _replace(thorax.rois, "SpinalCord", cord))
    assert [(f.organ, f.check) for f in findings] == [("SpinalCord", "continuity")]
    assert findings[0].value == 4 and "missing on 4" in findings[0].message
    report = findings[0].as_dict()
    assert report["organ"] == "SpinalCord" and report["check"] == "continuity"


def test_cord_on_half_the_chest_fails_the_lung_extent_check(thorax):
    cord = thorax.roi("SpinalCord").mask.copy()
    lungs = thorax.roi("Lung_L").mask | thorax.roi("Lung_R").mask
    chest = np.nonzero(lungs.any(axis=(1, 2)))[0]
    cord[: (chest[0] + chest[-1]) // 2] = False  # only the upper half remains: contiguous, so no gap
    findings = check_plausibility(thorax.ct, _replace(thorax.rois, "SpinalCord", cord))
    assert ("SpinalCord", "continuity") in [(f.organ, f.check) for f in findings]
    assert any("lung apex and base" in f.message for f in findings)


def test_heart_behind_the_spine_fails_position(thorax):
    heart = thorax.roi("Heart").mask
    cord = thorax.roi("SpinalCord").mask
    shift = int(np.nonzero(cord)[1].mean() - np.nonzero(heart)[1].mean()) + 15  # posterior = +j
    moved = np.zeros_like(heart)
    moved[:, shift:, :] = heart[:, :-shift, :]
    findings = check_plausibility(thorax.ct, _replace(thorax.rois, "Heart", moved))
    assert ("Heart", "position") in [(f.organ, f.check) for f in findings]
    assert any("posterior to the SpinalCord" in f.message for f in findings)


def test_lungs_swapped_fail_laterality(thorax):
    rois = _replace(_replace(thorax.rois, "Lung_L", new_name="Lung_tmp"), "Lung_R", new_name="Lung_L")
    rois = _replace(rois, "Lung_tmp", new_name="Lung_R")
    findings = check_plausibility(thorax.ct, rois)
    assert ("Lung_L", "laterality") in [(f.organ, f.check) for f in findings]
    assert ("Heart", "position") in [(f.organ, f.check) for f in findings]  # no longer between Lung_R and Lung_L


def test_organ_five_times_too_big_fails_volume(thorax):
    heart = thorax.roi("Heart").mask
    target = 5 * heart.sum()
    big = heart.copy()
    while big.sum() < target:
        big = ndimage.binary_dilation(big)
    findings = check_plausibility(thorax.ct, _replace(thorax.rois, "Heart", big))
    volume = [f for f in findings if f.check == "volume"]
    assert [f.organ for f in volume] == ["Heart"] and volume[0].value > volume[0].expected[1]


def test_liver_labelled_heart_below_the_lungs_fails_position(thorax):
    """A heart contour that goes on down into the liver (a network that never saw the abdomen) is
    found: it reaches below the lowest lung voxel, where the heart never is."""
    heart = thorax.roi("Heart").mask
    lungs = thorax.roi("Lung_L").mask | thorax.roi("Lung_R").mask
    lowest_lung = int(np.nonzero(lungs.any(axis=(1, 2)))[0].min())  # slice 0 is the inferior end
    lowest_heart = int(np.nonzero(heart.any(axis=(1, 2)))[0].min())
    assert lowest_heart > lowest_lung  # as drawn: above the costophrenic recesses
    spilled = heart.copy()
    depth = lowest_heart - lowest_lung + round(20.0 / thorax.ct.spacing_mm[2])
    for step in range(1, depth + 1):
        k = lowest_heart - step
        if k < 0:
            break
        spilled[k] = heart[lowest_heart] & ~lungs[k]
    findings = check_plausibility(thorax.ct, _replace(thorax.rois, "Heart", spilled))
    below = [f for f in findings if f.organ == "Heart" and "below the lowest lung voxel" in f.message]
    assert len(below) == 1 and below[0].check == "position" and below[0].value > 10.0


def test_esophagus_running_on_into_the_abdomen_fails_position(thorax):
    """An esophagus contour that runs on below the gastro-oesophageal junction, down beside the
    aorta (what networks trained on phantoms whose esophagus ended in soft tissue did on phantoms
    whose esophagus ends in the stomach), is found once it reaches more than
    ESOPHAGUS_BELOW_LUNGS_MM below the lowest lung voxel; one that stops just below it is not."""
    from rtdeep.plausibility import ESOPHAGUS_BELOW_LUNGS_MM

    esophagus = thorax.roi("Esophagus").mask
    lungs = thorax.roi("Lung_L").mask | thorax.roi("Lung_R").mask
    lowest_lung = int(np.nonzero(lungs.any(axis=(1, 2)))[0].min())  # slice 0 is the inferior end
    lowest = int(np.nonzero(esophagus.any(axis=(1, 2)))[0].min())
    assert lowest > lowest_lung  # as drawn: it ends above the lung bases
    slice_mm = float(thorax.ct.spacing_mm[2])
    for below_mm, found in ((ESOPHAGUS_BELOW_LUNGS_MM - slice_mm, False), (ESOPHAGUS_BELOW_LUNGS_MM + 2 * slice_mm, True)):
        run_on = esophagus.copy()
        bottom = lowest_lung - int(np.ceil(below_mm / slice_mm))
        assert bottom >= 0  # the scan goes on far enough below the lungs
        run_on[bottom:lowest] = esophagus[lowest]
        findings = check_plausibility(thorax.ct, _replace(thorax.rois, "Esophagus", run_on))
        below = [f for f in findings if f.organ == "Esophagus" and f.check == "position"]
        assert len(below) == int(found), (below_mm, findings)
        if found:
            assert below[0].value > ESOPHAGUS_BELOW_LUNGS_MM and "below the lowest lung voxel" in below[0].message


def test_soft_tissue_labelled_lung_fails_density(thorax):
    """A left lung contour that took in the heart and the soft tissue around it (median voxel no longer
    air) is reported; the real lungs, heart and cord pass."""
    lung = thorax.roi("Lung_L").mask
    grown = lung | thorax.roi("Heart").mask
    body = thorax.roi("External").mask
    while np.median(thorax.ct.array[grown]) < -500:
        grown = ndimage.binary_dilation(grown) & body
    findings = check_plausibility(thorax.ct, _replace(thorax.rois, "Lung_L", grown))
    density = [f for f in findings if f.check == "density"]
    assert [f.organ for f in density] == ["Lung_L"] and density[0].value > -500
    mostly_lung = thorax.roi("Heart").mask | lung
    findings = check_plausibility(thorax.ct, _replace(thorax.rois, "Heart", mostly_lung))
    assert ("Heart", "density") in [(f.organ, f.check) for f in findings]


def test_a_volume_just_outside_its_range_never_reads_as_the_limit(thorax):
    """A heart of 299.6 cc against a 300 cc limit reads "299.6 cc", not "300 cc outside ... 300-1300"
    (seen on a held-out phantom)."""
    heart = thorax.roi("Heart").mask
    voxel_cc = thorax.ct.voxel_volume_cc
    target = int(299.7 / voxel_cc)  # just under 300 cc
    small = heart.copy()
    while small.sum() > target:
        small &= ~(small & ~ndimage.binary_erosion(small))  # peel the surface
    flat = np.flatnonzero(heart & ~small)
    small.flat[flat[:target - int(small.sum())]] = True
    volume = float(small.sum()) * voxel_cc
    assert 299.0 < volume < 299.95
    finding = [f for f in check_plausibility(thorax.ct, _replace(thorax.rois, "Heart", small)) if f.check == "volume"]
    assert len(finding) == 1 and finding[0].message.startswith(f"Heart: volume {volume:.1f} cc outside")


def test_cord_moved_into_the_vertebral_body_fails_canal_check(thorax):
    cord = thorax.roi("SpinalCord").mask
    ny = thorax.ct.spacing_mm[1]
    shift = round(22.0 / ny)  # 22 mm anterior: inside the vertebral body
    moved = np.zeros_like(cord)
    moved[:, :-shift, :] = cord[:, shift:, :]
    findings = check_plausibility(thorax.ct, _replace(thorax.rois, "SpinalCord", moved))
    assert ("SpinalCord", "position") in [(f.organ, f.check) for f in findings]


def test_lungs_cut_by_the_scan_fail_coverage(thorax):
    """A scan that stops halfway down the lungs: both lungs and the heart are cut by its inferior edge
    (a lung's mean dose and V20 would be wrong); the tubes, which run through every scan, are not."""
    from rtdeep.inference.preprocess import crop_volume

    lungs = thorax.roi("Lung_L").mask | thorax.roi("Lung_R").mask
    extent = np.nonzero(lungs.any(axis=(1, 2)))[0]
    assert thorax.ct.index_to_lps(np.array([0.0, 0.0, 0.0]))[2] < thorax.ct.index_to_lps(
        np.array([0.0, 0.0, float(extent[-1])]))[2]  # slice 0 is the inferior end
    box = (slice(int(extent[0] + extent[-1]) // 2, None), slice(None), slice(None))
    ct = crop_volume(thorax.ct, box)
    rois = [dataclasses.replace(roi, mask=np.asarray(roi.mask)[box]) for roi in thorax.rois]
    findings = [f for f in check_plausibility(ct, rois) if f.check == "coverage"]
    assert [f.organ for f in findings] == ["Lung_L", "Lung_R", "Heart"]
    assert all("inferior edge" in f.message and f.value >= 0.1 for f in findings)
    whole = check_plausibility(thorax.ct, thorax.rois)  # the same lungs on the whole scan: nothing
    assert [f for f in whole if f.check == "coverage"] == []


@pytest.mark.parametrize("reversed_axes,order", [((2,), (0, 1, 2)), ((1, 2), (0, 1, 2)), ((0,), (2, 0, 1))])
def test_checks_give_the_same_findings_whatever_the_ct_s_axis_order(thorax, reversed_axes, order):
    """Feet first, prone, or a series stored with its axial slices along another array axis: the
    phantom passes, and the same broken masks (lungs swapped, cord cut) fail the same checks."""
    def stored(rois):
        return [dataclasses.replace(roi, mask=stored_as(thorax.ct.with_array(np.asarray(roi.mask)), reversed_axes,
                                                        order).array) for roi in rois]

    ct = stored_as(thorax.ct, reversed_axes, order)
    assert check_plausibility(ct, stored(thorax.rois)) == []
    cord = thorax.roi("SpinalCord").mask.copy()
    cord[cord.shape[0] // 2:cord.shape[0] // 2 + 4] = False
    broken = _replace(_replace(_replace(thorax.rois, "Lung_L", new_name="Lung_X"), "Lung_R", new_name="Lung_L"),
                      "Lung_X", new_name="Lung_R")
    broken = _replace(broken, "SpinalCord", cord)
    expected = [(f.organ, f.check, f.message) for f in check_plausibility(thorax.ct, broken)]
    assert ("Lung_L", "laterality") in [f[:2] for f in expected] and ("SpinalCord", "continuity") in [f[:2] for f in expected]
    assert [(f.organ, f.check, f.message) for f in check_plausibility(ct, stored(broken))] == expected


def test_empty_organ_is_reported(thorax):
    findings = check_plausibility(thorax.ct, _replace(thorax.rois, "Esophagus", np.zeros_like(thorax.roi("Esophagus").mask)))
    assert [(f.organ, f.check) for f in findings] == [("Esophagus", "empty")]


def test_segment_prints_each_finding_keeps_every_organ_and_writes_json(tmp_path, capsys, thorax):
    import json

    import pydicom

    from rtdeep.cli import main
    from rtdeep.phantom import write_patient
    from rtdeep.sites import SITES

    folder = write_patient(thorax, tmp_path / "in")
    out, report_path = tmp_path / "out", tmp_path / "report.json"
    assert main(["segment", str(folder / "CT"), "--model", "thorax_unet25d", "--out", str(out),
                 "--json", str(report_path), "--threads", "2"]) == 0
    report = json.loads(report_path.read_text())
    stderr = capsys.readouterr().err
    assert list(report["organs"]) == list(SITES["thorax"].organ_names)
    for finding in report["plausibility"]:
        assert f"warning: {finding['message']}" in stderr
    ds = pydicom.dcmread(out / "RS.thorax_unet25d.dcm")
    assert [roi.ROIName for roi in ds.StructureSetROISequence] == list(SITES["thorax"].organ_names)
    # the JSON path is refused before anything is written when it exists
    assert main(["segment", str(folder / "CT"), "--model", "thorax_unet25d", "--out", str(tmp_path / "out2"),
                 "--json", str(report_path)]) == 2
    assert not (tmp_path / "out2").exists()


def test_segment_on_a_two_slice_real_ct_warns_once_per_organ_not_found(tmp_path, capsys, real_dicom_dir):
    """A GE phantom scan of two 5 mm slices (no patient): each organ the model does not find gets one
    warning, saying it is left out of the RTSTRUCT; each organ it does find is cut by both edges of the
    scan and says so."""
    import shutil

    import pydicom

    from rtdeep.cli import main

    ct_dir = tmp_path / "ct"
    ct_dir.mkdir()
    for path in sorted((real_dicom_dir / "mim-rtstruct-ge-ct").glob("CT_*.dcm")):
        shutil.copy(path, ct_dir / path.name)
    code = main(["segment", str(ct_dir), "--model", "thorax_unet25d", "--out", str(tmp_path / "out"), "--threads", "2"])
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert not [line for line in lines if line.startswith("WARNING: ROI")]  # the writer's second notice
    if code == 2:  # nothing found at all: one error, no file
        assert "every ROI mask is empty" in err and not (tmp_path / "out" / "RS.thorax_unet25d.dcm").exists()
        return
    assert code == 0
    written = [roi.ROIName for roi in pydicom.dcmread(tmp_path / "out" / "RS.thorax_unet25d.dcm").StructureSetROISequence]
    for organ in ("Lung_L", "Lung_R", "Heart", "Esophagus", "SpinalCord"):
        not_found = [line for line in lines if line.startswith(f"warning: {organ}: not found")]
        if organ in written:
            assert not not_found
            if organ.startswith(("Lung", "Heart")):
                assert f"warning: {organ}: cut by the CT's superior and inferior edges" in err
        else:
            assert not_found == [f"warning: {organ}: not found on this CT (empty contour); left out of the RTSTRUCT"]


def test_organ_centre_is_the_mean_voxel_position(thorax):
    """The centre the position and laterality checks use (from per-axis voxel counts) is the mean of
    the organ's voxel positions in LPS mm, on the phantom's grid and on a flipped one."""
    from rtdeep.plausibility import _centroid_lps
    from rtdeep.volume import Volume

    for roi in thorax.rois:
        mask = np.asarray(roi.mask, bool)
        if not mask.any():
            continue
        kk, jj, ii = np.nonzero(mask)
        expected = thorax.ct.index_to_lps(np.array([ii.mean(), jj.mean(), kk.mean()]))
        np.testing.assert_allclose(_centroid_lps(thorax.ct, mask), expected, atol=1e-6)
    flipped = np.diag([-0.8, 1.1, -3.0, 1.0])
    ct = Volume(np.zeros((12, 10, 8), np.float32), flipped)
    mask = np.zeros(ct.shape, bool)
    mask[5:9, 2, 1:3] = True
    np.testing.assert_allclose(_centroid_lps(ct, mask), ct.index_to_lps(np.array([1.5, 2.0, 6.5])))
