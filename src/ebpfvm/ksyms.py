"""``.ksyms`` externs: kernel variables and kfuncs, resolved as libbpf
resolves them against a kernel that has, or lacks, each one.

A program declares ``extern const void bpf_prog_active __ksym __weak;`` (a
kernel variable) or ``extern int bpf_xdp_metadata_rx_hash(...) __ksym;`` (a
kfunc, a kernel function called with ``call``; clang leaves an R_BPF_64_32
relocation against the undefined symbol). ebpfvm has no kernel, so:

- a ``__weak`` kernel variable is NULL, as libbpf makes a weak ksym the
  kernel lacks (``bpf_ksym_exists(&sym)`` is false); one that is not weak is
  an :class:`~ebpfvm.linkerrors.UnsupportedExtern` (kind "ksym");
- the kfuncs of :data:`KFUNCS` run: the XDP metadata kfuncs return
  -EOPNOTSUPP and leave their out-arguments alone, as the kernel's generic
  versions do on a device without metadata support (the kernel takes them
  only in a program bound to a device, which the loader asks for, not the
  object; ebpfvm runs them as on such a device); ``bpf_ksym_exists(kfunc)``
  is true;
- any other kfunc is an UnsupportedExtern (kind "kfunc") when it is not weak;
  a weak one makes ``bpf_ksym_exists`` false, and a call to it that a run
  reaches is a HelperFault (libbpf poisons the call the same way and the
  kernel's verifier refuses it when it is reachable).

The linker (ebpfvm.elf) rewrites a kfunc call into a helper call (src 0) of
number ``KFUNC_BASE + i``, above every kernel helper number (RFC 9669 section
4.3.1: helper calls are by number), and ebpfvm.objects registers the kfuncs
a program calls. A kfunc called by a program type its row does not name is
refused when the program is linked (ebpfvm.linkcheck), as the kernel's
verifier refuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .encoding import SLOT, SLOT_LAYOUT, lddw_slots
from .helpers import Helper
from .isa import OPS, Form
from .linkerrors import UnsupportedExtern, UnsupportedRelocation

__all__ = ["KFUNCS", "KFUNC_ABSENT", "KFUNC_BASE", "Kfunc", "KsymLinker", "kfunc_helpers",
           "kfunc_of"]

KFUNC_BASE = 0x10000
"""The helper number of the first kfunc of :data:`KFUNCS` (kernel helpers stay below)."""
KFUNC_ABSENT = KFUNC_BASE - 1
"""The helper number a call to an absent weak kfunc becomes: none is registered."""
EOPNOTSUPP = 95
_U64 = (1 << 64) - 1
R_BPF_64_64 = 1
R_BPF_64_32 = 10
CALL = next(row.opcode for row in OPS if row.form is Form.CALL)


def _not_supported(*_args: int) -> int:
    """-EOPNOTSUPP: the device has no such metadata."""
    return -EOPNOTSUPP & _U64


@dataclass(frozen=True)
class Kfunc:
    """A kfunc ebpfvm runs: its kernel name, the program types that may call it, its function."""

    name: str
    prog_types: frozenset[str]
    fn: Callable[..., int]

    @property
    def number(self) -> int:
        """The helper number its calls become."""
        return KFUNC_BASE + KFUNCS.index(self)


_XDP = frozenset({"xdp"})
KFUNCS: tuple[Kfunc, ...] = (
    Kfunc("bpf_xdp_metadata_rx_timestamp", _XDP, _not_supported),
    Kfunc("bpf_xdp_metadata_rx_hash", _XDP, _not_supported),
    Kfunc("bpf_xdp_metadata_rx_vlan_tag", _XDP, _not_supported),
)
"""The kfuncs ebpfvm implements."""
_BY_NAME = {kfunc.name: kfunc for kfunc in KFUNCS}


def kfunc_of(number: int) -> Kfunc | None:
    """The kfunc whose calls became helper `number`, or None."""
    index = number - KFUNC_BASE
    return KFUNCS[index] if 0 <= index < len(KFUNCS) else None


def kfunc_helpers(numbers: Iterable[int]) -> dict[int, Helper]:
    """The helpers to register for a program calling helpers `numbers`: its kfuncs."""
    found = (kfunc_of(number) for number in numbers)
    return {kfunc.number: Helper(kfunc.fn, kfunc.name) for kfunc in found if kfunc is not None}


class KsymLinker:
    """Resolves the relocations against the object's undefined symbols that
    are not ``.kconfig`` externs: its ``.ksyms`` variables and kfuncs."""

    def __init__(self, symbols: list[Any]) -> None:
        self.weak = {sym.name for sym in symbols
                     if sym["st_shndx"] == "SHN_UNDEF" and sym["st_info"]["bind"] == "STB_WEAK"}

    def link(self, code: bytearray, pc: int, kind: int, name: str, where: tuple[str, str, int]
             ) -> None:
        """Rewrite the instruction at `pc` of `code` relocated (type `kind`)
        against extern `name`; `where` is (program, section, index of the
        instruction in its section), for the errors."""
        program, section, insn = where
        opcode, regs, _off, _imm = SLOT_LAYOUT.unpack_from(code, pc * SLOT)
        kfunc = _BY_NAME.get(name)
        weak = name in self.weak
        if kind == R_BPF_64_32 and opcode == CALL:
            if kfunc is None and not weak:
                raise UnsupportedExtern(name, "kfunc", pc, "ebpfvm does not implement this "
                                        "kfunc (declare it __weak to test bpf_ksym_exists)",
                                        program, section)
            number = kfunc.number if kfunc is not None else KFUNC_ABSENT
            SLOT_LAYOUT.pack_into(code, pc * SLOT, CALL, 0, 0, number)
            return
        if kind == R_BPF_64_64 and (pc + 1) * SLOT < len(code):
            if kfunc is None and not weak:
                raise UnsupportedExtern(name, "ksym", pc, "ebpfvm has no kernel symbols "
                                        "(declare it __weak for NULL)", program, section)
            value = kfunc.number if kfunc is not None else 0
            code[pc * SLOT : (pc + 2) * SLOT] = lddw_slots(regs & 0xF, 0, value)
            return
        raise UnsupportedRelocation(kind, name, insn, "not a call or lddw of an extern",
                                    program, section)
