"""The four rbpf VM kinds: rbpf's README examples, buffers, memory safety,
helpers, budget, local calls and tracing."""

from __future__ import annotations

import array
import ctypes
import mmap
import struct

import numpy as np
import pytest

from ebpfvm import (
    BudgetExceeded,
    CallDepthExceeded,
    EbpfError,
    HelperFault,
    InvalidInstruction,
    MemoryFault,
    VerifierError,
)
from ebpfvm.asm import assemble
from ebpfvm.cfg import FRAME_SIZE, MAX_CALL_DEPTH
from ebpfvm.helpers import HelperContext, gather_bytes, memfrob, sqrti, strcmp
from ebpfvm.interpreter import STACK_SIZE
from ebpfvm.vm import (
    EbpfVmFixedMbuff,
    EbpfVmMbuff,
    EbpfVmNoData,
    EbpfVmRaw,
    buffer_address,
)
from engines import run

# -- rbpf's README examples, byte for byte -----------------------------------


def test_readme_add_on_nodata(engine: str) -> None:
    prog = bytes([
        0xB4, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  # mov32 r0, 0
        0xB4, 0x01, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,  # mov32 r1, 2
        0x04, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,  # add32 r0, 1
        0x0C, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  # add32 r0, r1
        0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  # exit
    ])
    vm = EbpfVmNoData(prog)
    assert run(vm, engine) == 0x3  # rbpf README: assert_eq!(..., 0x3)


def test_readme_ldx_on_raw(engine: str) -> None:
    # The README's "ldxh" example encodes opcode 0x71, which is ldxb: it expects 0x11.
    prog = bytes([
        0x71, 0x10, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ])
    mem = bytearray([0xAA, 0xBB, 0x11, 0xCC, 0xDD])
    assert run(EbpfVmRaw(prog), engine, mem) == 0x11
    # A real ldxh (0x69) at offset 2 reads bytes 11 cc, little-endian: 0xcc11.
    ldxh = bytes([0x69]) + prog[1:]
    assert run(EbpfVmRaw(ldxh), engine, mem) == 0xCC11


def test_readme_mbuff_with_pointers(engine: str) -> None:
    prog = bytes([
        0x79, 0x11, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00,  # ldxdw r1, [r1+8]
        0x69, 0x10, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,  # ldxh r0, [r1+2]
        0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ])
    mem = bytearray([0xAA, 0xBB, 0x11, 0x22, 0xCC, 0xDD])
    mbuff = bytearray(32)
    struct.pack_into("<QQ", mbuff, 8, buffer_address(mem), 0)
    struct.pack_into("<Q", mbuff, 24, buffer_address(mem) + len(mem))
    assert run(EbpfVmMbuff(prog), engine, mem, mbuff) == 0x2211


def test_readme_assembler_example() -> None:
    # rbpf README, "Assembler": the text and the bytes it documents.
    prog = assemble("add64 r1, 0x605\nmov64 r2, 0x32\nmov64 r1, r0\nbe16 r0\nneg64 r2\nexit")
    assert prog == bytes([
        0x07, 0x01, 0x00, 0x00, 0x05, 0x06, 0x00, 0x00,
        0xB7, 0x02, 0x00, 0x00, 0x32, 0x00, 0x00, 0x00,
        0xBF, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0xDC, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00,
        0x87, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ])


def test_fixed_mbuff_writes_data_pointers(engine: str) -> None:
    # Load data and data_end from the VM's own mbuff, return data_end - data + first byte.
    prog = assemble("""
        ldxdw r2, [r1+0x40]
        ldxdw r3, [r1+0x50]
        mov r0, r3
        sub r0, r2
        ldxb r4, [r2]
        add r0, r4
        exit
    """)
    vm = EbpfVmFixedMbuff(prog, 0x40, 0x50)
    assert run(vm, engine, bytearray([7, 1, 2, 3, 4])) == 5 + 7
    assert run(vm, engine, bytes([9, 9])) == 2 + 9


