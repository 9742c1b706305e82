"""Disassembler: eBPF byte code -> text in the assembler's dialect.

Three steps: decode (:func:`ebpfvm.encoding.decode`, lddw fused into one
instruction) -> resolve (is the instruction printable: a table row, register
fields 0..10, zero in the fields the row does not use, and for lddw a zeroed
second slot, RFC 9669 section 3.2) -> format (one :class:`Line` per
instruction, its operands laid out by :data:`ebpfvm.asm.FORM_OPERANDS`).
Anything unprintable becomes ``.raw 0x%016x`` slots, so the text always
re-assembles to the same bytes: ``assemble(disassemble(code)) == code``.

Styles: ``"ubpf"`` prints the conformance dialect (``%r1``, ``add``,
``add32``, ``call %r2`` for callx); ``"rbpf"`` (the default, as for ``ebpfvm
disasm``) prints plain ``r1`` registers and rbpf's ``add64``-style names of
the 64-bit ALU mnemonics (``callx r2``); ``"llvm"`` prints llvm-objdump's
syntax (``r0 += r1``, ``if r1 == 5 goto +3``), which the assembler does not
read: only the first two round-trip. Immediates are decimal when -4096 < v < 4096 and signed hex otherwise; jump
and call deltas are always signed decimal (``+3``, ``-2``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .asm import CALLX_ALIAS, RAW_DIRECTIVE, Operand, operand_layout
from .disasm_llvm import format_llvm
from .encoding import SLOT, Insn, decode, encode_one, lddw_second_slot
from .errors import ArgumentError
from .isa import MAX_REG, MNEMONIC_ALIASES, Form, Op, OpInfo, Reg

__all__ = [
    "ALL_STYLES",
    "DEFAULT_STYLE",
    "STYLES",
    "Line",
    "disassemble",
    "disassemble_insn",
    "format_imm",
    "format_insn",
    "printable_row",
]

STYLES = ("ubpf", "rbpf")
"""The assembler's dialects: the styles whose text re-assembles to the code."""
LLVM_STYLE = "llvm"
ALL_STYLES = (*STYLES, LLVM_STYLE)
"""Every value of disassemble's `style` (the choices of ``ebpfvm disasm --style``)."""
DEFAULT_STYLE = "rbpf"
"""The style of disassemble() and of ``ebpfvm disasm`` unless told otherwise."""

DECIMAL_LIMIT = 4096
"""Immediates with an absolute value below this are printed in decimal."""

_M32 = 0xFFFF_FFFF
_RAW_OPCODE_PLACEHOLDER = 0  # any non-lddw opcode: encode_one then packs one plain slot

_RBPF_NAMES: dict[str, str] = {
    canonical: alias
    for alias, canonical in MNEMONIC_ALIASES.items()
    if alias == canonical + "64"
}
"""rbpf's spelling of the 64-bit mnemonics that have one (``add`` -> ``add64``)."""


@dataclass(frozen=True, slots=True)
class Line:
    """One line of disassembly: a mnemonic (or ``.raw``) and its operand texts."""

    mnemonic: str
    operands: tuple[str, ...] = ()

    def __str__(self) -> str:
        if not self.operands:
            return self.mnemonic
        return f"{self.mnemonic} {', '.join(self.operands)}"


def format_imm(value: int) -> str:
    """`value` in decimal when -4096 < value < 4096, else as signed hex (``-0x80000000``)."""
    if -DECIMAL_LIMIT < value < DECIMAL_LIMIT:
        return str(value)
    return f"-{-value:#x}" if value < 0 else f"{value:#x}"


def _s32(value: int) -> int:
    value &= _M32
    return value - (1 << 32) if value >> 31 else value


def _check_style(style: str, accepted: tuple[str, ...] = STYLES) -> None:
    if style not in accepted:
        raise ArgumentError("disassembly style", style, f"one of {', '.join(accepted)}")


# --------------------------------------------------------------------------- resolve


def _field_ok(value: int, rule: Reg, fixed: int) -> bool:
    """A register field holds a register 0..10, or the fixed value when unused."""
    return value == fixed if rule is Reg.NONE else value <= MAX_REG


def printable_row(insn: Insn) -> OpInfo | None:
    """The row to print `insn` with, or None when it must be printed as raw slots.

    find_row has already matched the opcode, the src subtype, and the fixed
    off/imm; here the register fields are checked (0..10; 0 where unused).
    """
    row = insn.row
    if row is None:
        return None
    if not _field_ok(insn.dst, row.dst, 0) or not _field_ok(insn.src, row.src, row.src_value):
        return None
    return row


# --------------------------------------------------------------------------- format


def _register(number: int, style: str) -> str:
    return f"%r{number}" if style == "ubpf" else f"r{number}"


