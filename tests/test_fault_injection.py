"""Fault injection (issue 5, point 4): a helper that raises, a helper that hands
the program an address outside every region, the budget running out inside a
local call or a tail-called program. Each stops the run with its typed error,
and the same VM then runs normally, with nothing carried over from the faulted
run: maps hold exactly the updates committed before the fault (there is no
rollback, as in the kernel, where each helper call takes effect at once), and
no run sees what an earlier run left on the stack."""

from __future__ import annotations

from pathlib import Path

import pytest

from ebpfvm import (
    MAX_CALL_DEPTH,
    STACK_SIZE,
    BudgetExceeded,
    CallDepthExceeded,
    EbpfVmNoData,
    EbpfVmRaw,
    HelperContext,
    HelperFault,
    MemoryFault,
    TailCallFault,
    assemble,
    buffer_address,
    load,
)
from ebpfvm.encoding import decode
from ebpfvm.jit.execmem import jit_supported
from ebpfvm.maps import MapType, create_map, map_helpers
from engines import run

FAULTS = Path(__file__).parent / "data" / "elf" / "faults.o"  # built from faults.c
SECRET = 0x5EC2E7
WILD = 0x0000_DEAD_BEEF_0000
"""An address no region covers (the checked engines stop before touching it)."""


def _pcs(code: bytes, mnemonic: str, imm: int | None = None) -> list[int]:
    """The pcs of the instructions spelled `mnemonic` (with immediate `imm`)."""
    return [insn.pc for insn in decode(code) if insn.row is not None
            and insn.row.mnemonic == mnemonic and (imm is None or insn.imm == imm)]


# -- helpers that fail -----------------------------------------------------------------------

HELPER_PROGRAM = """
    ldxb r1, [r1]
    mov r6, 40
    call 9
    add r0, r6
    exit
"""


def test_helper_that_raises_is_a_helper_fault_and_the_vm_stays_usable(engine: str) -> None:
    boom = ValueError("helper failed")

    def helper(a: int, b: int, c: int, d: int, e: int) -> int:
        if a == 1:
            raise boom
        return a * 100

    vm = EbpfVmRaw(assemble(HELPER_PROGRAM))
    vm.register_helper(9, helper, name="flaky")
    with pytest.raises(HelperFault) as info:
        run(vm, engine, bytearray([1]))
    fault = info.value
    assert (fault.pc, fault.helper_id, fault.helper_name) == (2, 9, "flaky")
    assert fault.cause is boom and fault.__cause__ is boom
    # The next run on the same VM: the helper's 200 plus r6 = 40, restored frame and all.
    assert run(vm, engine, bytearray([2])) == 240
    assert vm.last_registers[6] == 40


@pytest.mark.skipif(jit_supported() is not None, reason=str(jit_supported()))
def test_helper_fault_in_a_jit_batch_names_the_input_and_the_next_batch_runs() -> None:
    def helper(a: int, b: int, c: int, d: int, e: int) -> int:
        if a == 1:
            raise ValueError("helper failed")
        return a * 100

    vm = EbpfVmRaw(assemble(HELPER_PROGRAM))
    vm.register_helper(9, helper)
    vm.jit_compile()
    with pytest.raises(HelperFault) as info:
        vm.execute_batch([bytearray([2]), bytearray([3]), bytearray([1]), bytearray([4])])
    assert (info.value.batch_index, info.value.pc, info.value.helper_id) == (2, 2, 9)
    assert vm.execute_batch([bytearray([2]), bytearray([5])]) == [240, 540]
    with pytest.raises(HelperFault):
        vm.test_run(bytearray([1]), repeat=3)
    assert vm.test_run(bytearray([3]), repeat=3)[0] == 340


