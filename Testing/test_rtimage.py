"""RT Image: DRRs of the plan's beams (geometry, landmarks where they project), dciodvfy, reading,
PNG with field outline, and the image placed in the room on real MRML."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from rtdeep.dicomrt.rtimage_reader import _field_outline, isocenter_pixel, read_rt_image_info, rt_image_volume
from rtdeep.dicomrt.study import load_study
from rtdeep.dicomrt.validate import run_dciodvfy
from rtdeep.drr import BeamGeometry, compute_drr, read_beam_geometries, write_study_drrs
from rtdeep.volume import Volume, affine_from_geometry


def _errors(findings: list) -> list:
    return [finding for finding in findings if finding.severity == "error"]


def _files_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _rtdeep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rtdeep", *args], capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rtimage") / "cohort"
    completed = _rtdeep("phantom", "--site", "thorax", "--patients", "1", "--seed", "5", "--small", "--drr",
                        "--out", str(out))
    assert completed.returncode == 0, completed.stderr
    return out / "RTD-THX-0001"


def test_phantom_writes_one_valid_rt_image_per_beam(patient: Path) -> None:
    beams = read_beam_geometries(patient / "RP.dcm")
    images = sorted((patient / "RTIMAGE").glob("*.dcm"))
    assert len(images) == len(beams) >= 5
    plan_uid = pydicom.dcmread(patient / "RP.dcm", stop_before_pixels=True).SOPInstanceUID
    ct_header = pydicom.dcmread(min((patient / "CT").iterdir()), stop_before_pixels=True)
    for path, beam in zip(images, beams):
        assert _errors(run_dciodvfy(path)) == [], path
        ds = pydicom.dcmread(path)
        assert ds.Modality == "RTIMAGE" and ds.RTImagePlane == "NORMAL"
        assert ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan_uid
        assert int(ds.ReferencedBeamNumber) == beam.number
        assert float(ds.GantryAngle) == pytest.approx(beam.gantry_deg)
        assert float(ds.RadiationMachineSAD) == 1000.0 and float(ds.RTImageSID) == 1500.0
        assert [float(v) for v in ds.XRayImageReceptorTranslation] == [0.0, 0.0, -500.0]
        assert ds.StudyInstanceUID == ct_header.StudyInstanceUID
        assert ds.FrameOfReferenceUID == ct_header.FrameOfReferenceUID


def test_default_phantom_output_has_no_rt_image(tmp_path: Path) -> None:
    completed = _rtdeep("phantom", "--site", "thorax", "--patients", "1", "--seed", "5", "--small",
                        "--out", str(tmp_path / "plain"))
    assert completed.returncode == 0, completed.stderr
    assert sorted(p.name for p in (tmp_path / "plain" / "RTD-THX-0001").iterdir()) == ["CT", "RD.dcm", "RP.dcm", "RS.dcm"]


def test_isocentre_projects_where_the_geometry_tags_say(patient: Path) -> None:
    study = load_study(patient)
    for beam in read_beam_geometries(patient / "RP.dcm"):
        ds = pydicom.dcmread(patient / "RTIMAGE" / f"RI_beam{beam.number:02d}.dcm")
        drr = compute_drr(study.ct.volume, beam, pixels=int(ds.Rows))
        from_tags = isocenter_pixel(ds)
        from_projection = drr.pixel_of(beam.project(beam.isocenter_lps, float(ds.RTImageSID)))
        assert np.allclose(from_tags, from_projection, atol=1e-6)
        # the image placed in the room: that pixel lies on the ray from the source through the isocentre
        room = rt_image_volume(ds.filename)
        point = room.index_to_lps(np.array([from_tags[1], from_tags[0], 0.0]))
        expected = beam.source_lps() + (beam.isocenter_lps - beam.source_lps()) * 1500.0 / 1000.0
        assert np.allclose(point, expected, atol=1e-6)
        assert np.allclose(room.array[0], ds.pixel_array * float(ds.RescaleSlope), atol=1e-5)


def _landmark_pixel(ct: Volume, landmark: np.ndarray, beam: BeamGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Where the landmark shows in the DRR (weighted centroid of its own shadow) and where it projects."""
    without = ct.array.copy()
    without[landmark] = 40.0  # the bone replaced by soft tissue: the difference is the landmark's shadow
    drr = compute_drr(ct, beam, pixels=160)
    shadow = drr.integral - compute_drr(ct.with_array(without), beam, pixels=160).integral
    rows, columns = np.indices(shadow.shape)
    weights = np.clip(shadow, 0, None)
    seen = np.array([(rows * weights).sum(), (columns * weights).sum()]) / weights.sum()
    excess = (ct.array - 40.0) * landmark
    kk, jj, ii = np.nonzero(landmark)
    w = excess[kk, jj, ii]
    centre = ct.index_to_lps(np.array([(ii * w).sum(), (jj * w).sum(), (kk * w).sum()]) / w.sum())
    return seen, drr.pixel_of(beam.project(centre, drr.sid_mm))


