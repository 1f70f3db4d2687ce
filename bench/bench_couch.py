"""A couch under the patient (and a mask over it): do the models give the same contours and crop?

The head-and-neck phantoms have no couch nor mask (docs/phantom.md); a clinic's CT has both. This
benchmark paints a flat carbon-fibre RT couch top (1.5 mm skins at 250 HU over 37 mm of -900 HU
foam, 530 mm wide, the thorax phantoms' flat top) directly under the most posterior tissue of each
held-out phantom (``rtdeep.training.train_all``: seed 2, indices 100-105, clinical grid) and runs
every model on the CT with and without it. It prints per model and organ the median Dice against
the phantom's own structure on both CTs, and the median width (mm) of the body crop the networks
see (``rtdeep.inference.preprocess.body_box``), with and without the couch. With ``--mask`` the
second CT also has a thermoplastic mask's 2 mm shell 3 mm outside the skin over the front half of
the patient (:func:`add_mask_shell`; no perforations). The Python API's time
per CT (``segment_volume``) is printed too; for the DICOM folder -> RTSTRUCT time on the benchmark
CT with a couch, ``python bench/bench_segment.py --couch``.

Run:
    python bench/bench_couch.py                      # head-and-neck bundles, 6 phantoms
    python bench/bench_couch.py --mask               # the couch and a thermoplastic mask
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

#: the flat RT couch top (mm and HU): the thorax phantoms' (rtdeep.phantom.anatomy_thorax._paint_couch)
SKIN_MM, THICKNESS_MM, HALF_WIDTH_MM = 1.5, 40.0, 265.0
SKIN_HU, FOAM_HU = 250.0, -900.0


def add_couch_top(ct: Volume, body_threshold_hu: float = -500.0) -> Volume:
    """``ct`` with a flat RT couch top painted on every slice, its top skin touching the most
    posterior voxel above ``body_threshold_hu``, centred on the patient left to right (an axial
    CT with rows along +y, posterior, and columns along x, as the phantoms and most scanners write)."""
    hu = np.array(ct.array, dtype=np.float32, copy=True)
    tissue = hu > body_threshold_hu
    rows, columns = np.flatnonzero(tissue.any(axis=(0, 2))), np.flatnonzero(tissue.any(axis=(0, 1)))
    row_mm, column_mm = float(ct.spacing_mm[1]), float(ct.spacing_mm[0])
    depth = (np.arange(hu.shape[1]) - rows[-1] - 0.5) * row_mm  # mm below the patient's back
    centre = (columns[0] + columns[-1]) / 2.0
    across = np.abs(np.arange(hu.shape[2]) - centre) * column_mm <= HALF_WIDTH_MM
    skins = ((depth > 0) & (depth <= SKIN_MM)) | ((depth > THICKNESS_MM - SKIN_MM) & (depth <= THICKNESS_MM))
    foam = (depth > SKIN_MM) & (depth <= THICKNESS_MM - SKIN_MM)
    for selected, value in ((skins, SKIN_HU), (foam, FOAM_HU)):
        hu[:, selected[:, None] & across[None, :]] = value
    return ct.with_array(hu)


#: a thermoplastic head-and-shoulder mask (polycaprolactone, about 1.1-1.2 g/cc): a shell this far
#: outside the skin, this thick, over the front half of the patient on every slice (no perforations)
MASK_GAP_MM, MASK_MM, MASK_HU = 3.0, 2.0, 150.0


def add_mask_shell(ct: Volume, body_threshold_hu: float = -500.0) -> Volume:
    """``ct`` with a thermoplastic mask's shell painted :data:`MASK_GAP_MM` outside the skin, over the
    front half of the patient (rows anterior to the middle of each slice's body), on every slice."""
    from scipy import ndimage

    hu = np.array(ct.array, dtype=np.float32, copy=True)
    sampling = (float(ct.spacing_mm[1]), float(ct.spacing_mm[0]))
    for k in range(hu.shape[0]):
        body = hu[k] > body_threshold_hu
        rows = np.flatnonzero(body.any(axis=1))
        if rows.size == 0:
            continue
        outside_mm = ndimage.distance_transform_edt(~body, sampling=sampling)
        shell = (outside_mm > MASK_GAP_MM) & (outside_mm <= MASK_GAP_MM + MASK_MM)
        shell[(rows[0] + rows[-1]) // 2:] = False  # front half only: the mask clips to the base plate
        hu[k][shell] = MASK_HU
    return ct.with_array(hu)


def main(argv: list[str] | None = None) -> int:
    import torch

    from rtdeep.bundles import list_bundles, load_bundle, read_metadata
    from rtdeep.inference.preprocess import body_box
    from rtdeep.inference.segment import segment_volume
    from rtdeep.metrics import dice_coefficient
    from rtdeep.training.train_all import HELDOUT_INDICES, heldout_phantom

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--site", default="headneck")
    parser.add_argument("--models", nargs="+", help="bundle names (default: every bundled model of the site)")
    parser.add_argument("--n-patients", type=int, default=len(HELDOUT_INDICES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mask", action="store_true",
                        help="also a thermoplastic mask's shell over the front of the patient (add_mask_shell)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models_dir = PROJECT_ROOT / "Resources" / "Models"
    names = args.models or sorted(path.name for path in list_bundles()
                                  if read_metadata(path)["rtdeep"].get("kind") == "segmentation"
                                  and read_metadata(path)["rtdeep"].get("site") == args.site)
    bundles = {name: load_bundle(models_dir / name) for name in names}

    dice: dict[tuple[str, str, bool], list[float]] = {}
    seconds: dict[tuple[str, bool], list[float]] = {}
    widths: dict[bool, list[float]] = {False: [], True: []}
    for index in HELDOUT_INDICES[:args.n_patients]:
        plain, reference, patient_id = heldout_phantom(args.site, index)
        supported = add_couch_top(add_mask_shell(plain) if args.mask else plain)
        for couch, ct in ((False, plain), (True, supported)):
            box = body_box(ct)
            widths[couch].append((box[2].stop - box[2].start) * float(ct.spacing_mm[0]))
            for name, bundle in bundles.items():
                start = time.perf_counter()
                rois = segment_volume(ct, bundle)
                seconds.setdefault((name, couch), []).append(time.perf_counter() - start)
                for roi in rois:
                    if roi.name in reference:
                        dice.setdefault((name, roi.name, couch), []).append(dice_coefficient(reference[roi.name], roi.mask))
        print(f"{patient_id} done", file=sys.stderr, flush=True)

    what = "a flat RT couch top" + (" and a thermoplastic mask" if args.mask else "")
    print(f"{args.site}: {args.n_patients} held-out phantoms (seed 2), with and without {what}")
    print(f"body crop width mm, median: {statistics.median(widths[False]):.0f} without, "
          f"{statistics.median(widths[True]):.0f} with the couch")
    print(f"{'model':<24} {'organ':<16} {'Dice no couch':>13} {'Dice couch':>10} {'change':>7}")
    for name in bundles:
        organs = sorted({organ for (model, organ, _) in dice if model == name})
        for organ in organs:
            without = statistics.median(dice[(name, organ, False)])
            with_couch = statistics.median(dice[(name, organ, True)])
            print(f"{name:<24} {organ:<16} {without:13.3f} {with_couch:10.3f} {with_couch - without:+7.3f}")
        print(f"{name:<24} {'s per CT (API)':<16} {statistics.median(seconds[(name, False)]):13.1f} "
              f"{statistics.median(seconds[(name, True)]):10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