def test_raw_passes_address_and_length(engine: str) -> None:
    mem = bytearray(13)
    vm = EbpfVmRaw(assemble("mov r0, r2\nexit"))
    assert run(vm, engine, mem) == 13
    vm = EbpfVmRaw(assemble("mov r0, r1\nexit"))
    assert run(vm, engine, mem) == buffer_address(mem)


def test_program_may_be_set_later() -> None:
    vm = EbpfVmNoData(None)
    with pytest.raises(ValueError):
        vm.execute_program()
    vm.set_program(assemble("mov r0, 42\nexit"))
    assert vm.execute_program() == 42


# -- buffers -----------------------------------------------------------------

READ_PROG = assemble("ldxw r0, [r1+4]\nexit")
STORE_PROG = assemble("stw [r1+4], 0x11223344\nldxw r0, [r1+4]\nexit")


def _mmap8() -> mmap.mmap:
    m = mmap.mmap(-1, 8)
    m.write(bytes(range(8)))
    return m


@pytest.mark.parametrize("make", [
    lambda: bytearray(range(8)),
    lambda: memoryview(bytearray(range(8))),
    _mmap8,
    lambda: np.arange(8, dtype=np.uint8),
    lambda: array.array("B", range(8)),
    lambda: bytes(range(8)),
], ids=["bytearray", "memoryview", "mmap", "numpy", "array", "bytes"])
def test_any_buffer_can_be_read(make: object, engine: str) -> None:
    buf = make()  # type: ignore[operator]
    assert run(EbpfVmRaw(READ_PROG), engine, buf) == 0x07060504


def test_numpy_multibyte_array_is_bytes(engine: str) -> None:
    buf = np.array([0x0102030405060708], dtype=np.uint64)
    assert run(EbpfVmRaw(READ_PROG), engine, buf) == 0x01020304


@pytest.mark.parametrize("make", [bytearray, lambda n: np.zeros(n, dtype=np.uint8)])
def test_store_writes_through(make: object, engine: str) -> None:
    buf = make(8)  # type: ignore[operator]
    assert run(EbpfVmRaw(STORE_PROG), engine, buf) == 0x11223344
    assert bytes(buf) == bytes(4) + bytes([0x44, 0x33, 0x22, 0x11])


def test_store_into_bytes_is_a_fault(checked_engine: str) -> None:
    data = bytes(8)
    with pytest.raises(MemoryFault) as info:
        run(EbpfVmRaw(STORE_PROG), checked_engine, data)
    assert info.value.access == "store"
    assert info.value.pc == 0
    assert info.value.address == buffer_address(data) + 4
    assert info.value.size == 4
    assert data == bytes(8)


# -- memory safety -----------------------------------------------------------


@pytest.mark.parametrize(("text", "offset", "size", "access"), [
    ("ldxw r0, [r1+5]", 5, 4, "load"),  # last 3 bytes fit, the 4th does not
    ("ldxdw r0, [r1+1]", 1, 8, "load"),
    ("ldxb r0, [r1+8]", 8, 1, "load"),
    ("ldxb r0, [r1-1]", -1, 1, "load"),
    ("stxh [r1+7], r1", 7, 2, "store"),
    ("stdw [r1+4], 1", 4, 8, "store"),
])
def test_access_must_fit_entirely(text: str, offset: int, size: int, access: str, checked_engine: str) -> None:
    mem = bytearray(8)
    with pytest.raises(MemoryFault) as info:
        run(EbpfVmRaw(assemble(text + "\nexit")), checked_engine, mem)
    fault = info.value
    assert (fault.pc, fault.address, fault.size, fault.access) == (
        0, buffer_address(mem) + offset, size, access)


