"""Load eBPF programs from clang/libbpf ELF objects (pyelftools does the ELF).

A program is a function symbol in an executable section other than ``.text``
(``xdp``, ``tc``, ``socket``, ``.classifier``...). Functions in ``.text`` are
subprograms: a program that calls them (R_BPF_64_32 on a ``call local``) gets
the ``.text`` code appended and its call offsets patched, as libbpf links
bpf-to-bpf calls.

Global data (``.data*``, ``.rodata*``, ``.bss*``) lives in one bytearray per
section owned by the :class:`ElfObject`; an lddw relocated against it (R_BPF_64_64)
becomes the buffer's real address, so every program of the object shares it, as
in the kernel. Python can read and change it between runs (``obj.data``), and
:meth:`ElfObject.vm` registers it as allowed memory (``.rodata`` read-only).

Maps from the legacy ``maps`` section (``struct bpf_map_def``) become
:class:`~ebpfvm.maps.Map` objects; an lddw of a map becomes the map's handle,
which the map helpers (1-3) take. BTF-defined maps (``.maps``) are read from
the object's BTF (:mod:`ebpfvm.btf`).
"""

from __future__ import annotations

import io
import os
import struct
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from .btf import Btf, BtfKind, Codec, parse_btf
from .cfg import branch_delta, relative_target
from .core_btf import check_core_arguments
from .core_relo import CoreRelocation, CoreTargetSpec, apply_core
from .encoding import SLOT, SLOT_LAYOUT, lddw_slots
from .errors import (
    ArgumentError,
    ArgumentTypeError,
    Closed,
    ElfError,
    MapError,
    count_of,
)
from .externs import kconfig_externs
from .globalvars import GlobalVars
from .isa import Form, find_row
from .kernel import KernelEnv
from .ksyms import KsymLinker
from .linkcheck import check_program, find_problem, helper_calls, unsupported_map
from .linkerrors import LinkError, UnsupportedRelocation
from .mapbase import BpfMap, MapSpec
from .mapflags import MapFlag
from .mapinmap import MapOfMaps
from .maps import (
    MAX_MAP_BYTES,
    MAX_OBJECT_MAP_BYTES,
    MAX_VALUE_SIZE,
    AnyMap,
    Map,
    MapMemory,
    MapType,
    create_map,
)
from .mapslots import fill_prog_arrays, is_program_values
from .memory import address_of
from .progtypes import prog_type_for_section
from .tailcalls import E2BIG as E2BIG  # re-exported: ebpfvm.elf named them first
from .tailcalls import ENOENT as ENOENT
from .tailcalls import MAX_TAIL_CALLS as MAX_TAIL_CALLS
from .timers import TimerQueue, timers_of

if TYPE_CHECKING:
    from .objects import EbpfVmFixedMbuff, EbpfVmRaw, SkbRunner, XdpRunner, _VmBase
    from .percpu import PerCpuMap

    _Vm = TypeVar("_Vm", bound=_VmBase)

__all__ = ["R_BPF_64_32", "R_BPF_64_64", "ElfObject", "Program", "load"]

EM_BPF = 247
R_BPF_64_64 = 1
"""Relocation on lddw: the address of a map, of global data or of a
function (a callback, lddw src 4)."""
PSEUDO_FUNC = 4
"""lddw src 4 (BPF_PSEUDO_FUNC): imm is the slot offset of a callback."""
R_BPF_64_32 = 10
"""Relocation on a call: the called function."""
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4
TEXT = ".text"
DATA_PREFIXES = (".data", ".rodata", ".bss")
"""Sections that become global data (libbpf: single-element array maps)."""


@dataclass(frozen=True)
class Program:
    """One program: its function and section names, its linked bytecode, and
    the global-data sections its code points into."""

    name: str
    section: str
    code: bytes
    subprograms: tuple[str, ...] = ()
    data_sections: tuple[str, ...] = ()
    maps: tuple[str, ...] = ()
    helpers: tuple[int, ...] = ()
    relocations: tuple[tuple[int, str, str, int], ...] = ()
    """(pc of an lddw, "map" or "data", map or section name, offset): where the
    linked code holds a host address, for loaders that need another form (the
    kernel wants map fds)."""

    def __len__(self) -> int:
        """The program's length in instruction slots."""
        return len(self.code) // SLOT

    def __repr__(self) -> str:
        return (f"Program({self.name!r}, section={self.section!r}, "
                f"{count_of(len(self), 'slot')}, maps={list(self.maps)!r})")[:MAX_REPR]


