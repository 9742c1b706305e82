"""Tests for the structural verifier (isa.md sections 2, 7, 10, 12, 14).

Programs are built with :func:`encoding.encode_one` and :func:`lddw_slots`;
opcodes are looked up by mnemonic in the opcode table. Every negative case
checks the error type, its `rule` and its `pc`, never the message.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebpfvm.encoding import SLOT, encode_one, lddw_slots
from ebpfvm.errors import VerifierError
from ebpfvm.isa import (
    BY_OPCODE,
    LDDW_SUBTYPES,
    MAX_REG,
    OPS,
    Form,
    OpInfo,
    Reg,
    Src,
    rows_for_mnemonic,
)
from ebpfvm.verifier import MAX_INSNS, VERIFIER_RULES, Verifier, verify

PSEUDO_FUNC = 4
"""lddw src 4 (BPF_PSEUDO_FUNC): a callback's slot offset."""


def row_of(mnemonic: str, form: Form | None = None) -> OpInfo:
    """The one table row spelled `mnemonic` (and of `form`, when several share it)."""
    rows = [r for r in rows_for_mnemonic(mnemonic) if form is None or r.form is form]
    assert len(rows) == 1, (mnemonic, form, rows)
    return rows[0]


def op(mnemonic: str, form: Form | None = None) -> int:
    return row_of(mnemonic, form).opcode


def insn(
    mnemonic: str, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0, form: Form | None = None
) -> bytes:
    """One instruction; src defaults to the row's required subtype value when 0 is given."""
    row = row_of(mnemonic, form)
    if row.src is Reg.NONE and src == 0:
        src = row.src_value
    return encode_one(row.opcode, dst, src, off, imm)


EXIT = insn("exit")
MOV_R0 = insn("mov", 0, imm=1, form=Form.ALU_K)
LDDW = lddw_slots(1, 0, 0x1122_3344_5566_7788)


def ja(off: int) -> bytes:
    return insn("ja", off=off)


def call_local(imm: int) -> bytes:
    return insn("call local", imm=imm)


def patch(code: bytes, slot: int, byte: int, value: int) -> bytes:
    """`code` with byte `byte` of slot `slot` replaced by `value`."""
    out = bytearray(code)
    out[slot * SLOT + byte] = value
    return bytes(out)


def patch_off(code: bytes, slot: int, off: int) -> bytes:
    out = bytearray(code)
    struct.pack_into("<h", out, slot * SLOT + 2, off)
    return bytes(out)


@dataclass(frozen=True)
class Bad:
    """A program breaking exactly one rule, at `pc`."""

    name: str
    code: bytes
    rule: str
    pc: int | None
    allow_lddw_subtypes: bool = False


