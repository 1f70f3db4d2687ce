"""Fuzzing the CT, RTSTRUCT and RTDOSE readers: every mutant is read or refused with a typed error.

A quick pass (hypothesis, 150 mutants per reader, derandomised so the suite is repeatable) runs
here; the long run (10,000 random mutants, timings and hangs) is Testing/fuzz_readers.py, see
docs/robustness.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_readers import TARGETS, FuzzStudy, build_fuzz_study, exercise
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_TEXT = [b"nan", b"two", b"1\\2", b"-1", b"0", b"", b"\x00", b"1e999", b"inf", b"65535", b"0\\0", b"RELATIVE"]

edit = st.one_of(
    st.tuples(st.just("bytes"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("value"), st.integers(0, 1 << 20), st.sampled_from(_TEXT)),
    st.tuples(st.just("binary"), st.integers(0, 1 << 20), st.sampled_from([b"\x00", b"\xff", b"\x7f"])),
    st.tuples(st.just("vr"), st.integers(0, 1 << 20), st.sampled_from([b"UM", b"UN", b"SQ", b"OB", b"XX"])),
    st.tuples(st.just("cut"), st.integers(0, 1 << 20), st.just(b"")),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=16)),
)


def apply(data: bytes, spans: list, edits: list[tuple[str, int, bytes]]) -> bytes:
    """The edits, in order; positions and elements are taken modulo the file's size and element count."""
    out = bytearray(data)
    for kind, where, payload in edits:
        if kind in ("value", "binary", "vr"):
            _tag, vr, offset, length = spans[where % len(spans)]
            if offset + length > len(out):
                continue
            if kind == "vr":
                if vr is not None:
                    header = offset - (12 if vr in (b"OB", b"OW", b"OF", b"OD", b"OL", b"SQ", b"UN", b"UT", b"UC")
                                       else 8)
                    out[header + 4:header + 6] = payload
            elif kind == "value":
                out[offset:offset + length] = (payload + b" " * length)[:length]
            else:
                out[offset:offset + length] = (payload * length)[:length]
        elif kind == "bytes":
            start = where % max(len(out), 1)
            out[start:start + len(payload)] = payload
        elif kind == "cut":
            del out[where % max(len(out), 1):]
        else:
            start = where % max(len(out), 1)
            out[start:start] = payload
    return bytes(out)


@pytest.fixture(scope="module")
def fuzz_study(tmp_path_factory) -> FuzzStudy:
    return build_fuzz_study(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.filterwarnings("error::UserWarning")  # a reader must not print pydicom's warnings either
@pytest.mark.parametrize("reader", list(TARGETS))
def test_reader_reads_or_refuses_every_mutant(reader: str, fuzz_study: FuzzStudy) -> None:
    target: Path = fuzz_study.folder / TARGETS[reader]
    outcomes: list[str] = []

    @settings(max_examples=150, deadline=2000, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(edit, min_size=1, max_size=4))
    def check(edits):
        target.write_bytes(apply(fuzz_study.originals[reader], fuzz_study.spans[reader], edits))
        outcomes.append(exercise(reader, target, fuzz_study))  # raises on anything but RtDeepError

    try:
        check()
    finally:
        target.write_bytes(fuzz_study.originals[reader])
    assert len(outcomes) >= 100
    assert "refused" in outcomes and "read" in outcomes  # the mutants reach both sides
    assert exercise(reader, target, fuzz_study) == "read"  # and the original still reads


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_validate_reports_or_refuses_every_mutant(fuzz_study: FuzzStudy) -> None:
    """``rtdeep validate``'s checks (readers, cross-references) on the study with one mutated file."""
    outcomes: list[str] = []

    @settings(max_examples=60, deadline=5000, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(list(TARGETS)), st.lists(edit, min_size=1, max_size=4))
    def check(reader, edits):
        target = fuzz_study.folder / TARGETS[reader]
        target.write_bytes(apply(fuzz_study.originals[reader], fuzz_study.spans[reader], edits))
        try:
            outcomes.append(exercise(reader, target, fuzz_study, with_validate=True))
        finally:
            target.write_bytes(fuzz_study.originals[reader])

    check()
    assert len(outcomes) >= 40
