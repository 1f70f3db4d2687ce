"""Every bad input gives one clear error: the malformed-input corpus run through the real CLI.

Each case of Testing/malformed_corpus.py is a copy of one phantom study with one defect; the CLI
runs as a subprocess and must exit 2 with exactly one line on stderr naming the file and the tag or
ROI, no traceback, no output file left behind and its inputs unchanged. ``rtdeep validate`` must
report every input defect too (validation is the gate). Valid variants (RLE, 8-bit, a non-DICOM file
beside the study, two series with ``--series-uid``, an oblique study) must succeed.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from malformed_corpus import CASES, VALID_CASES, Case, build_base_study

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "RTDEEP_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
#: as root, drop the permission override so that chmod 000 really makes a folder unreadable
NO_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


@pytest.fixture(scope="session")
def base_study(tmp_path_factory) -> Path:
    return build_base_study(tmp_path_factory.mktemp("corpus-base"))


def _cli(command: str, study: Path, out: Path, extra: tuple[str, ...] = ()) -> list[str]:
    rtdeep = [sys.executable, "-m", "rtdeep"]
    if command == "info":
        return [*rtdeep, "info", str(study), *extra]
    if command == "validate":
        return [*rtdeep, "validate", "--no-tools", str(study), *extra]
    if command == "dvh":
        return [*rtdeep, "dvh", str(study), "--out", str(out), *extra]
    if command == "compare":
        return [*rtdeep, "compare", "--ct", str(study), "--reference", str(study / "RS.dcm"), "--test",
                str(study / "RS.dcm"), "--out", str(out), *extra]
    if command == "crop":
        return [*rtdeep, "crop", str(study), "--roi", "lung-dose20", "--out", str(out), *extra]
    if command == "segment":
        return [*rtdeep, "segment", str(study), "--model", "thorax_atlas", "--out", str(out), *extra]
    if command == "predict":
        return [*rtdeep, "predict-pneumonitis", str(study), "--out", str(out), *extra]
    raise AssertionError(command)


def _hashes(root: Path) -> dict[str, str]:
    """SHA256 of every file under ``root`` (readable or not: the test runs as root or owns them)."""
    if not root.exists():
        return {}
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    result = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            mode = path.stat().st_mode
            path.chmod(mode | 0o400)
            result[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
            path.chmod(mode)
    return result


def _restore_permissions(root: Path) -> None:
    for path in [root, *root.rglob("*")] if root.is_dir() else []:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


def _copy(base: Path, tmp_path: Path) -> Path:
    study = tmp_path / "study"
    shutil.copytree(base, study, symlinks=True)
    return study


def _run(argv: list[str], unreadable: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [*NO_OVERRIDE, *argv] if unreadable else argv
    return subprocess.run(argv, check=False, capture_output=True, text=True, env=ENV, cwd=PROJECT_ROOT, timeout=120)


def _gate_reports(study: Path, case: Case) -> list[str]:
    """Error lines of ``rtdeep validate`` on the study (in process; as a subprocess for permission cases)."""
    if case.unreadable:
        result = _run(_cli("validate", study, study), unreadable=True)
        assert "Traceback" not in result.stderr, result.stderr
        return [line for line in (result.stdout + result.stderr).splitlines() if "ERROR" in line or "error:" in line]
    from rtdeep.dicomrt.validate import validate_paths
    from rtdeep.errors import RtDeepError

    try:
        return [str(f) for f in validate_paths([study], use_tools=False) if f.severity == "error"]
    except RtDeepError as error:
        return [str(error)]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_malformed_input_gives_one_clear_error(case: Case, base_study: Path, tmp_path: Path) -> None:
    study = _copy(base_study, tmp_path)
    out = tmp_path / "out"
    case.build(study, out)
    inputs_before, outputs_before = _hashes(study), _hashes(out)
    try:
        result = _run(_cli(case.command, study, out, case.extra_args), case.unreadable)
        gate = _gate_reports(study, case) if case.input_defect else []
    finally:
        _restore_permissions(study)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, f"exit {result.returncode}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rtdeep "), lines[0]
    for text in case.expect:
        assert text in lines[0], f"'{text}' not in: {lines[0]}"
    assert _hashes(study) == inputs_before, "an input file changed"
    assert _hashes(out) == outputs_before, "output written or changed"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folder left behind"
    if case.input_defect:
        assert gate, f"rtdeep validate does not report what '{case.command}' refuses: {lines[0]}"


@pytest.mark.parametrize("name,build,command", VALID_CASES, ids=[case[0] for case in VALID_CASES])
def test_valid_variants_work(name: str, build, command: str, base_study: Path, tmp_path: Path) -> None:
    study = _copy(base_study, tmp_path)
    out = tmp_path / "out"
    build(study, out)
    extra: tuple[str, ...] = ()
    if "two_series" in name:
        first = min((study / "CT_copy").glob("*.dcm"))
        extra = ("--series-uid", str(pydicom.dcmread(first, stop_before_pixels=True).SeriesInstanceUID))
    inputs_before = _hashes(study)
    result = _run(_cli(command, study, out, extra))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "error" not in result.stderr.lower()
    assert _hashes(study) == inputs_before
    if command == "dvh":
        reference = _run(_cli("dvh", base_study, tmp_path / "reference_out"))
        assert reference.returncode == 0, reference.stderr
        ours, theirs = _mean_doses(out), _mean_doses(tmp_path / "reference_out")
        assert set(ours) == set(theirs)
        tolerance = 0.5 if "8bit" in name else 1e-3  # the 8-bit CT only changes HU, never the dose
        for roi in ours:
            assert abs(ours[roi] - theirs[roi]) <= tolerance, (roi, ours[roi], theirs[roi])
    elif command == "crop":
        assert (out / "index.csv").is_file() and list((out / "crops").glob("*.npz")), result.stdout
    else:
        assert "CT" in result.stdout


def _mean_doses(out: Path) -> dict[str, float]:
    with open(out / "dvh_stats.csv", newline="") as handle:
        return {row["roi"]: float(row["mean_gy"]) for row in csv.DictReader(handle)}


def test_oblique_study_gives_the_axial_dvh(base_study: Path, tmp_path: Path) -> None:
    """The same patient with every grid rotated 20 degrees: same mean doses as the axial study."""
    oblique = build_base_study(tmp_path / "oblique", oblique=True)
    results = {}
    for label, study in (("axial", base_study), ("oblique", oblique)):
        result = _run(_cli("dvh", study, tmp_path / f"out_{label}"))
        assert result.returncode == 0, result.stderr
        results[label] = _mean_doses(tmp_path / f"out_{label}")
    for roi in ("GTV", "Heart", "Lung_L", "Lungs-GTV"):
        axial, rotated = results["axial"][roi], results["oblique"][roi]
        assert abs(axial - rotated) <= 0.02 * max(axial, 1.0), (roi, axial, rotated)


def test_corpus_has_enough_defects() -> None:
    names = [case.name for case in CASES]
    assert len(set(names)) == len(names)
    assert sum(case.input_defect for case in CASES) >= 40


# ------------------------------------------------------------------------ real clinical exports


def _add_empty_and_point_rois(rs_path: Path) -> None:
    """What a clinic's structure set holds: an ROI without contours ('Areola') and a marker (POINT)."""
    from malformed_corpus import edit
    from pydicom.dataset import Dataset

    def change(ds: pydicom.Dataset) -> None:
        frame = ds.StructureSetROISequence[0].ReferencedFrameOfReferenceUID
        point = [float(v) for v in ds.ROIContourSequence[6].ContourSequence[0].ContourData[:3]]
        for number, name, kind in ((98, "Areola", "ORGAN"), (99, "Marker1", "MARKER")):
            definition = Dataset()
            definition.ROINumber, definition.ROIName = number, name
            definition.ReferencedFrameOfReferenceUID = frame
            definition.ROIGenerationAlgorithm = "MANUAL"
            ds.StructureSetROISequence.append(definition)
            contour_item = Dataset()
            contour_item.ReferencedROINumber, contour_item.ROIDisplayColor = number, [0, 255, 0]
            if name == "Marker1":
                contour = Dataset()
                contour.ContourGeometricType, contour.NumberOfContourPoints = "POINT", 1
                contour.ContourData = point
                contour_item.ContourSequence = [contour]
            ds.ROIContourSequence.append(contour_item)
            observation = Dataset()
            observation.ObservationNumber = observation.ReferencedROINumber = number
            observation.RTROIInterpretedType, observation.ROIInterpreter = kind, ""
            ds.RTROIObservationsSequence.append(observation)

    edit(rs_path, change)


