"""The rtdeep web app: one MRML scene served by trame-slicer, two panels over the modules' logic.

The page shows axial, coronal, sagittal and 3D views of one scene (trame-slicer streams each view
as images) and two panels: RTDeepSeg (AI contours, review, RTSTRUCT and DICOM SEG export) and
RTPneumonitisPredictor (dose-masked crop, DVH figures, NTCP, classifier risk). Both panels call the
same logic classes as the Slicer modules (``RTDeepSegLib.logic.SegmentationLogic``,
``RTPneumonitisPredictorLib.logic.PneumonitisLogic``) and build nodes through ``rtdeep.slicer``;
this file owns only the layout, the binding of page state to those calls, and file transfer.
A 4D CT's respiratory phases (as ``load_study`` lists them) become a sequence with a browser
(``rtdeep.slicer.sequence_node``); the phase selector picks the browser's item, whose proxy volume
the slice views show.

Every action runs inside :meth:`RtDeepWebApp._guarded`: an error becomes one line in the page
(``#error-message``) and the server keeps running. Segmentation runs in the module's worker
subprocess (:mod:`rtdeep.web.jobs`), so views and buttons stay live and Cancel works while the
network runs. The review metrics that follow (Dice, HD95, surface Dice, volumes) are computed from
the masks in a worker thread (``SegmentationLogic.compareRois``, no MRML); only reading the reference
masks and making the nodes (``SegmentationLogic.showComparison``) happen on the server's loop.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import functools
import io
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rtdeep.model_database import default_model
from rtdeep.sites import SITES
from rtdeep.web.files import DataRoot, UploadArea, UploadTooLargeError
from rtdeep.web.jobs import SpareWorker, WorkerProcess

__all__ = ["RtDeepWebApp", "module_logic_classes", "return_freed_memory"]

logger = logging.getLogger("rtdeep.web")

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_SITE = "thorax"
#: colour tables of the overlays (built-in MRML colour nodes)
DOSE_COLOR_NODE = "vtkMRMLColorTableNodeRainbow"
CROP_COLOR_NODE = "vtkMRMLColorTableNodeGreen"
SALIENCY_COLOR_NODE = "vtkMRMLColorTableNodeIron"
OVERLAY_OPACITY = 0.45


def module_logic_classes() -> tuple[type, type, dict[str, Any]]:
    """The Slicer modules' logic classes (``SegmentationLogic``, ``PneumonitisLogic``) and constants.

    The module folders sit beside the ``rtdeep`` package in the source tree, as in the extension.
    """
    for module_dir in ("RTDeepSeg", "RTPneumonitisPredictor"):
        path = str(PROJECT_ROOT / module_dir)
        if path not in sys.path:
            sys.path.insert(0, path)
    from RTDeepSegLib import logic as seg_logic
    from RTPneumonitisPredictorLib import logic as pn_logic

    constants = {
        "CROP_PRESETS": pn_logic.CROP_PRESETS,
        "DOSE_VOLUME_ATTRIBUTE": pn_logic.DOSE_VOLUME_ATTRIBUTE,
        "POSITIVE_CLASS": pn_logic.POSITIVE_CLASS,
    }
    return seg_logic.SegmentationLogic, pn_logic.PneumonitisLogic, constants


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None on a C library without it, e.g. macOS, Windows, musl)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def return_freed_memory() -> None:
    """Give the C heap's free pages back to the system after an action.

    The arrays an action frees (the study's copy of the CT once it is in the scene, a segmentation
    run's masks, those freed in the metrics' worker thread) stay in glibc's heaps, counted in the
    server's resident memory, until the heaps are trimmed (``bench/bench_web.py`` measures it).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _fmt(value: Any, digits: int = 2) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "-" if math.isnan(number) else f"{number:.{digits}f}"


