"""``.kconfig`` externs: the kernel configuration values libbpf gives programs.

A program declares ``extern unsigned int LINUX_KERNEL_VERSION __kconfig;``
and reads it; libbpf puts the values in a read-only ``.kconfig`` map and
points the program's loads at it. ebpfvm does the same with documented
values (:data:`KCONFIG`), so such programs load and run the same everywhere:
the object gets a frozen ``.kconfig`` global-data section (8 bytes per
extern, little-endian, so a load of any width up to 8 reads the value), and
``obj.globals["CONFIG_HZ"]`` shows it. An unknown extern is 0 when declared
``__weak`` (as libbpf does), else an ElfError naming it. ``.ksyms`` externs
(kernel symbols and kfuncs) are ebpfvm.ksyms's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .btf import Btf, Codec
from .errors import ElfError

__all__ = ["KCONFIG", "KERNEL_VERSION", "kconfig_externs"]

KERNEL_VERSION = (6 << 16) | (18 << 8)
"""LINUX_KERNEL_VERSION: KERNEL_VERSION(6, 18, 0), the corpus's reference kernel."""
KCONFIG: dict[str, int] = {
    "LINUX_KERNEL_VERSION": KERNEL_VERSION,
    "LINUX_HAS_BPF_COOKIE": 1,
    "LINUX_HAS_SYSCALL_WRAPPER": 1,
    "CONFIG_HZ": 250,
    "CONFIG_BPF_SYSCALL": 1,
    "CONFIG_BPF_JIT": 1,
    "CONFIG_NET": 1,
    "CONFIG_INET": 1,
    "CONFIG_IPV6": 1,
    "CONFIG_XDP_SOCKETS": 1,
    "CONFIG_NR_CPUS": 2,
    "CONFIG_PAGE_SIZE": 4096,
    "CONFIG_X86_64": 1,
}
"""The values of the ``.kconfig`` externs ebpfvm knows (tristates and bools:
1 for "y"). CONFIG_HZ matches KernelEnv's default hz; CONFIG_NR_CPUS the
per-CPU maps' default possible CPUs."""
SLOT_BYTES = 8


def _kconfig_names(symbols: list[Any], btf: Btf | None) -> list[Any]:
    """The undefined symbols that are .kconfig externs (by the BTF DATASEC
    when there is one, else by libbpf's CONFIG_/LINUX_ prefixes)."""
    datasec = btf.datasec(".kconfig") if btf is not None else None
    declared = {btf.get(var_id).name for _, var_id, _ in datasec.items} \
        if datasec is not None and btf is not None else None
    found = []
    for sym in symbols:
        if sym["st_shndx"] != "SHN_UNDEF" or not sym.name:
            continue
        if sym["st_info"]["type"] not in ("STT_NOTYPE", "STT_OBJECT"):
            continue
        known = sym.name in declared if declared is not None else \
            sym.name.startswith(("CONFIG_", "LINUX_"))
        if known:
            found.append(sym)
    return found


def kconfig_externs(symbols: list[Any], btf: Btf | None,
                    add_section: Callable[[str, bytearray], tuple[int, Any]]
                    ) -> dict[str, tuple[int, int]]:
    """Build the ``.kconfig`` section for the object's kconfig externs:
    `add_section(name, buffer)` registers it as global data and returns
    (its data key, its map); the result maps each extern to (data key,
    offset), for the linker's R_BPF_64_64 relocations."""
    externs = _kconfig_names(symbols, btf)
    if not externs:
        return {}
    buffer = bytearray(SLOT_BYTES * len(externs))
    offsets: dict[str, int] = {}
    for number, sym in enumerate(externs):
        value = KCONFIG.get(sym.name)
        if value is None:
            if sym["st_info"]["bind"] != "STB_WEAK":
                raise ElfError(f"unknown kconfig extern {sym.name!r} (known: "
                               f"{', '.join(sorted(KCONFIG))}; declare it __weak for 0)",
                               ".kconfig")
            value = 0
        offsets[sym.name] = number * SLOT_BYTES
        buffer[number * SLOT_BYTES : (number + 1) * SLOT_BYTES] = value.to_bytes(SLOT_BYTES,
                                                                                  "little")
    key, made = add_section(".kconfig", buffer)
    datasec = btf.datasec(".kconfig") if btf is not None else None
    if btf is not None and datasec is not None:
        for _, var_id, _ in datasec.items:
            var = btf.get(var_id)
            if var.name in offsets:
                made.variables[var.name] = (offsets[var.name], Codec(btf, var.ref, role=var.name))
    made.frozen = True
    return {name: (key, offset) for name, offset in offsets.items()}
