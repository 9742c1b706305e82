"""eBPF maps with kernel semantics, usable from Python as mappings.

Each map keeps all its values in one bytearray (a slab of ``max_entries``
slots), so a program gets real, stable addresses for the values it looks up,
and the VM needs one memory region per map. From Python a map is a
``MutableMapping[bytes, bytes]``.

Types so far: array, percpu_array (one CPU), hash, percpu_hash (one CPU),
lru_hash and lru_percpu_hash (one CPU; the least recently used entry is
evicted when full), and queue and stack
(:class:`QueueMap`, with the push/pop/peek helpers).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator, MutableMapping
from enum import IntEnum
from typing import Any

from .errors import MapError
from .helpers import Helper, HelperContext
from .memory import Region, address_of

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "MAX_MAP_BYTES",
    "MAX_VALUE_SIZE",
    "AnyMap",
    "Map",
    "MapType",
    "ProgArray",
    "QueueMap",
    "RingBuf",
    "create_map",
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
MAX_MAP_BYTES = 1 << 30
"""The most memory one map may preallocate (values times entries, or a ring)."""


def _check_size(name: str, value_size: int, max_entries: int) -> None:
    """MapError for a value or a whole map too large to allocate."""
    if value_size > MAX_VALUE_SIZE:
        raise MapError(f"map {name!r}: value size {value_size} exceeds {MAX_VALUE_SIZE}")
    if value_size * max_entries > MAX_MAP_BYTES:
        raise MapError(f"map {name!r}: {max_entries} values of {value_size} bytes exceed "
                       f"{MAX_MAP_BYTES} bytes")


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

    def __init__(self, name: str, max_entries: int, flags: int = 0) -> None:
        if max_entries <= 0:
            raise MapError(f"map {name!r}: entry count must be positive")
        self.name = name
        self.type = MapType.PROG_ARRAY
        self.key_size = 4
        self.value_size = 4
        self.max_entries = max_entries
        self.flags = flags
        self.slots: list[str | None] = [None] * max_entries
        self.handle = 0

    def get(self, index: int) -> str | None:
        index = _as_int(self.name, "index", index)
        return self.slots[index] if 0 <= index < self.max_entries else None

    def __setitem__(self, index: int, program: str) -> None:
        index = _as_int(self.name, "index", index)
        if not isinstance(program, str):
            raise MapError(f"map {self.name!r}: a program is named by a str, "
                           f"not {type(program).__name__}")
        if not 0 <= index < self.max_entries:
            raise MapError(f"map {self.name!r}: index {index} is out of range")
        self.slots[index] = program

    def __getitem__(self, index: int) -> str:
        found = self.get(index)
        if found is None:
            raise KeyError(index)
        return found

    def __delitem__(self, index: int) -> None:
        if self.get(index) is None:
            raise KeyError(index)
        self.slots[index] = None

    def __len__(self) -> int:
        return sum(slot is not None for slot in self.slots)

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
    :meth:`consume`, which yields each submitted record once."""

    def __init__(self, name: str, size: int, flags: int = 0) -> None:
        if size <= 0 or size & (size - 1) or size % 4096:
            raise MapError(f"map {name!r}: ring size {size} must be a power of 2 "
                           "and a multiple of 4096")
        _check_size(name, 1, 2 * size)
        self.name = name
        self.type = MapType.RINGBUF
        self.key_size = 0
        self.value_size = 0
        self.max_entries = size
        self.flags = flags
        self.slab = bytearray(2 * size)
        self._pin = memoryview(self.slab)
        self.base = address_of(self.slab)
        self.producer = 0
        self.consumer = 0
        self.handle = 0

    def reserve(self, size: int) -> int:
        """Address of `size` bytes in a new busy record, or 0 when full."""
        size = _as_int(self.name, "size", size)
        total = (RINGBUF_HEADER + size + 7) & ~7
        if size <= 0 or size >= RINGBUF_DISCARD or \
                self.producer - self.consumer + total > self.max_entries:
            return 0
        offset = self.producer % self.max_entries
        self.slab[offset : offset + RINGBUF_HEADER] = (size | RINGBUF_BUSY).to_bytes(4, "little") \
            + offset.to_bytes(4, "little")
        self.producer += total
        return self.base + offset + RINGBUF_HEADER

    def commit(self, address: int, discard: bool) -> bool:
        """Submit or discard the record whose data starts at `address`."""
        address = _as_int(self.name, "address", address)
        offset = address - self.base - RINGBUF_HEADER
        if not 0 <= offset < self.max_entries:
            return False
        header = int.from_bytes(self.slab[offset : offset + 4], "little")
        if not header & RINGBUF_BUSY:
            return False
        header &= ~RINGBUF_BUSY
        if discard:
            header |= RINGBUF_DISCARD
        self.slab[offset : offset + 4] = header.to_bytes(4, "little")
        return True

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
        """Yield submitted records in order, up to the first busy one."""
        while self.consumer < self.producer:
            offset = self.consumer % self.max_entries
            header = int.from_bytes(self.slab[offset : offset + 4], "little")
            if header & RINGBUF_BUSY:
                return
            size = header & (RINGBUF_DISCARD - 1)
            self.consumer += (RINGBUF_HEADER + size + 7) & ~7
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
        return self.raw.value_codec.decode(self.raw[self.raw.key_codec.encode(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self.raw[self.raw.key_codec.encode(key)] = self.raw.value_codec.encode(value)

    def __delitem__(self, key: Any) -> None:
        del self.raw[self.raw.key_codec.encode(key)]

    def __iter__(self) -> Iterator[Any]:
        return (self.raw.key_codec.decode(key) for key in self.raw)

    def __len__(self) -> int:
        return len(self.raw)


class QueueMap:
    """A queue (FIFO) or stack (LIFO) map: no keys, values pushed and popped.
    From Python: push(), pop(), peek(), len() and iteration (next out first)."""

    def __init__(self, name: str, map_type: MapType, value_size: int, max_entries: int,
                 flags: int = 0) -> None:
        if value_size <= 0 or max_entries <= 0:
            raise MapError(f"map {name!r}: value size and entry count must be positive")
        _check_size(name, value_size, 1)
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
        if not self.items:
            return None
        return self.items[0] if self.type is MapType.QUEUE else self.items[-1]

    def pop_elem(self) -> bytes | None:
        if not self.items:
            return None
        return self.items.popleft() if self.type is MapType.QUEUE else self.items.pop()

    def push(self, value: bytes) -> None:
        if self.push_elem(value):
            raise MapError(f"map {self.name!r}: push failed (full, or wrong value size)")

    def pop(self) -> bytes:
        value = self.pop_elem()
        if value is None:
            raise MapError(f"map {self.name!r} is empty")
        return value

    def peek(self) -> bytes:
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
                 max_entries: int, flags: int = 0, slab: bytearray | None = None) -> None:
        if key_size <= 0 or value_size <= 0 or max_entries <= 0:
            raise MapError(f"map {name!r}: key, value and entry counts must be positive")
        _check_size(name, value_size, max_entries)
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
        self._slots: OrderedDict[bytes, int] = OrderedDict()
        self._free = list(range(max_entries - 1, -1, -1))
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

    def value_region(self, address: int) -> Region:
        """The region of exactly one value, at an address lookup_elem returned."""
        start = address - self.base
        return Region(address, memoryview(self.slab)[start : start + self.value_size], True,
                      f"map {self.name} value")

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
            if not self._free:
                if not self._lru:
                    return -E2BIG
                _oldest, freed = self._slots.popitem(last=False)
                self._free.append(freed)
            slot = self._free.pop()
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
            raise MapError(f"map {self.name!r}: value is {len(value)} bytes, "
                           f"not {self.value_size}")
        error = self.update_elem(key, value)
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
            raise MapError(f"map {self.name!r}: key is {len(key)} bytes, not {self.key_size}")
        return key

    def __repr__(self) -> str:
        return (f"Map({self.name!r}, {self.type.name}, key_size={self.key_size}, "
                f"value_size={self.value_size}, max_entries={self.max_entries})")


def create_map(name: str, map_type: int, key_size: int, value_size: int, max_entries: int,
               flags: int = 0) -> AnyMap:
    """A map of a kernel type number; MapError for the types not supported yet."""
    try:
        kind = MapType(map_type)
    except ValueError:
        raise MapError(f"map {name!r}: map type {map_type} is not supported yet") from None
    if kind in (MapType.QUEUE, MapType.STACK):
        if key_size:
            raise MapError(f"map {name!r}: queue and stack maps have no key")
        return QueueMap(name, kind, value_size, max_entries, flags)
    if kind is MapType.PROG_ARRAY:
        if key_size != 4 or value_size != 4:
            raise MapError(f"map {name!r}: program arrays have 4-byte keys and values")
        return ProgArray(name, max_entries, flags)
    if kind is MapType.RINGBUF:
        if key_size or value_size:
            raise MapError(f"map {name!r}: ring buffers have no key or value size")
        return RingBuf(name, max_entries, flags)
    if kind in (MapType.ARRAY, MapType.PERCPU_ARRAY) and key_size != 4:
        raise MapError(f"map {name!r}: array keys are 4 bytes, not {key_size}")
    return Map(name, kind, key_size, value_size, max_entries, flags)


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
        return find_ring(handle).output(ctx.read(data, size)) & _M64

    def ring_reserve(ctx: HelperContext, handle: int, size: int, *_rest: int) -> int:
        """The record's address; the program may then write exactly that record."""
        ring = find_ring(handle)
        address = ring.reserve(size)
        if address:
            # A record the run neither submits nor discards (it faulted, or it
            # was not verified) is discarded when the run ends, or it would
            # block the ring for every later record.
            ctx.at_exit(lambda: ring.commit(address, discard=True))
            start = address - ring.base
            ctx.space.add(Region(address, memoryview(ring.slab)[start : start + size], True,
                                 f"ringbuf {ring.name} record"))
        return address

    def ring_commit(address: int, discard: bool) -> int:
        for ring in maps.values():
            if isinstance(ring, RingBuf) and ring.commit(address, discard):
                return 0
        raise MapError(f"{address:#x} is not a reserved ring buffer record")

    def push(ctx: HelperContext, handle: int, value: int, flags: int, _d: int, _e: int) -> int:
        target = find_queue(handle)
        return target.push_elem(ctx.read(value, target.value_size), flags) & _M64

    def take(ctx: HelperContext, handle: int, value: int, remove: bool) -> int:
        target = find_queue(handle)
        item = target.pop_elem() if remove else target.peek_elem()
        if item is None:
            return -ENOENT & _M64
        ctx.write(value, item)
        return 0

    def lookup(ctx: HelperContext, handle: int, key: int, _c: int, _d: int, _e: int) -> int:
        """The value's address; the program may then touch exactly that value."""
        target = find(handle)
        address = target.lookup_elem(ctx.read(key, target.key_size))
        if address:
            ctx.space.add(target.value_region(address))
        return address

    def update(ctx: HelperContext, handle: int, key: int, value: int, flags: int,
               _e: int) -> int:
        target = find(handle)
        result = target.update_elem(ctx.read(key, target.key_size),
                               ctx.read(value, target.value_size), flags)
        return result & _M64

    def delete(ctx: HelperContext, handle: int, key: int, _c: int, _d: int, _e: int) -> int:
        target = find(handle)
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
