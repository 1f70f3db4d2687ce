"""Multi-atlas segmentation: register each atlas to the CT, pull its labels across, vote.

This is the talk's comparator (commercial contouring tools are atlas based). Steps, for a CT on
any grid (LPS affine, ``[k, j, i]``):

1. crop rows and columns to the patient (HU > -500) and resample to 4 mm (the registration grid);
2. register every atlas CT to it (affine + demons, :func:`rtdeep.atlas.register.register_atlas`);
3. carry each atlas's label map onto a vote grid (the cropped CT at ``max(CT spacing, 2 mm)``)
   with nearest-neighbour interpolation and count the votes per organ;
4. resample each organ's vote fraction trilinearly onto the CT grid and keep voxels where a strict
   majority agrees (fraction > 0.5), the organ with the most votes winning an overlap.
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk

from rtdeep.atlas.library import ATLAS_SPACING_MM, load_atlases
from rtdeep.atlas.names import ATLAS_MODELS, atlas_site
from rtdeep.atlas.register import register_atlas, to_sitk
from rtdeep.dicomrt.types import CtSeries, Roi
from rtdeep.dvh import bounding_box
from rtdeep.errors import RtDeepError
from rtdeep.progress import ProgressCallback, report_progress
from rtdeep.sites import SITES
from rtdeep.volume import Volume

__all__ = ["ATLAS_MODELS", "DEFAULT_N_ATLASES", "VOTE_SPACING_MM", "atlas_site", "segment_with_atlas"]

log = logging.getLogger(__name__)

#: atlases registered per CT by default (odd, so a strict majority always exists)
DEFAULT_N_ATLASES = 5
#: finest spacing (mm) of the grid the votes are counted on
VOTE_SPACING_MM = 2.0
def _reference_image(affine: np.ndarray, shape_kji: tuple[int, int, int]) -> sitk.Image:
    return to_sitk(Volume(np.zeros(shape_kji, np.uint8), affine), np.uint8)


def segment_with_atlas(
    ct: Volume | CtSeries,
    site: str,
    n_atlases: int = DEFAULT_N_ATLASES,
    progress_callback: ProgressCallback | None = None,
    *,
    demons_iterations: int = 60,
) -> list[Roi]:
    """Contour the organs of ``site`` on ``ct`` by multi-atlas registration and majority voting.

    Args:
        ct: the CT (HU ``[k, j, i]``, LPS affine), or a CtSeries.
        site: ``"thorax"`` (Lung_L, Lung_R, Heart, Esophagus, SpinalCord) or ``"headneck"``
            (Parotid_L/R, Glnd_Submand_L/R, Mandible, Brainstem, SpinalCord).
        n_atlases: atlases to register (phantoms 0..n-1 of the atlas seed; odd is best).
        progress_callback: called with (fraction done 0-1, message).
        demons_iterations: deformable iterations per atlas (0 = affine only).

    Returns:
        One :class:`Roi` per organ found (TG-263 name, site colour, interpreted type ORGAN,
        generation algorithm AUTOMATIC), masks on ``ct``'s grid; organs that no majority of
        atlases placed on the CT are left out (logged).

    Example:
        >>> rois = segment_with_atlas(ct_volume, "thorax", n_atlases=3)  # doctest: +SKIP
        >>> [roi.name for roi in rois]  # doctest: +SKIP
        ['Lung_L', 'Lung_R', 'Heart', 'Esophagus', 'SpinalCord']
    """
    from rtdeep.inference.preprocess import body_box, crop_volume
    from rtdeep.resample import model_grid_affine, resample_box_to_grid, resample_to_spacing

    volume = ct.volume if isinstance(ct, CtSeries) else ct
    site = str(site).strip().lower()
    if site not in SITES:
        raise RtDeepError(f"no atlas for site '{site}'; expected one of {', '.join(SITES)}")
    organ_names = SITES[site].organ_names
    report_progress(progress_callback, 0.0, "loading atlases")
    atlases = load_atlases(site, n_atlases)

    ordered = volume.lps_ordered()  # a feet-first, prone or sagittal CT in a head-first-supine CT's axes (a view)
    body = crop_volume(ordered, body_box(ordered))
    fixed = resample_to_spacing(body, (ATLAS_SPACING_MM,) * 3)
    vote_affine, vote_shape = model_grid_affine(body, np.maximum(body.spacing_mm, VOTE_SPACING_MM))
    vote_reference = _reference_image(vote_affine, vote_shape)
    votes = np.zeros((len(organ_names), *vote_shape), np.uint8)
    for number, atlas in enumerate(atlases):
        report_progress(progress_callback, 0.05 + 0.85 * number / len(atlases), f"registering atlas {number + 1}/{len(atlases)}")
        transform = register_atlas(fixed, atlas.ct, demons_iterations=demons_iterations)
        warped = sitk.Resample(
            to_sitk(atlas.labels, np.uint8), vote_reference, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
        )
        labels = sitk.GetArrayFromImage(warped)
        for value, name in enumerate(atlas.organ_names, start=1):
            votes[organ_names.index(name)] += labels == value

    report_progress(progress_callback, 0.92, "fusing labels")
    label_map = np.zeros(volume.shape, np.uint8)
    best = np.zeros(volume.shape, np.float32)
    for position, organ_votes in enumerate(votes):
        if 2 * int(organ_votes.max()) <= len(atlases):
            continue
        fraction = organ_votes.astype(np.float32) / len(atlases)
        box = bounding_box(organ_votes > 0, margin=1)
        target_box, values = resample_box_to_grid(fraction, vote_affine, box, volume)
        wins = (values > 0.5) & (values > best[target_box])
        label_map[target_box][wins] = position + 1
        best[target_box] = np.where(wins, values, best[target_box])

    rois = []
    for position, organ in enumerate(SITES[site].organs):
        mask = label_map == position + 1
        if not mask.any():
            log.warning("atlas segmentation: no majority for ROI '%s' on this CT; left out", organ.name)
            continue
        rois.append(
            Roi(
                name=organ.name,
                mask=mask,
                number=len(rois) + 1,
                color_rgb=organ.color_rgb,
                interpreted_type=organ.interpreted_type,
                generation_algorithm="AUTOMATIC",
            )
        )
    report_progress(progress_callback, 1.0, "done")
    return rois
