"""eBPF maps with kernel semantics, usable from Python as mappings.

Each map keeps all its values in one bytearray (a slab of ``max_entries``
slots), so a program gets real, stable addresses for the values it looks up,
and the VM needs one memory region per map: the first successful lookup of a
run registers the whole slab, once (a ring buffer's data area likewise). From
Python a map is a ``MutableMapping[bytes, bytes]``.

Memory: every map type counts the host memory it may come to hold
(:func:`map_bytes`: the slab, and for hash and queue maps each entry's keys
and Python bookkeeping) against a per-map limit, ``max_bytes`` of
:func:`create_map` (:data:`MAX_MAP_BYTES` by default), and the maps of one
object together against a :class:`MapMemory` (ebpfvm.load's
``max_object_map_bytes``, :data:`MAX_OBJECT_MAP_BYTES` by default). A map over
either is a :class:`MapTooLarge`, which is both a MapError and a
ResourceLimit. Slots are handed out lazily, so creating a map costs its slab
and nothing per entry.

Types so far: array, percpu_array (one CPU), hash, percpu_hash (one CPU),
lru_hash and lru_percpu_hash (the kernel's LRU lists, ebpfvm.lru, pick the
entry evicted when full), and queue and stack
(:class:`QueueMap`, with the push/pop/peek helpers).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import ArrayIndexError, BtfValueError, MapError, MapFull, count_of
from .lru import SYSCALL_CPU, Lru, lru_max_entries
from .mapbase import (
    MAX_KEY_SIZE,
    MAX_MAP_BYTES,
    MAX_OBJECT_MAP_BYTES,
    MAX_VALUE_SIZE,
    BpfMap,
    MapMemory,
    MapSpec,
    MapTooLarge,
    MapType,
    map_bytes,
    map_class,
    register,
)
from .mapbase import as_bytes as _as_bytes
from .mapbase import as_int as _as_int
from .mapbase import check_size as _check_size
from .mapflags import MapFlag, MapFrozen, check_flags
from .memory import Region, address_of
from .nativehash import HASH_TYPES, LRU_TYPES, NativeHash, handle_property
from .nativelru import NativeSlots
from .nativequeue import NativeQueue
from .ringbuf import RINGBUF_BUSY, RINGBUF_DISCARD, RINGBUF_HEADER, RingBuf

if TYPE_CHECKING:
    pass

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "MAX_KEY_SIZE",
    "MAX_MAP_BYTES",
    "MAX_OBJECT_MAP_BYTES",
    "MAX_VALUE_SIZE",
    "RINGBUF_BUSY",
    "RINGBUF_DISCARD",
    "RINGBUF_HEADER",
    "AnyMap",
    "ArrayIndexError",
    "BpfMap",
    "Map",
    "MapFull",
    "MapMemory",
    "MapTooLarge",
    "MapType",
    "ProgArray",
    "QueueMap",
    "RingBuf",
    "create_map",
    "map_bytes",
    "map_helpers",
]

BPF_ANY = 0
"""Update flag: create or replace."""
BPF_NOEXIST = 1
"""Update flag: create only."""
BPF_EXIST = 2
"""Update flag: replace only."""
BPF_F_LOCK = 4
"""Update flag: copy the value under its bpf_spin_lock (arrays check it last)."""

E2BIG = 7
EEXIST = 17
ENOENT = 2
EINVAL = 22
EOPNOTSUPP = 95

HASH_ENTRY_BYTES = 192
"""Python's cost of one hash-map entry besides its key bytes (the key's
bytes object, its OrderedDict node and slot number): about 175 bytes measured
on CPython 3.11, rounded up."""
QUEUE_ENTRY_BYTES = 64
"""Python's cost of one queued value besides its bytes (a bytes object and
its deque slot): about 50 bytes measured, rounded up."""
PROG_ARRAY_SLOT_BYTES = 8
"""What one program-array slot counts for (the kernel's: one pointer)."""
_ARRAYS = (MapType.ARRAY, MapType.PERCPU_ARRAY)


class ProgArray(BpfMap):
    """A program array for tail calls: slot -> program name. From Python:
    ``jumps[0] = "handler"``, ``del jumps[0]``, ``jumps.get(0)``."""

    kind = "prog_array"

    @classmethod
    def check_shape(cls, spec: MapSpec) -> None:
        """Program arrays have 4-byte keys and values."""
        if spec.key_size != 4 or spec.value_size != 4:
            raise MapError(f"map {spec.name!r}: program arrays have 4-byte keys and values")

    @classmethod
    def memory_bytes(cls, spec: MapSpec) -> int:
        """One pointer a slot."""
        return PROG_ARRAY_SLOT_BYTES * spec.max_entries

    @classmethod
    def create(cls, spec: MapSpec, max_bytes: int) -> ProgArray:
        """A new program array."""
        return cls(spec.name, spec.max_entries, spec.flags, max_bytes)

    def describe(self) -> str:
        """Name and slot count."""
        return f"{self.name}: prog_array, max_entries {self.max_entries}"

    def entries_text(self, limit: int) -> list[str]:
        """``slot -> program`` lines."""
        from .mapview import more

        lines = [f"{index} -> {name}" for index, name in sorted(self.slots.items())[:limit]]
        return more(lines, len(self.slots))

    def preload_entry(self, key: Any, value: Any, programs: Collection[str] | None) -> None:
        """An index and a program name (one of `programs` when given)."""
        if not isinstance(key, int) or not isinstance(value, str):
            raise MapError(f"map {self.name}: a program array maps an index to a program name")
        if programs is not None and value not in programs:
            raise BtfValueError(f"[{key}]", value, f"no program {value!r} in the object "
                                f"(programs: {', '.join(programs) or 'none'})", self.name)
        self[key] = value

    def __init__(self, name: str, max_entries: int, flags: int = 0,
                 max_bytes: int = MAX_MAP_BYTES) -> None:
        if max_entries <= 0:
            raise MapError(f"map {name!r}: entry count must be positive")
        _check_size(name, MapType.PROG_ARRAY, 4, 4, max_entries, max_bytes)
        self._init_shape(name, MapType.PROG_ARRAY, 4, 4, max_entries, flags)
        self.slots: dict[int, str] = {}
        """The programs set, by slot (slots never set take no memory)."""
        self.handle = 0
        self.watchers: list[Callable[[int, str | None], None]] = []
        """Called with (slot, program or None) when a slot changes (the JIT's tables)."""

    def get(self, index: int) -> str | None:
        """The program in slot `index`, or None."""
        index = _as_int(self.name, "index", index)
        return self.slots.get(index)

    def __setitem__(self, index: int, program: str) -> None:
        index = _as_int(self.name, "index", index)
        if not isinstance(program, str):
            raise MapError(f"map {self.name!r}: a program is named by a str, "
                           f"not {type(program).__name__}")
        if not 0 <= index < self.max_entries:
            raise ArrayIndexError(self.name, index, self.max_entries)
        self.slots[index] = program
        for watch in self.watchers:
            watch(index, program)

    def __getitem__(self, index: int) -> str:
        found = self.get(index)
        if found is None:
            raise KeyError(index)
        return found

    def __delitem__(self, index: int) -> None:
        if self.get(index) is None:
            raise KeyError(index)
        del self.slots[index]
        for watch in self.watchers:
            watch(index, None)

    def __len__(self) -> int:
        return len(self.slots)

    def __repr__(self) -> str:
        return f"ProgArray({self.name!r}, max_entries={self.max_entries})"


class TypedMap(MutableMapping[Any, Any]):
    """A map seen through its BTF types: values in, values out."""

    def __init__(self, raw: Map) -> None:
        self.raw = raw

    def __getitem__(self, key: Any) -> Any:
        try:
            found = self.raw[self.raw.key_codec.encode(key)]
        except KeyError:
            raise KeyError(key) from None  # the key as given, not its bytes
        return self.raw.value_codec.decode(found)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.raw[self.raw.key_codec.encode(key)] = self.raw.value_codec.encode(value)

    def __delitem__(self, key: Any) -> None:
        try:
            del self.raw[self.raw.key_codec.encode(key)]
        except KeyError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[Any]:
        return (self.raw.key_codec.decode(key) for key in self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.raw!r})"


