"""Issue 11, tail calls and the interpreter: regression tests for F1, F5, F6,
F11, F12, F16, RunInterrupted and the instruction count after a fault.

Most cases use tests/data/elf/tailchain.o (built from tailchain.c): `relay`
tail-calls itself until a given depth, then another slot; `wild` loads
through a wild pointer; `spin` loops as many times as its input says, then
tail-calls a slot; XDP and tc programs tail-call programs that use a
runner's context helpers. Findings whose old behaviour ate memory or time run
in a child process under a memory limit and a timeout (tests/bounded.py).
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bounded import run_bounded
from ebpfvm import (
    BudgetExceeded,
    EbpfVmNoData,
    EbpfVmRaw,
    HelperFault,
    MemoryFault,
    ResourceLimit,
    RunInterrupted,
    TailCallFault,
    VmBusy,
    assemble,
    load,
)
from ebpfvm.contexts import SkbRunner, XdpAction, XdpRunner
from ebpfvm.elf import MAX_TAIL_CALLS, ElfObject
from ebpfvm.encoding import decode
from ebpfvm.helpers import HELPER_CALL_UNITS
from ebpfvm.interp_engine import InterpEngine
from ebpfvm.interpreter import compile_program
from engines import run

CHAIN = Path(__file__).parent / "data" / "elf" / "tailchain.o"  # built from tailchain.c
SRC = Path(__file__).resolve().parents[1] / "src"
RELAY, WILD, SPIN, STRIP, PEEK, EMPTY = 0, 1, 2, 4, 5, 7
"""Slots of `jumps`: tailchain.c's xdp_entry uses 4 and tc_entry 5; 7 stays empty."""
WILD_ADDRESS = 0xDEAD000
"""The address tailchain.c's `wild` loads 4 bytes from."""


def _pcs(code: bytes, mnemonic: str, imm: int | None = None) -> list[int]:
    """The pcs of the instructions spelled `mnemonic` (with immediate `imm`)."""
    return [insn.pc for insn in decode(code) if insn.row is not None
            and insn.row.mnemonic == mnemonic and (imm is None or insn.imm == imm)]


def _relay_input(depth: int, then: int, loops: int = 0, go_on: int = RELAY) -> bytearray:
    """relay's input: tail-call slot `go_on` until `depth` programs ran, then
    slot `then`; for spin: loop `loops` times, then tail-call slot `go_on`."""
    return bytearray([depth, go_on, then, 0]) + struct.pack("<I", loops)


def _spin_input(loops: int, then: int = SPIN) -> bytearray:
    """spin's input: loop `loops` times, then tail-call slot `then`."""
    return bytearray([0, then, 0, 0]) + struct.pack("<I", loops)


def _chain_object() -> ElfObject:
    obj = load(CHAIN)
    jumps = obj.maps["jumps"]
    jumps[RELAY] = "relay"
    jumps[WILD] = "wild"
    jumps[SPIN] = "spin"
    return obj


# -- F1: a fault deep in a chain ----------------------------------------------------------------


def test_tail_call_fault_message_is_bounded(checked_engine: str) -> None:
    """F1: a wild pointer at the end of a chain of 33 tail calls is one
    TailCallFault with a short message, the chain and the innermost fault
    (the old code nested reprs, doubling the message per level)."""
    outcome = run_bounded(f"""
        from pathlib import Path
        from ebpfvm import TailCallFault, load
        from engines import run
        obj = load(Path({str(CHAIN)!r}))
        obj.maps["jumps"][{RELAY}] = "relay"
        obj.maps["jumps"][{WILD}] = "wild"
        vm = obj.vm("relay")
        try:
            run(vm, {checked_engine!r}, bytearray([{MAX_TAIL_CALLS}, {RELAY}, {WILD}, 0]))
        except TailCallFault as exc:
            fault = exc.fault
            report({{"pc": exc.pc, "chain": list(exc.chain), "type": type(fault).__name__,
                    "fault": [fault.pc, fault.address, fault.size, fault.access],
                    "message": len(str(exc)), "count": vm.last_instruction_count,
                    "hops": int.from_bytes(obj.data[".bss"], "little")}})
    """, memory_mb=1024, timeout=120)
    result = outcome.result()
    assert isinstance(result, dict)
    obj = load(CHAIN)
    relay, wild = obj.program("relay").code, obj.program("wild").code
    # 33 tail calls (the kernel's limit): relay ran 33 times, then wild.
    assert result["hops"] == MAX_TAIL_CALLS
    assert result["chain"] == ["relay"] * MAX_TAIL_CALLS + ["wild"]
    assert result["pc"] == _pcs(relay, "call", 12)[0]  # the outermost program's tail call
    assert result["type"] == "MemoryFault"
    assert result["fault"] == [_pcs(wild, "ldxw")[0], WILD_ADDRESS, 4, "load"]
    assert result["message"] < 2000


