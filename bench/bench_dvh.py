"""Benchmark rtdeep's DVH and crop against dicompyler-core on the same DICOM files.

Writes (once, cached under bench/out/) a synthetic thorax study: a 512x512x150 CT (0.98 mm
pixels, 2.5 mm slices), an RTSTRUCT with six structures plus a GTV, and an RTDOSE on a 2.5 mm grid.
Then it measures, medians of ``--repeats`` runs:

* DVH of the six structures on the CT grid (masks + dose resampled to the CT), target <= 1 s;
* DVH on the dose grid from the RTSTRUCT contours (supersample 1 and 2);
* one patient's crop (lung-dose20) from the loaded study, target <= 2 s;
* dicompyler-core ``dvhcalc.get_dvh`` on the same RTSTRUCT/RTDOSE, run as a subprocess in its own
  venv (bench/.envs/dicompyler: ``python -m venv``; ``pip install dicompyler-core "pydicom<3"
  matplotlib``), and the agreement table: mean dose and D95 within 1 %, volume within 2 %.

Usage: ``python bench/bench_dvh.py [--small] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
DICOMPYLER_PYTHON = ROOT / ".envs" / "dicompyler" / "bin" / "python"
STRUCTURES = ["External", "Lung_L", "Lung_R", "Heart", "Esophagus", "SpinalCord"]
#: every structure is an ellipsoid (centre, semi-axes in LPS mm), inside the CT: its true volume is known
ELLIPSOIDS = {
    "External": ((0, 0, 0), (170, 120, 175)),
    "Lung_R": ((-75, -5, 20), (60, 80, 110)),
    "Lung_L": ((75, -5, 20), (55, 80, 105)),
    "Heart": ((25, -35, -50), (55, 45, 50)),
    "Esophagus": ((5, 40, 0), (9, 9, 150)),
    "SpinalCord": ((0, 85, 0), (6, 6, 170)),
    "GTV": ((-70, -10, 40), (22, 20, 25)),
}

DICOMPYLER_SCRIPT = r"""
import json, sys, time
from dicompylercore import dicomparser, dvhcalc
rs = dicomparser.DicomParser(sys.argv[1])
rd = dicomparser.DicomParser(sys.argv[2])
wanted = json.loads(sys.argv[3])
structures = rs.GetStructures()
out = {}
start = time.perf_counter()
for key, s in structures.items():
    if s["name"] not in wanted:
        continue
    t = time.perf_counter()
    dvh = dvhcalc.get_dvh(sys.argv[1], sys.argv[2], key)
    out[s["name"]] = {"volume_cc": float(dvh.volume), "mean_gy": float(dvh.mean), "max_gy": float(dvh.max),
                      "D95_gy": float(dvh.D95.value), "D2cc_gy": float(dvh.D2cc.value),
                      "V20_cc": float(dvh.V20Gy.value), "seconds": time.perf_counter() - t}
