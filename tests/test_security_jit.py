"""Regression tests for the JIT findings of issue 11 (safe under attack).

F2: the JIT's fast path reads a bytearray's data start (not its allocation)
and pins every input once Python code runs during the run. F9: Ctrl-C stops
a JIT run with RunInterrupted. F10: a helper cannot close, recompile or
reload the VM that is running it. Also: the helper budget protocol, span
arrays of 8-byte items only, and the instruction count after a fault.

Tests whose regression would crash or hang the process run in a child."""

from __future__ import annotations

import array
import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from bounded import REPO, run_bounded
from ebpfvm.asm import assemble
from ebpfvm.errors import BudgetExceeded, HelperFault, MemoryFault, VmBusy
from ebpfvm.helpers import HELPER_CALL_UNITS, NO_BUDGET, HelperContext
from ebpfvm.jit.context import BUDGET_SLICE
from ebpfvm.jit.runtime import BYTEARRAY_START, MEMORYVIEW_BUF
from ebpfvm.memory import address_of
from ebpfvm.vm import EbpfVmMbuff, EbpfVmRaw
from engines import ALL_ENGINES, CHECKED_ENGINES, run

pytestmark = pytest.mark.skipif("jit" not in ALL_ENGINES, reason="no JIT on this platform")

JIT_ENGINES = [name for name in ALL_ENGINES if name != "interp"]

# -- F2: the bytes of a bytearray input --------------------------------------------------

READ_THEN_STORE = "ldxdw r0, [r1+0]\nstdw [r1+8], 0x2a\nexit"
SECRET = b"SECRET!!"
PAYLOAD = b"payload."


def _shifted(prefix: bytes, data: bytes) -> bytearray:
    """A bytearray holding `data` whose allocation starts with `prefix`
    (deleted: CPython moves the data start, not the bytes)."""
    buffer = bytearray(prefix + data)
    del buffer[: len(prefix)]
    return buffer


def test_fast_path_offsets_point_at_the_data_start() -> None:
    """F2: the offsets the fast path reads the data pointer at give the
    address the buffer protocol gives, also where data and allocation differ."""
    import ctypes
    assert BYTEARRAY_START and MEMORYVIEW_BUF  # CPython: the fast paths are on
    shifted = _shifted(SECRET, PAYLOAD)
    base = bytearray(SECRET + PAYLOAD)
    for obj, offset in ((shifted, BYTEARRAY_START), (memoryview(base)[8:], MEMORYVIEW_BUF)):
        assert ctypes.c_void_p.from_address(id(obj) + offset).value == address_of(obj)


@pytest.mark.parametrize("shape", ["bytearray after del", "view of it", "view slice"])
def test_bytearray_input_after_prefix_delete_reads_its_own_bytes(engine: str,
                                                                 shape: str) -> None:
    """F2: after ``del pkt[:8]`` the JIT read the deleted SECRET!! (ob_bytes)
    and stored 8 bytes early; every engine must see what the object shows."""
    pkt = _shifted(SECRET, PAYLOAD + bytes(8))
    base = bytearray(SECRET + PAYLOAD + bytes(8))
    mem: Any = {"bytearray after del": pkt, "view of it": memoryview(pkt),
                "view slice": memoryview(base)[8:]}[shape]
    vm = EbpfVmRaw(assemble(READ_THEN_STORE))
    assert run(vm, engine, mem) == int.from_bytes(PAYLOAD, "little")
    assert bytes(mem) == PAYLOAD + (0x2A).to_bytes(8, "little")
    if shape == "view slice":
        assert base[:8] == SECRET  # nothing written before the view's start


CALL_THEN_READ = "mov r6, r1\ncall 1\nldxb r0, [r6+0]\nexit"


def _resize_helper(action: Any) -> Any:
    def helper(*_args: int) -> int:
        action()
        return 0
    return helper


@pytest.mark.parametrize("shifted", [False, True], ids=["fresh", "shifted"])
def test_helper_cannot_resize_a_bytearray_input(engine: str, shifted: bool) -> None:
    """F2: a helper that grows the input bytearray gets BufferError (a
    HelperFault for the run), not a run that goes on in freed memory; after
    the run the bytearray can be resized again (the pin is released)."""
    pkt = _shifted(SECRET, b"\x07" * 16) if shifted else bytearray(b"\x07" * 16)
    vm = EbpfVmRaw(assemble(CALL_THEN_READ))
    vm.register_helper(1, _resize_helper(lambda: pkt.extend(bytes(1 << 16))))
    with pytest.raises(HelperFault) as info:
        run(vm, engine, pkt)
    assert (info.value.pc, info.value.helper_id) == (1, 1)
    assert isinstance(info.value.cause, BufferError)
    assert len(pkt) == 16
    del info  # its traceback holds the run's views of pkt
    gc.collect()
    pkt.extend(b"\x01")  # no pin left behind by the run
    assert len(pkt) == 17