def test_helper_fault_message_does_not_embed_the_cause_repr() -> None:
    """F1: a helper's exception appears in the HelperFault message as its type
    and a bounded text; the exception itself is `cause`."""
    boom = ValueError("\\" * 100_000)

    def helper(a: int, b: int, c: int, d: int, e: int) -> int:
        raise boom

    vm = EbpfVmNoData(assemble("call 7\nexit"))
    vm.register_helper(7, helper, name="boom")
    with pytest.raises(HelperFault) as info:
        vm.execute_program()
    assert (info.value.pc, info.value.helper_id, info.value.helper_name) == (0, 7, "boom")
    assert info.value.cause is boom
    assert len(str(info.value)) < 2000


# -- F6: one budget per run ---------------------------------------------------------------------

SPIN_PER_LOOP = 6
"""spin's loop: ldxdw, mov, add, stxdw, add, jlt (tailchain.c compiled)."""
SPIN_TO_CALL = 4 + 7
"""spin's instructions outside the loop up to its tail call: mov, stxdw, ldxw, jeq32;
lddw, ldxdw, add, stxdw, ldxb, lddw, call."""
SPIN_AFTER_CALL = 3
"""After a failed tail call: ldxdw, and32, exit."""


def test_tail_called_programs_share_the_run_budget() -> None:
    """F6: a chain of 34 programs that each loop for most of the budget ends
    with the budget exhausted once, quickly (the old code gave every callee a
    fresh budget: 34 budgets)."""
    outcome = run_bounded(f"""
        import time
        from pathlib import Path
        from ebpfvm import BudgetExceeded, TailCallFault, load
        obj = load(Path({str(CHAIN)!r}))
        obj.maps["jumps"][{SPIN}] = "spin"
        vm = obj.vm("spin")
        start = time.monotonic()
        loops = 9 * vm.budget // 10 // {SPIN_PER_LOOP}
        try:
            vm.execute_program(bytearray([0, {SPIN}, 0, 0]) + loops.to_bytes(4, "little"))
        except TailCallFault as exc:
            report({{"pc": exc.pc, "chain": list(exc.chain), "type": type(exc.fault).__name__,
                    "count": exc.fault.count, "budget": vm.budget,
                    "ran": vm.last_instruction_count,
                    "hops": int.from_bytes(obj.data[".bss"], "little"),
                    "seconds": time.monotonic() - start}})
    """, memory_mb=1024, timeout=60)
    result = outcome.result()
    assert isinstance(result, dict)
    assert result["type"] == "BudgetExceeded"
    assert result["chain"] == ["spin", "spin"]  # the second program ran out
    assert result["pc"] == _pcs(load(CHAIN).program("spin").code, "call", 12)[0]
    assert result["count"] == result["budget"] == result["ran"]
    assert result["hops"] == 1