out["_total_seconds"] = time.perf_counter() - start
print(json.dumps(out))
"""


def _ellipsoid(lps: tuple[np.ndarray, np.ndarray, np.ndarray], centre, radii) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(lps, centre, radii)) <= 1.0


def make_study(folder: Path, small: bool) -> Path:
    """Write CT, RS and RD of a synthetic thorax into ``folder`` (skipped if already there)."""
    from rtdeep.dicomrt.ct_writer import write_ct_series
    from rtdeep.dicomrt.rtdose_writer import write_rtdose
    from rtdeep.dicomrt.rtstruct_writer import write_rtstruct
    from rtdeep.dicomrt.types import PatientInfo, Roi
    from rtdeep.volume import Volume, affine_from_geometry

    if (folder / "RD.dcm").is_file():
        return folder
    n_xy, n_z = (128, 40) if small else (512, 150)
    pixel = 500.0 / n_xy
    slice_mm = 375.0 / n_z
    ct_affine = affine_from_geometry((-250 + pixel / 2, -250 + pixel / 2, -187.5 + slice_mm / 2),
                                     (pixel, pixel, slice_mm))
    ct_grid = Volume(np.zeros((n_z, n_xy, n_xy), np.float32), ct_affine)
    k = np.arange(n_z)[:, None, None]
    j = np.arange(n_xy)[None, :, None]
    i = np.arange(n_xy)[None, None, :]
    x, y, z = (ct_affine[0, 0] * i + ct_affine[0, 3], ct_affine[1, 1] * j + ct_affine[1, 3],
               ct_affine[2, 2] * k + ct_affine[2, 3])
    lps = (x, y, z)
    masks = {name: _ellipsoid(lps, centre, radii) for name, (centre, radii) in ELLIPSOIDS.items()}
    hu = np.where(masks["External"], 40.0, -1000.0).astype(np.float32)
    hu[masks["Lung_L"] | masks["Lung_R"]] = -830.0
    hu[masks["GTV"]] = 30.0
    series = write_ct_series(ct_grid.with_array(hu), folder / "CT", PatientInfo(patient_id="BENCH-DVH"),
                             uid_seed="bench-dvh")
    rois = [Roi(name, mask, number=n + 1) for n, (name, mask) in enumerate(masks.items())]
    write_rtstruct(series, rois, folder / "RS.dcm", uid_seed="bench-dvh")
    # dose: 2.5 mm grid over the body, a 60 Gy high-dose region around the GTV from a few
    # opposed beams (Gaussian penumbra) plus scatter falling off with distance
    d_mm = 2.5
    dose_affine = affine_from_geometry((-200.0, -140.0, -185.0), (d_mm, d_mm, d_mm))
    shape = (int(370 / d_mm), int(280 / d_mm), int(400 / d_mm))
    kd, jd, id_ = np.indices(shape, dtype=np.float32)
    xd, yd, zd = (-200 + d_mm * id_, -140 + d_mm * jd, -185 + d_mm * kd)
    centre = np.array([-70.0, -10.0, 40.0])
    dose = np.zeros(shape, np.float32)
    for angle in np.deg2rad([0, 50, 130, 180, 230, 310]):
        direction = np.array([np.sin(angle), -np.cos(angle)])
        across = (xd - centre[0]) * direction[1] - (yd - centre[1]) * direction[0]
        along = (xd - centre[0]) * direction[0] + (yd - centre[1]) * direction[1]
        lateral = 1.0 / (1.0 + np.exp((np.abs(across) - 35.0) / 4.0))
        axial = 1.0 / (1.0 + np.exp((np.abs(zd - centre[2]) - 40.0) / 4.0))
        dose += 10.0 * lateral * axial * np.exp(-0.004 * (along + 150.0))
    dose *= 60.0 / float(dose.max())
    dose += 15.0 * np.exp(-np.sqrt((xd - centre[0]) ** 2 + (yd - centre[1]) ** 2 + (zd - centre[2]) ** 2) / 90.0)
    write_rtdose(Volume(dose.astype(np.float32), dose_affine), series, folder / "RD.dcm", uid_seed="bench-dvh")
    return folder


def _median_seconds(function, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run_dicompyler(rs: Path, rd: Path) -> dict | None:
    if not DICOMPYLER_PYTHON.exists():
        print(f"dicompyler-core venv not found at {DICOMPYLER_PYTHON}: skipping the reference", file=sys.stderr)
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(DICOMPYLER_SCRIPT)
    try:
        done = subprocess.run([str(DICOMPYLER_PYTHON), handle.name, str(rs), str(rd), json.dumps(STRUCTURES)],
                              capture_output=True, text=True, check=True)
    finally:
        Path(handle.name).unlink()
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="128x128x40 CT instead of 512x512x150")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from rtdeep.crop import crop_study
    from rtdeep.dicomrt.rtstruct_reader import read_contours
    from rtdeep.dicomrt.study import load_study
    from rtdeep.dvh import dvh_on_ct_grid, dvh_on_dose_grid

    folder = make_study(ROOT / "out" / ("dvh_study_small" if args.small else "dvh_study"), args.small)
    start = time.perf_counter()
    study = load_study(folder)
    load_s = time.perf_counter() - start
    ct = study.ct.volume
    print(f"study: CT {ct.shape[2]}x{ct.shape[1]}x{ct.shape[0]} (i x j x k), spacing "
          f"{np.round(ct.spacing_mm, 2).tolist()} mm; dose grid {study.dose.dose.shape[::-1]}; load_study {load_s:.1f} s")

    ct_s, on_ct = _median_seconds(lambda: dvh_on_ct_grid(ct, study.structure_set, study.dose_on_ct, STRUCTURES,
                                                         dose_grid=study.dose.dose), args.repeats)
    ct_native_s, _ = _median_seconds(lambda: dvh_on_ct_grid(ct, study.structure_set, study.dose.dose, STRUCTURES),
                                     args.repeats)
    contours = read_contours(study.structure_set.path)
    dose_s, on_dose = _median_seconds(lambda: dvh_on_dose_grid(study.dose.dose, contours, STRUCTURES),
                                      args.repeats)
    dose2_s, on_dose2 = _median_seconds(
        lambda: dvh_on_dose_grid(study.dose.dose, contours, STRUCTURES, supersample=2), args.repeats)
    crop_s, crop = _median_seconds(lambda: crop_study(ct, study.structure_set, study.dose, "lung-dose20"),
                                   args.repeats)
    crop_ct_s, _ = _median_seconds(lambda: crop_study(ct, study.structure_set, study.dose_on_ct, "lung-dose20"),
                                   args.repeats)
    start = time.perf_counter()
    reference = run_dicompyler(study.structure_set.path, study.dose.path)
    reference_wall_s = time.perf_counter() - start

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nspeed (median of {args.repeats}, this machine: {os.cpu_count()} CPUs, load average {load:.1f})")
    print(f"  DVH, 6 structures, CT grid, dose already on CT (Study.dose_on_ct) {ct_s:7.3f} s   (target <= 1 s)")
    print(f"  DVH, 6 structures, CT grid, native dose resampled per structure  {ct_native_s:7.3f} s")
    print(f"  DVH, 6 structures, dose grid from contours, supersample 1        {dose_s:7.3f} s")
    print(f"  DVH, 6 structures, dose grid from contours, supersample 2        {dose2_s:7.3f} s")
    print(f"  crop lung-dose20 (native dose grid), {crop.ct.shape} voxels        {crop_s:7.3f} s   (target <= 2 s)")
    print(f"  crop lung-dose20 (dose on CT grid)                               {crop_ct_s:7.3f} s")
    if reference is not None:
        print(f"  dicompyler-core get_dvh, 6 structures (in its process)           "
              f"{reference['_total_seconds']:7.3f} s   (subprocess wall {reference_wall_s:.1f} s)")
        ratio = reference["_total_seconds"] / dose_s
        print(f"  ratio dicompyler / rtdeep dose-grid DVH                          {ratio:7.1f} x")

        print("\nagreement with dicompyler-core (differences in %; limits: mean, D95 1 %; volume 2 %)")
        print(f"{'structure':<11} {'method':<10} {'volume cc':>10} {'mean Gy':>8} {'D95 Gy':>7} "
              f"{'dVol%':>6} {'dMean%':>7} {'dD95%':>6}  ok")
        failures = 0
        for name in STRUCTURES:
            ref = reference[name]
            radii = ELLIPSOIDS[name][1]
            true_cc = 4 / 3 * np.pi * radii[0] * radii[1] * radii[2] / 1000
            print(f"{name:<11} {'analytic':<10} {true_cc:10.1f}   (true ellipsoid volume; dicompyler "
                  f"{100 * (ref['volume_cc'] / true_cc - 1):+.1f} %)")
            print(f"{'':<11} {'dicompyler':<10} {ref['volume_cc']:10.1f} {ref['mean_gy']:8.3f} {ref['D95_gy']:7.2f}")
            for label, dvhs in (("rtdeep-dg", on_dose), ("rtdeep-dg2", on_dose2), ("rtdeep-ct", on_ct)):
                dvh = dvhs[name]
                d95 = dvh.dose_at_volume_pct(95)
                d_vol = 100 * (dvh.volume_cc / ref["volume_cc"] - 1)
                d_mean = 100 * (dvh.mean_gy / ref["mean_gy"] - 1)
                d_d95 = 100 * (d95 / ref["D95_gy"] - 1) if ref["D95_gy"] > 0 else float("nan")
                ok = abs(d_vol) <= 2 and abs(d_mean) <= 1 and (abs(d_d95) <= 1 or abs(d95 - ref["D95_gy"]) <= 0.02)
                failures += not ok
                print(f"{'':<11} {label:<10} {dvh.volume_cc:10.1f} {dvh.mean_gy:8.3f} {d95:7.2f} "
                      f"{d_vol:6.2f} {d_mean:7.2f} {d_d95:6.2f}  {'yes' if ok else 'NO'}")
        print(f"\n{failures} row(s) outside the limits")
        print("rtdeep-dg: dose grid, supersample 1 (dicompyler's method); rtdeep-dg2: supersample 2; "
              "rtdeep-ct: CT-grid masks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