# fmt: off
BAD: list[Bad] = [
    # whole-program rules
    Bad("length_7", EXIT[:7], "length", None),
    Bad("length_9", EXIT + b"\x00", "length", None),
    Bad("length_15", EXIT + EXIT[:7], "length", None),
    Bad("empty", b"", "empty", None),
    # opcodes
    Bad("stray_zero_slot", insn("mov", 0, form=Form.ALU_K) + bytes(8) + EXIT, "invalid_opcode", 1),
    Bad("zero_first", bytes(8) + EXIT, "invalid_opcode", 0),
    Bad("opcode_0xff", MOV_R0 + encode_one(0xFF) + EXIT, "invalid_opcode", 1),
    Bad("neg_x_form", encode_one(op("neg") | Src.X, 1) + EXIT, "invalid_opcode", 0),
    # fields that select no row
    Bad("sdiv_offset_2", insn("sdiv", 1, off=2, imm=3, form=Form.ALU_K) + EXIT, "invalid_field", 0),
    Bad("div_x_imm", insn("div32", 1, 2, imm=1, form=Form.ALU_X) + EXIT, "invalid_field", 0),
    Bad("movsx_offset_4", encode_one(op("movsx864"), 1, 2, 4) + EXIT, "invalid_field", 0),
    Bad("add_k_offset", insn("add", 1, off=1, imm=1, form=Form.ALU_K) + EXIT, "invalid_field", 0),
    Bad("endian_width_7", encode_one(op("le16"), 1, 0, 0, 7) + EXIT, "invalid_field", 0),
    Bad("bswap_width_8", encode_one(op("bswap16"), 1, 0, 0, 8) + EXIT, "invalid_field", 0),
    Bad("atomic_imm_2", encode_one(op("lock add"), 1, 2, 0, 2) + EXIT, "invalid_field", 0),
    Bad("atomic_cmpxchg_no_fetch", encode_one(op("lock add"), 1, 2, 0, 0xF0) + EXIT,
        "invalid_field", 0),
    Bad("call_src_3", encode_one(op("call", Form.CALL), 0, 3, 0, 1) + EXIT, "invalid_field", 0),
    Bad("call_offset", encode_one(op("call", Form.CALL), 0, 0, 1, 1) + EXIT, "invalid_field", 0),
    Bad("lddw_src_7", lddw_slots(1, 7, 0) + EXIT, "invalid_field", 0),
    Bad("lddw_offset", patch_off(LDDW, 0, 1) + EXIT, "invalid_field", 0),
    Bad("exit_imm", encode_one(op("exit"), 0, 0, 0, 1), "invalid_field", 0),
    Bad("exit_offset", encode_one(op("exit"), 0, 0, 1, 0), "invalid_field", 0),
    Bad("ja_imm", encode_one(op("ja"), 0, 0, 0, 1) + EXIT, "invalid_field", 0),
    Bad("ja32_offset", encode_one(op("ja32"), 0, 0, 1, 0) + EXIT, "invalid_field", 0),
    Bad("neg_imm", insn("neg", 1, imm=1) + EXIT, "invalid_field", 0),
    Bad("ldx_imm", insn("ldxw", 1, 2, imm=1) + EXIT, "invalid_field", 0),
    Bad("callx_imm", insn("call", 1, imm=1, form=Form.CALLX) + EXIT, "invalid_field", 0),
    Bad("ldabs_offset", insn("ldabsw", off=1) + EXIT, "invalid_field", 0),
    # register fields
    Bad("dst_r11", insn("mov", 11, imm=1, form=Form.ALU_K) + EXIT, "invalid_register", 0),
    Bad("dst_r15_read", insn("stw", 15, off=-8, imm=1) + EXIT, "invalid_register", 0),
    Bad("src_r11", insn("mov", 1, 11, form=Form.ALU_X) + EXIT, "invalid_register", 0),
    Bad("jcc_src_r11", insn("jeq", 1, 11, form=Form.JCC_X) + EXIT, "invalid_register", 0),
    Bad("k_form_src", encode_one(op("add", Form.ALU_K), 1, 1, 0, 1) + EXIT, "invalid_register", 0),
    Bad("st_src", encode_one(op("stw"), 10, 1, -8, 1) + EXIT, "invalid_register", 0),
    Bad("endian_src", encode_one(op("be16"), 1, 1, 0, 16) + EXIT, "invalid_register", 0),
    Bad("exit_dst", encode_one(op("exit"), 1), "invalid_register", 0),
    Bad("ja_dst", encode_one(op("ja"), 1) + EXIT, "invalid_register", 0),
    Bad("ja32_dst", encode_one(op("ja32"), 1) + EXIT, "invalid_register", 0),
    Bad("call_dst", encode_one(op("call", Form.CALL), 1, 0, 0, 1) + EXIT, "invalid_register", 0),
    Bad("callx_r11", insn("call", 11, form=Form.CALLX) + EXIT, "invalid_register", 0),
    Bad("callx_src", encode_one(op("call", Form.CALLX), 1, 1) + EXIT, "invalid_register", 0),
    Bad("ldabs_dst", insn("ldabsw", 1) + EXIT, "invalid_register", 0),
    Bad("ldind_src_r11", insn("ldindw", 0, 11) + EXIT, "invalid_register", 0),
    Bad("lddw_dst_r11", lddw_slots(11, 0, 0) + EXIT, "invalid_register", 0),
    # writes to the frame pointer
    Bad("mov_r10", insn("mov", 10, imm=1, form=Form.ALU_K) + EXIT, "write_r10", 0),
    Bad("add32_r10", MOV_R0 + insn("add32", 10, 1, form=Form.ALU_X) + EXIT, "write_r10", 1),
    Bad("neg_r10", insn("neg", 10) + EXIT, "write_r10", 0),
    Bad("bswap_r10", insn("bswap64", 10, imm=64) + EXIT, "write_r10", 0),
    Bad("ldx_r10", insn("ldxdw", 10, 1) + EXIT, "write_r10", 0),
    Bad("lddw_r10", lddw_slots(10, 0, 1) + EXIT, "write_r10", 0),
    Bad("fetch_add_src_r10", insn("lock fetch add", 1, 10, imm=1) + EXIT, "write_r10", 0),
    Bad("xchg32_src_r10", insn("lock xchg32", 1, 10, imm=0xE1) + EXIT, "write_r10", 0),
    # lddw shape
    Bad("lddw_last_slot", EXIT + LDDW[:SLOT], "incomplete_lddw", 1),
    Bad("lddw_alone", LDDW[:SLOT], "incomplete_lddw", 0),
    Bad("lddw_second_opcode", patch(LDDW, 1, 0, op("exit")) + EXIT, "incomplete_lddw", 0),
    Bad("lddw_second_dst", patch(LDDW, 1, 1, 0x01) + EXIT, "incomplete_lddw", 0),
    Bad("lddw_second_src", patch(LDDW, 1, 1, 0x10) + EXIT, "incomplete_lddw", 0),
    Bad("lddw_second_off", patch_off(LDDW, 1, -1) + EXIT, "incomplete_lddw", 0),
    Bad("lddw_second_slot_lddw", MOV_R0 + LDDW[:SLOT] + LDDW[:SLOT] + EXIT, "incomplete_lddw", 1),
    # lddw subtypes and kfunc calls
    *(
        Bad(f"lddw_subtype_{src}", lddw_slots(1, src, 0) + EXIT, "lddw_subtype", 0)
        for src in sorted(LDDW_SUBTYPES) if src not in (0, PSEUDO_FUNC)
    ),
    # lddw_func (src 4) needs no loader, but its callback must be an instruction
    Bad("callback_into_lddw", lddw_slots(1, PSEUDO_FUNC, 0) + EXIT, "jump_into_lddw", 0),
    Bad("callback_past_end", lddw_slots(1, PSEUDO_FUNC, 2) + EXIT, "call_out_of_range", 0),
    Bad("callback_before_start", MOV_R0 + lddw_slots(1, PSEUDO_FUNC, -3) + EXIT,
        "call_out_of_range", 1),
    Bad("lddw_subtype_after_mov", MOV_R0 + lddw_slots(2, 1, 3) + EXIT, "lddw_subtype", 1),
    Bad("call_runtime", insn("call runtime", imm=7) + EXIT, "call_runtime", 0),
    # jump and call targets
    Bad("ja_one_past_end", ja(2) + MOV_R0 + EXIT, "jump_out_of_range", 0),
    Bad("ja_before_start", MOV_R0 + ja(-3) + EXIT, "jump_out_of_range", 1),
    Bad("ja_self_minus_2_at_0", ja(-2) + EXIT, "jump_out_of_range", 0),
    Bad("jcc_past_end", insn("jeq", 1, off=1, imm=0, form=Form.JCC_K) + EXIT,
        "jump_out_of_range", 0),
    Bad("jcc32_before_start", insn("jne32", 1, 2, off=-2, form=Form.JCC_X) + EXIT,
        "jump_out_of_range", 0),
    Bad("ja32_past_end", insn("ja32", imm=2) + MOV_R0 + EXIT, "jump_out_of_range", 0),
    Bad("ja32_far", insn("ja32", imm=-(1 << 31)) + EXIT, "jump_out_of_range", 0),
    Bad("jump_forward_into_lddw", ja(1) + LDDW + EXIT, "jump_into_lddw", 0),
    Bad("jump_back_into_lddw", LDDW + ja(-2) + EXIT, "jump_into_lddw", 2),
    Bad("jcc_into_lddw", insn("jgt", 1, off=2, imm=1, form=Form.JCC_K) + MOV_R0 + LDDW + EXIT,
        "jump_into_lddw", 0),
    Bad("ja32_into_lddw", insn("ja32", imm=1) + LDDW + EXIT, "jump_into_lddw", 0),
    Bad("call_into_lddw", call_local(1) + LDDW + EXIT, "jump_into_lddw", 0),
    Bad("call_into_lddw_allowed_subtype", call_local(1) + lddw_slots(1, 1, 3) + EXIT,
        "jump_into_lddw", 0, allow_lddw_subtypes=True),
    Bad("call_past_end", call_local(1) + EXIT, "call_out_of_range", 0),
    Bad("call_before_start", call_local(-2) + EXIT, "call_out_of_range", 0),
    Bad("call_far", MOV_R0 + call_local(2**31 - 1) + EXIT, "call_out_of_range", 1),
    # the end of the program
    Bad("ends_with_mov", MOV_R0, "falls_off_end", 0),
    Bad("ends_after_exit", EXIT + MOV_R0, "falls_off_end", 1),
    Bad("ends_with_jcc", MOV_R0 + insn("jeq", 0, off=-2, imm=0, form=Form.JCC_K),
        "falls_off_end", 1),
    Bad("ends_with_call", MOV_R0 + insn("call", imm=1, form=Form.CALL), "falls_off_end", 1),
    Bad("ends_with_call_local", MOV_R0 + EXIT + call_local(-2), "falls_off_end", 2),
    Bad("ends_with_callx", insn("call", 1, form=Form.CALLX), "falls_off_end", 0),
    # the lddw second slot may be the last slot as far as lddw goes: it only falls off the end
    Bad("ends_with_lddw", EXIT + LDDW, "falls_off_end", 1),
]
# fmt: on


