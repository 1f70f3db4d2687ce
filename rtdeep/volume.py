"""A 3D image with explicit geometry: the one data type every layer of rtdeep shares.

Array order is ``[k, j, i]`` (slice, row, column): the order of Slicer's ``arrayFromVolume`` and
SimpleITK's ``GetArrayFromImage``. The 4x4 ``affine`` maps a voxel index ``(i, j, k, 1)`` to patient
LPS millimetres (the DICOM patient coordinate system). A voxel index addresses the voxel *centre*.
Masks are bool arrays on a Volume's grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LPS_TO_RAS", "Volume", "affine_from_geometry", "lps_from_ras_affine", "ras_from_lps_affine"]

#: 4x4 matrix turning LPS millimetres into RAS millimetres (x and y negated; its own inverse). The
#: one place rtdeep changes between DICOM's LPS and the RAS of Slicer and NIfTI.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ras_from_lps_affine(affine_lps: np.ndarray) -> np.ndarray:
    """Index-to-LPS affine -> index-to-RAS matrix (4x4), as Slicer's IJKToRAS and NIfTI expect."""
    return LPS_TO_RAS @ np.asarray(affine_lps, dtype=np.float64)


def lps_from_ras_affine(ijk_to_ras: np.ndarray) -> np.ndarray:
    """Index-to-RAS matrix -> index-to-LPS affine (4x4)."""
    return LPS_TO_RAS @ np.asarray(ijk_to_ras, dtype=np.float64)


def affine_from_geometry(
    origin_lps: np.ndarray | tuple[float, float, float],
    spacing_mm: np.ndarray | tuple[float, float, float],
    direction: np.ndarray | None = None,
) -> np.ndarray:
    """Build the index-to-LPS affine.

    Args:
        origin_lps: LPS position (mm) of the centre of voxel (0, 0, 0).
        spacing_mm: voxel size along i (columns), j (rows), k (slices), in mm.
        direction: 3x3 matrix whose columns are the unit LPS directions of i, j and k
            (identity for an axial head-first-supine CT).

    Returns:
        4x4 float64 affine.
    """
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(spacing_mm, dtype=np.float64)[None, :]
    affine[:3, 3] = np.asarray(origin_lps, dtype=np.float64)
    return affine


@dataclass(frozen=True, eq=False)
class Volume:
    """An array ``[k, j, i]`` with its index-to-LPS affine.

    Example:
        >>> v = Volume(np.zeros((10, 20, 30), np.float32), affine_from_geometry((0, 0, 0), (1, 1, 3)))
        >>> v.spacing_mm
        array([1., 1., 3.])
    """

    array: np.ndarray
    affine: np.ndarray

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume array must be 3D [k, j, i], got shape {self.array.shape}")
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"Volume affine must be 4x4, got {affine.shape}")
        object.__setattr__(self, "affine", affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(n_slices, n_rows, n_columns)``."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        """Grid size in index order ``(n_i, n_j, n_k)``."""
        k, j, i = self.array.shape
        return (i, j, k)

    @property
    def spacing_mm(self) -> np.ndarray:
        """Voxel size along i, j, k in mm."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def slice_z_mm(self) -> np.ndarray:
        """Patient z (LPS, mm; superior is positive) of each slice ``k`` of an axial volume (the z of
        its voxel (0, 0, k))."""
        return self.affine[2, 3] + self.affine[2, 2] * np.arange(self.shape[0])

    @property
    def origin_lps(self) -> np.ndarray:
        """LPS position (mm) of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are unit LPS direction vectors of i, j, k."""
        return self.affine[:3, :3] / self.spacing_mm[None, :]

    @property
    def voxel_volume_cc(self) -> float:
        """Volume of one voxel in cm^3."""
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Map indices ``(..., 3)`` in (i, j, k) order to LPS mm ``(..., 3)``."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def lps_to_index(self, lps: np.ndarray) -> np.ndarray:
        """Map LPS mm ``(..., 3)`` to continuous (i, j, k) indices ``(..., 3)``."""
        lps = np.asarray(lps, dtype=np.float64)
        inverse = np.linalg.inv(self.affine)
        return lps @ inverse[:3, :3].T + inverse[:3, 3]

    def with_array(self, array: np.ndarray) -> Volume:
        """A Volume on the same grid holding ``array`` (same shape required)."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} does not match grid {self.array.shape}")
        return Volume(array, self.affine)

    def same_grid(self, other: Volume, tolerance_mm: float = 1e-3) -> bool:
        """True when ``other`` has the same shape and (within tolerance) the same affine."""
        return self.shape == other.shape and bool(
            np.allclose(self.affine, other.affine, atol=tolerance_mm)
        )

    def bounds_lps(self) -> tuple[np.ndarray, np.ndarray]:
        """Min and max LPS corner (mm) over the voxel centres of the grid."""
        n_i, n_j, n_k = self.size_ijk
        corners = np.array(
            [[i, j, k] for i in (0, n_i - 1) for j in (0, n_j - 1) for k in (0, n_k - 1)], dtype=np.float64
        )
        points = self.index_to_lps(corners)
        return points.min(axis=0), points.max(axis=0)

    def is_axis_aligned(self, tolerance: float = 1e-4) -> bool:
        """True when the grid axes are the LPS axes (possibly flipped), as in an axial CT."""
        direction = np.abs(self.direction)
        return bool(np.allclose(direction, np.round(direction), atol=tolerance))

    @property
    def patient_position(self) -> str:
        """PatientPosition (0018,5100) of an axial CT on this grid: HFS (rows run to the patient's
        left, columns posterior), FFS (rows to the right), HFP (both reversed) or FFP (columns
        anterior); HFS for a grid that is not axial."""
        row, column = self.direction[:, 0], self.direction[:, 1]
        if abs(row[0]) < 0.9 or abs(column[1]) < 0.9:
            return "HFS"
        return {(True, True): "HFS", (False, True): "FFS", (False, False): "HFP", (True, False): "FFP"}[
            (bool(row[0] > 0), bool(column[1] > 0))]

    def lps_ordered(self) -> Volume:
        """The same voxels with the array axes reordered and reversed so that i, j and k run as
        closely as the grid allows along +x (patient left), +y (posterior) and +z (superior): the
        axes of a head-first-supine axial CT. No value is interpolated and every voxel keeps its LPS
        position; ``self`` itself when its axes already run that way.

        A feet-first CT has i reversed (i runs to the patient's right), a prone one i and j, a
        sagittal or coronal series its axes permuted. Networks trained on head-first-supine CTs see
        every patient this way (:func:`rtdeep.resample.model_grid_affine`); a grid whose axes lie at
        45 degrees to the LPS axes has no closest order and is returned as it is.
        """
        direction = self.direction
        along = np.argmax(np.abs(direction), axis=0)  # the LPS axis each index axis (i, j, k) runs along most
        reversed_axes = [c for c in range(3) if direction[along[c], c] < 0]
        if sorted(along.tolist()) != [0, 1, 2] or (not reversed_axes and along.tolist() == [0, 1, 2]):
            return self
        array, affine = self.array, self.affine.copy()
        for c in reversed_axes:  # index axis c is array axis 2 - c
            affine[:3, 3] += affine[:3, c] * (array.shape[2 - c] - 1)
            affine[:3, c] = -affine[:3, c]
            array = np.flip(array, axis=2 - c)
        source = np.argsort(along)  # new index axis a is old index axis source[a]
        ordered = np.eye(4)
        ordered[:3, :3], ordered[:3, 3] = affine[:3, source], affine[:3, 3]
        return Volume(np.transpose(array, [2 - source[2 - x] for x in range(3)]), ordered)
