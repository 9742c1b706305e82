"""Hash and per-CPU hash maps laid out in native memory (issue 15).

BPF_MAP_TYPE_HASH and BPF_MAP_TYPE_PERCPU_HASH keep their keys, buckets and
links in one block of native memory that Python (:class:`NativeHash`, the
reference implementation under ebpfvm.maps.Map) and the native runtime
(``src/ebpfvm/native/rt_hash.c``, eBPF every native engine runs; RFC 9669
section 5.3: programs reach maps through helper calls) both read and write:
one truth. The values stay in the map's slab, the region programs get.

The block (little-endian; offsets from its start, which is the map's
``struct rt_map`` descriptor; ``src/ebpfvm/native/rt_hash.h`` says the same
in C)::

    0   u64 handle        what programs pass the map helpers in r1
    8   u32 type          BPF_MAP_TYPE_HASH (1) or PERCPU_HASH (5)
    12  u32 key_size
    16  u32 value_size
    20  u32 max_entries
    24  u32 flags
    28  u32 ncpus         1, or the per-CPU map's possible CPUs
    32  u64 slab          address of the values (Map.slab)
    40  u32 nbuckets      a power of two: max_entries rounded up
    44  u32 elem_size     bytes of one element: 8 + key_size rounded up to 8
    48  u32 count         elements in the buckets
    52  u32 free_head     first free element (NIL: none)
    56  u32 fresh         elements never used start here
    60  u32 reserved
    64  u64 buckets       offset of the bucket array (HEADER_SIZE)
    72  u64 elems         offset of the element array
    80  u64 size          bytes of the block
    88  u64 refs          LRU maps: offset of the reference bytes (else 0)
    96  u32 bucket[nbuckets]          first element of each chain (NIL: empty)
    elems: element[max_entries]       u32 next; u32 hash; key bytes, zero-padded
    refs: u8 ref[max_entries]         LRU maps: slot i's reference bit (0 or 1)

LRU maps (BPF_MAP_TYPE_LRU_HASH 9, LRU_PERCPU_HASH 10) use the same block
for their key index, but ebpfvm.lru chooses each new entry's element (its
node's slot: :meth:`NativeHash.insert_at`) and frees it (:meth:`NativeHash.
remove` with ``free=False``); the free list and `fresh` stay unused. A
program's lookup sets ``ref[slot]`` (natively: rt_lru.h), which the LRU
lists read and clear.

Element ``i`` owns the value slot ``i`` (its value at ``slab + i *
value_size``; per-CPU: CPU ``c``'s at ``slab + (c * max_entries + i) *
value_size``). Every element is preallocated, as the kernel preallocates a
hash map's elements; a new entry takes the last freed element, else the next
never used one (BPF_F_NO_PREALLOC keeps the kernel's observable semantics:
E2BIG once max_entries entries exist, an update of an existing key in place).
A new element goes to the head of its bucket's chain (as the kernel's
hlist); a deleted one goes to the head of the free list (linked by `next`).

The hash is ebpfvm's word hash, not the kernel's jhash (iteration order is
not part of the kernel's contract): ``h = HASH_SEED ^ key_size``, then for
each 8-byte little-endian word ``w`` of the zero-padded key ``h = ((h ^ w) *
HASH_MULT) mod 2**64; h ^= h >> 32``; the hash is the low 32 bits and the
bucket ``hash & (nbuckets - 1)``. Iteration and :meth:`NativeHash.next_key`
go bucket by bucket, each chain from its head (the kernel's order for
get_next_key); a missing key restarts from the first.

Safety: the geometry (the first 96 bytes but count, free_head and fresh) is
written once; Python uses its own copy of it. Every link, bucket head, free
head and the `fresh` mark read from memory is checked (an index at or past
max_entries ends a walk) and every walk stops after max_entries steps, so a
corrupted block never makes Python or the runtime read outside it nor loop
without bound; it can only make entries disappear or repeat.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from .errors import MapError
from .memory import Region, address_of

__all__ = ["ELEM_HEADER", "HASH_MULT", "HASH_SEED", "HASH_TYPES", "HEADER_SIZE", "LRU_TYPES",
           "NIL", "NativeHash", "handle_property", "key_hash"]

HASH_TYPES: Final = (1, 5)
"""The map types laid out here: BPF_MAP_TYPE_HASH and BPF_MAP_TYPE_PERCPU_HASH."""
LRU_TYPES: Final = (9, 10)
"""The LRU map types whose key index is laid out here too (with reference bytes)."""
NIL: Final = 0xFFFF_FFFF
"""No element (an empty bucket, the end of a chain or of the free list)."""
HEADER_SIZE: Final = 96
"""The descriptor and the hash fields; the bucket array follows."""
ELEM_HEADER: Final = 8
"""An element's next link and hash, before its key."""
HASH_SEED: Final = 0x243F_6A88_85A3_08D3
HASH_MULT: Final = 0x9E37_79B9_7F4A_7C15
_M64: Final = (1 << 64) - 1
EEXIST, ENOENT, E2BIG = 17, 2, 7
BPF_NOEXIST, BPF_EXIST = 1, 2

