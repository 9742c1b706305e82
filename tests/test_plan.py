"""The opcode table's derived control-flow and memory facts, the one place
that computes branch targets, and the JIT's backend-neutral plan."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from ebpfvm.cfg import branch_delta, branch_target, relative_target
from ebpfvm.encoding import Insn, decode, encode_one
from ebpfvm.isa import OPS, Form, Op, OpInfo

SRC = Path(__file__).resolve().parents[1] / "src" / "ebpfvm"

# RFC 9669 section 3 (instruction encoding): the class is the low three bits
# of the opcode; for JMP and JMP32 the operation code is the high four bits
# (section 4); for loads and stores bits 5-7 are the mode (section 5).
CLASS_LD, CLASS_LDX, CLASS_ST, CLASS_STX, CLASS_JMP, CLASS_JMP32 = 0, 1, 2, 3, 5, 6
JMP_JA, JMP_CALL, JMP_EXIT = 0x0, 0x8, 0x9  # section 4.3 table
MODE_ABS, MODE_IND, MODE_MEM, MODE_MEMSX, MODE_ATOMIC = 0x20, 0x40, 0x60, 0x80, 0xC0
CALL_LOCAL_SRC = 1  # section 4.3.1: src_reg 1 calls a program-local function


def _cls(row: OpInfo) -> int:
    return row.opcode & 0x07


def _code(row: OpInfo) -> int:
    return row.opcode >> 4


def _mode(row: OpInfo) -> int:
    return row.opcode & 0xE0


def _is_jmp_class(row: OpInfo) -> bool:
    return _cls(row) in (CLASS_JMP, CLASS_JMP32)


def _rfc_target_field(row: OpInfo) -> str | None:
    """Section 4.3: conditional jumps and JMP's ja jump by `offset`; JMP32's
    ja (gotol) by `imm`; a local call (4.3.2) by `imm`; helper calls, calls
    by BTF id and exit have no target in the program."""
    if not _is_jmp_class(row):
        return None
    if _code(row) == JMP_EXIT:
        return None
    if _code(row) == JMP_CALL:
        local = row.opcode & 0x08 == 0 and row.src_value == CALL_LOCAL_SRC
        return "imm" if local else None
    if _code(row) == JMP_JA and _cls(row) == CLASS_JMP32:
        return "imm"
    return "off"


@pytest.mark.parametrize("row", OPS, ids=lambda r: f"{r.opcode:#04x}-{r.mnemonic}")
def test_form_facts_follow_the_rfc_classes(row: OpInfo) -> None:
    form = row.form
    assert form.target_field == _rfc_target_field(row)
    assert form.has_branch_target == (_rfc_target_field(row) is not None)
    unconditional = _is_jmp_class(row) and _code(row) in (JMP_JA, JMP_EXIT)
    assert form.falls_through == (not unconditional)
    legacy_packet = _cls(row) == CLASS_LD and _mode(row) in (MODE_ABS, MODE_IND)  # section 5.5
    assert form.ends_block == (_is_jmp_class(row) or legacy_packet)
    memory = (_cls(row) == CLASS_LDX and _mode(row) in (MODE_MEM, MODE_MEMSX)) or (
        _cls(row) in (CLASS_ST, CLASS_STX) and _mode(row) in (MODE_MEM, MODE_ATOMIC))
    assert form.is_memory_access == memory
    # Section 5.1: loads address [src + offset], stores and atomics [dst + offset].
    assert form.memory_base == (None if not memory else "src" if _cls(row) == CLASS_LDX else "dst")


def test_every_row_op_is_an_op_member() -> None:
    assert all(type(row.op) is Op for row in OPS)
    assert {row.op for row in OPS if row.form is Form.ATOMIC} >= {Op.CMPXCHG, Op.XCHG}
    assert f"{Op.FETCH_ADD}" == "fetch_add"  # messages and generated code read the value


JA, JEQ_K, JA32, CALL, EXIT, MOV_K = 0x05, 0x15, 0x06, 0x85, 0x95, 0xB7


@pytest.mark.parametrize(("opcode", "src", "off", "imm", "target"), [
    (JA, 0, 2, 0, 4),  # pc 1: the next slot is 2, two more is 4
    (JA, 0, -2, 0, 0),
    (JEQ_K, 0, 3, 7, 5),
    (JA32, 0, 0, 1, 3),  # gotol: the delta is in imm
    (CALL, CALL_LOCAL_SRC, 0, -2, 0),
    (CALL, 0, 5, 5, None),  # a helper call has no target
    (EXIT, 0, 0, 0, None),
    (MOV_K, 0, 1, 1, None),
])
def test_branch_target(opcode: int, src: int, off: int, imm: int, target: int | None) -> None:
    code = encode_one(MOV_K, 0, 0, 0, 0) + encode_one(opcode, 0, src, off, imm)
    insn = decode(code + encode_one(EXIT, 0, 0, 0, 0) * 4)[1]
    assert branch_target(insn) == target
    if target is not None:
        assert relative_target(insn.pc, off if opcode in (JA, JEQ_K) else imm) == target
        assert branch_delta(insn.pc, target) == (off if opcode in (JA, JEQ_K) else imm)


_TARGET_ARITHMETIC = re.compile(
    r"\+\s*1\s*\+"  # pc + 1 + delta
    r"|\b(?:off|imm|delta)\s*\+\s*1\b"  # ... + off + 1
    r"|-\s*\(\s*[\w.]*pc\s*\+\s*1\s*\)")  # target - (pc + 1)


def test_branch_targets_are_computed_in_cfg_only() -> None:
    """cfg.relative_target / branch_target / branch_delta are the one place
    that turns a slot delta into a target (or back)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "cfg.py" and path.parent == SRC:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if _TARGET_ARITHMETIC.search(code):
                found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert found == []