def test_wild_pointer_and_null(checked_engine: str) -> None:
    with pytest.raises(MemoryFault) as info:
        run(EbpfVmNoData(assemble("mov r1, 0\nldxb r0, [r1]\nexit")), checked_engine)
    assert (info.value.pc, info.value.address, info.value.size) == (1, 0, 1)
    prog = assemble("lddw r1, 0x7fffffffffff0000\nstxdw [r1], r1\nexit")
    with pytest.raises(MemoryFault) as info:
        run(EbpfVmNoData(prog), checked_engine)
    assert (info.value.pc, info.value.address, info.value.access) == (2, 0x7FFF_FFFF_FFFF_0000, "store")


def test_address_wraps_at_2_64(checked_engine: str) -> None:
    prog = assemble("lddw r1, 0xffffffffffffffff\nldxh r0, [r1]\nexit")
    with pytest.raises(MemoryFault) as info:
        run(EbpfVmNoData(prog), checked_engine)
    assert info.value.address == 0xFFFF_FFFF_FFFF_FFFF
    assert info.value.size == 2


def test_stack_bounds(checked_engine: str) -> None:
    ok = assemble(f"stdw [r10-{FRAME_SIZE}], 7\nldxdw r0, [r10-{FRAME_SIZE}]\nexit")
    assert run(EbpfVmNoData(ok), checked_engine) == 7
    above = assemble("ldxb r0, [r10]\nexit")
    with pytest.raises(MemoryFault):
        run(EbpfVmNoData(above), checked_engine)
    below = assemble(f"ldxb r0, [r10-{FRAME_SIZE + 1}]\nexit")
    with pytest.raises(MemoryFault) as info:
        run(EbpfVmNoData(below), checked_engine)
    assert info.value.size == 1
    # With local calls the stack holds every frame: the callee's frame sits below.
    calls = assemble(f"""
        stdw [r10-{STACK_SIZE}], 5
        call local f
        ldxdw r0, [r10-{STACK_SIZE}]
        exit
        f:
        mov r0, 1
        exit
    """)
    assert run(EbpfVmNoData(calls), checked_engine) == 5
    beyond = assemble(f"stdw [r10-{STACK_SIZE + 8}], 5\ncall local f\nexit\nf:\nexit")
    with pytest.raises(MemoryFault):
        run(EbpfVmNoData(beyond), checked_engine)


def test_stack_does_not_leak_between_runs(engine: str) -> None:
    vm = EbpfVmNoData(assemble("ldxdw r0, [r10-8]\nstdw [r10-8], 99\nexit"))
    assert run(vm, engine) == 0
    assert run(vm, engine) == 0


def test_allowed_memory_rbpf_style_and_range(checked_engine: str) -> None:
    secret = ctypes.create_string_buffer(b"\x01\x02\x03\x04\x05\x06\x07\x08", 8)
    addr = ctypes.addressof(secret)
    prog = assemble(f"lddw r1, {addr:#x}\nldxw r0, [r1+2]\nexit")
    vm = EbpfVmNoData(prog)
    with pytest.raises(MemoryFault):
        run(vm, checked_engine)
    vm.register_allowed_memory(range(addr, addr + 5))  # bytes 0..4: the load needs 2..5
    with pytest.raises(MemoryFault) as info:
        run(vm, checked_engine)
    assert (info.value.address, info.value.size) == (addr + 2, 4)
    vm.register_allowed_memory([addr + 5])  # rbpf's form: single addresses
    assert run(vm, checked_engine) == 0x06050403


def test_allowed_memory_buffer(engine: str) -> None:
    table = bytearray(b"\xaa\xbb\xcc\xdd")
    prog = assemble(f"lddw r1, {buffer_address(table):#x}\nldxh r0, [r1+2]\nexit")
    vm = EbpfVmNoData(prog)
    vm.register_allowed_memory(table)
    assert run(vm, engine) == 0xDDCC


