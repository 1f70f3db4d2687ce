"""``rtdeep cohort`` on a messy export built from phantoms: pairing, name mapping, reasons, links."""

from __future__ import annotations

import csv
import json

import pytest

from rtdeep.cli import main
from rtdeep.cohort import build_cohort, read_cohort_manifest
from rtdeep.cohort.example_export import write_example_export
from rtdeep.cohort.manifest import outcome_manifest
from rtdeep.dicomrt.study import load_study
from rtdeep.errors import ValidationError
from rtdeep.names import classify_structure
from rtdeep.pneumonitis.dataset import read_manifest
from rtdeep.sites import get_site
from rtdeep.training.data import cases_from_manifest

THORAX = ["Lung_L", "Lung_R", "Heart", "Esophagus", "SpinalCord"]


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return write_example_export(tmp_path_factory.mktemp("export") / "export")


@pytest.fixture(scope="module")
def cohort(export, tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort") / "cohort"
    assert main([ "cohort", str(export), "--out", str(out), "--site", "thorax"]) == 0
    return out


@pytest.mark.parametrize("name, organ", [
    ("Lt Lung", "Lung_L"), ("LUNG_L", "Lung_L"), ("L Lung", "Lung_L"), ("Lung Left", "Lung_L"),
    ("Rt Lung", "Lung_R"), ("Cord", "SpinalCord"), ("Spinal Cord", "SpinalCord"), ("Oesophagus", "Esophagus"),
    ("Esoph", "Esophagus"), ("HEART", "Heart"),
])
def test_clinic_spellings_map_to_tg263(name, organ):
    assert classify_structure(name, THORAX).organ == organ


@pytest.mark.parametrize("name, organ", [
    ("Parotid Lt", "Parotid_L"), ("PAROTID_R", "Parotid_R"), ("Lt Parotid Gland", "Parotid_L"),
    ("Submandibular Gland R", "Glnd_Submand_R"), ("SMG_L", "Glnd_Submand_L"), ("Brain Stem", "Brainstem"),
    ("Bone_Mandible", "Mandible"), ("Cord_PRV3mm", None), ("Parotid_L_opt", None), ("Parotids", None),
])
def test_head_and_neck_spellings(name, organ):
    assert classify_structure(name, list(get_site("headneck").organ_names)).organ == organ


@pytest.mark.parametrize("name, interpreted_type, rule", [
    ("Lungs-GTV", "ORGAN", "derived"), ("Lung-CTV", "", "derived"), ("Cord+5mm", "", "derived"),
    ("SpinalCord_PRV05", "AVOIDANCE", "PRV"), ("Heart_PRV", "", "PRV"), ("z_ring", "ORGAN", "optimisation"),
    ("Ring_PTV", "", "ring"), ("opt_Heart", "", "optimisation"), ("Avoid_Lung", "", "optimisation"),
    ("Couch Interior", "", "couch"), ("CouchSurface", "SUPPORT", "SUPPORT"), ("Marker1", "MARKER", "MARKER"),
    ("BB", "", "marker"), ("Lung_L", "POINT", "POINT"), ("GTV", "GTV", "target"),
])
def test_non_organs_are_never_mapped(name, interpreted_type, rule):
    decision = classify_structure(name, THORAX, interpreted_type)
    assert decision.organ is None
    assert decision.rule.startswith("excluded") and rule in decision.rule


def test_manifest_pairs_each_usable_study(cohort, export):
    rows = _rows(cohort / "manifest.csv")
    assert [row["patient_id"] for row in rows] == ["EXP-01", "EXP-02", "EXP-03"]
    by_patient = {row["patient_id"]: row for row in rows}
    assert json.loads(by_patient["EXP-01"]["roi_map"]) == {
        "Lung_L": "Lt Lung", "Lung_R": "RIGHT LUNG", "Heart": "HEART", "Esophagus": "Oesophagus", "SpinalCord": "Cord"}
    assert by_patient["EXP-02"]["missing_organs"] == "Heart"
    assert by_patient["EXP-02"]["organs"] == "Lung_L;Lung_R;Esophagus;SpinalCord"
    for row in rows:
        assert row["rtstruct"].endswith("RT/RS1.dcm") and row["rtplan"] and row["rtdose"]
        assert row["warnings"] == ""
    # the CT of EXP-01, split over nested folders, is one series; its duplicate slice is not counted twice
    slices = list((export / "EXP-01" / "20240101" / "CT").rglob("*.dcm"))
    assert len({p.parent for p in slices}) == 2 and by_patient["EXP-01"]["ct_files"] == str(len(slices))


def test_study_folders_reference_the_export_never_copy(cohort, export):
    for row in read_cohort_manifest(cohort / "manifest.csv"):
        files = [p for p in row.study_dir.rglob("*") if not p.is_dir()]
        assert files and all(p.is_symlink() for p in files)
        assert all(str(p.resolve()).startswith(str(export.resolve())) for p in files)
    study = load_study(cohort / "studies" / "EXP-01_1")
    assert study.ct.volume.shape[0] == len(list((cohort / "studies" / "EXP-01_1" / "CT").iterdir()))
    assert study.dose is not None
    assert "Lt Lung" in study.structure_set.names()


def test_roi_names_lists_every_name_with_rule_and_count(cohort):
    table = {(row["name"], row["tg263"], row["rule"]): int(row["studies"]) for row in _rows(cohort / "roi_names.csv")}
    assert table[("Oesophagus", "Esophagus", "synonym")] == 2
    assert table[("LUNG_L", "Lung_L", "case")] == 1
    assert table[("Spinal Cord", "SpinalCord", "synonym")] == 1
    assert table[("Lungs-GTV", "excluded", "excluded: derived (boolean or margin)")] == 1
    assert table[("Lung-CTV", "excluded", "excluded: derived (boolean or margin)")] == 1
    assert table[("SpinalCord_PRV05", "excluded", "excluded: PRV")] == 1
    assert table[("z_ring", "excluded", "excluded: optimisation (z_ prefix)")] == 1
    assert table[("CouchSurface", "excluded", "excluded: interpreted type SUPPORT")] == 1
    assert table[("Marker1", "excluded", "excluded: interpreted type MARKER")] == 1
    assert table[("GTV", "excluded", "excluded: target volume")] == 3
    names = {name for name, _, _ in table}
    assert names == {"Lt Lung", "RIGHT LUNG", "HEART", "Oesophagus", "Cord", "LUNG_L", "Rt Lung", "Esophagus",
                     "Spinal Cord", "L Lung", "Lung Right", "Heart", "SpinalCord", "External", "GTV", "PTV",
                     "Lungs-GTV", "Lung-CTV", "SpinalCord_PRV05", "z_ring", "CouchSurface", "Marker1"}


def test_unused_lists_every_reason(cohort, export):
    unused = _rows(cohort / "unused.csv")
    reasons = [(row["patient_id"], row["kind"], row["reason"].split(":")[0]) for row in unused]
    assert ("EXP-01", "series", "MR images") in reasons
    assert ("EXP-02", "series", "CT series without a structure set") in reasons
    assert ("EXP-03", "file", "RTSTRUCT on another frame of reference") in reasons
    assert ("EXP-04", "study", "no structure set in this study") in reasons
    duplicates = sorted(row["what"] for row in unused if row["reason"].startswith("duplicate of"))
    assert duplicates == [str(export / "EXP-01/backup/RS_copy.dcm"), str(export / "EXP-01/backup/copy_of_slice.dcm")]
    not_dicom = sorted(row["what"] for row in unused if row["reason"].startswith("not DICOM"))
    assert not_dicom == [str(export / "EXP-01/backup/broken.dcm"), str(export / "EXP-01/notes.txt")]


def test_names_map_overrides_and_outcomes_join(export, tmp_path):
    names = tmp_path / "map.csv"
    names.write_text("name,tg263\nCord,excluded\nSpinalCord_PRV05,SpinalCord\n")
    outcomes = tmp_path / "outcomes.csv"
    outcomes.write_text("patient_id,grade\nEXP-01,3\nEXP-02,1\nEXP-99,2\n")
    result = build_cohort(export, tmp_path / "cohort", "thorax", names_csv=names, outcomes_csv=outcomes)
    rows = {row["patient_id"]: row for row in result.rows}
    assert json.loads(rows["EXP-01"]["roi_map"])["SpinalCord"] == "SpinalCord_PRV05"
    assert (rows["EXP-01"]["grade"], rows["EXP-01"]["pneumonitis"]) == ("3", "1")
    assert (rows["EXP-02"]["grade"], rows["EXP-02"]["pneumonitis"]) == ("1", "0")
    assert rows["EXP-03"]["pneumonitis"] == ""
    table = {row["name"]: row for row in _rows(tmp_path / "cohort" / "roi_names.csv")}
    assert (table["Cord"]["tg263"], table["Cord"]["rule"]) == ("excluded", "user map")
    assert any("EXP-99" in warning for warning in result.outcome_warnings)
    assert "EXP-03" in result.summary()
    # train-pneumonitis reads the studies with an outcome through the classifier's own manifest reader
    classifier_manifest, left_out = outcome_manifest(result.manifest, tmp_path / "classifier.csv")
    labelled = read_manifest(classifier_manifest)
    assert left_out == 1 and [(r.patient_id, r.label) for r in labelled] == [("EXP-01", 1), ("EXP-02", 0)]
    assert labelled[0].study_dir == (tmp_path / "cohort" / "studies" / "EXP-01_1").absolute()


def test_bad_names_map_and_existing_output_are_one_line_errors(export, cohort, tmp_path, capsys):
    names = tmp_path / "map.csv"
    names.write_text("name,tg263\nCord,Spinal_Cord\n")
    with pytest.raises(ValidationError, match="line 2: 'Spinal_Cord'"):
        build_cohort(export, tmp_path / "c", "thorax", names_csv=names)
    assert main(["cohort", str(export), "--out", str(cohort)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not any(p.name.startswith(".c.partial") for p in tmp_path.iterdir())


def test_training_reads_the_cohort_with_absent_organs_marked(cohort):
    thorax = get_site("thorax")
    cases = {case.case_id: case for case in cases_from_manifest(cohort, thorax, None)}
    assert sorted(cases) == ["EXP-01_1", "EXP-02_1", "EXP-03_1"]
    heart = thorax.organ_names.index("Heart")
    assert cases["EXP-01_1"].present.all() and cases["EXP-03_1"].present.all()
    assert not cases["EXP-02_1"].present[heart] and cases["EXP-02_1"].present.sum() == 4
    # the clinic's names were read under the TG-263 names: every present organ has voxels
    for case in cases.values():
        found = {int(v) for v in set(case.labels.ravel().tolist())} - {0}
        assert found == {i + 1 for i, present in enumerate(case.present) if present}


def test_segment_needs_either_a_ct_folder_or_a_manifest(cohort, tmp_path, capsys):
    assert main(["segment", "--model", "thorax_unet3d", "--out", str(tmp_path / "a")]) == 2
    assert main(["segment", str(cohort), "--manifest", str(cohort / "manifest.csv"), "--model", "thorax_unet3d",
                 "--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.count("give either CT_DIR (one study) or --manifest (a cohort)") == 2