@pytest.mark.parametrize("case", BAD, ids=[case.name for case in BAD])
def test_rejected(case: Bad) -> None:
    with pytest.raises(VerifierError) as info:
        verify(case.code, allow_lddw_subtypes=case.allow_lddw_subtypes)
    assert type(info.value) is VerifierError
    assert (info.value.rule, info.value.pc) == (case.rule, case.pc)


def test_too_long() -> None:
    with pytest.raises(VerifierError) as info:
        verify(EXIT * (MAX_INSNS + 1))
    assert (info.value.rule, info.value.pc) == ("too_long", None)


def test_longest_program_accepted() -> None:
    verify(EXIT * MAX_INSNS)


def _rule_of(case: Bad) -> str:
    try:
        verify(case.code, allow_lddw_subtypes=case.allow_lddw_subtypes)
    except VerifierError as error:
        return error.rule
    return "accepted"


def test_every_rule_is_exercised() -> None:
    produced = {_rule_of(case) for case in BAD}
    produced.add("too_long")  # test_too_long, kept apart because its program is 8 MB
    assert produced == set(VERIFIER_RULES)


def test_rule_names_are_unique() -> None:
    assert len(set(VERIFIER_RULES)) == len(VERIFIER_RULES)


# fmt: off
GOOD: dict[str, bytes] = {
    "exit_only": EXIT,
    "exit_not_last": EXIT + MOV_R0 + EXIT,
    "ja_to_last_slot": ja(1) + MOV_R0 + EXIT,
    "ja_to_first_slot": MOV_R0 + ja(-2) + EXIT,
    "ja_self_loop": ja(-1),
    "ja_zero": ja(0) + EXIT,
    "ends_with_ja": MOV_R0 + EXIT + ja(-2),
    "ends_with_ja32": MOV_R0 + EXIT + insn("ja32", imm=-2),
    "ja32_to_last_slot": insn("ja32", imm=1) + MOV_R0 + EXIT,
    "jcc_to_last_slot": insn("jsge", 1, 2, off=1, form=Form.JCC_X) + MOV_R0 + EXIT,
    "jcc_to_first_slot": MOV_R0 + insn("jeq32", 0, off=-2, imm=1, form=Form.JCC_K) + EXIT,
    "jump_to_lddw_first_slot": ja(0) + LDDW + EXIT,
    "jump_over_lddw": ja(2) + LDDW + EXIT,
    "jump_back_to_lddw": LDDW + ja(-3) + EXIT,
    "lddw_second_slot_imm_any": lddw_slots(1, 0, 0xFFFF_FFFF_0000_0000) + EXIT,
    "lddw_just_before_exit": LDDW + EXIT,
    "two_lddw": LDDW + LDDW + EXIT,
    "call_local_to_next": call_local(0) + EXIT,
    "call_local_to_last": call_local(1) + MOV_R0 + EXIT,
    "call_local_to_self": call_local(-1) + EXIT,
    "call_local_to_first": MOV_R0 + call_local(-2) + EXIT,
    "call_helper_any_imm": insn("call", imm=-1, form=Form.CALL) + EXIT,
    "read_r10": insn("mov", 1, 10, form=Form.ALU_X) + EXIT,
    "store_through_r10": insn("stxdw", 10, 1, off=-8) + insn("stdw", 10, off=-16, imm=1) + EXIT,
    "load_from_r10": insn("ldxdw", 0, 10, off=-8) + EXIT,
    "jcc_on_r10": insn("jeq", 10, 10, form=Form.JCC_X) + EXIT,
    "write_r9": insn("mov", 9, imm=1, form=Form.ALU_K) + EXIT,
    "atomic_no_fetch_src_r10": insn("lock add", 10, 10, off=-8) + EXIT,
    "atomic_fetch_dst_r10": insn("lock fetch add", 10, 1, off=-8, imm=1) + EXIT,
    "callx_r10": insn("call", 10, form=Form.CALLX) + EXIT,
    "ldind_src_r10": insn("ldindb", 0, 10, imm=1) + EXIT,
    "ldabs": insn("ldabsh", imm=14) + EXIT,
    "negative_offsets": insn("ldxb", 1, 2, off=-32768) + insn("stb", 3, off=32767) + EXIT,
    "sdiv": insn("sdiv32", 1, 2, off=1, form=Form.ALU_X) + EXIT,
    "movsx": insn("movsx3264", 1, 2, off=32) + EXIT,
    "bswap": insn("bswap16", 1, imm=16) + EXIT,
}
# fmt: on


