"""The default structural verifier: table-driven field checks and control-flow
bounds (RFC 9669 sections 3, 4.3, 5.4 and Appendix A).

Every instruction is matched against its row in :data:`ebpfvm.isa.OPS`; the
row says which fields are registers, which are written, and which values the
src subtype, offset and imm may take. Nothing here spells an opcode byte.

The checks run in a fixed order, so each program reports one stable error:

1. whole-program size rules (``length``, ``empty``, ``too_long``);
2. per-instruction rules, in pc order (``invalid_opcode``, ``invalid_field``,
   ``invalid_register``, ``write_r10``, ``incomplete_lddw``, ``lddw_subtype``,
   ``call_runtime``);
3. control-flow rules, in pc order (``jump_out_of_range``,
   ``call_out_of_range``, ``jump_into_lddw``), then ``falls_off_end``.

This pass does not track register state, reachability, helper ids or memory
bounds: those belong to later passes or to the runtime.
"""

from __future__ import annotations

from typing import Protocol

from .cfg import branch_target, callback_target
from .encoding import SLOT, SLOT_LAYOUT, Insn, lddw_second_slot
from .errors import VerifierError
from .isa import BY_OPCODE, MAX_REG, Form, Op, OpInfo, Reg, find_row
from .program import ProgramImage

__all__ = ["MAX_INSNS", "VERIFIER_RULES", "Verifier", "verify"]

MAX_INSNS = 1_000_000
"""Most slots a program may have (an lddw counts as two)."""

VERIFIER_RULES: tuple[str, ...] = (
    "length",
    "empty",
    "too_long",
    "invalid_opcode",
    "invalid_field",
    "invalid_register",
    "write_r10",
    "incomplete_lddw",
    "lddw_subtype",
    "call_runtime",
    "jump_out_of_range",
    "jump_into_lddw",
    "call_out_of_range",
    "falls_off_end",
)
"""Every `rule` name :func:`verify` can put on a :class:`VerifierError`."""


class Verifier(Protocol):
    """A load-time check: returns None for an accepted program, raises
    :class:`VerifierError` otherwise. :func:`verify` is the default one."""

    def __call__(self, code: bytes, /) -> None: ...


_NIBBLE_BITS = 4
_NIBBLE_MASK = (1 << _NIBBLE_BITS) - 1

_FRAME_POINTER = MAX_REG
"""r10, the read-only frame pointer: no instruction may write it."""

# What the slot loop does after the field checks, per instruction (see _kind).
_KIND_STRAIGHT = 0  # nothing more
_KIND_LDDW = 1  # check the second slot and the subtype
_KIND_CALL_RUNTIME = 2  # reject
_KIND_BRANCH = 3  # jump or local call: check its target (see cfg.branch_target)
# Plain names for the forms _kind tests: enum attribute lookups and hashing are slow.
_FORM_LDDW = Form.LDDW
_FORM_CALL_RUNTIME = Form.CALL_RUNTIME
_BRANCH_FORMS = frozenset(form for form in Form if form.has_branch_target)

_CODE_ADDR = Op.CODE_ADDR
"""lddw_func (src 4): a callback's slot offset, resolved and self-contained."""
_PLAIN_LDDW_SUBTYPE = 0
"""lddw src 0 loads a 64-bit constant and src 4 a callback; the others need a
loader (RFC 9669 section 5.4)."""

_SUBTYPED: tuple[bool, ...] = tuple(
    len({row.src_value for row in rows if row.src is Reg.NONE}) > 1 for rows in BY_OPCODE
)
"""Per opcode: whether its src field selects among rows (call kinds, lddw
subtypes) rather than being a register or a must-be-constant field."""

_IMM_NOUN: dict[Form, str] = {Form.ENDIAN: "byte-swap width", Form.ATOMIC: "atomic operation"}
_FIELD_NAME: dict[str, str] = {"src": "src", "off": "offset", "imm": "imm"}