def test_budget_set_after_loading_reaches_tail_called_programs(checked_engine: str) -> None:
    """F6: `vm.budget = 3000` (as ``--budget 3000`` does) bounds the whole
    chain: at most 3000 instructions run (the old callees got the default)."""
    obj = _chain_object()
    vm = obj.vm("spin")
    vm.budget = 3000
    with pytest.raises(TailCallFault) as info:
        run(vm, checked_engine, _spin_input(100))  # 34 programs of about 600 instructions
    assert isinstance(info.value.fault, BudgetExceeded)
    assert info.value.fault.count == 3000
    assert vm.last_instruction_count == 3000
    # A chain that fits counts every program's instructions: 34 spins without
    # loops, the last one's tail call refused (the 34th).
    obj.data[".bss"][:] = bytes(8)
    assert run(vm, checked_engine, _spin_input(0)) == 0
    assert int.from_bytes(obj.data[".bss"], "little") == MAX_TAIL_CALLS + 1
    # Every tail call, made or refused, is a helper call: HELPER_CALL_UNITS more.
    assert vm.last_instruction_count == (MAX_TAIL_CALLS + 1) * (
        SPIN_TO_CALL + HELPER_CALL_UNITS) + SPIN_AFTER_CALL
    run(vm, checked_engine, _spin_input(10, then=EMPTY))
    assert vm.last_instruction_count == (SPIN_TO_CALL + 10 * SPIN_PER_LOOP + HELPER_CALL_UNITS
                                         + SPIN_AFTER_CALL)


def test_tail_call_chain_counts_every_program() -> None:
    """F6: last_instruction_count of a run with tail calls includes the callees."""
    obj = _chain_object()
    vm = obj.vm("relay")
    relay = obj.program("relay").code
    # relay -> relay -> relay -> (empty slot): relay runs 13 instructions up to
    # its tail call when it goes on (jlt taken), 14 when it stops (jlt not
    # taken runs one more mov), and 3 after a failed call (add32, mov32, exit);
    # each of the three tail calls also costs HELPER_CALL_UNITS.
    assert len(_pcs(relay, "call", 12)) == 1
    assert vm.execute_program(_relay_input(3, EMPTY)) == 1003
    assert vm.last_instruction_count == 2 * 13 + 14 + 3 + 3 * HELPER_CALL_UNITS


# -- F12: the chain depth belongs to the run ----------------------------------------------------


def test_tail_call_depth_is_per_run_not_per_process() -> None:
    """F12: while one thread is deep in a chain of 33 tail calls, another
    thread's tail call in another object still works."""
    deep, other = _chain_object(), _chain_object()
    deep_vm, other_vm = deep.vm("relay", budget=None), other.vm("relay")
    done = threading.Event()
    errors: list[BaseException] = []

    def go_deep() -> None:
        try:  # 33 tail calls, the last to spin, which loops a while
            deep_vm.execute_program(_relay_input(MAX_TAIL_CALLS, SPIN, 400_000))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=go_deep)
    thread.start()
    results = []
    try:
        while not done.is_set():
            other.data[".bss"][:] = bytes(8)
            # relay -> spin (no loop) -> empty slot: 0; 1001 if the tail call failed.
            results.append(other_vm.execute_program(_relay_input(1, SPIN, go_on=EMPTY)))
            time.sleep(0.001)
    finally:
        thread.join()
    assert not errors
    assert int.from_bytes(deep.data[".bss"], "little") == MAX_TAIL_CALLS + 1
    assert results and set(results) == {0}


# -- F16: callees get the runner's helpers ------------------------------------------------------


def test_tail_called_xdp_program_gets_the_runner_helpers(checked_engine: str) -> None:
    """F16: an XDP program reached by a tail call can call bpf_xdp_adjust_head."""
    obj = load(CHAIN)
    obj.maps["jumps"][STRIP] = "strip"
    runner = XdpRunner(obj.vm("xdp_entry"), engine=checked_engine)
    packet = bytes(range(60))
    try:
        result = runner.run(packet)
    finally:
        runner.close()
    assert result.verdict == XdpAction.PASS
    assert result.packet == packet[14:]


def test_tail_called_tc_program_gets_the_runner_helpers(checked_engine: str) -> None:
    """F16: a tc program reached by a tail call can call bpf_skb_load_bytes."""
    obj = load(CHAIN)
    obj.maps["jumps"][PEEK] = "peek"
    runner = SkbRunner(obj.vm("tc_entry"), engine=checked_engine)
    packet = bytes(range(100, 160))
    try:
        result = runner.run(packet)
    finally:
        runner.close()
    assert result.r0 & 0xFFFF_FFFF == int.from_bytes(packet[2:6], "little")


