"""Assembler tests: golden encodings, label resolution, every error kind with its
location, the conformance corpus, and random text (hypothesis)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebpfvm.asm import FORM_OPERANDS, Operand, assemble, operand_layout
from ebpfvm.disasm import disassemble
from ebpfvm.errors import AsmError
from ebpfvm.isa import OPS, Form, OpInfo, Reg

# --------------------------------------------------------------------------- golden bytes
# Expected bytes are written by hand from shared/docs/isa.md: a slot is
# opcode, (src << 4 | dst), off (s16 LE), imm (s32 LE)  [isa.md 2.1].

GOLDEN: list[tuple[str, str]] = [
    # isa.md 2.1 worked example.
    ("add %r1, 0x11223344", "07 01 0000 44332211"),
    # isa.md 8 table: ldxh = 0x69; dst 0, src 1 -> 0x10; off 2.
    ("ldxh %r0, [%r1+2]", "69 10 0200 00000000"),
    # isa.md 14: mov32 K = 0xb4; README 1: 0x80000000 is read as s32 -2**31.
    ("mov32 %r0, 0x80000000", "b4 00 0000 00000080"),
    # isa.md 14: mov K = 0xb7; -10 as s32 = 0xfffffff6.
    ("mov %r0, -10", "b7 00 0000 f6ffffff"),
    # isa.md 14: mov K = 0xb7; -0x80000000 is s32 min.
    ("mov %r0, -0x80000000", "b7 00 0000 00000080"),
    # isa.md 4: SDIV is DIV (0x3) with offset 1; ALU64 X = 0x3f; src 2 dst 1 -> 0x21.
    ("sdiv %r1, %r2", "3f 21 0100 00000000"),
    # isa.md 4: ALU K 0x34 with offset 1.
    ("sdiv32 %r1, 3", "34 01 0100 03000000"),
    # isa.md 14: smod K = 0x97, offset 1; -3 = 0xfffffffd.
    ("smod %r0, -3", "97 00 0100 fdffffff"),
    # isa.md 4: MOVSX is MOV X (0xbc for ALU) with offset 8.
    ("movsx832 %r1, %r2", "bc 21 0800 00000000"),
    # isa.md 4: ALU64 MOV X = 0xbf with offset 32.
    ("movsx3264 %r0, %r1", "bf 10 2000 00000000"),
    # isa.md 9: 0xc3 with imm 0x01 (fetch add); dst 10, src 1 -> 0x1a; off -8 = 0xfff8.
    ("lock fetch add32 [%r10-8], %r1", "c3 1a f8ff 01000000"),
    # isa.md 9: 0xdb with imm 0xf1 (cmpxchg); off -16 = 0xfff0.
    ("lock cmpxchg [%r10-16], %r2", "db 2a f0ff f1000000"),
    # isa.md 9: 0xc3 with imm 0xe1 (xchg).
    ("lock xchg32 [%r1+4], %r3", "c3 31 0400 e1000000"),
    # isa.md 9: non-fetch add is imm 0 on 0xdb.
    ("lock add [%r1], %r2", "db 21 0000 00000000"),
    # isa.md 7: call 0x85, src 0 = helper id in imm.
    ("call 5", "85 00 0000 05000000"),
    # isa.md 7: src 1 = local call, imm = relative slots.
    ("call local +5", "85 10 0000 05000000"),
    # isa.md 7: src 2 = BTF id call.
    ("call runtime 7", "85 20 0000 07000000"),
    # isa.md 7: callx 0x8d, register in dst (bpf_conformance encoding).
    ("call %r2", "8d 02 0000 00000000"),
    # isa.md 6: ja32 = 0x06, delta in imm, offset 0.
    ("ja32 -2", "06 00 0000 feffffff"),
    # isa.md 6: ja = 0x05, delta in offset.
    ("ja +0", "05 00 0000 00000000"),
    # isa.md 6: jeq K 64-bit = 0x15, offset 3, imm 5.
    ("jeq %r1, 5, +3", "15 01 0300 05000000"),
    # isa.md 14: jne32 X = 0x5e; offset -1 = 0xffff.
    ("jne32 %r1, %r2, -1", "5e 21 ffff 00000000"),
    # isa.md 5: bswap 0xd7 with imm = width 16.
    ("bswap16 %r1", "d7 01 0000 10000000"),
    # isa.md 5: be 0xdc with imm 64.
    ("be64 %r3", "dc 03 0000 40000000"),
    # isa.md 5: le 0xd4 with imm 32.
    ("le32 %r0", "d4 00 0000 20000000"),
    # README 1: swap32 = bswap32 (0xd7, imm 32).
    ("swap32 %r1", "d7 01 0000 20000000"),
    # isa.md 8: stxdw = 0x7b; base r10 in dst, value r1 in src.
    ("stxdw [%r10-8], %r1", "7b 1a f8ff 00000000"),
    # isa.md 8: stw = 0x62; imm 0x44332211.
    ("stw [%r1+2], 0x44332211", "62 01 0200 11223344"),
    # isa.md 8: ldxsh = 0x89 (MEMSX | H | LDX).
    ("ldxsh %r0, [%r1]", "89 10 0000 00000000"),
    # isa.md 4: NEG 0x8 in ALU -> 0x84.
    ("neg32 %r2", "84 02 0000 00000000"),
    # isa.md 3 / README 4.5: lsh32 with imm -4 encodes 0xfffffffc.
    ("lsh32 %r0, -4", "64 00 0000 fcffffff"),
    # isa.md 11: ldabsh = ABS | H | LD = 0x28.
    ("ldabsh 12", "28 00 0000 0c000000"),
    # isa.md 11: ldindb = IND | B | LD = 0x50, register in src.
    ("ldindb %r3, 4", "50 30 0000 04000000"),
    # lddw.data `-- raw`: 0x5566778800000018 0x1122334400000000.
    ("lddw %r0, 0x1122334455667788", "18 00 0000 88776655 00 00 0000 44332211"),
    # isa.md 2.2: lddw of -1 has both imm halves 0xffffffff.
    ("lddw %r1, -1", "18 01 0000 ffffffff 00 00 0000 ffffffff"),
    # isa.md 10: src 2 = map value; imm = fd 3, next_imm = offset 8.
    ("lddw_map_value %r1, 3, 8", "18 21 0000 03000000 00 00 0000 08000000"),
    # isa.md 10: src 1 = map fd; next_imm 0.
    ("lddw_map_fd %r2, 7", "18 12 0000 07000000 00 00 0000 00000000"),
    # lddw.data `-- raw`: exit = 0x0000000000000095.
    ("exit", "95 00 0000 00000000"),
    # rbpf spelling: add64 = add (0x07), plain registers.
    ("add64 r1, 1", "07 01 0000 01000000"),
    # isa.md 14: arsh X 64-bit = 0xcf.
    ("arsh r1, r2", "cf 21 0000 00000000"),
    # isa.md 1: register 11 is invalid but encodable in the 4-bit dst field.
    ("mov %r11, 1", "b7 0b 0000 01000000"),
    # README 1 `-- raw`: one slot as a little-endian u64.
    (".raw 0x0000000000000095", "95 00 0000 00000000"),
]


@pytest.mark.parametrize(("text", "expected"), GOLDEN, ids=[t for t, _ in GOLDEN])
def test_golden_encoding(text: str, expected: str) -> None:
    assert assemble(text).hex() == expected.replace(" ", "")


def test_golden_table_is_large_enough() -> None:
    assert len(GOLDEN) >= 25


# --------------------------------------------------------------------------- syntax and labels


def slots(text: str) -> list[str]:
    code = assemble(text)
    return [code[i : i + 8].hex() for i in range(0, len(code), 8)]


def test_forward_label_counts_from_next_slot() -> None:
    # ja over one instruction: offset +1 (isa.md 6: relative to the next slot).
    assert slots("ja L\nmov %r0, 1\nL: exit")[0] == "0500010000000000"


def test_lddw_counts_two_slots() -> None:
    assert slots("ja L\nlddw %r0, 1\nL:\nexit")[0] == "0500020000000000"


def test_backward_label() -> None:
    assert slots("L: mov %r0, 1\nja L")[1] == "0500feff00000000"


def test_predefined_exit_is_first_exit() -> None:
    code = slots("jne %r0, 0, exit\nmov %r0, 1\nexit\nexit")
    assert code[0] == "5500010000000000"  # slot 2 - (0 + 1); not the exit at slot 3


def test_user_label_exit_overrides_predefined() -> None:
    code = slots("ja exit\nexit\nexit:\nmov %r0, 1")
    assert code[0] == "0500010000000000"


def test_call_local_and_ja32_labels() -> None:
    code = slots("call local f\nexit\nf: ja32 f")
    assert code[0] == "8510000001000000"
    assert code[2] == "06000000ffffffff"


@pytest.mark.parametrize("target", ["+2", "2", "0x2", "+0x2"])
def test_numeric_targets_are_relative(target: str) -> None:
    assert slots(f"ja {target}")[0] == "0500020000000000"


def test_comments_blank_lines_and_spacing() -> None:
    text = "  # full comment\n\nmov %r0, 1 ; semicolon\n\tmov r1 , 2 // slashes\r\nexit#tight\n"
    assert slots(text) == ["b700000001000000", "b701000002000000", "9500000000000000"]


def test_memory_operand_spellings() -> None:
    assert slots("ldxw %r0, [ %r1 + 0x10 ]\nldxw r0, [r1-8]\nldxw %r0, [%r1]") == [
        "6110100000000000",
        "6110f8ff00000000",
        "6110000000000000",
    ]


def test_several_labels_on_one_line() -> None:
    assert slots("a: b: exit\nja a\nja b") == [
        "9500000000000000",
        "0500feff00000000",
        "0500fdff00000000",
    ]


def test_aliases() -> None:
    assert assemble("neg64 r1") == assemble("neg %r1")
    assert assemble("callx r2") == assemble("call %r2")
    assert assemble("gotol +1") == assemble("ja32 +1")
    assert assemble("sdiv64 r1, r2") == assemble("sdiv %r1, %r2")


def test_immediate_limits() -> None:
    assert slots("mov %r0, 2147483647")[0] == "b7000000ffffff7f"
    assert slots("mov %r0, -2147483648")[0] == "b700000000000080"
    assert slots("mov %r0, 0xffffffff")[0] == "b7000000ffffffff"
    assert slots("lddw %r0, 18446744073709551615") == ["18000000ffffffff", "00000000ffffffff"]
    assert slots("lddw %r0, -9223372036854775808") == ["1800000000000000", "0000000000000080"]


def test_empty_program() -> None:
    assert assemble("") == b""
    assert assemble("# nothing\n\n") == b""


def test_every_form_has_a_layout() -> None:
    assert set(FORM_OPERANDS) == set(Form)


@pytest.mark.parametrize("row", OPS, ids=lambda r: f"{r.opcode:#04x}-{r.mnemonic}")
def test_layout_fills_exactly_the_free_fields(row: OpInfo) -> None:
    """Each field the row leaves open is filled by exactly one operand."""
    layout = operand_layout(row)
    fills = {
        "dst": {Operand.DST, Operand.MEM_DST},
        "src": {Operand.SRC, Operand.MEM_SRC},
        "off": {Operand.MEM_DST, Operand.MEM_SRC, Operand.OFF_TARGET},
        "imm": {Operand.IMM, Operand.IMM64, Operand.IMM_TARGET},
    }
    free = {
        "dst": row.dst is not Reg.NONE,
        "src": row.src is not Reg.NONE,
        "off": row.off is None,
        "imm": row.imm is None,
    }
    for field, slots_for_field in fills.items():
        assert sum(1 for slot in layout if slot in slots_for_field) == int(free[field]), field


# --------------------------------------------------------------------------- errors

ERRORS: list[tuple[str, str, int, int]] = [
    # (kind, text, line, col)
    ("unknown mnemonic", "exit\n  frob %r1", 2, 3),
    ("unknown multi-word mnemonic", "lock fetch mul [%r1], %r2", 1, 1),
    ("bad register number", "mov %r16, 1", 1, 5),
    ("bad register spelling", "mov %r1x, 1", 1, 5),
    ("plain register above r10", "exit\nmov r11, 1", 2, 5),
    ("immediate out of range (decimal)", "mov %r0, 2147483648", 1, 10),
    ("immediate out of range (hex)", "mov %r0, 0x100000000", 1, 10),
    ("immediate out of range (negative hex)", "mov %r0, -0x80000001", 1, 10),
    ("lddw value out of range", "lddw %r0, 0x10000000000000000", 1, 11),
    ("undefined label", "mov %r0, 0\n\njeq %r0, 0, nowhere", 3, 13),
    ("undefined exit label", "ja exit", 1, 4),
    ("duplicate label", "a:\nexit\n  a: exit", 3, 3),
    ("label named like a register", "r1: exit", 1, 1),
    ("too few operands", "exit\nmov %r0", 2, 1),
    ("too many operands", "mov %r0, 1, 2", 1, 13),
    ("operands on exit", "exit 0", 1, 6),
    ("jump offset out of s16", "ja +32768", 1, 4),
    ("label jump out of s16", "ja far\n" + ".raw 0\n" * 32768 + "far: exit", 1, 4),
    ("call local offset out of s32", "call local 0x80000000", 1, 12),
    ("trailing garbage", "mov %r0, 1 2", 1, 12),
    ("unexpected character", "mov %r0, $1", 1, 10),
    ("malformed number", "mov %r0, 12ab", 1, 10),
    ("memory offset out of s16", "ldxw %r0, [%r1+0x8000]", 1, 15),
    ("unclosed memory operand", "ldxw %r0, [%r1+4", 1, 17),
    ("register where memory expected", "ldxw %r0, %r1", 1, 11),
    ("memory where register/immediate expected", "add %r1, [%r2]", 1, 10),
    ("label where immediate expected", "call runtime foo", 1, 14),
    ("callx with immediate", "callx 5", 1, 7),
    ("missing operand after comma", "mov %r0,", 1, 9),
    ("line without mnemonic", "L: :", 1, 4),
    ("raw without value", ".raw", 1, 1),
    ("raw out of range", ".raw -1", 1, 6),
    ("huge number", "mov %r0, " + "9" * 5000, 1, 10),
]


@pytest.mark.parametrize(("kind", "text", "line", "col"), ERRORS, ids=[e[0] for e in ERRORS])
def test_error_location(kind: str, text: str, line: int, col: int) -> None:
    with pytest.raises(AsmError) as info:
        assemble(text)
    assert (info.value.line, info.value.col) == (line, col), kind
    assert info.value.reason


# --------------------------------------------------------------------------- random text

FRAGMENTS = [
    "mov", "mov32", "add", "lddw", "ldxw", "stxdw", "lock", "fetch", "xchg", "call", "local",
    "runtime", "callx", "ja", "ja32", "jeq", "exit", "le16", "bswap64", "lddw_map_value",
    ".raw", "%r0", "%r10", "%r15", "%r99", "r1", "r11", "%", ",", "[", "]", "+", "-", ":",
    "L", "L:", "exit:", "0", "1", "-1", "0x", "0xffffffff", "0x80000000", "32768",
    "0xffffffffffffffff", "12ab", "#", ";", "//", "\n", " ", "\t", "\r", "é", "$",
]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join),
                 st.lists(st.sampled_from(FRAGMENTS), max_size=30).map(" ".join)))
def test_random_text_gives_bytes_or_asm_error(text: str) -> None:
    try:
        code = assemble(text)
    except AsmError as error:
        lines = text.split("\n")
        assert 1 <= error.line <= len(lines)
        assert 1 <= error.col <= len(lines[error.line - 1]) + 1
        return
    assert isinstance(code, bytes)
    assert len(code) % 8 == 0


# --------------------------------------------------------------------------- conformance corpus

CONFORMANCE_FILES = 313


def conformance_dir() -> Path:
    env = os.environ.get("EBPFVM_CONFORMANCE_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "conformance"


def sections(path: Path) -> dict[str, list[str]]:
    """The lines of each section of a .data file (README 1): cut at the first
    ``#``, a line containing ``--`` starts a section, empty lines dropped."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in path.read_text().split("\n"):
        line = line.rstrip("\r").split("#", 1)[0]
        if "--" in line:
            name = next((n for n in ("asm", "result", "mem", "raw") if n in line), "ignored")
            current = found.setdefault(name, [])
        elif line.strip() and current is not None:
            current.append(line)
    return found


def test_conformance_corpus() -> None:
    directory = conformance_dir()
    if not directory.is_dir():
        pytest.skip(f"conformance folder {directory} is absent")
    processed = 0
    raw_compared = 0
    for path in sorted(directory.glob("*.data")):
        parts = sections(path)
        code = assemble("\n".join(parts["asm"]))
        assert code, path.name
        if "raw" in parts:
            values = [int(tok, 0) for line in parts["raw"] for tok in line.split()]
            assert code == b"".join(v.to_bytes(8, "little") for v in values), path.name
            raw_compared += 1
        for style in ("ubpf", "rbpf"):
            assert assemble(disassemble(code, style=style)) == code, (path.name, style)
        processed += 1
    assert processed == CONFORMANCE_FILES
    assert raw_compared == 1  # only lddw.data has a raw section
