"""Benchmark 4D CT and DRR work: phantom generation, ``rtdeep fourd`` and DRRs, small and clinical grids.

For each grid (``small``: 128 x 128 x ~94 of ~3.5 mm; ``clinical``: 512 x 512, 2.5-3 mm slices)
it times, on this machine, one thorax patient:

* ``generate_cohort_4d`` with ``--phases`` phases (warping, writing every phase and the AIP plan);
* ``analyse_four_d`` (projections, ITV, motion.csv; GTV from each phase's structure set);
* one DRR per plan beam (``compute_drr``, 256 x 256 pixels over 400 mm at SID 1500 mm);

and reports the tumour's measured peak-to-peak motion against the phantom's truth (manifest).

With ``--accuracy N`` it instead measures, on N small-grid patients with 10 phases, how far the
GTV centroid ``rtdeep fourd`` measures on each phase lies from the phantom's trajectory: with the
GTV from every phase's structure set, and with only the 50 % phase contoured (the others by
registration).

Usage: ``python bench/bench_fourd_drr.py [--grids small clinical] [--phases 10] [--seed 11]``
       ``python bench/bench_fourd_drr.py --accuracy 5 [--seed 11]``
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np

from rtdeep.dicomrt.study import load_study
from rtdeep.drr import compute_drr, read_beam_geometries
from rtdeep.fourd import analyse_four_d
from rtdeep.phantom.fourd import generate_cohort_4d


def _bench(grid: str, phases: int, seed: int, root: Path) -> dict:
    started = time.perf_counter()
    manifest = generate_cohort_4d("thorax", 1, seed, root / grid, grid, n_phases=phases)
    generate_s = time.perf_counter() - started
    with open(manifest, encoding="utf-8") as handle:
        row = next(csv.DictReader(handle))
    folder = root / grid / row["study_dir"]
    started = time.perf_counter()
    result = analyse_four_d(folder, root / f"{grid}-fourd")
    fourd_s = time.perf_counter() - started
    truth = np.array([[float(v) for v in p.split()] for p in row["tumour_trajectory_mm"].split(";")])
    measured = np.array([entry[1] for entry in result.motion["GTV"]])
    study = load_study(folder)
    beams = read_beam_geometries(study.plan.path)  # type: ignore[union-attr]
    started = time.perf_counter()
    for beam in beams:
        compute_drr(study.ct.volume, beam)
    drr_s = (time.perf_counter() - started) / len(beams)
    n_i, n_j, n_k = study.ct.volume.size_ijk
    return {
        "grid": f"{grid} {n_i}x{n_j}x{n_k}",
        "generate_s": generate_s,
        "fourd_s": fourd_s,
        "drr_per_beam_s": drr_s,
        "truth_p2p": truth.max(0) - truth.min(0),
        "measured_p2p": measured.max(0) - measured.min(0),
        "max_centroid_error_mm": float(np.abs(measured - truth).max()),
    }


def _accuracy(n_patients: int, seed: int, root: Path) -> None:
    import shutil

    manifest = generate_cohort_4d("thorax", n_patients, seed, root / "cohort", "small", n_phases=10)
    with open(manifest, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    print("| patient | diaphragm p2p (mm) | tumour p2p truth x/y/z (mm) | structure sets: max centroid error (mm) | "
          "50 % contoured + registration: max error (mm) |")
    print("|---|---|---|---|---|")
    errors: dict[str, list[float]] = {"rs": [], "reg": []}
    for row in rows:
        truth = np.array([[float(v) for v in p.split()] for p in row["tumour_trajectory_mm"].split(";")])
        folder = root / "cohort" / row["study_dir"]
        measured = analyse_four_d(folder, root / f"rs-{row['index']}").motion["GTV"]
        errors["rs"].append(float(np.abs(np.array([m[1] for m in measured]) - truth).max()))
        one = root / f"one-{row['index']}"
        shutil.copytree(folder / "4DCT", one)
        for path in one.glob("RS_P*.dcm"):
            if path.name != "RS_P50.dcm":
                path.unlink()
        measured = analyse_four_d(one, root / f"reg-{row['index']}").motion["GTV"]
        errors["reg"].append(float(np.abs(np.array([m[1] for m in measured]) - truth).max()))
        p2p = "/".join(f"{v:.1f}" for v in truth.max(0) - truth.min(0))
        print(f"| {row['patient_id']} | {row['breathing_si_mm']} | {p2p} | {errors['rs'][-1]:.2f} | "
              f"{errors['reg'][-1]:.2f} |", flush=True)
    print(f"| all {len(rows)} | | | max {max(errors['rs']):.2f} | max {max(errors['reg']):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", nargs="+", default=["small", "clinical"], choices=["small", "clinical"])
    parser.add_argument("--phases", type=int, default=10)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--accuracy", type=int, default=0, metavar="N",
                        help="measure tumour-motion accuracy on N small-grid patients instead")
    args = parser.parse_args()
    if args.accuracy:
        with tempfile.TemporaryDirectory() as tmp:
            _accuracy(args.accuracy, args.seed, Path(tmp))
        return
    with tempfile.TemporaryDirectory() as tmp:
        rows = [_bench(grid, args.phases, args.seed, Path(tmp)) for grid in args.grids]
    print(f"| grid | 4D phantom, {args.phases} phases (s) | rtdeep fourd (s) | DRR per beam (s) | "
          "tumour p2p truth x/y/z (mm) | measured x/y/z (mm) | max centroid error (mm) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        truth = "/".join(f"{v:.1f}" for v in row["truth_p2p"])
        measured = "/".join(f"{v:.1f}" for v in row["measured_p2p"])
        print(f"| {row['grid']} | {row['generate_s']:.0f} | {row['fourd_s']:.0f} | {row['drr_per_beam_s']:.1f} | "
              f"{truth} | {measured} | {row['max_centroid_error_mm']:.2f} |")


if __name__ == "__main__":
    main()
