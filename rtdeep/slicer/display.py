"""What the panels show besides segments: curves as a plot chart, a map as an overlay on the CT.

Both are plain MRML (no qt), so the desktop modules, the web app and pytest build the same nodes:

* :func:`plot_chart_node_from_curves`: one ``vtkMRMLTableNode`` holding the curves' points, one
  ``vtkMRMLPlotSeriesNode`` per curve (line, the curve's colour) and a ``vtkMRMLPlotChartNode``
  with axis titles; :func:`dvh_plot_chart_node` makes the cumulative DVH chart from rtdeep DVHs.
* :func:`show_as_overlay`: a scalar volume (e.g. the classifier's Grad-CAM) in a colour map,
  shown as the foreground of every slice view over its background CT, half transparent.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

__all__ = ["OVERLAY_COLOR_NODE_ID", "dvh_plot_chart_node", "plot_chart_node_from_curves", "show_as_overlay"]

#: colour map of overlays (a procedural table every scene has)
OVERLAY_COLOR_NODE_ID = "vtkMRMLColorTableNodeRainbow"


def plot_chart_node_from_curves(
    scene: slicer.vtkMRMLScene,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    name: str,
    *,
    x_title: str,
    y_title: str,
    colors_rgb: Mapping[str, tuple[int, int, int]] | None = None,
) -> slicer.vtkMRMLPlotChartNode:
    """A plot chart node with one line series per curve ``name -> (x values, y values)``.

    Args:
        scene: the MRML scene.
        curves: the curves, each two 1-D arrays of equal length.
        name: chart name (its table and series are named after it).
        x_title, y_title: axis titles (units in them).
        colors_rgb: line colour per curve (0-255); others keep the default.
    """
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} points")
    table = table_node.GetTable()
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    chart.SetTitle(name)
    chart.SetXAxisTitle(x_title)
    chart.SetYAxisTitle(y_title)
    length = max((len(x) for x, _ in curves.values()), default=0)
    for curve_name, (x_values, y_values) in curves.items():
        x_values, y_values = np.asarray(x_values, np.float64), np.asarray(y_values, np.float64)
        if x_values.shape != y_values.shape or x_values.ndim != 1:
            raise ValueError(f"curve '{curve_name}': x and y must be 1-D arrays of one length")
        for suffix, values in (("x", x_values), ("y", y_values)):
            padded = np.full(length, np.nan)
            padded[: values.size] = values
            column = numpy_support.numpy_to_vtk(padded, deep=True, array_type=vtk.VTK_DOUBLE)
            column.SetName(f"{curve_name} {suffix}")
            table.AddColumn(column)
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {curve_name}")
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName(f"{curve_name} x")
        series.SetYColumnName(f"{curve_name} y")
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        if colors_rgb and curve_name in colors_rgb:
            series.SetColor(*(channel / 255.0 for channel in colors_rgb[curve_name]))
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    table_node.Modified()
    return chart


def dvh_plot_chart_node(
    scene: slicer.vtkMRMLScene,
    dvhs: Mapping[str, object],
    name: str = "DVH",
    colors_rgb: Mapping[str, tuple[int, int, int]] | None = None,
) -> slicer.vtkMRMLPlotChartNode:
    """Cumulative DVHs (dose in Gy against % of the structure's volume) as one plot chart.

    Args:
        dvhs: structure name -> :class:`rtdeep.dvh.DVH`.
        colors_rgb: line colour per structure; by default the organ table's (:mod:`rtdeep.sites`).
    """
    from rtdeep.sites import ORGANS

    curves = {}
    for roi_name, dvh in dvhs.items():
        dose_gy, volume_cc = dvh.cumulative_cc()  # type: ignore[attr-defined]
        total = float(volume_cc[0]) if len(volume_cc) and volume_cc[0] > 0 else 1.0
        curves[roi_name] = (np.asarray(dose_gy), 100.0 * np.asarray(volume_cc) / total)
    colours = dict(colors_rgb or {name_: ORGANS[name_].color_rgb for name_ in dvhs if name_ in ORGANS})
    return plot_chart_node_from_curves(scene, curves, name, x_title="Dose (Gy)", y_title="Volume (%)",
                                       colors_rgb=colours)


def show_as_overlay(
    overlay_node: slicer.vtkMRMLScalarVolumeNode,
    background_node: slicer.vtkMRMLScalarVolumeNode,
    opacity: float = 0.4,
    color_node_id: str = OVERLAY_COLOR_NODE_ID,
) -> None:
    """Show ``overlay_node`` in a colour map over ``background_node`` in every slice view.

    The overlay's display gets the colour map and a window over its whole range with the lowest
    tenth transparent (threshold), so only the map's hot part covers the CT.
    """
    scene = overlay_node.GetScene()
    if overlay_node.GetDisplayNode() is None:
        overlay_node.CreateDefaultDisplayNodes()
    display = overlay_node.GetDisplayNode()
    if scene.GetNodeByID(color_node_id) is not None:
        display.SetAndObserveColorNodeID(color_node_id)
    low, high = overlay_node.GetImageData().GetScalarRange()
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(low, high)
    display.SetApplyThreshold(True)
    display.SetLowerThreshold(low + 0.1 * (high - low))
    display.SetUpperThreshold(high)
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        composite.SetBackgroundVolumeID(background_node.GetID())
        composite.SetForegroundVolumeID(overlay_node.GetID())
        composite.SetForegroundOpacity(float(opacity))
