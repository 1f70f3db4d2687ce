"""``rtdeep segment --manifest``: a cohort in one command, killed and resumed, with a failing study."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rtdeep.cohort import build_cohort
from rtdeep.cohort.example_export import write_example_export
from rtdeep.dicomrt.rtstruct_reader import read_rtstruct
from rtdeep.dicomrt.seg_reader import read_seg
from rtdeep.dicomrt.study import load_study
from rtdeep.metrics import dice_coefficient


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _segment(manifest, out, *extra, python_options=()):
    command = [sys.executable, *python_options, "-m", "rtdeep", "segment", "--manifest", str(manifest), "--model", "thorax_unet3d",
               "--out", str(out), "--format", "both", "--threads", "1", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Two usable studies of the example export, then one whose folder holds no CT (it must fail)."""
    root = tmp_path_factory.mktemp("batch")
    export = write_example_export(root / "export")
    cohort = build_cohort(export, root / "cohort", "thorax")
    rows = _rows(cohort.manifest)[:2]
    (root / "cohort" / "studies" / "BROKEN_1").mkdir()
    rows.append(dict(rows[0], study_id="BROKEN_1", patient_id="BROKEN", study_dir="studies/BROKEN_1"))
    path = root / "cohort" / "two_and_broken.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def killed_and_resumed(manifest, tmp_path_factory):
    """Run, kill (SIGKILL) once the first study is done, check what is left, run again to the end."""
    out = tmp_path_factory.mktemp("ai") / "ai"
    first = _segment(manifest, out)
    deadline = time.time() + 300
    while not (out / "EXP-01_1" / "result.json").exists():
        assert first.poll() is None, first.communicate()[1][-2000:]
        assert time.time() < deadline
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)  # mid-way through the second study
    first.communicate()
    done_at = (out / "EXP-01_1" / "result.json").stat().st_mtime
    # what a killed run leaves: complete study folders only (a staging folder is hidden and is redone)
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert "EXP-02_1" not in visible and "summary.csv" not in visible
    assert all((out / name / "result.json").is_file() for name in visible if name not in ("failed",))

    second = _segment(manifest, out, python_options=("-X", "importtime"))  # each import's time, on stderr
    stdout, stderr = second.communicate(timeout=300)
    return out, second.returncode, stdout, stderr, done_at


def test_segmenting_imports_no_monai(killed_and_resumed):
    """The bundles' TorchScript networks and rtdeep's sliding window spare MONAI's package import
    (it loads every submodule: about 3 s of a CT's segmentation on 2 cores)."""
    stderr = killed_and_resumed[3]
    imported = [line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")]
    assert "torch" in imported and "rtdeep.inference.predict" in imported  # the log is there
    assert not [name for name in imported if name.split(".")[0] == "monai"]


def test_killed_run_resumes_and_failing_study_does_not_stop_the_rest(manifest, killed_and_resumed):
    out, returncode, stdout, stderr, done_at = killed_and_resumed
    assert returncode == 1, stderr[-2000:]  # one study failed; the others were segmented
    assert "resuming: 1 of 3 studies already done" in stderr
    assert (out / "EXP-01_1" / "result.json").stat().st_mtime == done_at  # skipped, not redone
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]

    summary = {row["study"]: row for row in _rows(out / "summary.csv")}
    assert list(summary) == ["EXP-01_1", "EXP-02_1", "BROKEN_1"]
    assert summary["BROKEN_1"]["error"] and "no CT" in summary["BROKEN_1"]["error"]
    assert not (out / "BROKEN_1").exists() and (out / "failed" / "BROKEN_1.json").is_file()
    for study in ("EXP-01_1", "EXP-02_1"):
        assert summary[study]["error"] == "" and float(summary[study]["seconds"]) > 0
        assert summary[study]["organs"] == "Lung_L;Lung_R;Heart;Esophagus;SpinalCord"
        assert sorted(p.name for p in (out / study).iterdir()) == [
            "RS.thorax_unet3d.dcm", "SEG.thorax_unet3d.dcm", "metrics.csv", "result.json"]
    # EXP-02's reference has no heart: it is not scored, and says so
    assert "Heart: not in the reference" in summary["EXP-02_1"]["warnings"]
    metrics = _rows(out / "metrics.csv")
    scored = {(row["study"], row["organ"]) for row in metrics}
    assert ("EXP-01_1", "Heart") in scored and ("EXP-02_1", "Heart") not in scored
    means = {row["organ"]: row for row in metrics if row["study"].startswith("mean of")}
    assert means["Lung_L"]["study"] == "mean of 2" and means["Heart"]["study"] == "mean of 1"
    # the table holds the Dice of the written contours against the clinic's (renamed) reference
    study = load_study(manifest.parent / "studies" / "EXP-01_1")
    reference = read_rtstruct(study.structure_set.path, study.ct)["Lt Lung"].mask
    written = read_seg(out / "EXP-01_1" / "SEG.thorax_unet3d.dcm", study.ct)
    expected = dice_coefficient(reference, next(roi.mask for roi in written if roi.name == "Lung_L"))
    row = next(row for row in metrics if (row["study"], row["organ"]) == ("EXP-01_1", "Lung_L"))
    assert abs(float(row["dice"]) - expected) < 1e-4
    assert "organ" in stdout and "2 of 3 studies segmented, 1 failed" in stdout


def test_batch_seg_matches_batch_rtstruct(manifest, killed_and_resumed):
    out = killed_and_resumed[0]
    study = load_study(manifest.parent / "studies" / "EXP-02_1")
    segments = {roi.name: roi.mask for roi in read_seg(out / "EXP-02_1" / "SEG.thorax_unet3d.dcm", study.ct)}
    contours = read_rtstruct(out / "EXP-02_1" / "RS.thorax_unet3d.dcm", study.ct)
    assert sorted(segments) == sorted(contours.names())
    result = json.loads((out / "EXP-02_1" / "result.json").read_text())
    assert result["organs"] == list(segments)
    for name, mask in segments.items():
        # the RTSTRUCT's polygons through voxel centres give back the same voxels, up to rasterisation
        assert dice_coefficient(mask, contours[name].mask) > 0.97
