"""Mutation fuzzing of the DICOM readers: CT slice, RT Structure Set, RT Dose (and the header scan).

A tiny valid study (6 slices of 24 x 20 voxels, two ROIs, a 32-bit dose) is written with the
project's writers; each mutant (also run through ``rtdeep validate``'s checks) is one of its files with random bytes changed, a span overwritten,
a chunk inserted or removed, or the file cut short. A reader must either read the mutant or raise a
typed :class:`rtdeep.errors.RtDeepError`; anything else (an ``IndexError``, a ``MemoryError``...) is
an unhandled exception, and a mutant that takes longer than the timeout is a hang.

The suite runs a quick pass with hypothesis (Testing/test_fuzz_readers.py). The long run::

    nice -n 10 .venv/bin/python Testing/fuzz_readers.py --mutants 10000 --seed 1 --out /tmp/fuzz

prints a table of outcomes per reader and keeps every failing mutant under ``--out``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["TARGETS", "FuzzStudy", "build_fuzz_study", "exercise", "mutate"]

#: reader name -> the study file it reads
TARGETS = {"ct": "CT/CT_0003.dcm", "rtstruct": "RS.dcm", "rtdose": "RD.dcm"}


@dataclass
class FuzzStudy:
    folder: Path
    ct: object  # CtSeries the structure set and dose are read against
    originals: dict[str, bytes]
    spans: dict[str, list[tuple[int, bytes | None, int, int]]]  # each file's elements (tag, VR, offset, length)


def build_fuzz_study(folder: Path) -> FuzzStudy:
    """Write the tiny valid study under ``folder`` and read its CT once."""
    from rtdeep.dicomrt.ct_reader import read_ct_series
    from rtdeep.dicomrt.ct_writer import write_ct_series
    from rtdeep.dicomrt.rtdose_writer import write_rtdose
    from rtdeep.dicomrt.rtstruct_writer import write_rtstruct
    from rtdeep.dicomrt.types import PatientInfo, Roi
    from rtdeep.volume import Volume

    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = (-20.0, -24.0, 10.0)
    kk, jj, ii = np.mgrid[0:6, 0:20, 0:24]
    hu = np.where((ii - 12) ** 2 + (jj - 10) ** 2 < 64, 40.0, -1000.0).astype(np.float32)
    patient = PatientInfo(patient_name="FUZZ^TEST", patient_id="FUZZ1", study_instance_uid="1.2.826.0.1.3680043.10.511.9")
    ct = write_ct_series(Volume(hu, affine), folder / "CT", patient, uid_seed="fuzz")
    body = (ii - 12) ** 2 + (jj - 10) ** 2 < 64
    core = body & ((ii - 12) ** 2 + (jj - 10) ** 2 < 9) & (kk > 0) & (kk < 5)
    rois = [Roi("Body", body, 1, (0, 255, 0), "EXTERNAL"), Roi("GTV", core, 2, (255, 0, 0), "GTV")]
    write_rtstruct(ct, rois, folder / "RS.dcm", uid_seed="fuzz", label="FUZZ")
    dose_affine = np.diag([4.0, 4.0, 3.0, 1.0])
    dose_affine[:3, 3] = (-20.0, -24.0, 10.0)
    dose = np.fromfunction(lambda k, j, i: 50.0 - (i - 6) ** 2 - (j - 5) ** 2 + k, (6, 10, 12)).astype(np.float32)
    write_rtdose(Volume(np.clip(dose, 0, None), dose_affine), ct, folder / "RD.dcm", uid_seed="fuzz")
    import pydicom

    from rtdeep.dicomrt.dataset import element_spans

    ct_read = read_ct_series(folder / "CT")
    originals = {name: (folder / rel).read_bytes() for name, rel in TARGETS.items()}
    spans = {name: element_spans(data, pydicom.dcmread(folder / TARGETS[name]).original_encoding[0])
             for name, data in originals.items()}
    return FuzzStudy(folder, ct_read, originals, spans)


#: values written over an element's value (padded or cut to its length): what broke readers before
_TEXT_VALUES = [b"nan", b"two", b"1\\2", b"-1", b"0", b"", b"\x00", b"1e999", b"inf", b"-0", b"\\", b"65535",
                b"99999999", b"0\\0", b"3.5", b"GY", b"RELATIVE", b"POINT"]
_VRS = [b"UM", b"UN", b"OB", b"SQ", b"XX", b"US", b"DS", b"  "]


def mutate(data: bytes, rng: np.random.Generator, spans: list | None = None) -> bytes:
    """One to four random edits: flip bytes, overwrite a span, insert or delete a chunk, truncate,
    or (given the file's element ``spans``) replace one element's value or VR in place."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        kind = int(rng.integers(0, 9 if spans else 6))
        if kind >= 6:
            _mutate_element(out, spans, rng, vr_only=kind == 8)  # type: ignore[arg-type]
            continue
        position = int(rng.integers(0, max(len(out), 1)))
        if kind <= 1:  # bytes set to random values (a tag, a VR, a length byte...)
            for _ in range(int(rng.integers(1, 9))):
                out[int(rng.integers(0, len(out)))] = int(rng.integers(0, 256))
        elif kind == 2:  # a span overwritten with a "special" value: 0x00, 0xFF, a backslash, a digit
            fill = bytes([int(rng.choice([0x00, 0xFF, 0x5C, 0x30, 0x20, 0x2D]))])
            length = int(rng.integers(1, 64))
            out[position:position + length] = fill * len(out[position:position + length])
        elif kind == 3:
            out[position:position] = rng.integers(0, 256, int(rng.integers(1, 32))).astype(np.uint8).tobytes()
        elif kind == 4:
            del out[position:position + int(rng.integers(1, 64))]
        else:
            del out[position:]
    return bytes(out)


def _mutate_element(out: bytearray, spans: list, rng: np.random.Generator, vr_only: bool) -> None:
    """Same-length change of one element: its value (text or binary garbage), or its VR bytes."""
    tag, vr, offset, length = spans[int(rng.integers(0, len(spans)))]
    if offset + length > len(out):
        return
    if vr_only:
        if vr is not None:
            header = offset - (12 if vr in (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
                                            b"UT", b"UV") else 8)
            out[header + 4:header + 6] = _VRS[int(rng.integers(0, len(_VRS)))]
        return
    if length == 0:
        return
    if vr in (b"US", b"SS", b"UL", b"SL", b"FL", b"FD", b"AT") or (vr is None and length in (2, 4, 8) and tag >> 16 == 0x0028):
        choice = int(rng.integers(0, 4))
        fill = [b"\x00", b"\xff", bytes(rng.integers(0, 256, 1).astype(np.uint8)), b"\x7f"][choice]
        out[offset:offset + length] = (fill * length)[:length]
        return
    value = _TEXT_VALUES[int(rng.integers(0, len(_TEXT_VALUES)))]
    out[offset:offset + length] = (value + b" " * length)[:length]


def exercise(reader: str, path: Path, study: FuzzStudy, with_validate: bool = False) -> str:
    """Read ``path`` with ``reader`` (and its downstream step); return "read" or "refused".
    ``with_validate``: also run ``rtdeep validate``'s checks (no dicom3tools) on the study folder.

    Any exception that is not an RtDeepError (or a FileNotFoundError for a vanished file)
    propagates: that is what the fuzzing looks for.
    """
    from rtdeep.dicomrt.ct_reader import read_ct_series
    from rtdeep.dicomrt.rtdose_reader import read_rtdose, resample_dose
    from rtdeep.dicomrt.rtstruct_reader import read_contours, read_rtstruct
    from rtdeep.dicomrt.scan import read_header
    from rtdeep.errors import RtDeepError

    try:
        read_header(path)
    except RtDeepError:
        pass
    if with_validate:
        from rtdeep.dicomrt.validate import validate_paths

        try:
            validate_paths([study.folder], use_tools=False)
        except RtDeepError:
            pass
    try:
        if reader == "ct":
            read_ct_series([path])
        elif reader == "rtstruct":
            try:
                read_contours(path)  # what 'dvh --rtstruct' reads
            except RtDeepError:
                pass
            read_rtstruct(path, study.ct)  # type: ignore[arg-type]
        else:
            resample_dose(read_rtdose(path, prescription_gy=60.0), study.ct)  # type: ignore[arg-type]
    except RtDeepError:
        return "refused"
    return "read"


class _Hang(Exception):
    pass


def _alarm(_signum, _frame):
    raise _Hang()


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=10000, help="mutants in all (split over the readers)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout-s", type=int, default=20, help="a mutant taking longer is a hang")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "rtdeep-fuzz")
    parser.add_argument("--no-validate", action="store_true", help="readers only (skip rtdeep validate's checks)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    study = build_fuzz_study(Path(tempfile.mkdtemp(prefix="study-", dir=args.out)))
    rng = np.random.default_rng(args.seed)
    counts: dict[str, Counter] = {reader: Counter() for reader in TARGETS}
    slowest = dict.fromkeys(TARGETS, 0.0)
    signal.signal(signal.SIGALRM, _alarm)
    start = time.perf_counter()
    for index in range(args.mutants):
        reader = list(TARGETS)[index % len(TARGETS)]
        target = study.folder / TARGETS[reader]
        mutant = mutate(study.originals[reader], rng, study.spans[reader])
        target.write_bytes(mutant)
        began = time.perf_counter()
        signal.alarm(args.timeout_s)
        try:
            counts[reader][exercise(reader, target, study, with_validate=not args.no_validate)] += 1
        except _Hang:
            counts[reader]["hang"] += 1
            (args.out / f"hang_{reader}_{index}.dcm").write_bytes(mutant)
        except Exception as error:  # noqa: BLE001 - counting what escapes is the point
            counts[reader]["unhandled"] += 1
            saved = args.out / f"unhandled_{reader}_{index}.dcm"
            saved.write_bytes(mutant)
            last = traceback.extract_tb(error.__traceback__)[-1]
            print(f"UNHANDLED {reader} #{index}: {type(error).__name__}: {str(error)[:160]} "
                  f"({Path(last.filename).name}:{last.lineno}) -> {saved}", flush=True)
        finally:
            signal.alarm(0)
        slowest[reader] = max(slowest[reader], time.perf_counter() - began)
    for reader, name in TARGETS.items():
        (study.folder / name).write_bytes(study.originals[reader])
    elapsed = time.perf_counter() - start
    print(f"\n{args.mutants} mutants, seed {args.seed}, {elapsed:.0f} s")
    print(f"{'reader':<10} {'mutants':>8} {'read':>7} {'refused':>8} {'unhandled':>10} {'hangs':>6} {'slowest s':>10}")
    for reader, count in counts.items():
        print(f"{reader:<10} {sum(count.values()):>8} {count['read']:>7} {count['refused']:>8} "
              f"{count['unhandled']:>10} {count['hang']:>6} {slowest[reader]:>10.2f}")
    return 1 if any(c["unhandled"] or c["hang"] for c in counts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
