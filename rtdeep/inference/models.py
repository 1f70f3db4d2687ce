"""Segmentation models by name: the one entry point for the CLI, the Slicer worker and the web app.

A model name is a bundled network (``thorax_unet3d``, a folder under ``Resources/Models``), the
path of a user's bundle folder, or an atlas baseline (``thorax_atlas``, ``headneck_atlas``). The
same names appear in ``rtdeep segment --model``, in the panel's model list and in ``models.json``.

Example:
    >>> from rtdeep.inference import available_models, segment_ct
    >>> available_models("thorax")[-1]
    'thorax_atlas'
    >>> rois = segment_ct(ct_volume, "thorax_unet3d")          # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from rtdeep.atlas.names import ATLAS_MODELS, atlas_site
from rtdeep.bundles import list_bundles, read_metadata, resolve_bundle
from rtdeep.dicomrt.types import Roi
from rtdeep.errors import BundleError, RtDeepError
from rtdeep.progress import ProgressCallback, report_progress
from rtdeep.sites import SITES
from rtdeep.volume import Volume

__all__ = ["available_models", "model_site", "segment_ct"]


def available_models(site: str | None = None) -> list[str]:
    """Model names offered for ``site`` (every site when None): its bundled networks, then its atlas."""
    names = []
    for path in list_bundles():
        try:
            config = read_metadata(path).get("rtdeep", {})
        except RtDeepError:
            continue
        if config.get("kind") == "segmentation" and site in (None, config.get("site")):
            names.append(path.name)
    return [*names, *(name for name, atlas_for in ATLAS_MODELS.items() if site in (None, atlas_for))]


def model_site(model: str | Path) -> str:
    """The site a model segments (from the atlas name or the bundle's metadata).

    Raises:
        BundleError: not an atlas name and no readable segmentation bundle.
    """
    site = atlas_site(str(model))
    if site is not None:
        return site
    bundle_dir = resolve_bundle(model)
    config = read_metadata(bundle_dir)["rtdeep"]
    if config.get("kind") != "segmentation" or config.get("site") not in SITES:
        raise BundleError(
            f"not a segmentation model of a known site (kind '{config.get('kind')}', site '{config.get('site')}')",
            path=bundle_dir,
        )
    return str(config["site"])


def segment_ct(
    ct: Volume,
    model: str | Path,
    *,
    site: str | None = None,
    device: str = "cpu",
    progress_callback: ProgressCallback | None = None,
    n_atlases: int | None = None,
) -> list[Roi]:
    """Segment the organs of a CT with a model given by name.

    Args:
        ct: HU volume ``[k, j, i]`` with its LPS affine.
        model: a bundled model name, a bundle folder, or ``<site>_atlas``.
        site: when given, the model must segment this site (a guard for callers that chose one).
        device: torch device for a network (``"cpu"``, ``"cuda"``).
        progress_callback: called with (fraction 0-1, message).
        n_atlases: atlases the atlas baseline registers (its default when None).

    Returns:
        One ROI per organ found (bool masks on the CT grid, TG-263 names and colours of
        :mod:`rtdeep.sites`, ``generation_algorithm`` AUTOMATIC).

    Raises:
        BundleError: unknown model, broken bundle, or a model of another site than ``site``.
    """
    model_is_for = model_site(model)
    if site is not None and site != model_is_for:
        raise BundleError(f"model '{model}' segments site '{model_is_for}', not '{site}'")
    report_progress(progress_callback, 0.0, f"segmenting with {model}")
    if atlas_site(str(model)) is not None:
        from rtdeep.atlas import DEFAULT_N_ATLASES, segment_with_atlas

        rois = segment_with_atlas(ct, model_is_for, n_atlases or DEFAULT_N_ATLASES, progress_callback=progress_callback)
    else:
        from rtdeep.bundles import load_bundle
        from rtdeep.inference.segment import segment_volume

        bundle = load_bundle(model, device=device)
        rois = segment_volume(ct, bundle, device=device, progress_callback=progress_callback)
    report_progress(progress_callback, 1.0, f"{len(rois)} structures")
    return list(rois)
