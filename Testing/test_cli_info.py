"""``rtdeep info DIR``: inventory, ROI volumes, dose and plan summaries; bad input as one line."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from conftest import hash_tree
from test_dicomrt_readers import (
    axial_affine,
    dose_on_grid,
    ij_contour,
    square_ij,
    stored_values,
    write_ct,
    write_rtdose,
    write_rtplan,
    write_rtstruct,
)

from rtdeep.cli import main


@pytest.fixture
def study_folder(tmp_path):
    frame, series = "1.2.826.0.1.3680043.8.498.901", "1.2.826.0.1.3680043.8.498.902"
    affine = axial_affine(origin=(-10.0, -12.0, -4.0), spacing=(1.0, 1.0, 2.0))
    write_ct(tmp_path / "CT", stored_values((5, 12, 10)), affine, frame_uid=frame, series_uid=series,
             description="thorax")
    box = [ij_contour(affine, square_ij(1.5, 1.5, 5.5, 4.5), k) for k in (1, 2, 3)]  # 4 x 3 voxels x 3 slices
    rs = write_rtstruct(tmp_path / "RS.dcm", frame, [("PTV", 1, box), ("Empty", 2, [])],
                        referenced_series_uid=series)
    rp = write_rtplan(tmp_path / "RP.dcm", frame, structure_set_uid=pydicom.dcmread(rs).SOPInstanceUID,
                      prescription_gy=60.0)
    dose_affine = axial_affine(origin=(-14.0, -14.0, -6.0), spacing=(3.0, 3.0, 3.0))
    write_rtdose(tmp_path / "RD.dcm", dose_on_grid(dose_affine, (5, 8, 8)), dose_affine, frame,
                 plan_uid=pydicom.dcmread(rp).SOPInstanceUID)
    (tmp_path / "notes.txt").write_text("not DICOM")
    return tmp_path, dose_on_grid(dose_affine, (5, 8, 8))


def test_info_prints_study_contents(study_folder, capsys):
    folder, dose = study_folder
    before = hash_tree(folder)
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "Patient Synth^Reader [ID SYNTH01]" in out
    assert re.search(r"Series CT\s+5 file\(s\)\s+'thorax'", out)
    assert re.search(r"Series RTSTRUCT\s+1 file", out)
    assert re.search(r"PTV\s+ORGAN\s+0\.07 cc", out)  # 36 voxels x 2 mm^3
    assert re.search(r"Empty\s+ORGAN\s+0\.00 cc", out) and "empty ROI" in out
    assert f"max {dose.max():.2f} Gy" in out and "8x8x5 voxels" in out and ", orientation HFS" in out
    assert "60.00 Gy in 30 fraction(s), 2 beam(s)" in out
    assert "gantry 180, 90, 0 deg" in out
    assert "notes.txt" in out
    assert hash_tree(folder) == before


def test_info_real_dicom(real_dicom_dir, capsys):
    assert main(["info", str(real_dicom_dir / "mim-rtstruct-ge-ct")]) == 0
    out = capsys.readouterr().out
    assert "Patient PHANTOM_EXAMPLE" in out and "512x512x2 voxels" in out
    assert len(re.findall(r"ROI-\d\s+-\s+\d+\.\d\d cc", out)) == 4


def test_info_bad_inputs_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("hello")
    assert main(["info", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no DICOM files found" in err and "empty" in err

    paths = write_ct(tmp_path / "gap", stored_values((5, 4, 4)), axial_affine())
    paths[2].unlink()
    assert main(["info", str(tmp_path / "gap")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing slices" in err and "ImagePositionPatient" in err

    assert main(["info", str(tmp_path / "absent")]) == 2
    assert "absent" in capsys.readouterr().err


def test_info_command_line_entry_point(study_folder):
    folder, _ = study_folder
    result = subprocess.run([sys.executable, "-m", "rtdeep", "info", str(folder)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "PTV" in result.stdout and np.isfinite(float(re.search(r"max ([\d.]+) Gy", result.stdout).group(1)))


def test_command_line_that_runs_no_network_never_imports_torch(study_folder):
    """Every command's parser is built at start; torch (about 2 s) loads only when a network runs."""
    folder, _ = study_folder
    code = ("import sys; from rtdeep.cli import main; code = main(['info', sys.argv[1]]); "
            "print('torch loaded' if 'torch' in sys.modules else 'no torch'); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("no torch")
