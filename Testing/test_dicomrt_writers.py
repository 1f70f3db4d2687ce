"""DICOM writers: every object passes dciodvfy with no Error line, reads back with the same values,
meets every line of ../shared/RTSTRUCT_CHECKLIST.md, and never overwrites a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import hash_tree
from scipy.spatial.transform import Rotation

from rtdeep.dicomrt.ct_reader import read_ct_series
from rtdeep.dicomrt.ct_writer import write_ct_series
from rtdeep.dicomrt.rtdose_reader import read_rtdose
from rtdeep.dicomrt.rtdose_writer import write_rtdose
from rtdeep.dicomrt.rtplan_reader import read_rtplan
from rtdeep.dicomrt.rtplan_writer import write_rtplan
from rtdeep.dicomrt.rtstruct_writer import write_rtstruct
from rtdeep.dicomrt.types import Beam, PatientInfo, PlanSummary, Roi
from rtdeep.dicomrt.validate import check_rtstruct, run_dcentvfy, run_dciodvfy, run_dcmpschk
from rtdeep.errors import GeometryError, StructureError
from rtdeep.fileio import OutputExistsError
from rtdeep.volume import Volume, affine_from_geometry

PATIENT = PatientInfo(patient_name="Phantom^Thorax", patient_id="RTD-001", patient_birth_date="19600101",
                      patient_sex="F", study_date="20260102", study_time="093000", study_id="1",
                      accession_number="ACC1", referring_physician_name="Ref^Doc")


def _ct_volume(oblique: bool = False) -> Volume:
    hu = np.full((6, 40, 48), -1000.0, np.float32)
    hu[:, 5:35, 6:42] = 20.0
    hu[:, 12:20, 10:20] = -800.4
    direction = Rotation.from_euler("xyz", [12, -8, 20], degrees=True).as_matrix() if oblique else None
    return Volume(hu, affine_from_geometry((-120.0, -95.5, -40.25), (1.25, 1.5, 2.5), direction))


def _rois(shape: tuple[int, int, int]) -> list[Roi]:
    body = np.zeros(shape, bool)
    body[:, 5:35, 6:42] = True
    lung = np.zeros(shape, bool)
    lung[1:5, 12:20, 10:20] = True
    return [Roi("External", body, color_rgb=(0, 255, 0), interpreted_type="EXTERNAL"),
            Roi("Lung_L", lung, number=7, color_rgb=(0, 0, 255)),
            Roi("Heart", np.zeros(shape, bool), color_rgb=(255, 0, 0))]


def _plan() -> PlanSummary:
    return PlanSummary("Lung 60/30", 60.0, 30, [
        Beam("AP", 1, [0.0], meterset_mu=110.5, isocenter_lps=(-90.0, -70.0, -35.0)),
        Beam("Arc1", 2, [181.0, 240.0, 300.0, 0.0, 60.0, 120.0, 179.0], energy="6X", meterset_mu=250.0),
    ], target_roi_number=7)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("study")
    ct = write_ct_series(_ct_volume(), root / "CT", PATIENT, uid_seed="writers")
    rs = write_rtstruct(ct, _rois(ct.volume.shape), root / "RS.dcm", uid_seed="writers")
    rs_uid = str(pydicom.dcmread(rs).SOPInstanceUID)
    rp = write_rtplan(_plan(), ct, root / "RP.dcm", structure_set_uid=rs_uid, uid_seed="writers")
    dose = Volume(np.linspace(0, 62.3, 4 * 14 * 16).reshape(4, 14, 16),
                  affine_from_geometry((-118.0, -94.0, -40.25), (3.0, 3.0, 3.0)))
    rd = write_rtdose(dose, ct, root / "RD.dcm", referenced_plan_uid=str(pydicom.dcmread(rp).SOPInstanceUID),
                      uid_seed="writers")
    return {"root": root, "ct": ct, "rs": rs, "rp": rp, "rd": rd, "dose": dose}


def _errors(findings: list) -> list[str]:
    return [str(f) for f in findings if f.severity == "error"]


def test_every_written_object_passes_dciodvfy_dcmpschk_dcentvfy(study: dict) -> None:
    files = [*study["ct"].files, study["rs"], study["rp"], study["rd"]]
    for path in files:
        assert _errors(run_dciodvfy(path)) == []
        assert run_dcmpschk(path) == []
    assert _errors(run_dcentvfy(files)) == []


def test_oblique_ct_round_trips_geometry_and_hu(tmp_path: Path) -> None:
    volume = _ct_volume(oblique=True)
    ct = write_ct_series(volume, tmp_path / "CT", PATIENT)
    assert _errors(run_dciodvfy(ct.files[0])) == []
    read = read_ct_series(tmp_path / "CT")
    assert np.allclose(read.volume.affine, volume.affine, atol=1e-4)
    assert np.array_equal(read.volume.array, np.rint(volume.array))
    assert read.sop_instance_uids == ct.sop_instance_uids
    header = pydicom.dcmread(ct.files[0])
    assert header.PixelRepresentation == 1 and float(header.RescaleIntercept) == -1024.0


def test_ct_with_k_against_the_normal_is_written_in_normal_order(tmp_path: Path) -> None:
    volume = _ct_volume()
    affine = volume.affine.copy()
    affine[:3, 2] *= -1
    flipped = Volume(volume.array.copy(), affine)
    flipped.array[0] = 500.0
    ct = write_ct_series(flipped, tmp_path / "CT", PATIENT)
    read = read_ct_series(tmp_path / "CT")
    assert np.allclose(read.volume.affine, ct.volume.affine, atol=1e-4)
    assert np.all(read.volume.array[-1] == 500.0)


def test_sheared_grid_is_rejected(tmp_path: Path) -> None:
    volume = _ct_volume()
    affine = volume.affine.copy()
    affine[0, 2] = 1.0
    with pytest.raises(GeometryError):
        write_ct_series(Volume(volume.array, affine), tmp_path / "CT", PATIENT)
    assert not (tmp_path / "CT" / "CT_0001.dcm").exists()


def test_uid_seed_makes_uids_reproducible(tmp_path: Path) -> None:
    first = write_ct_series(_ct_volume(), tmp_path / "a", PATIENT, uid_seed=42)
    second = write_ct_series(_ct_volume(), tmp_path / "b", PATIENT, uid_seed=42)
    third = write_ct_series(_ct_volume(), tmp_path / "c", PATIENT)
    assert first.sop_instance_uids == second.sop_instance_uids
    assert first.patient.study_instance_uid == second.patient.study_instance_uid
    assert first.files[0].read_bytes() == second.files[0].read_bytes()
    assert not set(third.sop_instance_uids) & set(first.sop_instance_uids)


def test_dose_reads_back_in_gy_on_its_grid(study: dict) -> None:
    grid = read_rtdose(study["rd"])
    assert np.allclose(grid.dose.array, study["dose"].array, atol=1e-6)
    assert np.allclose(grid.dose.affine, study["dose"].affine, atol=1e-6)
    assert grid.frame_of_reference_uid == study["ct"].frame_of_reference_uid
    ds = pydicom.dcmread(study["rd"])
    assert (ds.DoseUnits, ds.DoseType, ds.DoseSummationType) == ("GY", "PHYSICAL", "PLAN")
    assert [float(v) for v in ds.GridFrameOffsetVector] == [0.0, 3.0, 6.0, 9.0]
    assert ds.StudyInstanceUID == study["ct"].patient.study_instance_uid
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == pydicom.dcmread(study["rp"]).SOPInstanceUID


def test_plan_reads_back(study: dict) -> None:
    plan = read_rtplan(study["rp"])
    assert plan.prescription_gy == pytest.approx(60.0)
    assert plan.fractions == 30
    assert [b.name for b in plan.beams] == ["AP", "Arc1"]
    assert plan.beams[0].meterset_mu == pytest.approx(110.5)
    assert len(plan.beams[1].gantry_angles_deg) == 7
    assert plan.referenced_structure_set_uid == pydicom.dcmread(study["rs"]).SOPInstanceUID
    ds = pydicom.dcmread(study["rp"])
    assert [len(b.ControlPointSequence) for b in ds.BeamSequence] == [2, 7]
    assert ds.BeamSequence[1].ControlPointSequence[0].GantryRotationDirection == "CW"


def test_rtstruct_checklist(study: dict) -> None:
    """../shared/RTSTRUCT_CHECKLIST.md, line by line."""
    ct, rs = study["ct"], pydicom.dcmread(study["rs"])
    ct_header = pydicom.dcmread(ct.files[0])
    # 1. SOP class, meta class, new instance UID, modality
    assert rs.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3" == rs.file_meta.MediaStorageSOPClassUID
    assert rs.SOPInstanceUID != rs.SeriesInstanceUID and rs.Modality == "RTSTRUCT"
    # 2. patient/study verbatim; Type 2 present
    for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyID",
                    "StudyDate", "AccessionNumber", "ReferringPhysicianName"):
        assert rs[keyword].value == ct_header[keyword].value, keyword
    assert all(k in rs for k in ("ReferringPhysicianName", "AccessionNumber", "OperatorsName"))
    # 3. frame of reference -> study -> series -> every slice; top-level FoR and indicator
    frame = rs.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == ct.frame_of_reference_uid == rs.FrameOfReferenceUID
    study_item = frame.RTReferencedStudySequence[0]
    assert study_item.ReferencedSOPInstanceUID == ct_header.StudyInstanceUID
    series = study_item.RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == ct.series_instance_uid
    assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == ct.sop_instance_uids
    assert "PositionReferenceIndicator" in rs
    # 4. unique numbers (Roi.number kept when valid), FoR, names, AUTOMATIC
    rois = rs.StructureSetROISequence
    assert [r.ROINumber for r in rois] == [1, 7]
    assert {r.ReferencedFrameOfReferenceUID for r in rois} == {ct.frame_of_reference_uid}
    assert [r.ROIName for r in rois] == ["External", "Lung_L"]  # 11. the empty Heart is left out
    assert {r.ROIGenerationAlgorithm for r in rois} == {"AUTOMATIC"}
    # 5 and 6. closed planar, on a slice, image reference, point count, no repeat, DS <= 16
    z_by_uid = {uid: ct.volume.index_to_lps(np.array([0, 0, k]))[2] for k, uid in enumerate(ct.sop_instance_uids)}
    n_contours = 0
    for roi_contour in rs.ROIContourSequence:
        for contour in roi_contour.get("ContourSequence", []):
            n_contours += 1
            raw = contour.get_item(0x30060050).value
            texts = raw.strip().split(b"\\")
            points = np.array([float(t) for t in texts]).reshape(-1, 3)
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            assert contour.NumberOfContourPoints == len(points)
            assert not np.allclose(points[0], points[-1])
            assert max(len(t) for t in texts) <= 16
            image = contour.ContourImageSequence[0]
            assert image.ReferencedSOPClassUID == ct.sop_class_uid
            assert np.allclose(points[:, 2], z_by_uid[image.ReferencedSOPInstanceUID], atol=1e-3)
    assert n_contours == 6 + 4
    # 7. observations with types, display colours; 11. no empty ROI (Heart's mask is empty)
    observations = rs.RTROIObservationsSequence
    assert [o.ReferencedROINumber for o in observations] == [1, 7]
    assert [o.RTROIInterpretedType for o in observations] == ["EXTERNAL", "ORGAN"]
    assert [list(c.ROIDisplayColor) for c in rs.ROIContourSequence] == [[0, 255, 0], [0, 0, 255]]
    assert all("ContourSequence" in item for item in rs.ROIContourSequence)
    # 8. label
    assert rs.StructureSetLabel == "RTDEEP"
    # 10. the project's cross-reference checks find nothing
    assert check_rtstruct(study["rs"], ct) == []
    assert check_rtstruct(study["rs"], study["root"]) == []


def test_too_long_label_and_wrong_grid_are_refused(study: dict, tmp_path: Path) -> None:
    ct = study["ct"]
    with pytest.raises(StructureError, match="StructureSetLabel"):
        write_rtstruct(ct, _rois(ct.volume.shape), tmp_path / "RS.dcm", label="A" * 17)
    with pytest.raises(StructureError, match="Lung"):
        write_rtstruct(ct, [Roi("Lung", np.zeros((2, 2, 2), bool))], tmp_path / "RS.dcm")
    assert not (tmp_path / "RS.dcm").exists()


def test_outputs_never_overwrite_and_inputs_stay_untouched(study: dict) -> None:
    root = study["root"]
    before = hash_tree(root)
    ct = study["ct"]
    with pytest.raises(OutputExistsError):
        write_ct_series(ct.volume, root / "CT", PATIENT)
    with pytest.raises(OutputExistsError):
        write_rtstruct(ct, _rois(ct.volume.shape), study["rs"])
    with pytest.raises(OutputExistsError):
        write_rtdose(study["dose"], ct, study["rd"], referenced_plan_uid="1.2.3")
    with pytest.raises(OutputExistsError):
        write_rtplan(_plan(), ct, study["rp"], structure_set_uid="1.2.3")
    assert hash_tree(root) == before
    assert not [p for p in root.rglob("*.tmp")]