_U32 = struct.Struct("<I")
_ELEM = struct.Struct("<II")
_PREFIX = struct.Struct("<QIIIIIIQ")
_HASHPART = struct.Struct("<IIIIIIQQQQ")
_COUNT, _FREE, _FRESH = 48, 52, 56


def key_hash(key: bytes) -> int:
    """The 32-bit hash of `key` (see the module's docstring)."""
    h = HASH_SEED ^ len(key)
    if len(key) <= 8:  # one word: the common case, without a loop
        h = ((h ^ int.from_bytes(key, "little")) * HASH_MULT) & _M64
        return (h ^ h >> 32) & 0xFFFF_FFFF
    for (word,) in struct.iter_unpack("<Q", key + bytes(-len(key) % 8)):
        h = ((h ^ word) * HASH_MULT) & _M64
        h ^= h >> 32
    return h & 0xFFFF_FFFF


def _round_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class NativeHash:
    """The native block of one hash map: lookups, inserts, deletes and walks
    over it, with the kernel's flags and errnos (values are the map's)."""

    def __init__(self, map_type: int, key_size: int, value_size: int, max_entries: int,
                 flags: int, ncpus: int, slab: int) -> None:
        if not 0 < max_entries < NIL or not key_size > 0:
            raise MapError(f"a native hash map needs 1..{NIL - 1} entries and a key")
        self.key_size = key_size
        self.max_entries = max_entries
        self.nbuckets = _round_pow2(max_entries)
        self.elem_size = ELEM_HEADER + (key_size + 7) // 8 * 8
        self.elems = HEADER_SIZE + (4 * self.nbuckets + 7) // 8 * 8
        refs = self.elems + self.elem_size * max_entries if map_type in LRU_TYPES else 0
        self.size = refs + (max_entries + 7) // 8 * 8 if refs else \
            self.elems + self.elem_size * max_entries
        self.mem = bytearray(self.size)
        self._view = memoryview(self.mem)  # pins the block: it never moves
        self.address = address_of(self.mem)
        """The address of the block, the map's ``struct rt_map``."""
        self.region = Region(self.address, self._view, True, "hash map layout")
        """The block as a region (the runtime's, never a program's)."""
        _PREFIX.pack_into(self.mem, 0, 0, map_type, key_size, value_size, max_entries,
                          flags & 0xFFFF_FFFF, ncpus, slab)
        _HASHPART.pack_into(self.mem, 40, self.nbuckets, self.elem_size, 0, NIL, 0, 0,
                            HEADER_SIZE, self.elems, self.size, refs)
        self.mem[HEADER_SIZE : HEADER_SIZE + 4 * self.nbuckets] = b"\xff" * (4 * self.nbuckets)
        self.refs = self._view[refs : refs + max_entries] if refs else None
        """An LRU map's reference bytes, one a slot (None for other maps)."""

    # -- the descriptor's fields Python sets -----------------------------------

    def set_handle(self, handle: int) -> None:
        """Record the map's handle (the runtime finds the map by it)."""
        struct.pack_into("<Q", self.mem, 0, handle & _M64)

    def set_slab(self, slab: int, ncpus: int) -> None:
        """Record where the values are (a per-CPU map's slab moves when its
        possible CPUs change) and how many CPUs have one."""
        struct.pack_into("<I", self.mem, 28, ncpus)
        struct.pack_into("<Q", self.mem, 32, slab)

    # -- reading the block, every index checked ---------------------------------

    def _u32(self, offset: int) -> int:
        value: int = _U32.unpack_from(self.mem, offset)[0]
        return value

    def _head(self, bucket: int) -> int:
        return self._u32(HEADER_SIZE + 4 * bucket)

    def _link(self, index: int) -> int:
        return self._u32(self.elems + index * self.elem_size)

    def _key_at(self, index: int) -> bytes:
        start = self.elems + index * self.elem_size + ELEM_HEADER
        return bytes(self.mem[start : start + self.key_size])

    def _chain(self, bucket: int) -> list[int]:
        """The elements of `bucket`'s chain, in order (at most max_entries)."""
        found: list[int] = []
        index = self._head(bucket)
        while index < self.max_entries and len(found) < self.max_entries:
            found.append(index)
            index = self._link(index)
        return found

    def _search(self, key: bytes) -> tuple[int, int, int]:
        """(bucket, element before the match or NIL, the match or NIL)."""
        if len(key) != self.key_size:
            return 0, NIL, NIL
        h = key_hash(key)
        bucket = h & (self.nbuckets - 1)
        mem, elems, size, most = self.mem, self.elems, self.elem_size, self.max_entries
        prev, steps = NIL, 0
        index: int = _U32.unpack_from(mem, HEADER_SIZE + 4 * bucket)[0]
        while index < most and steps < most:
            at = elems + index * size
            link, stored = _ELEM.unpack_from(mem, at)
            if stored == h and mem[at + ELEM_HEADER : at + ELEM_HEADER + len(key)] == key:
                return bucket, prev, index
            prev, index, steps = index, link, steps + 1
        return bucket, prev, NIL

    # -- the operations -----------------------------------------------------------

    @property
    def count(self) -> int:
        """Entries in the map (the block's count, at most max_entries)."""
        return min(self._u32(_COUNT), self.max_entries)

    def find(self, key: bytes) -> int | None:
        """The element (value slot) of `key`, or None."""
        index = self._search(key)[2]
        return None if index == NIL else index

    def place(self, key: bytes, flags: int) -> tuple[int, bool]:
        """The slot `key`'s new value goes to and whether the entry is new,
        or (a negative errno, False): EEXIST for BPF_NOEXIST on a key
        present, ENOENT for BPF_EXIST on one missing, E2BIG when full."""
        bucket, _prev, index = self._search(key)
        if index != NIL:
            return (-EEXIST, False) if flags == BPF_NOEXIST else (index, False)
        if flags == BPF_EXIST:
            return -ENOENT, False
        count, free, fresh = struct.unpack_from("<III", self.mem, _COUNT)
        if count >= self.max_entries:
            return -E2BIG, False
        if free < self.max_entries:
            index = free
            struct.pack_into("<I", self.mem, _FREE, self._link(free))
        elif fresh < self.max_entries:
            index = fresh
            struct.pack_into("<I", self.mem, _FRESH, fresh + 1)
        else:
            return -E2BIG, False
        at = self.elems + index * self.elem_size
        _ELEM.pack_into(self.mem, at, self._head(bucket), key_hash(key))
        self.mem[at + ELEM_HEADER : at + ELEM_HEADER + self.key_size] = key
        struct.pack_into("<I", self.mem, HEADER_SIZE + 4 * bucket, index)
        struct.pack_into("<I", self.mem, _COUNT, count + 1)
        return index, True

    def insert_at(self, key: bytes, index: int) -> None:
        """Insert `key` (not in the map) in element `index`, chosen by the
        caller (an LRU map's lists), at the head of its bucket's chain."""
        if len(key) != self.key_size or not 0 <= index < self.max_entries:
            raise MapError(f"no element {index} for a {len(key)}-byte key")
        h = key_hash(key)
        bucket = h & (self.nbuckets - 1)
        at = self.elems + index * self.elem_size
        _ELEM.pack_into(self.mem, at, self._head(bucket), h)
        self.mem[at + ELEM_HEADER : at + ELEM_HEADER + self.key_size] = key
        struct.pack_into("<I", self.mem, HEADER_SIZE + 4 * bucket, index)
        struct.pack_into("<I", self.mem, _COUNT, self._u32(_COUNT) + 1)

    def remove(self, key: bytes, free: bool = True) -> int | None:
        """Unlink `key`'s element (onto the free list unless `free` is
        False: an LRU map's lists own its elements); its slot, or None."""
        bucket, prev, index = self._search(key)
        if index == NIL:
            return None
        link = self._link(index)
        if prev == NIL:
            struct.pack_into("<I", self.mem, HEADER_SIZE + 4 * bucket, link)
        else:
            struct.pack_into("<I", self.mem, self.elems + prev * self.elem_size, link)
        if free:
            struct.pack_into("<I", self.mem, self.elems + index * self.elem_size,
                             self._u32(_FREE))
            struct.pack_into("<I", self.mem, _FREE, index)
        struct.pack_into("<I", self.mem, _COUNT, (self._u32(_COUNT) - 1) & 0xFFFF_FFFF)
        return index

    def keys(self) -> list[bytes]:
        """Every key, bucket by bucket, each chain from its head (at most
        max_entries keys)."""
        found: list[bytes] = []
        for bucket in range(self.nbuckets):
            if self._head(bucket) >= self.max_entries:
                continue
            for index in self._chain(bucket)[: self.max_entries - len(found)]:
                found.append(self._key_at(index))
            if len(found) >= self.max_entries:
                break
        return found

    def next_key(self, key: bytes | None) -> bytes | None:
        """The key after `key` in iteration order (the first key when `key`
        is None or missing, as the kernel's get_next_key), or None after the
        last."""
        bucket = 0
        if key is not None and len(key) == self.key_size:
            found, _prev, index = self._search(key)
            if index != NIL:
                link = self._link(index)
                if link < self.max_entries:
                    return self._key_at(link)
                bucket = found + 1
        for later in range(bucket, self.nbuckets):
            head = self._head(later)
            if head < self.max_entries:
                return self._key_at(head)
        return None


def handle_property(block: str = "native_hash") -> property:
    """A map's handle: what programs pass the map helpers, which the
    descriptor of its native block (the attribute `block`, None for maps
    without one) records too: the runtime finds the map by it."""

    def get(self: Any) -> int:
        handle: int = self._handle
        return handle

    def set_(self: Any, value: int) -> None:
        self._handle = value
        native = getattr(self, block)
        if native is not None:
            native.set_handle(value)

    return property(get, set_, doc="What programs pass the map helpers in r1 (set by the "
                    "loader or the VM; the map's native block records it too).")