def test_xdp32_layout(engine: str) -> None:
    """shared/bench/README.md: a program computes pointers into its own input."""
    payload = bytes(range(1, 17))
    region = mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x40)
    base = buffer_address(region)
    assert base < 1 << 32
    struct.pack_into("<II", region, 0, base + 64, base + 64 + len(payload))
    region[64:64 + len(payload)] = payload
    prog = assemble("""
        ldxw r2, [r1+0]
        ldxw r3, [r1+4]
        mov r4, r2
        add r4, 4
        jgt r4, r3, drop
        ldxw r0, [r2+0]
        exit
        drop:
        mov r0, 0
        exit
    """)
    view = memoryview(region)[: 64 + len(payload)]
    assert run(EbpfVmRaw(prog), engine, view) == 0x04030201
    del view
    region.close()


# -- helpers -----------------------------------------------------------------


def test_plain_helper_gets_five_args(engine: str) -> None:
    seen: list[tuple[int, ...]] = []

    def helper(a: int, b: int, c: int, d: int, e: int) -> int:
        seen.append((a, b, c, d, e))
        return -1

    prog = assemble("mov r1, 1\nmov r2, 2\nmov r3, 3\nmov r4, 4\nmov r5, -5\ncall 77\nexit")
    vm = EbpfVmNoData(prog)
    vm.register_helper(77, helper)
    assert run(vm, engine) == (1 << 64) - 1  # the result is masked to u64
    assert seen == [(1, 2, 3, 4, (1 << 64) - 5)]


def test_rbpf_builtin_helpers(engine: str) -> None:
    assert gather_bytes(0x11, 0x22, 0x33, 0x44, 0x55) == 0x1122334455  # rbpf doc example
    assert sqrti(9, 0, 0, 0, 0) == 3
    assert sqrti((1 << 64) - 1, 0, 0, 0, 0) == (1 << 32) - 1  # exact isqrt
    buf = bytearray(b"This is a string.\0This is another sting.\0")
    prog = assemble(f"""
        lddw r1, {buffer_address(buf):#x}
        mov r2, r1
        add r2, 18
        call 4
        exit
    """)
    vm = EbpfVmNoData(prog)
    vm.register_helper(4, strcmp, context=True)
    vm.register_allowed_memory(buf)
    assert run(vm, engine) != 0
    frob = EbpfVmRaw(assemble("mov r2, 3\ncall 1\nexit"))
    frob.register_helper(1, memfrob, context=True)
    mem = bytearray(b"\x00\x2a\xff\x10")
    assert run(frob, engine, mem) == 0
    assert mem == bytearray([0x2A, 0x00, 0xD5, 0x10])  # x ^ 42 on the first 3 bytes only


def test_helper_exception_becomes_helper_fault(checked_engine: str) -> None:
    def broken(a: int, b: int, c: int, d: int, e: int) -> int:
        raise RuntimeError("boom")

    vm = EbpfVmNoData(assemble("mov r0, 0\ncall 9\nexit"))
    vm.register_helper(9, broken)
    with pytest.raises(HelperFault) as info:
        run(vm, checked_engine)
    assert (info.value.pc, info.value.helper_id, info.value.helper_name) == (1, 9, "broken")
    assert isinstance(info.value.cause, RuntimeError)


def test_unknown_helper_and_bad_return(checked_engine: str) -> None:
    vm = EbpfVmNoData(assemble("call 3\nexit"))
    with pytest.raises(HelperFault) as info:
        run(vm, checked_engine)
    assert (info.value.pc, info.value.helper_id) == (0, 3)
    vm.register_helper(3, lambda *args: "nope")
    with pytest.raises(HelperFault):
        run(vm, checked_engine)


def test_helper_memory_fault_names_helper(checked_engine: str) -> None:
    vm = EbpfVmRaw(assemble("mov r2, 9\ncall 1\nexit"))
    vm.register_helper(1, memfrob, context=True)
    with pytest.raises(HelperFault) as info:
        run(vm, checked_engine, bytearray(8))
    assert info.value.helper_id == 1
    assert isinstance(info.value.cause, MemoryFault)
    assert info.value.cause.size == 9


