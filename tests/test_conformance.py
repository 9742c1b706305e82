"""All 313 bpf_conformance vectors, on every engine.

Helpers 0-5 are uBPF's test helpers (shared/conformance/README.md, "Helpers");
r1 = the input memory and r2 = its length, as both upstream plugins do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CONFORMANCE_PASSED, CONFORMANCE_RAN, conformance_dir
from ebpfvm.helpers import ubpf_test_helpers
from ebpfvm.testdata import read_data_file
from ebpfvm.vm import EbpfVmRaw
from engines import run

EXPECTED_FILES = 313
DIRECTORY = conformance_dir()
FILES = sorted(DIRECTORY.glob("*.data")) if DIRECTORY.is_dir() else []
ABSENT = f"conformance folder {DIRECTORY} is absent"


def run_vector(engine: str, path: Path) -> int:
    data = read_data_file(path)
    vm = EbpfVmRaw(data.program())
    for key, helper in ubpf_test_helpers().items():
        vm.register_helper(key, helper)
    return run(vm, engine, bytearray(data.mem))


@pytest.mark.skipif(not FILES, reason=ABSENT)
def test_corpus_is_complete() -> None:
    assert len(FILES) == EXPECTED_FILES


@pytest.mark.parametrize("path", FILES or [pytest.param(None, marks=pytest.mark.skip(reason=ABSENT))],
                         ids=lambda p: p.stem if p else "absent")
def test_conformance(path: Path, engine: str) -> None:
    CONFORMANCE_RAN[engine] += 1
    data = read_data_file(path)
    assert data.error is None and data.result is not None, "every vector expects a value"
    assert run_vector(engine, path) == data.result
    CONFORMANCE_PASSED[engine] += 1
