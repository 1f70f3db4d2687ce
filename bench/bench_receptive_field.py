"""Each architecture's receptive field, in model voxels and in mm on its model grid.

A voxel's label can only depend on the input within the network's receptive field. A network moved
to a finer grid with the same levels sees half as many millimetres, which matters for organs told
apart by their neighbours (the submandibular gland against the floor of the mouth and the
mandible). :func:`rtdeep.models.registry.receptive_field` measures the field from the gradient of
the centre output (no training, seconds per architecture); this prints it with the training patch
beside it, and the fine-grid 3D U-Net as first designed (session 25: the 2.5 mm network's levels
on the 1.25 mm grid) for comparison.

Usage::

    python bench/bench_receptive_field.py [--site headneck]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtdeep.models.architectures import ARCHITECTURES
from rtdeep.models.registry import receptive_field
from rtdeep.sites import get_site

#: larger than every architecture's field on every axis (at most 67 slices and 129 rows or columns),
#: with centres on a multiple of 16, aligned with every level's grid (where the field is widest)
MEASURE_SHAPE = {3: (96, 160, 160), 2: (160, 160)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="headneck")
    args = parser.parse_args(argv)
    site = get_site(args.site)
    print(f"{site.title}: receptive field of each architecture's generator (model grid)")
    print("| architecture | model grid i,j,k mm | strides | field, voxels (k, j, i) | field in-plane mm | "
          "field in z mm | training patch mm |")
    print("|---|---|---|---|---|---|---|")
    first_fine3d = dataclasses.replace(
        ARCHITECTURES["unet3d_fine"], title="3D U-Net, 1.25 mm grid, as first designed (session 25)",
        channels=ARCHITECTURES["unet3d"].channels, in_plane_first_halving=False,
    )
    for arch in [*ARCHITECTURES.values(), first_fine3d]:
        if arch.is_gan:
            continue  # the GANs' generators are their U-Nets' networks
        spacing = arch.model_site(site).spacing_mm
        field = receptive_field(arch.network_spec(site), MEASURE_SHAPE[arch.spatial_dims])
        in_plane = field[-1] * spacing[0]
        # 2.5D: the slices fed as channels are the whole field in z
        z_mm = field[0] * spacing[2] if arch.spatial_dims == 3 else arch.context_slices * spacing[2]
        patch = list(arch.patch_size) if arch.spatial_dims == 3 else [arch.context_slices, *arch.patch_size]
        patch_mm = " x ".join(f"{n * s:g}" for n, s in zip(patch, (spacing[2], spacing[1], spacing[0]), strict=True))
        voxels = ", ".join(str(v) for v in (field if arch.spatial_dims == 3 else (arch.context_slices, *field)))
        print(f"| {arch.title} | {','.join(f'{v:g}' for v in spacing)} | {arch.strides} | {voxels} | "
              f"{in_plane:.0f} | {z_mm:.0f} | {patch_mm} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