_VIEW_CHILD = """
import mmap
from ebpfvm.asm import assemble
from ebpfvm.errors import HelperFault
from ebpfvm.vm import EbpfVmRaw
area = mmap.mmap(-1, mmap.PAGESIZE)
area[:1] = b"\\x05"
view = memoryview(area)[:64]
vm = EbpfVmRaw(assemble({program!r}))
vm.jit_compile(unchecked={unchecked!r})
armed = [True]
def helper(*args):
    if armed[0]:
        try:
            view.release()
        finally:
            area.close()
    return 0
vm.register_helper(1, helper)
try:
    vm.execute_program_jit(view)
    cause = "returned"
except HelperFault as exc:
    cause = type(exc.cause).__name__
    del exc
armed[0] = False
again = vm.execute_program_jit(view)
import gc
gc.collect()  # tracebacks of the fault held views of the area
view.release()
area.close()  # no export left behind by the runs
report([cause, area.closed, again])
"""


@pytest.mark.parametrize("engine", JIT_ENGINES)
def test_helper_cannot_release_or_close_a_memoryview_input(engine: str) -> None:
    """F2: a memoryview input (fast path: the code reads view.buf itself) is
    pinned once a helper runs: releasing the view or closing its mmap raises
    BufferError in the helper, where the run went on in unmapped memory (a
    crash: hence a child process)."""
    code = _VIEW_CHILD.format(program=CALL_THEN_READ, unchecked=engine == "jit-unchecked")
    outcome = run_bounded(code, timeout=60)
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    assert outcome.result() == ["BufferError", True, 5]


# -- the helper budget protocol ------------------------------------------------------------

TWO_CALLS = "call 1\ncall 2\nexit"  # three one-instruction blocks: calls end blocks


def _budget_vm(budget: int | None, units: int) -> tuple[EbpfVmRaw, list[tuple[int, int]]]:
    seen: list[tuple[int, int]] = []

    def spend(ctx: HelperContext, *_args: int) -> int:
        seen.append((ctx.budget, ctx.budget_total))
        ctx.charge(units)
        return 0

    def look(ctx: HelperContext, *_args: int) -> int:
        seen.append((ctx.budget, ctx.budget_total))
        return 0

    vm = EbpfVmRaw(assemble(TWO_CALLS), budget=budget)
    vm.register_helper(1, spend, context=True)
    vm.register_helper(2, look, context=True)
    return vm, seen


_BUDGET_ENGINES = list(CHECKED_ENGINES)


@pytest.mark.parametrize("engine", _BUDGET_ENGINES)
@pytest.mark.parametrize("budget", [1000, 3 * BUDGET_SLICE + 5, None],
                         ids=["small", "past a slice", "none"])
def test_helper_charge_draws_on_the_run_budget(engine: str, budget: int | None) -> None:
    """Budget protocol (F6/F7 groundwork, JIT side): a helper sees what is
    left of the run's budget (one instruction per block ran before each
    call, and each call's fixed HELPER_CALL_UNITS), and what it charges is
    gone for the rest of the run."""
    units = 100
    vm, seen = _budget_vm(budget, units)
    run(vm, engine, b"")
    total = NO_BUDGET if budget is None else budget
    call = HELPER_CALL_UNITS
    assert seen == [(total - 1 - call, total), (total - 2 - units - 2 * call, total)]


@pytest.mark.parametrize("engine", _BUDGET_ENGINES)
def test_helper_charge_past_the_budget_is_budget_exceeded(engine: str) -> None:
    """A helper that charges more than is left stops the run with
    BudgetExceeded at its call and the whole budget, as the interpreter does."""
    budget = 1000
    vm, seen = _budget_vm(budget, budget)
    with pytest.raises(BudgetExceeded) as info:
        run(vm, engine, b"")
    assert (info.value.pc, info.value.count) == (0, budget)
    assert seen == [(budget - 1 - HELPER_CALL_UNITS, budget)]
    assert vm.last_instruction_count == budget


