"""The corpus as a test: every vector of ../shared/corpus, in every engine,
against the results the Linux kernel gave (manifest.json).

Each vector loads its object afresh, applies its setup and runs its steps
through the public API (tests/corpus.py); everything the corpus README lists
is compared: return value, output packet, context, ring-buffer records and
discards, trace_printk lines and every listed map after every step.

Every vector must agree exactly, in every engine: none is skipped or
expected to fail.
"""

from __future__ import annotations

import hashlib

import pytest

from conftest import CORPUS_AGREED, CORPUS_RAN
from corpus import Vector, corpus_dir, load_vectors, run_vector

DIRECTORY = corpus_dir()
VECTORS = load_vectors(DIRECTORY) if (DIRECTORY / "manifest.json").is_file() else []
ABSENT = f"corpus folder {DIRECTORY} is absent"


EXPECTED_VECTORS = 212


@pytest.mark.skipif(not VECTORS, reason=ABSENT)
def test_corpus_is_complete() -> None:
    """Every vector is there, and every object is the one the kernel ran."""
    assert len(VECTORS) == EXPECTED_VECTORS
    for program in {vector.program: vector.manifest for vector in VECTORS}.values():
        data = (DIRECTORY / program["object"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == program["object_sha256"], program["object"]


@pytest.mark.parametrize(
    "vector", VECTORS or [pytest.param(None, marks=pytest.mark.skip(reason=ABSENT))],
    ids=lambda v: f"{v.program}/{v.name}" if v else "absent")
def test_corpus(vector: Vector, engine: str) -> None:
    CORPUS_RAN[engine] += 1
    found = run_vector(vector, engine)
    assert not found, f"disagrees with the kernel: {found[0]}"
    CORPUS_AGREED[engine] += 1