@pytest.mark.skipif(jit_supported() is not None, reason=str(jit_supported()))
def test_helpers_in_a_jit_batch_see_each_runs_own_input_and_regions() -> None:
    # Found while writing these tests: any helper call in execute_batch or
    # execute_spans raised TypeError (the helper context was built from the
    # batch's list of inputs instead of the current input).
    extra = bytearray([99])

    def helper(ctx: HelperContext, a: int, b: int, c: int, d: int, e: int) -> int:
        first = ctx.read(a, 1)[0]  # the current run's input
        return ctx.add_region(extra) if first == 1 else buffer_address(extra) + first

    # r0 = helper(input); inputs 1: read the region it added; others: read what it returned.
    vm = EbpfVmRaw(assemble("call 9\nldxb r0, [r0]\nexit"))
    vm.register_helper(9, helper, context=True)
    vm.jit_compile()
    assert vm.execute_batch([bytearray([1]), bytearray([1])]) == [99, 99]
    assert vm.execute_spans(bytearray([1, 1, 1]), [(0, 1), (2, 1)]).tolist() == [99, 99]
    # The region input 0 was given is gone in the next run of the batch.
    with pytest.raises(MemoryFault) as info:
        vm.execute_batch([bytearray([1]), bytearray([0])])
    assert (info.value.batch_index, info.value.address) == (1, buffer_address(extra))


@pytest.mark.skipif(jit_supported() is not None, reason=str(jit_supported()))
def test_a_helper_ending_one_run_of_a_jit_batch_does_not_end_the_batch() -> None:
    # Found by fuzzing execute_batch: a run that a helper ended
    # (HelperContext.stop, as bpf_tail_call does) ended the whole batch, and
    # every later input reported 0 without running.
    obj = load(Path(__file__).parent / "data" / "elf" / "tailcall.o")
    obj.maps["jumps"][0] = "double_it"
    vm = obj.vm("dispatch")
    vm.jit_compile()
    packets = [bytearray([0, 21]), bytearray([2, 0]), bytearray([0, 5]), bytearray([1, 0])]
    # Slot 0 doubles data[1]; slots 1 and 2 are empty, so dispatch returns 99.
    assert vm.execute_batch(packets) == [42, 99, 10, 99]
    spans = vm.execute_spans(b"".join(packets), [(0, 2), (2, 2), (4, 2), (6, 2)])
    assert spans.tolist() == [42, 99, 10, 99]


def test_base_exception_in_a_helper_passes_through_and_the_vm_stays_usable(engine: str) -> None:
    def helper(a: int, b: int, c: int, d: int, e: int) -> int:
        if a == 1:
            raise KeyboardInterrupt
        return a

    vm = EbpfVmRaw(assemble(HELPER_PROGRAM))
    vm.register_helper(9, helper)
    with pytest.raises(KeyboardInterrupt):
        run(vm, engine, bytearray([1]))
    assert run(vm, engine, bytearray([3])) == 43


def test_region_a_helper_added_before_failing_is_gone_in_the_next_run(checked_engine: str) -> None:
    extra = bytearray([55])

    def helper(ctx: HelperContext, a: int, b: int, c: int, d: int, e: int) -> int:
        if a == 1:
            ctx.add_region(extra)
            raise ValueError("after adding a region")
        return ctx.add_region(extra) if a == 2 else buffer_address(extra)

    vm = EbpfVmRaw(assemble("ldxb r1, [r1]\ncall 9\nldxb r0, [r0]\nexit"))
    vm.register_helper(9, helper, context=True)
    assert run(vm, checked_engine, bytearray([2])) == 55
    with pytest.raises(HelperFault):
        run(vm, checked_engine, bytearray([1]))
    with pytest.raises(MemoryFault) as info:
        run(vm, checked_engine, bytearray([0]))
    assert (info.value.pc, info.value.address, info.value.size) == (2, buffer_address(extra), 1)


@pytest.mark.parametrize(("access", "offset", "size", "line"), [
    ("load", 8, 8, "ldxdw r0, [r0+8]"),
    ("store", 0, 4, "stw [r0+0], 1"),
    ("load", -1, 2, "ldxh r0, [r0-1]"),
])
def test_helper_returning_an_address_outside_every_region(
        checked_engine: str, access: str, offset: int, size: int, line: str) -> None:
    def helper(a: int, b: int, c: int, d: int, e: int) -> int:
        return WILD if a else 0

    code = assemble(f"ldxb r1, [r1]\ncall 9\njeq r0, 0, +1\n{line}\nexit")
    vm = EbpfVmRaw(code)
    vm.register_helper(9, helper)
    with pytest.raises(MemoryFault) as info:
        run(vm, checked_engine, bytearray([1]))
    fault = info.value
    assert (fault.pc, fault.address, fault.size, fault.access) == (
        3, (WILD + offset) % 2**64, size, access)
    assert run(vm, checked_engine, bytearray([0])) == 0


