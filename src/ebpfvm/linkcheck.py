"""The checks that make a loaded program that uses something ebpfvm lacks,
or that its program type may not use, a typed error naming it.

``ebpfvm.load`` links each program of the object; a program whose linking
raises a :class:`~ebpfvm.linkerrors.LinkError`, or that :func:`check_program`
refuses, is recorded in ``ElfObject.problems`` instead of failing the whole
load: the other programs run, ``obj.program(name)`` (and so ``obj.vm``,
``obj.xdp``, ``obj.skb``) raises the problem, ``ebpfvm verify`` reports it and
``ebpfvm maps`` still lists the object's maps. A map of a type ebpfvm does not
implement becomes an :class:`UnsupportedMap` (``ElfObject.unsupported_maps``):
listed, but only a problem for the programs that use it.

The helper check (RFC 9669 section 4.3.1, helper calls by number) follows the
kernel for the program types of ebpfvm.helper_protos: a helper the type's
func_proto lacks is a :class:`~ebpfvm.linkerrors.HelperNotAllowed`; one it
offers that ebpfvm does not implement for that type an
:class:`~ebpfvm.linkerrors.UnsupportedHelper`. For other program types only
the second check is made.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .core_relo import is_poison
from .encoding import SLOT, SLOT_LAYOUT
from .errors import count_of
from .helper_protos import FUNC_PROTOS, UNSUPPORTED, kernel_allows
from .helper_table import HELPERS, helper_name
from .isa import OPS, Form
from .ksyms import KFUNC_ABSENT, kfunc_of
from .linkerrors import (
    HelperNotAllowed,
    LinkError,
    UnsupportedExtern,
    UnsupportedHelper,
    UnsupportedMapAttribute,
    UnsupportedMapType,
    map_type_name,
)
from .mapbase import MAP_CLASSES, BpfMap

if TYPE_CHECKING:
    from .elf import Program

__all__ = ["UnsupportedMap", "check_program", "find_problem", "helper_calls", "unsupported_map"]

CALL_OPCODE = next(row.opcode for row in OPS if row.form is Form.CALL)
_U32 = 0xFFFF_FFFF


class UnsupportedMap(BpfMap):
    """A map of a type ebpfvm does not implement, kept so that the object
    loads and ``ebpfvm maps`` lists it: it has the shape its definition
    gives, no entries, and no program that uses it runs."""

    kind = "unsupported"

    def __init__(self, name: str, map_type: int, key_size: int, value_size: int,
                 max_entries: int, flags: int, attribute: str | None = None) -> None:
        self._init_shape(name, map_type, key_size, value_size, max_entries, flags)
        self.handle = 0
        self.type_name = map_type_name(map_type)
        self.attribute = attribute
        """The BTF map attribute libbpf does not know, when that is why."""

    def problem(self, program: str, section: str) -> UnsupportedMapType:
        """The error of `program` (in `section`), which uses this map."""
        if self.attribute is not None:
            return UnsupportedMapAttribute(self.name, self.type, self.attribute, program,
                                           section)
        return UnsupportedMapType(self.name, self.type, program, section)

    def describe(self) -> str:
        """One line: name, kernel type name, shape, and that it is unsupported."""
        short = self.type_name.removeprefix("BPF_MAP_TYPE_").lower()
        why = f"unknown attribute {self.attribute!r}" if self.attribute is not None else \
            f"{self.type_name} ({self.type})"
        return (f"{self.name}: {short}, key {count_of(self.key_size, 'byte')}, value "
                f"{count_of(self.value_size, 'byte')}, max_entries {self.max_entries}: "
                f"{why} is not supported by ebpfvm")

    def entries_text(self, _limit: int) -> list[str]:
        """No entries: ebpfvm cannot hold this map's contents."""
        return []


MAP_ATTRIBUTES = frozenset({"type", "max_entries", "map_flags", "numa_node", "key_size", "key",
                            "value_size", "value", "values", "pinning", "map_extra"})
"""The BTF map attributes libbpf knows; it refuses a map with any other."""


def unsupported_map(name: str, fields: Mapping[str, int],
                    attributes: Iterable[str] = ()) -> UnsupportedMap | None:
    """An UnsupportedMap for a map definition (type, key_size, value_size,
    max_entries, map_flags; for a BTF map, its `attributes`) whose type
    ebpfvm lacks or with an attribute libbpf does not know, else None."""
    map_type = fields.get("type", 0)
    unknown = next((found for found in attributes if found not in MAP_ATTRIBUTES), None)
    if map_type in MAP_CLASSES and unknown is None:
        return None
    return UnsupportedMap(name, map_type, fields.get("key_size", 0),
                          fields.get("value_size", 0), fields.get("max_entries", 0),
                          fields.get("map_flags", 0), unknown)


def helper_calls(code: bytes) -> list[tuple[int, int]]:
    """(pc, helper number) of every helper call in `code`, leaving out the
    calls CO-RE poisoned (they fault only when run: ebpfvm.core_relo)."""
    found = []
    for pc in range(len(code) // SLOT):
        opcode, regs, _off, imm = SLOT_LAYOUT.unpack_from(code, pc * SLOT)
        if opcode == CALL_OPCODE and regs >> 4 == 0 and not is_poison(imm & _U32):
            found.append((pc, imm & _U32))
    return found


def _helper_problem(pc: int, number: int, prog_type: str | None,
                    where: tuple[str, str]) -> LinkError | None:
    """Why the call of helper `number` at `pc` cannot run in a program of
    `prog_type` (`where`: the program's name and section), or None."""
    kfunc = kfunc_of(number)
    if kfunc is not None:
        if prog_type is not None and prog_type not in kfunc.prog_types:
            return UnsupportedExtern(kfunc.name, "kfunc", pc, f"{prog_type} programs may not "
                                     "call it", *where)
        return None
    if number == KFUNC_ABSENT:
        return None  # a weak kfunc's call: a fault if a run reaches it
    name = helper_name(number)
    allowed = kernel_allows(prog_type, number) if prog_type is not None else None
    if allowed is False:
        return HelperNotAllowed(number, name, prog_type or "", pc, *where)
    spec = HELPERS.get(number)
    if spec is None:
        return UnsupportedHelper(number, name, pc, UNSUPPORTED.get(name, "not implemented"),
                                 *where)
    if allowed and prog_type not in spec.prog_types:
        implemented = ", ".join(sorted(spec.prog_types & set(FUNC_PROTOS)))
        return UnsupportedHelper(number, name, pc, f"implemented for {implemented} only",
                                 *where)
    return None


def check_program(program: Program, unsupported_maps: Mapping[str, BpfMap],
                  prog_type: str | None) -> LinkError | None:
    """The first thing `program` (of type `prog_type`, or None when its
    section names none) uses that ebpfvm lacks or its type may not use, as a
    LinkError naming the program; None when it can run."""
    where = (program.name, program.section)
    for name in program.maps:
        found = unsupported_maps.get(name)
        if isinstance(found, UnsupportedMap):
            return found.problem(*where)
    for pc, number in helper_calls(program.code):
        problem = _helper_problem(pc, number, prog_type, where)
        if problem is not None:
            return problem
    return None


def find_problem(problems: Mapping[str, LinkError], name: str | None,
                 section: str | None) -> LinkError | None:
    """The recorded problem of the program `name` (or the only one in
    `section`), when exactly one matches."""
    found = [problem for program, problem in problems.items()
             if (name is None or program == name)
             and (section is None or problem.section == section)]
    return found[0] if len(found) == 1 else None
