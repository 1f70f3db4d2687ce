"""``rtdeep demo``: the whole workflow on the bundled demo patient, one command per step.

The demo patient is a synthetic thorax phantom generated deterministically (same seed, same
files), so nothing real is shipped. Each step runs the same ``rtdeep`` subcommand a user would
type, and the command lines are printed so they can be copied.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from rtdeep.errors import RtDeepError
from rtdeep.model_database import default_model

HELP = "run the whole workflow (AI contours, review, RTSTRUCT, DVH, crop, pneumonitis risk) on the demo patient"

DEMO_SEED = 2026
DEMO_SITE = "thorax"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="new output folder (must not exist or be empty)")
    parser.add_argument("--model", help="segmentation model (default: the bundled thorax model with the best "
                        "held-out Dice in models.json)")
    parser.add_argument("--small", action="store_true", help="use the small 128x128 grid (faster)")


def demo_steps(out: Path, study: Path, model: str) -> list[tuple[str, list[str]]]:
    """The demo's steps as (title, rtdeep argv) pairs, in order; ``study`` is the patient folder."""
    ai_dir = out / "ai_contours"
    return [
        ("What is in the study", ["info", str(study)]),
        ("Validate the study (dciodvfy + cross-references)", ["validate", "--errors-only", str(study)]),
        (
            f"AI contours with {model} -> RTSTRUCT",
            ["segment", str(study / "CT"), "--model", model, "--out", str(ai_dir), "--reference", str(study / "RS.dcm")],
        ),
        ("Validate the AI RTSTRUCT against its CT", ["validate", "--errors-only", str(ai_dir), str(study / "CT")]),
        (
            "Review: AI (red) against reference (yellow) contours",
            ["compare", "--ct", str(study / "CT"), "--reference", str(study / "RS.dcm"),
             "--test", str(ai_dir / f"RS.{model}.dcm"), "--out", str(out / "review")],
        ),
        ("Dose-volume histograms and NTCP", ["dvh", str(study), "--out", str(out / "dvh")]),
        ("Crop: normal lung and dose >= 20 Gy, saved as .mat", ["crop", str(study), "--roi", "lung-dose20",
                                                             "--format", "mat", "nifti", "--out", str(out / "crop")]),
        (
            "Pneumonitis (grade >= 2) risk",
            ["predict-pneumonitis", str(study), "--threshold", "20", "--json", str(out / "pneumonitis" / "risk.json"),
             "--out", str(out / "pneumonitis")],
        ),
    ]


def run(args: argparse.Namespace) -> int:
    from rtdeep.cli import main as rtdeep_main

    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        raise RtDeepError("demo output folder is not empty; choose a new one", path=out)
    cohort_dir = out / "patient"
    generate = ["phantom", "--site", DEMO_SITE, "--patients", "1", "--seed", str(DEMO_SEED), "--out", str(cohort_dir)]
    if args.small:
        generate.append("--small")
    steps = [("Generate the demo patient (synthetic thorax phantom: CT, RTSTRUCT, RTPLAN, RTDOSE)", generate)]
    started = time.perf_counter()
    for title, argv in steps:
        _run_step(rtdeep_main, title, argv)
    study = next(p for p in sorted(cohort_dir.iterdir()) if p.is_dir())
    model = args.model or default_model(DEMO_SITE)  # read here, not when every command's parser is built
    for title, argv in demo_steps(out, study, model):
        _run_step(rtdeep_main, title, argv)
    print(f"\nDemo finished in {time.perf_counter() - started:.0f} s. Outputs in {out}:")
    for path in sorted(p for p in out.rglob("*") if p.is_file() and "CT" not in p.parts):
        print(f"  {path.relative_to(out)}")
    return 0


def _run_step(rtdeep_main, title: str, argv: list[str]) -> None:
    print(f"\n=== {title}\n$ rtdeep {shlex.join(argv)}", flush=True)
    status = rtdeep_main(argv)
    if status not in (0, None):
        raise RtDeepError(f"step failed (exit status {status}): rtdeep {shlex.join(argv)}")
