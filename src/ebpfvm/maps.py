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
lru_hash and lru_percpu_hash (one CPU; the least recently used entry is
evicted when full), and queue and stack
(:class:`QueueMap`, with the push/pop/peek helpers).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, MutableMapping
from enum import IntEnum
from typing import Any

from .errors import ArrayIndexError, MapError, MapFull, ResourceLimit, count_of
from .helpers import Helper, HelperContext
from .memory import Region, address_of

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "MAX_KEY_SIZE",
    "MAX_MAP_BYTES",
    "MAX_OBJECT_MAP_BYTES",
    "MAX_VALUE_SIZE",
    "AnyMap",
    "ArrayIndexError",
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

E2BIG = 7
EEXIST = 17
ENOENT = 2
EINVAL = 22

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
HASH_ENTRY_BYTES = 192
"""Python's cost of one hash-map entry besides its key bytes (the key's
bytes object, its OrderedDict node and slot number): about 175 bytes measured
on CPython 3.11, rounded up."""
QUEUE_ENTRY_BYTES = 64
"""Python's cost of one queued value besides its bytes (a bytes object and
its deque slot): about 50 bytes measured, rounded up."""
PROG_ARRAY_SLOT_BYTES = 8
"""What one program-array slot counts for (the kernel's: one pointer)."""


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


def map_bytes(map_type: MapType, key_size: int, value_size: int, max_entries: int) -> int:
    """The host memory a map of these parameters may come to hold: its slab,
    plus for hash maps each entry's key and bookkeeping, for queues each
    value's, for a ring buffer its double-size data area."""
    if map_type is MapType.RINGBUF:
        return 2 * max_entries
    if map_type is MapType.PROG_ARRAY:
        return PROG_ARRAY_SLOT_BYTES * max_entries
    if map_type in (MapType.QUEUE, MapType.STACK):
        return (value_size + QUEUE_ENTRY_BYTES) * max_entries
    if map_type in (MapType.ARRAY, MapType.PERCPU_ARRAY):
        return value_size * max_entries
    return (value_size + key_size + HASH_ENTRY_BYTES) * max_entries


