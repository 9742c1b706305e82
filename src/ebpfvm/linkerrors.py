"""Typed errors for a program that uses something ebpfvm lacks, or that the
kernel would refuse: a helper, a map type, a relocation, an extern (a
``.ksyms`` variable or a kfunc).

``ebpfvm.load`` does not raise them: it loads the object and records each
program's problem (``ElfObject.problems``); getting or building that program
(``obj.program(name)``, ``obj.vm``, ``obj.xdp``, ``obj.skb``) raises it, and
``ebpfvm verify`` reports it. Each is an :class:`~ebpfvm.errors.ElfError`
with structured fields::

    ElfError(section)
    └── LinkError(program, section)
        ├── UnsupportedHelper(helper_id, helper_name, pc, why)
        ├── HelperNotAllowed(helper_id, helper_name, prog_type, pc)
        ├── UnsupportedMapType(map_name, map_type, type_name)
        │   └── UnsupportedMapAttribute(attribute)
        ├── UnsupportedRelocation(reloc_type, type_name, symbol, insn)
        └── UnsupportedExtern(extern, kind, pc, why)
"""

from __future__ import annotations

from .errors import ElfError

__all__ = ["HelperNotAllowed", "LinkError", "UnsupportedExtern", "UnsupportedHelper",
           "UnsupportedMapAttribute", "UnsupportedMapType", "UnsupportedRelocation",
           "map_type_name"]

MAP_TYPE_NAMES = (
    "UNSPEC", "HASH", "ARRAY", "PROG_ARRAY", "PERF_EVENT_ARRAY", "PERCPU_HASH",
    "PERCPU_ARRAY", "STACK_TRACE", "CGROUP_ARRAY", "LRU_HASH", "LRU_PERCPU_HASH",
    "LPM_TRIE", "ARRAY_OF_MAPS", "HASH_OF_MAPS", "DEVMAP", "SOCKMAP", "CPUMAP", "XSKMAP",
    "SOCKHASH", "CGROUP_STORAGE", "REUSEPORT_SOCKARRAY", "PERCPU_CGROUP_STORAGE", "QUEUE",
    "STACK", "SK_STORAGE", "DEVMAP_HASH", "STRUCT_OPS", "RINGBUF", "INODE_STORAGE",
    "TASK_STORAGE", "BLOOM_FILTER", "USER_RINGBUF", "CGRP_STORAGE", "ARENA",
)
"""enum bpf_map_type (linux/bpf.h), by number, without the BPF_MAP_TYPE_ prefix."""

RELOCATION_NAMES = {0: "R_BPF_NONE", 1: "R_BPF_64_64", 2: "R_BPF_64_ABS64",
                    3: "R_BPF_64_ABS32", 4: "R_BPF_64_NODYLD32", 10: "R_BPF_64_32"}
"""The BPF ELF relocation types (llvm's BPF backend)."""


def map_type_name(map_type: int) -> str:
    """``BPF_MAP_TYPE_SOCKMAP`` for 15; ``map type N`` for a number the kernel lacks."""
    if 0 <= map_type < len(MAP_TYPE_NAMES):
        return "BPF_MAP_TYPE_" + MAP_TYPE_NAMES[map_type]
    return f"map type {map_type}"


class LinkError(ElfError):
    """A program of the object that cannot be linked or run: `program` is
    its function name ("" when the problem is not one program's), `section`
    its ELF section."""

    def __init__(self, reason: str, program: str = "", section: str | None = None) -> None:
        shown = f"program {program!r}: {reason}" if program else reason
        super().__init__(shown, section)
        self.program = program


class UnsupportedHelper(LinkError):
    """The program calls a kernel helper ebpfvm does not implement (for its
    program type): `helper_id`, `helper_name` (the kernel's), the `pc` of
    the call, and `why` it is missing."""

    def __init__(self, helper_id: int, helper_name: str, pc: int, why: str,
                 program: str = "", section: str | None = None) -> None:
        super().__init__(f"helper {helper_name}#{helper_id} at insn {pc} is not supported "
                         f"({why})", program, section)
        self.helper_id = helper_id
        self.helper_name = helper_name
        self.pc = pc
        self.why = why


class HelperNotAllowed(LinkError):
    """The program calls a helper its program type may not call (the kernel's
    verifier refuses it: "unknown func"): `helper_id`, `helper_name`,
    `prog_type` and the `pc` of the call."""

    def __init__(self, helper_id: int, helper_name: str, prog_type: str, pc: int,
                 program: str = "", section: str | None = None) -> None:
        super().__init__(f"unknown func {helper_name}#{helper_id} at insn {pc}: "
                         f"{prog_type} programs may not call it", program, section)
        self.helper_id = helper_id
        self.helper_name = helper_name
        self.prog_type = prog_type
        self.pc = pc


class UnsupportedMapType(LinkError):
    """The program uses map `map_name`, of a type ebpfvm does not implement:
    `map_type` (the kernel's number) and `type_name` (BPF_MAP_TYPE_...)."""

    def __init__(self, map_name: str, map_type: int, program: str = "",
                 section: str | None = None) -> None:
        self.type_name = map_type_name(map_type)
        super().__init__(f"map {map_name!r} has type {self.type_name} ({map_type}), which is "
                         "not supported", program, section)
        self.map_name = map_name
        self.map_type = map_type


class UnsupportedMapAttribute(UnsupportedMapType):
    """The program uses map `map_name`, whose BTF definition has `attribute`,
    one libbpf does not know (libbpf refuses the object: "unknown field")."""

    def __init__(self, map_name: str, map_type: int, attribute: str, program: str = "",
                 section: str | None = None) -> None:
        super().__init__(map_name, map_type, program, section)
        LinkError.__init__(self, f"map {map_name!r} has attribute {attribute!r}, which libbpf "
                           "does not know", program, section)
        self.attribute = attribute


class UnsupportedRelocation(LinkError):
    """A relocation ebpfvm cannot apply: `reloc_type` (its number),
    `type_name` (R_BPF_...), the `symbol` it names and the instruction
    `insn` (its index in its section)."""

    def __init__(self, reloc_type: int, symbol: str, insn: int, detail: str,
                 program: str = "", section: str | None = None) -> None:
        self.type_name = RELOCATION_NAMES.get(reloc_type, f"relocation type {reloc_type}")
        super().__init__(f"{self.type_name} against {symbol!r} at insn {insn}: {detail}",
                         program, section)
        self.reloc_type = reloc_type
        self.symbol = symbol
        self.insn = insn


class UnsupportedExtern(LinkError):
    """An extern the program uses that ebpfvm cannot resolve: `extern` (its
    name), `kind` ("ksym", a kernel variable, or "kfunc", a kernel function),
    the `pc` using it and `why` it cannot be resolved."""

    def __init__(self, extern: str, kind: str, pc: int, why: str, program: str = "",
                 section: str | None = None) -> None:
        super().__init__(f"{kind} {extern!r} at insn {pc}: {why}", program, section)
        self.extern = extern
        self.kind = kind
        self.pc = pc
        self.why = why
