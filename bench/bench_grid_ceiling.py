"""The Dice of a network that reproduces its training labels exactly: each organ's grid ceiling.

A segmentation model sees the CT on its site's model grid (``Site.spacing_mm``) and its label map
is resampled back onto the CT grid. Even a network that labels every model-grid voxel exactly as
the training labels do (each organ's mask resampled to the model grid, > 0.5) loses the detail
finer than that grid. This benchmark takes the held-out phantoms' own organ masks through exactly
that round trip (:func:`rtdeep.training.data.grid_ceiling_dice`) and prints the Dice against the
original masks, per organ and spacing: no network, only the grid.

Usage::

    python bench/bench_grid_ceiling.py [--sites thorax headneck] [--n-patients 6]
        [--spacings 2.5,2.5,3 2,2,3 1.5,1.5,2.5]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtdeep.sites import get_site
from rtdeep.training.data import grid_ceiling_dice
from rtdeep.training.train_all import HELDOUT_INDICES, heldout_phantom


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", nargs="+", default=["thorax", "headneck"])
    parser.add_argument("--n-patients", type=int, default=len(HELDOUT_INDICES))
    parser.add_argument("--spacings", nargs="+", default=["2.5,2.5,3", "2,2,3", "1.5,1.5,2.5"])
    args = parser.parse_args(argv)
    spacings = [tuple(float(v) for v in text.split(",")) for text in args.spacings]
    for site_name in args.sites:
        site = get_site(site_name)
        results: dict[tuple, dict[str, list[float]]] = {s: {o: [] for o in site.organ_names} for s in spacings}
        for index in HELDOUT_INDICES[: args.n_patients]:
            ct, masks, _ = heldout_phantom(site_name, index)
            for spacing in spacings:
                grid_site = dataclasses.replace(site, spacing_mm=spacing)
                for organ, value in grid_ceiling_dice(ct, masks, grid_site).items():
                    results[spacing][organ].append(value)
        print(f"\n{site.title}: Dice of the training labels' round trip, median (min-max) over "
              f"{args.n_patients} held-out phantoms (shipped grid {site.spacing_mm} mm)")
        print("| spacing i,j,k mm | " + " | ".join(site.organ_names) + " |")
        print("|---" * (len(site.organ_names) + 1) + "|")
        for spacing in spacings:
            cells = []
            for organ in site.organ_names:
                values = np.asarray(results[spacing][organ])
                cells.append(f"{np.median(values):.3f} ({values.min():.3f}-{values.max():.3f})" if values.size else "-")
            print(f"| {','.join(f'{v:g}' for v in spacing)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