class QueueMap(BpfMap):
    """A queue (FIFO) or stack (LIFO) map: no keys, values pushed and popped.
    From Python: push(), pop(), peek(), len() and iteration (next out first)."""

    kind = "queue"
    type: MapType
    handle = handle_property("native_queue")  # the block's descriptor records it too

    @classmethod
    def check_shape(cls, spec: MapSpec) -> None:
        """Queues and stacks have no key."""
        if spec.key_size:
            raise MapError(f"map {spec.name!r}: queue and stack maps have no key")

    @classmethod
    def memory_bytes(cls, spec: MapSpec) -> int:
        """Each value and its Python bookkeeping."""
        return (spec.value_size + QUEUE_ENTRY_BYTES) * spec.max_entries

    @classmethod
    def create(cls, spec: MapSpec, max_bytes: int) -> QueueMap:
        """A new queue or stack."""
        return cls(spec.name, MapType(spec.type), spec.value_size, spec.max_entries, spec.flags,
                   max_bytes)

    def describe(self) -> str:
        """Name, kind, value size, limit."""
        return f"{self.name}: {self.type.name.lower()}, value " \
               f"{count_of(self.value_size, 'byte')}, max_entries {self.max_entries}"

    def entries_text(self, limit: int) -> list[str]:
        """How many values wait."""
        return [f"{len(self)} value(s) waiting"][:limit]

    def __init__(self, name: str, map_type: MapType, value_size: int, max_entries: int,
                 flags: int = 0, max_bytes: int = MAX_MAP_BYTES) -> None:
        if value_size <= 0 or max_entries <= 0:
            raise MapError(f"map {name!r}: value size and entry count must be positive")
        _check_size(name, map_type, 0, value_size, max_entries, max_bytes)
        self._init_shape(name, map_type, 0, value_size, max_entries, flags)
        self.native_queue = NativeQueue(map_type, value_size, max_entries, flags)
        """The ring of values in native memory (ebpfvm.nativequeue)."""
        self.handle = 0

    def push_elem(self, value: bytes, flags: int = BPF_ANY) -> int:
        """0, or -E2BIG when full (unless BPF_EXIST, which drops the oldest)."""
        value = _as_bytes(self.name, "value", value)
        if len(value) != self.value_size or flags not in (BPF_ANY, BPF_EXIST):
            return -EINVAL
        return self.native_queue.push(value, flags)

    def peek_elem(self) -> bytes | None:
        """The next value out (bpf_map_peek_elem), or None when empty."""
        return self.native_queue.peek()

    def pop_elem(self) -> bytes | None:
        """Take the next value out (bpf_map_pop_elem), or None when empty."""
        return self.native_queue.pop()

    def push(self, value: bytes) -> None:
        """Push `value` from Python; MapError when full or of the wrong size."""
        if self.push_elem(value):
            raise MapError(f"map {self.name!r}: push failed (full, or wrong value size)")

    def pop(self) -> bytes:
        """Take the next value out from Python; MapError when empty."""
        value = self.pop_elem()
        if value is None:
            raise MapError(f"map {self.name!r} is empty")
        return value

    def peek(self) -> bytes:
        """The next value out, left in the map; MapError when empty."""
        value = self.peek_elem()
        if value is None:
            raise MapError(f"map {self.name!r} is empty")
        return value

    @property
    def items(self) -> list[bytes]:
        """The values, oldest first (the order they were pushed)."""
        return self.native_queue.oldest_first()

    def __len__(self) -> int:
        return len(self.native_queue)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.native_queue)

    def __repr__(self) -> str:
        return (f"QueueMap({self.name!r}, {self.type.name}, value_size={self.value_size}, "
                f"max_entries={self.max_entries})")


