"""4D CT: the breathing phantom, phase recognition (tags vendors and Slicer use), projections, ITV,
measured motion against the phantom's truth, and the phases as a Slicer sequence on real MRML."""

from __future__ import annotations

import csv
import hashlib
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from rtdeep.dicomrt.ct_reader import read_ct_series
from rtdeep.dicomrt.fourd import find_four_d, phase_from_header
from rtdeep.dicomrt.rtstruct_reader import read_rtstruct
from rtdeep.dicomrt.study import load_study
from rtdeep.dicomrt.validate import check_rtstruct, run_dciodvfy
from rtdeep.errors import SeriesError
from rtdeep.fourd import analyse_four_d
from rtdeep.phantom import generate_patient
from rtdeep.phantom.fourd import generate_cohort_4d

N_PHASES = 4  # 0 % (end-inhale), 25 %, 50 % (end-exhale), 75 %: the full excursion, quickly


def _errors(findings: list) -> list:
    return [finding for finding in findings if finding.severity == "error"]


def _files_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("fourd") / "cohort"
    manifest = generate_cohort_4d("thorax", 1, 3, out, "small", n_phases=N_PHASES)
    with open(manifest, encoding="utf-8") as handle:
        row = next(csv.DictReader(handle))
    return {"out": out, "manifest": manifest, "row": row, "patient": out / row["study_dir"]}


@pytest.fixture(scope="module")
def analysed(cohort: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("fourd-out") / "result"
    return {"result": analyse_four_d(cohort["patient"], out), "out": out}


def _trajectory(row: dict) -> np.ndarray:
    return np.array([[float(v) for v in point.split()] for point in row["tumour_trajectory_mm"].split(";")])


def test_phantom_breathes_as_described(cohort: dict) -> None:
    row = cohort["row"]
    assert int(row["n_phases"]) == N_PHASES
    assert 10.0 <= float(row["breathing_si_mm"]) <= 22.0
    trajectory = _trajectory(row)
    assert trajectory.shape == (N_PHASES, 3)
    # inhale (0 %) moves the tumour inferiorly (-z) and anteriorly (-y) from end-exhale (50 %)
    assert trajectory[0, 2] < trajectory[2, 2] - 1.0
    assert trajectory[0, 1] < trajectory[2, 1]
    p2p = [float(row[f"tumour_p2p_{axis}_mm"]) for axis in "xyz"]
    assert p2p[2] > p2p[0] and p2p[2] > 1.0
    # lung density follows inflation: the lungs are darker at end-inhale than at end-exhale
    patient = cohort["patient"]
    inhale = read_ct_series(patient / "4DCT" / "P00")
    exhale = read_ct_series(patient / "4DCT" / "P50")
    lungs_in = read_rtstruct(patient / "4DCT" / "RS_P00.dcm", inhale)
    lungs_ex = read_rtstruct(patient / "4DCT" / "RS_P50.dcm", exhale)
    # the parenchyma, 2 voxels inside the contour: the lungs wrap the mediastinum, so boundary voxels
    # (partial volume with soft tissue) weigh on a whole-mask mean (1.8 HU apart here, 21 HU inside)
    inner_in = ndimage.binary_erosion(lungs_in["Lung_L"].mask, iterations=2)
    inner_ex = ndimage.binary_erosion(lungs_ex["Lung_L"].mask, iterations=2)
    mean_in = float(inhale.volume.array[inner_in].mean())
    mean_ex = float(exhale.volume.array[inner_ex].mean())
    assert mean_in < mean_ex - 5.0
    assert lungs_in["Lung_L"].mask.sum() > lungs_ex["Lung_L"].mask.sum() * 1.03


def test_end_exhale_phase_is_the_3d_phantom(cohort: dict) -> None:
    reference = generate_patient("thorax", 1, 3, "small")
    exhale = read_ct_series(cohort["patient"] / "4DCT" / "P50")
    # only the lagging chest-wall component is not quite back at 50 % (sin^4(pi lag) of its excursion)
    difference = np.abs(exhale.volume.array - np.rint(reference.ct.array))
    assert float(difference.mean()) < 2.0 and float(np.percentile(difference, 99)) < 25.0


def test_phantom_4d_is_deterministic(cohort: dict, tmp_path: Path) -> None:
    again = generate_cohort_4d("thorax", 1, 3, tmp_path / "again", "small", n_phases=N_PHASES)
    assert again.read_bytes() == cohort["manifest"].read_bytes()
    assert _files_digest(tmp_path / "again" / cohort["row"]["study_dir"]) == _files_digest(cohort["patient"])


def test_phantom_4d_objects_pass_dciodvfy_and_checks(cohort: dict) -> None:
    patient = cohort["patient"]
    for path in (patient / "CT" / "CT_0001.dcm", patient / "4DCT" / "P25" / "CT_0001.dcm", patient / "RS.dcm",
                 patient / "4DCT" / "RS_P25.dcm", patient / "RP.dcm", patient / "RD.dcm"):
        assert _errors(run_dciodvfy(path)) == [], path
    assert _errors(check_rtstruct(patient / "RS.dcm", patient / "CT")) == []
    assert _errors(check_rtstruct(patient / "4DCT" / "RS_P25.dcm", patient / "4DCT" / "P25")) == []


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"NominalPercentageOfRespiratoryPhase": 30.0}, (30.0, "NominalPercentageOfRespiratoryPhase (0020,9245)")),
        ({"NominalPercentageOfCardiacPhase": 70.0, "SeriesDescription": "CT 10%"},
         (70.0, "NominalPercentageOfCardiacPhase (0020,9241)")),
        ({"SeriesDescription": "P4^P100^S100^I00, Gated, 50.0%"}, (50.0, "SeriesDescription (0008,103E)")),
        ({"SeriesDescription": "4DCT T=20 %"}, (20.0, "SeriesDescription (0008,103E)")),
        ({"TemporalPositionIdentifier": 3, "NumberOfTemporalPositions": 10},
         (20.0, "TemporalPositionIdentifier (0020,0100)")),
        ({"SeriesDescription": "Thorax 3.0 B31f"}, (None, "")),
    ],
)
def test_phase_from_the_tags_vendors_use(tags: dict, expected: tuple) -> None:
    ds = pydicom.Dataset()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    assert phase_from_header(ds) == expected