def _memory(base: int, off: int, style: str) -> str:
    if off == 0:
        return f"[{_register(base, style)}]"
    sign = "-" if off < 0 else "+"
    return f"[{_register(base, style)}{sign}{format_imm(abs(off))}]"


def _mnemonic(row: OpInfo, style: str) -> str:
    if style == "rbpf":
        if row.form is Form.CALLX:
            return CALLX_ALIAS
        return _RBPF_NAMES.get(row.mnemonic, row.mnemonic)
    return row.mnemonic


def _operand_text(slot: Operand, insn: Insn, style: str) -> str | None:
    """The text of one operand; None for an omitted optional operand."""
    lddw = insn.slots == 2
    imm = _s32(insn.imm) if lddw else insn.imm
    if slot is Operand.DST:
        return _register(insn.dst, style)
    if slot is Operand.SRC:
        return _register(insn.src, style)
    if slot is Operand.MEM_DST:
        return _memory(insn.dst, insn.off, style)
    if slot is Operand.MEM_SRC:
        return _memory(insn.src, insn.off, style)
    if slot is Operand.IMM:
        if lddw and insn.row is not None and insn.row.op is Op.CODE_ADDR:
            return f"{imm:+d}"  # lddw_func: the callback's slot offset, as a jump's
        return format_imm(imm)
    if slot is Operand.IMM64:
        return format_imm(insn.imm)
    if slot is Operand.NEXT_IMM:
        high = _s32(insn.imm >> 32)
        return format_imm(high) if high else None
    if slot is Operand.OFF_TARGET:
        return f"{insn.off:+d}"
    return f"{imm:+d}"  # Operand.IMM_TARGET


def _raw_lines(slots: list[int]) -> list[Line]:
    return [Line(RAW_DIRECTIVE, (f"{value:#018x}",)) for value in slots]


def _insn_slots(insn: Insn) -> list[int]:
    """The u64 value of each slot of `insn`, re-packed from its fields (an lddw
    second slot has zero opcode/dst/src/off, as encoding.decode assumes)."""
    low = _s32(insn.imm) if insn.slots == 2 else insn.imm
    # Byte 0 of a slot is the opcode (RFC 9669 section 3.1); encode_one packs the rest.
    first = bytes([insn.opcode]) + encode_one(
        _RAW_OPCODE_PLACEHOLDER, insn.dst, insn.src, insn.off, low
    )[1:]
    slots = [int.from_bytes(first, "little")]
    if insn.slots == 2:
        second = encode_one(_RAW_OPCODE_PLACEHOLDER, imm=_s32(insn.imm >> 32))
        slots.append(int.from_bytes(second, "little"))
    return slots


def format_insn(insn: Insn, style: str = DEFAULT_STYLE) -> list[Line]:
    """The line of `insn`, or its ``.raw`` slot lines when it is not printable."""
    _check_style(style)
    row = printable_row(insn)
    if row is None:
        return _raw_lines(_insn_slots(insn))
    texts = (_operand_text(slot, insn, style) for slot in operand_layout(row))
    return [Line(_mnemonic(row, style), tuple(text for text in texts if text is not None))]


def disassemble_insn(insn: Insn, style: str = DEFAULT_STYLE) -> str:
    """One decoded instruction as text (two ``.raw`` lines for an unprintable
    lddw). `style` is one of ALL_STYLES; an instruction llvm cannot print is
    printed in the rbpf style."""
    if style == LLVM_STYLE:
        text = format_llvm(insn)
        if text is not None:
            return text
        style = "rbpf"
    return "\n".join(str(line) for line in format_insn(insn, style))


def disassemble(code: bytes, *, style: str = DEFAULT_STYLE) -> str:
    """The program `code` as text, one line per instruction, each ending in a newline.

    `style` is one of ALL_STYLES (ArgumentError, a ValueError, otherwise):
    ``"rbpf"`` by default as ``ebpfvm disasm``, ``"ubpf"``, or ``"llvm"``.

    Raises DecodeError when the length is not a multiple of 8 or the last
    instruction is an lddw without its second slot. An lddw whose second
    slot has a non-zero opcode, dst, src or offset is printed as two
    ``.raw`` lines, since no instruction syntax produces it.
    """
    _check_style(style, ALL_STYLES)
    lines: list[Line | str] = []
    for insn in decode(code):
        if insn.slots == 2 and any(lddw_second_slot(code, insn.pc)):
            start, end = insn.pc * SLOT, (insn.pc + 2) * SLOT
            slots = [int.from_bytes(code[i : i + SLOT], "little") for i in range(start, end, SLOT)]
            lines += _raw_lines(slots)
        elif style == LLVM_STYLE:
            lines.append(disassemble_insn(insn, style))
        else:
            lines += format_insn(insn, style)
    return "".join(f"{line}\n" for line in lines)
