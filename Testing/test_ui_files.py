"""The modules' Qt Designer files against their parameter nodes and widget code.

Two kinds of checks: the XML (every ``SlicerParameterName`` is a field of the module's
``@parameterNodeWrapper`` class, of a fitting widget kind; every ``self.ui.<name>`` the module uses
exists; every MRML widget gets the scene), and a smoke load with PySide6's ``QUiLoader`` offscreen
where the Slicer/CTK classes (qMRMLNodeComboBox, ctkCollapsibleButton, ...), which do not exist
outside Slicer, are registered as empty placeholder subclasses of their Designer base class (so Qt
warns that their signals, e.g. mrmlSceneChanged, do not exist). The real widgets' behaviour is only
checked inside Slicer (``<Module>/Testing/Python``).
"""

from __future__ import annotations

import ast
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["RTDeepSeg", "RTPneumonitisPredictor"]
#: parameters that Slicer's parameter node cannot bind, wired by hand in the widget: field -> widget
HAND_WIRED = {
    "RTDeepSeg": {"model": "modelComboBox"},
    "RTPneumonitisPredictor": {"lungSegmentIds": "lungSegmentSelectorWidget"},
}


def _module_source(module: str) -> str:
    return (ROOT / module / f"{module}.py").read_text()


def _parameter_fields(module: str) -> dict[str, str]:
    """Field name -> annotation source of the module's @parameterNodeWrapper class."""
    tree = ast.parse(_module_source(module))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            ast.unparse(d) == "parameterNodeWrapper" for d in node.decorator_list
        ):
            return {
                item.target.id: ast.unparse(item.annotation)
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
    raise AssertionError(f"{module}.py has no @parameterNodeWrapper class")


def _ui(module: str) -> ET.Element:
    return ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui").getroot()


def _widgets(module: str) -> dict[str, ET.Element]:
    return {widget.get("name"): widget for widget in _ui(module).iter("widget")}


def _parameter_names(module: str) -> dict[str, str]:
    """Widget name -> its SlicerParameterName dynamic property."""
    names = {}
    for name, widget in _widgets(module).items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", (
                    f"{name}: SlicerParameterName must be a dynamic property (stdset=0)"
                )
                names[name] = prop.findtext("string")
    return names


@pytest.mark.parametrize("module", MODULES)
def test_every_slicer_parameter_name_is_a_parameter_node_field(module):
    fields = _parameter_fields(module)
    bound = _parameter_names(module)
    assert bound, "no widget is bound to the parameter node"
    for widget, parameter in bound.items():
        assert parameter in fields, (
            f"{module}.ui widget {widget} binds unknown parameter '{parameter}' (fields: {sorted(fields)})"
        )
    assert len(set(bound.values())) == len(bound), "a parameter is bound to two widgets"


@pytest.mark.parametrize("module", MODULES)
def test_every_field_has_a_widget_bound_or_wired_by_hand(module):
    fields = _parameter_fields(module)
    bound = set(_parameter_names(module).values())
    widgets = _widgets(module)
    source = _module_source(module)
    for field in fields:
        if field in bound:
            continue
        widget = HAND_WIRED[module].get(field)
        assert widget, f"parameter '{field}' has no widget in {module}.ui"
        assert widget in widgets, f"hand-wired widget {widget} missing from {module}.ui"
        assert f"self.ui.{widget}" in source and f"_parameterNode.{field} =" in source, (
            f"{field} is not wired in {module}.py"
        )


@pytest.mark.parametrize("module", MODULES)
def test_widget_kinds_fit_the_field_types(module):
    fields = _parameter_fields(module)
    widgets = _widgets(module)
    for name, parameter in _parameter_names(module).items():
        widget, annotation = widgets[name], fields[parameter]
        kind = widget.get("class")
        if annotation.startswith("vtkMRML"):
            assert kind == "qMRMLNodeComboBox", f"{name} ({annotation})"
            node_types = [
                s.text
                for p in widget.findall("property")
                if p.get("name") == "nodeTypes"
                for s in p.iter("string")
            ]
            assert annotation in node_types, f"{name} offers {node_types}, parameter needs {annotation}"
        elif "Choice" in annotation:
            assert kind == "QComboBox", f"{name} ({annotation})"
        elif annotation.startswith("Annotated[float") or annotation == "float":
            assert kind in ("ctkSliderWidget", "QDoubleSpinBox", "ctkDoubleSpinBox"), f"{name} ({annotation})"
        elif annotation == "bool":
            assert kind == "QCheckBox", f"{name} ({annotation})"


