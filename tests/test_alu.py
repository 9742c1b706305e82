"""Edge-case tables for the ALU, byte-swap and jump semantics (isa.md 3-6).

Each expected value is worked out by hand from the ISA text, not taken from
our own output. `alu()` evaluates the same templates the interpreter pastes
into its generated code, and the last test runs each row through the
interpreter too, so both paths are held to the table.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ebpfvm import alu
from ebpfvm.encoding import encode_one
from ebpfvm.isa import OPS, Form, OpInfo, Reg, rows_for_mnemonic
from ebpfvm.vm import EbpfVmNoData

M64 = (1 << 64) - 1
INT64_MIN = 1 << 63
INT32_MIN = 1 << 31


def row(mnemonic: str, form: Form) -> OpInfo:
    return next(r for r in rows_for_mnemonic(mnemonic) if r.form is form)


X, K = Form.ALU_X, Form.ALU_K

# (mnemonic, form, dst, src-or-imm, expected)  -- K-form sources are the raw s32 imm.
ALU_CASES = [
    # Division by zero gives 0 (isa.md 4, "Division by zero"), both widths, K and X.
    ("div", X, 7, 0, 0),
    ("div32", X, 7, 0, 0),
    ("div", K, 7, 0, 0),
    ("sdiv", X, 7, 0, 0),
    ("sdiv32", X, 7, 0, 0),
    # Modulo by zero leaves dst; the 32-bit form keeps only the low half (isa.md 4).
    ("mod", X, 0x1234_5678_9ABC_DEF0, 0, 0x1234_5678_9ABC_DEF0),
    ("mod32", X, 0x1234_5678_9ABC_DEF0, 0, 0x9ABC_DEF0),
    ("smod", X, M64, 0, M64),
    ("smod32", X, 0xFFFF_FFF6, 0, 0xFFFF_FFF6),  # isa.md: smod32 r0, 0 with 0xFFFFFFF6
    ("smod32", X, 0xAAAA_AAAA_FFFF_FFF6, 0, 0xFFFF_FFF6),
    # INT_MIN / -1 = INT_MIN, INT_MIN % -1 = 0 (isa.md 4, "Overflow of signed division").
    ("sdiv", X, INT64_MIN, M64, INT64_MIN),
    ("smod", X, INT64_MIN, M64, 0),
    ("sdiv32", X, INT32_MIN, 0xFFFF_FFFF, INT32_MIN),
    ("smod32", X, INT32_MIN, 0xFFFF_FFFF, 0),
    ("sdiv", K, INT64_MIN, -1, INT64_MIN),
    # Signed division truncates, remainder takes the dividend's sign (isa.md 3).
    ("sdiv", K, (-13) & M64, 3, (-4) & M64),
    ("smod", K, (-13) & M64, 3, (-1) & M64),
    ("smod", K, 13, -3, 1),
    ("sdiv32", K, (-13) & 0xFFFF_FFFF, 3, (-4) & 0xFFFF_FFFF),
    # Unsigned div/mod by a negative immediate: ALU64 sign-extends then divides unsigned.
    ("div", K, M64, -10, 1),  # 0xFF..FF // 0xFF..F6 == 1 (isa.md 4, div64-negative-imm)
    ("div32", K, 0xFFFF_FFFF, -10, 1),  # ALU uses (u32)imm = 0xFFFFFFF6
    ("mod", K, M64, -10, 9),
    # Shift counts are masked (isa.md 3): lsh32 by -4 shifts by 28; rsh32 by 40 by 8.
    ("lsh32", K, 1, -4, 1 << 28),
    ("rsh32", K, 0x8000_0000, 40, 0x80_0000),
    ("lsh", X, 1, 64 + 3, 8),
    ("rsh", X, INT64_MIN, 127, 1),
    ("arsh", K, INT64_MIN, 63, M64),
    ("arsh32", K, 0x8000_0000, 31, 0xFFFF_FFFF),
    ("arsh32", K, 0xFFFF_FFFF_0000_0001, 1, 0),  # only the low half is shifted
    # 32-bit results are zero-extended (isa.md 3).
    ("add32", K, 0xFFFF_FFFF, 1, 0),
    ("sub32", K, 0, 1, 0xFFFF_FFFF),
    ("mul32", X, 0xFFFF_FFFF, 0xFFFF_FFFF, 1),
    ("mov32", X, 0, M64, 0xFFFF_FFFF),
    ("mov32", K, 0, -1, 0xFFFF_FFFF),
    # mov with imm sign-extends (isa.md 4: mov r0, -10 = 0xFFFFFFFFFFFFFFF6).
    ("mov", K, 0, -10, 0xFFFF_FFFF_FFFF_FFF6),
    ("mov", K, 0, -(1 << 31), 0xFFFF_FFFF_8000_0000),
    # neg (isa.md 4).
    ("neg", Form.NEG, 1, 0, M64),
    ("neg32", Form.NEG, 1, 0, 0xFFFF_FFFF),
    ("neg", Form.NEG, INT64_MIN, 0, INT64_MIN),
    # movsx (isa.md 4: src 0x0123456789abcdef, movsx832 -> 0xffffffef).
    ("movsx832", X, 0, 0x0123_4567_89AB_CDEF, 0xFFFF_FFEF),
    ("movsx864", X, 0, 0x0123_4567_89AB_CDEF, 0xFFFF_FFFF_FFFF_FFEF),
    ("movsx1664", X, 0, 0x0123_4567_89AB_CDEF, 0xFFFF_FFFF_FFFF_CDEF),
    ("movsx3264", X, 0, 0x0123_4567_89AB_CDEF, 0xFFFF_FFFF_89AB_CDEF),
    ("movsx1632", X, 0, 0x7FFF, 0x7FFF),
]

# Byte swaps (isa.md 5 examples).
SWAP_CASES = [
    ("le16", 0xBBCC_DDEE_FF00_1122, 0x1122),
    ("le32", 0xBBCC_DDEE_FF00_1122, 0xFF00_1122),
    ("le64", 0xBBCC_DDEE_FF00_1122, 0xBBCC_DDEE_FF00_1122),
    ("be16", 0x8877_6655_4433_2211, 0x1122),
    ("be32", 0x8877_6655_4433_2211, 0x1122_3344),
    ("be64", 0x8877_6655_4433_2211, 0x1122_3344_5566_7788),
    ("bswap16", 0x8877_6655_4433_2211, 0x1122),
    ("bswap32", 0x8877_6655_4433_2211, 0x1122_3344),
    ("bswap64", 0x8877_6655_4433_2211, 0x1122_3344_5566_7788),
]

# (mnemonic, form, dst, src-or-imm, taken)
JUMP_CASES = [
    # JMP K immediates are sign-extended to 64 bits even for unsigned compares (isa.md 6).
    ("jeq", Form.JCC_K, 0xFFFF_FFFF_8000_0000, -(1 << 31), True),
    ("jeq", Form.JCC_K, 0x8000_0000, -(1 << 31), False),
    ("jeq32", Form.JCC_K, 0xFFFF_FFFF_8000_0000, -(1 << 31), True),
    ("jgt", Form.JCC_K, M64, -2, True),
    ("jsgt", Form.JCC_K, M64, -2, True),  # -1 > -2
    ("jsgt", Form.JCC_K, M64, 0, False),  # -1 > 0 is false
    ("jslt", Form.JCC_X, INT64_MIN, 0, True),
    ("jsle32", Form.JCC_X, 0x1_8000_0000, 0, True),  # low half is INT32_MIN
    ("jgt32", Form.JCC_X, 0x1_0000_0000, 0, False),  # low halves are equal
    ("jset", Form.JCC_K, 0b1010, 0b0100, False),
    ("jset", Form.JCC_K, 0b1010, 0b0010, True),
    ("jset32", Form.JCC_X, 0x1_0000_0000, 0x1_0000_0000, False),
    ("jle", Form.JCC_X, 5, 5, True),
    ("jlt", Form.JCC_X, 5, 5, False),
    ("jsge32", Form.JCC_K, 0xFFFF_FFFF, -1, True),
]


def _source(r: OpInfo, value: int) -> int:
    return alu.widen_imm(r, value) if r.src is Reg.NONE else value


@pytest.mark.parametrize(("mnemonic", "form", "d", "s", "expected"), ALU_CASES)
def test_alu_table(mnemonic: str, form: Form, d: int, s: int, expected: int) -> None:
    r = row(mnemonic, form)
    assert alu.alu(r, d, _source(r, s)) == expected


@pytest.mark.parametrize(("mnemonic", "d", "expected"), SWAP_CASES)
def test_byte_swaps(mnemonic: str, d: int, expected: int) -> None:
    assert alu.alu(row(mnemonic, Form.ENDIAN), d) == expected


@pytest.mark.parametrize(("mnemonic", "form", "d", "s", "taken"), JUMP_CASES)
def test_jump_conditions(mnemonic: str, form: Form, d: int, s: int, taken: bool) -> None:
    r = row(mnemonic, form)
    assert alu.condition(r, d, _source(r, s)) is taken


def _lddw(dst: int, value: int) -> bytes:
    lddw = row("lddw", Form.LDDW)
    return encode_one(lddw.opcode, dst, 0, 0, value)


def _run_alu_row(r: OpInfo, d: int, s: int) -> int:
    """Run `r` in the interpreter: r0 = d, r1 = s (X) or imm = s (K)."""
    prog = _lddw(0, d)
    if r.form is Form.ALU_X:
        prog += _lddw(1, s) + encode_one(r.opcode, 0, 1, r.off or 0, 0)
    else:
        imm = s if r.imm is None else r.imm
        prog += encode_one(r.opcode, 0, 0, r.off or 0, imm)
    prog += encode_one(row("exit", Form.EXIT).opcode)
    return EbpfVmNoData(prog).execute_program()


@pytest.mark.parametrize(("mnemonic", "form", "d", "s", "expected"), ALU_CASES)
def test_alu_table_in_interpreter(mnemonic: str, form: Form, d: int, s: int, expected: int) -> None:
    assert _run_alu_row(row(mnemonic, form), d, s & M64 if form is X else s) == expected


ALU_ROWS = [r for r in OPS if r.form in (Form.ALU_K, Form.ALU_X, Form.NEG, Form.ENDIAN)]


@given(st.sampled_from(ALU_ROWS), st.integers(0, M64), st.integers(-(1 << 31), (1 << 31) - 1),
       st.integers(0, M64))
def test_interpreter_matches_reference(r: OpInfo, d: int, imm: int, s: int) -> None:
    """The generated code and the reference evaluator agree on random operands."""
    if r.form is Form.ALU_X:
        expected = alu.alu(r, d, s)
        got = _run_alu_row(r, d, s)
    else:
        value = imm if r.imm is None else r.imm
        expected = alu.alu(r, d, alu.widen_imm(r, value))
        got = _run_alu_row(r, d, imm)
    assert got == expected


@given(st.integers(-(1 << 63), (1 << 63) - 1), st.integers(-(1 << 63), (1 << 63) - 1))
def test_sdiv_smod_identity(a: int, b: int) -> None:
    """C semantics: a == b * (a / b) + a % b, |a % b| < |b|, sign of a."""
    q = alu.sign_extend(alu.sdiv64(a & M64, b & M64), 64)
    rem = alu.sign_extend(alu.smod64(a & M64, b & M64), 64)
    if b == 0:
        assert (q, rem) == (0, a)
    elif a == -(1 << 63) and b == -1:
        assert (q, rem) == (a, 0)
    else:
        assert a == b * q + rem
        assert abs(rem) < abs(b)
        assert rem == 0 or (rem < 0) == (a < 0)