SKBLEN = 6
"""tailchain.o's slot that tc_len_entry tail-calls."""


@pytest.mark.parametrize("build", ["raw", "skb"])
def test_tail_called_tc_program_gets_the_callers_sk_buff(checked_engine: str, build: str) -> None:
    """F16: a tc program reached by a tail call gets the caller's r1, the
    __sk_buff (len at offset 0, mark at 8), not the packet; whether the runner
    was given a plain VM or obj.skb() built it."""
    obj = load(CHAIN)
    obj.maps["jumps"][SKBLEN] = "skblen"
    if build == "raw":
        runner = SkbRunner(obj.vm("tc_len_entry"), engine=checked_engine, mark=7)
    else:
        runner = obj.skb("tc_len_entry", engine=checked_engine, mark=7)
    packet = bytes(range(60))
    try:
        result = runner.run(packet)
    finally:
        runner.close()
    assert result.r0 & 0xFFFF_FFFF == len(packet) * 65536 + 7


# -- F11: threads sharing one VM ----------------------------------------------------------------

STACK_CHECK = """
    ldxdw r2, [r1]
    stxdw [r10-8], r2
    mov r3, 300
loop:
    ldxdw r4, [r10-8]
    jne r4, r2, clobbered
    sub r3, 1
    jne r3, 0, loop
    ldxdw r0, [r10-8]
    exit
clobbered:
    mov r0, 0
    exit
"""


def test_threads_sharing_one_vm_never_get_a_wrong_result(checked_engine: str) -> None:
    """F11: two threads run one VM over and over; each run returns its own
    input's value (read back from the stack it wrote) or raises VmBusy."""
    vm = EbpfVmRaw(assemble(STACK_CHECK))
    if checked_engine != "interp":
        vm.jit_compile()
    wrong: list[tuple[int, int]] = []
    counts = {"ok": 0, "busy": 0}
    switch = sys.getswitchinterval()

    def hammer(value: int) -> None:
        data = bytearray(value.to_bytes(8, "little"))
        for _ in range(300):
            try:
                got = run(vm, checked_engine, data)
            except VmBusy:
                counts["busy"] += 1
                continue
            counts["ok"] += 1
            if got != value:
                wrong.append((value, got))

    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=hammer, args=(value,)) for value in (0x1111, 0x2222)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    assert not wrong
    assert counts["ok"] > 0


# -- F5: translation memory ---------------------------------------------------------------------


@pytest.mark.parametrize("slots", [300_000, 1_000_000])
def test_huge_program_is_refused_or_runs_within_bounds(slots: int) -> None:
    """F5: a program the verifier accepts, of 300,000 or 1,000,000 slots, gives
    a result or ResourceLimit under 1 GB, never MemoryError or a kill (the
    old whole-program translation took about 31 KB per slot)."""
    outcome = run_bounded(f"""
        from ebpfvm import EbpfVmNoData, ResourceLimit, assemble
        vm = EbpfVmNoData(assemble("add r0, 1") * ({slots} - 1) + assemble("exit"))
        try:
            report({{"result": vm.execute_program()}})
        except ResourceLimit as exc:
            report({{"resource": exc.resource, "limit": exc.limit, "requested": exc.requested,
                    "configured": vm.interpreter_slot_limit}})
    """, memory_mb=1024, timeout=120)
    result = outcome.result()
    assert isinstance(result, dict)
    if "result" in result:
        assert result["result"] == slots - 1
    else:
        assert result["resource"] == "interpreter translation"
        assert result["requested"] == slots
        assert result["limit"] == result["configured"] < slots


