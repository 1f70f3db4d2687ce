"""Rows of values (metrics, DVH figures, predictions) <-> vtkMRMLTableNode."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import slicer
import vtk

__all__ = ["rows_from_table_node", "table_node_from_rows"]


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, Real) and not isinstance(value, bool))


def table_node_from_rows(
    scene: slicer.vtkMRMLScene,
    rows: Sequence[Mapping[str, Any]],
    name: str,
    *,
    node: slicer.vtkMRMLTableNode | None = None,
) -> slicer.vtkMRMLTableNode:
    """A table node with one row per mapping and one column per key (first-seen order).

    A column whose values are all numbers (or None, stored as NaN) is a double column; any other
    column is a string column. Units belong in the column names (``dice``, ``hd95_mm``).

    Args:
        scene: the MRML scene.
        rows: the rows; keys missing from a row are empty (NaN or "").
        name: node name (made unique by the scene if taken).
        node: fill this existing table node instead of adding a new one (its columns are replaced).
    """
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    was_modifying = node.StartModify()
    table = node.GetTable()
    while table.GetNumberOfColumns():
        table.RemoveColumn(0)
    for column in columns:
        values = [row.get(column) for row in rows]
        if all(_is_number(value) for value in values):
            array = vtk.vtkDoubleArray()
            for value in values:
                array.InsertNextValue(math.nan if value is None else float(value))
        else:
            array = vtk.vtkStringArray()
            for value in values:
                array.InsertNextValue("" if value is None else str(value))
        array.SetName(column)
        table.AddColumn(array)
    table.Modified()
    node.EndModify(was_modifying)
    return node


def rows_from_table_node(node: slicer.vtkMRMLTableNode) -> list[dict[str, Any]]:
    """The table as a list of dicts (floats for numeric columns, str otherwise)."""
    table = node.GetTable()
    rows: list[dict[str, Any]] = [{} for _ in range(table.GetNumberOfRows())]
    for column_index in range(table.GetNumberOfColumns()):
        array = table.GetColumn(column_index)
        name = array.GetName()
        numeric = isinstance(array, vtk.vtkDataArray)
        for row_index, row in enumerate(rows):
            row[name] = float(array.GetValue(row_index)) if numeric else str(array.GetValue(row_index))
    return rows
