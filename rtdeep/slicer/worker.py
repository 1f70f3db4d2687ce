"""Segmentation runner shared by the in-process path and the desktop app's subprocess.

The Slicer module never runs a network in the GUI's Python: it writes the CT to an ``.npz`` file,
starts ``PythonSlicer -m rtdeep.slicer.worker --input ct.npz --output rois.npz --site thorax
--model thorax_unet3d`` (a ``qt.QProcess``, so the panel stays live and Cancel kills it), reads the
progress lines it prints (``PROGRESS <0..1> <message>``) and loads the ROIs it writes. Tests and
scripts call :func:`segment_ct` directly. This module needs no vtk, qt or slicer.

Exchange files (numpy ``.npz``, no pickles): the CT holds ``array`` (HU ``[k, j, i]``) and ``affine``
(index -> LPS mm); the ROIs hold ``masks`` (bool ``[n, k, j, i]``), ``affine`` and ``rois_json``
(name, number, color_rgb, interpreted_type, generation_algorithm of each ROI).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from rtdeep.dicomrt.types import Roi
from rtdeep.errors import BundleError, RtDeepError
from rtdeep.sites import SITES
from rtdeep.volume import Volume

__all__ = [
    "ATLAS_MODEL",
    "SITES",
    "available_models",
    "is_atlas_model",
    "load_rois_npz",
    "load_volume_npz",
    "main",
    "save_rois_npz",
    "save_volume_npz",
    "segment_ct",
]

#: model name of the atlas baseline (registration of a reference phantom, rtdeep.atlas)
ATLAS_MODEL = "atlas"


ProgressCallback = Callable[[float, str], None]


def is_atlas_model(model: str, site: str) -> bool:
    """True for ``"atlas"`` and ``"<site>_atlas"`` (the name ``rtdeep segment`` uses)."""
    return model in (ATLAS_MODEL, f"{site}_atlas")


def available_models(site: str) -> list[str]:
    """Model names offered for ``site``: the bundled segmentation models of that site, then the atlas."""
    from rtdeep.bundles import list_bundles, read_metadata

    names = []
    for path in list_bundles():
        try:
            config = read_metadata(path).get("rtdeep", {})
        except RtDeepError:
            continue
        if config.get("kind") == "segmentation" and config.get("site") == site:
            names.append(path.name)
    return [*names, ATLAS_MODEL]


def segment_ct(
    ct: Volume,
    site: str,
    model: str,
    *,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
    n_atlases: int | None = None,
) -> list[Roi]:
    """Segment the organs of ``site`` on a CT.

    Args:
        ct: HU volume ``[k, j, i]`` with its LPS affine.
        site: ``"thorax"`` or ``"headneck"``.
        model: a segmentation bundle name or folder (e.g. ``"thorax_unet3d"``), or ``"atlas"``.
        device: torch device for a network (``"cpu"``, ``"cuda"``).
        progress: called with (fraction 0..1, message).
        n_atlases: atlases registered by the atlas model (its default when None).

    Returns:
        Rois (bool masks on the CT grid, TG-263 names, colours, ``generation_algorithm`` AUTOMATIC).

    Raises:
        ValueError: unknown site. BundleError: a bundle for another site, or a broken bundle.
    """
    if site not in SITES:
        raise ValueError(f"unknown site '{site}': expected one of {', '.join(SITES)}")
    report = progress or (lambda fraction, message: None)
    report(0.0, f"segmenting with {model}")
    if is_atlas_model(model, site):
        from rtdeep.atlas import DEFAULT_N_ATLASES, segment_with_atlas

        rois = list(segment_with_atlas(ct, site, n_atlases or DEFAULT_N_ATLASES, progress_callback=progress))
    else:
        from rtdeep.bundles import load_bundle

        bundle = load_bundle(model, device=device)
        if bundle.site and bundle.site != site:
            raise BundleError(f"model is for site '{bundle.site}', not '{site}'", path=bundle.path)
        report(0.1, f"loaded {bundle.name}")
        from rtdeep.inference.segment import segment_volume

        rois = list(segment_volume(ct, bundle, device=device, progress_callback=progress))
    for roi in rois:
        if roi.mask.shape != ct.shape:
            raise ValueError(
                f"model '{model}' returned ROI '{roi.name}' of shape {roi.mask.shape}, not the CT's {ct.shape}"
            )
    report(1.0, f"{len(rois)} structures")
    return rois


def save_volume_npz(volume: Volume, path: str | Path) -> Path:
    """Write a Volume as ``.npz`` (``array``, ``affine``)."""
    path = Path(path)
    np.savez(path, array=volume.array, affine=volume.affine)
    return path


def load_volume_npz(path: str | Path) -> Volume:
    """Read a Volume written by :func:`save_volume_npz`."""
    with np.load(path, allow_pickle=False) as data:
        return Volume(data["array"], data["affine"])


def save_rois_npz(rois: Sequence[Roi], grid: Volume, path: str | Path) -> Path:
    """Write Rois (masks on ``grid``) as ``.npz``."""
    path = Path(path)
    masks = np.stack([roi.mask.astype(bool) for roi in rois]) if rois else np.zeros((0, *grid.shape), bool)
    described = [
        {
            "name": roi.name,
            "number": int(roi.number),
            "color_rgb": [int(c) for c in roi.color_rgb],
            "interpreted_type": roi.interpreted_type,
            "generation_algorithm": roi.generation_algorithm,
        }
        for roi in rois
    ]
    np.savez_compressed(path, masks=masks, affine=grid.affine, rois_json=np.array(json.dumps(described)))
    return path


def load_rois_npz(path: str | Path) -> tuple[list[Roi], np.ndarray]:
    """Read Rois written by :func:`save_rois_npz`; returns (rois, affine of their grid)."""
    with np.load(path, allow_pickle=False) as data:
        described = json.loads(str(data["rois_json"]))
        masks = data["masks"]
        affine = data["affine"]
    rois = [
        Roi(
            name=item["name"],
            mask=masks[index].astype(bool),
            number=item["number"],
            color_rgb=tuple(item["color_rgb"]),  # type: ignore[arg-type]
            interpreted_type=item["interpreted_type"],
            generation_algorithm=item["generation_algorithm"],
        )
        for index, item in enumerate(described)
    ]
    return rois, affine


def _print_progress(fraction: float, message: str) -> None:
    print(f"PROGRESS {fraction:.3f} {message}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the subprocess; exit status 0, 2 for a user error (one line on stderr)."""
    parser = argparse.ArgumentParser(
        prog="python -m rtdeep.slicer.worker", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--input", required=True, type=Path, help="CT .npz (array [k,j,i] HU, affine LPS)")
    parser.add_argument("--output", required=True, type=Path, help="ROIs .npz to write (must not exist)")
    parser.add_argument("--site", required=True, choices=SITES)
    parser.add_argument("--model", required=True, help="bundle name or folder, or 'atlas'")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--atlases", type=int, default=None, help="atlases to register (atlas model)")
    args = parser.parse_args(argv)
    try:
        if args.output.exists():
            raise RtDeepError("output exists; choose a new path", path=args.output)
        ct = load_volume_npz(args.input)
        rois = segment_ct(
            ct, args.site, args.model, device=args.device, progress=_print_progress, n_atlases=args.atlases
        )
        partial = args.output.with_name(args.output.name + ".partial.npz")
        save_rois_npz(rois, ct, partial)
        partial.replace(args.output)
    except (RtDeepError, ValueError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