def test_helper_can_stop_the_program(engine: str) -> None:
    def stop(ctx: HelperContext, a: int, b: int, c: int, d: int, e: int) -> int:
        if a == 0:
            ctx.stop(123)
        return a

    vm = EbpfVmNoData(assemble("mov r1, 1\ncall 5\nmov r1, 0\ncall 5\nmov r0, 7\nexit"))
    vm.register_helper(5, stop, context=True)
    assert run(vm, engine) == 123


def test_helper_returned_region(checked_engine: str) -> None:
    table = bytearray(b"\x10\x20\x30\x40")

    def lookup(ctx: HelperContext, a: int, b: int, c: int, d: int, e: int) -> int:
        return ctx.add_region(table, "table")

    prog = assemble("call 1\nldxb r1, [r0+3]\nstb [r0+0], 0x55\nmov r0, r1\nexit")
    vm = EbpfVmNoData(prog)
    vm.register_helper(1, lookup, context=True)
    assert run(vm, checked_engine) == 0x40
    assert table[0] == 0x55
    beyond = EbpfVmNoData(assemble("call 1\nldxw r0, [r0+1]\nexit"))
    beyond.register_helper(1, lookup, context=True)
    with pytest.raises(MemoryFault) as info:
        run(beyond, checked_engine)
    assert info.value.address == buffer_address(table) + 1


# -- budget, calls, tracing ---------------------------------------------------

LOOP = assemble("mov r0, 0\nloop:\nadd r0, 1\nja loop\nexit")


def test_budget_stops_endless_loop(checked_engine: str) -> None:
    vm = EbpfVmNoData(LOOP, budget=1001)
    with pytest.raises(BudgetExceeded) as info:
        run(vm, checked_engine)
    # mov, then (add, ja) pairs: instruction 1002 is the add at pc 1.
    assert (info.value.count, info.value.pc) == (1001, 1)


def test_budget_is_exact(checked_engine: str) -> None:
    prog = assemble("mov r0, 0\nadd r0, 1\nadd r0, 1\nexit")  # 4 instructions
    vm = EbpfVmNoData(prog, budget=4)
    assert run(vm, checked_engine) == 2
    assert vm.last_instruction_count == 4
    vm.budget = 3
    with pytest.raises(BudgetExceeded) as info:
        run(vm, checked_engine)
    assert (info.value.count, info.value.pc) == (3, 3)
    vm.budget = None
    assert run(vm, checked_engine) == 2


def test_default_budget_is_on(checked_engine: str) -> None:
    with pytest.raises(BudgetExceeded):
        run(EbpfVmNoData(LOOP), checked_engine)


CALLS = assemble("""
    mov r6, 6
    mov r7, 7
    mov r1, 3
    stdw [r10-8], 11
    call local f
    ldxdw r1, [r10-8]
    add r0, r1
    add r0, r6
    add r0, r7
    exit
    f:
    stdw [r10-8], 1000
    mov r6, 0
    mov r7, 0
    mov r0, r1
    mul r0, 100
    exit
""")


def test_local_call_frames_and_saved_registers(engine: str) -> None:
    # callee: r0 = 300, own frame; caller sees its stack slot 11 and r6=6, r7=7.
    assert run(EbpfVmNoData(CALLS), engine) == 300 + 11 + 6 + 7


def _nested(depth: int) -> bytes:
    """main calls f1, f1 calls f2 ... f(depth-1); frames active = depth."""
    lines = []
    for level in range(depth - 1):
        lines += [f"call local f{level + 1}", "exit", f"f{level + 1}:"]
    lines += ["mov r0, 1", "exit"]
    return assemble("\n".join(lines))


def test_call_depth_limit(checked_engine: str) -> None:
    assert run(EbpfVmNoData(_nested(MAX_CALL_DEPTH)), checked_engine) == 1
    with pytest.raises(CallDepthExceeded) as info:
        run(EbpfVmNoData(_nested(MAX_CALL_DEPTH + 1)), checked_engine)
    assert info.value.depth == MAX_CALL_DEPTH


