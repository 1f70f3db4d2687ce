"""Painting implicit shapes into a Hounsfield-unit array with partial-volume edges."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rtdeep.phantom.grid import Block, GridSpec
from rtdeep.phantom.shapes import ramp

__all__ = ["Canvas", "SdFunction"]

#: (x, y, z) broadcast coordinate arrays in mm -> signed distance in mm (negative inside)
SdFunction = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class Canvas:
    """A CT under construction: HU array ``[k, j, i]`` on ``grid`` plus named bool masks.

    Args:
        grid: the sampling grid.
        edge_mm: width of the partial-volume ramp at every tissue boundary (about one voxel plus
            the scanner's point-spread function).
        background_hu: value outside everything (air).
    """

    def __init__(self, grid: GridSpec, edge_mm: float, background_hu: float = -1000.0) -> None:
        self.grid = grid
        self.edge_mm = float(edge_mm)
        self.hu = np.full(grid.shape, background_hu, dtype=np.float32)
        self.masks: dict[str, np.ndarray] = {}
        #: dense objects that cast streaks (:class:`rtdeep.phantom.scanner.StreakSource`), registered by the anatomy
        self.streaks: list = []

    def mask(self, name: str) -> np.ndarray:
        """The bool mask ``name`` (all False if never painted)."""
        if name not in self.masks:
            self.masks[name] = np.zeros(self.grid.shape, dtype=bool)
        return self.masks[name]

    def block(self, bbox: tuple[np.ndarray, np.ndarray]) -> Block | None:
        return self.grid.block(bbox[0], bbox[1])

    def paint(
        self,
        block: Block,
        sd: np.ndarray,
        value: float | np.ndarray,
        *,
        mask_name: str | None = None,
        within: np.ndarray | None = None,
        edge_mm: float | None = None,
        opacity: float | np.ndarray = 1.0,
    ) -> np.ndarray:
        """Blend ``value`` into the block where ``sd`` < 0, with a soft edge.

        Args:
            block: where ``sd`` was evaluated.
            sd: signed distance (mm) broadcastable to the block.
            value: HU (scalar or array broadcastable to the block).
            mask_name: also record ``sd < 0`` (and ``within``) in this mask (union).
            within: bool array of the block's shape restricting the paint (e.g. the lung).
            edge_mm: ramp width (default: the canvas's).
            opacity: extra factor on the occupancy (thin structures).

        Returns:
            The occupancy in [0, 1] that was used.
        """
        sd = np.broadcast_to(sd, block.shape)
        occ = ramp(sd, edge_mm or self.edge_mm)
        if not np.isscalar(opacity) or opacity != 1.0:
            occ = occ * np.float32(opacity) if np.isscalar(opacity) else occ * opacity
        if within is not None:
            occ = occ * within
        target = self.hu[block.index]
        target += occ * (np.float32(value) - target) if np.isscalar(value) else occ * (value - target)
        if mask_name is not None:
            inside = sd < 0
            if within is not None:
                inside &= within
            self.mask(mask_name)[block.index] |= inside
        return occ

    def paint_shape(self, sd_function: SdFunction, bbox: tuple[np.ndarray, np.ndarray], value: float,
                    **kwargs: object) -> Block | None:
        """Evaluate ``sd_function`` on the block covering ``bbox`` and paint it (see :meth:`paint`)."""
        block = self.block(bbox)
        if block is None:
            return None
        self.paint(block, sd_function(block.x, block.y, block.z), value, **kwargs)  # type: ignore[arg-type]
        return block
