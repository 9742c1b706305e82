"""Kernel differential test: random XDP programs (tests/kprogen.py) run in the
Linux kernel (BPF_PROG_LOAD + BPF_PROG_TEST_RUN) and in the interpreter, the
checked JIT and the unchecked JIT (tests/kernel_diff.py); the 32-bit retval
and the output packet, which holds r0-r9 as 64-bit words, must be equal.

Programs per run: 2,000, or ``EBPFVM_KERNEL_EXAMPLES=N``; the long campaign
is tools/kernel_campaign.py. The hypothesis database is off, so a failure
reproduces from the printed seed. The counts show in pytest's summary
("kernel differential: ..."). Skips with the reason where bpf() is unavailable.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings

import kernel_oracle as kernel
from conftest import KERNEL_DIFF
from ebpfvm.vm import EbpfVmRaw
from kernel_diff import ENGINES, compare, run_engine
from kprogen import (
    DUMP_REGS,
    PACKET_MIN,
    TARGET_ROWS,
    Choices,
    KCase,
    build,
    dump_registers,
    kcases,
    row_name,
)
from progen import layout

UNAVAILABLE = kernel.available()
needs_bpf = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"bpf(): {UNAVAILABLE}")

EXAMPLES = int(os.environ.get("EBPFVM_KERNEL_EXAMPLES", "2000"))
MIN_ACCEPTED = 0.98
"""The generator aims at programs the verifier accepts; refusals are counted
and must stay rare (the README gives the long campaign's figures)."""
SHAPES = ("loop", "call", "packet-var", "edge-divisor")
COVERAGE_EXAMPLES = 1000
"""From this many programs on, the test also checks that every row of
kprogen.TARGET_ROWS ran (the rarest appear in about 2% of programs)."""
FRAME_SLOTS = 7 + 8 + DUMP_REGS + 14 + 2
"""Main without a body: the guard (7 instructions), 8 stack slots written, 10
registers set, the register dump and exit (14), the bail-out (2)."""


@needs_bpf
def test_random_programs_agree_with_the_kernel() -> None:
    generated = 0
    refusals: Counter[str] = Counter()
    seen: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(kcases())
    def check(case: KCase) -> None:
        nonlocal generated
        generated += 1
        outcome = compare(case)
        if outcome.rejected is not None:
            refusals[outcome.rejected.strip().splitlines()[-1][:100]] += 1
            return
        seen.update(case.features)
        assert not outcome.diverging, outcome.report(case)

    check()
    accepted = generated - sum(refusals.values())
    KERNEL_DIFF.update(generated=generated, accepted=accepted)
    KERNEL_DIFF["engines"] = len(ENGINES)
    assert generated >= EXAMPLES
    assert accepted >= MIN_ACCEPTED * generated, refusals.most_common(5)
    if EXAMPLES < COVERAGE_EXAMPLES:
        return
    # Every targeted row (and each program shape) ran in accepted programs.
    names = {feature.split("@")[0] for feature in seen}
    assert [row_name(row) for row in TARGET_ROWS if row_name(row) not in names] == []
    assert [shape for shape in SHAPES if shape not in seen] == []
    assert {"@stack", "@packet", "@packet-var"} <= {
        "@" + feature.split("@")[1] for feature in seen if "@" in feature}


@settings(max_examples=30, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(kcases())
def test_generated_programs_dump_their_registers(case: KCase) -> None:
    """Without the kernel: the epilogue's dump holds r0 (the retval is its low
    half) and the packet keeps its length; our verifier accepts the program."""
    vm = EbpfVmRaw(case.code)
    try:
        run = run_engine(case, "interp", vm)
    finally:
        vm.close()
    assert run.error is None
    assert len(run.packet) == len(case.packet) >= PACKET_MIN
    assert run.retval == dump_registers(run.packet)[0] & 0xFFFF_FFFF


def test_zero_choices_give_the_bare_frame() -> None:
    """What shrinking aims at: an all-zero choice string reads as the smallest
    choice everywhere, so no subprogram, no body unit, every register loaded
    from the packet (the first option) and every stack slot stored with stdw."""
    items, features = build(Choices(b""))
    assert len(layout(items)) // 8 == FRAME_SLOTS
    assert features == {"ldxw/ldx@packet"}
