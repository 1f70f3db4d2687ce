"""Benchmark the web app (``rtdeep app``) as a user sees it, in Debian's chromium driven by Playwright.

Two numbers, medians over ``--repeats`` runs:

* first frame: from starting ``rtdeep app --data <demo study>`` (a fresh server subprocess that opens
  the study at start) to the moment the axial view in the page shows the CT (a streamed image with
  pixel standard deviation above 10, not the blank first frame);
* segmentation in the page: from the click on Run to the Dice table's rows (worker subprocess,
  ROIs into MRML, metrics, review outlines), on one server, the default thorax model.

The demo patient is the project's phantom (seed 2026, as ``rtdeep demo``), on the small grid unless
``--clinical``. Server resident memory is read from /proc after the runs of the first server (study
loaded at start, ``--repeats`` segmentations): VmRSS (now) and VmHWM (peak). ``--memory-steps``
instead prints where the server's memory goes: VmRSS after each step of one server's life (imports,
the views, the study, the model list, one segmentation with its metrics), in a fresh process that
drives the app without a browser.

Usage:
    python bench/bench_web.py [--repeats 3] [--clinical] [--memory-steps]

Targets (issue 13, item 5): first frame <= 10 s, segmentation of the demo CT in the page <= 15 s.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _demo_study(folder: Path, clinical: bool) -> Path:
    from rtdeep.cli import main

    argv = ["phantom", "--site", "thorax", "--patients", "1", "--seed", "2026", "--out", str(folder)]
    if not clinical:
        argv.append("--small")
    if main(argv) != 0:
        raise SystemExit("phantom generation failed")
    return next(p for p in sorted(folder.iterdir()) if p.is_dir())


def _start_server(study: Path, log: Path) -> tuple[subprocess.Popen, str, float]:
    port = _free_port()
    env = {**os.environ, "VTK_DEFAULT_OPENGL_WINDOW": "vtkEGLRenderWindow"}
    started = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "rtdeep", "app", "--data", str(study), "--port", str(port)],
            stdout=handle, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    while True:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, f"http://127.0.0.1:{port}/", started
        except OSError:
            time.sleep(0.05)


def _axial_shows_ct(page) -> bool:
    from PIL import Image

    item = page.locator(".layout-grid-item").first
    if item.locator("img").count() == 0:
        return False
    pixels = np.asarray(Image.open(io.BytesIO(item.screenshot())).convert("L"), dtype=np.float32)
    return float(pixels.std()) > 10.0


def _memory_mb(pid: int, field: str) -> float:
    """``field`` of /proc/<pid>/status (``VmRSS``: resident now, ``VmHWM``: peak resident) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _memory_steps(study: Path) -> None:
    """Print VmRSS after each step of a server's life on ``study`` (run in a fresh process)."""
    import asyncio

    steps: list[tuple[str, float]] = [("python and numpy", _memory_mb(os.getpid(), "VmRSS"))]

    def step(name: str) -> None:
        steps.append((name, _memory_mb(os.getpid(), "VmRSS")))

    import slicer  # noqa: F401
    import trame_slicer.core  # noqa: F401

    from rtdeep.model_database import default_model
    from rtdeep.web.app import RtDeepWebApp
    from rtdeep.web.files import DataRoot

    step("import slicer-core, trame-slicer")
    app = RtDeepWebApp(DataRoot(study))
    step("app: Slicer app, four views, page")
    app.open_initial_study()
    step("study in the scene")
    app.seg_logic.modelDescriptions(app.state.seg_site)
    step("model list (models.json; no torch)")

    async def segment() -> None:
        app.state.seg_model = default_model(app.state.seg_site)
        app.run_segmentation()
        await app._seg_task

    asyncio.run(segment())
    if app.state.error_message or not app.state.seg_seconds:
        raise SystemExit(f"segmentation failed: {app.state.error_message}")
    step(f"one segmentation and its metrics ({app.state.seg_model})")
    print(f"{'step':<48} {'VmRSS MB':>9} {'added':>7}")
    for (name, rss), (_, before) in zip(steps, [("", 0.0), *steps]):
        print(f"{name:<48} {rss:9.0f} {rss - before:7.0f}")
    print(f"peak (VmHWM) {_memory_mb(os.getpid(), 'VmHWM'):.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clinical", action="store_true", help="512x512 demo CT instead of the small grid")
    parser.add_argument("--memory-steps", action="store_true", help="VmRSS after each step of one server")
    parser.add_argument("--memory-steps-of", type=Path, help=argparse.SUPPRESS)  # the fresh process's study
    args = parser.parse_args()
    if args.memory_steps_of:
        _memory_steps(args.memory_steps_of)
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-web-"))
    study = _demo_study(work / "data", args.clinical)
    if args.memory_steps:
        env = {**os.environ, "VTK_DEFAULT_OPENGL_WINDOW": "vtkEGLRenderWindow"}
        command = [sys.executable, __file__, "--memory-steps-of", str(study)]
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        grid = "clinical 512x512" if args.clinical else "small 128x128"
        print(f"\nrtdeep app server memory, demo thorax phantom ({grid}), no browser")
        print(output[output.index("step ") :], end="")
        return 0
    from playwright.sync_api import sync_playwright

    first_frames: list[float] = []
    segmentations: list[float] = []
    rss: list[float] = []
    peak_rss: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for repeat in range(args.repeats):
            process, url, started = _start_server(study, work / f"server{repeat}.log")
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 950})
                page.goto(url)
                page.wait_for_selector(".layout-grid-item img", timeout=120_000)
                while not _axial_shows_ct(page):
                    if time.perf_counter() - started > 120:
                        raise SystemExit("no CT in the axial view after 120 s")
                first_frames.append(time.perf_counter() - started)
                if repeat == 0:
                    for _ in range(args.repeats):
                        page.wait_for_selector("#run-segmentation:not([disabled])", timeout=120_000)
                        clicked = time.perf_counter()
                        page.click("#run-segmentation")
                        # the click clears the previous table at once; wait for that, then for the new rows
                        page.wait_for_function("() => !document.querySelector('#dice-table tbody tr')")
                        page.wait_for_selector("#dice-table tbody tr", timeout=300_000)
                        segmentations.append(time.perf_counter() - clicked)
                        page.wait_for_selector("#run-segmentation:not([disabled])", timeout=60_000)
                rss.append(_memory_mb(process.pid, "VmRSS"))
                peak_rss.append(_memory_mb(process.pid, "VmHWM"))
                page.close()
            finally:
                process.terminate()
                process.wait(timeout=30)
        browser.close()

    grid = "clinical 512x512" if args.clinical else "small 128x128"
    print(f"\nrtdeep app, demo thorax phantom ({grid}), {os.cpu_count()} CPUs, chromium headless")
    print(f"{'measure':<40} {'median':>8} {'min':>8} {'max':>8} {'runs':>5} {'target':>8}")
    for name, values, target in (
        ("first frame after start (s)", first_frames, "<= 10"),
        ("segmentation in the page (s)", segmentations, "<= 15"),
        ("server RSS after the runs (MB)", rss, "-"),
        ("server peak RSS (MB)", peak_rss, "-"),
    ):
        print(
            f"{name:<40} {statistics.median(values):8.1f} {min(values):8.1f} {max(values):8.1f}"
            f" {len(values):5d} {target:>8}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
