"""Shared fixtures: the conformance folder and the list of engines."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def conformance_dir() -> Path:
    """shared/conformance beside the repo, or $EBPFVM_CONFORMANCE_DIR."""
    env = os.environ.get("EBPFVM_CONFORMANCE_DIR")
    return Path(env) if env else REPO.parent / "shared" / "conformance"


def bench_dir() -> Path:
    """shared/bench beside the repo, or $EBPFVM_BENCH_DIR."""
    env = os.environ.get("EBPFVM_BENCH_DIR")
    return Path(env) if env else REPO.parent / "shared" / "bench"


from engines import ALL_ENGINES, CHECKED_ENGINES  # noqa: E402


def _kbpf_unavailable() -> str | None:
    """Why ebpfvm.kbpf cannot use the kernel's bpf() here (None: it can)."""
    from ebpfvm import kbpf

    try:
        kbpf.probe()
    except kbpf.KernelError as exc:
        return str(exc)
    return None


KBPF_UNAVAILABLE = _kbpf_unavailable()
NEEDS_KBPF = pytest.mark.skipif(KBPF_UNAVAILABLE is not None,
                                reason=f"no kernel bpf(): {KBPF_UNAVAILABLE}")
"""Marks a test that compares with the kernel through ebpfvm.kbpf (skipped,
with the reason, where bpf() is unavailable)."""

CONFORMANCE_RAN: Counter[str] = Counter()
CONFORMANCE_PASSED: Counter[str] = Counter()
CORPUS_RAN: Counter[str] = Counter()
CORPUS_AGREED: Counter[str] = Counter()
"""Corpus vectors (tests/test_corpus.py) per engine: ran, agreed with the kernel."""
DOCS_RAN: Counter[str] = Counter()
"""Samples of the docs that ran (tests/test_docs.py): python, python output, commands."""
KERNEL_DIFF: Counter[str] = Counter()
"""Programs the kernel differential test generated / the kernel accepted."""


@pytest.fixture(params=ALL_ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Every engine: the interpreter, the checked JIT and the unchecked JIT."""
    return str(request.param)


@pytest.fixture(params=CHECKED_ENGINES)
def checked_engine(request: pytest.FixtureRequest) -> str:
    """Engines that stop bad programs with a typed error."""
    return str(request.param)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if DOCS_RAN:
        terminalreporter.write_line(
            f"docs: {DOCS_RAN['python']} python samples ran "
            f"({DOCS_RAN['python output']} with checked output), "
            f"{DOCS_RAN['commands']} commands ran"
        )
    if KERNEL_DIFF:
        terminalreporter.write_line(
            f"kernel differential: {KERNEL_DIFF['generated']} random programs, "
            f"{KERNEL_DIFF['accepted']} accepted by the kernel and compared with "
            f"{KERNEL_DIFF['engines']} engines"
        )
    _fuzz_summary(terminalreporter)
    for name in sorted(CONFORMANCE_RAN):
        terminalreporter.write_line(
            f"conformance [{name}]: {CONFORMANCE_RAN[name]} files ran, "
            f"{CONFORMANCE_PASSED[name]} passed"
        )
    for name in sorted(CORPUS_RAN):
        terminalreporter.write_line(
            f"corpus [{name}]: {CORPUS_RAN[name]} vectors ran, "
            f"{CORPUS_AGREED[name]} agree with the kernel"
        )


def _fuzz_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The outcome counts of tests/test_robustness.py's bounded fuzzing."""
    module = sys.modules.get("test_robustness")
    for target, classes in sorted(getattr(module, "FUZZ_RAN", {}).items()):
        counts = ", ".join(f"{n} {kind}" for (_t, kind), n in sorted(classes.items()))
        terminalreporter.write_line(f"fuzzing [{target}]: {sum(classes.values())} inputs: {counts}")