# -- F9: budget slices keep the counts exact -------------------------------------------------

COUNTDOWN = "mov r0, {n}\nloop:\nsub r0, 1\njne r0, 0, loop\nexit"
"""1 + 2n + 1 instructions: the loop body is one block of two."""


def test_budget_slices_keep_counts_exact() -> None:
    """F9: the budget register holds one slice at a time; runs across many
    slices count exactly as one budget does (counts worked out by hand)."""
    n = 2 * BUDGET_SLICE + 3
    insns = 2 * n + 2
    vm = EbpfVmRaw(assemble(COUNTDOWN.format(n=n)), budget=None)
    vm.jit_compile()
    assert vm.execute_program_jit(b"") == 0
    assert vm.last_instruction_count == insns
    vm.budget = insns
    assert vm.execute_program_jit(b"") == 0
    assert vm.last_instruction_count == insns
    vm.budget = insns - 1  # the exit (pc 3) no longer fits
    with pytest.raises(BudgetExceeded) as info:
        vm.execute_program_jit(b"")
    assert (info.value.pc, info.value.count) == (3, insns - 1)
    vm.budget = insns - 2  # one instruction left for the last two-instruction block
    with pytest.raises(BudgetExceeded) as info:
        vm.execute_program_jit(b"")
    assert (info.value.pc, info.value.count) == (2, insns - 2)
    assert vm.last_instruction_count == insns - 2


# -- F9: Ctrl-C ---------------------------------------------------------------------------------

SPIN = "mov r0, 0\nloop:\nadd r0, 1\nja loop\nexit"
SPIN_LOOP = (1, 2)
CALL_LOOP = """
loop:
ldxdw r6, [r1+0]
add r6, 1
stxdw [r1+0], r6
call 1
ja loop
exit
"""
CALL_PC = 3

_CHILD = """
import json, sys, time
sys.path.insert(0, {src!r})
from ebpfvm.asm import assemble
from ebpfvm.vm import EbpfVmRaw
calls = [0]
def helper(*args):
    calls[0] += 1
    return 0
vm = EbpfVmRaw(assemble({program!r}), budget=None)
vm.register_helper(1, helper)
vm.jit_compile(unchecked={unchecked!r})
mem = bytearray(8)
print("ready", flush=True)
try:
    if {entry!r} == "run":
        vm.execute_program_jit(mem)
    elif {entry!r} == "test_run":
        vm.test_run(mem, repeat=3)
    else:
        vm.execute_spans(mem, [(0, 8)])
    outcome = {{"type": "returned"}}
except BaseException as exc:
    outcome = {{"type": type(exc).__name__, "keyboard": isinstance(exc, KeyboardInterrupt),
               "pc": getattr(exc, "pc", None)}}
outcome["at"] = time.monotonic()
outcome["calls"] = calls[0]
outcome["counter"] = int.from_bytes(mem, "little")
print(json.dumps(outcome), flush=True)
"""