@pytest.mark.parametrize("code", GOOD.values(), ids=GOOD.keys())
def test_accepted(code: bytes) -> None:
    verify(code)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_buffer_types(kind: type) -> None:
    code = LDDW + ja(-3) + EXIT
    verify(kind(code))
    with pytest.raises(VerifierError) as info:
        verify(kind(ja(1) + LDDW + EXIT))
    assert (info.value.rule, info.value.pc) == ("jump_into_lddw", 0)


def test_memoryview_of_wide_items_counts_bytes() -> None:
    code = memoryview(bytearray(MOV_R0 + EXIT)).cast("Q")  # 2 items, 16 bytes
    verify(code)
    with pytest.raises(VerifierError) as info:
        verify(memoryview(bytearray(MOV_R0 + EXIT)).cast("I")[:3])
    assert (info.value.rule, info.value.pc) == ("length", None)


@pytest.mark.parametrize("src", sorted(LDDW_SUBTYPES))
def test_lddw_subtypes_allowed_on_request(src: int) -> None:
    # lddw_func's imm is its callback's slot offset: 1 is the exit after it
    verify(lddw_slots(1, src, 1 if src == PSEUDO_FUNC else 0) + EXIT, allow_lddw_subtypes=True)


def test_lddw_func_needs_no_loader() -> None:
    """A callback reference is self-contained (RFC 9669 section 5.4: src 4
    holds the function's slot offset), as the kernel takes it from a loader."""
    verify(lddw_slots(2, PSEUDO_FUNC, 1) + EXIT)
    verify(lddw_slots(2, PSEUDO_FUNC, 2) + EXIT + MOV_R0 + EXIT)