def verify(
    code: bytes | bytearray | memoryview | ProgramImage, *, allow_lddw_subtypes: bool = False
) -> None:
    """Check that a program is structurally valid eBPF: its program value
    (what the VM hands it) or its bytecode.

    The checks read the slots' raw fields (reserved fields and the lddw
    second slot are not in the decoded instructions), one pass with no
    instruction objects built: the program value's instructions are decoded
    once, by the first engine that needs them, not here.

    Returns None or raises :class:`VerifierError` whose `rule` is one of
    :data:`VERIFIER_RULES` and whose `pc` is the slot index of the offending
    instruction (None for whole-program rules). No other exception escapes for
    any byte content. `allow_lddw_subtypes` accepts the lddw map/variable/
    function forms (src 1..6), for a loader that resolves them.
    """
    if isinstance(code, ProgramImage):
        code = code.code
    nslots = _count_slots(code)
    data = code.tobytes() if isinstance(code, memoryview) else code
    branches, second_slots, last_pc, last_row = _check_slots(data, nslots, allow_lddw_subtypes)
    for insn in branches:
        target = branch_target(insn)
        if target is None:
            target = callback_target(insn)
        assert target is not None and insn.row is not None, \
            "branches are jumps, local calls and callback references"
        _check_target(insn.pc, insn.row, target, nslots, second_slots)
    if last_row.form.falls_through:
        raise VerifierError(
            f"the last instruction ({last_row.mnemonic}) is not exit or ja: "
            "execution could run past the end",
            last_pc,
            "falls_off_end",
        )


def _count_slots(code: bytes | bytearray | memoryview) -> int:
    """Slot count after the whole-program size rules."""
    nbytes = code.nbytes if isinstance(code, memoryview) else len(code)
    if nbytes % SLOT:
        raise VerifierError(f"program length {nbytes} is not a multiple of {SLOT}", None, "length")
    if nbytes == 0:
        raise VerifierError("program has no instructions", None, "empty")
    nslots = nbytes // SLOT
    if nslots > MAX_INSNS:
        raise VerifierError(f"program has {nslots} slots, more than {MAX_INSNS}", None, "too_long")
    return nslots


def _check_slots(
    data: bytes | bytearray, nslots: int, allow_lddw_subtypes: bool
) -> tuple[list[Insn], set[int], int, OpInfo]:
    """Run the per-instruction rules over every slot.

    Returns each jump and local call (register fields left 0), the slot
    indexes of lddw second slots, and the pc and row of the last instruction.
    """
    checked: dict[tuple[int, int, int, int], tuple[OpInfo, int]] = {}  # same slot, same result
    branches: list[Insn] = []
    second_slots: set[int] = set()
    skip = -1
    last_pc = 0
    last_row: OpInfo | None = None
    for pc, fields in enumerate(SLOT_LAYOUT.iter_unpack(data)):
        if pc == skip:
            continue
        entry = checked.get(fields)
        if entry is None:
            entry = checked[fields] = _check_fields(pc, *fields)
        row, kind = entry
        if kind == _KIND_STRAIGHT:
            pass
        elif kind == _KIND_LDDW:
            _check_lddw(data, pc, nslots, row, allow_lddw_subtypes)
            if row.op is _CODE_ADDR:  # a callback: its target is checked as a call's
                branches.append(Insn(pc, fields[0], 0, 0, fields[2], fields[3], row))
            skip = pc + 1
            second_slots.add(skip)
        elif kind == _KIND_CALL_RUNTIME:
            raise VerifierError(
                f"{row.mnemonic} (call by BTF id) is not supported", pc, "call_runtime"
            )
        else:
            branches.append(Insn(pc, fields[0], 0, 0, fields[2], fields[3], row))
        last_pc, last_row = pc, row
    assert last_row is not None  # nslots > 0 was checked by _count_slots
    return branches, second_slots, last_pc, last_row


def _kind(form: Form) -> int:
    """How the slot loop treats an instruction of `form`."""
    if form is _FORM_LDDW:
        return _KIND_LDDW
    if form is _FORM_CALL_RUNTIME:
        return _KIND_CALL_RUNTIME
    if form in _BRANCH_FORMS:
        return _KIND_BRANCH
    return _KIND_STRAIGHT


def _check_fields(pc: int, opcode: int, regs: int, off: int, imm: int) -> tuple[OpInfo, int]:
    """The row of one slot and its kind, after the opcode, field and register rules."""
    dst, src = regs & _NIBBLE_MASK, regs >> _NIBBLE_BITS
    row = find_row(opcode, src, off, imm) or _select_row(pc, opcode, src, off, imm)
    _check_register(pc, row, "dst", dst, row.dst, 0)
    _check_register(pc, row, "src", src, row.src, row.src_value)
    return row, _kind(row.form)


def _select_row(pc: int, opcode: int, src: int, off: int, imm: int) -> OpInfo:
    """The row that src subtype, offset and imm select; otherwise report the
    wrong field of the closest row (fewest mismatching fields).

    Where src is not a subtype, it is left to the register check, so a
    non-zero src in a K-form instruction is an invalid register, not a field."""
    rows = BY_OPCODE[opcode]
    if not rows:
        raise VerifierError(f"unknown opcode 0x{opcode:02x}", pc, "invalid_opcode")
    fields = ("src", "off", "imm") if _SUBTYPED[opcode] else ("off", "imm")
    values = {"src": src, "off": off, "imm": imm}
    misses = [_mismatches(row, fields, values) for row in rows]
    best_row, best = min(zip(rows, misses, strict=True), key=lambda pair: len(pair[1]))
    if not best:
        return best_row
    field = best[0]
    closest = [
        row
        for row, miss in zip(rows, misses, strict=True)
        if len(miss) == len(best) and field in miss
    ]
    raise VerifierError(_field_message(opcode, field, values[field], closest), pc, "invalid_field")


