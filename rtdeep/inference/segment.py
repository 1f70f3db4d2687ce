"""Segment a CT with a bundled model: the Python API behind ``rtdeep segment`` and the Slicer module.

Steps: take the CT in a head-first-supine CT's axes (:meth:`~rtdeep.volume.Volume.lps_ordered`: a
feet-first, prone or sagittal series reordered, no value interpolated), crop it to the body
(HU > -500), resample to the model spacing (trilinear, anti-aliased), window, run the network (3D
sliding window or 2.5D slice batches; an ensemble bundle runs each member on its own model grid
and averages their probabilities on the ensemble's grid, resampled trilinearly where a member's grid
differs; a later member on the ensemble's grid runs only inside the box of the organs the earlier
ones found plus 25 mm, see :func:`_organ_box`), take the most probable class, post-process each organ
on the model grid (largest connected component, a compact organ's strands trimmed, holes filled;
:mod:`rtdeep.inference.postprocess`), then resample each organ back onto
the CT grid (trilinear on the organ's softmax inside its bounding box, held above 0.5 inside the
cleaned mask and below it outside, > 0.5; see :func:`model_mask_to_ct`). Masks are bool ``[k, j, i]``
on the CT grid; geometry is LPS.

Example:
    >>> from rtdeep.bundles import load_bundle
    >>> bundle = load_bundle("thorax_unet3d")                 # doctest: +SKIP
    >>> rois = segment_volume(ct_series.volume, bundle)       # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from rtdeep.bundles import LoadedBundle
from rtdeep.dicomrt.types import Roi
from rtdeep.errors import BundleError
from rtdeep.inference.postprocess import clean_organ_mask
from rtdeep.inference.predict import predict_probabilities
from rtdeep.inference.preprocess import body_box, crop_volume, rows_columns_box, tissue_level, window_hu
from rtdeep.models.architectures import DEFAULT_INFERENCE_OVERLAP, DEFAULT_INFERENCE_WINDOW
from rtdeep.progress import ProgressCallback, report_progress, scaled_progress
from rtdeep.resample import resample_box_to_grid, resample_to_spacing, sample_on_grid
from rtdeep.volume import Volume

__all__ = ["model_mask_to_ct", "predict_model_grid", "segment_volume"]


def _check_config(bundle: LoadedBundle) -> None:
    config = bundle.config
    if config.get("kind") != "segmentation":
        raise BundleError(f"model kind is '{config.get('kind')}', not 'segmentation'", path=bundle.path)
    required = ("spacing_mm", "intensity_window", "labels") + (() if bundle.members else ("inference",))
    for key in required:
        if key not in config:
            raise BundleError(f"metadata rtdeep.{key} is missing", path=bundle.path / "configs/metadata.json")


def predict_model_grid(
    ct: Volume,
    bundle: LoadedBundle,
    device: str | None = None,
    progress_callback: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities on the model grid; an ensemble's is the mean of its members'.

    Returns:
        (softmax probabilities float32 ``[classes, k, j, i]`` on the model grid, its index
        (i, j, k) -> LPS affine); the most probable class is ``argmax(axis=0)``.
    """
    _check_config(bundle)
    networks = bundle.members or (bundle,)
    for member in bundle.members:
        _check_config(member)
    device = device or bundle.device
    ordered = ct.lps_ordered()  # a feet-first, prone or sagittal CT in a head-first-supine CT's axes (a view)
    cropped = crop_volume(ordered, body_box(ordered))
    grid = tuple(float(v) for v in bundle.config["spacing_mm"])
    images = {grid: resample_to_spacing(cropped, grid)}  # the CT on each model grid, resampled once
    image = images[grid]

    total, share = None, 0.8 / len(networks)  # each network's share of the progress bar
    for index, member in enumerate(networks):
        settings = member.config["inference"]
        member_grid = tuple(float(v) for v in member.config["spacing_mm"])
        if member_grid not in images:
            images[member_grid] = resample_to_spacing(cropped, member_grid)
        member_image = images[member_grid].array
        # a later member on the ensemble's grid looks only where the members so far found organs
        box = None if total is None or member_grid != grid else _organ_box(total, grid)
        probabilities = predict_probabilities(
            member.network,
            window_hu(member_image if box is None else member_image[box], bundle.config["intensity_window"]),
            spatial_dims=int(settings["spatial_dims"]),
            context_slices=int(settings.get("context_slices", 1)),
            roi_size=settings.get("roi_size", DEFAULT_INFERENCE_WINDOW),
            overlap=float(settings.get("overlap", DEFAULT_INFERENCE_OVERLAP)),
            slice_batch=int(settings.get("slice_batch", 16)),
            size_divisor=int(settings.get("size_divisor", 16)),
            tissue_level=tissue_level(bundle.config["intensity_window"]),
            device=device,
            progress_callback=scaled_progress(progress_callback, 0.05 + share * index, 0.05 + share * (index + 1)),
        )
        if box is not None:  # background outside the box, where the members so far found none either
            inside = probabilities
            probabilities = np.zeros((inside.shape[0], *member_image.shape), np.float32)
            probabilities[0] = 1.0
            probabilities[(slice(None), *box)] = inside
        if member_grid != grid:
            probabilities = _onto_grid(probabilities, images[member_grid].affine, image)
        total = probabilities if total is None else np.add(total, probabilities, out=total)
    if len(networks) > 1:
        total /= np.float32(len(networks))
    return total, image.affine