class RtDeepWebApp:
    """The page, its state and its actions over one MRML scene.

    Args:
        data_root: the ``--data`` folder studies are opened from.
        server: a trame server (a new one when None).
        max_upload_mb: the largest upload accepted.
    """

    def __init__(self, data_root: DataRoot, server: Any = None, max_upload_mb: float = 512.0) -> None:
        import slicer
        from trame.app import get_server
        from trame_slicer import module as trame_slicer_module
        from trame_slicer.core import SlicerApp
        from trame_slicer.rca_view import register_rca_factories

        self.server = server or get_server(client_type="vue3")
        self.server.enable_module(trame_slicer_module)
        self.state = self.server.state
        self.ctrl = self.server.controller
        self.data_root = data_root
        self.uploads = UploadArea(int(max_upload_mb * 1e6))
        self.work_dir = Path(tempfile.mkdtemp(prefix="rtdeep-web-work-"))

        self.slicer_app = SlicerApp()
        self.scene = self.slicer_app.scene
        slicer.mrmlScene = self.scene  # code written for Slicer finds the scene where it expects it
        register_rca_factories(self.slicer_app.view_manager, self.server)

        segmentation_logic, pneumonitis_logic, constants = module_logic_classes()
        self.seg_logic = segmentation_logic(self.scene)
        self.pn_logic = pneumonitis_logic(self.scene)
        self.constants = constants
        self._model_notes: dict[str, tuple[str, str]] = {}  # model -> (description, warning)

        self._nodes: dict[str, Any] = {}  # role -> node (ct, reference, dose, ai, crop, saliency, ...)
        self._study_folder: Path | None = None
        self._job: Any = None  # the logic's SegmentationJob of the running segmentation
        self._worker: WorkerProcess | None = None
        self._spare = SpareWorker(sys.executable)  # the next run's worker, its imports done
        self._seg_task: asyncio.Future | None = None
        self._pn_key: tuple[str, float, str] | None = None
        self._pn_result: Any = None
        self._sequences_logic: Any = None  # vtkSlicerSequencesLogic, made for the first 4D CT
        self._upload_parts: list[tuple[str, bytes]] = []
        self._upload_bytes = 0
        self._upload_refused = ""

        self._init_state()
        self._build_ui()

    # -- state ------------------------------------------------------------------------------------
    def _init_state(self) -> None:
        state = self.state
        state.trame__title = "rtdeep"
        state.error_message = ""
        state.status_message = ""
        state.busy = False
        state.study_folders = self.data_root.study_folders()
        state.study_path = "." if self.data_root.is_single_study() else ""
        state.study_loaded = False
        state.study_summary = []
        state.phase_items = []  # a 4D CT's phases: [{"title": "phase 0 %", "value": 0}, ...]
        state.phase_index = 0
        state.legend = None
        state.max_upload_mb = self.uploads.max_bytes / 1e6
        state.upload_mb = 0
        state.seg_site = DEFAULT_SITE
        state.seg_sites = list(SITES)
        state.seg_models = []
        state.seg_model = ""
        state.seg_model_info = ""
        state.seg_model_warning = ""
        state.seg_running = False
        state.seg_progress = 0
        state.seg_message = ""
        state.seg_seconds = None
        state.dice_rows = []
        state.can_export = False
        state.export_name = "RS.dcm"
        state.lung_segment_options = []
        state.lung_segments = []
        state.crop_presets = list(self.constants["CROP_PRESETS"])
        state.crop_preset = self.constants["CROP_PRESETS"][0]
        state.crop_threshold = 20.0
        state.crop_volume_cc = None
        state.crop_text = ""
        state.risk_text = ""
        state.pn_figures = []
        state.dvh_png = ""
        state.positive_class = self.constants["POSITIVE_CLASS"]
        state.change("seg_site")(lambda **_: asyncio.ensure_future(self._refresh_models()))
        self.ctrl.on_server_ready.add(lambda **_: asyncio.ensure_future(self._refresh_models()))
        # the first run's worker imports torch and MONAI while the page and the model list load
        self.ctrl.on_server_ready.add(lambda **_: asyncio.ensure_future(self._spare.start()))
        state.change("seg_model")(lambda **_: self._describe_model())
        state.change("phase_index")(lambda **_: self._guarded("Show phase")(self._show_phase)())

    async def _refresh_models(self) -> None:
        """The site's models as the module lists them (bundle database: title, organs with held-out
        Dice, expected time, a warning for weak models), then its atlas baseline.

        Read in a worker thread (models.json and the bundles' metadata, no torch: the server never
        imports it for segmentation, whose network runs in the worker process); the Run button waits
        for the list.
        """
        site = self.state.seg_site
        loop = asyncio.get_running_loop()
        descriptions, default = await loop.run_in_executor(
            None, lambda: (self.seg_logic.modelDescriptions(site), default_model(site))
        )
        with self.state:
            self._model_notes = {item["name"]: (item["tooltip"], item["warning"]) for item in descriptions}
            self.state.seg_models = [{"title": item["title"], "value": item["name"]} for item in descriptions]
            names = [item["name"] for item in descriptions]
            # the site's best measured model, as in `rtdeep demo`
            self.state.seg_model = default if default in names else names[0]
            self._describe_model()

    def _describe_model(self) -> None:
        description, warning = self._model_notes.get(self.state.seg_model, ("", ""))
        self.state.seg_model_info = description
        self.state.seg_model_warning = warning

    # -- errors -----------------------------------------------------------------------------------
    def _show_error(self, action: str, error: BaseException) -> None:
        """One readable line in the page; the log gets the action and the error type only (the
        message may name patient folders)."""
        message = str(error) or type(error).__name__
        if not isinstance(error, (ValueError, OSError)):
            message = f"{type(error).__name__}: {message}"
        self.state.error_message = f"{action} failed: {message}"
        logger.warning("%s failed (%s)", action, type(error).__name__)

    def _guarded(self, action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorate a UI callback: clear the error, run, show any exception as one line, then give
        the memory the action freed back to the system (:func:`return_freed_memory`)."""

        def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
            if asyncio.iscoroutinefunction(function):

                @functools.wraps(function)
                async def run_async(*args: Any, **kwargs: Any) -> Any:
                    with self.state:
                        self.state.error_message = ""
                    try:
                        return await function(*args, **kwargs)
                    except Exception as error:  # noqa: BLE001 - the server must survive any input
                        with self.state:
                            self._show_error(action, error)
                    finally:
                        with self.state:
                            self.state.busy = False
                        return_freed_memory()
                    return None

                return run_async

            @functools.wraps(function)
            def run(*args: Any, **kwargs: Any) -> Any:
                self.state.error_message = ""
                try:
                    return function(*args, **kwargs)
                except Exception as error:  # noqa: BLE001 - the server must survive any input
                    self._show_error(action, error)
                finally:
                    self.state.busy = False
                    return_freed_memory()
                return None

            return run

        return decorate

    async def _flush_busy(self, message: str) -> None:
        """Show ``message`` and the busy bar before a blocking step."""
        with self.state:
            self.state.busy = True
            self.state.status_message = message
        await asyncio.sleep(0.05)

    # -- study ------------------------------------------------------------------------------------
    def _remove_nodes(self, *roles: str) -> None:
        for role in roles or tuple(self._nodes):
            node = self._nodes.pop(role, None)
            if node is not None and self.scene.IsNodePresent(node):
                self.scene.RemoveNode(node)

    async def load_study(self) -> None:
        await self._flush_busy("Loading study...")
        folder = self.data_root.resolve(self.state.study_path)
        self._open_folder(folder, self.data_root.relative(folder))

    def _open_folder(self, folder: Path, shown_name: str) -> None:
        from rtdeep.dicomrt.study import load_study
        from rtdeep.slicer.segmentation_node import segmentation_node_from_rois
        from rtdeep.slicer.subject_hierarchy import attach_dicom_series
        from rtdeep.slicer.volume_node import node_from_volume

        if self.state.seg_running:
            raise ValueError("a segmentation is running; cancel it before opening another study")
        started = time.perf_counter()
        study = load_study(folder)  # raises a typed error naming the file before the scene changes
        self._remove_nodes()
        self._reset_results()
        ct_node = node_from_volume(self.scene, study.ct.volume, "CT")
        attach_dicom_series(ct_node, study.ct)
        self._nodes["ct"] = ct_node
        summary = [
            f"Study: {shown_name}",
            f"Patient ID: {study.ct.patient.patient_id or '(none)'}",
            "CT: {} x {} x {} voxels, {} mm".format(
                *study.ct.volume.shape[::-1], " x ".join(f"{s:.2f}" for s in study.ct.volume.spacing_mm)
            ),
        ]
        if study.structure_set is not None and study.structure_set.rois:
            reference = segmentation_node_from_rois(
                self.scene, study.structure_set.rois, ct_node, "Reference structures"
            )
            self._show_structures(reference)
            self._nodes["reference"] = reference
            summary.append("Structures: " + ", ".join(roi.name for roi in study.structure_set.rois))
            segments = reference.GetSegmentation()
            self.state.lung_segment_options = [
                {"title": segments.GetNthSegment(i).GetName(), "value": segments.GetNthSegmentID(i)}
                for i in range(segments.GetNumberOfSegments())
            ]
        else:
            summary.append("Structures: none (no RTSTRUCT on this CT)")
        if study.dose is not None:
            dose_node = node_from_volume(
                self.scene,
                study.dose.dose,
                "RTDOSE",
                attributes={self.constants["DOSE_VOLUME_ATTRIBUTE"]: "1"},
            )
            self._nodes["dose"] = dose_node
            summary.append(f"Dose: max {float(study.dose.dose.array.max()):.1f} Gy ({study.dose.dose_type})")
        else:
            summary.append("Dose: none (no RTDOSE on this CT)")
        if study.plan is not None:
            plan = study.plan
            summary.append(
                f"Plan: {plan.label or '(no label)'}, {_fmt(plan.prescription_gy, 1)} Gy in "
                f"{plan.fractions or '?'} fractions, {len(plan.beams)} beams"
            )
        if study.respiratory_phases:
            self._add_phases(folder, study)
            summary.append(
                "4D CT: {} respiratory phases: {}".format(
                    len(study.respiratory_phases),
                    ", ".join(f"{p.percent:g} %" for p in study.respiratory_phases),
                )
            )
        self._study_folder = folder
        self._show_study()
        self.state.study_summary = summary
        self.state.study_loaded = True
        self.state.export_name = "RS.dcm"
        self.state.status_message = f"Study loaded in {time.perf_counter() - started:.1f} s."
        logger.info("study loaded (%d slices)", study.ct.volume.shape[0])

    def _add_phases(self, folder: Path, study: Any) -> None:
        """A 4D CT's phases as a sequence with a browser (``rtdeep.slicer.sequence_node``); its
        proxy volume, the selected phase, is what the slice views show.

        Each phase is read from its own slice files (``read_phase_volumes``, which also checks that
        all phases share one grid), found by one header scan of the folder; reading the folder
        once per phase parsed every file of the study again for each phase.
        """
        from rtdeep.dicomrt.fourd import FourDCt, read_phase_volumes
        from rtdeep.dicomrt.scan import scan_folder
        from rtdeep.slicer.sequence_node import sequence_from_phases

        phases = study.respiratory_phases
        wanted = {phase.series_instance_uid for phase in phases}
        files: dict[str, list[Path]] = {}
        for info in scan_folder(folder)[0]:
            if info.modality == "CT" and info.series_instance_uid in wanted:
                files.setdefault(info.series_instance_uid, []).append(Path(info.path))
        by_phase = {uid: sorted(paths) for uid, paths in files.items()}
        four_d = FourDCt(study.ct.frame_of_reference_uid, list(phases), by_phase)
        volumes = [ct.volume for ct in read_phase_volumes(four_d)]
        sequence, browser, proxy = sequence_from_phases(self.scene, volumes, [p.percent for p in phases])
        self._nodes.update(phase_sequence=sequence, phase_browser=browser, phase_proxy=proxy)
        self.state.phase_items = [
            {"title": f"phase {p.percent:g} %", "value": i} for i, p in enumerate(phases)
        ]
        self.state.phase_index = 0

    def _show_phase(self) -> None:
        """Show the selected phase: the browser's item, then its proxy node updated."""
        browser = self._nodes.get("phase_browser")
        if browser is None:
            return
        if self._sequences_logic is None:
            import slicer

            self._sequences_logic = slicer.vtkSlicerSequencesLogic()
            self._sequences_logic.SetMRMLScene(self.scene)
        browser.SetSelectedItemNumber(int(self.state.phase_index))
        self._sequences_logic.UpdateProxyNodesFromSequences(browser)
        for view in self._slice_views():
            view.schedule_render()

    def _reset_results(self) -> None:
        self.state.dice_rows = []
        self.state.can_export = False
        self.state.seg_progress = 0
        self.state.seg_message = ""
        self.state.seg_seconds = None
        self.state.crop_volume_cc = None
        self.state.crop_text = ""
        self.state.risk_text = ""
        self.state.pn_figures = []
        self.state.dvh_png = ""
        self._pn_key = None
        self._pn_result = None
        self.state.lung_segments = []
        self.state.lung_segment_options = []
        self.state.phase_items = []
        self.state.phase_index = 0

    @staticmethod
    def _show_structures(segmentation: Any) -> None:
        """Outlines in the slice views, organ surfaces in 3D (the body outline only in 2D)."""
        display = segmentation.GetDisplayNode()
        display.SetVisibility2DFill(False)  # outlines only: the dose wash and crop stay visible
        segmentation.CreateClosedSurfaceRepresentation()
        inner = segmentation.GetSegmentation()
        for index in range(inner.GetNumberOfSegments()):
            segment_id = inner.GetNthSegmentID(index)
            if inner.GetSegment(segment_id).GetName().lower() in ("external", "body"):
                display.SetSegmentVisibility3D(segment_id, False)

    def _slice_views(self) -> list[Any]:
        return list(self.slicer_app.view_manager.get_slice_views())

    def _background(self) -> Any:
        """The CT the slice views show: a 4D CT's selected phase (the browser's proxy), else the CT."""
        return self._nodes.get("phase_proxy", self._nodes["ct"])

    def _show_study(self) -> None:
        display = self.slicer_app.display_manager
        display.show_volume_in_slice_background(self._background())
        ct_display = self._background().GetDisplayNode()
        ct_display.SetAutoWindowLevel(False)
        ct_display.SetWindowLevel(1400, -300)  # lung and soft tissue in one window
        self._show_overlay("dose")
        display.reset_views()

    def _show_overlay(self, role: str) -> None:
        """The dose wash, the crop or the saliency map over the CT in the slice views
        (``rtdeep.slicer.display.show_as_overlay``, as the desktop module shows its Grad-CAM)."""
        from rtdeep.slicer.display import show_as_overlay

        node = self._nodes.get(role)
        if node is None:
            self.slicer_app.display_manager.show_volume_in_slice_foreground(None)
            self.state.legend = None
            return
        color, title, unit = {
            "dose": (DOSE_COLOR_NODE, "Dose", "Gy"),
            "crop": (CROP_COLOR_NODE, "Crop (CT inside the crop)", "HU"),
            "saliency": (SALIENCY_COLOR_NODE, "Grad-CAM saliency", ""),
        }[role]
        show_as_overlay(node, self._background(), opacity=OVERLAY_OPACITY, color_node_id=color)
        for view in self._slice_views():
            view.schedule_render()
        display = node.GetDisplayNode()
        self.state.legend = {
            "title": title,
            "low": f"{display.GetLowerThreshold():.1f} {unit}".strip(),
            "high": f"{display.GetUpperThreshold():.1f} {unit}".strip(),
            "gradient": {
                DOSE_COLOR_NODE: "linear-gradient(to right, #ff0000, #ffff00, #00ff00, #00ffff, #0000ff, #ff00ff)",
                CROP_COLOR_NODE: "linear-gradient(to right, #000000, #00ff00)",
                SALIENCY_COLOR_NODE: "linear-gradient(to right, #000000, #ff0000, #ffff00, #ffffff)",
            }[color],
        }

    # -- uploads ----------------------------------------------------------------------------------
    def upload_chunk(self, files: list[dict]) -> None:
        """Collect one chunk of an upload; an empty chunk ends it and opens the uploaded files."""
        if files:
            for item in files:
                content = item.get("content") or b""
                self._upload_bytes += len(content)
                if self._upload_bytes > self.uploads.max_bytes:
                    self._upload_refused = (
                        f"upload is over the limit of {self.uploads.max_bytes / 1e6:.0f} MB"
                    )
                    self._upload_parts = []
                if not self._upload_refused:
                    self._upload_parts.append((str(item.get("name", "")), bytes(content)))
            return
        parts, refused = self._upload_parts, self._upload_refused
        self._upload_parts, self._upload_bytes, self._upload_refused = [], 0, ""
        self._finish_upload(parts, refused)

    def _finish_upload(self, parts: list[tuple[str, bytes]], refused: str) -> None:
        if refused:
            raise UploadTooLargeError(refused)
        folder = self.uploads.store(parts)
        self._open_folder(folder, f"uploaded files ({len(parts)})")

    # -- RTDeepSeg --------------------------------------------------------------------------------
    def _require(self, role: str, what: str) -> Any:
        node = self._nodes.get(role)
        if node is None:
            raise ValueError(f"open a study with {what} first")
        return node

    def run_segmentation(self) -> None:
        """Start the worker and return at once: the click handler must not hold the connection,
        or Cancel (another click) would wait for the segmentation to end."""
        ct_node = self._require("ct", "a CT")
        if self.state.seg_running:
            raise ValueError("a segmentation is already running")
        site, model = self.state.seg_site, self.state.seg_model
        self._job = self.seg_logic.startJob(ct_node, site, model)
        self.state.seg_running = True
        self.state.seg_progress = 0
        self.state.seg_message = f"Starting {model}..."
        self.state.dice_rows = []
        self.state.can_export = False

        def on_progress(fraction: float, message: str) -> None:
            with self.state:
                self.state.seg_progress = round(100 * fraction)
                self.state.seg_message = message

        self._worker = WorkerProcess(self._job.command, self.seg_logic.parseProgressLine, on_progress, self._spare)
        task = self._guarded("Segmentation")(self._segmentation_task)
        self._seg_task = asyncio.ensure_future(
            task(self._job, self._worker, ct_node, model, time.perf_counter())
        )

    async def _segmentation_task(
        self, job: Any, worker: WorkerProcess, ct_node: Any, model: str, started: float
    ) -> None:
        """Wait for the worker, then show its ROIs and the review outlines, then the metrics.

        The run counts as running (Run disabled, no other study opened) until the metrics are shown;
        Cancel during the metrics drops them and the AI segmentation.
        """
        try:
            status, log = await worker.run()
            # the next run's worker imports while this one's contours and metrics are shown
            asyncio.ensure_future(self._spare.start())
            if worker.cancelled:
                job.cleanup()
            else:
                await self._show_segmentation(worker, ct_node, job.finish(status, log), model, started)
            if worker.cancelled:
                with self.state:
                    self.state.seg_message = "Cancelled."
                    self.state.seg_progress = 0
        finally:
            self._job = self._worker = None  # nothing of the run (its CT node, its folder) is kept
            with self.state:
                self.state.seg_running = False
            await self._spare.start()  # for the next run

    async def _show_segmentation(
        self, worker: WorkerProcess, ct_node: Any, rois: list[Any], model: str, started: float
    ) -> None:
        """The AI segmentation node with review outlines, while the metrics are computed off the loop.

        The metrics need only the masks (the worker's ROIs, on the CT grid, and the reference's, read
        from MRML here first), so a worker thread computes them while the loop builds the nodes.
        """
        from rtdeep.slicer.volume_node import grid_from_node

        self._remove_nodes("ai", "ai_metrics")
        reference = self._nodes.get("reference")
        metrics = None
        if reference is not None:
            grid = grid_from_node(ct_node)
            reference_rois = self.seg_logic.referenceRoisToCompare(reference, [roi.name for roi in rois], grid)
            compare = functools.partial(
                self.seg_logic.compareRois, reference_rois, rois, grid, reference.GetName(),
                self.seg_logic.segmentationName(ct_node, model),
            )
            metrics = asyncio.get_running_loop().run_in_executor(None, compare)
        result = self.seg_logic.showResults(ct_node, rois, model)
        ai = self._nodes["ai"] = result.segmentationNode
        self._show_structures(ai)
        rows: list[dict[str, Any]] = []
        if metrics is not None:
            self.seg_logic.showReviewOverlay(ai, reference)
            with self.state:
                self.state.seg_message = "Computing Dice, HD95 and surface Dice..."
            rows = await metrics
            if worker.cancelled:  # Cancel came while the metrics were computed
                self._remove_nodes("ai")
                return
            self._nodes["ai_metrics"] = self.seg_logic.showComparison(rows, ai, reference, ct_node)
        elapsed = time.perf_counter() - started
        with self.state:
            self.state.dice_rows = [
                {
                    "organ": row["roi_name"],
                    "dice": _fmt(row.get("dice"), 3),
                    "hd95": _fmt(row.get("hd95_mm"), 1),
                    "surface_dice": _fmt(row.get("surface_dice_2mm"), 3),
                    "volume_ref": _fmt(row.get("volume_ref_cc"), 1),
                    "volume_ai": _fmt(row.get("volume_test_cc"), 1),
                }
                for row in rows
            ]
            self.state.can_export = True
            self.state.export_name = f"RS.{model}.dcm"
            self.state.seg_seconds = round(elapsed, 1)
            self.state.seg_progress = 100
            self.state.seg_message = f"{len(rois)} structures from {model} in {elapsed:.1f} s" + (
                "" if reference is not None else " (no reference structures to compare with)"
            )

    def cancel_segmentation(self) -> None:
        """Stop the worker (or, once it has ended, drop the review metrics being computed)."""
        if self._job is None or self._worker is None or not self.state.seg_running:
            raise ValueError("no segmentation is running")
        self._worker.cancelled = True
        if not self._worker.finished:  # the process may have ended: its pid may be another's by now
            self._job.cancel(self._worker.pid)

    def export_rtstruct(self) -> Any:
        """The AI structures as an RTSTRUCT file, sent to the browser (``None`` on error)."""
        ai = self._require("ai", "AI contours (run the segmentation)")
        ct_node = self._require("ct", "a CT")
        target = Path(tempfile.mkdtemp(prefix="export-", dir=self.work_dir)) / self.state.export_name
        path = self.seg_logic.exportRtStruct(ai, ct_node, target)
        self.state.status_message = f"Exported {path.name} ({path.stat().st_size // 1024} kB)."
        return self.server.protocol.addAttachment(path.read_bytes())

    def export_dicom_seg(self) -> Any:
        """The AI structures as a DICOM SEG referencing the study's CT files, sent to the browser."""
        ai = self._require("ai", "AI contours (run the segmentation)")
        ct_node = self._require("ct", "a CT")
        model = self.state.export_name.removeprefix("RS.").removesuffix(".dcm")
        target = Path(tempfile.mkdtemp(prefix="export-", dir=self.work_dir)) / f"SEG.{model}.dcm"
        path = self.seg_logic.exportDicomSeg(ai, ct_node, target, self._study_folder, algorithmName=model)
        self.state.status_message = f"Exported {path.name} ({path.stat().st_size // 1024} kB)."
        return self.server.protocol.addAttachment(path.read_bytes())

    # -- RTPneumonitisPredictor -------------------------------------------------------------------
    def _pneumonitis(self) -> Any:
        """The logic's result for the current crop and threshold (computed once per setting)."""
        ct_node = self._require("ct", "a CT")
        dose_node = self._nodes.get("dose")
        if dose_node is None:
            raise ValueError("this study has no dose (RTDOSE); the pneumonitis panel needs one")
        reference = self._require("reference", "structures (RTSTRUCT)")
        lungs = ",".join(self.state.lung_segments or [])
        key = (str(self.state.crop_preset), float(self.state.crop_threshold), lungs)
        if self._pn_key != key:
            self._remove_nodes("crop", "saliency", "pn_table")
            result = self.pn_logic.process(ct_node, dose_node, reference, lungs, key[0], key[1])
            self._nodes["crop"] = result.cropVolumeNode
            if result.saliencyVolumeNode is not None:
                self._nodes["saliency"] = result.saliencyVolumeNode
            self._nodes["pn_table"] = result.tableNode
            self._pn_key, self._pn_result = key, result
        return self._pn_result

    async def run_crop(self) -> None:
        await self._flush_busy("Cropping...")
        result = self._pneumonitis()
        rows = {row["quantity"]: row for row in result.rows}
        volume = float(rows["crop volume"]["value"])
        self._show_overlay("crop")
        self.state.crop_volume_cc = volume
        self.state.crop_text = f"Crop {result.cropName}: {volume:.1f} cc"
        self.state.status_message = "Crop shown in green over the CT."

    async def predict_pneumonitis(self) -> None:
        await self._flush_busy("Predicting...")
        result = self._pneumonitis()
        rows = {row["quantity"]: row for row in result.rows}
        self.state.crop_volume_cc = float(rows["crop volume"]["value"])
        self.state.crop_text = f"Crop {result.cropName}: {self.state.crop_volume_cc:.1f} cc"
        if result.probability is None:
            self.state.risk_text = "Classifier risk not available: " + "; ".join(result.warnings)
        else:
            self.state.risk_text = (
                f"Risk of {self.constants['POSITIVE_CLASS']}: {100 * result.probability:.1f} %"
            )
        self.state.pn_figures = [
            {"name": row["quantity"], "value": f"{row['value']} {row['unit']}".strip()}
            for row in result.rows
            if row["quantity"] not in ("crop",)
        ]
        self.state.dvh_png = self._dvh_png(result)
        self._show_overlay("saliency" if "saliency" in self._nodes else "crop")
        self.state.status_message = "; ".join(result.warnings) if result.warnings else ""

    def _dvh_png(self, result: Any) -> str:
        """The normal-lung DVH of the logic's lung-dose report, drawn as a PNG data URL."""
        report = result.lungDoseReport
        if report is None:
            return ""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        dvh = report.dvh
        dose_gy = np.linspace(0.0, max(dvh.max_gy, 1.0) * 1.02, 200)
        volume_pct = [dvh.volume_at_dose_pct(dose) for dose in dose_gy]
        figure, axis = plt.subplots(figsize=(4.2, 2.8), dpi=100)
        axis.plot(dose_gy, volume_pct, color="tab:blue", label=f"normal lung (MLD {report.mld_gy:.1f} Gy)")
        threshold = float(self.state.crop_threshold)
        axis.axvline(threshold, color="tab:green", linestyle="--", label=f"crop threshold {threshold:g} Gy")
        axis.set_xlabel("dose (Gy)")
        axis.set_ylabel("volume (%)")
        axis.set_title("Cumulative DVH", fontsize=9)
        axis.set_ylim(0, 102)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        plt.close(figure)
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

    # -- layout -----------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        from trame.ui.vuetify3 import SinglePageWithDrawerLayout
        from trame.widgets import html
        from trame.widgets import vuetify3 as v
        from trame_slicer.core import LayoutManager
        from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

        self.layout_manager = LayoutManager(self.scene, self.slicer_app.view_manager, self.server)
        views = Layout(
            LayoutDirection.Vertical,
            [
                Layout(
                    LayoutDirection.Horizontal,
                    [ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.coronal_view()],
                ),
                Layout(
                    LayoutDirection.Horizontal,
                    [ViewLayoutDefinition.sagittal_view(), ViewLayoutDefinition.threed_view()],
                ),
            ],
        )
        self.layout_manager.register_layout("rtdeep", views)
        self.layout_manager.set_layout("rtdeep")

        guarded_load = self._guarded("Open study")(self.load_study)
        guarded_chunk = self._guarded("Upload")(self.upload_chunk)
        guarded_run = self._guarded("Segmentation")(self.run_segmentation)
        guarded_cancel = self._guarded("Cancel")(self.cancel_segmentation)
        guarded_export = self._guarded("Export RTSTRUCT")(self.export_rtstruct)
        guarded_crop = self._guarded("Crop")(self.run_crop)
        guarded_predict = self._guarded("Pneumonitis prediction")(self.predict_pneumonitis)
        chunk_trigger = self.server.trigger_name(guarded_chunk)
        export_trigger = self.server.trigger_name(guarded_export)
        seg_trigger = self.server.trigger_name(self._guarded("Export DICOM SEG")(self.export_dicom_seg))

        with SinglePageWithDrawerLayout(self.server, width=430) as layout:
            layout.title.set_text("rtdeep: AI contours and pneumonitis risk")
            with layout.toolbar:
                v.VSpacer()
                v.VProgressLinear(
                    indeterminate=True, absolute=True, location="bottom", color="green", v_show=("busy",)
                )
            with layout.drawer, html.Div(classes="pa-2", style="font-size: 0.85rem;"):
                v.VAlert(
                    "{{ error_message }}",
                    id="error-message",
                    v_show=("error_message",),
                    type="error",
                    density="compact",
                    closable=False,
                    classes="mb-2",
                )
                html.Div("{{ status_message }}", id="status-message", classes="text-caption mb-2")
                self._study_card(v, html, guarded_load, chunk_trigger)
                self._segmentation_card(v, html, guarded_run, guarded_cancel, export_trigger, seg_trigger)
                self._pneumonitis_card(v, html, guarded_crop, guarded_predict)
            with layout.content, html.Div(style="height: 100%; display: flex; position: relative;"):
                self.layout_manager.initialize_layout_grid(layout)
                with html.Div(
                    v_if=("legend",),
                    id="overlay-legend",
                    style="position: absolute; right: 8px; bottom: 8px; width: 220px; padding: 4px;"
                    "background: rgba(0,0,0,0.6); color: white; font-size: 0.75rem; z-index: 10;",
                ):
                    html.Div("{{ legend.title }}")
                    html.Div(style=("{ height: '10px', background: legend.gradient }",))
                    with html.Div(style="display: flex; justify-content: space-between;"):
                        html.Span("{{ legend.low }}")
                        html.Span("{{ legend.high }}")
        self.ui = layout

    def _study_card(self, v: Any, html: Any, load: Callable, chunk_trigger: str) -> None:
        with v.VCard(id="panel-study", classes="mb-2", variant="outlined"):
            v.VCardTitle("Study", classes="text-subtitle-1")
            with v.VCardText():
                v.VSelect(
                    id="study-folder",
                    label="Study folder (inside the data folder)",
                    items=("study_folders",),
                    v_model=("study_path",),
                    density="compact",
                    hide_details=True,
                )
                v.VTextField(
                    id="study-path",
                    label="or type a folder path relative to the data folder",
                    v_model=("study_path",),
                    density="compact",
                    hide_details=True,
                    classes="mt-1",
                )
                v.VBtn("Open study", id="load-study", click=load, disabled=("busy",), color="primary",
                       block=True, classes="mt-2")  # fmt: skip
                v.VFileInput(
                    id="upload-dicom",
                    label=("`or upload DICOM files (up to ${max_upload_mb} MB)`",),
                    multiple=True,
                    density="compact",
                    hide_details=True,
                    classes="mt-2",
                    change=(
                        "upload_mb = Array.from($event.target.files).reduce((s, f) => s + f.size, 0) / 1e6;"
                        " if (upload_mb > max_upload_mb) { error_message = 'Upload failed: '"
                        " + upload_mb.toFixed(1) + ' MB is over the limit of ' + max_upload_mb + ' MB'; }"
                        f" else {{ window.load_files_by_chunks($event.target.files, {{ trigger_name: '{chunk_trigger}' }}); }}"
                    ),
                )
                with html.Div(id="study-summary", classes="mt-2", v_show=("study_loaded",)):
                    html.Div("{{ line }}", v_for="line in study_summary", key="line")
                with html.Div(id="phase-panel", classes="mt-2", v_show=("phase_items.length",)):
                    v.VSelect(id="phase-select", label="4D CT phase shown", items=("phase_items",),
                              v_model=("phase_index",), density="compact", hide_details=True)  # fmt: skip
                    html.Div(
                        "{{ phase_items[phase_index]?.title }}", id="phase-label", classes="text-caption"
                    )

    def _segmentation_card(
        self, v: Any, html: Any, run: Callable, cancel: Callable, export_trigger: str, seg_trigger: str
    ) -> None:
        with v.VCard(id="panel-segmentation", classes="mb-2", variant="outlined"):
            v.VCardTitle("RTDeepSeg: AI contours", classes="text-subtitle-1")
            with v.VCardText():
                with html.Div(style="display: flex; gap: 4px;"):
                    v.VSelect(id="seg-site", label="Site", items=("seg_sites",), v_model=("seg_site",),
                              density="compact", hide_details=True, style="max-width: 120px;")  # fmt: skip
                    v.VSelect(id="seg-model", label="Model", items=("seg_models",), v_model=("seg_model",),
                              density="compact", hide_details=True)  # fmt: skip
                html.Div(
                    "{{ seg_model_info }}",
                    id="seg-model-info",
                    classes="text-caption mt-1",
                    style="white-space: pre-line;",
                )
                v.VAlert("{{ seg_model_warning }}", v_show=("seg_model_warning",), type="warning",
                         density="compact", classes="mt-1", id="seg-model-warning")  # fmt: skip
                with html.Div(style="display: flex; gap: 4px;", classes="mt-2"):
                    v.VBtn("Run", id="run-segmentation", click=run, color="primary",
                           disabled=("seg_running || !study_loaded || !seg_model",))  # fmt: skip
                    v.VBtn("Cancel", id="cancel-segmentation", click=cancel, disabled=("!seg_running",))
                    v.VBtn(
                        "Export RTSTRUCT",
                        id="export-rtstruct",
                        disabled=("!can_export",),
                        click=f"utils.download(export_name, trigger('{export_trigger}'), 'application/dicom')",
                    )
                v.VBtn(
                    "Export DICOM SEG",
                    id="export-seg",
                    disabled=("!can_export",),
                    classes="mt-1",
                    click=(
                        "utils.download(export_name.replace('RS.', 'SEG.'), "
                        f"trigger('{seg_trigger}'), 'application/dicom')"
                    ),
                )
                v.VProgressLinear(model_value=("seg_progress",), height=6, classes="mt-2", color="red")
                html.Div("{{ seg_message }}", id="seg-message", classes="text-caption")
                html.Div("Outlines: reference yellow, AI red.", classes="text-caption",
                         v_show=("dice_rows.length",))  # fmt: skip
                with v.VTable(id="dice-table", density="compact", v_show=("dice_rows.length",)):
                    with html.Thead(), html.Tr():
                        for title in ("Organ", "Dice", "HD95 mm", "sDice 2 mm", "Ref cc", "AI cc"):
                            html.Th(title)
                    with html.Tbody(), html.Tr(v_for="row in dice_rows", key="row.organ"):
                        for field in ("organ", "dice", "hd95", "surface_dice", "volume_ref", "volume_ai"):
                            html.Td(f"{{{{ row.{field} }}}}")

    def _pneumonitis_card(self, v: Any, html: Any, crop: Callable, predict: Callable) -> None:
        with v.VCard(id="panel-pneumonitis", classes="mb-2", variant="outlined"):
            v.VCardTitle("RTPneumonitisPredictor", classes="text-subtitle-1")
            with v.VCardText():
                v.VSelect(
                    id="lung-segments",
                    label="Lungs (empty: found by TG-263 name)",
                    items=("lung_segment_options",),
                    v_model=("lung_segments",),
                    multiple=True,
                    chips=True,
                    density="compact",
                    hide_details=True,
                    classes="mb-2",
                )
                v.VSelect(id="crop-preset", label="Crop", items=("crop_presets",), v_model=("crop_preset",),
                          density="compact", hide_details=True)  # fmt: skip
                v.VSlider(
                    id="crop-threshold",
                    label="Dose threshold (Gy)",
                    v_model=("crop_threshold",),
                    min=1,
                    max=60,
                    step=1,
                    thumb_label="always",
                    hide_details=True,
                    classes="mt-6",
                )
                with html.Div(style="display: flex; gap: 4px;"):
                    v.VBtn("Crop", id="run-crop", click=crop, disabled=("busy || !study_loaded",))
                    v.VBtn("Predict", id="predict-pneumonitis", click=predict, color="primary",
                           disabled=("busy || !study_loaded",))  # fmt: skip
                html.Div("{{ crop_text }}", id="crop-volume", classes="mt-2")
                html.Div("{{ risk_text }}", id="pneumonitis-risk", classes="text-subtitle-2 mt-1")
                with (
                    v.VTable(id="pneumonitis-figures", density="compact", v_show=("pn_figures.length",)),
                    html.Tbody(),
                    html.Tr(v_for="row in pn_figures", key="row.name"),
                ):
                    html.Td("{{ row.name }}")
                    html.Td("{{ row.value }}")
                html.Img(id="dvh-plot", src=("dvh_png",), v_show=("dvh_png",), style="width: 100%;")

    # -- life cycle -------------------------------------------------------------------------------
    def open_initial_study(self) -> None:
        """With ``--data`` pointing at one study, open it (errors show in the page)."""
        if self.data_root.is_single_study():
            self._guarded("Open study")(self._open_folder)(self.data_root.root, self.data_root.root.name)

    def cleanup(self) -> None:
        """Remove uploads and work files (called at exit)."""
        import shutil

        if self._job is not None and self._worker is not None and self.state.seg_running:
            self._job.cancel(None if self._worker.finished else self._worker.pid)
        self._spare.stop()
        self.uploads.cleanup()
        shutil.rmtree(self.work_dir, ignore_errors=True)