def test_load_study_and_info_list_the_phases_in_order(cohort: dict) -> None:
    study = load_study(cohort["patient"])
    assert study.ct.series_description.startswith("AIP")
    assert [phase.percent for phase in study.respiratory_phases] == [0.0, 25.0, 50.0, 75.0]
    assert "ITV" in study.structure_set and study.plan is not None and study.dose is not None
    completed = subprocess.run([sys.executable, "-m", "rtdeep", "info", str(cohort["patient"])],
                               capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    assert "4D CT: 4 respiratory phases on this frame of reference: 0%, 25%, 50%, 75%" in completed.stdout


def test_info_reads_each_header_once_on_a_4d_ct(cohort: dict, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from rtdeep.cli import main
    from rtdeep.dicomrt import fourd, scan

    header_reads: Counter[Path] = Counter()
    phase_scans: list[int] = []
    read_header, read_series_headers = scan.read_header, fourd._read_series_headers

    def counting_read_header(path):
        header_reads[Path(path)] += 1
        return read_header(path)

    def counting_series_headers(paths):
        phase_scans.append(len(paths))
        return read_series_headers(paths)

    monkeypatch.setattr(scan, "read_header", counting_read_header)
    monkeypatch.setattr(fourd, "_read_series_headers", counting_series_headers)
    assert main(["info", str(cohort["patient"])]) == 0
    out = capsys.readouterr().out
    assert out.count("\nCT ") == N_PHASES + 1  # every phase and the AIP described
    files = {p for p in cohort["patient"].rglob("*") if p.is_file()}
    assert set(header_reads) == files and set(header_reads.values()) == {1}  # was once per CT series + 1
    assert len(phase_scans) == 1  # the CT headers grouped into phases once, not once per CT series


def test_duplicate_phase_is_one_clear_error(cohort: dict, tmp_path: Path) -> None:
    folder = tmp_path / "dup"
    shutil.copytree(cohort["patient"] / "4DCT" / "P00", folder / "a")
    shutil.copytree(cohort["patient"] / "4DCT" / "P25", folder / "b")
    for path in (folder / "b").iterdir():
        ds = pydicom.dcmread(path)
        ds.NominalPercentageOfRespiratoryPhase = 0.0
        ds.save_as(path)
    with pytest.raises(SeriesError, match="two CT series state respiratory phase 0%"):
        find_four_d(sorted(folder.rglob("*.dcm")))


def test_projections_are_ordered_and_derived(analysed: dict) -> None:
    out = analysed["out"]
    volumes = {kind: read_ct_series(out / kind) for kind in ("AIP", "MIP", "MinIP")}
    assert np.all(volumes["MIP"].volume.array >= volumes["AIP"].volume.array)
    assert np.all(volumes["AIP"].volume.array >= volumes["MinIP"].volume.array)
    assert np.any(volumes["MIP"].volume.array > volumes["MinIP"].volume.array + 100)
    for kind, series in volumes.items():
        header = pydicom.dcmread(series.files[0], stop_before_pixels=True)
        assert list(header.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert header.SeriesDescription.startswith(kind)
        assert _errors(run_dciodvfy(series.files[0])) == []


def test_itv_contains_every_phase_gtv(cohort: dict, analysed: dict) -> None:
    out = analysed["out"]
    aip = read_ct_series(out / "AIP")
    assert _errors(run_dciodvfy(out / "RS_ITV.dcm")) == []
    assert _errors(check_rtstruct(out / "RS_ITV.dcm", aip)) == []
    itv = read_rtstruct(out / "RS_ITV.dcm", aip)["ITV"].mask
    union = np.zeros_like(itv)
    for label in ("P00", "P25", "P50", "P75"):
        phase = read_ct_series(cohort["patient"] / "4DCT" / label)
        gtv = read_rtstruct(cohort["patient"] / "4DCT" / f"RS_{label}.dcm", phase)["GTV"].mask
        assert gtv.any() and not np.any(gtv & ~itv), label
        union |= gtv
    assert itv.sum() >= union.sum() and itv.sum() > read_rtstruct(
        cohort["patient"] / "4DCT" / "RS_P50.dcm", read_ct_series(cohort["patient"] / "4DCT" / "P50"))["GTV"].mask.sum()


def test_measured_tumour_motion_matches_the_phantom(cohort: dict, analysed: dict) -> None:
    truth = _trajectory(cohort["row"])
    result = analysed["result"]
    measured = np.array([row[1] for row in result.motion["GTV"]])
    assert np.abs(measured - truth).max() < 2.0
    truth_p2p = truth.max(axis=0) - truth.min(axis=0)
    assert np.abs(result.peak_to_peak_mm("GTV") - truth_p2p).max() < 2.0
    with open(result.motion_csv, encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["structure"] == "GTV"]
    assert [float(row["phase_percent"]) for row in rows] == [0.0, 25.0, 50.0, 75.0]
    assert abs(float(rows[0]["p2p_z_mm"]) - truth_p2p[2]) < 2.0
    # the spinal cord does not breathe
    assert np.abs(result.peak_to_peak_mm("SpinalCord")).max() < 1.0


def test_gtv_propagated_by_registration_where_a_phase_has_none(cohort: dict, tmp_path: Path) -> None:
    study = tmp_path / "one-phase-contoured"
    shutil.copytree(cohort["patient"] / "4DCT", study)
    for label in ("P00", "P25", "P75"):
        (study / f"RS_{label}.dcm").unlink()
    result = analyse_four_d(study, tmp_path / "out")
    sources = [row[3] for row in result.motion["GTV"]]
    assert sources[2] == "structure set" and all(source.startswith("registered") for source in sources[:2])
    measured = np.array([row[1] for row in result.motion["GTV"]])
    assert np.abs(measured - _trajectory(cohort["row"])).max() < 2.0


def test_fourd_cli_on_a_3d_study_is_one_line_error(cohort: dict, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(cohort["patient"] / "CT", plain / "CT")
    completed = subprocess.run([sys.executable, "-m", "rtdeep", "fourd", str(plain), "--out", str(tmp_path / "o")],
                               capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1 and "no 4D CT here" in completed.stderr
    assert not (tmp_path / "o").exists()


def test_fourd_cli_refuses_an_existing_output_and_leaves_it_unchanged(cohort: dict, tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "motion.csv").write_bytes(b"structure,kept\n")
    completed = subprocess.run([sys.executable, "-m", "rtdeep", "fourd", str(cohort["patient"]), "--out", str(out)],
                               capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 2 and completed.stderr.count("\n") == 1, completed.stderr
    assert "output exists" in completed.stderr and "motion.csv" in completed.stderr
    assert [p.name for p in out.iterdir()] == ["motion.csv"] and (out / "motion.csv").read_bytes() == b"structure,kept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no staging folder left beside it


def test_fourd_failing_mid_write_leaves_nothing(cohort: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rtdeep.fourd

    staged: list[Path] = []

    def fail_writing_motion(motion: dict, path: Path) -> None:
        staged.extend(p for p in path.parent.rglob("*") if p.is_file())
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rtdeep.fourd, "_write_motion_csv", fail_writing_motion)
    with pytest.raises(OSError, match="No space left on device"):
        analyse_four_d(cohort["patient"], tmp_path / "out")
    assert {p.parent.name for p in staged} >= {"AIP", "MIP", "MinIP"}  # the projections had been written...
    assert all(not p.exists() for p in staged)  # ...and were removed
    assert list(tmp_path.iterdir()) == []  # no output folder, no partial file, no staging folder


def test_phases_as_a_sequence_on_real_mrml(cohort: dict) -> None:
    slicer = pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core==5.11.0.6) is not installed")
    from rtdeep.slicer.sequence_node import phases_from_sequence, sequence_from_phases
    from rtdeep.slicer.testing_scene import build_scene
    from rtdeep.slicer.volume_node import volume_from_node

    phases = [read_ct_series(cohort["patient"] / "4DCT" / label) for label in ("P00", "P25", "P50", "P75")]
    testing = build_scene()
    sequence, browser, proxy = sequence_from_phases(testing.scene, [p.volume for p in phases], [0, 25, 50, 75])
    assert sequence.IsA("vtkMRMLSequenceNode") and browser.IsA("vtkMRMLSequenceBrowserNode")
    assert sequence.GetNumberOfDataNodes() == 4 and sequence.GetIndexUnit() == "%"
    logic = slicer.vtkSlicerSequencesLogic()
    logic.SetMRMLScene(testing.scene)
    browser.SetSelectedItemNumber(2)
    logic.UpdateProxyNodesFromSequences(browser)
    shown = volume_from_node(proxy)
    assert np.array_equal(shown.array, phases[2].volume.array)
    assert np.allclose(shown.affine, phases[2].volume.affine)
    volumes, percents = phases_from_sequence(sequence)
    assert percents == [0.0, 25.0, 50.0, 75.0]
    assert np.array_equal(volumes[0].array, phases[0].volume.array)


def test_model_segments_every_phase(cohort: dict, tmp_path: Path) -> None:
    result = analyse_four_d(cohort["patient"] / "4DCT", tmp_path / "model", model="thorax_unet25d")
    for organ in ("Lung_L", "Lung_R", "Heart", "SpinalCord"):
        rows = result.motion[organ]
        assert [row[0] for row in rows] == [0.0, 25.0, 50.0, 75.0]
        assert all(row[3] == "model thorax_unet25d" and row[2] > 1.0 for row in rows)
    # the bases of the lungs follow the diaphragm; the cord stays put in the axial plane (its
    # superior-inferior centroid depends on where the model finds the ends of a tube that crosses the
    # whole scan, so it is no measure of motion)
    assert result.peak_to_peak_mm("Lung_L")[2] > 2.0
    assert np.all(result.peak_to_peak_mm("SpinalCord")[:2] < 2.0)


def test_4d_phantom_of_head_and_neck_is_one_line_error(tmp_path: Path) -> None:
    completed = subprocess.run([sys.executable, "-m", "rtdeep", "phantom", "--site", "headneck", "--patients", "1",
                                "--small", "--4d", "--out", str(tmp_path / "hn")],
                               capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 2 and completed.stderr.count("\n") == 1
    assert "--4d needs --site thorax" in completed.stderr
    assert not (tmp_path / "hn").exists()
