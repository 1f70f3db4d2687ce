"""Does the pneumonitis signal survive the CNN's 6 mm voxels? A check with no training at all.

Counts, in each held-out patient's lung ∩ >= 20 Gy crop (as the CNN sees it: 6 mm voxels, the
canvas of :mod:`rtdeep.pneumonitis.dataset`), the volume of voxels in a fixed attenuation band of
ground glass (default -650 to -350 HU; not tuned on the outcome), and prints the AUC of that count
beside the AUC of the phantom's true interstitial volume inside the >= 20 Gy lung (the outcome
model's image factor) and of the outcome model's own probability (the limit), each with a 95 %
bootstrap interval. If the count ranks the patients about as well as the true volume, the 6 mm
input keeps the signal and a CNN that falls short of it is limited by its training, not its input.

    python bench/bench_pneumonitis_signal.py --cache DIR --generators ce1fb708a24b,bc4ef3c8a12d
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main() -> int:
    from rtdeep.pneumonitis.dataset import HU_WINDOW, SPACING_MM, phantom_records
    from rtdeep.pneumonitis.evaluate import bootstrap_auc_ci, roc_auc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--generators", default="", help="cached phantoms of these generator fingerprints")
    parser.add_argument("--seed", type=int, default=8713, help="phantom seed of the held-out patients")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--band", type=float, nargs=2, default=(-650.0, -350.0), metavar=("LOW_HU", "HIGH_HU"))
    args = parser.parse_args()
    generators = [g for g in args.generators.split(",") if g]
    records = phantom_records(args.seed, range(args.n), ["lung-dose20"], None, "small", args.cache, None, generators)
    labels = np.array([r.label for r in records])
    low, high = HU_WINDOW
    voxel_cc = SPACING_MM**3 / 1000.0
    counts = []
    for record in records:
        crop = record.inputs["lung-dose20"].astype(np.float32)
        hu, mask = crop[0] * (high - low) + low, crop[-1] > 0.5
        counts.append(float(((hu > args.band[0]) & (hu < args.band[1]) & mask).sum()) * voxel_cc)
    scores = {
        f"voxels in {args.band[0]:.0f}..{args.band[1]:.0f} HU (cc), 6 mm crop": np.array(counts),
        "true ILD volume in V20 (cc)": np.array([r.figures["ild_in_v20_cc"] for r in records]),
        "limit: outcome model's own risk": np.array([r.figures["risk"] for r in records]),
    }
    print(f"{len(records)} held-out phantoms (seed {args.seed}), {labels.sum()} with grade >= 2 pneumonitis")
    print("| score | AUC [95% CI] |\n|---|---|")
    for name, score in scores.items():
        ci = bootstrap_auc_ci(labels, score)
        print(f"| {name} | {roc_auc(labels, score):.3f} [{ci[0]:.2f}, {ci[1]:.2f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