def _interrupt(program: str, entry: str, unchecked: bool = False) -> tuple[dict[str, Any], float,
                                                                            str]:
    """Run `program` in a child, SIGINT it once it runs; (its report, seconds
    from the signal to the run's end, its stderr)."""
    source = _CHILD.format(src=str(REPO / "src"), program=textwrap.dedent(program),
                           unchecked=unchecked, entry=entry)
    child = subprocess.Popen([sys.executable, "-c", source], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # well inside the endless run
        sent = time.monotonic()
        os.kill(child.pid, signal.SIGINT)
        out, err = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    report = json.loads(out.strip().splitlines()[-1])
    return report, report["at"] - sent, err


@pytest.mark.parametrize("entry", ["run", "test_run", "spans"])
def test_ctrl_c_stops_an_endless_native_loop(entry: str) -> None:
    """F9: with budget=None, Ctrl-C never stopped a native loop without helper
    calls. Now the run ends within a second with RunInterrupted at a pc of the
    loop, in run(), repeat() and batches (which run without the GIL)."""
    report, seconds, err = _interrupt(SPIN, entry)
    assert (report["type"], report["keyboard"]) == ("RunInterrupted", True), (report, err)
    assert report["pc"] in SPIN_LOOP
    assert seconds < 1.0
    assert "Exception ignored" not in err


@pytest.mark.parametrize(("entry", "unchecked"), [("run", False), ("test_run", False),
                                                  ("run", True)])
def test_ctrl_c_in_a_helper_loop_stops_the_run(entry: str, unchecked: bool) -> None:
    """F9: a signal handler that raised at the trampoline's entry made ctypes
    print "Exception ignored" and the code skip that helper call, silently.
    Now the run stops at the call with RunInterrupted; every call the program
    made (its own counter in memory) reached the helper but maybe the last."""
    report, seconds, err = _interrupt(CALL_LOOP, entry, unchecked)
    assert (report["type"], report["keyboard"], report["pc"]) == ("RunInterrupted", True,
                                                                  CALL_PC), (report, err)
    assert report["counter"] - report["calls"] in (0, 1)
    assert report["counter"] > 0
    assert seconds < 1.0
    assert "Exception ignored" not in err


# -- F10: a helper cannot pull the VM from under its own run ----------------------------------

_F10_CHILD = """
import json
from ebpfvm.asm import assemble
from ebpfvm.errors import HelperFault
from ebpfvm.vm import EbpfVmRaw
PROG = assemble({program!r})
ACTIONS = {{
    "close": lambda vm: vm.close(),
    "set_program": lambda vm: vm.set_program(PROG),
    "jit_compile": lambda vm: vm.jit_compile(),
    "jit_code().close": lambda vm: vm.jit_code().close(),
    "set_verifier": lambda vm: vm.set_verifier(lambda code: None),
    "register_allowed_memory": lambda vm: vm.register_allowed_memory(bytearray(8)),
}}
outcome = {{}}
for name, action in ACTIONS.items():
    vm = EbpfVmRaw(PROG)
    armed = [True]
    def helper(*args, vm=vm, action=action, armed=armed):
        if armed[0]:
            action(vm)
        return 0
    vm.register_helper(1, helper)
    vm.jit_compile(unchecked={engine!r} == "jit-unchecked")
    go = vm.execute_program if {engine!r} == "interp" else vm.execute_program_jit
    try:
        go(bytearray([9]))
        row = ["returned"]
    except HelperFault as exc:
        row = [type(exc.cause).__name__, exc.pc, exc.helper_id]
    armed[0] = False
    row.append(go(bytearray([7])))  # the VM still works
    action(vm)  # and the action works once no run is in progress
    outcome[name] = row
report(outcome)
"""


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_helper_cannot_close_or_reload_the_running_vm(engine: str) -> None:
    """F10: vm.close(), set_program(), jit_compile() (or closing the JIT code)
    from a helper unmapped the running code: a segfault. Each is refused with
    VmBusy (the run ends with HelperFault, cause VmBusy); afterwards the VM
    runs and the action works."""
    outcome = run_bounded(_F10_CHILD.format(program=CALL_THEN_READ, engine=engine), timeout=60)
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    rows = outcome.result()
    assert isinstance(rows, dict)
    for name, row in rows.items():
        assert row == ["VmBusy", 1, 1, 7], name


_RUNNER_CHILD = """
from ebpfvm.asm import assemble
from ebpfvm.contexts import XdpRunner
from ebpfvm.errors import HelperFault
runner = XdpRunner(assemble({program!r}), engine={engine!r})
armed = [True]
def helper(*args):
    if armed[0]:
        runner.close()
    return 0
runner.vm.register_helper(1, helper)
try:
    runner.run(bytes(64))
    cause = "returned"
except HelperFault as exc:
    cause = type(exc.cause).__name__
armed[0] = False
report([cause, runner.run(bytes(64)).verdict])
"""


@pytest.mark.parametrize("engine", JIT_ENGINES)
def test_helper_cannot_close_the_runner_under_its_run(engine: str) -> None:
    """F10: an XdpRunner's close() from a helper unmapped the packet frame the
    JIT code was running on (a segfault). The runner refuses to close while
    its VM runs (VmBusy, the cause of a HelperFault) and still works."""
    program = "mov r6, r1\ncall 1\nldxw r0, [r6+0]\nmov r0, 2\nexit"
    outcome = run_bounded(_RUNNER_CHILD.format(program=program, engine=engine), timeout=60)
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    assert outcome.result() == ["VmBusy", 2]


def test_reentrant_mbuff_run_keeps_the_running_regions() -> None:
    """F10: EbpfVmMbuff.execute_program_jit wrote its mbuff into the region
    table before finding the VM busy, so a helper calling it replaced the
    running program's mbuff region. Now it gets VmBusy and the run goes on
    with its own regions (it reads through its mbuff after the call)."""
    prog = assemble("mov r6, r1\ncall 1\nldxdw r2, [r6+0]\nldxb r0, [r2+0]\nexit")
    vm = EbpfVmMbuff(prog)
    data = bytearray([42])
    mbuff = bytearray(address_of(data).to_bytes(8, "little"))
    refused: list[BaseException] = []

    def helper(*_args: int) -> int:
        try:
            vm.execute_program_jit(bytearray(1), bytearray(8))
        except VmBusy as exc:
            refused.append(exc)
        return 0

    vm.register_helper(1, helper)
    vm.register_allowed_memory(data)
    vm.jit_compile()
    assert vm.execute_program_jit(b"", mbuff) == 42
    assert len(refused) == 1


# -- spans and instruction counts --------------------------------------------------------------

SUM_FIRST = "ldxb r0, [r1+0]\nexit"


@pytest.mark.parametrize("spans", [
    # Read as uint64s, the first 16 bytes of each make the valid pair (0, 4);
    # the second pair came from past the end of the array.
    array.array("I", [0, 0, 4, 0]), array.array("H", [0, 0, 0, 0, 4, 0, 0, 0]),
    array.array("q", [0, 4]), [(0, 4, 4), (4,)], [(0, -1)],
], ids=["uint32", "uint16", "int64", "not pairs", "negative"])
def test_execute_spans_accepts_only_uint64_pairs(spans: Any) -> None:
    """Also (issue 11): execute_spans read 16 bytes per pair from an array of
    any item size, past the end of array('I'). Only 8-byte unsigned items (or
    pairs) are accepted; the rest is TypeError/ValueError before any run."""
    vm = EbpfVmRaw(assemble("mov r6, r1\ncall 1\nldxb r0, [r6+0]\nexit"))
    calls: list[int] = []
    vm.register_helper(1, lambda *args: calls.append(1) or 0)
    vm.jit_compile()
    with pytest.raises((TypeError, ValueError)):
        vm.execute_spans(bytearray(range(8)), spans)
    assert calls == []


def test_execute_spans_takes_8_byte_unsigned_items() -> None:
    """The accepted forms all give the same runs."""
    numpy = pytest.importorskip("numpy")
    vm = EbpfVmRaw(assemble(SUM_FIRST))
    vm.jit_compile()
    buffer = bytearray(range(10, 18))
    pairs = [(0, 4), (4, 4)]
    forms: list[Any] = [pairs, array.array("Q", [0, 4, 4, 4]),
                        numpy.array(pairs, dtype=numpy.uint64)]
    if array.array("L").itemsize == 8:
        forms.append(array.array("L", [0, 4, 4, 4]))
    for spans in forms:
        assert list(vm.execute_spans(buffer, spans)) == [10, 14]


BRANCHY = """
ldxb r2, [r1+0]
jne r2, 0, +2
mov r0, 5
exit
mov r3, 0
add r3, r3
ldxb r0, [r3+0]
exit
"""


def test_instruction_count_after_a_fault_is_this_runs() -> None:
    """Also (issue 11): after a fault, last_instruction_count kept the run
    before's count. It is the instructions that ran, the faulting one
    included. JIT only here: the interpreter's side is another branch's."""
    vm = EbpfVmRaw(assemble(BRANCHY))
    vm.jit_compile()
    assert vm.execute_program_jit(bytearray([0])) == 5
    assert vm.last_instruction_count == 4  # pcs 0 1 2 3
    with pytest.raises(MemoryFault) as info:
        vm.execute_program_jit(bytearray([1]))
    assert info.value.pc == 6
    assert vm.last_instruction_count == 5  # pcs 0 1 4 5 6

    failing = EbpfVmRaw(assemble("mov r0, 0\nmov r1, 1\ncall 9\nexit"))
    failing.register_helper(9, lambda *args: 1 // 0)
    failing.jit_compile()
    failing.last_instruction_count = 99
    with pytest.raises(HelperFault):
        failing.execute_program_jit(b"")
    assert failing.last_instruction_count == 3 + HELPER_CALL_UNITS  # the call's fixed charge

    spinning = EbpfVmRaw(assemble(SPIN), budget=1234)
    spinning.jit_compile()
    with pytest.raises(BudgetExceeded):
        spinning.execute_program_jit(b"")
    assert spinning.last_instruction_count == 1234