def test_the_plan_knows_no_native_instruction_set() -> None:
    """A second backend reuses plan.py as it is: nothing x86 in it."""
    tree = ast.parse((SRC / "jit" / "plan.py").read_text())
    modules = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    modules += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names]
    assert modules, "the walk found the imports"
    assert [name for name in modules if "x86" in name or name.endswith(("codebuf", "execmem"))] == []
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert {name for name in names if "x86" in name.lower() or name in ("X", "Mem", "Label")} == set()


def _program(*slots: tuple[int, int, int, int, int]) -> list[Insn]:
    return decode(b"".join(encode_one(*slot) for slot in slots))


LDXW, STW, ADD_K = 0x61, 0x62, 0x07


def test_plan_blocks_charges_and_fall_off() -> None:
    from ebpfvm.jit.plan import make_plan
    insns = _program(
        (MOV_K, 0, 0, 0, 1),  # block 0
        (JEQ_K, 1, 0, 1, 0),  # ends block 0; goes to pc 3
        (ADD_K, 0, 0, 0, 1),  # block 1
        (ADD_K, 0, 0, 0, 2),  # block 2 (a branch target), runs off the end
    )
    plan = make_plan(insns, checked=True, metered=True)
    assert [[insn.pc for insn in block.insns] for block in plan.blocks] == [[0, 1], [2], [3]]
    assert [block.number for block in plan.blocks] == [0, 1, 2]
    assert [block.charge for block in plan.blocks] == [2, 1, 1]
    assert [block.falls_off for block in plan.blocks] == [False, False, True]
    assert plan.starts == {0, 2, 3}
    assert plan.nslots == 4
    assert plan.stack_clear == 0  # the program never touches r10
    unmetered = make_plan(insns, checked=False, metered=False)
    assert [block.charge for block in unmetered.blocks] == [0, 0, 0]


def test_plan_fuses_accesses_through_one_unchanged_base() -> None:
    from ebpfvm.jit.plan import FusedGroup, make_plan
    insns = _program(
        (LDXW, 2, 1, 4, 0),  # [r1 + 4, r1 + 8)
        (STW, 1, 0, 0, 9),  # [r1 + 0, r1 + 4): a store
        (LDXW, 1, 1, 8, 0),  # [r1 + 8, r1 + 12), then r1 is overwritten
        (LDXW, 3, 1, 0, 0),  # a new r1: not in the group
        (EXIT, 0, 0, 0, 0),
    )
    (block,) = make_plan(insns, checked=True, metered=True).blocks
    assert block.fused == (FusedGroup(base=1, low=0, span=12, store=True, members=(0, 1, 2)),)
    (unchecked,) = make_plan(insns, checked=False, metered=False).blocks
    assert unchecked.fused == ()


def test_caches_are_bounded() -> None:
    from ebpfvm.jit.plan import JitCaches
    caches = JitCaches(limit=2)
    for key in range(5):
        caches.remember(caches.charges, key, (b"", ()))
        assert len(caches.charges) <= 3
    caches.clear()
    assert caches.charges == {} and caches.runtime is None
