"""Benchmark rtdeep's DICOM RT I/O against SimpleITK and rt-utils on one 512 x 512 x 150 CT.

Writes a synthetic thorax CT (0.977 x 0.977 x 2.5 mm) with six ROIs (External, Lung_L, Lung_R,
Heart, Esophagus, SpinalCord) through rtdeep's writers in a temporary folder, then times, as
medians of ``--repeats`` runs on this machine:

* CT load: ``rtdeep.dicomrt.ct_reader.read_ct_series`` vs SimpleITK ``ImageSeriesReader``.
* masks -> RTSTRUCT (CT already loaded): ``write_rtstruct`` vs rt-utils ``add_roi`` x 6 + ``save``.
* RTSTRUCT -> masks (CT already loaded): ``read_rtstruct`` vs rt-utils ``get_roi_mask_by_name`` x 6.
  rt-utils' own series/RTSTRUCT loading (``create_new`` / ``create_from``) is reported apart.

rt-utils runs in its own virtual environment (``bench/.envs/rtutils``, made on first use with
``python -m venv`` + ``pip install rt-utils opencv-python-headless``) as a subprocess, so rtdeep's
environment stays clean. Agreement: Dice per ROI between rtdeep's and rt-utils' rasterisation of
the same RTSTRUCT, and of each tool's export read back against the original mask.

Usage: ``python bench/bench_dicomrt.py [--repeats 3] [--slices 150]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rtdeep.dicomrt.ct_reader import read_ct_series
from rtdeep.dicomrt.ct_writer import write_ct_series
from rtdeep.dicomrt.rtstruct_reader import read_rtstruct
from rtdeep.dicomrt.rtstruct_writer import write_rtstruct
from rtdeep.dicomrt.types import PatientInfo, Roi
from rtdeep.sites import ORGANS, SITES
from rtdeep.volume import Volume, affine_from_geometry

BENCH_DIR = Path(__file__).resolve().parent
RTUTILS_ENV = BENCH_DIR / ".envs" / "rtutils"

ROI_COLOURS = {name: ORGANS[name].color_rgb for name in ("External", *SITES["thorax"].organ_names)}

RTUTILS_WORKER = r'''
import json, sys, time
import numpy as np
from rt_utils import RTStructBuilder

ct_dir, our_rs, out_dir, masks_path, repeats = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
masks = dict(np.load(masks_path))
colours = json.loads(sys.argv[6])
timing = {"create_new": [], "export": [], "create_from": [], "rasterise": []}
for run in range(repeats):
    t0 = time.perf_counter()
    builder = RTStructBuilder.create_new(dicom_series_path=ct_dir)
    t1 = time.perf_counter()
    for name, mask in masks.items():
        builder.add_roi(mask=np.ascontiguousarray(mask.transpose(1, 2, 0)), color=colours[name], name=name)
    builder.save(f"{out_dir}/RS_rtutils_{run}.dcm")
    t2 = time.perf_counter()
    timing["create_new"].append(t1 - t0)
    timing["export"].append(t2 - t1)
for run in range(repeats):
    t0 = time.perf_counter()
    loaded = RTStructBuilder.create_from(dicom_series_path=ct_dir, rt_struct_path=our_rs)
    t1 = time.perf_counter()
    read = {name: loaded.get_roi_mask_by_name(name) for name in loaded.get_roi_names()}
    t2 = time.perf_counter()
    timing["create_from"].append(t1 - t0)
    timing["rasterise"].append(t2 - t1)
np.savez_compressed(f"{out_dir}/rtutils_read.npz", **{n: m.transpose(2, 0, 1) for n, m in read.items()})
print(json.dumps(timing))
'''


def ensure_rtutils_env() -> Path:
    """The rt-utils interpreter, creating its virtual environment on first use."""
    python = RTUTILS_ENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(RTUTILS_ENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "rt-utils", "opencv-python-headless"], check=True)
    return python


def phantom(n_slices: int) -> tuple[Volume, dict[str, np.ndarray]]:
    """A thorax-like CT in HU and six masks ``[k, j, i]`` on a 512 x 512 axial grid."""
    affine = affine_from_geometry((-249.5, -249.5, -186.0), (0.977, 0.977, 2.5))
    j, i = np.mgrid[:512, :512].astype(np.float32)
    z = np.linspace(-1.0, 1.0, n_slices)
    masks = {name: np.zeros((n_slices, 512, 512), bool) for name in ROI_COLOURS}
    for k, zk in enumerate(z):
        masks["External"][k] = ((i - 256) / 200) ** 2 + ((j - 256) / 140) ** 2 <= 1
        lung_scale = 1 - zk**2
        if lung_scale > 0.05:
            for name, centre in (("Lung_R", 180), ("Lung_L", 332)):
                masks[name][k] = ((i - centre) / (60 * lung_scale**0.5)) ** 2 + ((j - 240) / (90 * lung_scale**0.5)) ** 2 <= 1
        if abs(zk + 0.1) < 0.35:
            scale = 1 - ((zk + 0.1) / 0.35) ** 2
            masks["Heart"][k] = ((i - 275) / (55 * scale**0.5)) ** 2 + ((j - 225) / (45 * scale**0.5)) ** 2 <= 1
        masks["Esophagus"][k] = (i - 256) ** 2 + (j - 300) ** 2 <= 7**2
        masks["SpinalCord"][k] = (i - 256) ** 2 + (j - 350) ** 2 <= 5**2
    for name in ("Lung_L", "Lung_R", "Heart"):
        masks[name] &= masks["External"]
    masks["Lung_L"] &= ~masks["Heart"]
    hu = np.full((n_slices, 512, 512), -1000, np.float32)
    hu[masks["External"]] = 20
    hu[masks["Lung_L"] | masks["Lung_R"]] = -820
    hu[masks["Heart"]] = 40
    hu[masks["SpinalCord"]] = 30
    return Volume(hu, affine), masks


def timed(function, repeats: int) -> tuple[float, object]:
    """Median wall time (s) of ``repeats`` calls and the last result."""
    times, result = [], None
    for run in range(repeats):
        start = time.perf_counter()
        result = function(run)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def sitk_load(ct_dir: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(ct_dir)))
    return sitk.GetArrayFromImage(reader.Execute())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slices", type=int, default=150)
    args = parser.parse_args()
    rtutils_python = ensure_rtutils_env()

    with tempfile.TemporaryDirectory(prefix="bench_dicomrt_") as tmp:
        root = Path(tmp)
        hu, masks = phantom(args.slices)
        patient = PatientInfo(patient_name="Bench^Thorax", patient_id="BENCH", study_date="20260101",
                              study_time="120000", study_id="1")
        start = time.perf_counter()
        written = write_ct_series(hu, root / "CT", patient, uid_seed="bench")
        ct_write_s = time.perf_counter() - start
        rois = [Roi(name, mask, color_rgb=ROI_COLOURS[name]) for name, mask in masks.items()]

        ours_load, ct = timed(lambda run: read_ct_series(root / "CT"), args.repeats)
        sitk_s, sitk_hu = timed(lambda run: sitk_load(root / "CT"), args.repeats)
        assert np.array_equal(np.asarray(sitk_hu, np.float32), ct.volume.array), "SimpleITK and rtdeep HU differ"
        assert ct.sop_instance_uids == written.sop_instance_uids

        ours_export, rs_path = timed(lambda run: write_rtstruct(ct, rois, root / f"RS_rtdeep_{run}.dcm"),
                                     args.repeats)
        ours_read, structure_set = timed(lambda run: read_rtstruct(rs_path, ct), args.repeats)

        np.savez(root / "masks.npz", **masks)
        result = subprocess.run(
            [str(rtutils_python), "-c", RTUTILS_WORKER, str(root / "CT"), str(rs_path), str(root),
             str(root / "masks.npz"), str(args.repeats), json.dumps(ROI_COLOURS)],
            check=True, capture_output=True, text=True)
        rt_timing = {key: statistics.median(values) for key, values in json.loads(result.stdout.splitlines()[-1]).items()}
        rtutils_read = dict(np.load(root / "rtutils_read.npz"))
        rtutils_export_read = read_rtstruct(root / "RS_rtutils_0.dcm", ct)
        rs_size = rs_path.stat().st_size / 1e6
        rtutils_size = (root / "RS_rtutils_0.dcm").stat().st_size / 1e6

    n_voxels = hu.array.size
    print(f"# bench_dicomrt: CT {hu.shape[2]}x{hu.shape[1]}x{hu.shape[0]} ({n_voxels / 1e6:.1f} Mvoxel), "
          f"6 ROIs, median of {args.repeats} runs (rtdeep CT write {ct_write_s:.2f} s, once)")
    print()
    print("| task | rtdeep (s) | reference | reference (s) | speed-up (ref / rtdeep) |")
    print("|---|---|---|---|---|")
    rows = [
        (f"CT load (512x512x{args.slices})", ours_load, "SimpleITK ImageSeriesReader", sitk_s),
        ("masks -> RTSTRUCT, CT loaded", ours_export, "rt-utils add_roi x6 + save", rt_timing["export"]),
        ("RTSTRUCT -> masks, CT loaded", ours_read, "rt-utils get_roi_mask_by_name x6", rt_timing["rasterise"]),
        ("RTSTRUCT -> masks incl. CT load", ours_read + ours_load, "rt-utils create_from + masks",
         rt_timing["create_from"] + rt_timing["rasterise"]),
        ("masks -> RTSTRUCT incl. CT load", ours_export + ours_load, "rt-utils create_new + add_roi + save",
         rt_timing["create_new"] + rt_timing["export"]),
    ]
    for task, ours, reference, theirs in rows:
        print(f"| {task} | {ours:.3f} | {reference} | {theirs:.3f} | {theirs / ours:.2f}x |")
    print()
    print(f"RTSTRUCT size: rtdeep {rs_size:.2f} MB, rt-utils {rtutils_size:.2f} MB")
    print()
    print("| ROI | voxels | rtdeep export->rtdeep read vs mask | rt-utils read vs rtdeep read (same file) "
          "| rt-utils export->rtdeep read vs mask |")
    print("|---|---|---|---|---|")
    for name, mask in masks.items():
        ours_mask = structure_set[name].mask
        print(f"| {name} | {int(mask.sum())} | {dice(ours_mask, mask):.4f} | "
              f"{dice(rtutils_read[name].astype(bool), ours_mask):.4f} | "
              f"{dice(rtutils_export_read[name].mask, mask):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