def _check_size(name: str, map_type: MapType, key_size: int, value_size: int,
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


def _as_bytes(owner: str, what: str, data: Any) -> bytes:
    """`data` (bytes, bytearray or memoryview) as bytes; MapError for any other
    type, so wrong arguments from Python fail like wrong sizes do."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MapError(f"map {owner!r}: {what} must be bytes, not {type(data).__name__}")
    return bytes(data)


def _as_int(owner: str, what: str, value: Any) -> int:
    if not isinstance(value, int):
        raise MapError(f"map {owner!r}: {what} must be an int, not {type(value).__name__}")
    return value


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


class ProgArray:
    """A program array for tail calls: slot -> program name. From Python:
    ``jumps[0] = "handler"``, ``del jumps[0]``, ``jumps.get(0)``."""

    def __init__(self, name: str, max_entries: int, flags: int = 0,
                 max_bytes: int = MAX_MAP_BYTES) -> None:
        if max_entries <= 0:
            raise MapError(f"map {name!r}: entry count must be positive")
        _check_size(name, MapType.PROG_ARRAY, 4, 4, max_entries, max_bytes)
        self.name = name
        self.type = MapType.PROG_ARRAY
        self.key_size = 4
        self.value_size = 4
        self.max_entries = max_entries
        self.flags = flags
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


RINGBUF_BUSY = 1 << 31
"""Record header bit: reserved, not yet submitted or discarded."""
RINGBUF_DISCARD = 1 << 30
"""Record header bit: discarded; consumers skip it."""
RINGBUF_HEADER = 8
EAGAIN = 11


class RingBuf:
    """A ring buffer map with the kernel's record framing: an 8-byte header
    (length, BUSY and DISCARD bits) before each record, records 8-byte aligned.

    The data area is mapped twice in the kernel so records never wrap; here the
    slab is twice the ring size for the same effect. Python consumes with
    :meth:`consume`, which yields each submitted record once.

    A program that reserves a record may touch the whole slab (one region,
    registered once per run), so it can scribble on record headers: the ring
    keeps which records are reserved itself, and consume() trusts a header's
    length only when it fits in what was produced."""

    def __init__(self, name: str, size: int, flags: int = 0,
                 max_bytes: int = MAX_MAP_BYTES) -> None:
        if size <= 0 or size & (size - 1) or size % 4096:
            raise MapError(f"map {name!r}: ring size {size} must be a power of 2 "
                           "and a multiple of 4096")
        _check_size(name, MapType.RINGBUF, 0, 0, size, max_bytes)
        self.name = name
        self.type = MapType.RINGBUF
        self.key_size = 0
        self.value_size = 0
        self.max_entries = size
        self.flags = flags
        self.slab = bytearray(2 * size)
        self._pin = memoryview(self.slab)
        self.base = address_of(self.slab)
        self.region = Region(self.base, memoryview(self.slab), True, f"ringbuf {name}")
        """The data area, the one region programs get for the records they reserve."""
        self.producer = 0
        self.consumer = 0
        self.handle = 0
        self._busy: dict[int, tuple[int, object]] = {}
        """Reserved records not yet submitted or discarded: header offset ->
        (length, the run that reserved it)."""

    def reserve(self, size: int, owner: object = None) -> int:
        """Address of `size` bytes in a new busy record, or 0 when full.
        `owner` names the run reserving it (see :meth:`discard_owned`)."""
        size = _as_int(self.name, "size", size)
        total = (RINGBUF_HEADER + size + 7) & ~7
        if size <= 0 or size >= RINGBUF_DISCARD or \
                self.producer - self.consumer + total > self.max_entries:
            return 0
        offset = self.producer % self.max_entries
        self.slab[offset : offset + RINGBUF_HEADER] = (size | RINGBUF_BUSY).to_bytes(4, "little") \
            + offset.to_bytes(4, "little")
        self.producer += total
        self._busy[offset] = (size, owner)
        return self.base + offset + RINGBUF_HEADER

    def commit(self, address: int, discard: bool) -> bool:
        """Submit or discard the record whose data starts at `address`;
        False when no reserved record starts there."""
        address = _as_int(self.name, "address", address)
        offset = address - self.base - RINGBUF_HEADER
        found = self._busy.pop(offset, None)
        if found is None:
            return False
        header = found[0] | (RINGBUF_DISCARD if discard else 0)
        self.slab[offset : offset + 4] = header.to_bytes(4, "little")
        return True

    def discard_owned(self, owner: object) -> None:
        """Discard every record `owner` reserved and did not submit (a run
        that ended, returned or faulted, without giving them back)."""
        for offset, (_size, who) in list(self._busy.items()):
            if who is owner:
                self.commit(self.base + offset + RINGBUF_HEADER, discard=True)

    def output(self, data: bytes) -> int:
        """bpf_ringbuf_output: reserve, copy, submit; 0 or -EAGAIN."""
        data = _as_bytes(self.name, "data", data)
        address = self.reserve(len(data))
        if not address:
            return -EAGAIN
        start = address - self.base
        self.slab[start : start + len(data)] = data
        self.commit(address, discard=False)
        return 0

    def consume(self) -> Iterator[bytes]:
        """Yield submitted records in order, up to the first busy one.

        A header a program overwrote with a length past what was produced is
        a MapError; the ring then drops what was left to read, so the next
        consume() starts clean. Each step moves on by at least one header,
        and no read leaves the slab."""
        while self.consumer < self.producer:
            offset = self.consumer % self.max_entries
            if offset in self._busy:
                return
            header = int.from_bytes(self.slab[offset : offset + 4], "little")
            size = header & (RINGBUF_DISCARD - 1)
            total = (RINGBUF_HEADER + size + 7) & ~7
            if total > self.producer - self.consumer:
                self.consumer = self.producer
                raise MapError(f"map {self.name!r}: record header at offset {offset} was "
                               f"overwritten (length {size}); the unread records are dropped")
            self.consumer += total
            if not header & RINGBUF_DISCARD:
                yield bytes(self.slab[offset + RINGBUF_HEADER : offset + RINGBUF_HEADER + size])

    def __len__(self) -> int:
        """Bytes produced and not yet consumed (records and headers)."""
        return self.producer - self.consumer

    def __repr__(self) -> str:
        return f"RingBuf({self.name!r}, size={self.max_entries})"


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
        return f"TypedMap({self.raw!r})"


class QueueMap:
    """A queue (FIFO) or stack (LIFO) map: no keys, values pushed and popped.
    From Python: push(), pop(), peek(), len() and iteration (next out first)."""

    def __init__(self, name: str, map_type: MapType, value_size: int, max_entries: int,
                 flags: int = 0, max_bytes: int = MAX_MAP_BYTES) -> None:
        if value_size <= 0 or max_entries <= 0:
            raise MapError(f"map {name!r}: value size and entry count must be positive")
        _check_size(name, map_type, 0, value_size, max_entries, max_bytes)
        self.name = name
        self.type = map_type
        self.key_size = 0
        self.value_size = value_size
        self.max_entries = max_entries
        self.flags = flags
        self.items: deque[bytes] = deque()
        self.handle = 0

    def push_elem(self, value: bytes, flags: int = BPF_ANY) -> int:
        """0, or -E2BIG when full (unless BPF_EXIST, which drops the oldest)."""
        value = _as_bytes(self.name, "value", value)
        if len(value) != self.value_size or flags not in (BPF_ANY, BPF_EXIST):
            return -EINVAL
        if len(self.items) == self.max_entries:
            if flags != BPF_EXIST:
                return -E2BIG
            self.items.popleft()
        self.items.append(bytes(value))
        return 0

    def peek_elem(self) -> bytes | None:
        """The next value out (bpf_map_peek_elem), or None when empty."""
        if not self.items:
            return None
        return self.items[0] if self.type is MapType.QUEUE else self.items[-1]

    def pop_elem(self) -> bytes | None:
        """Take the next value out (bpf_map_pop_elem), or None when empty."""
        if not self.items:
            return None
        return self.items.popleft() if self.type is MapType.QUEUE else self.items.pop()

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

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[bytes]:
        return iter(list(self.items) if self.type is MapType.QUEUE else list(reversed(self.items)))

    def __repr__(self) -> str:
        return (f"QueueMap({self.name!r}, {self.type.name}, value_size={self.value_size}, "
                f"max_entries={self.max_entries})")


class Map(MutableMapping[bytes, bytes]):
    """One map: fixed key and value sizes, at most `max_entries` entries."""

    def __init__(self, name: str, map_type: MapType, key_size: int, value_size: int,
                 max_entries: int, flags: int = 0, slab: bytearray | None = None,
                 max_bytes: int = MAX_MAP_BYTES) -> None:
        if key_size <= 0 or value_size <= 0 or max_entries <= 0:
            raise MapError(f"map {name!r}: key, value and entry counts must be positive")
        _check_size(name, map_type, key_size, value_size, max_entries, max_bytes)
        self.name = name
        self.type = map_type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.flags = flags
        self._lru = map_type in (MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
        if slab is not None and len(slab) < value_size * max_entries:
            raise MapError(f"map {name!r}: the given slab is too small")
        # A given slab (global data) is shared: the map is a view of it.
        self.slab = slab if slab is not None else bytearray(value_size * max_entries)
        self._pin = memoryview(self.slab)  # the slab never moves
        self.base = address_of(self.slab)
        self.region = Region(self.base, memoryview(self.slab), True, f"map {name}")
        """The slab: the one region a program gets for every value it looks up."""
        self._slots: OrderedDict[bytes, int] = OrderedDict()
        # Slots are handed out lazily: never used ones from the high-water
        # mark, then freed ones (last freed first), so creating a map costs
        # its slab and nothing per entry.
        self._fresh = 0
        self._free: list[int] = []
        self.handle = 0  # set by the VM or loader that gives programs this map
        self.key_codec: Any = None
        self.value_codec: Any = None
        """BTF codecs (ebpfvm.btf.Codec) when the object describes the types."""
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
        """The address of the value for `key`, or 0."""
        key = _as_bytes(self.name, "key", key)
        slot = self._slot(key)
        if slot is None:
            return 0
        if self._lru:
            self._slots.move_to_end(key)
        return self.base + slot * self.value_size

    def update_elem(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> int:
        """Store `value` under `key`; 0 or a negative errno."""
        key = _as_bytes(self.name, "key", key)
        value = _as_bytes(self.name, "value", value)
        if len(key) != self.key_size or len(value) != self.value_size or flags not in (
                BPF_ANY, BPF_NOEXIST, BPF_EXIST):
            return -EINVAL
        slot = self._slot(key)
        if self._is_array:
            if slot is None:
                return -E2BIG
            if flags == BPF_NOEXIST:
                return -EEXIST
        elif slot is None:
            if flags == BPF_EXIST:
                return -ENOENT
            if self._free:
                slot = self._free.pop()
            elif self._fresh < self.max_entries:
                slot = self._fresh
                self._fresh += 1
            elif self._lru:
                _oldest, slot = self._slots.popitem(last=False)
            else:
                return -E2BIG
            self._slots[key] = slot
        elif flags == BPF_NOEXIST:
            return -EEXIST
        elif self._lru:
            self._slots.move_to_end(key)
        start = slot * self.value_size
        self.slab[start : start + self.value_size] = value
        return 0

    def delete_elem(self, key: bytes) -> int:
        """Remove `key`; 0 or a negative errno (arrays cannot delete)."""
        key = _as_bytes(self.name, "key", key)
        if self._is_array:
            return -EINVAL
        slot = self._slots.pop(key, None)
        if slot is None:
            return -ENOENT
        self._free.append(slot)
        return 0

    @property
    def _is_array(self) -> bool:
        return self.type in (MapType.ARRAY, MapType.PERCPU_ARRAY)

    def _slot(self, key: bytes) -> int | None:
        if len(key) != self.key_size:
            return None
        if self._is_array:
            index = int.from_bytes(key[:4], "little")
            return index if index < self.max_entries else None
        return self._slots.get(key)

    # -- the Python mapping -------------------------------------------------------

    def __getitem__(self, key: bytes) -> bytes:
        slot = self._slot(self._key(key))
        if slot is None:
            raise KeyError(key)
        start = slot * self.value_size
        return bytes(self.slab[start : start + self.value_size])

    def __setitem__(self, key: bytes, value: bytes) -> None:
        key = self._key(key)
        value = _as_bytes(self.name, "value", value)
        if len(value) != self.value_size:
            raise MapError(f"map {self.name!r}: value is {count_of(len(value), 'byte')}, "
                           f"not {self.value_size}")
        if self._is_array and self._slot(key) is None:
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
        if self._is_array:
            return (i.to_bytes(self.key_size, "little") for i in range(self.max_entries))
        return iter(list(self._slots))

    def __len__(self) -> int:
        return self.max_entries if self._is_array else len(self._slots)

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
               memory: MapMemory | None = None) -> AnyMap:
    """A map of a kernel type number; MapError for the types not supported yet
    and for bad sizes. The map's :func:`map_bytes` must fit in `max_bytes`
    and, when given, in what is left of `memory` (the object's budget), or
    MapTooLarge is raised before anything is allocated."""
    try:
        kind = MapType(map_type)
    except ValueError:
        raise MapError(f"map {name!r}: map type {map_type} is not supported yet") from None
    if kind in (MapType.QUEUE, MapType.STACK) and key_size:
        raise MapError(f"map {name!r}: queue and stack maps have no key")
    if kind is MapType.PROG_ARRAY and (key_size != 4 or value_size != 4):
        raise MapError(f"map {name!r}: program arrays have 4-byte keys and values")
    if kind is MapType.RINGBUF and (key_size or value_size):
        raise MapError(f"map {name!r}: ring buffers have no key or value size")
    if kind in (MapType.ARRAY, MapType.PERCPU_ARRAY) and key_size != 4:
        raise MapError(f"map {name!r}: array keys are 4 bytes, not {key_size}")
    if max_entries > 0 and value_size >= 0:
        size = _check_size(name, kind, key_size, value_size, max_entries, max_bytes)
        if memory is not None:
            memory.charge(name, size)
    if kind in (MapType.QUEUE, MapType.STACK):
        return QueueMap(name, kind, value_size, max_entries, flags, max_bytes)
    if kind is MapType.PROG_ARRAY:
        return ProgArray(name, max_entries, flags, max_bytes)
    if kind is MapType.RINGBUF:
        return RingBuf(name, max_entries, flags, max_bytes)
    return Map(name, kind, key_size, value_size, max_entries, flags, max_bytes=max_bytes)


BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
AnyMap = Map | QueueMap | RingBuf | ProgArray
"""Every kind of map object."""
BPF_MAP_PUSH_ELEM = 87
BPF_MAP_POP_ELEM = 88
BPF_MAP_PEEK_ELEM = 89
BPF_RINGBUF_OUTPUT = 130
BPF_RINGBUF_RESERVE = 131
BPF_RINGBUF_SUBMIT = 132
BPF_RINGBUF_DISCARD = 133
_M64 = (1 << 64) - 1


def map_helpers(maps: dict[int, AnyMap]) -> dict[int, Helper]:
    """The kernel's map helpers (1 lookup, 2 update, 3 delete, 87 push, 88 pop,
    89 peek) over `maps`, keyed by the handle programs pass in r1."""

    def find(handle: int) -> Map:
        found = maps.get(handle)
        if not isinstance(found, Map):
            raise MapError(f"no keyed map has handle {handle:#x}")
        return found

    def find_queue(handle: int) -> QueueMap:
        found = maps.get(handle)
        if not isinstance(found, QueueMap):
            raise MapError(f"no queue or stack map has handle {handle:#x}")
        return found

    def find_ring(handle: int) -> RingBuf:
        found = maps.get(handle)
        if not isinstance(found, RingBuf):
            raise MapError(f"no ring buffer has handle {handle:#x}")
        return found

    def ring_output(ctx: HelperContext, handle: int, data: int, size: int, _f: int,
                    _e: int) -> int:
        ring = find_ring(handle)
        ctx.charge_bytes(size)
        return ring.output(ctx.read(data, size)) & _M64

    def ring_reserve(ctx: HelperContext, handle: int, size: int, *_rest: int) -> int:
        """The record's address; the program may then write the ring's data
        area (one region for the whole run)."""
        ring = find_ring(handle)
        address = ring.reserve(size, owner=ctx)
        if address and ctx.space.add_once(ring.region):
            # Records the run neither submits nor discards (it faulted, or it
            # was not verified) are discarded when the run ends, or they would
            # block the ring for every later record.
            ctx.at_exit(lambda: ring.discard_owned(ctx))
        return address

    def ring_commit(address: int, discard: bool) -> int:
        for ring in maps.values():
            if isinstance(ring, RingBuf) and ring.commit(address, discard):
                return 0
        raise MapError(f"{address:#x} is not a reserved ring buffer record")

    def push(ctx: HelperContext, handle: int, value: int, flags: int, _d: int, _e: int) -> int:
        target = find_queue(handle)
        ctx.charge_bytes(target.value_size)
        return target.push_elem(ctx.read(value, target.value_size), flags) & _M64

    def take(ctx: HelperContext, handle: int, value: int, remove: bool) -> int:
        """peek or pop: the value is written first, and only a written value
        leaves the map (a bad pointer faults with the map unchanged)."""
        target = find_queue(handle)
        ctx.charge_bytes(target.value_size)
        item = target.peek_elem()
        if item is None:
            return -ENOENT & _M64
        ctx.write(value, item)
        if remove:
            target.pop_elem()
        return 0

    def lookup(ctx: HelperContext, handle: int, key: int, _c: int, _d: int, _e: int) -> int:
        """The value's address; the program may then touch the map's slab
        (one region, registered once per run)."""
        target = find(handle)
        ctx.charge_bytes(target.key_size)
        address = target.lookup_elem(ctx.read(key, target.key_size))
        if address:
            ctx.space.add_once(target.region)
        return address

    def update(ctx: HelperContext, handle: int, key: int, value: int, flags: int,
               _e: int) -> int:
        target = find(handle)
        ctx.charge_bytes(target.key_size + target.value_size)
        result = target.update_elem(ctx.read(key, target.key_size),
                                    ctx.read(value, target.value_size), flags)
        return result & _M64

    def delete(ctx: HelperContext, handle: int, key: int, _c: int, _d: int, _e: int) -> int:
        target = find(handle)
        ctx.charge_bytes(target.key_size)
        return target.delete_elem(ctx.read(key, target.key_size)) & _M64

    return {
        BPF_MAP_LOOKUP_ELEM: Helper(lookup, "bpf_map_lookup_elem", context=True),
        BPF_MAP_UPDATE_ELEM: Helper(update, "bpf_map_update_elem", context=True),
        BPF_MAP_DELETE_ELEM: Helper(delete, "bpf_map_delete_elem", context=True),
        BPF_MAP_PUSH_ELEM: Helper(push, "bpf_map_push_elem", context=True),
        BPF_MAP_POP_ELEM: Helper(lambda ctx, h, v, *_r: take(ctx, h, v, True),
                                 "bpf_map_pop_elem", context=True),
        BPF_MAP_PEEK_ELEM: Helper(lambda ctx, h, v, *_r: take(ctx, h, v, False),
                                  "bpf_map_peek_elem", context=True),
        BPF_RINGBUF_OUTPUT: Helper(ring_output, "bpf_ringbuf_output", context=True),
        BPF_RINGBUF_RESERVE: Helper(ring_reserve, "bpf_ringbuf_reserve", context=True),
        BPF_RINGBUF_SUBMIT: Helper(lambda address, *_r: ring_commit(address, False),
                                   "bpf_ringbuf_submit"),
        BPF_RINGBUF_DISCARD: Helper(lambda address, *_r: ring_commit(address, True),
                                    "bpf_ringbuf_discard"),
    }
