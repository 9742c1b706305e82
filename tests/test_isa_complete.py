"""Completeness: every row of the opcode table is served by every consumer.

Adding a row to isa.py makes these tests list what is missing: an interpreter
emitter that really executes it, an operand layout for the assembler and the
disassembler, a byte-exact round trip, and acceptance by the verifier.
"""

from __future__ import annotations

import pytest

from ebpfvm import alu
from ebpfvm.asm import FORM_OPERANDS, assemble
from ebpfvm.cfg import callback_value
from ebpfvm.disasm import disassemble
from ebpfvm.encoding import encode_one
from ebpfvm.errors import InvalidInstruction, VerifierError
from ebpfvm.helpers import HELPER_CALL_UNITS, Helper
from ebpfvm.interpreter import _EMITTERS
from ebpfvm.isa import OPS, Form, Op, OpInfo, Reg
from ebpfvm.jit.x86_emit import EMITTERS as _JIT_EMITTERS
from ebpfvm.verifier import verify
from ebpfvm.vm import EbpfVmRaw
from engines import run

EXIT = next(r for r in OPS if r.form is Form.EXIT)
BY_DESIGN = {  # rows the interpreter and the default verifier reject on purpose
    **{(r.opcode, r.src_value): "lddw_subtype" for r in OPS
       if r.form is Form.LDDW and r.src_value and r.op is not Op.CODE_ADDR},
    **{(r.opcode, r.src_value): "call_runtime" for r in OPS if r.form is Form.CALL_RUNTIME},
}


def sample(row: OpInfo) -> bytes:
    """`row` with legal operands, followed by exit. Memory forms use r1 (the
    input buffer) with offset 8; jumps and local calls target the exit."""
    dst = 0 if row.dst is Reg.NONE else (1 if row.form in (Form.ST, Form.STX, Form.ATOMIC) else 3)
    src = row.src_value if row.src is Reg.NONE else (1 if row.form is Form.LDX else 2)
    off = row.off if row.off is not None else (8 if row.form in _MEMORY else 0)
    imm = row.imm if row.imm is not None else (2 if row.form is not Form.CALL else 7)
    if row.form is Form.CALLX:
        dst = 2  # holds the helper id, set below
    if row.op is Op.CODE_ADDR:
        imm = 1  # lddw_func: the callback is the exit after it
    insn = encode_one(row.opcode, dst, src, off, 0 if row.form in _RELATIVE_IMM else imm)
    setup = encode_one(_MOV_K.opcode, 2, 0, 0, 7)  # r2 = 7: helper id for callx, divisor...
    return setup + insn + encode_one(EXIT.opcode)


_MOV_K = next(r for r in OPS if r.mnemonic == "mov" and r.form is Form.ALU_K)
_MEMORY = {Form.LDX, Form.ST, Form.STX, Form.ATOMIC}
_RELATIVE_IMM = {Form.CALL_LOCAL, Form.JA32}
# mov + insn + exit, except: exit ends at once; a local call runs the exit twice.
_EXPECTED_COUNT = {Form.EXIT: 2, Form.CALL_LOCAL: 4,
                   Form.CALL: 3 + HELPER_CALL_UNITS, Form.CALLX: 3 + HELPER_CALL_UNITS}
"""Budget units a row's test program uses: its instructions, and a helper
call's fixed charge (ebpfvm.helpers.HELPER_CALL_UNITS)."""


def test_every_form_has_consumers() -> None:
    forms = {row.form for row in OPS}
    assert forms == set(Form)
    assert set(_EMITTERS) == forms, "interpreter emitter missing"
    assert set(_JIT_EMITTERS) == forms, "JIT emitter missing"
    assert set(FORM_OPERANDS) == forms, "assembler/disassembler layout missing"


@pytest.mark.parametrize("row", OPS, ids=lambda r: f"{r.opcode:#04x}-{r.mnemonic}")
def test_row_is_complete(row: OpInfo, engine: str) -> None:
    code = sample(row)
    # asm <-> disasm, both styles, byte-exact.
    for style in ("ubpf", "rbpf"):
        assert assemble(disassemble(code, style=style)) == code
    # The verifier accepts it, or rejects it by design.
    expected_rule = BY_DESIGN.get((row.opcode, row.src_value))
    if expected_rule:
        with pytest.raises(VerifierError) as info:
            verify(code)
        assert info.value.rule == expected_rule
    else:
        verify(code)
    # The interpreter executes it (with a permissive verifier for by-design rows).
    vm = EbpfVmRaw(None)
    vm.set_verifier(lambda _code: None)
    vm.set_program(code)
    vm.register_helper(7, Helper(lambda *args: 0x77, "seven"))
    mem = bytearray(range(32))
    if expected_rule:
        with pytest.raises(InvalidInstruction) as fault:
            run(vm, engine, mem)
        assert fault.value.pc == 1
        return
    run(vm, engine, mem)
    if engine != "jit-unchecked":  # unchecked code does not count
        assert vm.last_instruction_count == _EXPECTED_COUNT.get(row.form, 3)
    if row.op is Op.CODE_ADDR:  # what identifies the callback at pc 3
        assert vm.last_registers[3] == callback_value(3)
    if row.form in (Form.ALU_K, Form.ALU_X, Form.NEG, Form.ENDIAN):
        source = 7 if row.form is Form.ALU_X else alu.widen_imm(row, row.imm if row.imm is not None else 2)
        assert vm.last_registers[3] == alu.alu(row, 0, source)
