"""Edge programs for the kernel differential harness, each with the result
RFC 9669 (shared/docs/isa.md) gives, worked out by hand: the kernel and every
engine of ours must produce exactly that.

Each body runs inside the XDP frame of tests/kprogen.py's programs: a guard
that the packet holds the dump area, r0-r9 set to 0, the body, then r0-r9
stored as 64-bit words at the start of the packet. A shrunk program from a
divergence that tools/kernel_campaign.py or test_kernel_differential.py
reports goes here too, with the ISA's answer (none so far: see
PROPOSED_README.md for the campaign's figures).
"""

from __future__ import annotations

import pytest

import kernel_oracle as kernel
from ebpfvm.asm import assemble
from kernel_diff import ENGINES, Run, run_engine, run_kernel
from kprogen import DUMP_REGS, DUMP_SIZE, KCase, dump_registers

UNAVAILABLE = kernel.available()
M64 = (1 << 64) - 1
INT64_MIN = 1 << 63
PACKET = bytes(range(DUMP_SIZE + 16))

PROLOGUE = f"""
    ldxw r2, [r1]
    ldxw r3, [r1+4]
    mov r4, r2
    add r4, {DUMP_SIZE + 16}
    jgt r4, r3, bail
    stxdw [r10-8], r2
""" + "".join(f"    mov r{reg}, 0\n" for reg in range(DUMP_REGS))
EPILOGUE = """
    stxdw [r10-16], r9
    ldxdw r9, [r10-8]
""" + "".join(f"    stxdw [r9+{8 * reg}], r{reg}\n" for reg in range(9)) + """
    ldxdw r8, [r10-16]
    stxdw [r9+72], r8
    exit
bail:
    mov r0, 1
    exit
"""

