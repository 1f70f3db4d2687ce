"""The couch, headrest and mask around the patient: do the models give the same contours without them?

Every phantom is scanned on a couch; the head-and-neck phantoms also on a headrest and, in most
patients, under a thermoplastic mask (docs/phantom.md). A clinic's CT may have all of these, other
ones, or none (a couch cropped away by the planning system). This benchmark runs every model of a
site on each held-out phantom (``rtdeep.training.train_all``: seed 2, indices 100-105, clinical
grid) twice: as scanned, and with everything more than 2 mm outside the External erased to air
(:func:`erase_outside_body`: -1000 HU plus the image's own air noise). It prints per model and organ
the median Dice against the phantom's own structure both ways, the median width (mm) of the body
crop the networks see (``rtdeep.inference.preprocess.body_box``), and the Python API's time per CT.

Run:
    python bench/bench_couch.py                      # head-and-neck bundles, 6 phantoms
    python bench/bench_couch.py --site thorax --models thorax_ensemble --n-patients 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from rtdeep.volume import Volume

#: how far outside the External (mm) the image is kept: the skin's partial-volume edge
KEEP_MM = 2.0


def erase_outside_body(ct: Volume, external: np.ndarray, seed: int = 0) -> Volume:
    """``ct`` with every voxel more than :data:`KEEP_MM` outside ``external`` (bool ``[k, j, i]``)
    set to air: -1000 HU plus Gaussian noise of the standard deviation of the image's own air
    (voxels between -1100 and -900 HU outside the body); voxels outside the scanner's FOV (at or
    below -1024 HU) stay as they are."""
    from scipy import ndimage

    hu = np.array(ct.array, dtype=np.float32, copy=True)
    sampling = (float(ct.spacing_mm[1]), float(ct.spacing_mm[0]))
    rng = np.random.default_rng(seed)
    for k in range(hu.shape[0]):
        outside = ndimage.distance_transform_edt(~external[k], sampling=sampling) > KEEP_MM
        air = outside & (hu[k] > -1100) & (hu[k] < -900)
        noise = float(np.std(hu[k][air])) if air.sum() > 100 else 0.0
        erase = outside & (hu[k] > -1024)
        hu[k][erase] = -1000.0 + rng.normal(0.0, noise, int(erase.sum())).astype(np.float32)
    return ct.with_array(hu)


def main(argv: list[str] | None = None) -> int:
    import torch

    from rtdeep.bundles import list_bundles, load_bundle, read_metadata
    from rtdeep.inference.preprocess import body_box
    from rtdeep.inference.segment import segment_volume
    from rtdeep.metrics import dice_coefficient
    from rtdeep.phantom import generate_patient
    from rtdeep.training.train_all import GRID, HELDOUT_INDICES, HELDOUT_SEED

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--site", default="headneck")
    parser.add_argument("--models", nargs="+", help="bundle names (default: every bundled model of the site)")
    parser.add_argument("--n-patients", type=int, default=len(HELDOUT_INDICES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models-dir", type=Path, default=PROJECT_ROOT / "Resources" / "Models")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.models or sorted(path.name for path in list_bundles(args.models_dir)
                                  if read_metadata(path)["rtdeep"].get("kind") == "segmentation"
                                  and read_metadata(path)["rtdeep"].get("site") == args.site)
    bundles = {name: load_bundle(args.models_dir / name) for name in names}

    dice: dict[tuple[str, str, bool], list[float]] = {}
    seconds: dict[tuple[str, bool], list[float]] = {}
    widths: dict[bool, list[float]] = {False: [], True: []}
    for index in HELDOUT_INDICES[:args.n_patients]:
        patient = generate_patient(args.site, index, HELDOUT_SEED, grid=GRID)
        masks = {roi.name: roi.mask for roi in patient.rois}
        erased = erase_outside_body(patient.ct, masks["External"], seed=index)
        for scanned, ct in ((True, patient.ct), (False, erased)):
            box = body_box(ct)
            widths[scanned].append((box[2].stop - box[2].start) * float(ct.spacing_mm[0]))
            for name, bundle in bundles.items():
                start = time.perf_counter()
                rois = segment_volume(ct, bundle)
                seconds.setdefault((name, scanned), []).append(time.perf_counter() - start)
                for roi in rois:
                    if roi.name in masks:
                        dice.setdefault((name, roi.name, scanned), []).append(dice_coefficient(masks[roi.name], roi.mask))
        print(f"{patient.patient_id} done", file=sys.stderr, flush=True)

    print(f"{args.site}: {args.n_patients} held-out phantoms (seed {HELDOUT_SEED}), as scanned (couch, and for the "
          f"head and neck a headrest and mostly a mask) and with everything {KEEP_MM:g} mm outside the skin erased")
    print(f"body crop width mm, median: {statistics.median(widths[True]):.0f} as scanned, "
          f"{statistics.median(widths[False]):.0f} erased")
    print(f"{'model':<24} {'organ':<16} {'Dice scanned':>12} {'Dice erased':>11} {'change':>7}")
    for name in bundles:
        organs = sorted({organ for (model, organ, _) in dice if model == name})
        for organ in organs:
            scanned = statistics.median(dice[(name, organ, True)])
            erased_dice = statistics.median(dice[(name, organ, False)])
            print(f"{name:<24} {organ:<16} {scanned:12.3f} {erased_dice:11.3f} {erased_dice - scanned:+7.3f}")
        print(f"{name:<24} {'s per CT (API)':<16} {statistics.median(seconds[(name, True)]):12.1f} "
              f"{statistics.median(seconds[(name, False)]):11.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