MAX_REPR = 300
"""The longest repr of a Program or ElfObject, in characters."""


@dataclass(repr=False, eq=False)
class ElfObject:
    """The programs of one object file, by function name and by section, and
    its global data by section name.

    It is a context manager: close() (or the end of the ``with`` block) frees
    the JIT code of the VMs and closes the runners it made (vm(), xdp(),
    skb(), and the VMs of tail calls), and releases its pins on the
    global-data buffers; its maps and data stay readable. vm(), xdp() and
    skb() then raise Closed."""

    programs: list[Program] = field(default_factory=list)
    license: str | None = None
    data: dict[str, bytearray] = field(default_factory=dict)
    maps: dict[str, AnyMap] = field(default_factory=dict)
    core_relocations: list[CoreRelocation] = field(default_factory=list)
    """The CO-RE relocations applied at load, with their results (ebpfvm.core_relo)."""
    _pins: list[Any] = field(default_factory=list)
    _globals: dict[str, Map] = field(default_factory=dict)
    """The maps of the global-data sections, by section name."""
    _made: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)
    _closed: bool = False
    problems: dict[str, LinkError] = field(default_factory=dict)
    """The programs that cannot run, by function name: what each uses that
    ebpfvm lacks or its program type may not use (ebpfvm.linkcheck)."""
    unsupported_maps: dict[str, BpfMap] = field(default_factory=dict)
    """The maps of types ebpfvm does not implement (listed, never run)."""

    def __repr__(self) -> str:
        names = ", ".join(f"{p.section}/{p.name}" for p in self.programs)
        state = " closed" if self._closed else ""
        text = (f"<ElfObject {count_of(len(self.programs), 'program')} [{names}], "
                f"{count_of(len(self.maps), 'map')}{state}>")
        return text if len(text) <= MAX_REPR else f"{text[:MAX_REPR - 4]}...>"

    def __enter__(self) -> ElfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the runners and free the JIT code of the VMs this object
        made, and release its pins on the global-data buffers. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for made in list(self._made):
            made.close()
        self._made.clear()
        pins, self._pins = self._pins, []
        for pin in pins:
            pin.release()

    @property
    def closed(self) -> bool:
        """Whether close() has run."""
        return self._closed

    @property
    def timers(self) -> TimerQueue:
        """The bpf_timers of the object's maps: pending() and fire() (ebpfvm.timers)."""
        return timers_of(self)

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("ElfObject")

    def variables(self, section: str) -> dict[str, Any]:
        """The current values of a global-data section's variables, decoded
        with the object's BTF (ints, named tuples, lists, bytes)."""
        found = self._globals.get(section)
        if found is None:
            raise KeyError(f"no global-data section '{section}'")
        data = self.data[section]
        return {name: codec.decode(data[offset : offset + codec.size])
                for name, (offset, codec) in found.variables.items()}

    @property
    def globals(self) -> GlobalVars:
        """The global variables of every data section, by name, read and
        written with their BTF types (ebpfvm.globalvars)."""
        return GlobalVars(self)

    def freeze(self) -> None:
        """Freeze the ``.rodata*`` sections: Python may no longer write them
        (the first run of any program of the object does this; libbpf's
        load does it before any run). Idempotent."""
        for name, found in self._globals.items():
            if name.startswith(".rodata"):
                found.frozen = True

    def xdp(self, name: str | None = None, *, section: str | None = None,
            engine: str = "interp", env: KernelEnv | None = None,
            **kwargs: Any) -> XdpRunner:
        """An XdpRunner (ebpfvm.contexts) for one program, with its helpers,
        maps and global data; keyword arguments go to XdpRunner. The runner
        owns its VM: closing it frees the VM's JIT code."""
        from .objects import build_xdp

        return build_xdp(self, name, section, engine, env, **kwargs)

    def skb(self, name: str | None = None, *, section: str | None = None,
            engine: str = "interp", env: KernelEnv | None = None,
            **kwargs: Any) -> SkbRunner:
        """An SkbRunner (ebpfvm.contexts) for a socket-filter or tc program:
        an EbpfVmMbuff (r1 = the __sk_buff, input memory = the packet). The
        runner owns its VM, as for xdp()."""
        from .objects import build_skb

        return build_skb(self, name, section, engine, env, **kwargs)

    @overload
    def vm(self, name: str | None = None, *, section: str | None = None,
           kind: None = None, fixed_mbuff: None = None, env: KernelEnv | None = None,
           **kwargs: Any) -> EbpfVmRaw: ...

    @overload
    def vm(self, name: str | None = None, *, section: str | None = None,
           kind: None = None, fixed_mbuff: tuple[int, int], env: KernelEnv | None = None,
           **kwargs: Any) -> EbpfVmFixedMbuff: ...

    @overload
    def vm(self, name: str | None = None, *, section: str | None = None,
           kind: type[_Vm], fixed_mbuff: None = None, env: KernelEnv | None = None,
           **kwargs: Any) -> _Vm: ...

    def vm(self, name: str | None = None, *, section: str | None = None,
           kind: type[_VmBase] | None = None, fixed_mbuff: tuple[int, int] | None = None,
           env: KernelEnv | None = None, **kwargs: Any) -> _VmBase:
        """A VM running one program, with the kernel helpers (`env` configures
        them), its maps, and the global data it uses as allowed memory.
        EbpfVmRaw by default; ``fixed_mbuff=(data_offset, data_end_offset)``
        gives an EbpfVmFixedMbuff; `kind` any other VM class. Keyword
        arguments (budget) go to the VM's constructor."""
        from .objects import build_vm

        return build_vm(self, name, section, kind, fixed_mbuff, env, **kwargs)

    def program(self, name: str | None = None, *, section: str | None = None) -> Program:
        """The program called `name`, or the only one in `section`, or the only one."""
        found = [p for p in self.programs
                 if (name is None or p.name == name) and (section is None or p.section == section)]
        problem = find_problem(self.problems, name, section) if not found else None
        if problem is not None:
            raise problem
        if len(found) != 1:
            raise ElfError(_no_single_program(self.programs, found, name), section)
        return found[0]

    @property
    def sections(self) -> list[str]:
        """The names of the sections that hold programs, sorted."""
        return sorted({p.section for p in self.programs})