class Map(BpfMap, MutableMapping[bytes, bytes]):
    """One map: fixed key and value sizes, at most `max_entries` entries."""

    kind = "keyed"
    percpu: ClassVar[bool] = False
    """Whether each key has one value per CPU (ebpfvm.percpu.PerCpuMap)."""
    type: MapType
    key_codec: Any
    value_codec: Any
    on_free: Callable[[int], None] | None = None
    """Told the slot of each element an update replaces or a delete removes
    (ebpfvm.timers frees the element's bpf_timer there, as the kernel does)."""
    handle = handle_property()  # a hash map's descriptor records it too

    @classmethod
    def check_shape(cls, spec: MapSpec) -> None:
        """Array keys are 4 bytes."""
        if spec.type in _ARRAYS and spec.key_size != 4:
            raise MapError(f"map {spec.name!r}: array keys are 4 bytes, not {spec.key_size}")

    @classmethod
    def memory_bytes(cls, spec: MapSpec) -> int:
        """The slab, and for hash maps each entry's key and bookkeeping."""
        if spec.type in _ARRAYS:
            return spec.value_size * spec.max_entries
        return (spec.value_size + spec.key_size + HASH_ENTRY_BYTES) * spec.max_entries

    @classmethod
    def create(cls, spec: MapSpec, max_bytes: int) -> Map:
        """A new hash or array map."""
        return cls(spec.name, MapType(spec.type), spec.key_size, spec.value_size,
                   spec.max_entries, spec.flags, max_bytes=max_bytes)

    def describe(self) -> str:
        """Name, kind, key and value types (BTF when known), limit."""
        from .mapview import describe_keyed

        return describe_keyed(self)

    def entries_text(self, limit: int) -> list[str]:
        """``key -> value`` lines (BTF-decoded when possible), or a global-data
        section's variables."""
        from .mapview import entries_keyed

        return entries_keyed(self, limit)

    def preload_entry(self, key: Any, value: Any, _programs: Collection[str] | None) -> None:
        """Encode the key and value (BTF, ints or hex strings) and store them."""
        from .mapview import preload_keyed

        preload_keyed(self, key, value)

    def set_btf(self, key_codec: Any, value_codec: Any) -> None:
        """Keep the codecs: `typed`, the maps view and --map use them."""
        self.key_codec = key_codec
        self.value_codec = value_codec

    def __init__(self, name: str, map_type: MapType, key_size: int, value_size: int,
                 max_entries: int, flags: int = 0, slab: bytearray | None = None,
                 max_bytes: int = MAX_MAP_BYTES, ncpus: int | None = None) -> None:
        if key_size <= 0 or value_size <= 0 or max_entries <= 0:
            raise MapError(f"map {name!r}: key, value and entry counts must be positive")
        lru = map_type in (MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
        if lru and ncpus is None:
            from .percpu import POSSIBLE_CPUS as ncpus
        if lru:
            max_entries = lru_max_entries(max_entries, flags, ncpus or 1)
        _check_size(name, map_type, key_size, value_size, max_entries, max_bytes)
        self._init_shape(name, map_type, key_size, value_size, max_entries, flags)
        if slab is not None and len(slab) < value_size * max_entries:
            raise MapError(f"map {name!r}: the given slab is too small")
        # A given slab (global data) is shared: the map is a view of it.
        self.slab = slab if slab is not None else bytearray(value_size * max_entries)
        self._pin = memoryview(self.slab)  # the slab never moves
        self.base = address_of(self.slab)
        self.region = Region(self.base, memoryview(self.slab),
                             not flags & MapFlag.RDONLY_PROG, f"map {name}")
        """The slab: the one region a program gets for every value it looks up."""
        self.native_hash = NativeHash(map_type, key_size, value_size, max_entries, flags,
                                      ncpus or 1, self.base) \
            if map_type in HASH_TYPES + LRU_TYPES else None
        """A hash or LRU map's keys, buckets and links in native memory (ebpfvm.nativehash)."""
        self._slots: MutableMapping[bytes, int] = NativeSlots(self.native_hash) \
            if lru and self.native_hash is not None else OrderedDict()
        self._lru = Lru(max_entries, ncpus or 1, bool(flags & MapFlag.NO_COMMON_LRU),
                        self._slots) if lru else None
        # Slots are handed out lazily: never used ones from the high-water
        # mark, then freed ones (last freed first), so creating a map costs
        # its slab and nothing per entry.
        self._fresh = 0
        self._free: list[int] = []
        self.handle = 0  # set by the VM or loader that gives programs this map
        self.key_codec = None
        self.value_codec = None
        """BTF codecs (ebpfvm.btf.Codec) when the object describes the types."""
        self.frozen = False
        """Set when the map is frozen: Python may no longer write it."""
        self.variables: dict[str, tuple[int, Any]] = {}
        """For a global-data section's map: each variable's offset in the value
        and its BTF codec, from the section's BTF DATASEC."""

    @property
    def typed(self) -> TypedMap:
        """The map with keys and values decoded from BTF (ints, dicts, lists)."""
        if self.key_codec is None or self.value_codec is None:
            raise MapError(f"map {self.name!r} has no BTF key and value types")
        return TypedMap(self)

    # -- what helpers call (errors are negative errno values, as the kernel's) ----

    def lookup_elem(self, key: bytes) -> int:
        """The address of the value for `key`, or 0 (a program's lookup: it
        sets an LRU entry's reference bit)."""
        key = _as_bytes(self.name, "key", key)
        slot = self._slot(key)
        if slot is None:
            return 0
        if self._lru is not None:
            self._lru.set_ref(slot)
        return self.base + slot * self.value_size

    def update_elem(self, key: bytes, value: bytes, flags: int = BPF_ANY,
                    cpu: int = SYSCALL_CPU) -> int:
        """Store `value` under `key` (an update on `cpu`, which picks an LRU
        map's lists); 0 or a negative errno."""
        key = _as_bytes(self.name, "key", key)
        value = _as_bytes(self.name, "value", value)
        if len(key) != self.key_size or len(value) != self.value_size or not self._flags_ok(flags):
            return -EINVAL
        slot, _new = self._place(key, flags, cpu)
        if slot < 0:
            return slot
        if self.on_free is not None:
            self.on_free(slot)
        start = slot * self.value_size
        self.slab[start : start + self.value_size] = value
        return 0

    def _place(self, key: bytes, flags: int, cpu: int) -> tuple[int, bool]:
        """The slot `key`'s new value goes to and whether the entry is new, or
        (a negative errno, False)."""
        if self._lru is not None:
            return self._lru.place(key, flags, cpu, self.percpu)
        if self.native_hash is not None:
            return self.native_hash.place(key, flags)
        slot = self._slot(key)
        if self.is_array:  # kernel/bpf/arraymap.c's order; no value has a spin lock to take
            if slot is None:
                return -E2BIG, False
            if flags & BPF_NOEXIST:
                return -EEXIST, False
            return (-EINVAL, False) if flags & BPF_F_LOCK else (slot, False)
        if slot is not None:
            return (-EEXIST, False) if flags == BPF_NOEXIST else (slot, False)
        if flags == BPF_EXIST:
            return -ENOENT, False
        if self._free:
            slot = self._free.pop()
        elif self._fresh < self.max_entries:
            slot = self._fresh
            self._fresh += 1
        else:
            return -E2BIG, False
        self._slots[key] = slot
        return slot, True

    def _flags_ok(self, flags: int) -> bool:
        """BPF_ANY, BPF_NOEXIST or BPF_EXIST; an array's may add BPF_F_LOCK."""
        return (flags & ~BPF_F_LOCK if self.is_array else flags) in (BPF_ANY, BPF_NOEXIST,
                                                                     BPF_EXIST)

    def delete_elem(self, key: bytes) -> int:
        """Remove `key`; 0 or a negative errno (arrays cannot delete)."""
        key = _as_bytes(self.name, "key", key)
        if self.is_array:
            return -EINVAL
        if self.native_hash is not None and self._lru is None:
            return 0 if self.native_hash.remove(key) is not None else -ENOENT
        slot = self._slots.pop(key, None)
        if slot is None:
            return -ENOENT
        if self.on_free is not None:
            self.on_free(slot)
        if self._lru is not None:
            self._lru.push_free(slot)
        else:
            self._free.append(slot)
        return 0

    @property
    def is_array(self) -> bool:
        """Whether this is an array (keys are indexes; every slot exists)."""
        return self.type in _ARRAYS

    def _slot(self, key: bytes) -> int | None:
        if len(key) != self.key_size:
            return None
        if self.is_array:
            index = int.from_bytes(key[:4], "little")
            return index if index < self.max_entries else None
        return self._slots.get(key) if self.native_hash is None else self.native_hash.find(key)

    # -- the Python mapping -------------------------------------------------------

    def __getitem__(self, key: bytes) -> bytes:
        slot = self._slot(self._key(key))
        if slot is None:
            raise KeyError(key)
        start = slot * self.value_size
        return bytes(self.slab[start : start + self.value_size])

    def __setitem__(self, key: bytes, value: bytes) -> None:
        if self.frozen:
            raise MapFrozen(self.name)
        key = self._key(key)
        value = _as_bytes(self.name, "value", value)
        if len(value) != self.value_size:
            raise MapError(f"map {self.name!r}: value is {count_of(len(value), 'byte')}, "
                           f"not {self.value_size}")
        if self.is_array and self._slot(key) is None:
            raise ArrayIndexError(self.name, int.from_bytes(key[:4], "little"), self.max_entries)
        error = self.update_elem(key, value)
        if error == -E2BIG:
            raise MapFull(self.name, self.max_entries)
        if error:
            raise MapError(f"map {self.name!r}: update failed with errno {-error}")

    def __delitem__(self, key: bytes) -> None:
        if self.delete_elem(self._key(key)):
            raise KeyError(key)

    def __iter__(self) -> Iterator[bytes]:
        if self.is_array:
            return (i.to_bytes(self.key_size, "little") for i in range(self.max_entries))
        if self.native_hash is not None:
            return iter(self.native_hash.keys())
        return iter(list(self._slots))

    def __len__(self) -> int:
        if self.native_hash is not None:
            return self.native_hash.count
        return self.max_entries if self.is_array else len(self._slots)

    def _key(self, key: bytes) -> bytes:
        key = _as_bytes(self.name, "key", key)
        if len(key) != self.key_size:
            raise MapError(f"map {self.name!r}: key is {count_of(len(key), 'byte')}, "
                           f"not {self.key_size}")
        return key

    def __repr__(self) -> str:
        return (f"Map({self.name!r}, {self.type.name}, key_size={self.key_size}, "
                f"value_size={self.value_size}, max_entries={self.max_entries})")


def create_map(name: str, map_type: int, key_size: int, value_size: int, max_entries: int,
               flags: int = 0, *, max_bytes: int = MAX_MAP_BYTES,
               memory: MapMemory | None = None, map_extra: int = 0) -> AnyMap:
    """A map of a kernel type number; MapError for the types not supported yet
    and for bad sizes. The map's :func:`map_bytes` must fit in `max_bytes`
    and, when given, in what is left of `memory` (the object's budget), or
    MapTooLarge is raised before anything is allocated."""
    cls = map_class(name, map_type)
    spec = MapSpec(name, map_type, key_size, value_size, max_entries, flags, map_extra)
    cls.check_shape(spec)
    check_flags(spec)
    if max_entries > 0 and value_size >= 0:
        size = _check_size(name, map_type, key_size, value_size, max_entries, max_bytes)
        if memory is not None:
            memory.charge(name, size)
    return cls.create(spec, max_bytes)


for _number, _cls in (
    (MapType.HASH, Map), (MapType.ARRAY, Map), (MapType.LRU_HASH, Map),
    (MapType.PROG_ARRAY, ProgArray), (MapType.QUEUE, QueueMap), (MapType.STACK, QueueMap),
    (MapType.RINGBUF, RingBuf),
):
    register(_number, _cls)


AnyMap = BpfMap
"""Every kind of map object (the base class of the registered map classes)."""
from . import bloom as _bloom  # noqa: E402, F401  (registers the bloom filter)
from . import cgroup_storage as _cgroup  # noqa: E402, F401  (registers cgroup storage)
from . import devmaps as _devmaps  # noqa: E402, F401  (registers redirect maps)
from . import dynptr as _dynptr  # noqa: E402, F401  (helpers4)
from . import lpmtrie as _lpmtrie  # noqa: E402, F401  (registers the LPM trie)
from . import mapinmap as _mapinmap  # noqa: E402, F401  (registers the maps of maps)
from . import percpu as _percpu  # noqa: E402, F401  (registers the per-CPU map types)
from . import perf as _perf  # noqa: E402, F401  (registers the perf event array)
from . import userringbuf as _userringbuf  # noqa: E402, F401  (uringbuf: the user ring buffer)
from .maphelpers import map_helpers  # noqa: E402  (the helpers over these maps)
