"""Tests of the x86-64 encoder and code buffer (docs/style.md sections 5 and 7).

* Golden bytes: tests/data/x86_golden.txt, produced by tools/gen_x86_golden.py
  from llvm-mc, replayed against X86Assembler without llvm-mc.
* Live cross-checks, only when llvm-mc is on PATH: the whole table is
  re-derived (so it cannot rot), and a seeded random sample of fresh calls is
  compared (set X86_GOLDEN_SEED to try another sample).
* Hand-computed rel32 fixups, the pure helpers, and ValueError cases.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from ebpfvm.errors import JitError
from ebpfvm.jit.codebuf import CodeBuffer, Label, UnboundLabelError
from ebpfvm.jit.x86_64 import (
    AluOp,
    Cond,
    Mem,
    Reg,
    ShiftOp,
    X86Assembler,
    encode_mem,
    modrm,
    rex,
    sib,
)

GENERATOR_PATH = Path(__file__).resolve().parents[1] / "tools" / "gen_x86_golden.py"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_x86_golden", GENERATOR_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
ROWS: list[tuple[str, bytes, str]] = gen.read_golden()
ROWS_BY_METHOD: dict[str, list[tuple[str, bytes, str]]] = defaultdict(list)
for _row in ROWS:
    ROWS_BY_METHOD[gen.parse_call(_row[0]).method].append(_row)

needs_llvm = pytest.mark.skipif(not gen.llvm_available(), reason="llvm-mc is not on PATH")
SAMPLE_SIZE = 300
DEFAULT_SEED = 0x5EED


def _public_methods() -> set[str]:
    return {
        name
        for name, value in vars(X86Assembler).items()
        if callable(value) and not name.startswith("_")
    } - {"new_label", "bind", "code"}


# --- golden bytes ------------------------------------------------------------------------
def test_table_is_large_and_covers_every_method() -> None:
    assert len(ROWS) >= 600
    assert set(ROWS_BY_METHOD) == _public_methods()


@pytest.mark.parametrize("method", sorted(ROWS_BY_METHOD))
def test_golden_bytes(method: str) -> None:
    mismatches = []
    for call_text, expected, intel in ROWS_BY_METHOD[method]:
        actual = gen.encode(gen.parse_call(call_text))
        if actual != expected:
            mismatches.append(
                f"{call_text}  [{intel}]: want {expected.hex(' ')}, got {actual.hex(' ')}"
            )
    assert not mismatches, "\n".join(mismatches)


def test_row_text_round_trips() -> None:
    for call_text, _, _ in ROWS:
        assert gen.parse_call(call_text).text() == call_text


@needs_llvm
def test_table_matches_generator_and_llvm() -> None:
    calls = gen.golden_calls()
    assert [c.text() for c in calls] == [row[0] for row in ROWS], "table is stale: regenerate it"
    llvm = gen.llvm_encode(calls)
    stale = [
        f"{row[0]}: table {row[1].hex(' ')}, llvm-mc {code.hex(' ')}"
        for row, code in zip(ROWS, llvm, strict=True)
        if row[1] != code
    ]
    assert not stale, "\n".join(stale)
    assert [gen.intel_text(c) for c in calls] == [row[2] for row in ROWS]


@needs_llvm
def test_random_sample_matches_llvm() -> None:
    seed = int(os.environ.get("X86_GOLDEN_SEED", DEFAULT_SEED))
    rng = random.Random(seed)
    calls = [gen.random_call(rng) for _ in range(SAMPLE_SIZE)]
    llvm = gen.llvm_encode(calls)
    mismatches = [
        f"{c.text()}  [{gen.intel_text(c)}]: llvm-mc {code.hex(' ')}, ours {gen.encode(c).hex(' ')}"
        for c, code in zip(calls, llvm, strict=True)
        if gen.encode(c) != code
    ]
    assert not mismatches, f"X86_GOLDEN_SEED={seed}\n" + "\n".join(mismatches)


# --- labels and rel32 fixups ------------------------------------------------------------
def test_forward_jmp() -> None:
    asm = X86Assembler()
    done = asm.new_label("done")
    asm.jmp(done)  # 0..4, field ends at 5
    asm.nop()
    asm.nop()
    asm.bind(done)  # 7
    asm.ret()
    assert asm.code() == bytes.fromhex("e9 02 00 00 00 90 90 c3")


def test_backward_jcc() -> None:
    asm = X86Assembler()
    top = asm.new_label("top")
    asm.bind(top)  # 0
    asm.nop()
    asm.jcc(Cond.NE, top)  # 1..6, field ends at 7: 0 - 7 = -7
    assert asm.code() == bytes.fromhex("90 0f 85 f9 ff ff ff")


def test_forward_and_backward_calls_share_a_label() -> None:
    asm = X86Assembler()
    func = asm.new_label("func")
    asm.call(func)  # 0..4: 7 - 5 = 2
    asm.ud2()  # 5..6
    asm.bind(func)  # 7
    asm.ret()  # 7
    asm.call(func)  # 8..12: 7 - 13 = -6
    asm.jcc(Cond.G, func)  # 13..18: 7 - 19 = -12
    assert asm.code() == bytes.fromhex("e8 02 00 00 00 0f 0b c3 e8 fa ff ff ff 0f 8f f4 ff ff ff")


def test_jump_to_itself_and_to_next_instruction() -> None:
    asm = X86Assembler()
    here, after = asm.new_label(), asm.new_label()
    asm.bind(here)
    asm.jmp(here)  # 0 - 5
    asm.jcc(Cond.E, after)  # 11 - 11
    asm.bind(after)
    assert asm.code() == bytes.fromhex("e9 fb ff ff ff 0f 84 00 00 00 00")


def test_resolve_is_idempotent_and_sees_late_binding() -> None:
    asm = X86Assembler()
    target = asm.new_label()
    asm.jmp(target)
    asm.bind(target)
    first = asm.code()
    assert asm.code() == first
    asm.int3()
    asm.jmp(target)  # 6..10: 5 - 11 = -6
    assert asm.code() == first + bytes.fromhex("cc e9 fa ff ff ff")


def test_unbound_label_raises() -> None:
    asm = X86Assembler()
    asm.nop()
    missing = asm.new_label("missing")
    asm.jmp(missing)
    with pytest.raises(UnboundLabelError) as info:
        asm.code()
    assert info.value.label is missing
    assert info.value.offset == 2
    assert isinstance(info.value, JitError)
    assert isinstance(info.value, ValueError)


def test_label_binds_once() -> None:
    buf = CodeBuffer()
    label = Label("x")
    buf.bind(label)
    assert label.position == 0
    with pytest.raises(ValueError):
        buf.bind(label)


def test_rel32_out_of_range() -> None:
    buf = CodeBuffer()
    far = Label("far")
    buf.emit_rel32(far)
    far.position = (1 << 31) + 4  # cannot build a 2 GiB buffer; fake the distance
    with pytest.raises(ValueError):
        buf.resolve()
    far.position = (1 << 31) + 3
    buf.resolve()
    assert bytes(buf.data) == bytes.fromhex("ff ff ff 7f")


def test_code_buffer_emitters() -> None:
    buf = CodeBuffer()
    buf.emit(b"\x90")
    buf.emit_u8(0xAB)
    buf.emit_s8(-2)
    buf.emit_u16(0x1234)
    buf.emit_u32(0xDEADBEEF)
    buf.emit_s32(-2)
    buf.emit_u64(0x0102030405060708)
    assert buf.position == 1 + 1 + 1 + 2 + 4 + 4 + 8
    assert bytes(buf.data) == bytes.fromhex(
        "90 ab fe 34 12 ef be ad de fe ff ff ff 08 07 06 05 04 03 02 01"
    )


@pytest.mark.parametrize(
    ("emitter", "value"),
    [
        ("emit_u8", 256),
        ("emit_u8", -1),
        ("emit_s8", 128),
        ("emit_u16", 0x10000),
        ("emit_u32", -1),
        ("emit_s32", 1 << 31),
        ("emit_s32", -(1 << 31) - 1),
        ("emit_u64", 1 << 64),
    ],
)
def test_code_buffer_range_checks(emitter: str, value: int) -> None:
    buf = CodeBuffer()
    with pytest.raises(ValueError):
        getattr(buf, emitter)(value)
    assert buf.position == 0


# --- pure helpers -------------------------------------------------------------------------
def test_reg_fields() -> None:
    assert (Reg.RDI.low3, Reg.RDI.ext) == (7, 0)
    assert (Reg.R8.low3, Reg.R8.ext) == (0, 1)
    assert (Reg.R15.low3, Reg.R15.ext) == (7, 1)


def test_rex_modrm_sib() -> None:
    assert rex(False, 0, 0, 0) == 0x40
    assert rex(True, 0, 0, 0) == 0x48
    assert rex(True, 1, 1, 1) == 0x4F
    assert rex(False, 1, 0, 1) == 0x45
    assert modrm(0b11, 0b010, 0b001) == 0xD1
    assert modrm(0b01, 0, 0b101) == 0x45
    assert sib(0, 0b100, 0b100) == 0x24
    assert sib(3, 1, 2) == 0xCA


@pytest.mark.parametrize(
    "helper",
    [
        lambda: rex(2, 0, 0, 0),
        lambda: rex(0, 2, 0, 0),
        lambda: rex(0, 0, 0, -1),
        lambda: modrm(4, 0, 0),
        lambda: modrm(0, 8, 0),
        lambda: modrm(0, 0, 8),
        lambda: sib(4, 0, 0),
        lambda: sib(0, 8, 0),
        lambda: encode_mem(8, Mem(Reg.RAX)),
    ],
)
def test_helper_field_ranges(helper: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        helper()


@pytest.mark.parametrize(
    ("mem", "expected"),
    [
        (Mem(Reg.RAX), "00"),
        (Mem(Reg.RSP), "04 24"),  # rm=100 needs SIB
        (Mem(Reg.R12), "04 24"),  # REX.B is the caller's; the fields match RSP
        (Mem(Reg.RBP), "45 00"),  # mod=00 rm=101 would be RIP-relative
        (Mem(Reg.R13), "45 00"),
        (Mem(Reg.RCX, 127), "41 7f"),
        (Mem(Reg.RCX, -128), "41 80"),
        (Mem(Reg.RCX, 128), "81 80 00 00 00"),
        (Mem(Reg.RCX, -129), "81 7f ff ff ff"),
        (Mem(Reg.RSP, 8), "44 24 08"),
        (Mem(Reg.RBP, 0x12345678), "85 78 56 34 12"),
    ],
)
def test_encode_mem_special_cases(mem: Mem, expected: str) -> None:
    assert encode_mem(0, mem).hex(" ") == expected


# --- impossible operands ----------------------------------------------------------------
M = Mem(Reg.RAX, 8)
INVALID: list[tuple[str, Callable[[X86Assembler], None]]] = [
    ("mov_ri w64 > s32", lambda a: a.mov_ri(Reg.RAX, 1 << 31)),
    ("mov_ri w64 < s32", lambda a: a.mov_ri(Reg.RAX, -(1 << 31) - 1)),
    ("mov_ri w32 > u32", lambda a: a.mov_ri(Reg.RAX, 1 << 32, w64=False)),
    ("mov_ri w32 < s32", lambda a: a.mov_ri(Reg.RAX, -(1 << 31) - 1, w64=False)),
    ("mov_ri64 > u64", lambda a: a.mov_ri64(Reg.R8, 1 << 64)),
    ("mov_ri64 < s64", lambda a: a.mov_ri64(Reg.R8, -(1 << 63) - 1)),
    ("signed 8-byte load", lambda a: a.load(Reg.RAX, M, 8, signed=True)),
    ("load size 3", lambda a: a.load(Reg.RAX, M, 3)),
    ("store size 16", lambda a: a.store(M, Reg.RAX, 16)),
    ("store_imm size 3", lambda a: a.store_imm(M, 0, 3)),
    ("store_imm 8 > s32", lambda a: a.store_imm(M, 0x80000000, 8)),
    ("store_imm > 64 bits", lambda a: a.store_imm(M, 1 << 64, 1)),
    ("movzx from 4", lambda a: a.movzx_rr(Reg.RAX, Reg.RCX, 4)),
    ("movsx 4 to 32 bits", lambda a: a.movsx_rr(Reg.RAX, Reg.RCX, 4, False)),
    ("movsx from 8", lambda a: a.movsx_rr(Reg.RAX, Reg.RCX, 8, True)),
    ("alu_ri w64 > s32", lambda a: a.alu_ri(AluOp.ADD, Reg.RCX, 0x80000000)),
    ("alu_ri w32 > u32", lambda a: a.alu_ri(AluOp.ADD, Reg.RCX, 1 << 32, w64=False)),
    ("alu_mi w64 > s32", lambda a: a.alu_mi(AluOp.CMP, M, 0xFFFFFFFF)),
    ("test_ri w64 > s32", lambda a: a.test_ri(Reg.RAX, 1 << 31)),
    ("imul_rri < s32", lambda a: a.imul_rri(Reg.RAX, Reg.RCX, -(1 << 31) - 1)),
    ("shift 64", lambda a: a.shift_ri(ShiftOp.SHL, Reg.RAX, 64)),
    ("shift 32 on 32 bits", lambda a: a.shift_ri(ShiftOp.SHR, Reg.RAX, 32, w64=False)),
    ("shift -1", lambda a: a.shift_ri(ShiftOp.SAR, Reg.RAX, -1)),
    ("ror16 by 16", lambda a: a.ror16_ri(Reg.RAX, 16)),
    ("lock cmp", lambda a: a.lock_alu_mr(AluOp.CMP, M, Reg.RCX, True)),
]


@pytest.mark.parametrize("emit", [e for _, e in INVALID], ids=[name for name, _ in INVALID])
def test_impossible_operands_raise_and_emit_nothing(emit: Callable[[X86Assembler], None]) -> None:
    asm = X86Assembler()
    with pytest.raises(ValueError):
        emit(asm)
    assert asm.buf.position == 0


@pytest.mark.parametrize("disp", [1 << 31, -(1 << 31) - 1])
def test_mem_displacement_must_fit_s32(disp: int) -> None:
    with pytest.raises(ValueError):
        Mem(Reg.RAX, disp)


def test_mem_base_must_be_a_register() -> None:
    with pytest.raises(ValueError):
        Mem(0)  # type: ignore[arg-type]


def test_encoder_knows_nothing_about_ebpf() -> None:
    source = (Path(__file__).resolve().parents[1] / "src/ebpfvm/jit/x86_64.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    package_imports = [line for line in imports if "ebpfvm" in line]
    assert package_imports == ["from ebpfvm.jit.codebuf import CodeBuffer, Label"]
