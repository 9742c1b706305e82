"""Redirect maps: devmap, devmap_hash, cpumap and xskmap, the targets of
bpf_redirect_map (RFC 9669 section 5.3: helper calls take maps by handle).

One class serves the family: 4-byte keys, and values that hold an ifindex
(devmap, with an optional program fd: 4 or 8 bytes), a queue size (cpumap:
4 or 8 bytes) or a socket (xskmap: 4 bytes). ebpfvm sends no packet
anywhere: a slot that is set makes bpf_redirect_map return XDP_REDIRECT and
the run's result name the target. From Python: ``ports[b"\\0\\0\\0\\0"] =
(2).to_bytes(4, "little")``, or with int keys and values through
:meth:`RedirectMap.set`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, MutableMapping
from typing import Any

from .errors import ArrayIndexError, MapError, MapFull
from .mapbase import BpfMap, MapSpec, as_bytes, as_int, check_size, register

__all__ = ["REDIRECT_MAP_TYPES", "RedirectMap"]

DEVMAP, CPUMAP, XSKMAP, DEVMAP_HASH = 14, 16, 17, 25
REDIRECT_MAP_TYPES = {DEVMAP: "devmap", DEVMAP_HASH: "devmap_hash", CPUMAP: "cpumap",
                      XSKMAP: "xskmap"}
"""The kernel's redirect map type numbers and names."""
_VALUE_SIZES = {DEVMAP: (4, 8), DEVMAP_HASH: (4, 8), CPUMAP: (4, 8), XSKMAP: (4,)}
SLOT_BYTES = 64
"""What one set slot counts for (the kernel keeps a device or queue per slot)."""


class RedirectMap(BpfMap, MutableMapping[bytes, bytes]):
    """A devmap, devmap_hash, cpumap or xskmap: 4-byte key -> value. Array
    kinds take keys below max_entries; devmap_hash any key, up to
    max_entries of them."""

    kind = "redirect"

    @classmethod
    def check_shape(cls, spec: MapSpec) -> None:
        """4-byte keys; values of the sizes the kernel takes for the type."""
        sizes = _VALUE_SIZES[spec.type]
        if spec.key_size != 4 or spec.value_size not in sizes or spec.max_entries <= 0:
            raise MapError(f"map {spec.name!r}: a {REDIRECT_MAP_TYPES[spec.type]} has 4-byte "
                           f"keys, values of {' or '.join(map(str, sizes))} bytes and "
                           "at least one entry")

    @classmethod
    def memory_bytes(cls, spec: MapSpec) -> int:
        """A slot (with the device or queue it names) per entry."""
        return (SLOT_BYTES + spec.value_size) * spec.max_entries

    @classmethod
    def create(cls, spec: MapSpec, max_bytes: int) -> RedirectMap:
        """A new redirect map."""
        cls.check_shape(spec)
        check_size(spec.name, spec.type, spec.key_size, spec.value_size, spec.max_entries,
                   max_bytes)
        return cls(spec.name, spec.type, spec.value_size, spec.max_entries, spec.flags)

    def __init__(self, name: str, map_type: int, value_size: int = 4, max_entries: int = 1,
                 flags: int = 0) -> None:
        if map_type not in REDIRECT_MAP_TYPES:
            raise MapError(f"map {name!r}: map type {map_type} is not a redirect map")
        self._init_shape(name, map_type, 4, value_size, max_entries, flags)
        self.handle = 0
        self.slots: dict[int, bytes] = {}

    @property
    def hashed(self) -> bool:
        """Whether keys are hashed (devmap_hash) rather than indexes."""
        return self.type == DEVMAP_HASH

    def describe(self) -> str:
        """Name, type, sizes and limit."""
        return (f"{self.name}: {REDIRECT_MAP_TYPES[self.type]}, key 4 bytes, value "
                f"{self.value_size} bytes, max_entries {self.max_entries}")

    def entries_text(self, limit: int) -> list[str]:
        """``key -> value`` lines (little-endian ints)."""
        from .mapview import more

        lines = [f"{key} -> {int.from_bytes(value, 'little')}"
                 for key, value in sorted(self.slots.items())[:limit]]
        return more(lines, len(self.slots))

    def preload_entry(self, key: Any, value: Any, _programs: Collection[str] | None) -> None:
        """An int key and an int value (ifindex, queue size)."""
        if not isinstance(key, int) or not isinstance(value, int):
            raise MapError(f"map {self.name}: a {REDIRECT_MAP_TYPES[self.type]} maps an int "
                           "key to an int value")
        self.set(key, value)

    def _index(self, key: bytes) -> int:
        raw = as_bytes(self.name, "key", key)
        if len(raw) != 4:
            raise MapError(f"map {self.name!r}: keys are 4 bytes, not {len(raw)}")
        return int.from_bytes(raw, "little")

    def set(self, key: int, value: int) -> None:
        """Set slot `key` to the int `value` (an ifindex, a queue size)."""
        key = as_int(self.name, "key", key)
        value = as_int(self.name, "value", value)
        self[(key & 0xFFFF_FFFF).to_bytes(4, "little")] = (
            (value & 0xFFFF_FFFF).to_bytes(4, "little").ljust(self.value_size, b"\0"))

    def program_lookup(self, key: bytes) -> int:
        """bpf_map_lookup_elem from a program: NULL (0) for an empty slot, as
        in the kernel. A set slot holds a kernel object (a device's entry, an
        AF_XDP socket) ebpfvm does not model: a MapError says so."""
        index = self._index(key)
        if index not in self.slots:
            return 0
        raise MapError(f"map {self.name!r}: slot {index} is set and ebpfvm has no "
                       f"{REDIRECT_MAP_TYPES[self.type]} entry to point a program at")

    def __getitem__(self, key: bytes) -> bytes:
        return self.slots[self._index(key)]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        index = self._index(key)
        raw = as_bytes(self.name, "value", value)
        if len(raw) != self.value_size:
            raise MapError(f"map {self.name!r}: values are {self.value_size} bytes, "
                           f"not {len(raw)}")
        if not self.hashed and index >= self.max_entries:
            raise ArrayIndexError(self.name, index, self.max_entries)
        if self.hashed and index not in self.slots and len(self.slots) >= self.max_entries:
            raise MapFull(self.name, self.max_entries)
        self.slots[index] = raw

    def __delitem__(self, key: bytes) -> None:
        del self.slots[self._index(key)]

    def __iter__(self) -> Iterator[bytes]:
        return (index.to_bytes(4, "little") for index in sorted(self.slots))

    def __len__(self) -> int:
        return len(self.slots)

    def __repr__(self) -> str:
        return (f"RedirectMap({self.name!r}, {REDIRECT_MAP_TYPES[self.type]}, "
                f"max_entries={self.max_entries})")


for _number in REDIRECT_MAP_TYPES:
    register(_number, RedirectMap)