def test_endless_recursion_stops(checked_engine: str) -> None:
    with pytest.raises(CallDepthExceeded) as info:
        run(EbpfVmNoData(assemble("f:\ncall local f\nexit")), checked_engine)
    assert info.value.pc == 0


def test_trace_sees_every_instruction() -> None:
    seen: list[tuple[int, int]] = []
    vm = EbpfVmNoData(assemble("mov r0, 5\nadd r0, 1\nexit"))
    assert vm.execute_program(trace=lambda pc, regs: seen.append((pc, regs[0]))) == 6
    assert seen == [(0, 0), (1, 5), (2, 6)]
    assert vm.execute_program() == 6  # the untraced path still works


def test_last_registers(engine: str) -> None:
    vm = EbpfVmNoData(assemble("mov r3, 33\nmov r9, 99\nmov r0, 1\nexit"))
    run(vm, engine)
    assert vm.last_registers[3] == 33
    assert vm.last_registers[9] == 99
    assert len(vm.last_registers) == 11


# -- verifier plumbing ----------------------------------------------------------


def test_set_verifier_runs_at_once() -> None:
    calls: list[bytes] = []

    def reject(code: bytes) -> None:
        calls.append(code)
        raise VerifierError("no thanks", 0, rule="custom")

    vm = EbpfVmNoData(assemble("mov r0, 1\nexit"))
    with pytest.raises(VerifierError):
        vm.set_verifier(reject)
    assert len(calls) == 1


def test_custom_verifier_lets_invalid_code_fail_safely(checked_engine: str) -> None:
    vm = EbpfVmNoData(None)
    vm.set_verifier(lambda code: None)
    vm.set_program(assemble(".raw 0x00000000000000ff\nexit"))
    with pytest.raises(InvalidInstruction) as info:
        run(vm, checked_engine)
    assert (info.value.pc, info.value.opcode) == (0, 0xFF)
    vm.set_program(assemble("mov r0, 1"))  # falls off the end
    with pytest.raises(InvalidInstruction) as info:
        run(vm, checked_engine)
    assert info.value.pc == 0


# -- legacy packet loads ------------------------------------------------------


def test_ld_abs_and_ind_read_big_endian_from_mem(engine: str) -> None:
    # Ethernet header: bytes 12-13 are the ethertype 0x0800, loaded in network order.
    packet = bytearray(14)
    packet[12:14] = b"\x08\x00"
    assert run(EbpfVmRaw(assemble("ldabsh 12\nexit")), engine, packet) == 0x0800
    prog = assemble("mov r3, 10\nldindw r3, 2\nexit")  # bytes 12..15 do not all exist
    assert run(EbpfVmRaw(prog), engine, packet) == 0
    prog = assemble("mov r3, 10\nldindb r3, 2\nexit")
    assert run(EbpfVmRaw(prog), engine, packet) == 0x08


def test_ld_abs_out_of_bounds_ends_with_zero(engine: str) -> None:
    # Kernel semantics: the program stops and returns 0; the mov after it never runs.
    vm = EbpfVmRaw(assemble("ldabsw 100\nmov r0, 5\nexit"))
    assert run(vm, engine, bytearray(8)) == 0
    if engine != "jit-unchecked":  # unchecked code does not count instructions
        assert vm.last_instruction_count == 1


def test_rbpf_trace_printf_and_time_and_rand(capsys: pytest.CaptureFixture[str], engine: str) -> None:
    from ebpfvm.helpers import BPF_KTIME_GETNS_IDX, BPF_TRACE_PRINTK_IDX, RBPF_HELPERS, rand

    line = "bpf_trace_printf: 0x1, 0xf, 0x20\n"  # rbpf's documented example output
    prog = assemble("mov r3, 1\nmov r4, 15\nmov r5, 32\ncall 6\nexit")
    vm = EbpfVmNoData(prog)
    vm.register_helper(BPF_TRACE_PRINTK_IDX, RBPF_HELPERS[BPF_TRACE_PRINTK_IDX])
    assert run(vm, engine) == len(line)
    assert capsys.readouterr().out == line
    clock = EbpfVmNoData(assemble("call 5\nmov r6, r0\ncall 5\nsub r0, r6\nexit"))
    clock.register_helper(BPF_KTIME_GETNS_IDX, RBPF_HELPERS[BPF_KTIME_GETNS_IDX])
    assert run(clock, engine) < 10**10  # monotonic: the difference is small, not negative
    values = {rand(3, 6, 0, 0, 0) for _ in range(200)}
    assert values == {3, 4, 5, 6}


