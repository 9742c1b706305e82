"""Global variables by name, as a libbpf skeleton shows them (``obj.globals``).

The variables of an object's ``.data*``, ``.bss*`` and ``.rodata*`` sections,
named and typed by the object's BTF (its DATASECs), read and written by name:
``obj.globals["counter"]`` decodes the current value (ints, named tuples,
lists, bytes), ``obj.globals["limit"] = 10`` encodes and stores it where every
program of the object sees it. ``obj.globals.section(".rodata")`` limits the
view to one section.

``.rodata*`` sections are frozen when a program of the object first runs
(libbpf freezes them at load, before any program runs): set them before
(also after building VMs and runners), and a write after is a
:class:`~ebpfvm.mapflags.MapFrozen`. Programs
can never store to them (their memory is read-only: a store is a
MemoryFault with the pc, address and size).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from .errors import MapError

if TYPE_CHECKING:
    from .elf import ElfObject

__all__ = ["GlobalVars"]


class GlobalVars(MutableMapping[str, Any]):
    """The global variables of one object (or of one of its sections), by name."""

    def __init__(self, obj: ElfObject, section: str | None = None) -> None:
        self._obj = obj
        self._section = section
        if section is not None and section not in obj._globals:
            raise KeyError(f"no global-data section '{section}'")

    def section(self, name: str) -> GlobalVars:
        """The variables of section `name` only (``.bss``, ``.rodata``...)."""
        return GlobalVars(self._obj, name)

    def _sections(self) -> list[str]:
        return [self._section] if self._section is not None else list(self._obj._globals)

    def where(self, name: str) -> tuple[str, int, Any]:
        """(section, offset, BTF codec) of variable `name`; KeyError when no
        section has it, MapError when several do (name a section first)."""
        found = [(section, *self._obj._globals[section].variables[name])
                 for section in self._sections()
                 if name in self._obj._globals[section].variables]
        if not found:
            raise KeyError(name)
        if len(found) > 1:
            names = ", ".join(section for section, _, _ in found)
            raise MapError(f"variable {name!r} is in several sections ({names}): use "
                           "globals.section(NAME)")
        return found[0]

    def __getitem__(self, name: str) -> Any:
        section, offset, codec = self.where(name)
        data = self._obj.data[section]
        return codec.decode(bytes(data[offset : offset + codec.size]))

    def __setitem__(self, name: str, value: Any) -> None:
        section, offset, codec = self.where(name)
        if self._obj._globals[section].frozen:
            from .mapflags import MapFrozen

            raise MapFrozen(section, name)
        encoded = codec.encode(value)
        self._obj.data[section][offset : offset + codec.size] = encoded

    def __delitem__(self, name: str) -> None:
        raise MapError(f"global variable {name!r} cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        return (name for section in self._sections()
                for name in self._obj._globals[section].variables)

    def __len__(self) -> int:
        return sum(len(self._obj._globals[s].variables) for s in self._sections())

    def __repr__(self) -> str:
        where = f" of {self._section}" if self._section else ""
        return f"<GlobalVars{where}: {', '.join(self)}>"
