"""The two modules' logic (RTDeepSegLib, RTPneumonitisPredictorLib) end to end on real MRML.

The module files themselves (RTDeepSeg.py, RTPneumonitisPredictor.py) need the Slicer application
(qt, ScriptedLoadableModule, parameterNodeWrapper); their logic lives in ``<Module>Lib/logic.py``,
which needs only MRML, so it runs here under slicer-core exactly as in Slicer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import slicer  # slicer-core (the 'slicer' extra): a missing install fails here, it is not skipped

ROOT = Path(__file__).resolve().parent.parent
for module_dir in ("RTDeepSeg", "RTPneumonitisPredictor"):
    if str(ROOT / module_dir) not in sys.path:
        sys.path.insert(0, str(ROOT / module_dir))

from RTDeepSegLib.logic import SegmentationLogic
from RTPneumonitisPredictorLib.logic import DOSE_VOLUME_ATTRIBUTE, PneumonitisLogic

from rtdeep.dicomrt.types import CtSeries, PatientInfo, Roi
from rtdeep.dicomrt.uids import make_uid
from rtdeep.slicer.segmentation_node import rois_from_segmentation_node, segmentation_node_from_rois
from rtdeep.slicer.subject_hierarchy import attach_dicom_series, study_item_of
from rtdeep.slicer.table_node import rows_from_table_node
from rtdeep.slicer.testing_scene import build_scene, load_scene_mrb, save_scene_mrb
from rtdeep.slicer.volume_node import node_from_volume, volume_from_node
from rtdeep.volume import Volume, affine_from_geometry

SHAPE = (14, 36, 44)  # [k, j, i]


@pytest.fixture()
def scene():
    testing = build_scene()
    yield testing.scene
    testing.clear()


def _ellipsoid(
    ct: Volume, centre_lps: tuple[float, float, float], radii_mm: tuple[float, float, float]
) -> np.ndarray:
    k, j, i = np.meshgrid(*[np.arange(n) for n in ct.shape], indexing="ij")
    lps = ct.index_to_lps(np.stack([i, j, k], axis=-1))
    return (((lps - np.array(centre_lps)) / np.array(radii_mm)) ** 2).sum(axis=-1) <= 1.0


def _thorax() -> tuple[Volume, list[Roi], Volume]:
    """A small synthetic thorax: CT (HU), five structures, and a dose rising left to right (Gy)."""
    ct = Volume(
        np.full(SHAPE, -1000.0, np.float32), affine_from_geometry((-86.0, -70.0, -32.5), (4.0, 4.0, 5.0))
    )
    body = _ellipsoid(ct, (0, 0, 0), (80, 62, 200))
    lung_l = _ellipsoid(ct, (40, 0, 0), (28, 40, 30))
    lung_r = _ellipsoid(ct, (-40, 0, 0), (28, 40, 30))
    heart = _ellipsoid(ct, (5, -25, 0), (20, 18, 18)) & ~lung_l & ~lung_r
    gtv = _ellipsoid(ct, (35, 5, 0), (10, 10, 10))
    array = ct.array.copy()
    array[body] = 40.0
    array[lung_l | lung_r] = -800.0
    array[gtv] = 30.0
    rois = [
        Roi("External", body, 1, (177, 122, 101), "EXTERNAL"),
        Roi("Lung_L", lung_l, 2, (0, 200, 255)),
        Roi("Lung_R", lung_r, 3, (255, 200, 0)),
        Roi("Heart", heart, 4, (255, 0, 60)),
        Roi("GTV", gtv, 5, (255, 0, 0), "GTV"),
    ]
    dose = np.broadcast_to(np.linspace(0.0, 40.0, SHAPE[2], dtype=np.float32), SHAPE).copy()
    return ct.with_array(array), rois, ct.with_array(dose)


def _series(ct: Volume) -> CtSeries:
    return CtSeries(
        volume=ct,
        sop_instance_uids=[make_uid("h8-modules", "ct", k) for k in range(ct.shape[0])],
        series_instance_uid=make_uid("h8-modules", "series"),
        frame_of_reference_uid=make_uid("h8-modules", "for"),
        patient=PatientInfo(
            patient_id="RTD-H8", patient_name="Phantom^H8", study_instance_uid=make_uid("h8-modules", "study")
        ),
    )


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


# -- RTDeepSeg --------------------------------------------------------------------------------------
def test_results_become_a_new_named_segmentation_under_the_study(scene):
    ct, rois, _ = _thorax()
    ct_node = node_from_volume(scene, ct, "CT")
    attach_dicom_series(ct_node, _series(ct))
    result = SegmentationLogic(scene).showResults(ct_node, rois, "thorax_unet3d")

    node = result.segmentationNode
    assert node.GetName() == "CT thorax_unet3d" and result.metricsTableNode is None
    reference = node.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
    assert reference is ct_node
    assert study_item_of(node) == study_item_of(ct_node) != 0
    back = rois_from_segmentation_node(node, ct_node)
    assert [(r.name, r.color_rgb) for r in back] == [(r.name, r.color_rgb) for r in rois]
    for original, copy in zip(rois, back):
        np.testing.assert_array_equal(copy.mask, original.mask)


def test_dice_against_reference_fills_a_table(scene):
    ct, rois, _ = _thorax()
    ct_node = node_from_volume(scene, ct, "CT")
    reference = segmentation_node_from_rois(scene, rois, ct_node, "Reference")
    shifted_heart = np.roll(rois[3].mask, 2, axis=2)  # 8 mm to the left
    test_rois = [
        Roi("LUNG LT", rois[1].mask, 1, (0, 0, 255)),
        Roi("Heart", shifted_heart, 2),
        Roi("Liver", rois[4].mask, 3),
    ]

    logic = SegmentationLogic(scene)
    result = logic.showResults(ct_node, test_rois, "thorax_atlas", referenceSegmentation=reference)
    rows = rows_from_table_node(result.metricsTableNode)
    by_name = {row["roi_name"]: row for row in rows}
    assert set(by_name) == {
        "Lung_L",
        "Heart",
    }  # TG-263 synonym "LUNG LT" pairs with Lung_L; no Liver in reference
    assert by_name["Lung_L"]["dice"] == pytest.approx(1.0)
    assert by_name["Heart"]["dice"] == pytest.approx(_dice(rois[3].mask, shifted_heart), abs=1e-6)
    assert result.dice("Heart") == pytest.approx(by_name["Heart"]["dice"])
    assert 0 < by_name["Heart"]["hd95_mm"] <= 8.0 + 1e-6

    logic.showReviewOverlay(result.segmentationNode, reference)
    display = reference.GetDisplayNode()
    assert tuple(display.GetSegmentOverrideColor(reference.GetSegmentation().GetNthSegmentID(0))) == (
        1.0,
        1.0,
        0.0,
    )
    assert not display.GetVisibility2DFill()


def test_output_segmentation_is_refilled_not_duplicated(scene):
    ct, rois, _ = _thorax()
    ct_node = node_from_volume(scene, ct, "CT")
    output = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Mine")
    logic = SegmentationLogic(scene)
    logic.showResults(ct_node, rois[:2], "thorax_atlas", outputSegmentation=output)
    logic.showResults(ct_node, rois[2:4], "thorax_atlas", outputSegmentation=output)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1
    assert [r.name for r in rois_from_segmentation_node(output, ct_node)] == ["Lung_R", "Heart"]


def test_bad_inputs_raise_value_errors_that_say_what_to_do(scene):
    ct, _rois, _ = _thorax()
    ct_node = node_from_volume(scene, ct, "CT")
    label = node_from_volume(scene, ct, "labels", node_class="vtkMRMLLabelMapVolumeNode")
    logic = SegmentationLogic(scene)
    with pytest.raises(ValueError, match="Select an input CT"):
        logic.process(None, "thorax", "thorax_atlas")
    with pytest.raises(ValueError, match="'labels' is not a scalar"):
        logic.process(label, "thorax", "thorax_atlas")
    with pytest.raises(ValueError, match="Unknown site 'pelvis'"):
        logic.process(ct_node, "pelvis", "thorax_atlas")
    with pytest.raises(ValueError, match="no model bundle"):
        logic.process(ct_node, "thorax", "thorax_no_such_net")
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    with pytest.raises(ValueError, match="at least one segment"):
        logic.exportRtStruct(empty, ct_node, "unused.dcm")


def test_rtstruct_export_uses_the_volume_dicom_identity(scene, tmp_path):
    from rtdeep.dicomrt.rtstruct_reader import read_rtstruct
    from rtdeep.dicomrt.validate import check_rtstruct

    ct, rois, _ = _thorax()
    series = _series(ct)
    ct_node = node_from_volume(scene, ct, "CT")
    segmentation = segmentation_node_from_rois(scene, rois[1:], ct_node, "AI")
    logic = SegmentationLogic(scene)
    with pytest.raises(ValueError, match="lacks DICOM identity"):
        logic.exportRtStruct(segmentation, ct_node, tmp_path / "none.dcm")
    attach_dicom_series(ct_node, series)
    path = logic.exportRtStruct(segmentation, ct_node, tmp_path / "RS.dcm")

    dataset = pydicom.dcmread(path)
    assert [item.ROIName for item in dataset.StructureSetROISequence] == ["Lung_L", "Lung_R", "Heart", "GTV"]
    assert dataset.PatientID == "RTD-H8" and dataset.StudyInstanceUID == series.patient.study_instance_uid
    assert {item.ROIGenerationAlgorithm for item in dataset.StructureSetROISequence} == {"AUTOMATIC"}
    assert next(list(item.ROIDisplayColor) for item in dataset.ROIContourSequence) == [0, 200, 255]
    assert [f for f in check_rtstruct(path, series) if f.severity == "error"] == []
    read_back = read_rtstruct(path, series)
    for roi in rois[1:]:
        assert _dice(read_back[roi.name].mask, roi.mask) > 0.97, roi.name
    with pytest.raises(ValueError, match="exists"):
        logic.exportRtStruct(segmentation, ct_node, path)


def test_rtstruct_export_from_a_ct_folder(scene, tmp_path):
    from rtdeep.dicomrt.ct_writer import write_ct_series

    ct, rois, _ = _thorax()
    written = write_ct_series(
        ct,
        tmp_path / "CT",
        PatientInfo(patient_id="RTD-FOLDER", study_instance_uid=make_uid("h8", "folder")),
        uid_seed="h8",
    )
    ct_node = node_from_volume(scene, written.volume, "CT from files")
    segmentation = segmentation_node_from_rois(scene, rois[:2], ct_node, "AI")
    path = SegmentationLogic(scene).exportRtStruct(
        segmentation, ct_node, tmp_path / "RS.dcm", ctFolder=tmp_path / "CT"
    )
    dataset = pydicom.dcmread(path)
    referenced = {
        item.ReferencedSOPInstanceUID
        for roi in dataset.ROIContourSequence
        for contour in roi.ContourSequence
        for item in contour.ContourImageSequence
    }
    assert referenced and referenced <= set(written.sop_instance_uids)
    assert dataset.PatientID == "RTD-FOLDER"

    other = node_from_volume(scene, Volume(ct.array[:-1], ct.affine), "other grid")
    with pytest.raises(ValueError, match="not on the grid"):
        SegmentationLogic(scene).exportRtStruct(
            segmentation, other, tmp_path / "RS2.dcm", ctFolder=tmp_path / "CT"
        )


def test_subprocess_command_and_result_loading(scene, tmp_path):
    from rtdeep.slicer import worker

    ct, rois, _ = _thorax()
    ct_node = node_from_volume(scene, ct, "CT")
    command, output = SegmentationLogic.subprocessCommand(
        ct_node, "thorax", "thorax_atlas", tmp_path, "cpu", python="PythonSlicer"
    )
    assert command[:3] == ["PythonSlicer", "-m", "rtdeep.slicer.worker"]
    assert worker.load_volume_npz(command[command.index("--input") + 1]).same_grid(ct)
    assert SegmentationLogic.parseProgressLine("PROGRESS 0.250 registering atlas 1") == (
        0.25,
        "registering atlas 1",
    )
    assert SegmentationLogic.parseProgressLine("warning: something") is None
    worker.save_rois_npz(rois, ct, output)
    loaded = SegmentationLogic.loadSubprocessResult(output, ct_node)
    assert [r.name for r in loaded] == [r.name for r in rois]
    wrong = node_from_volume(scene, Volume(ct.array, affine_from_geometry((0, 0, 0), (1, 1, 1))), "elsewhere")
    with pytest.raises(ValueError, match="not on the grid"):
        SegmentationLogic.loadSubprocessResult(output, wrong)


@pytest.fixture(scope="module")
def phantom_patient():
    """H3's small-grid thorax phantom (CT, TG-263 structures, dose on its own grid, outcome row)."""
    from rtdeep.phantom import generate_patient

    return generate_patient("thorax", 3, seed=11, grid="small")