def test_atomics_need_writable_memory(checked_engine: str) -> None:
    # A read-modify-write is a store even when the compare fails and nothing changes.
    data = bytes.fromhex("00000001")
    vm = EbpfVmRaw(assemble("lock cmpxchg32 [r1+0], r0\nexit"))
    with pytest.raises(MemoryFault) as info:
        run(vm, checked_engine, data)
    assert (info.value.pc, info.value.size, info.value.access) == (0, 4, "store")
    oob = EbpfVmRaw(assemble("mov r0, 5\nlock add [r1+6], r0\nexit"))
    with pytest.raises(MemoryFault) as info:
        run(oob, checked_engine, bytearray(8))
    assert (info.value.pc, info.value.size, info.value.access) == (1, 8, "store")


def test_memoryview_slices_and_read_only_views(engine: str) -> None:
    data = bytearray(range(16))
    vm = EbpfVmRaw(READ_PROG)  # ldxw r0, [r1+4]
    assert run(vm, engine, memoryview(data)[8:]) == 0x0F0E0D0C
    assert run(vm, engine, memoryview(bytes(data))[2:10]) == 0x09080706


def test_store_through_read_only_view_faults(checked_engine: str) -> None:
    view = memoryview(bytes(8))
    with pytest.raises(MemoryFault) as info:
        run(EbpfVmRaw(STORE_PROG), checked_engine, view)
    assert (info.value.access, info.value.size) == ("store", 4)


@pytest.mark.parametrize("text", [
    "ldxdw r0, [r10-264]\nstdw [r10-264], 99\nexit",  # deep direct access
    "mov r1, r10\nldxdw r0, [r1-400]\nstdw [r1-400], 99\nexit",  # r10 escapes into r1
    "mov r1, r10\nadd r1, -8\nldxw r0, [r1+0]\nstw [r1+0], 7\nexit",
])
def test_no_stack_data_survives_a_run(engine: str, text: str) -> None:
    vm = EbpfVmNoData(assemble(text))
    assert run(vm, engine) == 0
    assert run(vm, engine) == 0


def test_helper_cannot_reenter_the_running_vm(checked_engine: str) -> None:
    vm = EbpfVmNoData(assemble("stdw [r10-8], 5\ncall 1\nldxdw r0, [r10-8]\nexit"))

    def reenter(a: int, b: int, c: int, d: int, e: int) -> int:
        return run(vm, checked_engine)

    vm.register_helper(1, reenter)
    with pytest.raises(HelperFault) as info:
        run(vm, checked_engine)
    assert isinstance(info.value.cause, EbpfError)
    vm.register_helper(1, lambda *args: 0)
    assert run(vm, checked_engine) == 5  # the VM is usable afterwards


def test_allowed_buffer_can_be_made_read_only(checked_engine: str) -> None:
    table = bytearray(4)
    vm = EbpfVmNoData(assemble(f"lddw r1, {buffer_address(table):#x}\nstb [r1+0], 1\nexit"))
    vm.register_allowed_memory(table, writable=False)
    with pytest.raises(MemoryFault) as info:
        run(vm, checked_engine)
    assert info.value.access == "store"
    assert table == bytearray(4)


# -- accesses through one base in one block ------------------------------------------
# The checked JIT checks such accesses once over the span they cover and falls
# back to checking each one when that fails; every engine must still stop at
# the exact access, after the accesses before it took effect.