# (name, body, subprograms, {register: the ISA's value}); registers not named are 0.
EDGES: list[tuple[str, str, str, dict[int, int]]] = [
    ("sdiv-smod-int-min-by-register-minus-one", """
        lddw r1, 0x8000000000000000
        mov r2, -1
        mov r3, r1
        sdiv r3, r2
        mov r4, r1
        smod r4, r2
        mov32 r5, 0x80000000
        sdiv32 r5, r2
        lddw r6, 0xdeadbeef80000000
        smod32 r6, r2
    """, "", {1: INT64_MIN, 2: M64, 3: INT64_MIN, 4: 0, 5: 0x8000_0000, 6: 0}),
    ("division-and-modulo-by-a-zero-register", """
        lddw r1, 0x123456789abcdef0
        mov r3, r1
        div r3, r2
        mov r4, r1
        mod r4, r2
        mov r5, r1
        mod32 r5, r2
        mov r6, r1
        smod r6, r2
        mov r7, r1
        sdiv32 r7, r2
        mov r8, r1
        smod32 r8, r2
    """, "", {1: 0x1234_5678_9ABC_DEF0, 3: 0, 4: 0x1234_5678_9ABC_DEF0, 5: 0x9ABC_DEF0,
              6: 0x1234_5678_9ABC_DEF0, 7: 0, 8: 0x9ABC_DEF0}),
    ("signed-division-truncates-toward-zero", """
        mov r1, -13
        mov r2, 3
        mov r3, r1
        sdiv r3, r2
        mov r4, r1
        smod r4, r2
        mov r5, 13
        mov r6, -3
        smod r5, r6
        lddw r7, 0xffffffff0000000d
        sdiv32 r7, r6
    """, "", {1: -13 & M64, 2: 3, 3: -4 & M64, 4: -1 & M64, 5: 1, 6: -3 & M64,
              7: -4 & 0xFFFF_FFFF}),
    ("register-shift-counts-are-masked", """
        mov r1, 65
        mov r2, 3
        lsh r2, r1
        mov r3, 3
        lsh32 r3, r1
        lddw r4, 0x8000000000000000
        arsh r4, r1
        mov32 r5, 0x80000000
        mov r6, -1
        arsh32 r5, r6
    """, "", {1: 65, 2: 6, 3: 6, 4: 0xC000_0000_0000_0000, 5: 0xFFFF_FFFF, 6: M64}),
    ("sign-extension-and-byte-swaps", """
        lddw r1, 0x12345678deadbe80
        movsx864 r2, r1
        movsx1664 r3, r1
        movsx3264 r4, r1
        movsx832 r5, r1
        mov r6, r1
        bswap16 r6
        mov r7, r1
        bswap64 r7
        mov r8, r1
        le16 r8
        mov r9, r1
        be32 r9
    """, "", {1: 0x1234_5678_DEAD_BE80, 2: 0xFFFF_FFFF_FFFF_FF80, 3: 0xFFFF_FFFF_FFFF_BE80,
              4: 0xFFFF_FFFF_DEAD_BE80, 5: 0xFFFF_FF80, 6: 0x80BE, 7: 0x80BE_ADDE_7856_3412,
              8: 0xBE80, 9: 0x80BE_ADDE}),
    ("stack-atomics-fetch-and-zero-extend", """
        lddw r1, 0xffffffff00000005
        stxdw [r10-24], r1
        mov r2, 7
        lock fetch add32 [r10-24], r2
        ldxdw r3, [r10-24]
        stdw [r10-32], 9
        mov r0, 5
        lddw r4, 0x1111
        lock cmpxchg [r10-32], r4
        mov r8, r0
        lock cmpxchg [r10-32], r4
        ldxdw r5, [r10-32]
        mov r6, -1
        lock fetch xor [r10-32], r6
        ldxdw r7, [r10-32]
    """, "", {0: 9, 1: 0xFFFF_FFFF_0000_0005, 2: 5, 3: 0xFFFF_FFFF_0000_000C, 4: 0x1111,
              5: 0x1111, 6: 0x1111, 7: ~0x1111 & M64, 8: 9}),
    ("jmp32-ignores-the-upper-half", """
        lddw r1, 0xffffffff00000001
        mov r2, 0
        jgt32 r1, 1, +1
        mov r2, 1
        mov r3, 0
        jsgt r1, 0, +1
        mov r3, 1
        mov r4, 0
        jeq32 r1, 1, +1
        mov r4, 1
    """, "", {1: 0xFFFF_FFFF_0000_0001, 2: 1, 3: 1, 4: 0}),
    ("local-call-keeps-r6-r9-and-returns-r0", """
        mov r1, 40
        mov r2, 2
        mov r6, 6
        mov r9, 9
        call local sub
        mov r1, 0
        mov r2, 0
        mov r3, 0
        mov r4, 0
        mov r5, 0
    """, """
sub:
        mov r6, 66
        mov r9, 99
        mov r0, r1
        add r0, r2
        exit
    """, {0: 42, 6: 6, 9: 9}),
]


def _case(body: str, subs: str) -> KCase:
    """The body in the XDP frame (the prologue's `mov r1..r5, 0` come after
    the pointer loads, so the body starts from all-zero registers)."""
    return KCase(assemble(PROLOGUE + body + EPILOGUE + subs), PACKET)


def _expected(values: dict[int, int]) -> Run:
    dump = b"".join(values.get(reg, 0).to_bytes(8, "little") for reg in range(DUMP_REGS))
    return Run(values.get(0, 0) & 0xFFFF_FFFF, dump + PACKET[DUMP_SIZE:])


@pytest.mark.parametrize(("body", "subs", "values"), [edge[1:] for edge in EDGES],
                         ids=[edge[0] for edge in EDGES])
@pytest.mark.parametrize("engine", ENGINES)
def test_edge_program_on_our_engines(engine: str, body: str, subs: str,
                                     values: dict[int, int]) -> None:
    run = run_engine(_case(body, subs), engine)
    assert dump_registers(run.packet) == dump_registers(_expected(values).packet)
    assert run == _expected(values)


@pytest.mark.skipif(UNAVAILABLE is not None, reason=f"bpf(): {UNAVAILABLE}")
@pytest.mark.parametrize(("body", "subs", "values"), [edge[1:] for edge in EDGES],
                         ids=[edge[0] for edge in EDGES])
def test_edge_program_in_the_kernel(body: str, subs: str, values: dict[int, int]) -> None:
    run, refusal = run_kernel(_case(body, subs))
    assert refusal is None
    assert run is not None
    assert dump_registers(run.packet) == dump_registers(_expected(values).packet)
    assert run == _expected(values)