def test_helper_returning_the_end_of_the_input(checked_engine: str) -> None:
    # One past the last byte of the input: inside no region, though adjacent to one.
    mem = bytearray(16)
    end = buffer_address(mem) + len(mem)
    vm = EbpfVmRaw(assemble("call 9\nldxb r0, [r0]\nexit"))
    vm.register_helper(9, lambda a, b, c, d, e: a + b)  # r1 = mem, r2 = len(mem)
    with pytest.raises(MemoryFault) as info:
        run(vm, checked_engine, mem)
    assert (info.value.pc, info.value.address, info.value.size) == (1, end, 1)
    vm.register_helper(9, lambda a, b, c, d, e: a + b - 1)
    mem[15] = 77
    assert run(vm, checked_engine, mem) == 77


# -- the budget running out inside a local call -----------------------------------------------

RECURSION = """
    ldxb r6, [r1]
    ldxb r2, [r1+1]
    mov r1, r6
    call local recurse
    exit
recurse:
    jeq r1, 0, bottom
    sub r1, 1
    call local recurse
    add r0, 1
    exit
bottom:
    mov r0, 1000
spin:
    jne r2, 0, spin
    exit
"""
"""call local nests mem[0] + 1 frames deep, then spins while mem[1] is nonzero;
each frame adds 1 to the 1000 the deepest one returns."""


def test_budget_exhausted_inside_a_local_call(checked_engine: str) -> None:
    code = assemble(RECURSION)
    (spin,) = _pcs(code, "jne")
    vm = EbpfVmRaw(code, budget=1000)
    with pytest.raises(BudgetExceeded) as info:
        run(vm, checked_engine, bytearray([MAX_CALL_DEPTH - 2, 1]))
    assert (info.value.pc, info.value.count) == (spin, 1000)
    # The next runs start from fresh frames: the deepest allowed nesting works,
    # and one more frame is refused at the same call as on a fresh VM.
    deepest = MAX_CALL_DEPTH - 2  # main plus 1 + (MAX - 2) recurse frames = MAX frames
    assert run(vm, checked_engine, bytearray([deepest, 0])) == 1000 + deepest
    with pytest.raises(CallDepthExceeded) as depth:
        run(vm, checked_engine, bytearray([deepest + 1, 0]))
    assert (depth.value.pc, depth.value.depth) == (_pcs(code, "call local")[1], MAX_CALL_DEPTH)
    assert run(vm, checked_engine, bytearray([0, 0])) == 1000


# -- tail calls (tests/data/elf/faults.c) -------------------------------------------------------


def _steps(obj: object) -> dict[int, int]:
    steps = obj.maps["steps"]  # type: ignore[attr-defined]
    return {int.from_bytes(k, "little"): int.from_bytes(v, "little") for k, v in steps.items()}


def test_budget_exhausted_in_a_tail_called_program(engine: str) -> None:
    obj = load(FAULTS)
    obj.maps["jumps"][0] = "spin"
    vm = obj.vm("entry", budget=500)
    entry_code = obj.program("entry").code
    spin_code = obj.program("spin").code
    with pytest.raises(TailCallFault) as info:
        run(vm, engine, bytearray([0, 5, 1, 0]))
    fault = info.value
    # The caller's tail call names the chain; the fault is the callee's own budget
    # stop, of the whole run's budget (one budget covers the tail calls).
    assert (fault.pc, fault.chain) == (*_pcs(entry_code, "call", 12), ("entry", "spin"))
    assert isinstance(fault.fault, BudgetExceeded) and fault.fault.count == 500
    (loop,) = _pcs(spin_code, "jne")
    assert loop - 2 <= fault.fault.pc <= loop  # inside the spin loop (add, ldxb, jne)
    # Both updates committed before the fault stay; nothing else was written.
    assert _steps(obj) == {1: 5, 2: 5}
    # The next run on the same VM works and goes through the same tail call.
    assert run(vm, engine, bytearray([0, 6, 0, 0])) == 7
    assert _steps(obj) == {1: 6, 2: 6}