def _no_single_program(programs: list[Program], found: list[Program], name: str | None) -> str:
    """Why ElfObject.program found no program, or several, without Python
    reprs (the ElfError adds " in section S" when a section was asked for)."""
    if not programs:
        return "the object has no programs"
    shown = found or programs
    listing = ", ".join(f"{p.section}/{p.name}" for p in shown[:MAX_LISTED])
    if len(shown) > MAX_LISTED:
        listing += f" and {len(shown) - MAX_LISTED} more"
    if found:
        return f"{len(found)} programs match; choose one by function name: {listing}"
    if name is not None:
        return f"the programs are {listing}; none is named {name!r}"
    return f"the programs are {listing}; none is"


MAX_LISTED = 20
"""Programs an error message lists at most."""


@dataclass
class _Section:
    index: int
    name: str
    data: bytes
    relocations: dict[int, tuple[int, str, int, int]]  # insn index -> (type, symbol, value, shndx)


def load(source: str | os.PathLike[str] | bytes | bytearray, *,
         max_map_bytes: int = MAX_MAP_BYTES,
         max_object_map_bytes: int = MAX_OBJECT_MAP_BYTES,
         possible_cpus: int | None = None, core_btf: CoreTargetSpec = None,
         core_strict: bool = False) -> ElfObject:
    """Read an object file (a path or its bytes). Malformed or unsupported input
    raises ElfError naming the section when there is one.

    Memory: each map may hold at most `max_map_bytes` (ebpfvm.maps.map_bytes:
    its slab, and its keys and entries' bookkeeping), and the maps and
    global-data sections together at most `max_object_map_bytes`; a map over
    either is an ElfError naming it, caused by a MapTooLarge (a
    ResourceLimit) with the limit and the bytes asked for. `possible_cpus`
    gives the per-CPU maps that many CPUs (ebpfvm.percpu.POSSIBLE_CPUS, 2,
    when None). The defaults
    (MAX_MAP_BYTES, 256 MiB, and MAX_OBJECT_MAP_BYTES, 512 MiB) keep a hostile
    object within a few hundred MB. A limit that is not a positive int is an
    ArgumentError or ArgumentTypeError, before anything is read.

    CO-RE relocations are resolved against `core_btf` (ebpfvm.core_btf: None
    for the BTF shipped with ebpfvm, ``"host"`` for /sys/kernel/btf/vmlinux,
    or a BTF file's path or bytes); with `core_strict` a relocation the
    target cannot satisfy is a CoreRelocationError instead of a poisoned
    instruction (ebpfvm.core_relo)."""
    for argument, limit in (("max_map_bytes", max_map_bytes),
                            ("max_object_map_bytes", max_object_map_bytes)):
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise ArgumentTypeError(argument, limit, "an int")
        if limit <= 0:
            raise ArgumentError(argument, limit, "a positive number of bytes")
    if possible_cpus is not None and (not isinstance(possible_cpus, int)
                                      or isinstance(possible_cpus, bool)
                                      or not 1 <= possible_cpus <= 4096):
        raise ArgumentError("possible_cpus", possible_cpus, "None or an int from 1 to 4096")
    check_core_arguments(core_btf, core_strict)
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else _read(source)
    try:
        loaded = _load(data, _MapLimits(max_map_bytes, MapMemory(max_object_map_bytes)),
                       (core_btf, core_strict))
        if possible_cpus is not None:
            for created in loaded.maps.values():
                if created.kind == "keyed" and cast(Map, created).percpu:
                    cast("PerCpuMap", created).set_possible_cpus(possible_cpus)
        return loaded
    except ElfError:
        raise
    except Exception as exc:  # pyelftools raises many types on corrupt input
        raise ElfError(f"malformed object: {type(exc).__name__}: {exc}") from exc


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ElfError(f"cannot read {os.fspath(path)!r}: {exc.strerror}") from exc