def test_store_after_load_into_read_only_input_faults_at_the_store(
        checked_engine: str) -> None:
    backing = bytearray([7, 0, 0, 0])
    for data in (bytes(backing), memoryview(backing).toreadonly()):
        vm = EbpfVmRaw(assemble("ldxb r0, [r1]\nstxb [r1+1], r0\nexit"))
        with pytest.raises(MemoryFault) as info:
            run(vm, checked_engine, data)
        fault = info.value
        assert (fault.pc, fault.address, fault.size, fault.access) == (
            1, buffer_address(data) + 1, 1, "store")
        assert bytes(data) == bytes([7, 0, 0, 0])


@pytest.mark.parametrize(("length", "fault_pc", "offset"), [
    (12, None, 0),  # both words and the byte fit
    (11, 2, 8),  # the last word reaches one byte past the end
    (8, 2, 8),
])
def test_group_of_loads_near_the_end(checked_engine: str, length: int,
                                     fault_pc: int | None, offset: int) -> None:
    vm = EbpfVmRaw(assemble("""
        ldxw r0, [r1]
        ldxb r2, [r1+5]
        ldxw r3, [r1+8]
        add r0, r2
        add r0, r3
        exit"""))
    data = bytearray(range(1, length + 1))
    if fault_pc is None:
        expected = int.from_bytes(data[0:4], "little") + data[5] + int.from_bytes(data[8:12], "little")
        assert run(vm, checked_engine, data) == expected
        return
    with pytest.raises(MemoryFault) as info:
        run(vm, checked_engine, data)
    assert (info.value.pc, info.value.address, info.value.size) == (
        fault_pc, buffer_address(data) + offset, 4)


@pytest.mark.parametrize(("length", "faults"), [(101, False), (100, True)])
def test_stores_far_apart_through_one_base(checked_engine: str, length: int,
                                            faults: bool) -> None:
    vm = EbpfVmRaw(assemble("""
        stb [r1], 0xaa
        mov r0, 1
        stb [r1+100], 0xbb
        exit"""))
    data = bytearray(length)
    if faults:
        with pytest.raises(MemoryFault) as info:
            run(vm, checked_engine, data)
        assert (info.value.pc, info.value.address, info.value.size, info.value.access) == (
            2, buffer_address(data) + 100, 1, "store")
    else:
        assert run(vm, checked_engine, data) == 1
        assert data[100] == 0xBB
    assert data[0] == 0xAA  # the first store happened either way


def test_accesses_through_a_copied_frame_pointer(engine: str) -> None:
    """Both accesses are in the stack, not the input: allowed, the slow way."""
    vm = EbpfVmRaw(assemble("""
        mov r2, r10
        sub r2, 16
        stdw [r2], 0x1234
        stdw [r2+8], 0x5678
        ldxdw r0, [r2]
        ldxdw r3, [r2+8]
        add r0, r3
        exit"""))
    assert run(vm, engine, bytearray(4)) == 0x1234 + 0x5678


def test_base_rewritten_between_accesses(checked_engine: str) -> None:
    vm = EbpfVmRaw(assemble("""
        ldxb r0, [r1]
        add r1, 8
        ldxb r2, [r1]
        exit"""))
    data = bytearray(8)
    with pytest.raises(MemoryFault) as info:
        run(vm, checked_engine, data)
    assert (info.value.pc, info.value.address) == (2, buffer_address(data) + 8)
    assert run(vm, checked_engine, bytearray(9)) == 0


def test_load_into_its_own_base_ends_the_group(checked_engine: str) -> None:
    """ldxdw r1, [r1] replaces the base: the next access uses the loaded value."""
    target = bytearray([5, 6])
    data = bytearray(struct.pack("<Q", buffer_address(target)))
    vm = EbpfVmRaw(assemble("ldxdw r1, [r1]\nldxb r0, [r1+1]\nexit"))
    vm.register_allowed_memory(target)
    assert run(vm, checked_engine, data) == 6
