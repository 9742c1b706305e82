"""The runtime objects' functions, by helper number: the one list of the
helpers that have a native version (helper_table's ``native`` column reads it).

Each ``src/ebpfvm/native/*.o`` is read once (pyelftools): every global
function ``rt_<name>`` in its ``.text`` whose ``bpf_<name>`` is a kernel
helper becomes a :class:`RuntimeFunction`. The objects must have no
relocations, no local calls and only intrinsic calls (rt.h): each function is
a self-contained run of instructions any engine can compile.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from ..encoding import Insn, decode
from ..errors import EbpfError
from ..isa import Form
from ..jit.plan import falls_through
from ..kernel_helper_names import KERNEL_HELPER_NAMES
from .abi import is_intrinsic

__all__ = [
    "NATIVE_ENV",
    "RuntimeError_",
    "RuntimeFunction",
    "native_enabled",
    "native_functions",
    "native_helper_numbers",
]

HERE = Path(__file__).parent
NATIVE_ENV = "EBPFVM_NATIVE"
"""Set to 0 (or off, no, false) to run every helper through Python: the
differential tests compare both ways."""
_PREFIX = "rt_"
_NUMBERS = {name: number for number, name in enumerate(KERNEL_HELPER_NAMES)}


class RuntimeError_(EbpfError):
    """A runtime object breaks the rules of rt.h (a packaging error)."""


@dataclass(frozen=True)
class RuntimeFunction:
    """One native helper: its name, kernel helper number, object and code."""

    name: str
    helper: int
    source: str
    code: bytes = field(repr=False)

    @functools.cached_property
    def insns(self) -> list[Insn]:
        """The decoded instructions (pcs from 0)."""
        return decode(self.code)


def native_enabled() -> bool:
    """Whether engines link native helpers (EBPFVM_NATIVE unset or on)."""
    return os.environ.get(NATIVE_ENV, "1").strip().lower() not in ("0", "off", "no", "false")


def _check(function: RuntimeFunction) -> None:
    for insn in function.insns:
        row = insn.row
        if row is None:
            raise RuntimeError_(f"{function.name}: invalid instruction at {insn.pc}")
        if row.form in (Form.CALL_LOCAL, Form.CALLX, Form.CALL_RUNTIME, Form.LD_ABS,
                        Form.LD_IND) or (row.form is Form.CALL and not is_intrinsic(insn.imm)):
            raise RuntimeError_(f"{function.name}: {row.form.name} at {insn.pc} "
                                "(runtime code makes intrinsic calls only)")
    last = function.insns[-1] if function.insns else None
    if last is None or falls_through(last):
        raise RuntimeError_(f"{function.name}: runs off its end")


def load_object(path: Path) -> list[RuntimeFunction]:
    """The rt_* functions of one runtime object."""
    found: list[RuntimeFunction] = []
    with path.open("rb") as stream:
        elf = ELFFile(stream)
        for section in elf.iter_sections():
            if section.name.startswith(".rel") and not section.name.startswith(
                    (".rel.debug", ".rel.BTF")):
                raise RuntimeError_(f"{path.name}: has relocations ({section.name})")
        text = elf.get_section_by_name(".text")
        symtab = elf.get_section_by_name(".symtab")
        if text is None or not isinstance(symtab, SymbolTableSection):
            return found
        data = text.data()
        index = elf.get_section_index(".text")
        for symbol in symtab.iter_symbols():
            name = symbol.name
            if (symbol["st_info"]["type"] != "STT_FUNC" or symbol["st_shndx"] != index
                    or not name.startswith(_PREFIX)):
                continue
            number = _NUMBERS.get("bpf_" + name[len(_PREFIX):])
            if number is None:
                raise RuntimeError_(f"{path.name}: {name} names no kernel helper")
            start, size = symbol["st_value"], symbol["st_size"]
            function = RuntimeFunction(name, number, path.name, bytes(data[start:start + size]))
            _check(function)
            found.append(function)
    return found


@functools.cache
def native_functions() -> dict[int, RuntimeFunction]:
    """Every runtime function, by the kernel helper number it implements."""
    table: dict[int, RuntimeFunction] = {}
    for path in sorted(HERE.glob("*.o")):
        for function in load_object(path):
            if function.helper in table:
                raise RuntimeError_(f"{function.name}: in {table[function.helper].source} "
                                    f"and {function.source}")
            table[function.helper] = function
    return table


def native_helper_numbers() -> frozenset[int]:
    """The helpers that have a native version."""
    return frozenset(native_functions())