def test_memory_fault_in_a_tail_called_program(checked_engine: str) -> None:
    obj = load(FAULTS)
    obj.maps["jumps"][1] = "wild"
    vm = obj.vm("entry")
    with pytest.raises(TailCallFault) as info:
        run(vm, checked_engine, bytearray([1, 9, 0, 3]))
    assert (info.value.pc, info.value.chain) == (
        *_pcs(obj.program("entry").code, "call", 12), ("entry", "wild"))
    cause = info.value.fault
    assert isinstance(cause, MemoryFault)
    assert (cause.pc, cause.address, cause.size, cause.access) == (
        *_pcs(obj.program("wild").code, "ldxdw"), 3 << 40, 8, "load")
    assert _steps(obj) == {1: 9, 3: 9}
    assert run(vm, checked_engine, bytearray([1, 4, 0, 0])) == 8
    assert run(vm, checked_engine, bytearray([2, 4, 0, 0])) == 99  # empty slot: the caller goes on
    assert _steps(obj) == {1: 4, 3: 4}


# -- maps keep exactly the committed updates ------------------------------------------------------

MAP_PROGRAM = """
    mov r6, r1
    ldxb r7, [r6]
    stw [r10-4], 1
    stdw [r10-16], 11
    lddw r1, {handle}
    mov r2, r10
    add r2, -4
    mov r3, r10
    add r3, -16
    mov r4, 0
    call 2
    jeq r7, 0, read
    stw [r10-4], 2
    stdw [r10-16], 22
    lddw r1, {handle}
    mov r2, r10
    add r2, -4
    mov r3, r10
    add r3, -16
    mov r4, 0
    call 2
    lddw r1, {wild}
    ldxdw r0, [r1]
    stw [r10-4], 3
    stdw [r10-16], 33
    lddw r1, {handle}
    mov r2, r10
    add r2, -4
    mov r3, r10
    add r3, -16
    mov r4, 0
    call 2
    exit
read:
    lddw r1, {handle}
    stw [r10-4], 2
    mov r2, r10
    add r2, -4
    call 1
    jeq r0, 0, +1
    ldxdw r0, [r0]
    exit
"""
"""Updates key 1; with mem[0] set, updates key 2, faults, and would update
key 3; without, returns key 2's value (0 when absent)."""


def test_map_updates_before_a_fault_stay_committed(checked_engine: str) -> None:
    table = create_map("table", MapType.HASH, 4, 8, 8)
    table.handle = 0x7A
    vm = EbpfVmRaw(assemble(MAP_PROGRAM.format(handle=table.handle, wild=WILD)))
    for key, helper in map_helpers({table.handle: table}).items():
        vm.register_helper(key, helper)
    assert run(vm, checked_engine, bytearray([0])) == 0  # key 2 not there yet
    with pytest.raises(MemoryFault) as info:
        run(vm, checked_engine, bytearray([1]))
    assert (info.value.address, info.value.size) == (WILD, 8)

    def key(n: int) -> bytes:
        return n.to_bytes(4, "little")

    assert dict(table) == {key(1): (11).to_bytes(8, "little"), key(2): (22).to_bytes(8, "little")}
    assert run(vm, checked_engine, bytearray([0])) == 22  # the next run sees the committed update


# -- no run sees an earlier run's stack ------------------------------------------------------------

STACK_PROGRAM = """
    ldxb r2, [r1]
    jeq r2, 0, read
    lddw r3, {secret:#x}
    stxdw [r10{offset}], r3
    mov r0, 1
    exit
read:
    ldxdw r0, [r10{offset}]
    exit
"""
"""With mem[0] set, writes the secret at r10+offset; else returns what is there."""


@pytest.mark.parametrize("offset", [-8, -512])
def test_stack_is_not_visible_to_the_next_run(engine: str, offset: int) -> None:
    vm = EbpfVmRaw(assemble(STACK_PROGRAM.format(secret=SECRET, offset=offset)))
    assert run(vm, engine, bytearray([1])) == 1
    assert run(vm, engine, bytearray([0])) == 0


def test_stack_of_a_called_frame_is_not_visible_to_the_next_run(engine: str) -> None:
    code = assemble(f"""
        ldxb r2, [r1]
        call local f
        exit
    f:
        jeq r2, 0, read
        lddw r3, {SECRET:#x}
        stxdw [r10-504], r3
        mov r0, 1
        exit
    read:
        ldxdw r0, [r10-504]
        exit
    """)
    vm = EbpfVmRaw(code)
    assert run(vm, engine, bytearray([1])) == 1
    assert run(vm, engine, bytearray([0])) == 0


