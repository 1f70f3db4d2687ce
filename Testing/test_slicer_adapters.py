"""rtdeep.slicer adapters against a real MRML scene (slicer-core): volumes, segmentations, tables,
subject hierarchy, .mrb save and reload, and the segmentation worker's exchange files."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import slicer  # slicer-core (the 'slicer' extra): a missing install fails here, it is not skipped

from rtdeep.dicomrt.types import CtSeries, PatientInfo, Roi
from rtdeep.dicomrt.uids import make_uid
from rtdeep.errors import GeometryError, SeriesError, StructureError
from rtdeep.fileio import OutputExistsError
from rtdeep.slicer import worker
from rtdeep.slicer.segmentation_node import rois_from_segmentation_node, segmentation_node_from_rois
from rtdeep.slicer.subject_hierarchy import (
    attach_dicom_series,
    ct_series_from_volume_node,
    place_beside,
    study_item_of,
)
from rtdeep.slicer.table_node import rows_from_table_node, table_node_from_rows
from rtdeep.slicer.testing_scene import build_scene, load_scene_mrb, save_scene_mrb
from rtdeep.slicer.volume_node import (
    array_from_vtk_matrix,
    grid_from_node,
    node_from_volume,
    volume_from_node,
)
from rtdeep.volume import Volume, affine_from_geometry


def _rotation(degrees_xyz: tuple[float, float, float]) -> np.ndarray:
    result = np.eye(3)
    for axis, degrees in enumerate(degrees_xyz):
        c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
        a, b = [(1, 2), (0, 2), (0, 1)][axis]
        rotation = np.eye(3)
        rotation[a, a], rotation[a, b], rotation[b, a], rotation[b, b] = c, -s, s, c
        result = rotation @ result
    return result


@pytest.fixture()
def scene():
    testing = build_scene()
    yield testing.scene
    testing.clear()


def _boxes(shape: tuple[int, int, int]) -> list[Roi]:
    lung = np.zeros(shape, bool)
    lung[1:6, 2:8, 1:6] = True
    lungs = lung.copy()
    lungs[1:6, 2:8, 7:10] = True  # contains Lung_L: overlapping segments
    gtv = np.zeros(shape, bool)
    gtv[2:4, 3:5, 2:4] = True
    return [
        Roi("Lung_L", lung, 3, (0, 200, 255), "ORGAN", "MANUAL"),
        Roi("Lungs", lungs, 7, (100, 149, 237), "ORGAN", "SEMIAUTOMATIC"),
        Roi("GTV", gtv, 9, (255, 0, 0), "GTV", "AUTOMATIC"),
    ]


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_axial_volume_round_trip_keeps_values_and_flips_only_x_y(scene, dtype):
    rng = np.random.default_rng(1)
    array = rng.integers(-1000, 2000, size=(5, 7, 9)).astype(dtype)
    volume = Volume(array, affine_from_geometry((-120.5, 80.25, -300.0), (0.9, 0.9, 2.5)))
    node = node_from_volume(scene, volume, "CT")

    ijk_to_ras = array_from_vtk_matrix(_ijk_to_ras(node))
    np.testing.assert_allclose(ijk_to_ras[:3, 3], [120.5, -80.25, -300.0])  # RAS = (-L, -P, S)
    back = volume_from_node(node)
    assert back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, array)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-9)


def _ijk_to_ras(node):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


def test_oblique_volume_round_trip_keeps_affine(scene):
    direction = _rotation((12.0, -7.0, 25.0))
    volume = Volume(
        np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8),
        affine_from_geometry((10.0, -20.0, 30.0), (0.7, 1.3, 3.0), direction),
    )
    back = volume_from_node(node_from_volume(scene, volume, "oblique"))
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-9)
    np.testing.assert_array_equal(back.array, volume.array)
    # a voxel maps to the same LPS point through both
    np.testing.assert_allclose(back.index_to_lps([7, 5, 3]), volume.index_to_lps([7, 5, 3]), atol=1e-9)


def test_volume_under_linear_transform_moves_in_lps(scene):
    import vtk

    volume = Volume(np.zeros((2, 3, 4), np.float32), affine_from_geometry((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
    node = node_from_volume(scene, volume, "moved")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 10.0)  # +10 mm towards Right = -10 mm in LPS x
    transform.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(volume_from_node(node).origin_lps, [-10.0, 0.0, 0.0])
    np.testing.assert_allclose(volume_from_node(node, world=False).origin_lps, [0.0, 0.0, 0.0])


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_grid_from_node_is_the_volume_geometry_without_a_voxel_copy(scene, dtype):
    volume = Volume(
        np.arange(4 * 6 * 8).astype(dtype).reshape(4, 6, 8),
        affine_from_geometry((10.0, -20.0, 30.0), (0.7, 1.3, 3.0), _rotation((12.0, -7.0, 25.0))),
    )
    node = node_from_volume(scene, volume, "oblique")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    import vtk

    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(1, 3, 5.0)
    transform.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(transform.GetID())
    for world in (True, False):
        grid, full = grid_from_node(node, world=world), volume_from_node(node, world=world)
        assert grid.shape == full.shape and grid.array.dtype == full.array.dtype == dtype
        np.testing.assert_array_equal(grid.affine, full.affine)
        assert grid.same_grid(full) and full.same_grid(grid)
    grid = grid_from_node(node)
    assert grid.array.strides == (0, 0, 0) and not grid.array.flags.writeable  # one scalar, read-only
    with pytest.raises(ValueError, match="read-only"):
        grid.array[0, 0, 0] = 1


def test_volume_node_without_voxels_raises(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(GeometryError, match="empty"):
        volume_from_node(node)
    with pytest.raises(GeometryError, match="empty"):
        grid_from_node(node)


def test_rois_round_trip_keeps_masks_names_colours_and_tags(scene):
    volume = Volume(
        np.zeros((7, 10, 11), np.int16),
        affine_from_geometry((5.0, 6.0, 7.0), (1.5, 1.5, 2.0), _rotation((0, 0, 30))),
    )
    node = node_from_volume(scene, volume, "CT")
    rois = _boxes(volume.shape)
    segmentation = segmentation_node_from_rois(scene, rois, node, "AI")

    assert segmentation.GetSegmentation().GetNumberOfSegments() == 3
    reference = segmentation.GetNodeReference(
        slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    )
    assert reference is node
    for source in (node, volume):  # a volume node or an rtdeep Volume as the reference grid
        back = rois_from_segmentation_node(segmentation, source)
        assert [roi.name for roi in back] == ["Lung_L", "Lungs", "GTV"]
        for original, copy in zip(rois, back):
            np.testing.assert_array_equal(copy.mask, original.mask, err_msg=original.name)
            assert copy.color_rgb == original.color_rgb
            assert (copy.number, copy.interpreted_type, copy.generation_algorithm) == (
                original.number,
                original.interpreted_type,
                original.generation_algorithm,
            )


def test_disjoint_segments_share_a_layer_and_stay_apart(scene):
    volume = Volume(np.zeros((4, 5, 6), np.int16), np.eye(4))
    node = node_from_volume(scene, volume, "CT")
    left, right = np.zeros(volume.shape, bool), np.zeros(volume.shape, bool)
    left[1:3, 1:4, 0:2] = True
    right[1:3, 1:4, 3:6] = True
    segmentation = segmentation_node_from_rois(
        scene, [Roi("Lung_L", left), Roi("Lung_R", right)], node, "lungs"
    )
    assert segmentation.GetSegmentation().GetNumberOfLayers() == 1  # one shared labelmap, two label values
    back = rois_from_segmentation_node(segmentation, node)
    np.testing.assert_array_equal(back[0].mask, left)
    np.testing.assert_array_equal(back[1].mask, right)


def test_rois_read_onto_a_sub_box_and_a_flipped_grid(scene):
    volume = Volume(np.zeros((7, 10, 11), np.int16), affine_from_geometry((0.0, 0.0, 0.0), (2.0, 2.0, 3.0)))
    rois = _boxes(volume.shape)
    segmentation = segmentation_node_from_rois(scene, rois, node_from_volume(scene, volume, "CT"), "AI")

    # same voxel centres, sub-box starting at voxel (i, j, k) = (1, 2, 1)
    sub = Volume(np.zeros((5, 7, 9), np.int16), affine_from_geometry((2.0, 4.0, 3.0), (2.0, 2.0, 3.0)))
    for original, copy in zip(rois, rois_from_segmentation_node(segmentation, sub)):
        np.testing.assert_array_equal(copy.mask, original.mask[1:6, 2:9, 1:10], err_msg=original.name)
    # same voxel centres, i axis reversed (origin at the last column)
    flipped = Volume(
        np.zeros(volume.shape, np.int16),
        affine_from_geometry((20.0, 0.0, 0.0), (2.0, 2.0, 3.0), np.diag([-1.0, 1, 1])),
    )
    for original, copy in zip(rois, rois_from_segmentation_node(segmentation, flipped)):
        np.testing.assert_array_equal(copy.mask, original.mask[:, :, ::-1], err_msg=original.name)


def test_mask_on_wrong_grid_names_the_roi(scene):
    node = node_from_volume(scene, Volume(np.zeros((4, 5, 6), np.int16), np.eye(4)), "CT")
    with pytest.raises(StructureError, match="Heart"):
        segmentation_node_from_rois(scene, [Roi("Heart", np.zeros((4, 5, 5), bool))], node, "bad")


def test_closed_surface_segmentation_is_rasterised_on_the_reference_grid(scene):
    import vtk

    volume = Volume(
        np.zeros((20, 20, 20), np.int16), affine_from_geometry((-19.0, -19.0, -19.0), (2.0, 2.0, 2.0))
    )
    node = node_from_volume(scene, volume, "CT")
    sphere = vtk.vtkSphereSource()
    sphere.SetRadius(12.0)
    sphere.SetThetaResolution(64)
    sphere.SetPhiResolution(64)
    sphere.Update()
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "surfaces")
    segmentation.AddSegmentFromClosedSurfaceRepresentation(sphere.GetOutput(), "Ball", [1.0, 0.5, 0.0])
    (ball,) = rois_from_segmentation_node(segmentation, node)
    centres = volume.index_to_lps(np.stack(np.meshgrid(*[np.arange(20)] * 3, indexing="ij"), -1)[..., ::-1])
    # RAS sphere at the origin is the LPS sphere at the origin
    expected = np.linalg.norm(centres, axis=-1) < 12.0
    assert ball.color_rgb == (255, 128, 0)
    dice = 2 * (ball.mask & expected).sum() / (ball.mask.sum() + expected.sum())
    assert dice > 0.97


def test_table_round_trip_numbers_and_text(scene):
    rows = [
        {"roi_name": "Lung_L", "dice": 0.91, "note": ""},
        {"roi_name": "GTV", "dice": None, "hd95_mm": 3.5},
    ]
    table = table_node_from_rows(scene, rows, "metrics")
    back = rows_from_table_node(table)
    assert [row["roi_name"] for row in back] == ["Lung_L", "GTV"]
    assert back[0]["dice"] == pytest.approx(0.91)
    assert math.isnan(back[1]["dice"]) and math.isnan(back[0]["hd95_mm"])
    assert back[1]["hd95_mm"] == pytest.approx(3.5)
    # refilling an existing node replaces its columns
    table_node_from_rows(scene, [{"x": 1}], "ignored", node=table)
    assert rows_from_table_node(table) == [{"x": 1.0}]


def _ct_series(volume: Volume) -> CtSeries:
    return CtSeries(
        volume=volume,
        sop_instance_uids=[make_uid("h8-test", "ct", k) for k in range(volume.shape[0])],
        series_instance_uid=make_uid("h8-test", "series"),
        frame_of_reference_uid=make_uid("h8-test", "for"),
        patient=PatientInfo(
            patient_id="RTD-TEST",
            patient_name="Test^Phantom",
            study_instance_uid=make_uid("h8-test", "study"),
            study_date="20260101",
        ),
    )


def test_dicom_identity_round_trip_and_placement_under_study(scene):
    volume = Volume(np.zeros((3, 4, 5), np.int16), np.eye(4))
    node = node_from_volume(scene, volume, "CT")
    with pytest.raises(SeriesError, match="'CT'.*SeriesInstanceUID"):
        ct_series_from_volume_node(node)
    series = _ct_series(volume)
    attach_dicom_series(node, series)
    back = ct_series_from_volume_node(node)
    assert back.sop_instance_uids == series.sop_instance_uids
    assert (back.series_instance_uid, back.frame_of_reference_uid) == (
        series.series_instance_uid,
        series.frame_of_reference_uid,
    )
    assert (back.patient.patient_id, back.patient.study_instance_uid, back.patient.study_date) == (
        "RTD-TEST",
        series.patient.study_instance_uid,
        "20260101",
    )

    table = table_node_from_rows(scene, [{"a": 1}], "t")
    parent = place_beside(table, node)
    assert parent == study_item_of(node) != 0
    assert study_item_of(table) == study_item_of(node)


def test_scene_saved_as_mrb_and_reloaded(scene, tmp_path):
    direction = _rotation((0.0, 10.0, 0.0))
    volume = Volume(
        np.arange(6 * 8 * 10, dtype=np.int16).reshape(6, 8, 10),
        affine_from_geometry((1.0, 2.0, 3.0), (1.2, 1.2, 2.5), direction),
    )
    node = node_from_volume(scene, volume, "CT")
    rois = _boxes(volume.shape)
    segmentation_node_from_rois(scene, rois, node, "AI")
    table_node_from_rows(scene, [{"roi_name": "GTV", "dice": 0.5}], "metrics")
    path = save_scene_mrb(scene, tmp_path / "study.mrb")
    with pytest.raises(OutputExistsError):
        save_scene_mrb(scene, path)

    reloaded = build_scene()
    load_scene_mrb(reloaded.scene, path)
    volume_node = reloaded.scene.GetFirstNodeByName("CT")
    back = volume_from_node(volume_node)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)
    segmentation = reloaded.scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    for original, copy in zip(rois, rois_from_segmentation_node(segmentation, back)):
        assert (copy.name, copy.color_rgb, copy.number) == (
            original.name,
            original.color_rgb,
            original.number,
        )
        np.testing.assert_array_equal(copy.mask, original.mask)
    assert rows_from_table_node(reloaded.scene.GetFirstNodeByClass("vtkMRMLTableNode")) == [
        {"roi_name": "GTV", "dice": 0.5}
    ]


def test_worker_exchange_files_round_trip(tmp_path):
    volume = Volume(
        np.arange(24, dtype=np.float32).reshape(2, 3, 4), affine_from_geometry((1, 2, 3), (1, 2, 3))
    )
    rois = _boxes((7, 10, 11))
    grid = Volume(np.zeros((7, 10, 11), np.float32), np.eye(4))
    back_volume = worker.load_volume_npz(worker.save_volume_npz(volume, tmp_path / "ct.npz"))
    np.testing.assert_array_equal(back_volume.array, volume.array)
    np.testing.assert_array_equal(back_volume.affine, volume.affine)
    back_rois, affine = worker.load_rois_npz(worker.save_rois_npz(rois, grid, tmp_path / "rois.npz"))
    np.testing.assert_array_equal(affine, grid.affine)
    for original, copy in zip(rois, back_rois):
        np.testing.assert_array_equal(copy.mask, original.mask)
        assert (copy.name, copy.color_rgb, copy.number, copy.interpreted_type) == (
            original.name, original.color_rgb, original.number, original.interpreted_type,
        )  # fmt: skip


def test_worker_subprocess_reports_a_bad_model_in_one_line(tmp_path):
    volume = Volume(np.zeros((2, 3, 4), np.float32), np.eye(4))
    ct_path = worker.save_volume_npz(volume, tmp_path / "ct.npz")
    command = [sys.executable, "-m", "rtdeep.slicer.worker", "--input", str(ct_path), "--output", str(tmp_path / "rois.npz"),
               "--site", "thorax", "--model", "no_such_model"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "no_such_model" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "rois.npz").exists()


def test_review_reads_only_the_reference_segments_it_compares_and_gets_the_same_rows(scene):
    from pathlib import Path

    module_dir = str(Path(__file__).resolve().parents[1] / "RTDeepSeg")
    if module_dir not in sys.path:
        sys.path.insert(0, module_dir)
    from RTDeepSegLib.logic import SegmentationLogic

    grid = Volume(np.zeros((8, 10, 12), np.int16), affine_from_geometry((0.0, 0.0, 0.0), (1.0, 1.0, 2.0)))
    ct_node = node_from_volume(scene, grid, "CT")
    reference = segmentation_node_from_rois(scene, _boxes(grid.shape), ct_node, "Reference")
    lung, _lungs, gtv = _boxes(grid.shape)
    test = [
        Roi("LUNG LT", np.roll(lung.mask, 1, axis=2), 1),
        Roi("gtv", gtv.mask, 2),
        Roi("Gtv", gtv.mask, 3),
    ]
    names = [roi.name for roi in test]

    read = SegmentationLogic.referenceRoisToCompare(reference, names, grid_from_node(ct_node))
    assert [roi.name for roi in read] == ["Lung_L", "GTV"]  # GTV has two partners: read, the metrics warn
    every = rois_from_segmentation_node(reference, grid)
    rows = SegmentationLogic.compareRois(read, test, grid)
    assert rows == SegmentationLogic.compareRois(every, test, grid)
    assert [row["roi_name"] for row in rows] == ["Lung_L"] and 0.0 < rows[0]["dice"] < 1.0
    # nothing pairs: every segment is read, and the error names them all
    unpaired = SegmentationLogic.referenceRoisToCompare(reference, ["Liver"], grid)
    assert [roi.name for roi in unpaired] == ["Lung_L", "Lungs", "GTV"]
    with pytest.raises(ValueError, match="Lung_L, Lungs, GTV"):
        SegmentationLogic.compareRois(unpaired, [Roi("Liver", lung.mask, 1)], grid)