def test_a_vertebra_lands_where_its_3d_position_projects(patient: Path) -> None:
    study = load_study(patient)
    ct = study.ct.volume
    cord = study.structure_set["SpinalCord"].mask
    iso = read_beam_geometries(patient / "RP.dcm")[0].isocenter_lps
    k_iso = round(float(ct.lps_to_index(iso)[2]))
    jj, ii = np.nonzero(cord[k_iso])
    j_c, i_c = jj.mean(), ii.mean()
    k, j, i = np.indices(ct.shape)
    # the bone within 25 mm of the canal. On the corrected phantom a 35 mm disc cuts through the front of
    # the vertebral body and the rib heads and its shadow lands 2 px off at gantry 200 (20-25 mm discs:
    # within 0.1 px at every angle): the landmark's HU-weighted centre is only an approximation of its
    # attenuation-weighted shadow when bones of different density are cut off at the disc's edge
    near = ((np.abs(k - k_iso) <= 3) & ((j - j_c) ** 2 + (i - i_c) ** 2 <= (25.0 / ct.spacing_mm[0]) ** 2))
    vertebra = near & (ct.array > 250.0)
    assert vertebra.sum() > 20
    pixel_mm = 400.0 / 160
    for gantry in (0.0, 90.0, 200.0):
        beam = BeamGeometry(1, "test", 1000.0, gantry, 0.0, 0.0, iso)
        seen, projected = _landmark_pixel(ct, vertebra, beam)
        assert np.abs(seen - projected).max() * pixel_mm < 3.0, (gantry, seen, projected)


def test_drr_orientation_and_couch_on_a_test_object() -> None:
    ct = Volume(np.full((60, 80, 80), -1000.0, np.float32), affine_from_geometry((-158.0, -158.0, -118.0), (4, 4, 4)))
    i, j, k = 54, 40, 39  # a bone bead on the patient's left, superior
    ct.array[k - 1:k + 2, j - 1:j + 2, i - 1:i + 2] = 1500
    bead = ct.index_to_lps(np.array([i, j, k], dtype=float))
    assert bead[0] > 50 and bead[2] > 30
    ap = compute_drr(ct, BeamGeometry(1, "AP", 1000.0, 0.0, 0.0, 0.0, np.zeros(3)), pixels=100)
    row, column = np.unravel_index(np.argmax(ap.integral), ap.integral.shape)
    assert column > 55 and row < 45  # seen from the front: left to the right, superior up
    # gantry 90, couch 90: the source is inferior to the patient (IEC couch rotation)
    kicked = BeamGeometry(1, "kick", 1000.0, 90.0, 0.0, 90.0, np.zeros(3))
    assert np.allclose(kicked.source_lps(), [0.0, 0.0, -1000.0], atol=1e-9)
    drr = compute_drr(ct, kicked, pixels=100)
    peak = np.array(np.unravel_index(np.argmax(drr.integral), drr.integral.shape), dtype=float)
    assert np.abs(peak - drr.pixel_of(kicked.project(bead, drr.sid_mm))).max() <= 1.0


def test_info_lists_rt_images_and_drr_cli_draws_pngs(patient: Path, tmp_path: Path) -> None:
    completed = _rtdeep("info", str(patient))
    assert completed.returncode == 0, completed.stderr
    assert "RT Image RI_beam01.dcm 'DRR G" in completed.stdout and "SID 1500 mm" in completed.stdout
    info = read_rt_image_info(patient / "RTIMAGE" / "RI_beam01.dcm")
    assert (info.beam_number, info.rows, info.columns, info.image_kind) == (1, 256, 256, "DRR")
    completed = _rtdeep("drr", str(patient), "--out", str(tmp_path / "drr"), "--png", "--pixels", "96")
    assert completed.returncode == 0, completed.stderr
    pngs = sorted((tmp_path / "drr").glob("*.png"))
    assert len(pngs) == len(read_beam_geometries(patient / "RP.dcm"))
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in pngs)
    before = _files_digest(tmp_path / "drr")
    again = _rtdeep("drr", str(patient), "--out", str(tmp_path / "drr"), "--png", "--pixels", "48")
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
    assert "output exists" in again.stderr and "RI_beam01.dcm" in again.stderr
    assert _files_digest(tmp_path / "drr") == before  # every existing file byte-identical, nothing added
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drr"]  # no staging folder left beside it


def test_drr_refuses_one_clashing_file_and_writes_none(patient: Path, tmp_path: Path) -> None:
    out = tmp_path / "drr"
    out.mkdir()
    (out / "RI_beam03.dcm").write_bytes(b"someone else's file")
    completed = _rtdeep("drr", str(patient), "--out", str(out), "--pixels", "32")
    assert completed.returncode == 2 and completed.stderr.count("\n") == 1, completed.stderr
    assert "output exists" in completed.stderr and "RI_beam03.dcm" in completed.stderr
    assert [p.name for p in out.iterdir()] == ["RI_beam03.dcm"]  # the other beams were not written either
    assert (out / "RI_beam03.dcm").read_bytes() == b"someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drr"]