@pytest.mark.parametrize(("first", "second"), [("interp", "jit"), ("jit", "interp")])
def test_stack_is_not_visible_across_engines(first: str, second: str) -> None:
    from engines import ALL_ENGINES

    if second not in ALL_ENGINES or first not in ALL_ENGINES:
        pytest.skip("the JIT is not available on this platform")
    vm = EbpfVmRaw(assemble(STACK_PROGRAM.format(secret=SECRET, offset=-8)))
    assert run(vm, first, bytearray([1])) == 1
    assert run(vm, second, bytearray([0])) == 0


def test_stack_is_not_visible_after_a_faulted_run(checked_engine: str) -> None:
    code = assemble(f"""
        ldxb r2, [r1]
        jeq r2, 0, read
        lddw r3, {SECRET:#x}
        stxdw [r10-16], r3
        lddw r1, {WILD:#x}
        ldxb r0, [r1]
        exit
    read:
        ldxdw r0, [r10-16]
        exit
    """)
    vm = EbpfVmRaw(code)
    with pytest.raises(MemoryFault):
        run(vm, checked_engine, bytearray([1]))
    assert run(vm, checked_engine, bytearray([0])) == 0


def _stack_top(vm: EbpfVmNoData) -> int:
    return buffer_address(vm._stack) + STACK_SIZE


def test_stack_outside_what_r10_reaches_is_not_accessible(checked_engine: str) -> None:
    """A pointer into the stack that does not come from r10 (a literal address
    here, as a pointer kept in memory would be) reaches only the part of the
    stack the program addresses through r10, which every run clears. Before,
    the interpreter let it read zeros there and the JIT, which clears only
    that part, let it read what an earlier run had left."""
    vm = EbpfVmNoData(assemble("exit"))
    below = _stack_top(vm) - 64
    code = assemble(f"stdw [r10-8], 0\nlddw r1, {below:#x}\nldxdw r0, [r1]\nexit")
    vm.set_program(code)
    for _ in range(2):
        with pytest.raises(MemoryFault) as info:
            run(vm, checked_engine)
        assert (info.value.pc, info.value.address, info.value.size) == (3, below, 8)


def test_stack_read_through_an_absolute_address_is_cleared(checked_engine: str) -> None:
    """When r10 escapes, the whole frame is the run's stack and is cleared."""
    vm = EbpfVmNoData(assemble("exit"))
    below = _stack_top(vm) - 64
    code = assemble(f"""
        mov r3, r10
        lddw r1, {below:#x}
        ldxdw r0, [r1]
        lddw r2, {SECRET:#x}
        stxdw [r1], r2
        exit
    """)
    vm.set_program(code)
    assert run(vm, checked_engine) == 0  # and leaves the secret 64 bytes below the top
    assert run(vm, checked_engine) == 0


# -- what a faulted run leaves behind ----------------------------------------------------------------

RING_PROGRAM = """
    ldxb r6, [r1]
    lddw r1, {handle}
    mov r2, 8
    mov r3, 0
    call 131
    jeq r0, 0, out
    stxdw [r0], r6
    jeq r6, 0, submit
    lddw r1, {wild}
    ldxb r0, [r1]
submit:
    mov r1, r0
    mov r2, 0
    call 132
out:
    mov r0, 0
    exit
"""
"""Reserves an 8-byte record holding mem[0]; with mem[0] set, faults before submitting it."""


def test_ring_record_reserved_by_a_faulted_run_is_discarded(checked_engine: str) -> None:
    # Found while writing these tests: the faulted run's busy record blocked
    # consume() for every record after it, and the ring filled up for good.
    ring = create_map("events", MapType.RINGBUF, 0, 0, 4096)
    ring.handle = 0x5A
    vm = EbpfVmRaw(assemble(RING_PROGRAM.format(handle=ring.handle, wild=WILD)))
    for key, helper in map_helpers({ring.handle: ring}).items():
        vm.register_helper(key, helper)
    with pytest.raises(MemoryFault):
        run(vm, checked_engine, bytearray([1]))
    assert list(ring.consume()) == []  # the record was discarded, not left busy
    assert run(vm, checked_engine, bytearray([0])) == 0
    assert list(ring.consume()) == [bytes(8)]
    assert len(ring) == 0
    for _ in range(300):  # more records than the ring holds: none stays busy
        with pytest.raises(MemoryFault):
            run(vm, checked_engine, bytearray([2]))
        assert list(ring.consume()) == []
    assert run(vm, checked_engine, bytearray([0])) == 0
    assert list(ring.consume()) == [bytes(8)]


