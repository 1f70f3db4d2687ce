"""A real MRML scene without the Slicer desktop application (for pytest and the web app).

``slicer-core`` (PyPI) ships Slicer's MRML and module logics but no ``slicer.app``, no
``slicer.mrmlScene`` and no ``slicer.modules``. :func:`build_scene` makes what the application would:
a ``vtkMRMLScene`` with a ``vtkSlicerApplicationLogic``, default colour tables and the module logics
this extension uses (Colors, SubjectHierarchy, Volumes, Segmentations, Tables, CropVolume), registered
on the application logic under their module names; it sets ``slicer.mrmlScene``. In the desktop
application all of that already exists and this module is not used.
"""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import slicer
import vtk

from rtdeep.fileio import ensure_new_path

__all__ = ["TestingScene", "build_scene", "load_scene_mrb", "save_scene_mrb"]

# Module name -> logic class, in the order the application creates them.
_MODULE_LOGICS = {
    "SubjectHierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
    "Volumes": "vtkSlicerVolumesLogic",
    "Segmentations": "vtkSlicerSegmentationsModuleLogic",
    "Tables": "vtkSlicerTablesLogic",
    "CropVolume": "vtkSlicerCropVolumeLogic",
}


@dataclass
class TestingScene:
    """The scene and the logics that serve it (keep this object alive while the scene is used)."""

    __test__ = False  # not a pytest test class

    scene: slicer.vtkMRMLScene
    app_logic: slicer.vtkSlicerApplicationLogic
    logics: dict[str, vtk.vtkObject] = field(default_factory=dict)

    def logic(self, module_name: str) -> vtk.vtkObject:
        """The logic of a module (``"Segmentations"``, ``"Volumes"``, ...)."""
        return self.logics[module_name]

    def clear(self) -> None:
        """Remove every data node (keeps singletons such as colour tables)."""
        self.scene.Clear(0)


def build_scene(*, set_global: bool = True) -> TestingScene:
    """A new scene with application logic, colour tables and module logics.

    Args:
        set_global: also set ``slicer.mrmlScene`` (as the desktop application does), so code written
            for Slicer (``slicer.mrmlScene.AddNewNodeByClass``) runs unchanged.
    """
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.GetColorLogic().SetMRMLScene(scene)
    app_logic.GetColorLogic().AddDefaultColorNodes()
    app_logic.SetSliceLogics(vtk.vtkCollection())
    app_logic.SetViewLogics(vtk.vtkCollection())
    logics: dict[str, vtk.vtkObject] = {"Colors": app_logic.GetColorLogic()}
    for module_name, class_name in _MODULE_LOGICS.items():
        logic_class = getattr(slicer, class_name, None)
        if logic_class is None:  # a slicer-core build without this module
            continue
        logic = logic_class()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(module_name, logic)
        logics[module_name] = logic
    if set_global:
        slicer.mrmlScene = scene
    return TestingScene(scene=scene, app_logic=app_logic, logics=logics)


def save_scene_mrb(scene: slicer.vtkMRMLScene, path: str | Path, *, overwrite: bool = False) -> Path:
    """Save the scene and all its data as a Medical Reality Bundle (``.mrb``, a zip archive).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        OSError: MRML could not write the bundle.
    """
    path = ensure_new_path(Path(path).resolve(), overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    scene.SetRootDirectory(str(path.parent))
    # vtkArchive reports every zipped file on the VTK output window; keep the console readable.
    previous_window = vtk.vtkOutputWindow.GetInstance()
    vtk.vtkOutputWindow.SetInstance(vtk.vtkStringOutputWindow())
    try:
        written = scene.WriteToMRB(str(path))
    finally:
        vtk.vtkOutputWindow.SetInstance(previous_window)
    if not written:
        raise OSError(f"{path}: MRML could not write the scene bundle")
    return path


def load_scene_mrb(scene: slicer.vtkMRMLScene, path: str | Path) -> None:
    """Replace the scene's content with a ``.mrb`` bundle (extracted to a temporary folder)."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="rtdeep-mrb-") as folder, zipfile.ZipFile(path) as archive:
        archive.extractall(folder)
        scene_files = sorted(Path(folder).rglob("*.mrml"))
        if not scene_files:
            raise OSError(f"{path}: no .mrml scene file inside the bundle")
        scene.Clear(0)
        scene.SetURL(str(scene_files[0]))
        if not scene.Import():
            raise OSError(f"{path}: MRML could not read the scene bundle")
