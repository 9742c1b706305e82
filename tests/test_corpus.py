"""The corpus as a test: every vector of ../shared/corpus, in every engine,
against the results the Linux kernel gave (manifest.json).

Each vector loads its object afresh, applies its setup and runs its steps
through the public API (tests/corpus.py); everything the corpus README lists
is compared: return value, output packet, context, ring-buffer records and
discards, trace_printk lines and every listed map after every step.

KNOWN_GAPS lists the vectors that still disagree while issue 13 is in
progress, with the cause. They still run in every engine and must still
disagree: one that agrees fails, so that it leaves the list, which only
shrinks. Every other vector must agree exactly.
"""

from __future__ import annotations

import hashlib

import pytest

from conftest import CORPUS_AGREED, CORPUS_GAPS, CORPUS_RAN
from corpus import Vector, corpus_dir, load_vectors, run_vector

DIRECTORY = corpus_dir()
VECTORS = load_vectors(DIRECTORY) if (DIRECTORY / "manifest.json").is_file() else []
ABSENT = f"corpus folder {DIRECTORY} is absent"

RINGBUF_DISCARDED = "the ring buffer's count of discarded records is not shown"


def _each(program: str, reason: str, *vectors: str) -> dict[tuple[str, str], str]:
    return {(program, vector): reason for vector in vectors}


KNOWN_GAPS: dict[tuple[str, str], str] = {
    **_each("verifier_ringbuf", RINGBUF_DISCARDED,
            "one_record", "three_runs", "ipv4_udp", "runt_frame", "tiny_frame"),
}
"""(program, vector) -> why ebpfvm disagrees with the kernel today (diagnosed:
the first disagreement, then what else the vector needs when known)."""


EXPECTED_VECTORS = 212


@pytest.mark.skipif(not VECTORS, reason=ABSENT)
def test_corpus_is_complete() -> None:
    """Every vector is there, and every object is the one the kernel ran."""
    assert len(VECTORS) == EXPECTED_VECTORS
    for program in {vector.program: vector.manifest for vector in VECTORS}.values():
        data = (DIRECTORY / program["object"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == program["object_sha256"], program["object"]


@pytest.mark.skipif(not VECTORS, reason=ABSENT)
def test_known_gaps_are_vectors() -> None:
    names = {vector.key for vector in VECTORS}
    assert sorted(set(KNOWN_GAPS) - names) == [], "KNOWN_GAPS names vectors the corpus lacks"


@pytest.mark.parametrize(
    "vector", VECTORS or [pytest.param(None, marks=pytest.mark.skip(reason=ABSENT))],
    ids=lambda v: f"{v.program}/{v.name}" if v else "absent")
def test_corpus(vector: Vector, engine: str) -> None:
    CORPUS_RAN[engine] += 1
    found = run_vector(vector, engine)
    disagreement = found[0] if found else None
    gap = KNOWN_GAPS.get(vector.key)
    if gap is None:
        assert disagreement is None, f"disagrees with the kernel: {disagreement}"
        CORPUS_AGREED[engine] += 1
        return
    CORPUS_GAPS[engine] += 1
    assert disagreement is not None, (
        f"{vector.program}/{vector.name} now agrees with the kernel in {engine}: "
        f"remove it from KNOWN_GAPS (was: {gap})")