def _required(row: OpInfo, field: str) -> int | None:
    """The value `row` requires in `field`, or None when any value is allowed."""
    if field == "src":
        return row.src_value if row.src is Reg.NONE else None
    return row.off if field == "off" else row.imm


def _mismatches(row: OpInfo, fields: tuple[str, ...], values: dict[str, int]) -> list[str]:
    """The fields, in order, whose value `row` does not allow."""
    wrong: list[str] = []
    for field in fields:
        required = _required(row, field)
        if required is not None and values[field] != required:
            wrong.append(field)
    return wrong


def _field_message(opcode: int, field: str, value: int, closest: list[OpInfo]) -> str:
    """E.g. "offset 3 is not valid for opcode 0x34: must be 0 (div32) or 1 (sdiv32)"."""
    form = closest[0].form
    show = hex if field == "imm" and form is Form.ATOMIC else str
    if field == "src":
        what = "a valid subtype"
    elif field == "imm" and form in _IMM_NOUN:
        what = f"a valid {_IMM_NOUN[form]}"
    else:
        what = "valid"
    choices: list[str] = []
    for row in sorted(closest, key=lambda r: _required(r, field) or 0):
        choices.append(f"{show(_required(row, field) or 0)} ({row.mnemonic})")
    allowed = " or ".join(choices) if len(choices) < 3 else ", ".join(choices)
    return (
        f"{_FIELD_NAME[field]} {show(value)} is not {what} for opcode 0x{opcode:02x}: "
        f"must be {allowed}"
    )


def _check_register(pc: int, row: OpInfo, name: str, value: int, rule: Reg, fixed: int) -> None:
    """Check one register field against its rule; `fixed` is the required
    value when the field is not a register (Reg.NONE)."""
    if rule is Reg.NONE:
        if value != fixed:
            raise VerifierError(
                f"{name} must be {fixed} for {row.mnemonic}, got {value}", pc, "invalid_register"
            )
    elif value > MAX_REG:
        raise VerifierError(
            f"{name} r{value} of {row.mnemonic} is not a register (r0..r{MAX_REG})",
            pc,
            "invalid_register",
        )
    elif rule is Reg.WRITE and value == _FRAME_POINTER:
        raise VerifierError(
            f"{row.mnemonic} writes {name} r{value}, the read-only frame pointer",
            pc,
            "write_r10",
        )


def _check_lddw(
    data: bytes | bytearray, pc: int, nslots: int, row: OpInfo, allow_subtypes: bool
) -> None:
    """The second slot of the lddw at `pc` exists and holds only imm (RFC 9669
    section 3.2); subtypes other than the plain constant need `allow_subtypes`."""
    if pc + 1 >= nslots:
        raise VerifierError(
            f"{row.mnemonic} is cut off by the end of the program", pc, "incomplete_lddw"
        )
    opcode, dst, src, off = lddw_second_slot(data, pc)
    if opcode or dst or src or off:
        raise VerifierError(
            f"second slot of {row.mnemonic} must have opcode, dst, src and offset 0, got "
            f"opcode 0x{opcode:02x} dst {dst} src {src} offset {off}",
            pc,
            "incomplete_lddw",
        )
    if row.src_value != _PLAIN_LDDW_SUBTYPE and row.op is not _CODE_ADDR and not allow_subtypes:
        raise VerifierError(
            f"{row.mnemonic} (lddw src {row.src_value}, {row.op}) needs the ELF loader",
            pc,
            "lddw_subtype",
        )


def _check_target(pc: int, row: OpInfo, target: int, nslots: int, second_slots: set[int]) -> None:
    """A jump or local-call target must be a slot that starts an instruction."""
    if not 0 <= target < nslots:
        is_call = row.form is Form.CALL_LOCAL or row.op is _CODE_ADDR
        raise VerifierError(
            f"{row.mnemonic} target {target} is outside the program (0..{nslots - 1})",
            pc,
            "call_out_of_range" if is_call else "jump_out_of_range",
        )
    if target in second_slots:
        raise VerifierError(
            f"{row.mnemonic} target {target} is the second slot of the lddw at {target - 1}",
            pc,
            "jump_into_lddw",
        )
