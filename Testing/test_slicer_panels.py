"""What a clinic's workstation needs from the panels, on real processes and real MRML: Cancel kills
the worker's process tree, no temporary CT is left behind, one dependency installer, the model
database in the model list, segment terminology, the DVH plot chart and the Grad-CAM overlay."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "RTDeepSeg") not in sys.path:
    sys.path.insert(0, str(ROOT / "RTDeepSeg"))

from RTDeepSegLib.logic import SegmentationLogic

from rtdeep.dicomrt.types import Roi
from rtdeep.dvh import dvh_from_samples
from rtdeep.sites import ORGANS
from rtdeep.slicer import dependencies
from rtdeep.slicer.display import dvh_plot_chart_node, show_as_overlay
from rtdeep.slicer.processes import child_pids, kill_process_tree, process_alive
from rtdeep.slicer.segmentation_node import segmentation_node_from_rois
from rtdeep.slicer.testing_scene import build_scene
from rtdeep.slicer.volume_node import node_from_volume
from rtdeep.volume import Volume, affine_from_geometry

# a launcher that starts a child and waits, like PythonSlicer starting the real Python
LAUNCHER = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.fixture()
def scene():
    testing = build_scene()
    yield testing.scene
    testing.clear()


def _ct_node(scene, shape=(20, 48, 48)):
    ct = Volume(np.full(shape, -1000.0, np.float32), affine_from_geometry((-96.0, -96.0, -50.0), (4.0, 4.0, 5.0)))
    array = ct.array.copy()
    array[:, 8:40, 8:40] = 20.0
    return node_from_volume(scene, ct.with_array(array), "CT")


def _wait_for(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_killing_the_launcher_alone_leaves_the_worker_and_the_tree_kill_does_not() -> None:
    for kill_tree in (False, True):
        launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdout=subprocess.PIPE, text=True)
        worker = int(launcher.stdout.readline())
        assert child_pids(launcher.pid) == [worker]
        if kill_tree:
            killed = kill_process_tree(launcher.pid)
            assert set(killed) == {launcher.pid, worker}
        else:
            launcher.kill()
        launcher.wait(timeout=10)
        if kill_tree:
            assert not process_alive(worker)
        else:
            assert process_alive(worker)  # what Cancel used to leave behind
            kill_process_tree(worker)
            assert not process_alive(worker)


def test_cancel_kills_a_running_worker_and_removes_the_temporary_ct(scene) -> None:
    job = SegmentationLogic.startJob(_ct_node(scene), "thorax", "thorax_atlas")
    ct_file = job.workDir / "ct.npz"
    assert ct_file.is_file()
    worker = subprocess.Popen(job.command, stdout=subprocess.PIPE, text=True)
    # wait until the worker is busy (its first progress line), then Cancel
    assert SegmentationLogic.parseProgressLine(worker.stdout.readline()) is not None
    job.cancel(worker.pid)
    assert worker.wait(timeout=10) != 0
    assert not job.workDir.exists() and not ct_file.exists()


def test_a_failed_run_raises_its_error_and_removes_the_temporary_ct(scene) -> None:
    job = SegmentationLogic.startJob(_ct_node(scene), "thorax", "thorax_no_such_model")
    done = subprocess.run(job.command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    with pytest.raises(ValueError, match="exit code 2.*no_such_model"):
        job.finish(done.returncode, done.stdout + done.stderr)
    assert not job.workDir.exists()


def test_preparing_a_run_that_fails_leaves_no_folder(scene, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    with pytest.raises(ValueError, match="Unknown site"):
        SegmentationLogic.startJob(_ct_node(scene), "pelvis", "thorax_atlas")
    assert list(tmp_path.iterdir()) == []


def test_model_list_reads_the_model_database() -> None:
    thorax = {model["name"]: model for model in SegmentationLogic.modelDescriptions("thorax")}
    assert {"thorax_unet3d", "thorax_unet25d", "thorax_gan3d", "thorax_unet25d_fine", "thorax_atlas"} <= set(thorax)
    assert "thorax_unet3d_fine" not in thorax  # withdrawn: heart and esophagus below their floors (not_shipped)
    assert list(thorax)[-1] == "thorax_atlas"
    assert thorax["thorax_unet3d"]["title"] == "Thorax: 3D U-Net"
    assert "Lung_L 0." in thorax["thorax_unet3d"]["tooltip"] and "CPU about" in thorax["thorax_unet3d"]["tooltip"]
    headneck = {model["name"]: model for model in SegmentationLogic.modelDescriptions("headneck")}
    assert "headneck_unet25d_fine" in headneck and "headneck_unet3d" not in headneck
    # every shipped network meets its floors (the rule that ships it): no warning beside any of them
    assert {name: model["warning"] for name, model in {**thorax, **headneck}.items() if model["warning"]} == {}


def test_model_database_warns_of_a_weak_model(tmp_path) -> None:
    import json

    from rtdeep.model_database import read_model_database

    database = {"models": [{"name": "headneck_test", "title": "Head and neck: test", "site": "headneck",
                            "segments": ["Parotid_L", "Mandible"],
                            "heldout_dice_median": {"Parotid_L": 0.0, "Mandible": 0.95}}]}
    (tmp_path / "models.json").write_text(json.dumps(database))
    weak = read_model_database(tmp_path)["headneck_test"].warning
    assert weak.startswith("Weak model") and "Parotid_L 0.00" in weak and "Mandible" not in weak
    # a model someone adds that misses a floor without being weak (a user's bundle, an old database)
    database["models"][0]["heldout_dice_median"] = {"Parotid_L": 0.84, "Mandible": 0.95}
    (tmp_path / "models.json").write_text(json.dumps(database))
    below = read_model_database(tmp_path)["headneck_test"].warning
    assert below.startswith("Below the accuracy floor") and "Parotid_L 0.840 (floor 0.85)" in below
    assert "Mandible" not in below


def test_segments_carry_snomed_terminology_from_the_organ_table(scene) -> None:
    ct_node = _ct_node(scene)
    mask = np.zeros((20, 48, 48), bool)
    mask[5:10, 10:20, 10:20] = True
    rois = [Roi("Lung_L", mask, 1, ORGANS["Lung_L"].color_rgb), Roi("Bladder", mask, 2)]
    segmentation = segmentation_node_from_rois(scene, rois, ct_node, "AI").GetSegmentation()
    lung = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Lung_L"))
    entry = lung.GetTerminology()
    assert "SCT^123037004^Anatomical Structure~SCT^39607008^Lung~SCT^7771000^Left" in entry
    other = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Bladder"))
    assert "39607008" not in other.GetTerminology()  # a name the table lacks keeps Slicer's default


def test_dvh_is_a_plot_chart_node(scene) -> None:
    dose = np.concatenate([np.full(300, 5.0), np.full(700, 25.0)]).astype(np.float32)
    dvh = dvh_from_samples("Lung_L", dose, 0.01)
    chart = dvh_plot_chart_node(scene, {"Lung_L": dvh}, "DVH")
    assert chart.IsA("vtkMRMLPlotChartNode") and chart.GetNumberOfPlotSeriesNodes() == 1
    assert (chart.GetXAxisTitle(), chart.GetYAxisTitle()) == ("Dose (Gy)", "Volume (%)")
    series = chart.GetNthPlotSeriesNode(0)
    assert tuple(round(255 * c) for c in series.GetColor()) == ORGANS["Lung_L"].color_rgb
    table = series.GetTableNode().GetTable()
    x_column, y_column = table.GetColumnByName("Lung_L x"), table.GetColumnByName("Lung_L y")
    doses = np.array([x_column.GetValue(i) for i in range(x_column.GetNumberOfTuples())])
    volumes = np.array([y_column.GetValue(i) for i in range(y_column.GetNumberOfTuples())])
    assert volumes[0] == pytest.approx(100.0) and np.all(np.diff(volumes) <= 1e-9)
    assert np.interp(20.0, doses, volumes) == pytest.approx(70.0, abs=0.5)  # V20 of the samples


def test_saliency_is_an_overlay_over_the_ct(scene) -> None:
    ct_node = _ct_node(scene)
    saliency = Volume(np.linspace(0, 1, 20 * 48 * 48, dtype=np.float32).reshape(20, 48, 48),
                      affine_from_geometry((-96.0, -96.0, -50.0), (4.0, 4.0, 5.0)))
    saliency_node = node_from_volume(scene, saliency, "Grad-CAM")
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    show_as_overlay(saliency_node, ct_node, opacity=0.4)
    assert composite.GetBackgroundVolumeID() == ct_node.GetID()
    assert composite.GetForegroundVolumeID() == saliency_node.GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.4)
    display = saliency_node.GetDisplayNode()
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.1, abs=1e-3)
    if scene.GetNodeByID("vtkMRMLColorTableNodeRainbow") is not None:
        assert display.GetColorNodeID() == "vtkMRMLColorTableNodeRainbow"


def test_review_outlines_reference_yellow_ai_red(scene) -> None:
    ct_node = _ct_node(scene)
    mask = np.zeros((20, 48, 48), bool)
    mask[5:10, 10:20, 10:20] = True
    reference = segmentation_node_from_rois(scene, [Roi("Heart", mask, 1, (10, 20, 30))], ct_node, "reference")
    ai = segmentation_node_from_rois(scene, [Roi("Heart", mask, 1, (10, 20, 30))], ct_node, "AI")
    SegmentationLogic.showReviewOverlay(ai, reference)
    for node, rgb in ((reference, (1.0, 1.0, 0.0)), (ai, (1.0, 0.0, 0.0))):
        display, segment_id = node.GetDisplayNode(), node.GetSegmentation().GetNthSegmentID(0)
        assert tuple(display.GetSegmentOverrideColor(segment_id)) == rgb
        assert display.GetVisibility2DOutline() and not display.GetVisibility2DFill()
    SegmentationLogic.showReviewOverlay(ai, reference, enabled=False)
    assert reference.GetDisplayNode().GetVisibility2DFill()


def test_one_installer_confirms_once_installs_and_checks(monkeypatch) -> None:
    monkeypatch.setitem(dependencies.REQUIREMENTS, "rtdeep_no_such_package", "rtdeep-no-such-package==1")
    asked, installed = [], []
    declined = dependencies.ensure_requirements(
        "RTDeepSeg", confirm=lambda text: asked.append(text) or False, install_torch=lambda: None,
        pip_install=installed.append,
    )
    assert declined is False and installed == [] and "rtdeep-no-such-package==1" in asked[0]
    with pytest.raises(RuntimeError, match="still missing.*rtdeep-no-such-package"):
        dependencies.ensure_requirements(
            "RTPneumonitisPredictor", confirm=lambda text: True, install_torch=lambda: None,
            pip_install=installed.append,
        )
    assert installed == [["rtdeep-no-such-package==1"]]
    monkeypatch.delitem(dependencies.REQUIREMENTS, "rtdeep_no_such_package")
    assert dependencies.ensure_requirements("x", confirm=lambda text: 1 / 0, install_torch=lambda: None,
                                            pip_install=installed.append)  # nothing missing: no question
