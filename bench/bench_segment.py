"""Benchmark ``rtdeep segment``: DICOM CT folder to written RTSTRUCT, wall time and peak RSS per model.

Each model runs as its own process (``python -m rtdeep segment CT --model M --out DIR --threads 2``)
pinned to two CPU cores where ``taskset`` exists; the peak resident set size comes from the
kernel's rusage of that child (``os.wait4``). The CT is a clinical-grid phantom (512x512 pixels,
2.5-3 mm slices; the generator's couch, headrest and mask included) written to
``bench/out/bench_segment/``, one per version of the phantom generator. Medians over ``--repeats`` runs.

With ``--slice-mm 1`` the CT is the first phantom of that seed from index 900 on whose scanner
was sampled with that slice thickness (a 1 mm thorax or head-and-neck CT has 300-340 slices).

Usage:
    python bench/bench_segment.py [--models thorax_unet3d ...] [--repeats 3] [--json OUT.json] [--slice-mm 1]

Targets (issue 5, item 8): <= 15 s wall and <= 3 GB peak RSS per deep model on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = PROJECT_ROOT / "bench" / "out" / "bench_segment"
sys.path.insert(0, str(PROJECT_ROOT))


def _busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy (``/proc/stat``: all but idle and iowait), or None
    where there is no ``/proc/stat``."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _other_jobs_share(busy_before: float | None, elapsed_s: float, own_cpu_s: float) -> str:
    """How busy the machine was with other work while a model's runs went: its busy CPU time less
    the runs' own, as a share of the 2 cores' time."""
    busy_after = _busy_cpu_seconds()
    if busy_before is None or busy_after is None or elapsed_s <= 0:
        return "other jobs on the machine not measured"
    share = max(busy_after - busy_before - own_cpu_s, 0.0) / (2 * elapsed_s)
    return f"other jobs used {100 * share:.0f} % of 2 cores meanwhile"


def _phantom_index(site: str, slice_mm: float | None) -> int:
    """Index (seed 7) of the benchmark phantom: 900, or the first from 900 on whose sampled scanner
    has ``slice_mm`` slices (the phantom's own sampler, which draws the scanner before any image)."""
    if slice_mm is None:
        return 900
    from rtdeep.phantom.patient import _rng, _site  # the sampler alone: no phantom is drawn to find it

    spec = _site(site)
    for index in range(900, 2000):
        if spec.sample(_rng(7, spec, index, 0)).scanner.slice_mm == slice_mm:
            return index
    raise SystemExit(f"no {site} phantom of seed 7 with {slice_mm:g} mm slices between indices 900 and 1999")


def _ct_folder(site: str, slice_mm: float | None = None) -> tuple[Path, tuple[int, int, int]]:
    """Write (once per version of the phantom generator) a clinical-grid phantom of ``site`` and return
    its CT folder and shape.

    The phantom is made in a child process: each ``rtdeep segment`` run is forked from this one, and
    the kernel's peak RSS of a child (``ru_maxrss``) starts from its parent's resident size at the
    fork and survives the exec, so a parent that had just generated a phantom (over 1 GB) would be
    reported as every model's peak."""
    import multiprocessing

    from rtdeep.phantom import generator_fingerprint

    index = _phantom_index(site, slice_mm)
    name = f"{site}_p{generator_fingerprint(site)}" + ("" if slice_mm is None else f"_i{index}")
    marker = OUT_DIR / f"{name}.json"
    if not marker.is_file():
        writer = multiprocessing.get_context("spawn").Process(target=_write_ct, args=(site, index, name, marker))
        writer.start()
        writer.join()
        if writer.exitcode != 0 or not marker.is_file():
            raise RuntimeError(f"writing the benchmark CT {name} failed (exit code {writer.exitcode})")
    info = json.loads(marker.read_text())
    return Path(info["ct_dir"]), tuple(info["shape"])  # type: ignore[return-value]


def _write_ct(site: str, index: int, name: str, marker: Path) -> None:
    from rtdeep.phantom import generate_patient, write_patient

    patient = generate_patient(site, index, 7, grid="clinical")
    folder = write_patient(patient, OUT_DIR / name, overwrite=True)
    info = {"ct_dir": str(folder / "CT"), "shape": list(patient.ct.shape), "rs": str(folder / "RS.dcm")}
    marker.write_text(json.dumps(info))


def _run_once(ct_dir: Path, model: str) -> tuple[float, float, float]:
    """(wall s, peak RSS MB, CPU s) of one ``rtdeep segment`` process."""
    out = Path(tempfile.mkdtemp(prefix="bench_segment_"))
    command = [sys.executable, "-m", "rtdeep", "segment", str(ct_dir), "--model", model, "--out", str(out),
               "--threads", "2"]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0,1", *command]
    env = dict(os.environ, RTDEEP_NO_PROGRESS="1")
    try:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"rtdeep segment failed for {model}: {stderr.strip()[-500:]}")
        if not list(out.glob("RS.*.dcm")):
            raise RuntimeError(f"rtdeep segment wrote no RTSTRUCT for {model}")
        return wall, usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    from rtdeep.bundles import list_bundles, read_metadata

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="bundle names or paths (default: every bundled segmentation model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here (read by rtdeep.training.train_all package)")
    parser.add_argument("--slice-mm", type=float, help="a phantom scanned with these slices (e.g. 1: 300-340 slices)")
    args = parser.parse_args(argv)
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    models = args.models or [
        str(p) for p in list_bundles() if read_metadata(p)["rtdeep"].get("kind") == "segmentation"
    ]
    results = {}
    print(f"{'model':<22} {'CT shape (k,j,i)':<18} {'wall s':>7} {'CPU s':>7} {'peak RSS MB':>12}  target")
    for model in models:
        metadata = read_metadata(model)
        site = metadata["rtdeep"]["site"]
        ct_dir, shape = _ct_folder(site, args.slice_mm)
        busy_before, started = _busy_cpu_seconds(), time.perf_counter()
        runs = [_run_once(ct_dir, model) for _ in range(args.repeats)]
        other_share = _other_jobs_share(busy_before, time.perf_counter() - started, sum(r[2] for r in runs))
        wall = statistics.median(r[0] for r in runs)
        rss = statistics.median(r[1] for r in runs)
        cpu = statistics.median(r[2] for r in runs)
        name = metadata["rtdeep"].get("bundle_name") or Path(model).name
        ok = "ok" if wall <= 15.0 and rss <= 3072 else "MISSED"
        print(f"{name:<22} {tuple(shape)!s:<18} {wall:7.1f} {cpu:7.1f} {rss:12.0f}  {ok}")
        results[name] = {
            "wall_s_median": wall, "peak_rss_mb_median": rss, "cpu_s_median": cpu, "repeats": args.repeats,
            "ct_shape_kji": list(shape),
            "description": (
                f"`rtdeep segment` DICOM folder -> RTSTRUCT, phantom CT {shape[2]}x{shape[1]}x{shape[0]} (i x j x k)"
                f"{' (couch, headrest and mask of its own)' if site == 'headneck' else ' (on a couch)'}, "
                f"2 cores, 2 torch threads, median of {args.repeats} runs ({other_share}); "
                f"CPU time (user+sys) median {cpu:.1f} s"
            ),
        }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        previous = json.loads(args.json.read_text()) if args.json.is_file() else {}
        args.json.write_text(json.dumps(previous | results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
