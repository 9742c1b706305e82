"""bpf_tail_call made inside bpf-to-bpf functions (tests/data/elf/tailsub.c).

In the kernel such a call replaces only the function's frame: the
tail-called program's r0 goes back to the function's caller, which carries
on, and the limit of 33 tail calls (MAX_TAIL_CALL_CNT) counts over the whole
run (the selftest tailcall_bpf2bpf_hierarchy_2 declares __retval(33)). The
expected values follow from those rules (see each program's comment in the
source) and the kernel, where bpf() works, returns the same."""

from __future__ import annotations

from pathlib import Path

import pytest

import ebpfvm
from conftest import NEEDS_KBPF
from ebpfvm import BudgetExceeded, TailCallFault
from ebpfvm.kdiff import against_kernel
from ebpfvm.tailcalls import MAX_TAIL_CALLS

TAILSUB = Path(__file__).parent / "data" / "elf" / "tailsub.o"
PACKET = bytes(64)

EXPECTED = {
    "e_ret": 7 * 1000 + 100 + 3,  # ret7's r0 to sub's caller; slot 3 is empty
    "e_count": MAX_TAIL_CALLS << 16 | 100,  # loop ran 33 times; then slot 0 fails
    "e_mix": 7 + 40,  # sub2 -> sub -> ret7 gives 7; then retcount replaces e_mix
    "e_hop": 7 + 50,  # hop's own tail call to ret7 ends hop, sub's caller gets 7
    "e_spent": 9 + (MAX_TAIL_CALLS << 8),  # the count is spent: the main's call fails
}


needs_kernel = NEEDS_KBPF


@pytest.mark.parametrize("program", sorted(EXPECTED))
def test_tail_call_in_a_function_returns_to_its_caller(engine: str, program: str) -> None:
    with ebpfvm.load(TAILSUB) as obj:
        runner = obj.xdp(program, engine=engine)
        first = runner.run(PACKET).r0
        second = runner.run(PACKET).r0  # the count belongs to the run
    assert (first, second) == (EXPECTED[program], EXPECTED[program])


@needs_kernel
@pytest.mark.parametrize("program", sorted(EXPECTED))
def test_tail_calls_in_functions_agree_with_the_kernel(engine: str, program: str) -> None:
    with ebpfvm.load(TAILSUB) as obj:
        diff = against_kernel(obj, [PACKET, PACKET], program=program, engine=engine,
                              source=TAILSUB)
    assert diff.packets == 2 and diff.divergences == [] and not diff.refused


def test_engines_count_the_same_instructions(engine: str) -> None:
    """Every program a run reaches, nested chains included, is charged."""
    counts = {}
    for name in ("interp", engine):
        with ebpfvm.load(TAILSUB) as obj:
            runner = obj.xdp("e_count", engine=name)
            runner.run(PACKET)
            counts[name] = runner.vm.last_instruction_count
    assert counts[engine] == counts["interp"]
    assert counts["interp"] > 33 * 4  # loop's own instructions, 33 times


def _budget_fault(engine: str) -> TailCallFault:
    with ebpfvm.load(TAILSUB) as obj:
        runner = obj.xdp("e_count", engine=engine)
        runner.vm.budget = 200
        with pytest.raises(TailCallFault) as caught:
            runner.run(PACKET)
    return caught.value


def test_budget_covers_nested_chains(checked_engine: str) -> None:
    """A chain run from a function, inside a chain run from a function...:
    one TailCallFault naming every program, outermost first, the innermost
    fault and the whole run's budget; the same in every engine."""
    fault = _budget_fault(checked_engine)
    assert isinstance(fault.fault, BudgetExceeded) and fault.fault.count == 200
    assert fault.chain[0] == "e_count" and set(fault.chain[1:]) == {"loop"}
    reference = _budget_fault("interp")
    assert (fault.pc, fault.chain, fault.fault.pc) == (
        reference.pc, reference.chain, reference.fault.pc)