def test_registers_of_a_faulted_run_are_not_an_earlier_runs(checked_engine: str) -> None:
    # Found while writing these tests: after a fault, last_registers still
    # showed the previous successful run's registers in both engines.
    vm = EbpfVmRaw(assemble(f"ldxb r0, [r1]\njeq r0, 0, +2\nlddw r1, {WILD:#x}\nldxb r0, [r1]\nexit"))
    assert run(vm, checked_engine, bytearray([0])) == 0
    assert len(vm.last_registers) == 11
    with pytest.raises(MemoryFault):
        run(vm, checked_engine, bytearray([1]))
    assert vm.last_registers == []
    assert run(vm, checked_engine, bytearray([0])) == 0 and vm.last_registers[0] == 0


def test_map_value_stores_before_a_fault_stay(checked_engine: str) -> None:
    """A store through a looked-up value pointer takes effect at once, like a helper update."""
    table = create_map("counters", MapType.ARRAY, 4, 8, 2)
    table.handle = 0x7B
    code = assemble(f"""
        ldxb r6, [r1]
        stw [r10-4], 1
        lddw r1, {table.handle}
        mov r2, r10
        add r2, -4
        call 1
        jeq r0, 0, out
        ldxdw r1, [r0]
        add r1, 5
        stxdw [r0], r1
        jeq r6, 0, out
        lddw r1, {WILD:#x}
        ldxb r0, [r1]
    out:
        exit
    """)
    vm = EbpfVmRaw(code)
    for key, helper in map_helpers({table.handle: table}).items():
        vm.register_helper(key, helper)
    for _ in range(2):
        with pytest.raises(MemoryFault):
            run(vm, checked_engine, bytearray([1]))
    assert table[(1).to_bytes(4, "little")] == (10).to_bytes(8, "little")
    run(vm, checked_engine, bytearray([0]))
    assert table[(1).to_bytes(4, "little")] == (15).to_bytes(8, "little")


def test_native_helper_faults_leave_the_vm_usable(checked_engine: str) -> None:
    """Native helpers (issue 15: an array map's update runs as linked eBPF in
    the JIT): a wild value pointer stops the run with the Python helper's
    fault (HelperFault, its cause the MemoryFault with the same fields), the
    update made before it stays, the budget running out in the helper's
    charge is BudgetExceeded at the call, and the next run works."""
    table = create_map("natives", MapType.ARRAY, 4, 16, 4)
    table.handle = 0x7C
    code = assemble(f"""
        ldxb r6, [r1]
        stw [r10-4], 1
        stdw [r10-24], 7
        stdw [r10-16], 8
        lddw r1, {table.handle}
        mov r2, r10
        add r2, -4
        mov r3, r10
        add r3, -24
        mov r4, 0
        call 2
        jeq r6, 0, out
        stw [r10-4], 2
        lddw r1, {table.handle}
        lddw r3, {WILD:#x}
        call 2
    out:
        exit
    """)
    vm = EbpfVmRaw(code)
    for key, helper in map_helpers({table.handle: table}).items():
        vm.register_helper(key, helper)
    with pytest.raises(HelperFault) as info:
        run(vm, checked_engine, bytearray([1]))
    assert isinstance(info.value.cause, MemoryFault) and info.value.pc == 18
    assert (info.value.cause.address, info.value.cause.size) == (WILD, 16)
    assert table[(1).to_bytes(4, "little")] == (7).to_bytes(8, "little") + (8).to_bytes(8, "little")
    assert table[(2).to_bytes(4, "little")] == bytes(16)
    vm.budget = 100  # 76 up to the first call's end (64 a call, 1 for 20 bytes); not 145
    with pytest.raises(BudgetExceeded) as budget:
        run(vm, checked_engine, bytearray([1]))
    assert budget.value.pc == 18
    vm.budget = None
    assert run(vm, checked_engine, bytearray([0])) == 0