def test_allowing_subtypes_still_rejects_bad_lddw() -> None:
    with pytest.raises(VerifierError) as info:
        verify(patch(lddw_slots(1, 1, 0), 1, 1, 0x01) + EXIT, allow_lddw_subtypes=True)
    assert (info.value.rule, info.value.pc) == ("incomplete_lddw", 0)


def test_first_error_in_pc_order() -> None:
    code = MOV_R0 + encode_one(0xFF) + insn("mov", 10, imm=1, form=Form.ALU_K) + EXIT
    with pytest.raises(VerifierError) as info:
        verify(code)
    assert (info.value.rule, info.value.pc) == ("invalid_opcode", 1)


def test_verify_is_a_verifier() -> None:
    default: Verifier = verify
    loader: Verifier = functools.partial(verify, allow_lddw_subtypes=True)
    default(EXIT)
    loader(lddw_slots(1, 1, 0) + EXIT)


# -- every table row -------------------------------------------------------------

REJECTED_BY_DESIGN: dict[str, str] = {
    **{mnemonic: "lddw_subtype" for src, (mnemonic, _op) in LDDW_SUBTYPES.items()
       if src not in (0, PSEUDO_FUNC)},
    "call runtime": "call_runtime",
}
"""Rows that are valid encodings but that the default verifier refuses."""