def test_clinical_structure_set_with_empty_roi_and_marker_still_gives_dvhs(base_study: Path, tmp_path: Path) -> None:
    """An empty structure and a point marker are skipped with a note; the other DVHs are unchanged."""
    study = _copy(base_study, tmp_path)
    _add_empty_and_point_rois(study / "RS.dcm")
    reference = _run(_cli("dvh", base_study, tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    for label, argv in (("study", _cli("dvh", study, tmp_path / "out_study")),
                        ("files", [sys.executable, "-m", "rtdeep", "dvh", "--rtstruct", str(study / "RS.dcm"),
                                   "--rtdose", str(study / "RD.dcm"), "--out", str(tmp_path / "out_files")])):
        result = _run(argv)
        assert result.returncode == 0, result.stderr
        assert "skipped 'Areola'" in result.stdout and "skipped 'Marker1'" in result.stdout
        means = _mean_doses(tmp_path / f"out_{label}")
        assert "Areola" not in means and "Marker1" not in means
        if label == "study":
            assert means == _mean_doses(tmp_path / "reference")
    named = _run([*_cli("dvh", study, tmp_path / "out_named"), "--structures", "Areola"])
    assert named.returncode == 2 and "Areola" in named.stderr  # asked for by name: an error, not a skip


def test_ct_not_covering_the_structures_switches_to_the_dose_grid(base_study: Path, tmp_path: Path) -> None:
    """With one CT slice in the folder, the DVHs come from the contours on the dose grid, and it says so."""
    study = _copy(base_study, tmp_path)
    for path in sorted((study / "CT").glob("*.dcm"))[1:]:
        path.unlink()
    result = _run(_cli("dvh", study, tmp_path / "out_one_slice"))
    assert result.returncode == 0, result.stderr
    assert "does not cover" in result.stdout and "dose grid" in result.stdout
    whole = _run([*_cli("dvh", base_study, tmp_path / "out_dose_grid"), "--grid", "dose"])
    assert whole.returncode == 0, whole.stderr
    assert _mean_doses(tmp_path / "out_one_slice") == _mean_doses(tmp_path / "out_dose_grid")
    forced = _run([*_cli("dvh", study, tmp_path / "out_forced"), "--grid", "ct"])
    assert forced.returncode == 2 and "--grid dose" in forced.stderr and "ROI '" in forced.stderr


def test_validate_accepts_a_utf8_roi_name(base_study: Path, tmp_path: Path) -> None:
    from malformed_corpus import edit

    study = _copy(base_study, tmp_path)

    def change(ds: pydicom.Dataset) -> None:
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.StructureSetROISequence[3].ROIName = "Herz_Größe_ü"

    edit(study / "RS.dcm", change)
    result = _run([sys.executable, "-m", "rtdeep", "validate", str(study / "RS.dcm"), *map(str, sorted(
        (study / "CT").glob("*.dcm"))[:2])])
    assert "Herz_Größe_ü" in result.stdout  # dcmpschk's byte-wise complaint, kept as a warning
    assert "ROIName (3006,0026)" in result.stdout and "false positive" in result.stdout
    assert not [line for line in result.stdout.splitlines() if line.startswith("ERROR") and "ROIName" in line]


def test_voxel_limit_is_documented_and_adjustable(base_study: Path, tmp_path: Path) -> None:
    small = {**ENV, "RTDEEP_MAX_VOXELS": "100000"}
    result = subprocess.run([sys.executable, "-m", "rtdeep", "info", str(base_study)], check=False,
                            capture_output=True, text=True, env=small, timeout=120)
    assert result.returncode == 2
    assert "RTDEEP_MAX_VOXELS" in result.stderr and "655,360 voxels" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_real_files_from_other_systems_pass_the_strict_readers(real_dicom_dir: Path, tmp_path: Path) -> None:
    """The MIM structure set on the GE CT and the oblique SimpleITK CT are read (no false refusal), and the
    same MIM file cut short is refused, naming it."""
    for name in ("mim-rtstruct-ge-ct", "oblique-ct"):
        result = _run([sys.executable, "-m", "rtdeep", "info", str(real_dicom_dir / name)])
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        checked = _run([sys.executable, "-m", "rtdeep", "validate", "--no-tools", str(real_dicom_dir / name)])
        assert "[reader]" not in checked.stdout, checked.stdout
    study = tmp_path / "mim"
    shutil.copytree(real_dicom_dir / "mim-rtstruct-ge-ct", study)
    data = (study / "RS_MIM.dcm").read_bytes()
    (study / "RS_MIM.dcm").write_bytes(data[: len(data) * 2 // 3])
    result = _run([sys.executable, "-m", "rtdeep", "info", str(study)])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "RS_MIM.dcm" in lines[0] and "truncated" in lines[0]


def test_validate_with_dicom3tools_refuses_a_huge_declared_dose_without_allocating_it(base_study: Path,
                                                                                     tmp_path: Path) -> None:
    """dciodvfy needs a 16-bit surrogate of a 32-bit dose; one declaring 65535 x 65535 x 87 voxels over a few MB of
    data must not be built (it was: 1.4 TiB), and the reader's finding names the limit."""
    from malformed_corpus import edit

    study = _copy(base_study, tmp_path)
    edit(study / "RD.dcm", lambda ds: (setattr(ds, "Rows", 65535), setattr(ds, "Columns", 65535)))
    result = _run([sys.executable, "-m", "rtdeep", "validate", str(study / "RD.dcm")])
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stdout
    assert "RTDEEP_MAX_VOXELS" in result.stdout and "RD.dcm" in result.stdout
