"""Training patches: foreground-biased crops of cases on the model grid, with MONAI augmentation.

3D patches are ``[k, j, i]`` boxes; 2.5D patches are a centre slice plus neighbours as channels,
cropped in-plane. Two thirds of the patches are centred on a voxel of a randomly chosen organ
(organs drawn uniformly, so small organs such as the cord are seen as often as the lungs).

Each patch is augmented by :func:`augmentation` (MONAI dictionary transforms on image and label):
affine (rotation, scaling, shift), elastic deformation, simulated low resolution, bias field,
gamma, contrast/offset, Gaussian noise and blur. Probabilities and ranges are in the function.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rtdeep.inference.predict import slice_stack
from rtdeep.training.data import SegCase

__all__ = ["PatchSampler", "augmentation"]


def augmentation(spatial_dims: int, seed: int = 0):  # -> monai.transforms.Compose
    """Training augmentation of one patch ``{"image": [c, *spatial], "label": [1, *spatial]}``.

    The image is the windowed CT in [0, 1] (for the thorax window 0.01 is 16 HU). Spatial
    transforms move image and label together (label: nearest neighbour); intensity transforms
    touch the image only. Scanner variety itself (slice thickness, kernel, noise, contrast, streaks)
    is already in the phantoms (:mod:`rtdeep.phantom.scanner`); these add the variety a scanner
    model does not draw.

    Args:
        spatial_dims: 3 (``[k, j, i]`` patches) or 2 (2.5D: slices as channels, ``[j, i]``).
        seed: random state of every transform (deterministic batches).
    """
    from monai.transforms import (
        Compose,
        Rand2DElasticd,
        Rand3DElasticd,
        RandAdjustContrastd,
        RandAffined,
        RandBiasFieldd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSimulateLowResolutiond,
    )

    keys = ("image", "label")
    modes = ("bilinear", "nearest")
    if spatial_dims == 3:
        # in-plane rotation (about k) up to 10 degrees, small tilts; patient size +-15 %
        affine = RandAffined(keys, prob=0.5, rotate_range=(0.17, 0.05, 0.05), scale_range=(0.15, 0.15, 0.15),
                             translate_range=(2, 4, 4), mode=modes, padding_mode="zeros")
        elastic = Rand3DElasticd(keys, sigma_range=(5, 8), magnitude_range=(40, 120), prob=0.1, mode=modes,
                                 padding_mode="zeros")
    else:
        affine = RandAffined(keys, prob=0.5, rotate_range=0.17, scale_range=(0.15, 0.15), translate_range=(6, 6),
                             mode=modes, padding_mode="zeros")
        elastic = Rand2DElasticd(keys, spacing=(24, 24), magnitude_range=(1, 3), prob=0.2, mode=modes,
                                 padding_mode="zeros")
    transforms = Compose([
        affine,
        elastic,
        RandSimulateLowResolutiond(("image",), prob=0.15, zoom_range=(0.5, 1.0),
                                   upsample_mode="trilinear" if spatial_dims == 3 else "bilinear"),
        RandBiasFieldd(("image",), prob=0.15, coeff_range=(0.0, 0.08)),
        RandAdjustContrastd(("image",), prob=0.2, gamma=(0.8, 1.25)),
        RandScaleIntensityd(("image",), factors=0.08, prob=0.3),
        RandShiftIntensityd(("image",), offsets=0.02, prob=0.3),
        RandGaussianSmoothd(("image",), sigma_x=(0.25, 0.8), sigma_y=(0.25, 0.8), sigma_z=(0.0, 0.5), prob=0.15),
        RandGaussianNoised(("image",), prob=0.3, std=0.015),
    ])
    transforms.set_random_state(seed=seed)
    return transforms


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
        augment: apply :func:`augmentation` to every patch.
    """

    def __init__(
        self,
        cases: Sequence[SegCase],
        spatial_dims: int,
        patch_size: Sequence[int],
        context_slices: int = 1,
        seed: int = 0,
        foreground_fraction: float = 0.67,
        augment: bool = True,
    ) -> None:
        if not cases:
            raise ValueError("no training cases")
        self.cases = list(cases)
        self.spatial_dims = spatial_dims
        self.patch_size = tuple(int(p) for p in patch_size)
        self.context_slices = context_slices
        self.rng = np.random.default_rng(seed)
        self.foreground_fraction = foreground_fraction
        self.transforms = augmentation(spatial_dims, seed) if augment else None
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
            if self.transforms is not None:
                out = self.transforms({"image": image.astype(np.float32), "label": label.astype(np.float32)})
                image, label = np.asarray(out["image"], np.float32), np.asarray(out["label"])
            images.append(image.astype(np.float32))
            labels.append(np.rint(label).astype(np.int64))
        return np.stack(images), np.stack(labels)