def _register(rule: Reg, fixed: int, highest: bool) -> int:
    """A legal value for a register field: the highest legal one, or a low one."""
    if rule is Reg.NONE:
        return fixed
    if not highest:
        return 1
    return MAX_REG if rule is Reg.READ else MAX_REG - 1


def row_program(row: OpInfo, highest: bool = False) -> bytes:
    """`row-instruction; exit` with legal fields; jumps, local calls and
    callback references (lddw_func) land on the exit."""
    dst = _register(row.dst, 0, highest)
    src = _register(row.src, row.src_value, highest)
    off = 0 if row.off is None else row.off
    imm = 0 if row.imm is None else row.imm
    if row.src_value == PSEUDO_FUNC and row.form is Form.LDDW:
        imm = 1
    return encode_one(row.opcode, dst, src, off, imm) + EXIT


@pytest.mark.parametrize("highest", [False, True], ids=["low_regs", "high_regs"])
@pytest.mark.parametrize("row", OPS, ids=[f"{r.opcode:02x}-{r.mnemonic}" for r in OPS])
def test_every_row_verifies(row: OpInfo, highest: bool) -> None:
    code = row_program(row, highest)
    expected = REJECTED_BY_DESIGN.get(row.mnemonic)
    if expected is None:
        verify(code)
        return
    with pytest.raises(VerifierError) as info:
        verify(code)
    assert (info.value.rule, info.value.pc) == (expected, 0)


def test_rejected_by_design_names_real_rows() -> None:
    mnemonics = {row.mnemonic for row in OPS}
    assert set(REJECTED_BY_DESIGN) <= mnemonics


@pytest.mark.parametrize("row", [r for r in OPS if r.dst is Reg.WRITE], ids=lambda r: r.mnemonic)
def test_every_writing_row_rejects_r10(row: OpInfo) -> None:
    src = _register(row.src, row.src_value, False)
    code = encode_one(row.opcode, MAX_REG, src, row.off or 0, row.imm or 0) + EXIT
    with pytest.raises(VerifierError) as info:
        verify(code, allow_lddw_subtypes=True)
    assert (info.value.rule, info.value.pc) == ("write_r10", 0)


# -- every opcode byte without a row -----------------------------------------------

NO_ROW = [opcode for opcode in range(256) if not BY_OPCODE[opcode]]


def test_no_row_list_is_plausible() -> None:
    assert 0 in NO_ROW
    assert len(NO_ROW) == 256 - len({row.opcode for row in OPS})


@pytest.mark.parametrize("opcode", NO_ROW, ids=lambda o: f"0x{o:02x}")
def test_opcode_without_row_is_invalid(opcode: int) -> None:
    with pytest.raises(VerifierError) as info:
        verify(MOV_R0 + encode_one(opcode) + EXIT)
    assert (info.value.rule, info.value.pc) == ("invalid_opcode", 1)


# -- robustness -------------------------------------------------------------------


def _check_total(code: bytes) -> None:
    """verify either returns or raises a well-formed VerifierError, nothing else."""
    try:
        verify(code)
    except VerifierError as error:
        assert error.rule in VERIFIER_RULES
        assert error.pc is None or 0 <= error.pc < len(code) // SLOT


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_random_bytes(code: bytes) -> None:
    _check_total(code)


SLOT_FIELDS = st.tuples(
    st.sampled_from(sorted({row.opcode for row in OPS} | {0, 0xFF})),
    st.integers(0, 255),
    st.sampled_from([0, 1, 2, 8, 16, 32, -1, -2, 3]),
    st.sampled_from([0, 1, 16, 32, 64, 0xE1, 0xF1, -1, -3, 2]),
)


@settings(max_examples=400)
@given(st.lists(SLOT_FIELDS, min_size=1, max_size=12))
def test_random_near_valid_programs(slots: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("<BBhi", *fields) for fields in slots)
    _check_total(code)
    _check_total(code + EXIT)
