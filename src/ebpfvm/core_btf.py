"""The target BTF of CO-RE relocations (ebpfvm.core_relo): the types a
program's relocations are resolved against.

By default it is the BTF shipped with the package (``ebpfvm/data/kernel.btf``:
``__sk_buff``, ``xdp_md``, ``bpf_sock`` and the other context types, the
network headers programs read through ``vmlinux.h`` and the enums they use,
taken from a Linux kernel's BTF by ``tools/gen_kernel_btf.py``). ``"host"``
takes the running kernel's ``/sys/kernel/btf/vmlinux``; a path or bytes take
any raw BTF blob (the format of RFC 9669's companion, the kernel's BTF
description: a header, the types, the strings).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources

from .btf import Btf, BtfKind, parse_btf
from .errors import ArgumentTypeError, ElfError

__all__ = ["HOST_BTF", "CoreTarget", "CoreTargetSpec", "check_core_arguments", "essential_name",
           "target_btf"]

HOST_BTF = "/sys/kernel/btf/vmlinux"
"""Where a Linux kernel with CONFIG_DEBUG_INFO_BTF shows its own BTF."""
PACKAGED = "kernel.btf"
"""The package data file of the default target BTF."""

CoreTargetSpec = str | os.PathLike[str] | bytes | bytearray | None
"""What ``load(..., core_btf=...)`` takes: None (the packaged BTF), ``"host"``,
a path to a raw BTF file, or its bytes."""


def check_core_arguments(core_btf: object, core_strict: object) -> None:
    """load()'s CO-RE arguments: ArgumentTypeError for a `core_btf` that is
    not None, a str, a path or bytes, or a `core_strict` that is not a bool."""
    if core_btf is not None and not isinstance(core_btf, (str, os.PathLike, bytes, bytearray)):
        raise ArgumentTypeError("core_btf", core_btf, "None, 'host', a path or bytes")
    if not isinstance(core_strict, bool):
        raise ArgumentTypeError("core_strict", core_strict, "a bool")


def essential_name(name: str) -> str:
    """`name` without its flavor: the part before the last ``___`` that has
    a character other than ``_`` on both sides (``iphdr___mine`` -> ``iphdr``),
    as libbpf matches local types to target types."""
    for start in range(len(name) - 5, -1, -1):
        if (name[start] != "_" and name[start + 1 : start + 4] == "___"
                and name[start + 4] != "_"):
            return name[: start + 1]
    return name


_ENUMS = frozenset({BtfKind.ENUM, BtfKind.ENUM64})


def kind_group(kind: BtfKind) -> BtfKind:
    """The kind CO-RE compares: ENUM and ENUM64 match each other."""
    return BtfKind.ENUM if kind in _ENUMS else kind


@dataclass
class CoreTarget:
    """A target BTF and its types by (kind group, essential name)."""

    btf: Btf
    source: str
    _index: dict[tuple[BtfKind, str], list[int]] | None = field(default=None, repr=False)

    def candidates(self, kind: BtfKind, name: str) -> list[int]:
        """Ids of the named types of `kind`'s group whose essential name is
        `name`'s, in id order."""
        if self._index is None:
            index: dict[tuple[BtfKind, str], list[int]] = {}
            for found in self.btf.types[1:]:
                if found.name:
                    key = (kind_group(found.kind), essential_name(found.name))
                    index.setdefault(key, []).append(found.id)
            self._index = index
        return self._index.get((kind_group(kind), essential_name(name)), [])


_CACHE: dict[str, CoreTarget] = {}


def target_btf(spec: CoreTargetSpec) -> CoreTarget:
    """The CoreTarget for `spec` (see CoreTargetSpec); files are parsed once
    and cached by path. ElfError naming ``core_btf`` when it cannot be read."""
    if isinstance(spec, (bytes, bytearray)):
        return CoreTarget(_parse(bytes(spec), "<bytes>"), "<bytes>")
    if spec is None:
        key = "package:" + PACKAGED
        if key not in _CACHE:
            data = resources.files("ebpfvm").joinpath("data").joinpath(PACKAGED).read_bytes()
            _CACHE[key] = CoreTarget(_parse(data, key), key)
        return _CACHE[key]
    path = HOST_BTF if spec == "host" else os.fspath(spec)
    if path not in _CACHE:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ElfError(f"cannot read target BTF {path!r}: {exc.strerror}",
                           "core_btf") from exc
        _CACHE[path] = CoreTarget(_parse(data, path), path)
    return _CACHE[path]


def _parse(data: bytes, source: str) -> Btf:
    try:
        return parse_btf(data)
    except ElfError as exc:
        raise ElfError(f"target BTF {source}: {exc.reason}", "core_btf") from exc