def test_long_program_translation_memory_is_bounded() -> None:
    """F5: a 20,000-slot program (allowed) translates in chunks: its peak
    memory stays far below the old whole-function compile (about 470 MB)."""
    outcome = run_bounded("""
        import resource
        from ebpfvm import EbpfVmNoData, assemble
        body = ["add r0, 1", "jeq r0, 7, +1", "stxdw [r10-8], r0", "ldxdw r1, [r10-8]"]
        vm = EbpfVmNoData(assemble("\\n".join(body * 4999 + ["exit"])))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = vm.execute_program()
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        report({"result": result, "count": vm.last_instruction_count, "grew_kb": grew})
    """, memory_mb=1024, timeout=120)
    result = outcome.result()
    assert isinstance(result, dict)
    assert result["result"] == 4999  # r0 = 7 skips one store, the jump lands on the load
    assert result["count"] == 4 * 4999 + 1 - 1
    assert result["grew_kb"] < 150 * 1024


CHUNK_PROGRAMS = {
    "loop": """
        mov r0, 0
        mov r1, 40
    loop:
        add r0, r1
        stxdw [r10-8], r0
        ldxdw r0, [r10-8]
        sub r1, 1
        jne r1, 0, loop
        exit
    """,
    "local calls": """
        mov r6, 5
        call local double
        add r0, r6
        call local double
        exit
    double:
        mov r0, r6
        lsh r0, 1
        mov r6, r0
        exit
    """,
    "helper": """
        mov r1, 3
        call 1
        mov r2, r0
        mov r1, r0
        call 1
        add r0, r2
        exit
    """,
    "fault": """
        mov r0, 1
        add r0, 2
        mov r1, 0x1000
        ldxdw r0, [r1]
        exit
    """,
    "budget": """
        mov r0, 0
    loop:
        add r0, 1
        add r0, 1
        add r0, 1
        ja loop
    """,
}


@pytest.mark.parametrize("name", sorted(CHUNK_PROGRAMS))
@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_chunked_translation_runs_as_one_function(name: str, chunk: int) -> None:
    """F5: a program translated in chunks (here of 1-3 instructions, blocks cut
    across them) gives the same result, count and fault as one function."""
    code = assemble(CHUNK_PROGRAMS[name])
    outcomes = []
    vm = EbpfVmNoData(code, budget=1000)  # one VM: the same stack, the same r10
    vm.register_helper(1, lambda a, *_: a * 7)
    for translated in (compile_program(code), compile_program(code, chunk_slots=chunk)):
        vm._interp = None  # the interpreter engine takes the translation kept on the image
        vm.image.cache[InterpEngine, False] = translated
        try:
            outcome: tuple[object, ...] = (vm.execute_program(),)
        except (MemoryFault, BudgetExceeded) as exc:
            outcome = (type(exc).__name__, exc.pc, getattr(exc, "address", None))
        outcomes.append((outcome, vm.last_instruction_count, tuple(vm.last_registers)))
    assert outcomes[0] == outcomes[1]
    assert compile_program(code, chunk_slots=chunk).source == ""  # it was chunked


# -- RunInterrupted -----------------------------------------------------------------------------


def test_interrupt_in_a_helper_is_run_interrupted(checked_engine: str) -> None:
    """A KeyboardInterrupt raised in a helper stops the run as RunInterrupted
    at the calling pc, still a KeyboardInterrupt."""

    def helper(a: int, b: int, c: int, d: int, e: int) -> int:
        raise KeyboardInterrupt

    vm = EbpfVmNoData(assemble("mov r0, 1\nmov r1, 2\ncall 9\nexit"))
    vm.register_helper(9, helper)
    caught: BaseException | None = None
    try:
        run(vm, checked_engine)
    except KeyboardInterrupt as exc:  # a bare one (the old behaviour) fails below
        caught = exc
    assert isinstance(caught, RunInterrupted)
    assert caught.pc == 2


