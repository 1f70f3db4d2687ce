"""RTDeepSeg processing on MRML nodes: segment a CT, compare with reference contours, export RTSTRUCT.

Needs ``slicer`` (MRML) and ``vtk`` but not ``qt``, so the same class runs in the Slicer desktop
application, in the web app and under pytest with ``slicer-core``. Public methods use Slicer's
camelCase; they take explicit nodes and raise ``ValueError`` (rtdeep's typed errors derive from it)
with a message that names the node, ROI or file.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import slicer

from rtdeep.dicomrt.types import Roi
from rtdeep.sites import SITES
from rtdeep.slicer import worker
from rtdeep.slicer.segmentation_node import (
    add_rois_to_segmentation_node,
    labelmap_name,
    rois_from_segmentation_node,
    segmentation_node_from_rois,
)
from rtdeep.slicer.subject_hierarchy import ct_series_from_volume_node, place_beside
from rtdeep.slicer.table_node import table_node_from_rows
from rtdeep.slicer.volume_node import grid_from_node, volume_from_node
from rtdeep.volume import Volume

__all__ = ["REVIEW_REFERENCE_RGB", "REVIEW_TEST_RGB", "SegmentationJob", "SegmentationLogic", "SegmentationResult"]

#: overlay colours of the review (the talk's convention): reference yellow, method red
REVIEW_REFERENCE_RGB = (1.0, 1.0, 0.0)
REVIEW_TEST_RGB = (1.0, 0.0, 0.0)


@dataclass
class SegmentationResult:
    """What :meth:`SegmentationLogic.process` made.

    Attributes:
        segmentationNode: the new (or refilled) segmentation node, one segment per ROI.
        rois: the ROIs (bool masks ``[k, j, i]`` on the input CT grid).
        metricsTableNode: per-ROI agreement with the reference (None without a reference).
        metricRows: the table's rows (``roi_name``, ``dice``, ``hd95_mm``, ...).
    """

    segmentationNode: Any
    rois: list[Roi]
    metricsTableNode: Any = None
    metricRows: list[dict[str, Any]] = field(default_factory=list)

    def dice(self, roi_name: str) -> float:
        """Dice of one ROI (NaN when it was not compared)."""
        for row in self.metricRows:
            if row.get("roi_name") == roi_name:
                return float(row["dice"])
        return math.nan


class SegmentationLogic:
    """Segment a CT volume node and turn the result into MRML nodes.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` when None, read at each call).
        atlasCount: atlases the atlas model registers (its default when None; fewer is faster).
    """

    def __init__(self, scene: Any = None, atlasCount: int | None = None) -> None:
        self._scene = scene
        self.atlasCount = atlasCount

    @property
    def scene(self) -> Any:
        return self._scene if self._scene is not None else slicer.mrmlScene

    # -- checks ---------------------------------------------------------------------------------
    @staticmethod
    def validateInputs(inputVolume: Any, site: str, model: str) -> None:
        """Raise ``ValueError`` naming what is wrong with the inputs of :meth:`process`."""
        if inputVolume is None:
            raise ValueError("Select an input CT volume.")
        if not inputVolume.IsA("vtkMRMLScalarVolumeNode") or inputVolume.IsA("vtkMRMLLabelMapVolumeNode"):
            raise ValueError(f"Input '{inputVolume.GetName()}' is not a scalar (CT) volume.")
        if inputVolume.GetImageData() is None:
            raise ValueError(f"Input volume '{inputVolume.GetName()}' has no voxels.")
        if site not in SITES:
            raise ValueError(f"Unknown site '{site}': choose one of {', '.join(SITES)}.")
        if not model:
            raise ValueError(f"Select a model (a bundled network or '{site}_atlas').")

    # -- processing -----------------------------------------------------------------------------
    def segmentVolume(self, inputVolume: Any, site: str, model: str, device: str = "cpu") -> list[Roi]:
        """Run the model in this process (tests, scripts); the widget uses the subprocess instead."""
        from rtdeep.inference import segment_ct

        self.validateInputs(inputVolume, site, model)
        return segment_ct(volume_from_node(inputVolume), model, site=site, device=device, n_atlases=self.atlasCount)

    def process(
        self,
        inputVolume: Any,
        site: str,
        model: str,
        referenceSegmentation: Any = None,
        outputSegmentation: Any = None,
        device: str = "cpu",
    ) -> SegmentationResult:
        """Segment ``inputVolume`` with ``model`` and show the result.

        Args:
            inputVolume: CT scalar volume node (HU).
            site: ``"thorax"`` or ``"headneck"``.
            model: bundle name (e.g. ``"thorax_unet3d"``) or atlas baseline (``"thorax_atlas"``).
            referenceSegmentation: reference contours (e.g. the RTSTRUCT SlicerRT imported) to
                compare with; None for no comparison.
            outputSegmentation: segmentation node to refill; None makes a new node.
            device: torch device.

        Returns:
            The segmentation node, ROIs and metrics (see :class:`SegmentationResult`).
        """
        rois = self.segmentVolume(inputVolume, site, model, device)
        return self.showResults(inputVolume, rois, model, referenceSegmentation, outputSegmentation)

    def showResults(
        self,
        inputVolume: Any,
        rois: list[Roi],
        model: str,
        referenceSegmentation: Any = None,
        outputSegmentation: Any = None,
    ) -> SegmentationResult:
        """Turn ROIs on ``inputVolume``'s grid into a segmentation node (and metrics table).

        The segmentation's reference geometry is the input volume, it sits under the input's study
        in the subject hierarchy, segments carry the ROI names and colours.
        """
        name = self.segmentationName(inputVolume, model)
        if outputSegmentation is None:
            segmentation_node = segmentation_node_from_rois(self.scene, rois, inputVolume, name)
        else:
            segmentation_node = outputSegmentation
            segmentation_node.GetSegmentation().RemoveAllSegments()
            segmentation_node.GetSegmentation().SetSourceRepresentationName(labelmap_name())
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
            segmentation_node.CreateDefaultDisplayNodes()
            add_rois_to_segmentation_node(segmentation_node, rois, inputVolume)
        place_beside(segmentation_node, inputVolume)
        result = SegmentationResult(segmentationNode=segmentation_node, rois=list(rois))
        if referenceSegmentation is not None:
            result.metricsTableNode, result.metricRows = self.compare(
                segmentation_node, referenceSegmentation, inputVolume
            )
        return result

    @staticmethod
    def segmentationName(inputVolume: Any, model: str) -> str:
        """The name :meth:`showResults` gives a new AI segmentation node."""
        return f"{inputVolume.GetName()} {model}"

    def compare(
        self, testSegmentation: Any, referenceSegmentation: Any, referenceVolume: Any, tableNode: Any = None
    ) -> tuple[Any, list[dict[str, Any]]]:
        """Per-ROI Dice, HD95, mean surface distance and surface Dice of test against reference.

        Both segmentations are read as masks on ``referenceVolume``'s grid; ROIs are paired by
        TG-263 name (``rtdeep.names.pair_roi_names``). Three steps: the masks are read from the
        nodes, :meth:`compareRois` computes the rows (no MRML: a caller that must not block, such as
        the web app, runs that step in a worker thread), :meth:`showComparison` makes the table node.

        Returns:
            (table node, rows). One row per reference ROI that the test segmentation also has.

        Raises:
            ValueError: no ROI of the two segmentations could be paired.
        """
        grid: Volume = grid_from_node(referenceVolume)
        test_rois = rois_from_segmentation_node(testSegmentation, grid)
        test_names = [roi.name for roi in test_rois]
        reference_rois = self.referenceRoisToCompare(referenceSegmentation, test_names, grid)
        rows = self.compareRois(
            reference_rois, test_rois, grid, referenceSegmentation.GetName(), testSegmentation.GetName()
        )
        table = self.showComparison(rows, testSegmentation, referenceSegmentation, referenceVolume, tableNode)
        return table, rows

    @staticmethod
    def referenceRoisToCompare(referenceSegmentation: Any, testNames: list[str], grid: Volume) -> list[Roi]:
        """The reference segments :meth:`compareRois` pairs with ``testNames``, as masks on ``grid``.

        A reference segment whose name pairs with no test name (``rtdeep.names.pair_roi_names``; a
        body outline, a PTV) gets no row, so its mask, a full-grid array, is not read; segments with
        several partners are read, as the metrics warn about them. When no segment pairs, all are
        read, for :meth:`compareRois`'s error to name them.
        """
        from rtdeep.names import pair_roi_names

        segmentation = referenceSegmentation.GetSegmentation()
        ids = [segmentation.GetNthSegmentID(index) for index in range(segmentation.GetNumberOfSegments())]
        names = [segmentation.GetSegment(segment_id).GetName() for segment_id in ids]
        pairing = pair_roi_names(names, testNames)
        compared = [i for i, name in zip(ids, names) if name in pairing.pairs or name in pairing.ambiguous]
        return rois_from_segmentation_node(referenceSegmentation, grid, segment_ids=compared or None)

    @staticmethod
    def compareRois(
        referenceRois: list[Roi],
        testRois: list[Roi],
        grid: Volume,
        referenceName: str = "reference",
        testName: str = "test",
    ) -> list[dict[str, Any]]:
        """The rows of :meth:`compare` from masks (``rtdeep.metrics.compare_structure_sets``).

        Numpy in, rows out: touches no MRML node, so it may run in a worker thread.

        Args:
            referenceRois: reference ROIs, masks on ``grid``.
            testRois: ROIs to judge, masks on ``grid``.
            grid: the volume the masks lie on (its spacing and voxel volume).
            referenceName: the reference's name in the error message.
            testName: the test's name in the error message.

        Raises:
            ValueError: no ROI of the two sets could be paired.
        """
        from rtdeep.metrics import compare_structure_sets

        rows = compare_structure_sets(referenceRois, testRois, grid)
        if not rows:
            raise ValueError(
                f"No segment of '{testName}' ({', '.join(r.name for r in testRois)}) matches a "
                f"segment of '{referenceName}' ({', '.join(r.name for r in referenceRois)})."
            )
        return rows

    def showComparison(
        self,
        rows: list[dict[str, Any]],
        testSegmentation: Any,
        referenceSegmentation: Any,
        referenceVolume: Any,
        tableNode: Any = None,
    ) -> Any:
        """The rows of :meth:`compareRois` as a table node beside ``referenceVolume`` (``tableNode``
        refilled when given)."""
        name = f"{testSegmentation.GetName()} vs {referenceSegmentation.GetName()}"
        table = table_node_from_rows(self.scene, rows, name, node=tableNode)
        place_beside(table, referenceVolume)
        return table

    @staticmethod
    def showReviewOverlay(testSegmentation: Any, referenceSegmentation: Any, enabled: bool = True) -> None:
        """Review colours: reference outlines yellow, test outlines red (segment colours kept)."""
        for node, rgb in ((referenceSegmentation, REVIEW_REFERENCE_RGB), (testSegmentation, REVIEW_TEST_RGB)):
            display = node.GetDisplayNode()
            if display is None:
                node.CreateDefaultDisplayNodes()
                display = node.GetDisplayNode()
            segmentation = node.GetSegmentation()
            for index in range(segmentation.GetNumberOfSegments()):
                segment_id = segmentation.GetNthSegmentID(index)
                if enabled:
                    display.SetSegmentOverrideColor(segment_id, *rgb)
                else:
                    display.UnsetSegmentOverrideColor(segment_id)
            display.SetVisibility2DFill(not enabled)
            display.SetVisibility2DOutline(True)

    # -- RTSTRUCT export ------------------------------------------------------------------------
    def exportRtStruct(
        self,
        segmentationNode: Any,
        referenceVolume: Any,
        outputPath: str | Path,
        ctFolder: str | Path | None = None,
        segmentIds: list[str] | None = None,
        label: str = "RTDEEP",
    ) -> Path:
        """Write the segments as an RT Structure Set that references the CT series.

        The CT's UIDs come from the volume node's DICOM identity (a CT loaded through Slicer's DICOM
        module), or from ``ctFolder`` (the CT's DICOM files, read again) when given.

        Args:
            segmentationNode: the segments to export (masks read on the CT grid).
            referenceVolume: the CT volume node.
            outputPath: the RTSTRUCT file to write (must not exist).
            ctFolder: the CT series' folder, when the volume node lacks DICOM UIDs.
            segmentIds: segments to export (all when None).
            label: StructureSetLabel.

        Raises:
            ValueError: no segments, missing DICOM identity, or a CT folder whose grid differs
                from the volume node.
        """
        from rtdeep.dicomrt.rtstruct_writer import write_rtstruct

        ct = _ct_for_export(segmentationNode, referenceVolume, ctFolder)
        rois = rois_from_segmentation_node(segmentationNode, ct.volume, segment_ids=segmentIds)
        for number, roi in enumerate(rois, start=1):
            roi.number = roi.number or number
        return Path(write_rtstruct(ct, rois, outputPath, label=label, generation_algorithm="AUTOMATIC"))

    # -- subprocess (the widget runs it with qt.QProcess) ----------------------------------------
    @staticmethod
    def subprocessCommand(
        inputVolume: Any,
        site: str,
        model: str,
        workDir: str | Path,
        device: str = "cpu",
        python: str | None = None,
    ) -> tuple[list[str], Path]:
        """Write the CT for the worker and return (command line, path of the ROIs it will write).

        ``python`` defaults to this interpreter; in Slicer pass ``PythonSlicer``'s path.
        """
        SegmentationLogic.validateInputs(inputVolume, site, model)
        work = Path(workDir)
        work.mkdir(parents=True, exist_ok=True)
        ct_path = worker.save_volume_npz(volume_from_node(inputVolume), work / "ct.npz")
        output = work / "rois.npz"
        command = [
            python or sys.executable, "-m", "rtdeep.slicer.worker",
            "--input", str(ct_path), "--output", str(output),
            "--site", site, "--model", model, "--device", device,
        ]  # fmt: skip
        return command, output

    @staticmethod
    def parseProgressLine(line: str) -> tuple[float, str] | None:
        """(fraction, message) from a worker line ``PROGRESS 0.500 message``; None for other lines."""
        return worker.parse_progress_line(line)

    @staticmethod
    def loadSubprocessResult(outputPath: str | Path, inputVolume: Any) -> list[Roi]:
        """ROIs the worker wrote, checked to lie on ``inputVolume``'s grid."""
        rois, affine = worker.load_rois_npz(outputPath)
        grid = grid_from_node(inputVolume)
        if not Volume(grid.array, affine).same_grid(grid) or any(
            roi.mask.shape != grid.shape for roi in rois
        ):
            raise ValueError(f"Result {outputPath} is not on the grid of '{inputVolume.GetName()}'.")
        return rois

    # -- DICOM SEG export (added for the web app's Export DICOM SEG) ----------------------------
    def exportDicomSeg(
        self,
        segmentationNode: Any,
        referenceVolume: Any,
        outputPath: str | Path,
        ctFolder: str | Path,
        algorithmName: str,
        algorithmVersion: str = "1",
    ) -> Path:
        """Write the segments as a DICOM SEG (highdicom) whose source images are the CT's files.

        A SEG references the CT's slice files, so the CT is read again from ``ctFolder`` and must
        lie on ``referenceVolume``'s grid. Empty segments are left out.

        Args:
            segmentationNode: the segments to export (masks read on the CT grid).
            referenceVolume: the CT volume node.
            outputPath: the SEG file to write (must not exist).
            ctFolder: the CT series' folder.
            algorithmName: AlgorithmName, e.g. the model bundle's name.
            algorithmVersion: AlgorithmVersion.

        Raises:
            ValueError: no segments, or a CT folder whose grid differs from the volume node.
        """
        from rtdeep.dicomrt.seg_writer import write_seg

        ct = _ct_for_export(segmentationNode, referenceVolume, ctFolder)
        rois = rois_from_segmentation_node(segmentationNode, ct.volume)
        written = write_seg(
            ct, rois, outputPath, algorithm_name=algorithmName, algorithm_version=algorithmVersion
        )
        return Path(written.path)

    # -- the model list and a worker run with cleanup (qt-free parts of the widget) --------------
    @staticmethod
    def modelDescriptions(site: str) -> list[dict[str, str]]:
        """The models offered for ``site`` with what the panel shows (from ``models.json``).

        Returns:
            One dict per model: ``name`` (what :meth:`process` takes), ``title``, ``tooltip`` (organs
            with held-out Dice, expected time) and ``warning`` (empty unless the model is weak).
        """
        from rtdeep.inference import available_models
        from rtdeep.model_database import ModelEntry, describe_model, read_model_database

        database = read_model_database()
        descriptions = []
        for name in available_models(site):
            entry = database.get(name) or ModelEntry(name, name, site, SITES[site].organ_names)
            descriptions.append({"name": name, "title": entry.title, "tooltip": describe_model(entry),
                                 "warning": entry.warning})
        return descriptions

    @staticmethod
    def startJob(
        inputVolume: Any, site: str, model: str, device: str = "cpu", python: str | None = None
    ) -> SegmentationJob:
        """Write the CT into a new temporary folder and return the worker run to start.

        The folder (and the CT in it) is removed by :meth:`SegmentationJob.finish` or
        :meth:`SegmentationJob.cancel`, and right here when preparing the run fails.
        """
        work_dir = Path(tempfile.mkdtemp(prefix="RTDeepSeg-"))
        try:
            command, output = SegmentationLogic.subprocessCommand(inputVolume, site, model, work_dir, device,
                                                                  python=python)
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        return SegmentationJob(work_dir, command, output, inputVolume)


@dataclass
class SegmentationJob:
    """One run of the segmentation worker: its temporary folder (holding the CT), command, result.

    The widget starts :attr:`command` (a ``qt.QProcess``), then calls :meth:`finish` when the
    process ends or :meth:`cancel` on Cancel. Both delete the folder whatever happened (``finally``),
    so no patient data stays behind; :meth:`cancel` kills the whole process tree (``PythonSlicer``
    is a launcher whose child runs the model).
    """

    workDir: Path
    command: list[str]
    outputPath: Path
    inputVolume: Any

    def finish(self, exitCode: int, log: str = "") -> list[Roi]:
        """The ROIs of a finished run; ``ValueError`` (with the worker's error line) when it failed."""
        try:
            if exitCode != 0:
                errors = [line for line in log.splitlines() if line.startswith("error:")]
                detail = f": {errors[-1][len('error:'):].strip()}" if errors else ""
                raise ValueError(f"Segmentation stopped (exit code {exitCode}){detail}.")
            return SegmentationLogic.loadSubprocessResult(self.outputPath, self.inputVolume)
        finally:
            self.cleanup()

    def cancel(self, processId: int | None) -> None:
        """Kill the worker and its children (when ``processId`` is given) and delete the folder."""
        from rtdeep.slicer.processes import kill_process_tree

        try:
            if processId:
                kill_process_tree(int(processId))
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        """Delete the temporary folder (the CT and any partial result)."""
        shutil.rmtree(self.workDir, ignore_errors=True)


def _ct_for_export(segmentationNode: Any, referenceVolume: Any, ctFolder: str | Path | None) -> Any:
    """The CT series an export references: read again from ``ctFolder`` (which must lie on the volume
    node's grid), else from the volume node's DICOM identity.

    Raises:
        ValueError: no segments to export, or a CT folder whose grid differs from the volume node.
    """
    if segmentationNode is None or segmentationNode.GetSegmentation().GetNumberOfSegments() == 0:
        raise ValueError("Select a segmentation with at least one segment to export.")
    if ctFolder is None:
        return ct_series_from_volume_node(referenceVolume)
    from rtdeep.dicomrt.ct_reader import read_ct_series

    ct = read_ct_series(ctFolder)
    node_grid = grid_from_node(referenceVolume)
    if not ct.volume.same_grid(node_grid, tolerance_mm=0.01):
        raise ValueError(
            f"CT folder {ctFolder} (shape {ct.volume.shape}) is not on the grid of volume "
            f"'{referenceVolume.GetName()}' (shape {node_grid.shape})."
        )
    return ct
