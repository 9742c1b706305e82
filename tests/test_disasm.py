"""Disassembler tests: exact text in both styles, the raw fallback, and the
round trip assemble(disassemble(code)) == code over every table row and over
random bytes (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebpfvm.asm import assemble
from ebpfvm.disasm import STYLES, disassemble, disassemble_insn, format_imm, printable_row
from ebpfvm.encoding import SLOT, decode, encode_one
from ebpfvm.errors import DecodeError
from ebpfvm.isa import OPS, Form, OpInfo, Reg

LDDW_OPCODES = frozenset(row.opcode for row in OPS if row.form is Form.LDDW)

# --------------------------------------------------------------------------- exact text

TEXT: list[tuple[str, str, str]] = [
    # (input, ubpf output, rbpf output)
    ("add %r1, 0x11223344", "add %r1, 0x11223344", "add64 r1, 0x11223344"),
    ("add32 %r1, %r2", "add32 %r1, %r2", "add32 r1, r2"),
    ("mov %r0, 0x80000000", "mov %r0, -0x80000000", "mov64 r0, -0x80000000"),
    ("mov32 %r0, 4095", "mov32 %r0, 4095", "mov32 r0, 4095"),
    ("mov32 %r0, 4096", "mov32 %r0, 0x1000", "mov32 r0, 0x1000"),
    ("mov32 %r0, -4096", "mov32 %r0, -0x1000", "mov32 r0, -0x1000"),
    ("mov %r0, 0x7fff0000", "mov %r0, 0x7fff0000", "mov64 r0, 0x7fff0000"),
    ("neg %r3", "neg %r3", "neg64 r3"),
    ("sdiv %r1, %r2", "sdiv %r1, %r2", "sdiv64 r1, r2"),
    ("movsx832 %r1, %r2", "movsx832 %r1, %r2", "movsx832 r1, r2"),
    ("ldxw %r0, [%r1+4]", "ldxw %r0, [%r1+4]", "ldxw r0, [r1+4]"),
    ("ldxdw %r0, [%r1]", "ldxdw %r0, [%r1]", "ldxdw r0, [r1]"),
    ("stxdw [%r10-8], %r1", "stxdw [%r10-8], %r1", "stxdw [r10-8], r1"),
    ("stw [%r1+0x7fff], -1", "stw [%r1+0x7fff], -1", "stw [r1+0x7fff], -1"),
    ("stb [%r1-32768], 0", "stb [%r1-0x8000], 0", "stb [r1-0x8000], 0"),
    ("jeq %r1, 5, +3", "jeq %r1, 5, +3", "jeq r1, 5, +3"),
    ("jsgt32 %r1, %r2, -7", "jsgt32 %r1, %r2, -7", "jsgt32 r1, r2, -7"),
    ("ja -2", "ja -2", "ja -2"),
    ("ja +0", "ja +0", "ja +0"),
    ("ja32 +70000", "ja32 +70000", "ja32 +70000"),
    ("call 5", "call 5", "call 5"),
    ("call local +5", "call local +5", "call local +5"),
    ("call runtime 9", "call runtime 9", "call runtime 9"),
    ("call %r2", "call %r2", "callx r2"),
    ("lock fetch add32 [%r10-8], %r1", "lock fetch add32 [%r10-8], %r1",
     "lock fetch add32 [r10-8], r1"),
    ("lock cmpxchg [%r1], %r2", "lock cmpxchg [%r1], %r2", "lock cmpxchg [r1], r2"),
    ("lddw %r0, 0x1122334455667788", "lddw %r0, 0x1122334455667788",
     "lddw r0, 0x1122334455667788"),
    ("lddw %r0, -1", "lddw %r0, 0xffffffffffffffff", "lddw r0, 0xffffffffffffffff"),
    ("lddw %r0, 7", "lddw %r0, 7", "lddw r0, 7"),
    ("lddw_map_value %r1, 3, 8", "lddw_map_value %r1, 3, 8", "lddw_map_value r1, 3, 8"),
    ("lddw_map_fd %r1, 3", "lddw_map_fd %r1, 3", "lddw_map_fd r1, 3"),
    ("be16 %r1", "be16 %r1", "be16 r1"),
    ("swap64 %r1", "bswap64 %r1", "bswap64 r1"),
    ("ldabsw 0x1000", "ldabsw 0x1000", "ldabsw 0x1000"),
    ("ldindh %r2, -4", "ldindh %r2, -4", "ldindh r2, -4"),
    ("exit", "exit", "exit"),
]


@pytest.mark.parametrize(("text", "ubpf", "rbpf"), TEXT, ids=[t[0] for t in TEXT])
def test_exact_text(text: str, ubpf: str, rbpf: str) -> None:
    code = assemble(text)
    assert disassemble(code, style="ubpf") == ubpf + "\n"
    assert disassemble(code, style="rbpf") == rbpf + "\n"


def test_program_is_newline_terminated_lines() -> None:
    code = assemble("mov %r0, 1\nlddw %r1, 2\nexit")
    assert disassemble(code, style="ubpf") == "mov %r0, 1\nlddw %r1, 2\nexit\n"
    assert disassemble(b"") == ""


def test_disassemble_insn_one_instruction() -> None:
    (insn,) = decode(assemble("jeq %r1, 5, +3"))
    assert disassemble_insn(insn, "ubpf") == "jeq %r1, 5, +3"
    assert disassemble_insn(insn, "rbpf") == "jeq r1, 5, +3"


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (4095, "4095"), (-4095, "-4095"), (4096, "0x1000"), (-4096, "-0x1000"),
     (-(1 << 31), "-0x80000000"), ((1 << 31) - 1, "0x7fffffff")],
)
def test_format_imm(value: int, text: str) -> None:
    assert format_imm(value) == text


def test_unknown_style_is_rejected() -> None:
    with pytest.raises(ValueError):
        disassemble(assemble("exit"), style="att")


# --------------------------------------------------------------------------- raw fallback

RAW: list[tuple[str, str, str]] = [
    # (reason, slots as hex bytes, expected text)
    ("opcode 0x00 selects no row", "0000000000000000", ".raw 0x0000000000000000\n"),
    ("register 11", "b70b000001000000", ".raw 0x0000000100000bb7\n"),
    ("ja with non-zero dst", "0503010000000000", ".raw 0x0000000000010305\n"),
    ("exit with imm 1", "9500000001000000", ".raw 0x0000000100000095\n"),
    ("byte swap width 8", "d401000008000000", ".raw 0x00000008000001d4\n"),
    ("call with src 3", "8530000005000000", ".raw 0x0000000500003085\n"),
    ("atomic imm 0x02", "db21000002000000", ".raw 0x00000002000021db\n"),
    ("lddw with dst 12", "180c000001000000" "0000000002000000",
     ".raw 0x0000000100000c18\n.raw 0x0000000200000000\n"),
    ("lddw second slot opcode", "1800000001000000" "9500000000000000",
     ".raw 0x0000000100000018\n.raw 0x0000000000000095\n"),
    ("lddw with offset", "1801010001000000" "0000000000000000",
     ".raw 0x0000000100010118\n.raw 0x0000000000000000\n"),
]


@pytest.mark.parametrize(("reason", "hexcode", "text"), RAW, ids=[r[0] for r in RAW])
def test_raw_fallback(reason: str, hexcode: str, text: str) -> None:
    code = bytes.fromhex(hexcode)
    assert disassemble(code) == text, reason
    assert assemble(text) == code


def test_raw_fallback_of_single_insn() -> None:
    (insn,) = decode(bytes.fromhex("180c000001000000" "0000000002000000"))
    assert printable_row(insn) is None
    assert disassemble_insn(insn) == ".raw 0x0000000100000c18\n.raw 0x0000000200000000"


def test_truncated_lddw_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        disassemble(assemble("exit\nlddw %r0, 1")[:-SLOT])
    with pytest.raises(DecodeError):
        disassemble(b"\x95" + bytes(6))


# --------------------------------------------------------------------------- every table row


def register(rule: Reg, fixed: int) -> st.SearchStrategy[int]:
    """Legal values of a register field under `rule` (isa.Reg)."""
    if rule is Reg.NONE:
        return st.just(fixed)
    return st.integers(0, 9 if rule is Reg.WRITE else 10)


def fields(row: OpInfo) -> st.SearchStrategy[tuple[int, int, int, int]]:
    """(dst, src, off, imm) with legal random values for `row`."""
    if row.imm is not None:
        imm: st.SearchStrategy[int] = st.just(row.imm)
    elif row.form is Form.LDDW:
        imm = st.integers(0, (1 << 64) - 1)
    else:
        imm = st.integers(-(1 << 31), (1 << 31) - 1)
    off = st.just(row.off) if row.off is not None else st.integers(-(1 << 15), (1 << 15) - 1)
    return st.tuples(register(row.dst, 0), register(row.src, row.src_value), off, imm)


def round_trip(row: OpInfo, dst: int, src: int, off: int, imm: int, style: str) -> None:
    code = encode_one(row.opcode, dst, src, off, imm)
    (insn,) = decode(code)
    assert insn.row is row, f"decode selects {insn.row} for {row.describe()}"
    text = disassemble(code, style=style)
    assert not text.startswith(".raw"), text
    assert assemble(text) == code, text


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("row", OPS, ids=lambda r: f"{r.opcode:#04x}-{r.mnemonic}")
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_every_row_round_trips(row: OpInfo, style: str, data: st.DataObject) -> None:
    dst, src, off, imm = data.draw(fields(row))
    round_trip(row, dst, src, off, imm, style)


def test_every_row_is_covered() -> None:
    """Completeness: a fixed sample of every row round-trips in both styles,
    and the rows covered are exactly the len(OPS) distinct table rows."""
    covered: set[tuple[int, int, int | None, int | None]] = set()
    for row in OPS:
        dst = 0 if row.dst is Reg.NONE else 9
        src = row.src_value if row.src is Reg.NONE else 10
        off = row.off if row.off is not None else -300
        imm = row.imm if row.imm is not None else 0x1122334455667788 if row.form is Form.LDDW else -5
        for style in STYLES:
            round_trip(row, dst, src, off, imm, style)
        covered.add((row.opcode, row.src_value, row.off, row.imm))
    assert len(covered) == len(OPS) == 171


# --------------------------------------------------------------------------- random bytes

VALID_OPCODES = sorted({row.opcode for row in OPS})


@st.composite
def slot(draw: st.DrawFn) -> bytes:
    """A random slot: fully random, or a table opcode with random fields."""
    if draw(st.booleans()):
        return draw(st.binary(min_size=SLOT, max_size=SLOT))
    opcode = draw(st.sampled_from(VALID_OPCODES))
    rest = draw(st.binary(min_size=SLOT - 1, max_size=SLOT - 1))
    return bytes([opcode]) + rest


def ends_in_truncated_lddw(code: bytes) -> bool:
    pc, count = 0, len(code) // SLOT
    while pc < count:
        pc += 2 if code[pc * SLOT] in LDDW_OPCODES else 1
    return pc > count


@settings(max_examples=500, deadline=None)
@given(st.lists(slot(), max_size=12).map(b"".join), st.sampled_from(STYLES))
def test_random_bytes_round_trip(code: bytes, style: str) -> None:
    try:
        text = disassemble(code, style=style)
    except DecodeError:
        assert ends_in_truncated_lddw(code)
        return
    assert not ends_in_truncated_lddw(code)
    assert assemble(text) == code, text
