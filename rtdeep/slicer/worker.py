"""The Slicer module's segmentation subprocess: CT file in, ROI file out, progress on stdout.

The Slicer module never runs a network in the GUI's Python: it writes the CT to an ``.npz`` file,
starts ``PythonSlicer -m rtdeep.slicer.worker --input ct.npz --output rois.npz --model thorax_unet3d``
(a ``qt.QProcess``, so the panel stays live and Cancel kills it), reads the progress lines it
prints (``PROGRESS <0..1> <message>``) and loads the ROIs it writes. The work itself is
:func:`rtdeep.inference.segment_ct`; this module only exchanges files and needs no vtk, qt or slicer.

Exchange files (numpy ``.npz``, no pickles): the CT holds ``array`` (HU ``[k, j, i]``) and ``affine``
(index -> LPS mm); the ROIs hold ``packed_masks`` (the bool masks ``[n, k, j, i]`` packed 8 voxels to a
byte along i, ``np.packbits``: a 512 x 512 x 159 CT's five masks are 26 MB instead of 208, written
and read in a fraction of the time ``savez_compressed`` took), ``shape``, ``affine`` and ``rois_json``
(name, number, color_rgb, interpreted_type, generation_algorithm of each ROI).

A spare worker (``python -m rtdeep.slicer.worker --wait``, what the web app keeps ready) imports the
inference stack (torch: seconds; the bundles' TorchScript networks need no MONAI) before there is a
job, then reads the job's arguments, one JSON list of the options above, from the first line of its
stdin; at end of input it exits.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rtdeep.dicomrt.types import Roi
from rtdeep.errors import RtDeepError
from rtdeep.volume import Volume

__all__ = [
    "PROGRESS_PREFIX",
    "WAIT_FLAG",
    "load_rois_npz",
    "load_volume_npz",
    "main",
    "parse_progress_line",
    "save_rois_npz",
    "save_volume_npz",
]

#: first word of a progress line on the worker's stdout
PROGRESS_PREFIX = "PROGRESS"
#: the only argument of a spare worker (its job's arguments come on stdin)
WAIT_FLAG = "--wait"


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
    if masks.shape[1:] != grid.shape:
        raise RtDeepError(f"ROI masks of shape {masks.shape[1:]} are not on the grid {grid.shape}", path=path)
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
    np.savez(path, packed_masks=np.packbits(masks, axis=-1), shape=np.array(masks.shape), affine=grid.affine,
             rois_json=np.array(json.dumps(described)))
    return path


def load_rois_npz(path: str | Path) -> tuple[list[Roi], np.ndarray]:
    """Read Rois written by :func:`save_rois_npz`; returns (rois, affine of their grid)."""
    with np.load(path, allow_pickle=False) as data:
        described = json.loads(str(data["rois_json"]))
        shape = tuple(int(n) for n in data["shape"])
        masks = np.unpackbits(data["packed_masks"], axis=-1, count=shape[-1]).view(bool).reshape(shape)
        affine = data["affine"]
    rois = [
        Roi(
            name=item["name"],
            mask=masks[index],
            number=item["number"],
            color_rgb=tuple(item["color_rgb"]),  # type: ignore[arg-type]
            interpreted_type=item["interpreted_type"],
            generation_algorithm=item["generation_algorithm"],
        )
        for index, item in enumerate(described)
    ]
    return rois, affine


def _print_progress(fraction: float, message: str) -> None:
    print(f"{PROGRESS_PREFIX} {fraction:.3f} {message}", flush=True)


def parse_progress_line(line: str) -> tuple[float, str] | None:
    """(fraction, message) from a line ``PROGRESS 0.500 message``; None for any other line."""
    parts = line.strip().split(" ", 2)
    if len(parts) < 2 or parts[0] != PROGRESS_PREFIX:
        return None
    try:
        return float(parts[1]), (parts[2] if len(parts) > 2 else "")
    except ValueError:
        return None


def _wait_for_arguments() -> list[str] | None:
    """A spare worker's job: import what every run needs, then read its arguments (a JSON list of
    strings) from the first line of stdin; None at end of input (the server needed no job)."""
    import rtdeep.inference  # noqa: F401  (torch)

    line = sys.stdin.readline()
    if not line.strip():
        return None
    arguments = json.loads(line)
    if not isinstance(arguments, list) or not all(isinstance(item, str) for item in arguments):
        raise RtDeepError("a spare worker's job must be one JSON list of strings on stdin")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the subprocess; exit status 0, 2 for a user error (one line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == [WAIT_FLAG]:
        try:
            job = _wait_for_arguments()
        except (RtDeepError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if job is None:
            return 0
        argv = job
    parser = argparse.ArgumentParser(
        prog="python -m rtdeep.slicer.worker", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--input", required=True, type=Path, help="CT .npz (array [k,j,i] HU, affine LPS)")
    parser.add_argument("--output", required=True, type=Path, help="ROIs .npz to write (must not exist)")
    parser.add_argument("--model", required=True, help="bundle name or folder, or <site>_atlas")
    parser.add_argument("--site", default=None, help="refuse a model of another site")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--atlases", type=int, default=None, help="atlases to register (atlas model)")
    args = parser.parse_args(argv)
    try:
        if args.output.exists():
            raise RtDeepError("output exists; choose a new path", path=args.output)
        from rtdeep.inference import segment_ct

        ct = load_volume_npz(args.input)
        rois = segment_ct(ct, args.model, site=args.site, device=args.device, progress_callback=_print_progress,
                          n_atlases=args.atlases)
        partial = args.output.with_name(args.output.name + ".partial.npz")
        save_rois_npz(rois, ct, partial)
        partial.replace(args.output)
    except (RtDeepError, ValueError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
