"""Callbacks through BPF_PSEUDO_FUNC (lddw src 4): the loader, bpf_loop and
bpf_for_each_map_elem in every engine, their budget, depth and faults.

Expected values: the C test object's results are worked out by hand in
tests/data/elf/callbacks.c's comments and here, and test_kernel_agrees
checks them against the kernel (BPF_PROG_TEST_RUN) where bpf() works.
"""

from __future__ import annotations

import signal
import struct
from pathlib import Path
from typing import Any

import pytest

import kernel_oracle
from ebpfvm import EbpfVmRaw, assemble, load
from ebpfvm.callbacks import BPF_MAX_LOOPS, CALLBACK_CALL_UNITS, callback_helpers
from ebpfvm.cfg import MAX_CALL_DEPTH, callback_value
from ebpfvm.errors import (
    BudgetExceeded,
    CallDepthExceeded,
    HelperFault,
    MapError,
    MemoryFault,
    RunInterrupted,
)
from ebpfvm.helpers import HELPER_CALL_UNITS, BadCallback
from ebpfvm.interpreter import compile_program
from ebpfvm.maps import MapType, create_map, map_helpers
from ebpfvm.program import ProgramImage
from engines import run

DATA = Path(__file__).parent / "data" / "elf"
EINVAL = -22 & (1 << 64) - 1
E2BIG = -7 & (1 << 64) - 1

# loop_prog: add_cb adds 3i + 1 for i = 0..5 and stops at 5 (6 calls): 51;
# the flags call is -EINVAL; outer_cb(i) runs inner loops summing 0..i-1, for
# i = 0..5: 0 + 0 + 1 + 3 + 6 + 10 = 20.
LOOP_R0 = 51 * 1000 + 6 * 100 + 10 + 6 + (20 << 20)
# foreach_prog: arr = [1, 11, 21, 31]; array_cb sums and doubles values and
# stops at key 2 (3 visited, sum 33); hash_cb sums key * value over
# {5: 50, 7: 70, 9: 90} (3 visited, 1550).
FOREACH_R0 = 3 + 10 * 3 + 100 * 33 + 100000 * 1550
ARRAY_AFTER = [2, 22, 42, 31]


def _array(obj: Any, name: str) -> list[int]:
    table = obj.maps[name]
    return [int.from_bytes(table[struct.pack("<I", i)], "little") for i in range(4)]


@pytest.mark.parametrize(("name", "expected"), [("loop_prog", LOOP_R0),
                                                ("foreach_prog", FOREACH_R0)])
def test_c_object(engine: str, name: str, expected: int) -> None:
    obj = load(DATA / "callbacks.o")
    with obj, obj.skb(name, engine=engine) as runner:
        assert runner.run(bytes(64)).r0 == expected
        if name == "foreach_prog":
            assert _array(obj, "arr") == ARRAY_AFTER


def test_loader_links_callbacks_as_lddw_func() -> None:
    """Three static callbacks referenced through the .text section symbol
    plus an addend: lddw src 4 with the slot offset of each, .text appended."""
    program = load(DATA / "callbacks.o").program("loop_prog")
    image = ProgramImage(program.code)
    lddw_funcs = [insn for insn in image.insns if insn.row is not None
                  and insn.row.mnemonic == "lddw_func"]
    assert len(lddw_funcs) == 4 and program.subprograms == (".text",)
    assert len(image.callbacks) == 3
    assert min(image.callbacks) > lddw_funcs[2].pc  # all in the appended .text


def _vm(source: str, budget: int | None = 10_000_000) -> EbpfVmRaw:
    vm = EbpfVmRaw(assemble(source), budget=budget)
    for number, helper in callback_helpers().items():
        vm.register_helper(number, helper)
    return vm


LOOP = """
mov r1, {n}
lddw_func r2, +5
mov r3, 0
mov r4, {flags}
call 181
exit
mov r0, 0
exit
"""


def test_loop_limits_and_flags(engine: str) -> None:
    assert run(_vm(LOOP.format(n=3, flags=0)), engine, bytearray(8)) == 3
    assert run(_vm(LOOP.format(n=3, flags=1)), engine, bytearray(8)) == EINVAL
    assert run(_vm(LOOP.format(n=BPF_MAX_LOOPS + 1, flags=0)), engine, bytearray(8)) == E2BIG


