"""Run a segmentation network over a whole image on the model grid.

3D networks slide a window over the volume (:func:`sliding_window`, placed and averaged as MONAI's
``sliding_window_inference`` with constant weights, without importing MONAI); 2.5D networks
see each axial slice with its ``context_slices - 1`` neighbours as channels (edges repeat the end
slice) and are run on batches of slices. Arrays are ``[k, j, i]``; outputs are class
probabilities ``[classes, k, j, i]`` (softmax), float32.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch

from rtdeep.inference.preprocess import open_thin_sheets
from rtdeep.models.architectures import DEFAULT_INFERENCE_OVERLAP, DEFAULT_INFERENCE_WINDOW
from rtdeep.progress import ProgressCallback

__all__ = ["ModelGridInferer", "predict_probabilities", "slice_stack", "sliding_window", "tissue_slabs"]


def slice_stack(image: np.ndarray, centres: Sequence[int], context_slices: int) -> np.ndarray:
    """``[len(centres), context_slices, j, i]``: each centre slice with its neighbours (edges repeated)."""
    half = context_slices // 2
    n_slices = image.shape[0]
    index = np.clip(np.asarray(centres)[:, None] + np.arange(-half, half + 1)[None, :], 0, n_slices - 1)
    return image[index]


@torch.no_grad()
def predict_probabilities(
    network: torch.nn.Module,
    image: np.ndarray,
    *,
    spatial_dims: int,
    context_slices: int = 1,
    roi_size: Sequence[int] = DEFAULT_INFERENCE_WINDOW,
    overlap: float = DEFAULT_INFERENCE_OVERLAP,
    slice_batch: int = 16,
    size_divisor: int = 16,
    tissue_level: float | None = None,
    device: str = "cpu",
    progress_callback: ProgressCallback | None = None,
) -> np.ndarray:
    """Softmax class probabilities of ``network`` over ``image`` (model grid, windowed to [0, 1]).

    Args:
        network: a module in eval mode on ``device``.
        image: float32 ``[k, j, i]``.
        spatial_dims: 3 (sliding window) or 2 (2.5D slices).
        context_slices: 2.5D channels (adjacent slices, centre predicted).
        roi_size: 3D sliding window size ``(k, j, i)`` in model voxels.
        overlap: sliding window overlap fraction.
        slice_batch: 2.5D slices per forward pass.
        size_divisor: the network needs spatial sizes divisible by this (2 ** strided levels); the
            input is zero-padded to fit and the output cropped back.
        tissue_level: 3D only: the windowed value above which a voxel is tissue (patient, couch).
            Each slab of windows (one window's slices) then covers only the rows and columns where
            that slab has tissue thicker than a couch top's skins (:func:`tissue_slabs`); the rest
            of the slab is background. A head and neck CT's body box is as wide as the shoulders,
            its head about half as wide: 10 windows instead of 18 on the benchmark CT. None: every
            slab covers the whole image.
        progress_callback: called with (fraction done 0-1, message).

    Returns:
        float32 ``[classes, k, j, i]``.
    """
    network.eval()
    if spatial_dims == 3:
        return _sliding_window_3d(network, image, roi_size, overlap, size_divisor, tissue_level, device,
                                  progress_callback)
    out: np.ndarray | None = None
    n_slices, n_rows, n_cols = image.shape
    padded = np.pad(
        image, ((0, 0), (0, _round_up(n_rows, size_divisor) - n_rows), (0, _round_up(n_cols, size_divisor) - n_cols))
    )
    for start in range(0, n_slices, slice_batch):
        centres = list(range(start, min(start + slice_batch, n_slices)))
        stack = torch.from_numpy(np.ascontiguousarray(slice_stack(padded, centres, context_slices), np.float32))
        logits = network(stack.to(device))[:, :, :n_rows, :n_cols]
        probabilities = torch.softmax(logits, dim=1).float().cpu().numpy()
        if out is None:
            out = np.empty((probabilities.shape[1], *image.shape), np.float32)
        out[:, centres[0] : centres[-1] + 1] = probabilities.transpose(1, 0, 2, 3)
        if progress_callback is not None:
            progress_callback((centres[-1] + 1) / n_slices, "segmenting (2.5D slices)")
    assert out is not None
    return out


def _sliding_window_3d(network: torch.nn.Module, image: np.ndarray, roi_size: Sequence[int], overlap: float,
                       size_divisor: int, tissue_level: float | None, device: str,
                       progress_callback: ProgressCallback | None) -> np.ndarray:
    """:func:`predict_probabilities` of a 3D network: the sliding window over the image, or over each
    slab's tissue box (:func:`tissue_slabs`) when ``tissue_level`` is given."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
    # a window never larger than the (padded) image, and always divisible by size_divisor
    roi = [min(int(r), _round_up(int(s), size_divisor)) for r, s in zip(roi_size, image.shape, strict=True)]
    whole = tuple(slice(0, n) for n in image.shape)
    slabs = [(whole[0], whole)] if tissue_level is None else tissue_slabs(image, tissue_level, roi, overlap)
    windows = sum(_n_windows([b.stop - b.start for b in box], roi, overlap) for _, box in slabs if box is not None)
    done = [0]

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        out = torch.softmax(network(batch), dim=1)
        done[0] += batch.shape[0]
        if progress_callback is not None:
            progress_callback(min(done[0] / max(windows, 1), 1.0), "segmenting (3D sliding window)")
        return out

    def slide(box: tuple[slice, ...]) -> np.ndarray:
        probabilities = sliding_window(tensor[(slice(None), slice(None), *box)], roi, overlap, predictor)
        return probabilities[0].float().cpu().numpy()

    if tissue_level is None:
        return slide(whole)
    total: np.ndarray | None = None
    slabs_per_slice, air_slabs = np.zeros(image.shape[0], np.float32), []
    for slab, box in slabs:  # each slab's probabilities: the network's in its box, background elsewhere
        slabs_per_slice[slab] += 1.0
        if box is None:
            air_slabs.append(slab)
            continue
        inside = slide(box)
        if total is None:
            total = np.zeros((inside.shape[0], *image.shape), np.float32)
        total[0, slab] += 1.0
        total[(slice(None), *box)] += inside
        total[(0, *box)] -= 1.0
    if total is None:  # no tissue anywhere
        total = np.zeros((_n_classes(network, tensor, roi, device), *image.shape), np.float32)
    for slab in air_slabs:
        total[0, slab] += 1.0
    total /= slabs_per_slice[None, :, None, None]
    return total


def sliding_window(inputs: torch.Tensor, roi: Sequence[int], overlap: float,
                   predictor: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The mean of ``predictor`` over the windows of size ``roi`` that cover ``inputs`` ``[batch,
    channels, *spatial]``, one window per call: what MONAI's ``sliding_window_inference`` returns
    with ``mode="constant"`` and zero padding. An axis shorter than its window is padded on both
    sides (the larger half after) and cropped back; windows start every ``roi * (1 - overlap)``
    voxels, the last one flush with the end (:func:`_window_starts`).
    """
    spatial = tuple(int(size) for size in inputs.shape[2:])
    shortfall = [max(int(window) - size, 0) for window, size in zip(roi, spatial, strict=True)]
    padding = [side for missing in reversed(shortfall) for side in (missing // 2, missing - missing // 2)]
    padded = torch.nn.functional.pad(inputs, padding) if any(shortfall) else inputs
    starts = [_window_starts(int(size), int(window), overlap)
              for size, window in zip(padded.shape[2:], roi, strict=True)]
    total: torch.Tensor | None = None
    count = torch.zeros(padded.shape[2:], dtype=torch.float32, device=inputs.device)
    for corner in itertools.product(*starts):
        window = tuple(slice(start, start + int(size)) for start, size in zip(corner, roi, strict=True))
        out = predictor(padded[(slice(None), slice(None), *window)])
        if total is None:
            total = torch.zeros((*out.shape[:2], *padded.shape[2:]), dtype=torch.float32, device=inputs.device)
        total[(slice(None), slice(None), *window)] += out
        count[window] += 1.0
    assert total is not None
    total /= count
    unpadded = (slice(missing // 2, missing // 2 + size) for missing, size in zip(shortfall, spatial, strict=True))
    return total[(slice(None), slice(None), *unpadded)]


#: margin (model voxels) around a slab's tissue, in rows and columns, as :func:`body_box` keeps
TISSUE_MARGIN = 4
#: radius (model voxels) of the opening that removes thin sheets from a slab's tissue (:func:`tissue_slabs`)
THIN_STRUCTURE = 2


def _window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Where MONAI's sliding window puts its windows along one axis of ``size`` voxels (the last one
    flush with the end; one window when the axis is no longer than it)."""
    if size <= window:
        return [0]
    step = max(int(window * (1 - overlap)), 1)
    count = int(np.ceil((size - window) / step)) + 1
    return [min(n * step, size - window) for n in range(count)]


def _slab_slices(n_slices: int, window_slices: int, overlap: float) -> list[slice]:
    """The slices of each slab of 3D windows, placed as MONAI's sliding window places them along k."""
    if n_slices <= window_slices:
        return [slice(0, n_slices)]
    return [slice(start, start + window_slices) for start in _window_starts(n_slices, window_slices, overlap)]


#: share of a slice's largest piece of tissue under which a separate piece is not the patient
SMALL_PIECE = 0.02


def _slice_tissue(plane: np.ndarray) -> np.ndarray:
    """The patient's tissue on one slice: ``plane`` (bool) without sheets thinner than a disk of
    radius :data:`THIN_STRUCTURE` and without pieces under :data:`SMALL_PIECE` of its largest."""
    from scipy import ndimage

    tissue = open_thin_sheets(plane, THIN_STRUCTURE, THIN_STRUCTURE)
    labels, n = ndimage.label(tissue)
    if n <= 1:
        return tissue
    areas = np.bincount(labels.ravel())[1:]
    keep = np.concatenate([[False], areas >= SMALL_PIECE * areas.max()])
    return keep[labels]


def tissue_slabs(image: np.ndarray, tissue_level: float, roi: Sequence[int],
                 overlap: float) -> list[tuple[slice, tuple[slice, slice, slice] | None]]:
    """Each slab of 3D windows (slices placed as MONAI's sliding window places them along k) and
    the box ``[k, j, i]`` its windows cover: the rows and columns where the slab has tissue (values
    above ``tissue_level``) plus :data:`TISSUE_MARGIN`, widened about their centre to one window
    where the image allows. The box is None for a slab without tissue.

    Structures too thin for a disk of radius :data:`THIN_STRUCTURE` voxels on their slice do not
    count as tissue: a couch top's carbon-fibre skins (1-3 mm over foam) are as wide as the field of
    view and would otherwise widen every box to it (and a slab of couch alone, beyond the patient,
    gets no windows). Each slice is opened before the slab's projection: a thermoplastic mask's
    shell is thin on every slice, but its projection over a slab's slices (it follows the head's
    outline as that grows and shrinks) is a band as thick as the outline moves. Pieces under
    :data:`SMALL_PIECE` of a slice's largest piece do not count either: the rigid rim of a mask's frame
    beside the head, a marker, a cable (an arm beside the chest is larger)."""
    slabs: list[tuple[slice, tuple[slice, slice, slice] | None]] = []
    tissue_by_slice = np.stack([_slice_tissue(plane > tissue_level) for plane in image])
    for slab in _slab_slices(image.shape[0], roi[0], overlap):
        tissue = tissue_by_slice[slab].any(axis=0)
        rows, columns = np.flatnonzero(tissue.any(axis=1)), np.flatnonzero(tissue.any(axis=0))
        if rows.size == 0:
            slabs.append((slab, None))
            continue
        box = [slab]
        for present, size, window in ((rows, image.shape[1], roi[1]), (columns, image.shape[2], roi[2])):
            start, stop = max(int(present[0]) - TISSUE_MARGIN, 0), min(int(present[-1]) + 1 + TISSUE_MARGIN, size)
            need = min(window, size)
            if stop - start < need:  # one window, centred on the tissue, inside the image
                start = min(max((start + stop - need) // 2, 0), size - need)
                stop = start + need
            box.append(slice(start, stop))
        slabs.append((slab, tuple(box)))  # type: ignore[arg-type]
    return slabs


def _n_classes(network: torch.nn.Module, tensor: torch.Tensor, roi: Sequence[int], device: str) -> int:
    """The network's output channels (for an image with no tissue anywhere)."""
    probe = torch.zeros((1, tensor.shape[1], *roi), device=device)
    return int(network(probe).shape[1])


def _round_up(value: int, divisor: int) -> int:
    return -(-value // divisor) * divisor


def _n_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    return int(np.prod([len(_window_starts(size, window, overlap)) for size, window in zip(shape, roi, strict=True)]))


class ModelGridInferer:
    """A MONAI ``Inferer``-style callable (``inferer(inputs, network)``) for bundle configs.

    It runs :func:`predict_probabilities` on a batch ``[1, 1, k, j, i]`` (model grid, windowed) and
    returns softmax probabilities ``[1, classes, k, j, i]``, so ``monai.bundle`` runs a bundle's
    3D sliding window or 2.5D slice stacks exactly as rtdeep does (see ``configs/inference.json``).

    Args:
        spatial_dims, context_slices, roi_size, overlap, slice_batch, size_divisor, tissue_level: as
            in :func:`predict_probabilities` (a bundle's ``rtdeep.inference`` metadata; the tissue
            level from its intensity window).
    """

    def __init__(self, spatial_dims: int, context_slices: int = 1, roi_size: Sequence[int] = DEFAULT_INFERENCE_WINDOW,
                 overlap: float = DEFAULT_INFERENCE_OVERLAP, slice_batch: int = 16, size_divisor: int = 16,
                 tissue_level: float | None = None) -> None:
        self.settings = {"spatial_dims": int(spatial_dims), "context_slices": int(context_slices),
                         "roi_size": tuple(int(r) for r in roi_size), "overlap": float(overlap),
                         "slice_batch": int(slice_batch), "size_divisor": int(size_divisor),
                         "tissue_level": None if tissue_level is None else float(tissue_level)}

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module) -> torch.Tensor:
        if inputs.shape[0] != 1 or inputs.shape[1] != 1:
            raise ValueError(f"expected one single-channel image [1, 1, k, j, i], got {tuple(inputs.shape)}")
        device = str(inputs.device)
        image = inputs[0, 0].detach().cpu().float().numpy()
        probabilities = predict_probabilities(network, image, device=device, **self.settings)  # type: ignore[arg-type]
        return torch.from_numpy(probabilities)[None].to(inputs.device)