@pytest.mark.parametrize("module", MODULES)
def test_module_code_uses_only_widgets_that_exist(module):
    used = set(re.findall(r"self\.ui\.(\w+)", _module_source(module)))
    missing = used - set(_widgets(module))
    assert not missing, f"{module}.py uses widgets not in {module}.ui: {sorted(missing)}"
    for required in ("applyButton", "progressBar"):
        assert required in _widgets(module)


@pytest.mark.parametrize("module", MODULES)
def test_mrml_widgets_receive_the_scene(module):
    root = _ui(module)
    receivers = {
        c.findtext("receiver")
        for c in root.iter("connection")
        if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    mrml_widgets = {
        name for name, w in _widgets(module).items() if w.get("class").startswith("qMRML") and name != module
    }
    assert mrml_widgets and mrml_widgets <= receivers, (
        f"without the scene: {sorted(mrml_widgets - receivers)}"
    )


@pytest.mark.parametrize("module", MODULES)
def test_module_file_has_the_template_classes_and_installs_nothing_at_import(module):
    tree = ast.parse(_module_source(module))
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {module, f"{module}ParameterNode", f"{module}Widget", f"{module}Logic", f"{module}Test"} <= classes
    assert '"Radiotherapy"' in _module_source(module)
    for node in tree.body:  # module-level statements: imports, classes, docstring only
        assert isinstance(node, (ast.Import, ast.ImportFrom, ast.ClassDef, ast.FunctionDef, ast.Expr)), (
            ast.unparse(node)[:80]
        )
        if isinstance(node, ast.Expr):
            assert isinstance(node.value, ast.Constant), "a module-level call would run at import"
    assert "tryWithErrorDisplay" in _module_source(module) and "connectGui" in _module_source(module)


@pytest.mark.parametrize("module", MODULES)
def test_cmake_lists_name_files_that_exist(module):
    text = (ROOT / module / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", module)
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text
    listed = re.findall(r"^\s+([\w/]+\.(?:py|ui|png))\s*$", text, flags=re.MULTILINE)
    assert f"{module}.py" in listed and f"Resources/UI/{module}.ui" in listed
    for relative in listed:
        assert (ROOT / module / relative).is_file(), f"{module}/CMakeLists.txt lists missing {relative}"
    lib = {p.relative_to(ROOT / module).as_posix() for p in (ROOT / module / f"{module}Lib").glob("*.py")}
    assert lib <= set(listed), f"not installed: {sorted(lib - set(listed))}"


def test_extension_cmake_lists_has_the_extension_fields():
    text = (ROOT / "CMakeLists.txt").read_text()
    for field in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
    ):
        assert re.search(rf"set\({field} \"[^\"]+\"\)", text), field
    assert (
        'set(EXTENSION_CATEGORY "Radiotherapy")' in text
        and 'set(EXTENSION_DEPENDS "SlicerRT PyTorch")' in text
    )
    for line in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(RTDeepSeg)",
                 "add_subdirectory(RTPneumonitisPredictor)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                 "include(${Slicer_EXTENSION_CPACK})"):  # fmt: skip
        assert line in text, line
    assert "rtdeep/*.py" in text  # the core package ships inside the extension
    from PIL import Image

    with Image.open(ROOT / "Resources" / "Icons" / "RTDeep.png") as icon:
        assert icon.size == (128, 128)


_PLACEHOLDERS: dict[str, type] = {}


@pytest.fixture(scope="module")
def qt_application():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtWidgets  # the 'test' extra: a missing install fails, it is not skipped

    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


@pytest.mark.parametrize("module", MODULES)
def test_ui_loads_in_qt_with_placeholder_slicer_widgets(qt_application, module):
    from PySide6 import QtWidgets
    from PySide6.QtCore import QFile
    from PySide6.QtUiTools import QUiLoader

    loader = QUiLoader()
    for custom in _ui(module).iter("customwidget"):
        name = custom.findtext("class")
        if name not in _PLACEHOLDERS:  # kept alive for the whole session: Qt holds raw pointers to them
            base = getattr(QtWidgets, custom.findtext("extends"), QtWidgets.QWidget)
            _PLACEHOLDERS[name] = type(name, (base,), {})
        loader.registerCustomWidget(_PLACEHOLDERS[name])
    ui_file = QFile(str(ROOT / module / "Resources" / "UI" / f"{module}.ui"))
    assert ui_file.open(QFile.ReadOnly)
    widget = loader.load(ui_file)
    ui_file.close()
    assert widget is not None, loader.errorString()
    assert widget.objectName() == module
    for name, parameter in _parameter_names(module).items():
        child = widget.findChild(QtWidgets.QWidget, name)
        assert child is not None, name
        assert child.property("SlicerParameterName") == parameter
    apply_button = widget.findChild(QtWidgets.QPushButton, "applyButton")
    assert apply_button.text() == "Apply" and not apply_button.isEnabled()
    assert widget.findChild(QtWidgets.QProgressBar, "progressBar") is not None
    widget.deleteLater()


_STAND_IN_SLICER = {
    "SlicerConfig.cmake": """
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
""",
    "Empty.cmake": "",
    "UseSlicer.cmake": """
function(_check_files dir)
  foreach(f ${ARGN})
    if(NOT EXISTS ${dir}/${f})
      message(FATAL_ERROR "missing ${dir}/${f}")
    endif()
  endforeach()
endfunction()
macro(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "" "TARGET_NAME;DESTINATION_DIR;INSTALL_DIR" "SCRIPTS;RESOURCES" ${ARGN})
  _check_files(${CMAKE_CURRENT_SOURCE_DIR} ${MY_SCRIPTS} ${MY_RESOURCES})
  message(STATUS "python-package ${MY_TARGET_NAME} ${MY_SCRIPTS}")
endmacro()
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  _check_files(${CMAKE_CURRENT_SOURCE_DIR} ${MY_SCRIPTS} ${MY_RESOURCES})
  message(STATUS "scripted-module ${MY_NAME} generic-tests=${MY_WITH_GENERIC_TESTS}")
endmacro()
macro(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT" "" ${ARGN})
  _check_files(${CMAKE_CURRENT_SOURCE_DIR} ${MY_SCRIPT})
  message(STATUS "python-unittest ${MY_SCRIPT}")
endmacro()
""",
}


def test_extension_configures_with_cmake_against_a_stand_in_slicer_package(tmp_path):
    """cmake parses every CMakeLists.txt and each file they name exists. The Slicer macros are
    stand-ins that only check and echo their arguments: a real build needs a Slicer build tree."""
    import shutil
    import subprocess

    cmake = shutil.which("cmake")
    assert cmake is not None, "cmake is not installed (.ci/setup installs it)"
    slicer_dir = tmp_path / "stand-in-slicer"
    slicer_dir.mkdir()
    for name, text in _STAND_IN_SLICER.items():
        (slicer_dir / name).write_text(text)
    done = subprocess.run(
        [cmake, "-S", str(ROOT), "-B", str(tmp_path / "build"), f"-DSlicer_DIR={slicer_dir}", "-DBUILD_TESTING=ON"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "scripted-module RTDeepSeg generic-tests=TRUE" in done.stdout
    assert "scripted-module RTPneumonitisPredictor generic-tests=TRUE" in done.stdout
    assert (
        "python-unittest RTDeepSeg.py" in done.stdout
        and "python-unittest RTPneumonitisPredictor.py" in done.stdout
    )
    packaged = re.search(r"python-package rtdeep (\S+)", done.stdout).group(1).split(";")
    assert {"rtdeep/volume.py", "rtdeep/slicer/worker.py", "rtdeep/slicer/segmentation_node.py"} <= set(
        packaged
    )