def test_atlas_process_end_to_end_on_a_phantom(scene, phantom_patient):
    ct_node = node_from_volume(scene, phantom_patient.ct, "Phantom CT")
    reference = segmentation_node_from_rois(scene, phantom_patient.rois, ct_node, "Phantom contours")
    result = SegmentationLogic(scene, atlasCount=1).process(
        ct_node, "thorax", "thorax_atlas", referenceSegmentation=reference
    )
    names = {roi.name for roi in result.rois}
    assert {"Lung_L", "Lung_R"} <= names
    assert result.segmentationNode.GetSegmentation().GetNumberOfSegments() == len(result.rois)
    assert result.dice("Lung_L") > 0.6 and result.dice("Lung_R") > 0.6
    assert {row["roi_name"] for row in rows_from_table_node(result.metricsTableNode)} == names


def test_worker_subprocess_with_a_bundled_model(scene, phantom_patient, tmp_path):
    """The desktop path: the CT goes to ``python -m rtdeep.slicer.worker`` and the ROIs come back."""
    import subprocess

    from rtdeep.inference import available_models

    bundles = [name for name in available_models("thorax") if not name.endswith("_atlas")]
    assert bundles, "no thorax segmentation bundle under Resources/Models"
    ct_node = node_from_volume(scene, phantom_patient.ct, "Phantom CT")
    job = SegmentationLogic.startJob(ct_node, "thorax", bundles[0])
    done = subprocess.run(job.command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    progress = [SegmentationLogic.parseProgressLine(line) for line in done.stdout.splitlines()]
    assert progress[-1][0] == 1.0
    rois = job.finish(done.returncode, done.stdout)
    assert not job.workDir.exists()  # the temporary CT is gone after a successful run too
    result = SegmentationLogic(scene).showResults(ct_node, rois, bundles[0])
    assert result.segmentationNode.GetSegmentation().GetNumberOfSegments() == len(rois) > 0
    assert all(roi.mask.any() for roi in rois if roi.name in ("Lung_L", "Lung_R"))


# -- RTPneumonitisPredictor -------------------------------------------------------------------------
def _pneumonitis_scene(scene):
    ct, rois, dose = _thorax()
    ct_node = node_from_volume(scene, ct, "CT")
    dose_node = node_from_volume(scene, dose, "RTDOSE", attributes={DOSE_VOLUME_ATTRIBUTE: "1"})
    segmentation = segmentation_node_from_rois(scene, rois, ct_node, "RTSTRUCT")
    return ct, rois, dose, ct_node, dose_node, segmentation


def test_pneumonitis_dvh_figures_crop_and_table(scene):
    ct, rois, dose, ct_node, dose_node, segmentation = _pneumonitis_scene(scene)
    result = PneumonitisLogic(scene).process(ct_node, dose_node, segmentation, "", "lung-dose20", 20.0)

    normal_lung = (rois[1].mask | rois[2].mask) & ~rois[4].mask
    lung_dose = dose.array[normal_lung]
    assert result.meanLungDoseGy == pytest.approx(float(lung_dose.mean()), abs=0.02)
    assert result.v20Pct == pytest.approx(100.0 * float((lung_dose >= 20.0).mean()), abs=1.0)
    assert result.v5Pct == pytest.approx(100.0 * float((lung_dose >= 5.0).mean()), abs=1.0)
    assert 0.0 < result.ntcp["logistic_mld"] < 1.0

    crop = volume_from_node(result.cropVolumeNode)
    crop_mask = normal_lung & (dose.array >= 20.0)
    k, j, i = np.nonzero(crop_mask)
    assert crop.shape == (np.ptp(k) + 1, np.ptp(j) + 1, np.ptp(i) + 1)
    np.testing.assert_allclose(crop.origin_lps, ct.index_to_lps([i.min(), j.min(), k.min()]))
    box = (slice(k.min(), k.max() + 1), slice(j.min(), j.max() + 1), slice(i.min(), i.max() + 1))
    inside = crop_mask[box]
    np.testing.assert_array_equal(crop.array[inside], ct.array[box][inside])
    assert np.all(crop.array[~inside] == -1000.0)

    rows = {row["quantity"]: row for row in rows_from_table_node(result.tableNode)}
    assert rows["mean lung dose"]["value"] == f"{result.meanLungDoseGy:.2f}" and rows["V20"]["unit"] == "%"
    assert any("grade >= 2" in quantity for quantity in rows)
    if result.probability is None:
        assert any("classifier" in warning for warning in result.warnings)
    else:
        assert 0.0 <= result.probability <= 1.0
        assert volume_from_node(result.saliencyVolumeNode).same_grid(crop)


def test_pneumonitis_chosen_lung_segments_and_threshold(scene):
    _ct, rois, dose, ct_node, dose_node, segmentation = _pneumonitis_scene(scene)
    lung_l_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("Lung_L")
    result = PneumonitisLogic(scene).process(ct_node, dose_node, segmentation, lung_l_id, "lung", 10.0)
    normal_lung = rois[1].mask & ~rois[4].mask
    assert result.cropName == "lung"
    assert result.meanLungDoseGy == pytest.approx(float(dose.array[normal_lung].mean()), abs=0.02)
    assert result.vThresholdPct == pytest.approx(
        100.0 * float((dose.array[normal_lung] >= 10.0).mean()), abs=1.0
    )
    assert volume_from_node(result.cropVolumeNode).shape[2] < SHAPE[2] // 2 + 2  # left lung only


def test_pneumonitis_rejects_what_it_cannot_use(scene):
    _ct, rois, _dose, ct_node, dose_node, segmentation = _pneumonitis_scene(scene)
    logic = PneumonitisLogic(scene)
    with pytest.raises(ValueError, match="'CT' is not a dose volume"):
        logic.process(ct_node, ct_node, segmentation)
    with pytest.raises(ValueError, match="Unknown crop"):
        logic.process(ct_node, dose_node, segmentation, "", "liver")
    with pytest.raises(ValueError, match="no segment 'nope'"):
        logic.process(ct_node, dose_node, segmentation, "nope")
    no_lungs = segmentation_node_from_rois(scene, [rois[3]], ct_node, "heart only")
    with pytest.raises(ValueError, match="Lung"):
        logic.process(ct_node, dose_node, no_lungs)
    with pytest.raises(ValueError, match="empty|above"):
        logic.process(ct_node, dose_node, segmentation, "", "lung-dose20", 79.0)


def test_pneumonitis_process_on_a_phantom_with_dose_on_its_own_grid(scene, phantom_patient):
    ct_node = node_from_volume(scene, phantom_patient.ct, "Phantom CT")
    dose_node = node_from_volume(
        scene, phantom_patient.dose, "RTDOSE", attributes={DOSE_VOLUME_ATTRIBUTE: "1"}
    )
    segmentation = segmentation_node_from_rois(scene, phantom_patient.rois, ct_node, "RTSTRUCT")
    result = PneumonitisLogic(scene).process(ct_node, dose_node, segmentation, "", "lung-dose20", 20.0)
    outcome = phantom_patient.outcome  # the phantom's own figures, from its dose model on the CT grid
    assert result.meanLungDoseGy == pytest.approx(outcome["mld_gy"], abs=0.5)
    assert result.v20Pct == pytest.approx(outcome["v20_pct"], abs=2.0)
    assert result.v5Pct == pytest.approx(outcome["v5_pct"], abs=2.0)
    crop = volume_from_node(result.cropVolumeNode)
    assert crop.spacing_mm == pytest.approx(phantom_patient.ct.spacing_mm)
    if result.probability is not None:
        assert 0.0 <= result.probability <= 1.0
        assert volume_from_node(result.saliencyVolumeNode).same_grid(crop)


def test_results_survive_saving_the_scene_as_mrb(scene, tmp_path):
    _ct, rois, _dose, ct_node, dose_node, segmentation = _pneumonitis_scene(scene)
    seg_result = SegmentationLogic(scene).showResults(
        ct_node, rois[1:3], "thorax_atlas", referenceSegmentation=segmentation
    )
    pneumonitis = PneumonitisLogic(scene).process(ct_node, dose_node, segmentation, "", "lung", 20.0)
    path = save_scene_mrb(scene, tmp_path / "review.mrb")

    reloaded = build_scene()
    load_scene_mrb(reloaded.scene, path)
    again = reloaded.scene.GetFirstNodeByName(seg_result.segmentationNode.GetName())
    ct_again = reloaded.scene.GetFirstNodeByName("CT")
    assert [r.name for r in rois_from_segmentation_node(again, ct_again)] == ["Lung_L", "Lung_R"]
    dose_again = reloaded.scene.GetFirstNodeByName("RTDOSE")
    assert PneumonitisLogic.isDoseVolume(dose_again)
    tables = {reloaded.scene.GetNthNodeByClass(n, "vtkMRMLTableNode").GetName(): reloaded.scene.GetNthNodeByClass(n, "vtkMRMLTableNode")
              for n in range(reloaded.scene.GetNumberOfNodesByClass("vtkMRMLTableNode"))}  # fmt: skip
    assert rows_from_table_node(tables[pneumonitis.tableNode.GetName()]) == rows_from_table_node(
        pneumonitis.tableNode
    )
    assert rows_from_table_node(tables[seg_result.metricsTableNode.GetName()])[0]["dice"] == pytest.approx(
        1.0
    )