@dataclass(frozen=True)
class _MapLimits:
    """The memory limits of one load: per map, and the object's shared budget."""

    per_map: int
    memory: MapMemory


def _load(data: bytes, limits: _MapLimits,
          core: tuple[CoreTargetSpec, bool] = (None, False)) -> ElfObject:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    if data[:4] != b"\x7fELF":
        raise ElfError("not an ELF file")
    elf = ELFFile(io.BytesIO(data))
    if elf.elfclass != 64 or not elf.little_endian:
        raise ElfError(f"expected a 64-bit little-endian object, not ELF{elf.elfclass} "
                       f"{'LE' if elf.little_endian else 'BE'}")
    if elf["e_machine"] not in ("EM_BPF", EM_BPF):
        raise ElfError(f"machine is {elf['e_machine']}, not EM_BPF")
    symtab = elf.get_section_by_name(".symtab")
    symbols = list(symtab.iter_symbols()) if isinstance(symtab, SymbolTableSection) else []
    sections = dict(_code_sections(elf, symbols))
    result = ElfObject(license=_license(elf))
    global_data = _data_sections(elf, result, limits)
    btf_section = elf.get_section_by_name(".BTF")
    btf = parse_btf(bytes(btf_section.data())) if btf_section is not None else None
    if btf is not None:
        _data_variables(elf, symbols, btf, result)
    result.core_relocations = apply_core(elf, btf, list(sections.values()), *core)
    _link_kconfig(symbols, btf, result, global_data, sections)
    map_symbols = _legacy_maps(elf, symbols, btf, result, limits)
    fill_prog_arrays(elf, symbols, btf, result.maps)
    text = next((s for s in sections.values() if s.name == TEXT), None)
    externs = KsymLinker(symbols)
    for sym in symbols:
        if sym["st_info"]["type"] != "STT_FUNC":
            continue
        if not isinstance(sym["st_shndx"], int):
            raise ElfError(f"function {sym.name!r} is in no section (extern functions "
                           "and kfuncs are not supported)")
        section = sections.get(sym["st_shndx"])
        if section is None or section.name == TEXT:
            continue
        try:  # a program using what ebpfvm lacks is a problem, not a failed load
            program = _link(section, sym, text, sections, global_data, map_symbols, externs)
            found = prog_type_for_section(section.name)
            problem = check_program(program, result.unsupported_maps,
                                    found.name if found is not None else None)
        except LinkError as error:
            problem = error
        if problem is not None:
            result.problems[sym.name] = problem
        else:
            result.programs.append(program)
    return result