def test_budget_bounds_eight_million_loops(engine: str) -> None:
    """2**23 iterations of an empty callback stop at the budget in every
    engine, with the count at the budget."""
    budget = 100_000
    vm = _vm(LOOP.format(n=BPF_MAX_LOOPS, flags=0), budget=budget)
    with pytest.raises(BudgetExceeded) as info:
        run(vm, engine, bytearray(8))
    assert info.value.count == budget
    if engine != "jit-unchecked":
        assert vm.last_instruction_count == budget


def test_budget_charges_each_call() -> None:
    """5 instructions before the call, 64 for the call, then per iteration
    a call charge and the callback's 2 instructions, then the exit."""
    vm = _vm(LOOP.format(n=10, flags=0))
    assert vm.execute_program(bytearray(8)) == 10
    assert vm.last_instruction_count == 5 + HELPER_CALL_UNITS + 10 * (CALLBACK_CALL_UNITS + 2) + 1


def test_counts_agree(engine: str) -> None:
    vm = _vm(LOOP.format(n=10, flags=0))
    run(vm, engine, bytearray(8))
    if engine != "jit-unchecked":
        assert vm.last_instruction_count == 5 + HELPER_CALL_UNITS + 10 * (CALLBACK_CALL_UNITS + 2) + 1


def test_forged_callback_is_a_typed_error(checked_engine: str) -> None:
    """A value pointing into the middle of the callback (a plain lddw of a
    forged constant) is refused before anything runs there."""
    forged = callback_value(10)  # the second instruction of the callback at 9
    source = f"""
mov r1, 1
lddw r2, {forged:#x}
mov r3, 0
mov r4, 0
call 181
exit
lddw_func r0, +1
exit
mov r0, 0
exit
"""
    with pytest.raises(HelperFault) as info:
        run(_vm(source), checked_engine, bytearray(8))
    assert isinstance(info.value.cause, BadCallback)
    assert info.value.pc == 5


def test_no_callbacks_no_value_is_a_callback(checked_engine: str) -> None:
    source = "mov r1, 1\nlddw r2, 0x1234\nmov r3, 0\nmov r4, 0\ncall 181\nexit"
    with pytest.raises(HelperFault) as info:
        run(_vm(source), checked_engine, bytearray(8))
    assert isinstance(info.value.cause, BadCallback)


FAULTING = """
mov r1, 2
lddw_func r2, +5
mov r3, 0
mov r4, 0
call 181
exit
ldxdw r0, [r1+0]
exit
"""


def test_fault_in_callback_reports_its_pc(checked_engine: str) -> None:
    """The callback reads through its index (0): the fault is the callback's,
    at pc 7, after 5 + 64 + 64 + 1 instructions."""
    vm = _vm(FAULTING)
    with pytest.raises(MemoryFault) as info:
        run(vm, checked_engine, bytearray(8))
    assert info.value.pc == 7
    assert vm.last_instruction_count == 5 + HELPER_CALL_UNITS + CALLBACK_CALL_UNITS + 1


RECURSIVE = """
mov r1, 1
lddw_func r2, +5
mov r3, 0
mov r4, 0
call 181
exit
mov r1, 1
lddw_func r2, -2
mov r3, 0
mov r4, 0
call 181
exit
"""


def test_nested_callbacks_count_depth(checked_engine: str) -> None:
    """A callback that loops over itself: each level is a frame, and the
    eighth level is refused at its helper call (pc 12)."""
    vm = _vm(RECURSIVE)
    with pytest.raises(CallDepthExceeded) as info:
        run(vm, checked_engine, bytearray(8))
    assert info.value.pc == 12
    assert MAX_CALL_DEPTH == 8


FRAMES = """
stdw [r10-8], 7
mov r1, 1
lddw_func r2, +7
mov r3, r10
add r3, -8
mov r4, 0
call 181
ldxdw r0, [r10-8]
exit
stdw [r10-8], 99
ldxdw r3, [r2+0]
add r3, 1
stxdw [r2+0], r3
mov r0, 0
exit
"""