def test_sigint_stops_an_endless_interpreted_run() -> None:
    """SIGINT during an endless loop without a budget surfaces as RunInterrupted
    with the pc of the loop being run."""
    code = f"""
import sys
sys.path.insert(0, {str(SRC)!r})
from ebpfvm import EbpfVmNoData, RunInterrupted, assemble
vm = EbpfVmNoData(assemble("mov r0, 0\\nloop:\\nadd r0, 1\\nja loop"), budget=None)
print("ready", flush=True)
try:
    vm.execute_program()
except RunInterrupted as exc:
    print("interrupted", exc.pc, isinstance(exc, KeyboardInterrupt), flush=True)
"""
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        os.kill(child.pid, signal.SIGINT)
        out, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    words = out.split()
    assert words[0] == "interrupted"
    assert int(words[1]) in (1, 2)  # the loop's block: add at 1, ja at 2
    assert words[2] == "True"


# -- last_instruction_count after a fault -------------------------------------------------------


def test_instruction_count_after_a_fault_is_that_run_s() -> None:
    """After a fault, last_instruction_count is the instructions that ran,
    the faulting one included; for BudgetExceeded, the budget (it used to
    keep the previous run's count)."""
    vm = EbpfVmRaw(assemble("""
        ldxb r2, [r1]
        jeq r2, 0, wild
        mov r0, 7
        exit
    wild:
        mov r0, 1
        add r0, 2
        mov r3, 0x1000
        ldxdw r0, [r3]
        exit
    """), budget=50)
    assert vm.execute_program(bytearray([1])) == 7
    assert vm.last_instruction_count == 4
    with pytest.raises(MemoryFault) as info:
        vm.execute_program(bytearray([0]))
    assert info.value.pc == 7
    assert vm.last_instruction_count == 2 + 4  # ldxb, jeq; mov, add, mov, ldxdw
    vm.set_program(assemble("mov r0, 0\nloop:\nadd r0, 1\nja loop"))
    with pytest.raises(BudgetExceeded):
        vm.execute_program(bytearray(1))
    assert vm.last_instruction_count == 50


def test_instruction_count_after_a_helper_fault() -> None:
    """The faulting helper call is the last instruction counted."""

    def helper(a: int, b: int, c: int, d: int, e: int) -> int:
        raise ValueError("no")

    vm = EbpfVmNoData(assemble("mov r0, 1\nmov r1, 2\ncall 9\nexit"))
    vm.register_helper(9, helper)
    with pytest.raises(HelperFault):
        vm.execute_program()
    assert vm.last_instruction_count == 3 + HELPER_CALL_UNITS  # the call's fixed charge


def test_interpreter_slot_limit_is_configurable() -> None:
    """F5: the bound is the VM's; lowering it refuses a program it used to run."""
    vm = EbpfVmNoData(assemble("mov r0, 1\nadd r0, 1\nexit"))
    vm.interpreter_slot_limit = 2
    with pytest.raises(ResourceLimit) as info:
        vm.execute_program()
    assert (info.value.resource, info.value.limit, info.value.requested) == (
        "interpreter translation", 2, 3)
    vm.interpreter_slot_limit = 3
    assert vm.execute_program() == 2


def test_a_chain_of_33_tail_calls_makes_one_callee_vm_per_program(checked_engine: str) -> None:
    """Found by the 100,000-input hostile campaign: a 131,072-slot program
    tail-calling itself 33 times took 16 s in the JIT, which compiled it once
    per chain depth. Callees now run one after the other (a tail call ends
    its program), so a chain needs one VM per program, compiled once, and
    the chain still stops at the kernel's limit (34 programs ran)."""
    obj = _chain_object()
    vm = obj.vm("relay")
    assert run(vm, checked_engine, _relay_input(100, EMPTY)) == 1000 + MAX_TAIL_CALLS + 1
    assert int.from_bytes(obj.data[".bss"], "little") == MAX_TAIL_CALLS + 1
    if checked_engine == "interp":
        assert list(vm._tail_calls.pool) == [("relay", 1)]  # (program, level of nested chains)
        callee = vm._tail_calls.pool["relay", 1]
        assert callee.image is vm.image  # the root's program value, shared
        assert callee._interp.compiled is vm._interp.compiled  # and so its translation
    else:  # issue 12: a native jump within the root's code, compiled once; no callee VM
        assert list(vm._tail_calls.pool) == []
