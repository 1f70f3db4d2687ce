"""Peak memory of the CT and RT Dose readers against the size of the data they read.

Writes a clinical-size CT (512 x 512 x 80, int16) and a 32-bit RT Dose (200 x 200 x 120) with the
project's writers, then reads each in a fresh process and reports the peak traced allocation
(tracemalloc: numpy arrays and pydicom's bytes) and the rise of the resident set (VmHWM after the
read, its peak reset just before, minus VmRSS before), both as a multiple of the pixel data::

    .venv/bin/python bench/bench_reader_memory.py [--slices 80]

The issue's bound (rtdeep issue 11): memory never exceeds 3x the real data size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

_CHILD = r"""
import json, sys, tracemalloc
from pathlib import Path
from rtdeep.dicomrt.ct_reader import read_ct_series
from rtdeep.dicomrt.rtdose_reader import read_rtdose
kind, path, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

def resident(field):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field))

if mode == "traced":
    tracemalloc.start()
else:
    open("/proc/self/clear_refs", "w").write("5")  # the peak resident set restarts from now
    before = resident("VmRSS:")
result = read_ct_series(path) if kind == "ct" else read_rtdose(path)
if mode == "traced":
    print(json.dumps(tracemalloc.get_traced_memory()[1]))
else:
    print(json.dumps(resident("VmHWM:") - before))
"""


def _write(folder: Path, n_slices: int) -> dict[str, tuple[Path, int]]:
    from rtdeep.dicomrt.ct_writer import write_ct_series
    from rtdeep.dicomrt.rtdose_writer import write_rtdose
    from rtdeep.dicomrt.types import PatientInfo
    from rtdeep.volume import Volume

    rng = np.random.default_rng(0)
    affine = np.diag([0.98, 0.98, 2.5, 1.0])
    affine[:3, 3] = (-250.0, -250.0, 0.0)
    hu = rng.integers(-1000, 1500, (n_slices, 512, 512)).astype(np.float32)
    ct = write_ct_series(Volume(hu, affine), folder / "CT", PatientInfo(patient_id="MEM"), uid_seed="mem")
    dose_affine = np.diag([2.5, 2.5, 2.5, 1.0])
    dose_affine[:3, 3] = (-250.0, -250.0, 0.0)
    dose = rng.random((120, 200, 200), dtype=np.float32) * 70.0
    write_rtdose(Volume(dose, dose_affine), ct, folder / "RD.dcm", uid_seed="mem")
    return {"ct": (folder / "CT", hu.size * 2), "rtdose": (folder / "RD.dcm", dose.size * 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=80)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rtdeep-mem-") as tmp:
        objects = _write(Path(tmp), args.slices)
        print(f"{'reader':<8} {'pixel data MiB':>15} {'traced peak MiB':>16} {'x data':>7} {'RSS rise MiB':>13} "
              f"{'x data':>7}")
        for kind, (path, data_bytes) in objects.items():
            measured = {}
            for mode in ("traced", "resident"):
                out = subprocess.run([sys.executable, "-c", _CHILD, kind, str(path), mode], check=True,
                                     capture_output=True, text=True)
                measured[mode] = json.loads(out.stdout)
            mib = 2.0**20
            print(f"{kind:<8} {data_bytes / mib:15.1f} {measured['traced'] / mib:16.1f} "
                  f"{measured['traced'] / data_bytes:7.2f} {measured['resident'] / mib:13.1f} "
                  f"{measured['resident'] / data_bytes:7.2f}")

if __name__ == "__main__":
    main()
