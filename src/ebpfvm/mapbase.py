"""What every map shares: the base class, the registry by map type, limits.

A map class derives from :class:`BpfMap` and declares what the rest of
ebpfvm asks of a map: :meth:`~BpfMap.check_shape` and
:meth:`~BpfMap.memory_bytes` (create_map), :meth:`~BpfMap.create`,
:meth:`~BpfMap.describe` and :meth:`~BpfMap.entries_text` (the maps view),
:meth:`~BpfMap.preload_entry` (the CLI's ``--map``), :meth:`~BpfMap.set_btf`
(the BTF loader) and `kind` (which map helpers take it). :func:`register`
makes it the class of one or more kernel map type numbers; ebpfvm.maps
registers the kernel's types.

To add a map type: write the class, then ``register(number, TheClass)``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

from .errors import MapError, ResourceLimit

__all__ = ["MAP_CLASSES", "MAX_KEY_SIZE", "MAX_MAP_BYTES", "MAX_OBJECT_MAP_BYTES",
           "MAX_VALUE_SIZE", "BpfMap", "MapMemory", "MapSpec", "MapTooLarge", "MapType", "map_bytes",
           "map_class", "register"]

MAX_VALUE_SIZE = 4 << 20
"""The largest map value (and global-data section): the kernel refuses array
and hash values above KMALLOC_MAX_SIZE, 4 MiB on x86-64, with E2BIG."""
MAX_KEY_SIZE = 512
"""The largest hash-map key: the kernel refuses keys above MAX_BPF_STACK (a
program builds its keys on its 512-byte stack) with E2BIG."""
MAX_MAP_BYTES = 256 << 20
"""The most host memory one map may hold by default (:func:`map_bytes`):
256 MiB, the ``max_bytes`` default of :func:`create_map` and ebpfvm.load's
``max_map_bytes``. Large enough for a hash map of a million 64-byte entries
or a 64 MiB ring buffer; small enough that a hostile object's map costs at
most a few hundred MB."""
MAX_OBJECT_MAP_BYTES = 512 << 20
"""The most host memory the maps and global data of one object may hold
together by default (ebpfvm.load's ``max_object_map_bytes``): 512 MiB, two
maps at the per-map limit. With it a hostile object stays within a few
hundred MB however many maps it declares."""

class MapTooLarge(ResourceLimit, MapError):
    """A map (or the maps of one object) over its memory limit. `resource` is
    "map memory" for one map, "object map memory" for one object's maps;
    `limit` and `requested` are bytes; `map_name` is the map refused."""

    def __init__(self, resource: str, limit: int, requested: int, map_name: str) -> None:
        super().__init__(resource, limit, requested, f"map {map_name!r}")
        self.map_name = map_name


class MapMemory:
    """The memory budget shared by the maps of one object: each map (or
    global-data section) is charged its :func:`map_bytes` before it is
    allocated, and one over `limit` bytes in all is a MapTooLarge."""

    def __init__(self, limit: int = MAX_OBJECT_MAP_BYTES) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, name: str, size: int) -> None:
        """Count `size` more bytes for map `name`, or raise MapTooLarge."""
        if self.used + size > self.limit:
            raise MapTooLarge("object map memory", self.limit, self.used + size, name)
        self.used += size


class MapType(IntEnum):
    """Kernel map type numbers (include/uapi/linux/bpf.h)."""

    HASH = 1
    ARRAY = 2
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    PROG_ARRAY = 3
    QUEUE = 22
    STACK = 23
    RINGBUF = 27
    DEVMAP = 14  # xdp: redirect maps (ebpfvm.devmaps)
    CPUMAP = 16
    XSKMAP = 17
    DEVMAP_HASH = 25
    LPM_TRIE = 11  # ebpfvm.lpmtrie
    BLOOM_FILTER = 30  # ebpfvm.bloom
    PERF_EVENT_ARRAY = 4  # ebpfvm.perf
    ARRAY_OF_MAPS = 12  # ebpfvm.mapinmap
    HASH_OF_MAPS = 13
    USER_RINGBUF = 31  # ebpfvm.userringbuf


@dataclass(frozen=True)
class MapSpec:
    """What a map is created from: the kernel's bpf_map_def (or BTF map) fields."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    map_extra: int = 0
    """The kernel's map_extra (a bloom filter's number of hash functions)."""


class BpfMap:
    """The base of every map class. An instance has `name`, `type` (the
    kernel's map type number, a MapType when it is one), `key_size`,
    `value_size`, `max_entries`, `flags` and `handle` (what programs pass
    the map helpers: set by the loader or the VM)."""

    kind: ClassVar[str] = "map"
    """Which map helpers take this map: "keyed" (lookup, update, delete),
    "queue" (push, pop, peek), "ringbuf", "prog_array" (bpf_tail_call)."""
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    handle: int

    def _init_shape(self, name: str, map_type: int, key_size: int, value_size: int,
                    max_entries: int, flags: int) -> None:
        """Set the shape every map has (its constructor calls this first)."""
        self.name = name
        self.type = map_type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.flags = flags

    @classmethod
    def check_shape(cls, spec: MapSpec) -> None:
        """MapError when this class cannot have the key and value sizes of `spec`."""

    @classmethod
    def memory_bytes(cls, spec: MapSpec) -> int:
        """The host memory a map of `spec` may come to hold."""
        return (spec.key_size + spec.value_size) * spec.max_entries

    @classmethod
    def create(cls, spec: MapSpec, max_bytes: int) -> BpfMap:
        """A new map (create_map calls this after check_shape and the memory checks)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line: name, type, key and value (types when known), limits."""
        return f"{self.name}: {type(self).__name__}"

    def entries_text(self, limit: int) -> list[str]:
        """Up to `limit` lines showing the contents (the maps view)."""
        raise NotImplementedError

    def preload_entry(self, _key: Any, _value: Any, _programs: Collection[str] | None) -> None:
        """Store one parsed JSON ``[key, value]`` pair (the CLI's --map);
        `_programs` names the object's programs. MapError when it cannot."""
        raise MapError(f"map {self.name}: cannot be preloaded")

    def set_btf(self, key_codec: Any, value_codec: Any) -> None:
        """Take the BTF codecs of the key and value (ignored by maps without types)."""


MAP_CLASSES: dict[int, type[BpfMap]] = {}
"""The map class of each supported kernel map type number."""


def register(map_type: int, cls: type[BpfMap]) -> None:
    """Make `cls` the class of kernel map type `map_type`."""
    MAP_CLASSES[int(map_type)] = cls


def map_class(name: str, map_type: int) -> type[BpfMap]:
    """The class of `map_type`; MapError naming map `name` when none is registered."""
    found = MAP_CLASSES.get(map_type)
    if found is None:
        raise MapError(f"map {name!r}: map type {map_type} is not supported yet")
    return found


def map_bytes(map_type: int, key_size: int, value_size: int, max_entries: int) -> int:
    """The host memory a map of these parameters may come to hold: its slab,
    plus for hash maps each entry's key and bookkeeping, for queues each
    value's, for a ring buffer its double-size data area (the class's
    memory_bytes)."""
    spec = MapSpec("?", map_type, key_size, value_size, max_entries)
    return map_class("?", map_type).memory_bytes(spec)


def check_size(name: str, map_type: int, key_size: int, value_size: int,
                max_entries: int, max_bytes: int = MAX_MAP_BYTES) -> int:
    """The map's :func:`map_bytes`; MapError for a value or key too large,
    MapTooLarge for a whole map over `max_bytes`."""
    if value_size > MAX_VALUE_SIZE:
        raise MapError(f"map {name!r}: value size {value_size} exceeds {MAX_VALUE_SIZE}")
    if key_size > MAX_KEY_SIZE:
        raise MapError(f"map {name!r}: key size {key_size} exceeds {MAX_KEY_SIZE}")
    size = map_bytes(map_type, key_size, value_size, max_entries)
    if size > max_bytes:
        raise MapTooLarge("map memory", max_bytes, size, name)
    return size


def as_bytes(owner: str, what: str, data: Any) -> bytes:
    """`data` (bytes, bytearray or memoryview) as bytes; MapError for any other
    type, so wrong arguments from Python fail like wrong sizes do."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MapError(f"map {owner!r}: {what} must be bytes, not {type(data).__name__}")
    return bytes(data)


def as_int(owner: str, what: str, value: Any) -> int:
    if not isinstance(value, int):
        raise MapError(f"map {owner!r}: {what} must be an int, not {type(value).__name__}")
    return value