MAP_DEF = struct.Struct("<5I")
"""struct bpf_map_def: type, key_size, value_size, max_entries, map_flags."""


def _legacy_maps(elf: Any, symbols: list[Any], btf: Btf | None, result: ElfObject,
                 limits: _MapLimits) -> dict[str, AnyMap | BpfMap]:
    """Maps defined in the legacy ``maps`` section, by symbol name."""
    found: dict[str, AnyMap | BpfMap] = {}
    for index, section in enumerate(elf.iter_sections()):
        if section.name == ".maps":
            found.update(_btf_maps(btf, result, limits))
            continue
        if section.name != "maps":
            continue
        content = bytes(section.data())
        for sym in symbols:
            if sym["st_shndx"] != index or sym["st_info"]["type"] not in ("STT_OBJECT",
                                                                         "STT_NOTYPE"):
                continue
            start = sym["st_value"]
            if start + MAP_DEF.size > len(content):
                raise ElfError(f"map {sym.name!r} is cut short", section.name)
            fields = dict(zip(("type", "key_size", "value_size", "max_entries", "map_flags"),
                              MAP_DEF.unpack_from(content, start), strict=True))
            placeholder = unsupported_map(sym.name, fields)
            if placeholder is not None:
                found[sym.name] = result.unsupported_maps[sym.name] = placeholder
                continue
            try:
                created = create_map(sym.name, *MAP_DEF.unpack_from(content, start),
                                     max_bytes=limits.per_map, memory=limits.memory)
            except MapError as exc:
                raise ElfError(str(exc), section.name) from exc
            created.handle = id(created)
            found[sym.name] = result.maps[sym.name] = created
    return found


def _btf_maps(btf: Btf | None, result: ElfObject,
              limits: _MapLimits) -> dict[str, AnyMap | BpfMap]:
    """Maps defined in ``.maps`` with libbpf's __uint/__type macros, read from BTF:
    ``int (*type)[N]`` gives a number N; ``T *key`` gives sizeof(T)."""
    if btf is None:
        raise ElfError("BTF-defined maps need a .BTF section", ".maps")
    datasec = btf.datasec(".maps")
    if datasec is None:
        raise ElfError("no BTF DATASEC describes .maps", ".maps")
    found: dict[str, AnyMap | BpfMap] = {}
    for _name, var_id, _offset in datasec.items:
        var = btf.get(var_id)
        definition = btf.strip(var.ref)
        fields: dict[str, int] = {}
        codecs: dict[str, Codec] = {}
        inner = _btf_map_fields(btf, definition, fields, codecs)
        placeholder = unsupported_map(var.name, fields, (m for m, _t, _b in definition.items))
        if placeholder is not None:
            found[var.name] = result.unsupported_maps[var.name] = placeholder
            continue
        try:
            created = create_map(var.name, fields.get("type", 0), fields.get("key_size", 0),
                                 fields.get("value_size", 0), fields.get("max_entries", 0),
                                 fields.get("map_flags", 0), max_bytes=limits.per_map,
                                 memory=limits.memory, map_extra=fields.get("map_extra", 0))
        except MapError as exc:
            raise ElfError(str(exc), ".maps") from exc
        created.handle = id(created)
        created.set_btf(codecs.get("key"), codecs.get("value"))
        if inner is not None and isinstance(created, MapOfMaps):  # issue 13: map-in-map
            spec: dict[str, int] = {}
            _btf_map_fields(btf, inner, spec, {})
            created.set_inner(MapSpec(var.name + ".inner", spec.get("type", 0),
                                      spec.get("key_size", 0), spec.get("value_size", 0),
                                      spec.get("max_entries", 0), spec.get("map_flags", 0),
                                      spec.get("map_extra", 0)))
        found[var.name] = result.maps[var.name] = created
    return found


