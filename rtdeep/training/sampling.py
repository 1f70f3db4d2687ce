"""Training patches: foreground-biased crops of cases on the model grid, with intensity augmentation.

3D patches are ``[k, j, i]`` boxes; 2.5D patches are a centre slice plus neighbours as channels,
cropped in-plane. Two thirds of the patches are centred on a voxel of a randomly chosen organ
(organs drawn uniformly, so small organs such as the cord are seen as often as the lungs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rtdeep.inference.predict import slice_stack
from rtdeep.training.data import SegCase

__all__ = ["PatchSampler", "augment_intensity"]


def augment_intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random contrast (x0.9-1.1), brightness (+-0.05) and Gaussian noise (sd up to 0.02); float32."""
    scale = rng.uniform(0.9, 1.1)
    shift = rng.uniform(-0.05, 0.05)
    noise = rng.normal(0.0, rng.uniform(0.0, 0.02), size=image.shape).astype(np.float32)
    return (image * scale + shift + noise).astype(np.float32)


def _crop(array: np.ndarray, start: Sequence[int], size: Sequence[int], fill: float) -> np.ndarray:
    """Crop ``array`` at ``start`` (may reach outside: padded with ``fill``)."""
    out = np.full(tuple(size), fill, dtype=array.dtype)
    src, dst = [], []
    for axis, (s, n) in enumerate(zip(start, size, strict=True)):
        lo, hi = max(s, 0), min(s + n, array.shape[axis])
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - s, lo - s + max(hi - lo, 0)))
    out[tuple(dst)] = array[tuple(src)]
    return out


class PatchSampler:
    """Draw training batches from cases.

    Args:
        cases: prepared cases.
        spatial_dims: 3 or 2 (2.5D).
        patch_size: ``(k, j, i)`` for 3D or ``(j, i)`` for 2.5D, model voxels.
        context_slices: 2.5D input channels.
        seed: RNG seed (deterministic batches).
        foreground_fraction: share of patches centred on an organ voxel.
    """

    def __init__(
        self,
        cases: Sequence[SegCase],
        spatial_dims: int,
        patch_size: Sequence[int],
        context_slices: int = 1,
        seed: int = 0,
        foreground_fraction: float = 0.67,
    ) -> None:
        if not cases:
            raise ValueError("no training cases")
        self.cases = list(cases)
        self.spatial_dims = spatial_dims
        self.patch_size = tuple(int(p) for p in patch_size)
        self.context_slices = context_slices
        self.rng = np.random.default_rng(seed)
        self.foreground_fraction = foreground_fraction
        # voxel lists per case and organ, computed once
        self._organ_voxels = [
            {int(v): np.argwhere(case.labels == v) for v in np.unique(case.labels) if v > 0} for case in self.cases
        ]

    def _centre(self, case_index: int) -> np.ndarray:
        case = self.cases[case_index]
        organs = self._organ_voxels[case_index]
        if organs and self.rng.random() < self.foreground_fraction:
            voxels = organs[int(self.rng.choice(list(organs)))]
            return voxels[self.rng.integers(len(voxels))]
        return np.array([self.rng.integers(n) for n in case.labels.shape])

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """A batch: images ``[b, channels, *patch]`` float32 and labels ``[b, 1, *patch]`` int64."""
        images, labels = [], []
        for _ in range(batch_size):
            case_index = int(self.rng.integers(len(self.cases)))
            case = self.cases[case_index]
            centre = self._centre(case_index)
            if self.spatial_dims == 3:
                start = [int(c) - p // 2 for c, p in zip(centre, self.patch_size, strict=True)]
                image = _crop(case.image, start, self.patch_size, 0.0)[None]
                label = _crop(case.labels, start, self.patch_size, 0)[None]
            else:
                k = int(centre[0])
                start = [int(c) - p // 2 for c, p in zip(centre[1:], self.patch_size, strict=True)]
                stack = slice_stack(case.image, [k], self.context_slices)[0]
                image = np.stack([_crop(channel, start, self.patch_size, 0.0) for channel in stack])
                label = _crop(case.labels[k], start, self.patch_size, 0)[None]
            images.append(augment_intensity(image, self.rng))
            labels.append(label.astype(np.int64))
        return np.stack(images), np.stack(labels)