def test_drr_failing_mid_write_leaves_nothing(patient: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rtdeep.dicomrt import rtimage_writer

    real_writer, written = rtimage_writer.write_rtimage, []

    def write_two_then_fail(*args, **kwargs):
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(real_writer(*args, **kwargs))
        return written[-1]

    monkeypatch.setattr(rtimage_writer, "write_rtimage", write_two_then_fail)
    with pytest.raises(OSError, match="No space left on device"):
        write_study_drrs(patient, tmp_path / "drr", pixels=32)
    assert len(written) == 2 and all(not path.exists() for path in written)  # staged, then removed
    assert list(tmp_path.iterdir()) == []  # no output folder, no partial file, no staging folder


def test_drr_without_a_plan_is_one_line_error(patient: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(patient / "CT", tmp_path / "ct-only" / "CT")
    completed = _rtdeep("drr", str(tmp_path / "ct-only"), "--out", str(tmp_path / "o"))
    assert completed.returncode == 2 and completed.stderr.count("\n") == 1
    assert "no RT Plan" in completed.stderr


def test_field_outline_follows_jaws_and_mlc(patient: Path, tmp_path: Path) -> None:
    plan = pydicom.dcmread(patient / "RP.dcm")
    beam = plan.BeamSequence[0]
    mlc = pydicom.Dataset()
    mlc.RTBeamLimitingDeviceType = "MLCX"
    mlc.NumberOfLeafJawPairs = 4
    mlc.LeafPositionBoundaries = [-40, -20, 0, 20, 40]
    beam.BeamLimitingDeviceSequence.append(mlc)
    positions = pydicom.Dataset()
    positions.RTBeamLimitingDeviceType = "MLCX"
    positions.LeafJawPositions = [-10, -30, -30, -10, 15, 35, 35, 15]
    beam.ControlPointSequence[0].BeamLimitingDevicePositionSequence.append(positions)
    plan.save_as(tmp_path / "RP_mlc.dcm")
    jaws, leaves = _field_outline(tmp_path / "RP_mlc.dcm", int(beam.BeamNumber), 1.5, 0.0)
    assert jaws[:, 0].min() == pytest.approx(-75.0) and jaws[:, 1].max() == pytest.approx(75.0)
    assert leaves[:, 0].min() == pytest.approx(-45.0) and leaves[:, 0].max() == pytest.approx(52.5)
    assert leaves[:, 1].min() == pytest.approx(-60.0) and leaves[:, 1].max() == pytest.approx(60.0)


def test_rt_image_keeps_its_geometry_on_real_mrml(patient: Path) -> None:
    pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core==5.11.0.6) is not installed")
    from rtdeep.slicer.testing_scene import build_scene
    from rtdeep.slicer.volume_node import node_from_volume, volume_from_node

    room = rt_image_volume(patient / "RTIMAGE" / "RI_beam02.dcm")
    testing = build_scene()
    node = node_from_volume(testing.scene, room, "DRR beam 2")
    back = volume_from_node(node)
    assert np.allclose(back.affine, room.affine) and np.array_equal(back.array, room.array)
    ijk_to_ras = np.eye(4)
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    for row in range(4):
        for column in range(4):
            ijk_to_ras[row, column] = matrix.GetElement(row, column)
    ds = pydicom.dcmread(patient / "RTIMAGE" / "RI_beam02.dcm", stop_before_pixels=True)
    row_col = isocenter_pixel(ds)
    ras = ijk_to_ras @ np.array([row_col[1], row_col[0], 0.0, 1.0])
    beam = read_beam_geometries(patient / "RP.dcm")[1]
    lps = beam.source_lps() + (beam.isocenter_lps - beam.source_lps()) * 1.5
    assert np.allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-4)


def test_portal_image_angles_from_exposure_sequence(patient: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(patient / "RTIMAGE" / "RI_beam01.dcm")
    gantry = float(ds.GantryAngle)
    exposure = pydicom.Dataset()
    exposure.GantryAngle = ds.GantryAngle
    exposure.BeamLimitingDeviceAngle = "15"
    del ds.GantryAngle, ds.BeamLimitingDeviceAngle
    ds.ImageType = ["ORIGINAL", "PRIMARY", "PORTAL"]
    ds.ExposureSequence = [exposure]
    ds.save_as(tmp_path / "portal.dcm")
    info = read_rt_image_info(tmp_path / "portal.dcm")
    assert (info.gantry_angle_deg, info.collimator_angle_deg, info.image_kind) == (gantry, 15.0, "PORTAL")
