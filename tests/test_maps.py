"""Map semantics from Python: flags, capacity, LRU eviction, arrays, sizes."""

from __future__ import annotations

import pytest

from ebpfvm import MapError
from ebpfvm.maps import BPF_ANY, BPF_EXIST, BPF_NOEXIST, MapType, create_map

E2BIG, EEXIST, ENOENT, EINVAL = 7, 17, 2, 22


def k(n: int) -> bytes:
    return n.to_bytes(4, "little")


def v(n: int) -> bytes:
    return n.to_bytes(8, "little")


def test_hash_flags_and_capacity() -> None:
    m = create_map("h", MapType.HASH, 4, 8, 2)
    assert m.update_elem(k(1), v(10), BPF_EXIST) == -ENOENT
    assert m.update_elem(k(1), v(10), BPF_NOEXIST) == 0
    assert m.update_elem(k(1), v(11), BPF_NOEXIST) == -EEXIST
    assert m.update_elem(k(1), v(12), BPF_EXIST) == 0
    assert m.update_elem(k(2), v(20), BPF_ANY) == 0
    assert m.update_elem(k(3), v(30), BPF_ANY) == -E2BIG
    assert m.update_elem(k(1), v(13), BPF_ANY) == 0  # replacing needs no room
    assert m.update_elem(k(1), v(13), 7) == -EINVAL
    assert dict(m) == {k(1): v(13), k(2): v(20)}
    assert m.delete_elem(k(1)) == 0 and m.delete_elem(k(1)) == -ENOENT
    assert m.update_elem(k(3), v(30), BPF_ANY) == 0  # the freed slot is reused
    assert len(m) == 2


def test_lookup_address_is_the_value() -> None:
    import ctypes

    m = create_map("h", MapType.HASH, 4, 8, 4)
    m[k(7)] = v(0x1122334455667788)
    address = m.lookup_elem(k(7))
    assert m.region.start <= address < m.region.end
    assert ctypes.c_uint64.from_address(address).value == 0x1122334455667788
    assert m.lookup_elem(k(8)) == 0


def test_lru_evicts_least_recently_used() -> None:
    m = create_map("l", MapType.LRU_HASH, 4, 8, 2)
    m[k(1)] = v(1)
    m[k(2)] = v(2)
    assert m.lookup_elem(k(1))  # 1 is now the most recent
    m[k(3)] = v(3)
    assert sorted(m) == [k(1), k(3)]


def test_array_semantics() -> None:
    m = create_map("a", MapType.ARRAY, 4, 8, 3)
    assert len(m) == 3 and m[k(2)] == v(0)
    assert m.update_elem(k(3), v(1)) == -E2BIG
    assert m.update_elem(k(0), v(1), BPF_NOEXIST) == -EEXIST  # array slots always exist
    assert m.delete_elem(k(0)) == -EINVAL
    m[k(1)] = v(9)
    assert m[k(1)] == v(9)
    with pytest.raises(KeyError):
        m[k(5)]


def test_wrong_sizes_and_types() -> None:
    m = create_map("h", MapType.HASH, 4, 8, 2)
    with pytest.raises(MapError):
        m[b"\x01"] = v(1)
    with pytest.raises(MapError):
        m[k(1)] = b"\x01"
    with pytest.raises(MapError):
        create_map("x", 27, 4, 8, 2)  # ringbuf: not yet
    with pytest.raises(MapError):
        create_map("x", MapType.ARRAY, 8, 8, 2)
    with pytest.raises(MapError):
        create_map("x", MapType.HASH, 0, 8, 2)


def test_queue_and_stack_from_python() -> None:
    from ebpfvm.maps import QueueMap

    queue = create_map("q", MapType.QUEUE, 0, 2, 2)
    stack = create_map("s", MapType.STACK, 0, 2, 2)
    assert isinstance(queue, QueueMap) and isinstance(stack, QueueMap)
    for m in (queue, stack):
        m.push(b"aa")
        m.push(b"bb")
        assert m.push_elem(b"cc") == -E2BIG
        with pytest.raises(MapError):
            m.push(b"toolong")
    assert queue.peek() == b"aa" and stack.peek() == b"bb"
    assert list(queue) == [b"aa", b"bb"] and list(stack) == [b"bb", b"aa"]
    assert queue.push_elem(b"cc", BPF_EXIST) == 0  # drops the oldest
    assert [queue.pop(), queue.pop()] == [b"bb", b"cc"]
    assert [stack.pop(), stack.pop()] == [b"bb", b"aa"]
    with pytest.raises(MapError):
        queue.pop()
    with pytest.raises(MapError):
        create_map("k", MapType.QUEUE, 4, 2, 2)  # queues have no key


def test_ring_buffer_framing() -> None:
    from ebpfvm.maps import RINGBUF_BUSY, RingBuf

    ring = create_map("r", MapType.RINGBUF, 0, 0, 4096)
    assert isinstance(ring, RingBuf)
    first = ring.reserve(5)
    assert first and ring.output(b"xyz") == 0
    assert list(ring.consume()) == []  # the first record is still busy
    header = int.from_bytes(ring.slab[0:4], "little")
    assert header == 5 | RINGBUF_BUSY
    assert ring.commit(first, discard=False)
    assert not ring.commit(first, discard=False)  # only once
    assert list(ring.consume()) == [bytes(5), b"xyz"]
    with pytest.raises(MapError):
        create_map("bad", MapType.RINGBUF, 0, 0, 1000)  # not a power of 2 page multiple


def test_lru_percpu_hash_behaves_as_lru_with_one_cpu() -> None:
    m = create_map("p", MapType.LRU_PERCPU_HASH, 4, 8, 1)
    m[k(1)] = v(1)
    m[k(2)] = v(2)  # evicts key 1 instead of failing
    assert list(m) == [k(2)]