def _btf_map_fields(btf: Btf, definition: Any, fields: dict[str, int],
                    codecs: dict[str, Codec]) -> Any:
    """Read one BTF map definition's numbers into `fields` and its key and
    value codecs into `codecs`; the inner map's definition (a struct type)
    of ``__array(values, struct inner)``, or None."""
    inner = None
    for member, member_type, _bits in definition.items:
        stripped = btf.strip(member_type)
        if member == "values" and stripped.kind is BtfKind.ARRAY and stripped.array is not None:
            element = btf.strip(stripped.array[0])
            target = btf.strip(element.ref) if element.kind is BtfKind.PTR else None
            if target is not None and target.kind is BtfKind.STRUCT:
                inner = target
                fields.setdefault("value_size", 4)  # an inner map fd, as libbpf sets it
            elif is_program_values(btf, stripped.array[0]):
                fields.setdefault("value_size", 4)  # a program fd (slots: mapslots.py)
            continue
        pointee = btf.strip(stripped.ref) if stripped.kind is BtfKind.PTR else None
        if pointee is None:
            continue
        if member in ("key", "value"):
            fields[f"{member}_size"] = btf.size(pointee.id)
            codecs[member] = Codec(btf, pointee.id, role=member)
        elif pointee.kind is BtfKind.ARRAY and pointee.array is not None:
            fields[member] = pointee.array[2]
    return inner


def _data_sections(elf: Any, result: ElfObject,
                   limits: _MapLimits) -> dict[int, tuple[str, int, int]]:
    """Global-data sections as pinned bytearrays: section index -> (name, address,
    size). Each counts against the object's map memory before it is allocated."""
    found: dict[int, tuple[str, int, int]] = {}
    for index, section in enumerate(elf.iter_sections()):
        name = section.name
        if not name.startswith(DATA_PREFIXES) or not section["sh_flags"] & SHF_ALLOC:
            continue
        size = section["sh_size"]
        if size > MAX_VALUE_SIZE:  # it becomes one map value, as in libbpf
            raise ElfError(f"section of {size} bytes exceeds the largest map value "
                           f"({MAX_VALUE_SIZE})", name)
        try:
            limits.memory.charge(name, max(size, 1))
        except MapError as exc:
            raise ElfError(str(exc), name) from exc
        if section["sh_type"] == "SHT_NOBITS":
            content = bytearray(size)
        else:
            content = bytearray(section.data())
            if len(content) != size:
                raise ElfError(f"section data is {count_of(len(content), 'byte')}, "
                               f"header says {size}", name)
        # An empty section gets one byte so that it still has an address.
        buffer = content if content else bytearray(1)
        result.data[name] = buffer
        result._pins.append(memoryview(buffer))  # no resize while programs point into it
        found[index] = (name, address_of(buffer), size)
        # As libbpf does: each section is also a single-element array map.
        flags = MapFlag.RDONLY_PROG if name.startswith(".rodata") else 0
        result.maps[name] = result._globals[name] = Map(name, MapType.ARRAY, 4, len(buffer), 1,
                                                        flags, slab=buffer)
    return found


KCONFIG_KEY = -2
"""The data key of the ``.kconfig`` externs' section (no ELF section has it)."""


def _link_kconfig(symbols: list[Any], btf: Btf | None, result: ElfObject,
                  data: dict[int, tuple[str, int, int]], sections: dict[int, _Section]) -> None:
    """Give the object's .kconfig externs a frozen section (ebpfvm.externs)
    and point the relocations against them into it."""

    def add(name: str, buffer: bytearray) -> tuple[int, Map]:
        result.data[name] = buffer
        result._pins.append(memoryview(buffer))
        data[KCONFIG_KEY] = (name, address_of(buffer), len(buffer))
        made = Map(name, MapType.ARRAY, 4, len(buffer), 1, MapFlag.RDONLY_PROG, slab=buffer)
        result.maps[name] = result._globals[name] = made
        return KCONFIG_KEY, made

    externs = kconfig_externs(symbols, btf, add)
    for section in sections.values():
        for pc, (kind, name, _value, shndx) in list(section.relocations.items()):
            if shndx == -1 and name in externs:
                key, offset = externs[name]
                section.relocations[pc] = (kind, name, offset, key)


