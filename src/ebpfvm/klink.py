"""A linked program in the form BPF_PROG_LOAD takes (for ebpfvm.kdiff).

The object loader links each program with the whole of ``.text`` after it
and host addresses in its map and global-data loads. The kernel wants map
file descriptors in those 64-bit immediate loads (src 1, BPF_PSEUDO_MAP_FD;
src 2, BPF_PSEUDO_MAP_VALUE with the offset in the second slot: RFC 9669,
section 5.4), and refuses unreachable instructions, so the functions of
``.text`` that the program never calls or passes as a callback are left
out, as libbpf appends only the subprograms a program uses. Jump, local
call and callback deltas are recomputed for the shorter layout (RFC 9669,
section 4.3).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from .cfg import branch_delta, branch_target, callback_target
from .encoding import SLOT, Insn, decode
from .isa import Form

__all__ = ["kernel_code"]

PSEUDO_MAP_FD = 1
PSEUDO_MAP_VALUE = 2
_ENDS_FLOW = (Form.EXIT, Form.JA, Form.JA32)
"""Forms after which the next slot is not reached by falling through."""
_OFF = struct.Struct("<h")
_IMM = struct.Struct("<i")


def kernel_code(code: bytes, relocations: tuple[tuple[int, str, str, int], ...],
                map_fd: Callable[[str], int], func_info: Sequence[tuple[int, int]] = ()
                ) -> tuple[bytes, list[tuple[int, int]]]:
    """`code` with its map and data loads pointing at the kernel maps
    (`map_fd` of a map or data-section name) and without unreachable
    functions, and `func_info` ((pc, BTF FUNC id) of each function start)
    for the new layout, without the functions left out."""
    out = bytearray(code)
    for pc, kind, name, offset in relocations:
        at = pc * SLOT
        source = PSEUDO_MAP_FD if kind == "map" else PSEUDO_MAP_VALUE
        out[at + 1] = (out[at + 1] & 0x0F) | (source << 4)
        _IMM.pack_into(out, at + 4, map_fd(name))
        _IMM.pack_into(out, at + SLOT + 4, offset if kind == "data" else 0)
    pruned, moved = _reachable_only(bytes(out))
    return pruned, [(moved[pc], type_id) for pc, type_id in sorted(func_info) if pc in moved]


def _reachable(insns: list[Insn]) -> set[int]:
    """The pcs reached from the entry and from every function it calls or
    passes as a callback."""
    by_pc = {insn.pc: insn for insn in insns}
    seen: set[int] = set()
    todo = [0]
    while todo:
        pc = todo.pop()
        insn = by_pc.get(pc)
        if insn is None or pc in seen:
            continue
        seen.add(pc)
        for target in (branch_target(insn), callback_target(insn)):
            if target is not None:
                todo.append(target)
        if insn.row is None or insn.row.form not in _ENDS_FLOW:
            todo.append(pc + insn.slots)
    return seen


def _reachable_only(code: bytes) -> tuple[bytes, dict[int, int]]:
    """The code without unreachable instructions, and where each kept pc went."""
    insns = decode(code)
    kept = _reachable(insns)
    if len(kept) == len(insns):
        return code, {insn.pc: insn.pc for insn in insns}
    moved: dict[int, int] = {}
    out = bytearray()
    for insn in insns:
        if insn.pc in kept:
            moved[insn.pc] = len(out) // SLOT
            out += code[insn.pc * SLOT : (insn.pc + insn.slots) * SLOT]
    for insn in insns:
        if insn.pc not in kept or insn.row is None:
            continue
        new_pc = moved[insn.pc]
        target = branch_target(insn)
        if target is not None and target in moved:
            delta = branch_delta(new_pc, moved[target])
            if insn.row.form.target_field == "off":
                _OFF.pack_into(out, new_pc * SLOT + 2, delta)
            else:
                _IMM.pack_into(out, new_pc * SLOT + 4, delta)
        function = callback_target(insn)
        if function is not None and function in moved:
            _IMM.pack_into(out, new_pc * SLOT + 4, branch_delta(new_pc, moved[function]))
    return bytes(out), moved

