"""The kernel's LRU lists for lru_hash and lru_percpu_hash maps.

An LRU hash map has ``max_entries`` preallocated nodes (one per slot of the
map's slab) and never grows: inserting a key takes a free node, and when
none is free the lists decide which entry is evicted. This module follows
the kernel's algorithm step for step, so the same operations evict the same
keys as the kernel:

- The common LRU (the default): one global list set (active, inactive,
  free) and, per CPU, a local free list and a local pending list. A CPU
  takes nodes from its local free list; when that is empty it flushes its
  pending nodes into the global lists (referenced ones to active, the rest
  to inactive), rotates them, and moves up to a target number of nodes
  (half of ``max_entries / CPUs``, clamped to 1..128) from the global free
  list, or shrinks the inactive list into its local free list. When all of
  that finds nothing it steals a free or pending node from the CPUs' local
  lists, round robin.
- ``BPF_F_NO_COMMON_LRU``: one list set per CPU, with ``max_entries``
  rounded to a multiple of the CPUs and split evenly among them; a CPU only
  ever takes nodes from its own lists (4 at a time when it shrinks).

A node's reference bit is a byte of native memory, one a slot (the
map's native block, ebpfvm.nativehash: the native runtime's lookup sets it
too), or of a private bytearray when the slots table has none. It is set by
a program's lookup (bpf_map_lookup_elem,
bpf_map_lookup_percpu_elem) and by updating an existing key; never by a
lookup from Python (the bpf() syscall path). Rotation moves referenced
nodes back to the active list and clears the bit; shrinking evicts the
unreferenced ones from the inactive list's tail first.

The lists are circular doubly linked lists with a head, as the kernel's, so
that insertion at the head, walks from the tail and the saved inactive
rotation point behave identically. Nodes are made when first handed out:
a map that is never filled costs nothing per entry. All work per operation
is bounded by the scan limits (128, or 4 per-CPU), whatever the map's size.
See RFC 9669 section 5.4.1 (the map helpers' calls).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

__all__ = ["SYSCALL_CPU", "Lru", "lru_max_entries"]

SYSCALL_CPU = 0
"""The CPU Python-side updates (the bpf() syscall's equivalent) run on."""

LOCAL_FREE_TARGET = 128
LOCAL_NR_SCANS = LOCAL_FREE_TARGET
PERCPU_FREE_TARGET = 4
PERCPU_NR_SCANS = PERCPU_FREE_TARGET

ENOENT, ENOMEM, EEXIST = 2, 12, 17
BPF_NOEXIST, BPF_EXIST = 1, 2

ACTIVE, INACTIVE, FREE, LOCAL_FREE, LOCAL_PENDING = range(5)
_COUNTED = (ACTIVE, INACTIVE)


class _Link:
    """A list head, or the links of a node."""

    __slots__ = ("next", "prev")

    def __init__(self) -> None:
        self.prev: _Link = self
        self.next: _Link = self


class _Node(_Link):
    __slots__ = ("cpu", "key", "refs", "slot", "type")

    def __init__(self, slot: int, cpu: int, refs: Any) -> None:
        super().__init__()
        self.slot = slot
        self.cpu = cpu
        self.type = FREE
        self.refs = refs
        refs[slot] = 0
        self.key = b""

    @property
    def ref(self) -> bool:
        """The reference bit (the slot's byte in `refs`)."""
        return bool(self.refs[self.slot])

    @ref.setter
    def ref(self, value: bool) -> None:
        self.refs[self.slot] = 1 if value else 0


def _unlink(link: _Link) -> None:
    link.prev.next = link.next
    link.next.prev = link.prev


def _add(link: _Link, head: _Link) -> None:
    """Insert `link` right after `head` (at the list's head)."""
    link.prev, link.next = head, head.next
    head.next.prev = link
    head.next = link


def _move(link: _Link, head: _Link) -> None:
    _unlink(link)
    _add(link, head)


def _from_tail(head: _Link) -> Iterator[_Node]:
    """The nodes from the tail to the head; the current one may be moved."""
    node = head.prev
    while node is not head:
        before = node.prev
        assert isinstance(node, _Node)
        yield node
        node = before


class _Lists:
    """One set of active, inactive and free lists. The free list's tail
    holds the never used nodes `low`..`top - 1`, made on demand (the
    highest first, as the kernel fills the list by adding at the head)."""

    def __init__(self, low: int, top: int, cpu: int, refs: Any) -> None:
        self.heads = (_Link(), _Link(), _Link())
        self.counts = [0, 0]
        self.next_rotation: _Link = self.heads[INACTIVE]
        self.low, self.top, self.cpu = low, top, cpu
        self.refs = refs

    def first_free(self) -> _Node | None:
        head = self.heads[FREE]
        if head.next is head:
            if self.top <= self.low:
                return None
            self.top -= 1
            _add(_Node(self.top, self.cpu, self.refs), head)
        node = head.next
        assert isinstance(node, _Node)
        return node

    def empty(self, which: int) -> bool:
        return self.heads[which].next is self.heads[which]


class _Local:
    """One CPU's local free and pending lists (the common LRU)."""

    def __init__(self, cpu: int) -> None:
        self.free = _Link()
        self.pending = _Link()
        self.next_steal = cpu


class Lru:
    """The LRU lists of one map of `max_entries` slots over `ncpus` CPUs;
    `slots` is the map's table (key -> slot), which evictions remove from;
    its `refs` attribute, when it has one, holds the reference bytes."""

    def __init__(self, max_entries: int, ncpus: int, percpu_lists: bool,
                 slots: MutableMapping[bytes, int]) -> None:
        self.ncpus = ncpus
        self.percpu_lists = percpu_lists
        self.slots = slots
        refs = getattr(slots, "refs", None)
        self.refs: Any = refs if refs is not None else bytearray(max_entries)
        self.nodes: dict[int, _Node] = {}
        if percpu_lists:
            share = max_entries // ncpus
            self.lists = [_Lists(cpu * share, (cpu + 1) * share, cpu, self.refs)
                          for cpu in range(ncpus)]
            self.nr_scans = PERCPU_NR_SCANS
            self.target_free = PERCPU_FREE_TARGET
        else:
            self.lists = [_Lists(0, max_entries, 0, self.refs)]
            self.nr_scans = LOCAL_NR_SCANS
            self.target_free = min(max((max_entries // ncpus) // 2, 1), LOCAL_FREE_TARGET)
        self.locals: dict[int, _Local] = {}

    # -- what the map calls ----------------------------------------------------------

    def place(self, key: bytes, flags: int, cpu: int, in_place: bool) -> tuple[int, bool]:
        """An update of `key` on `cpu`: the slot its value goes to and whether
        the entry is new, or (a negative errno, False). As the kernel, a free
        node is taken first (which may evict `key` itself), except for an
        in-place (lru_percpu_hash) BPF_EXIST update; an lru_hash update of an
        existing key moves it to the new node, referenced, and frees the old
        one; an lru_percpu_hash one keeps the node and references it."""
        fresh = None
        if not (in_place and flags == BPF_EXIST):
            fresh = self.pop_free(cpu, key)
            if fresh is None:
                return -ENOMEM, False
        old = self.slots.get(key)
        error = -EEXIST if old is not None and flags == BPF_NOEXIST else \
            -ENOENT if old is None and flags == BPF_EXIST else 0
        if fresh is not None and (error or (old is not None and in_place)):
            self.push_free(fresh)
        if error:
            return error, False
        if old is not None and in_place:
            self.set_ref(old)
            return old, False
        assert fresh is not None
        self.slots.pop(key, None)
        self.slots[key] = fresh
        if old is not None:
            self.set_ref(fresh)
            self.push_free(old)
        return fresh, old is None

    def evict(self, key: bytes, slot: int) -> bool:
        """Remove `key` (in `slot`) from the map's table: whether it was there."""
        if self.slots.get(key) != slot:
            return False
        del self.slots[key]
        return True

    def set_ref(self, slot: int) -> None:
        """A program looked the entry in `slot` up (or updated it)."""
        self.refs[slot] = 1

    def pop_free(self, cpu: int, key: bytes) -> int | None:
        """A free slot for `key`, taken on `cpu` (evicting an entry when
        needed), or None when none can be found (the kernel's ENOMEM)."""
        node = self._percpu_pop(cpu) if self.percpu_lists else self._common_pop(cpu)
        if node is None:
            return None
        node.key = key
        self.nodes[node.slot] = node
        return node.slot

    def push_free(self, slot: int) -> None:
        """The entry in `slot` was deleted or replaced: its node is free again."""
        node = self.nodes[slot]
        if self.percpu_lists:
            self._move(self.lists[node.cpu], node, FREE)
        elif node.type == LOCAL_PENDING:
            node.type = LOCAL_FREE
            node.ref = False
            _move(node, self._local(node.cpu).free)
        else:
            self._move(self.lists[0], node, FREE)

    # -- moving nodes between lists ----------------------------------------------------

    def _local(self, cpu: int) -> _Local:
        found = self.locals.get(cpu)
        if found is None:
            found = self.locals[cpu] = _Local(cpu)
        return found

    @staticmethod
    def _move(lists: _Lists, node: _Node, target: int) -> None:
        """Within or between the active, inactive and free lists, to the head."""
        if node.type != target:
            if node.type in _COUNTED:
                lists.counts[node.type] -= 1
            if target in _COUNTED:
                lists.counts[target] += 1
            node.type = target
        node.ref = False
        if node is lists.next_rotation:
            lists.next_rotation = node.prev
        _move(node, lists.heads[target])

    @staticmethod
    def _to_free(lists: _Lists, node: _Node, free: _Link, target: int) -> None:
        """From the active or inactive list to a free list (the bit stays)."""
        if node is lists.next_rotation:
            lists.next_rotation = node.prev
        if node.type in _COUNTED:
            lists.counts[node.type] -= 1
        node.type = target
        _move(node, free)

    def _rotate(self, lists: _Lists) -> None:
        """Rotate the active list when the inactive one is shorter, then the
        inactive list."""
        if lists.counts[INACTIVE] < lists.counts[ACTIVE]:
            self._rotate_active(lists)
        self._rotate_inactive(lists)

    def _rotate_active(self, lists: _Lists) -> None:
        active = lists.heads[ACTIVE]
        first = active.next
        for scanned, node in enumerate(_from_tail(active), 1):
            self._move(lists, node, ACTIVE if node.ref else INACTIVE)
            if scanned == self.nr_scans or node is first:
                break

    def _rotate_inactive(self, lists: _Lists) -> None:
        """Walk back from the saved rotation point, sending referenced nodes
        to the active list; the point is saved for the next rotation."""
        inactive = lists.heads[INACTIVE]
        if lists.empty(INACTIVE):
            return
        last = lists.next_rotation.next
        if last is inactive:
            last = last.next
        current = lists.next_rotation
        after: _Link = inactive
        scanned = 0
        while scanned < self.nr_scans:
            if current is inactive:
                current = current.prev
                continue
            assert isinstance(current, _Node)
            after = current.prev
            if current.ref:
                self._move(lists, current, ACTIVE)
            if current is last:
                break
            current = after
            scanned += 1
        lists.next_rotation = after

    def _shrink_inactive(self, lists: _Lists, wanted: int, free: _Link, target: int) -> int:
        shrunk = 0
        for scanned, node in enumerate(_from_tail(lists.heads[INACTIVE]), 1):
            if node.ref:
                self._move(lists, node, ACTIVE)
            elif self.evict(node.key, node.slot):
                self._to_free(lists, node, free, target)
                shrunk += 1
                if shrunk == wanted:
                    break
            if scanned == self.nr_scans:
                break
        return shrunk

    def _shrink(self, lists: _Lists, wanted: int, free: _Link, target: int) -> int:
        """Evict unreferenced inactive nodes; failing that, the oldest node
        of the inactive (else the active) list whatever its bit."""
        shrunk = self._shrink_inactive(lists, wanted, free, target)
        if shrunk:
            return shrunk
        which = INACTIVE if not lists.empty(INACTIVE) else ACTIVE
        for node in _from_tail(lists.heads[which]):
            if self.evict(node.key, node.slot):
                self._to_free(lists, node, free, target)
                return 1
        return 0

    # -- the per-CPU variant -------------------------------------------------------

    def _percpu_pop(self, cpu: int) -> _Node | None:
        lists = self.lists[cpu]
        self._rotate(lists)
        if lists.first_free() is None:
            self._shrink(lists, PERCPU_FREE_TARGET, lists.heads[FREE], FREE)
        node = lists.first_free()
        if node is None:
            return None
        node.ref = False
        self._move(lists, node, INACTIVE)
        return node

    # -- the common LRU ---------------------------------------------------------------

    def _common_pop(self, cpu: int) -> _Node | None:
        local = self._local(cpu)
        node = self._local_pop_free(local)
        if node is None:
            self._refill(local)
            node = self._local_pop_free(local)
        if node is None:
            node = self._steal(local)
        if node is not None:
            node.cpu = cpu
            node.type = LOCAL_PENDING
            node.ref = False
            _add(node, local.pending)
        return node

    def _refill(self, local: _Local) -> None:
        """Flush the pending nodes into the global lists, rotate them, and
        move free (else evicted) nodes to the local free list."""
        lists = self.lists[0]
        for node in _from_tail(local.pending):
            target = ACTIVE if node.ref else INACTIVE
            lists.counts[target] += 1
            node.type = target
            node.ref = False
            _move(node, lists.heads[target])
        self._rotate(lists)
        moved = 0
        while moved < self.target_free and (free := lists.first_free()) is not None:
            self._to_free(lists, free, local.free, LOCAL_FREE)
            moved += 1
        if moved < self.target_free:
            self._shrink(lists, self.target_free - moved, local.free, LOCAL_FREE)

    @staticmethod
    def _local_pop_free(local: _Local) -> _Node | None:
        node = local.free.next
        if node is local.free:
            return None
        assert isinstance(node, _Node)
        _unlink(node)
        return node

    def _local_pop_pending(self, local: _Local) -> _Node | None:
        """The oldest unreferenced pending node (else the oldest), evicted."""
        for force in (False, True):
            for node in _from_tail(local.pending):
                if (force or not node.ref) and self.evict(node.key, node.slot):
                    _unlink(node)
                    return node
        return None

    def _steal(self, local: _Local) -> _Node | None:
        """A free or pending node from the CPUs' local lists, round robin
        from `local`'s next_steal CPU."""
        first = steal = local.next_steal
        node: _Node | None = None
        while True:
            other = self.locals.get(steal)
            if other is not None:
                node = self._local_pop_free(other) or self._local_pop_pending(other)
            steal = (steal + 1) % self.ncpus
            if node is not None or steal == first:
                break
        local.next_steal = steal
        return node


def lru_max_entries(max_entries: int, flags: int, ncpus: int) -> int:
    """The entries of an LRU map with `flags`: with BPF_F_NO_COMMON_LRU
    (bit 1) rounded up to a multiple of the CPUs (down when that overflows
    32 bits), so every CPU's lists hold the same number of nodes."""
    if not flags & 2 or max_entries <= 0:
        return max_entries
    rounded = -(-max_entries // ncpus) * ncpus
    return rounded if rounded < 1 << 32 else max_entries // ncpus * ncpus
