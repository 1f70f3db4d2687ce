"""Below the lungs: do the thorax models stay out of the upper abdomen?

Lung planning CTs often go on 10-15 cm below the lung bases (whole liver and kidneys for 4D CT and
motion management). There the abdomen holds air (stomach, colon) and soft tissue next to the
diaphragm (liver, spleen, bowel) that a network could take for lung or heart. This benchmark takes
the held-out thorax phantoms (``rtdeep.training.train_all``: seed 2, never trained on) whose scan
reaches at least ``--min-below-mm`` below the lowest lung voxel, runs each model on the whole scan,
and prints per model:

* the median Dice per organ against the phantom's own structures, and
* per organ, the volume (cc) labelled in the slices below the lung bases (more than 5 mm below the
  lowest reference lung voxel) outside the organ's own reference there: contours in the abdomen,
  median and largest over the phantoms (the spinal cord, which runs on, counts only outside its
  reference like every organ);
* per organ, where its lowest AI slice lies against its lowest reference slice (mm; positive: the
  contour runs on below the reference, negative: it stops short; :func:`rtdeep.metrics.extent_offsets_mm`),
  median and range: the esophagus's end at the gastro-oesophageal junction, the lung bases; and the
  same for its highest slice (positive: above the reference's), the lung apices;
* the plausibility findings (``rtdeep.plausibility``), which need no reference.

Run:
    python bench/bench_abdomen.py                                  # thorax default, 6 phantoms
    python bench/bench_abdomen.py --models thorax_ensemble thorax_unet25d_fine --n-patients 4
    python bench/bench_abdomen.py --min-below-mm 0                 # every held-out phantom
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

#: slices this far (mm) below the lowest reference lung voxel count as abdomen
MARGIN_MM = 5.0


def abdominal_slices(ct, lungs: np.ndarray) -> np.ndarray:
    """Bool per slice ``k`` of a head-first axial ``ct``: more than :data:`MARGIN_MM` below the lowest
    voxel of ``lungs``."""
    z = ct.slice_z_mm
    lowest = float(z[lungs.any(axis=(1, 2))].min())
    return z < lowest - MARGIN_MM


def main(argv: list[str] | None = None) -> int:
    import torch

    from rtdeep.bundles import load_bundle
    from rtdeep.inference.segment import segment_volume
    from rtdeep.metrics import dice_coefficient, extent_offsets_mm
    from rtdeep.plausibility import check_plausibility
    from rtdeep.training.train_all import HELDOUT_INDICES, HELDOUT_SEED, heldout_phantom

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["thorax_ensemble"])
    parser.add_argument("--n-patients", type=int, default=6)
    parser.add_argument("--min-below-mm", type=float, default=60.0,
                        help="only phantoms whose scan reaches this far below the lowest lung voxel")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models-dir", type=Path, default=PROJECT_ROOT / "Resources" / "Models")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bundles = {name: load_bundle(args.models_dir / name) for name in args.models}

    dice: dict[tuple[str, str], list[float]] = {}
    outside_cc: dict[tuple[str, str], list[float]] = {}
    end_offsets_mm: dict[tuple[str, str], list[tuple[float, float]]] = {}
    findings: dict[str, list[str]] = {name: [] for name in bundles}
    below_mm, used = [], []
    index = HELDOUT_INDICES[0]
    while len(used) < args.n_patients and index < HELDOUT_INDICES[0] + 60:
        ct, reference, patient_id = heldout_phantom("thorax", index, HELDOUT_SEED)
        index += 1
        abdomen = abdominal_slices(ct, reference["Lung_L"] | reference["Lung_R"])
        reach = float(abdomen.sum() * ct.spacing_mm[2] + MARGIN_MM)
        if reach < args.min_below_mm:
            continue
        used.append(patient_id)
        below_mm.append(reach)
        voxel_cc = float(np.prod(ct.spacing_mm)) / 1000.0
        for name, bundle in bundles.items():
            rois = segment_volume(ct, bundle)
            for roi in rois:
                if roi.name not in reference:
                    continue
                dice.setdefault((name, roi.name), []).append(dice_coefficient(reference[roi.name], roi.mask))
                stray = roi.mask[abdomen] & ~reference[roi.name][abdomen]
                outside_cc.setdefault((name, roi.name), []).append(float(stray.sum()) * voxel_cc)
                end_offsets_mm.setdefault((name, roi.name), []).append(extent_offsets_mm(reference[roi.name], roi.mask, ct))
            findings[name] += [f"{patient_id}: {f.message}" for f in check_plausibility(ct, rois)]
        print(f"{patient_id}: scan reaches {reach:.0f} mm below the lung bases", file=sys.stderr, flush=True)

    print(f"thorax: {len(used)} held-out phantoms (seed {HELDOUT_SEED}, {', '.join(used)}) whose scan reaches "
          f"{min(below_mm):.0f}-{max(below_mm):.0f} mm below the lowest lung voxel")
    print(f"{'model':<22} {'organ':<11} {'Dice median':>11} {'min':>6} {'abdomen cc median':>17} {'max':>7} "
          f"{'lower end mm median':>19} {'range':>15} {'upper end mm median':>19} {'range':>15}")
    for name in bundles:
        for organ in sorted({o for (model, o) in dice if model == name}):
            d, cc = dice[(name, organ)], outside_cc[(name, organ)]
            end_text = ""
            for side in (0, 1):  # inferior, superior
                ends = [pair[side] for pair in end_offsets_mm[(name, organ)] if not np.isnan(pair[side])]
                end_text += (f" {statistics.median(ends):+19.1f} {f'[{min(ends):+.1f}, {max(ends):+.1f}]':>15}" if ends
                             else f" {'-':>19} {'-':>15}")
            print(f"{name:<22} {organ:<11} {statistics.median(d):11.3f} {min(d):6.3f} "
                  f"{statistics.median(cc):17.1f} {max(cc):7.1f}{end_text}")
        print(f"{name:<22} plausibility findings: {len(findings[name])}")
        for line in findings[name]:
            print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