def _data_variables(elf: Any, symbols: list[Any], btf: Btf, result: ElfObject) -> None:
    """Name the variables of each global-data section from its BTF DATASEC.
    clang leaves the DATASEC's offsets to the loader (libbpf takes them from
    the symbol table), so each variable's offset is its symbol's value."""
    sections = [s.name for s in elf.iter_sections()]
    offsets = {(sections[sym["st_shndx"]], sym.name): sym["st_value"] for sym in symbols
               if isinstance(sym["st_shndx"], int) and sym["st_shndx"] < len(sections)}
    for name, buffer in result.data.items():
        datasec = btf.datasec(name)
        found = result._globals.get(name)
        if datasec is None or found is None:
            continue
        for _, var_id, _offset in datasec.items:
            var = btf.get(var_id)
            offset = offsets.get((name, var.name))
            if var.kind is not BtfKind.VAR or offset is None:
                continue
            codec = Codec(btf, var.ref, role=var.name)
            if offset + codec.size > len(buffer):
                raise ElfError(f"variable {var.name!r} lies past the end of its section", name)
            found.variables[var.name] = (offset, codec)


def _license(elf: Any) -> str | None:
    section = elf.get_section_by_name("license")
    if section is None:
        return None
    return bytes(section.data()).split(b"\0", 1)[0].decode("ascii", "replace")


