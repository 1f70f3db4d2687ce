"""Run a segmentation network over a whole image on the model grid.

3D networks slide a window over the volume (MONAI ``sliding_window_inference``); 2.5D networks
see each axial slice with its ``context_slices - 1`` neighbours as channels (edges repeat the end
slice) and are run on batches of slices. Arrays are ``[k, j, i]``; outputs are class
probabilities ``[classes, k, j, i]`` (softmax), float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rtdeep.models.architectures import DEFAULT_INFERENCE_WINDOW
from rtdeep.progress import ProgressCallback

__all__ = ["ModelGridInferer", "predict_probabilities", "slice_stack"]


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
    overlap: float = 0.25,
    slice_batch: int = 16,
    size_divisor: int = 16,
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
        progress_callback: called with (fraction done 0-1, message).

    Returns:
        float32 ``[classes, k, j, i]``.
    """
    network.eval()
    if spatial_dims == 3:
        from monai.inferers import sliding_window_inference

        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
        # a window never larger than the (padded) image, and always divisible by size_divisor
        roi = [min(int(r), _round_up(int(s), size_divisor)) for r, s in zip(roi_size, image.shape, strict=True)]

        def predictor(batch: torch.Tensor) -> torch.Tensor:
            return torch.softmax(network(batch), dim=1)

        windows = _n_windows(image.shape, roi, overlap)
        done = [0]

        def counting_predictor(batch: torch.Tensor) -> torch.Tensor:
            out = predictor(batch)
            done[0] += batch.shape[0]
            if progress_callback is not None:
                progress_callback(min(done[0] / windows, 1.0), "segmenting (3D sliding window)")
            return out

        probabilities = sliding_window_inference(
            tensor, roi, sw_batch_size=1, predictor=counting_predictor, overlap=overlap, mode="constant"
        )
        return probabilities[0].float().cpu().numpy()
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


def _round_up(value: int, divisor: int) -> int:
    return -(-value // divisor) * divisor


def _n_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    count = 1
    for size, window in zip(shape, roi, strict=True):
        step = max(int(window * (1 - overlap)), 1)
        count *= max(int(np.ceil((size - window) / step)) + 1, 1) if size > window else 1
    return count


class ModelGridInferer:
    """A MONAI ``Inferer``-style callable (``inferer(inputs, network)``) for bundle configs.

    It runs :func:`predict_probabilities` on a batch ``[1, 1, k, j, i]`` (model grid, windowed) and
    returns softmax probabilities ``[1, classes, k, j, i]``, so ``monai.bundle`` runs a bundle's
    3D sliding window or 2.5D slice stacks exactly as rtdeep does (see ``configs/inference.json``).

    Args:
        spatial_dims, context_slices, roi_size, overlap, slice_batch, size_divisor: as in
            :func:`predict_probabilities` (a bundle's ``rtdeep.inference`` metadata).
    """

    def __init__(self, spatial_dims: int, context_slices: int = 1, roi_size: Sequence[int] = DEFAULT_INFERENCE_WINDOW,
                 overlap: float = 0.25, slice_batch: int = 16, size_divisor: int = 16) -> None:
        self.settings = {"spatial_dims": int(spatial_dims), "context_slices": int(context_slices),
                         "roi_size": tuple(int(r) for r in roi_size), "overlap": float(overlap),
                         "slice_batch": int(slice_batch), "size_divisor": int(size_divisor)}

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module) -> torch.Tensor:
        if inputs.shape[0] != 1 or inputs.shape[1] != 1:
            raise ValueError(f"expected one single-channel image [1, 1, k, j, i], got {tuple(inputs.shape)}")
        device = str(inputs.device)
        image = inputs[0, 0].detach().cpu().float().numpy()
        probabilities = predict_probabilities(network, image, device=device, **self.settings)  # type: ignore[arg-type]
        return torch.from_numpy(probabilities)[None].to(inputs.device)