#: how far beyond the organs found by an ensemble's first members its later ones look (mm)
ORGAN_BOX_MARGIN_MM = 25.0


def _organ_box(probabilities: np.ndarray, spacing_mm: tuple[float, float, float]) -> tuple[slice, slice, slice] | None:
    """Rows and columns (all slices, as :func:`body_box`) of the voxels whose most probable class
    is an organ in the summed probabilities ``[classes, k, j, i]``, plus :data:`ORGAN_BOX_MARGIN_MM`;
    None when no voxel is.

    A thorax CT's body box is as wide as the arms and the couch; the organs span about half of it.
    An ensemble's fine-grid member (four times the pixels of a 2.5 mm one) runs only in this box:
    outside it the members so far saw background with a margin of 25 mm, and the later member's
    probabilities there are taken as background (the argmax cannot change)."""
    margin_j, margin_i = (int(np.ceil(ORGAN_BOX_MARGIN_MM / spacing_mm[axis])) for axis in (1, 0))
    organ = probabilities[1:].max(axis=0) > probabilities[0]  # argmax != 0, without the index search
    return rows_columns_box(organ, margin_j, margin_i)


def _onto_grid(probabilities: np.ndarray, affine: np.ndarray, target: Volume) -> np.ndarray:
    """A member's class probabilities (``[classes, k, j, i]`` on ``affine``'s grid) on ``target``'s
    grid, trilinear; a target voxel the member's grid does not cover is background."""
    out = np.empty((probabilities.shape[0], *target.shape), np.float32)
    for value, channel in enumerate(probabilities):
        out[value], _ = sample_on_grid(Volume(channel, affine), target.affine, target.shape, fill=float(value == 0))
    return out


#: how far from 0.5 the probability field is held on either side of the organ's boundary
_MARGIN = np.float32(1e-3)


def model_mask_to_ct(
    organ: np.ndarray, model_affine: np.ndarray, ct: Volume, probability: np.ndarray | None = None
) -> np.ndarray:
    """One organ's bool mask on the model grid -> bool mask on ``ct``'s grid.

    The field resampled (trilinear, inside the organ's bounding box plus one voxel, > 0.5 on the CT
    grid) is the 0/1 mask, or with ``probability`` (the organ's softmax on the model grid) that
    probability held above 0.5 inside the mask and below it outside: every model-grid voxel keeps its
    class (and the mask its topology after clean-up), and between voxel centres the boundary falls
    where the network's probability crosses 0.5 instead of half-way (a sub-voxel boundary, as nnU-Net
    gets by resampling probabilities). All false for an empty organ.
    """
    mask = np.zeros(ct.shape, bool)
    hits = [np.flatnonzero(organ.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if all(hit.size for hit in hits):
        box = tuple(
            slice(max(int(hit[0]) - 1, 0), min(int(hit[-1]) + 2, organ.shape[axis]))
            for axis, hit in enumerate(hits)
        )
        field = np.zeros(organ.shape, np.float32)
        if probability is None:
            field[box] = organ[box]
        else:
            inside, p = organ[box], np.asarray(probability[box], np.float32)
            field[box] = np.where(inside, np.maximum(p, 0.5 + _MARGIN), np.minimum(p, 0.5 - _MARGIN))
        target_box, values = resample_box_to_grid(field, model_affine, box, ct)
        mask[target_box] = values > 0.5
    return mask


def segment_volume(
    ct: Volume,
    bundle: LoadedBundle,
    device: str | None = None,
    progress_callback: ProgressCallback | None = None,
    postprocess: bool = True,
) -> list[Roi]:
    """Segment the bundle's organs on ``ct``.

    Args:
        ct: CT in HU (``[k, j, i]``, LPS affine), e.g. ``read_ct_series(folder).volume``.
        bundle: a loaded segmentation bundle (:func:`rtdeep.bundles.load_bundle`).
        device: torch device (default: the bundle's).
        progress_callback: called with (fraction 0-1, message).
        postprocess: keep each organ's largest component, trim a compact organ's strands and fill
            its holes (:mod:`rtdeep.inference.postprocess`).

    Returns:
        One :class:`Roi` per bundle label (TG-263 name, colour, type, ``AUTOMATIC``), masks bool on
        the CT grid; an organ not found has an all-false mask.
    """
    report_progress(progress_callback, 0.0, "preparing the CT")
    probabilities, model_affine = predict_model_grid(ct, bundle, device, progress_callback)
    labels = probabilities.argmax(axis=0)
    model_spacing_kji = tuple(float(s) for s in np.linalg.norm(model_affine[:3, :3], axis=0)[::-1])
    rois = []
    for index, (value, organ_spec) in enumerate(bundle.labels.items()):
        organ = labels == value
        if postprocess:
            organ = clean_organ_mask(organ, model_spacing_kji if organ_spec.compact else None)
        mask = model_mask_to_ct(organ, model_affine, ct, probabilities[value])
        rois.append(
            Roi(
                name=organ_spec.name,
                mask=mask,
                number=value,
                color_rgb=organ_spec.color_rgb,
                interpreted_type=organ_spec.interpreted_type,
                generation_algorithm="AUTOMATIC",
            )
        )
        report_progress(progress_callback, 0.85 + 0.15 * (index + 1) / len(bundle.labels), f"resampling {organ_spec.name}")
    return rois