def _code_sections(elf: Any, symbols: list[Any]) -> Iterator[tuple[int, _Section]]:
    relocs: dict[int, Any] = {}
    for section in elf.iter_sections():
        if section["sh_type"] == "SHT_REL":
            relocs[section["sh_info"]] = section
    for index, section in enumerate(elf.iter_sections()):
        if section["sh_type"] != "SHT_PROGBITS" or not section["sh_flags"] & SHF_EXECINSTR:
            continue
        code = bytes(section.data())
        if len(code) % SLOT:
            raise ElfError(f"code size {len(code)} is not a multiple of {SLOT}", section.name)
        table: dict[int, tuple[int, str, int, int]] = {}
        if index in relocs:
            for reloc in relocs[index].iter_relocations():
                sym_index = reloc["r_info_sym"]
                if sym_index >= len(symbols):
                    raise ElfError(f"relocation symbol {sym_index} is out of range", section.name)
                sym = symbols[sym_index]
                offset = reloc["r_offset"]
                if offset % SLOT or offset >= len(code):
                    raise ElfError(f"relocation offset {offset} is not an instruction",
                                   section.name)
                shndx = sym["st_shndx"] if isinstance(sym["st_shndx"], int) else -1
                table[offset // SLOT] = (reloc["r_info_type"], sym.name, sym["st_value"], shndx)
        yield index, _Section(index, section.name, code, table)


def _function_slice(section: _Section, sym: Any) -> bytes:
    start, size = sym["st_value"], sym["st_size"] or len(section.data) - sym["st_value"]
    if start % SLOT or size % SLOT or start + size > len(section.data):
        raise ElfError(f"function {sym.name!r} lies outside its section", section.name)
    return section.data[start : start + size]


def _link(section: _Section, sym: Any, text: _Section | None,
          sections: dict[int, _Section], data: dict[int, tuple[str, int, int]],
          maps: dict[str, AnyMap | BpfMap], externs: KsymLinker) -> Program:
    """The function's code, with .text appended when it calls into it."""
    start = sym["st_value"] // SLOT
    code = bytearray(_function_slice(section, sym))
    own = {start + i: i for i in range(len(code) // SLOT)}  # section index -> program index
    text_base: int | None = None
    used_data: set[str] = set()
    used_maps: set[str] = set()
    relocations: list[tuple[int, str, str, int]] = []
    pending = [(i, section, section_index) for section_index, i in own.items()]
    while pending:
        pc, where, index_in_section = pending.pop()
        reloc = where.relocations.get(index_in_section)
        if reloc is None:
            continue
        kind, target_name, value, shndx = reloc
        opcode, regs, _off, imm = SLOT_LAYOUT.unpack_from(code, pc * SLOT)
        row = find_row(opcode, regs >> 4, _off, imm)
        if shndx == -1:  # an undefined symbol: a .ksyms extern (ebpfvm.ksyms)
            externs.link(code, pc, kind, target_name, (sym.name, where.name, index_in_section))
            continue
        if kind == R_BPF_64_64:
            if row is None or row.form is not Form.LDDW or pc + 1 >= len(code) // SLOT:
                raise ElfError(f"R_BPF_64_64 at instruction {index_in_section} is not on an "
                               "lddw", where.name)
            if target_name in maps and shndx not in data:
                handle = maps[target_name].handle
                code[pc * SLOT : (pc + 2) * SLOT] = lddw_slots(regs & 0xF, 0, handle)
                used_maps.add(target_name)
                relocations.append((pc, "map", target_name, 0))
                continue
            if shndx in sections and shndx not in data:  # a callback (BPF_PSEUDO_FUNC)
                function, text_base, pending = _callback(
                    (pc, where, index_in_section), reloc, imm, (section, own, text),
                    code, text_base, pending)
                code[pc * SLOT : (pc + 2) * SLOT] = lddw_slots(
                    regs & 0xF, PSEUDO_FUNC, branch_delta(pc, function))
                continue
            if shndx not in data:
                raise ElfError(f"lddw of {target_name!r}, which is neither a map nor "
                               "global data", where.name)
            data_name, address, size = data[shndx]
            offset = value + imm
            if not 0 <= offset <= size:
                raise ElfError(f"lddw of {target_name!r} points {count_of(offset, 'byte')} into "
                               f"{data_name}, which has {size}", where.name)
            code[pc * SLOT : (pc + 2) * SLOT] = lddw_slots(regs & 0xF, 0, address + offset)
            used_data.add(data_name)
            relocations.append((pc, "data", data_name, offset))
            continue
        if kind != R_BPF_64_32 or row is None or row.form is not Form.CALL_LOCAL:
            raise UnsupportedRelocation(kind, target_name, index_in_section, "not an lddw of "
                                        "a map, data or function, nor a local call",
                                        sym.name, where.name)
        target_section = sections.get(shndx)
        if target_section is None:
            raise ElfError(f"call to {target_name!r}, which is in no code section", where.name)
        target = relative_target(value // SLOT, imm)
        if not 0 <= target < len(target_section.data) // SLOT:
            raise ElfError(f"call target {target} outside section '{target_section.name}'",
                           where.name)
        if target_section is section and target in own:
            base_pc = own[target]
        elif text is not None and target_section is text:
            if text_base is None:
                text_base = len(code) // SLOT
                code += text.data
                pending += [(text_base + i, text, i) for i in range(len(text.data) // SLOT)]
            base_pc = text_base + target
        else:
            raise ElfError(f"call to {target_name!r} in section '{target_section.name}', "
                           "outside the program", where.name)
        struct.pack_into("<i", code, pc * SLOT + 4, branch_delta(pc, base_pc))
    subprograms = (TEXT,) if text_base is not None else ()
    helpers = sorted({number for _pc, number in helper_calls(bytes(code))})
    return Program(sym.name, section.name, bytes(code), subprograms, tuple(sorted(used_data)),
                   tuple(sorted(used_maps)), tuple(helpers), tuple(sorted(relocations)))


_Pending = list[tuple[int, _Section, int]]


def _callback(at: tuple[int, _Section, int], reloc: tuple[int, str, int, int], imm: int,
              program: tuple[_Section, dict[int, int], _Section | None], code: bytearray,
              text_base: int | None, pending: _Pending) -> tuple[int, int | None, _Pending]:
    """Where the function an lddw at `at` (pc, section, index there) refers
    to starts in the linked program: its byte offset is the symbol's value
    plus the lddw's imm (a section symbol with an addend, or a function
    symbol). A function in .text appends .text after the program, as a
    local call does. Returns (its pc, text_base, pending)."""
    _pc, where, index_in_section = at
    _kind, target_name, value, shndx = reloc
    section, own, text = program
    offset = value + imm
    if offset % SLOT:
        raise ElfError(f"lddw of {target_name!r} + {imm} is not an instruction boundary",
                       where.name)
    target = offset // SLOT
    if section.index == shndx and target in own:
        return own[target], text_base, pending
    if text is None or text.index != shndx:
        raise ElfError(f"lddw of function {target_name!r} at instruction {index_in_section}, "
                       "outside the program and .text", where.name)
    if not 0 <= target < len(text.data) // SLOT:
        raise ElfError(f"callback {target_name!r} + {imm} lies outside .text", where.name)
    if text_base is None:
        text_base = len(code) // SLOT
        code += text.data
        pending = pending + [(text_base + i, text, i) for i in range(len(text.data) // SLOT)]
    return text_base + target, text_base, pending