def test_callback_has_its_own_frame(engine: str) -> None:
    """The callback's [r10-8] is not its caller's: the caller's 7 becomes 8
    through the context pointer, not 99."""
    assert run(_vm(FRAMES), engine, bytearray(8)) == 8


def test_programs_without_callbacks_keep_their_code() -> None:
    plain = compile_program(assemble("mov r0, 1\ncall 1\nexit"))
    assert "FB" not in plain.source and "CTX.frame" not in plain.source
    with_callback = compile_program(assemble(LOOP.format(n=1, flags=0)))
    assert "FB" in with_callback.source


def test_kernel_agrees() -> None:
    """The hand-worked results are the kernel's (BPF_PROG_TEST_RUN)."""
    rwobj, kbpf = kernel_oracle.corpus_loader()
    obj = rwobj.BpfObject(str(DATA / "callbacks.o"))
    try:
        btf = kbpf.load_btf(obj.kernel_btf())
        maps = {name: kbpf.Map(name, spec.map_type, spec.key_size, spec.value_size,
                               spec.max_entries, spec.flags) for name, spec in obj.maps.items()}
    except OSError as exc:
        pytest.skip(f"bpf() is not available here: {exc}")
    fds = {name: table.fd for name, table in maps.items()}
    results = {}
    for name in ("loop_prog", "foreach_prog"):
        linked = obj.link(name)
        prog = kbpf.Prog(name, linked.prog.prog_type_id, linked.image(fds), obj.license,
                         btf_fd=btf, func_info=linked.func_info)
        results[name] = prog.test_run(bytes(64))["retval"]
        prog.close()
    array = [int.from_bytes(maps["arr"].lookup(struct.pack("<I", i)), "little") for i in range(4)]
    for table in maps.values():
        table.close()
    assert results == {"loop_prog": LOOP_R0, "foreach_prog": FOREACH_R0}
    assert array == ARRAY_AFTER


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # pytest's hook
def test_ctrl_c_stops_a_long_loop(engine: str) -> None:
    """Without a budget, 2**23 iterations still stop at Ctrl-C (a handler
    that raises KeyboardInterrupt): RunInterrupted, in every engine."""
    vm = _vm(LOOP.format(n=BPF_MAX_LOOPS, flags=0), budget=None)
    fired = []

    def handler(signum: int, _frame: Any) -> None:
        fired.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(RunInterrupted):
            run(vm, engine, bytearray(8))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert fired


HASH_WALK = """
lddw r1, {handle:#x}
lddw_func r2, +5
mov r3, 0
mov r4, 0
call 164
exit
mov r6, r1
ldxw r7, [r2+0]
stxw [r10-4], r7
mov r1, r6
mov r2, r10
add r2, -4
call 3
mov r0, 0
exit
"""


def test_for_each_survives_deleting_the_element(engine: str) -> None:
    """A hash callback that deletes the element it is given: every element
    is visited once, and the map ends empty (kernel: deleting the current
    element while iterating is allowed)."""
    table = create_map("h", MapType.HASH, 4, 8, 8)
    table.handle = 0x1000
    for key in (3, 1, 2):
        table[struct.pack("<I", key)] = bytes(8)
    vm = _vm(HASH_WALK.format(handle=table.handle))
    for number, helper in {**map_helpers({table.handle: table}),
                           **callback_helpers({table.handle: table})}.items():
        vm.register_helper(number, helper)
    assert run(vm, engine, bytearray(8)) == 3
    assert len(table) == 0


def test_for_each_refuses_other_maps(checked_engine: str) -> None:
    queue = create_map("q", MapType.QUEUE, 0, 8, 4)
    queue.handle = 0x2000
    vm = _vm(HASH_WALK.format(handle=queue.handle))
    for number, helper in callback_helpers({queue.handle: queue}).items():
        vm.register_helper(number, helper)
    with pytest.raises(HelperFault) as info:
        run(vm, checked_engine, bytearray(8))
    assert isinstance(info.value.cause, MapError) and info.value.pc == 6
