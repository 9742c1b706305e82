"""Hash and per-CPU hash maps in native memory (issue 15): the Python layout
(ebpfvm.nativehash under ebpfvm.maps.Map) against the kernel's documented
semantics, and the native runtime (src/ebpfvm/native/rt_hash.o, run as plain
programs on every engine by tests/nhash_harness.py) against the Python
helpers over twin maps: same results, same charges, byte for byte the same
layout and values after every operation, also from corrupted layouts."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import NEEDS_KBPF
from ebpfvm.errors import EbpfError, MapError
from ebpfvm.maps import BPF_ANY, BPF_EXIST, BPF_NOEXIST, Map, MapType, create_map
from ebpfvm.nativehash import HEADER_SIZE, NIL, NativeHash, key_hash
from nhash_harness import Native, Reference, make_map, memory_fault_of

E2BIG, EEXIST, ENOENT, EINVAL = 7, 17, 2, 22
M64 = (1 << 64) - 1
RT_HASH_PYTHON = 1
LOOKUP, LOOKUP_PERCPU, UPDATE, DELETE = range(4)
HELPER_NAMES = ("bpf_map_lookup_elem", "bpf_map_lookup_percpu_elem", "bpf_map_update_elem",
                "bpf_map_delete_elem")


def _u32(m: Map, offset: int) -> int:
    native = m.native_hash
    assert native is not None
    value: int = struct.unpack_from("<I", native.mem, offset)[0]
    return value


# -- the layout from Python: the kernel's semantics ---------------------------------


def test_the_descriptor_holds_the_abi_fields_and_the_handle() -> None:
    m = Map("h", MapType.HASH, 6, 10, 5, 0)
    m.handle = 0x1234
    native = m.native_hash
    assert native is not None
    handle, mtype, ksize, vsize, entries, flags, ncpus, slab = struct.unpack_from(
        "<QIIIIIIQ", native.mem, 0)
    assert (handle, mtype, ksize, vsize, entries, flags, ncpus, slab) == (
        0x1234, 1, 6, 10, 5, 0, 1, m.base)
    nbuckets, elem_size = struct.unpack_from("<II", native.mem, 40)
    assert nbuckets == 8  # 5 rounded up to a power of two
    assert elem_size == 16  # next, hash, 6 key bytes padded to 8
    assert native.address == m.native_hash.address


def test_array_maps_keep_their_own_implementation_and_lru_maps_index_natively() -> None:
    assert Map("m", MapType.ARRAY, 4, 4, 4).native_hash is None
    lru = Map("m", MapType.LRU_HASH, 4, 4, 4).native_hash
    assert lru is not None and lru.refs is not None and len(lru.refs) == 4
    assert struct.unpack_from("<Q", lru.mem, 88)[0] == lru.elems + 4 * lru.elem_size


def test_kernel_update_flags_and_errnos() -> None:
    m = Map("h", MapType.HASH, 4, 4, 2)
    one, two, three = (bytes([i]) * 4 for i in (1, 2, 3))
    assert m.update_elem(one, one, BPF_EXIST) == -ENOENT
    assert m.update_elem(one, one, BPF_NOEXIST) == 0
    assert m.update_elem(one, two, BPF_NOEXIST) == -EEXIST
    assert m.update_elem(one, two, BPF_EXIST) == 0
    assert m.update_elem(two, two, BPF_ANY) == 0
    assert m.update_elem(three, three, BPF_ANY) == -E2BIG  # full
    assert m.update_elem(one, three, BPF_ANY) == 0  # a full map still replaces
    assert m.update_elem(one, three, 4) == -EINVAL
    assert m.delete_elem(three) == -ENOENT
    assert m.delete_elem(one) == 0 and len(m) == 1
    assert m.update_elem(three, three, BPF_ANY) == 0
    assert dict(m) == {two: two, three: three}


def test_a_deleted_element_is_reused_first() -> None:
    m = Map("h", MapType.HASH, 4, 4, 4)
    for i in range(3):
        m[bytes([i]) * 4] = bytes([i]) * 4
    before = m.lookup_elem(b"\x01" * 4)
    del m[b"\x01" * 4]
    m[b"\x09" * 4] = b"\x09" * 4
    assert m.lookup_elem(b"\x09" * 4) == before


def test_next_key_walks_every_key_once_and_restarts_from_a_missing_key() -> None:
    m = Map("h", MapType.HASH, 3, 1, 16)
    for i in range(11):
        m[bytes([i, i, i])] = b"x"
    native = m.native_hash
    assert native is not None
    walked, key = [], native.next_key(None)
    while key is not None:
        walked.append(key)
        key = native.next_key(key)
    assert walked == list(m) and sorted(walked) == sorted(bytes([i] * 3) for i in range(11))
    assert native.next_key(b"zzz") == walked[0]  # the kernel: a missing key restarts


def test_per_cpu_new_entries_zero_the_other_cpus() -> None:
    m = make_map(True, 4, 4, 4, ncpus=3)
    assert m.update_elem(b"kkkk", b"\x01" * 4) == 0  # every CPU's value: the syscall form
    m[b"kkkk"] = [b"\x01" * 4, b"\x02" * 4, b"\x03" * 4]
    del m[b"kkkk"]
    assert m.update_cpu(b"kkkk", b"\x07" * 4, BPF_ANY, 1) == 0  # the slot is reused
    assert m[b"kkkk"] == [bytes(4), b"\x07" * 4, bytes(4)]


def test_the_hash_is_the_documented_word_hash() -> None:
    # h = seed ^ size; per zero-padded 8-byte word: h = (h ^ w) * mult; h ^= h >> 32
    h = 0x243F6A8885A308D3 ^ 3
    h = ((h ^ 0x636261) * 0x9E3779B97F4A7C15) & M64
    h ^= h >> 32
    assert key_hash(b"abc") == h & 0xFFFFFFFF


def test_create_map_budget_and_large_maps() -> None:
    m = create_map("big", MapType.HASH, 64, 8, 100_000)
    assert isinstance(m, Map) and m.native_hash is not None
    assert len(m) == 0 and list(m) == []


# -- corrupted layouts: bounded, inside the block ------------------------------------


def test_corrupted_links_never_leave_the_block_nor_loop() -> None:
    m = Map("h", MapType.HASH, 4, 4, 4)
    for i in range(4):
        m[bytes([i]) * 4] = bytes(4)
    native = m.native_hash
    assert native is not None
    for index in range(4):  # every element links to itself: cycles everywhere
        struct.pack_into("<I", native.mem, native.elems + index * native.elem_size, index)
    struct.pack_into("<I", native.mem, HEADER_SIZE, 0x7FFF_FFFF)  # a wild bucket head
    assert len(list(m)) <= 4
    m.get(b"\x05" * 4)
    assert m.update_elem(b"\x05" * 4, bytes(4)) == -E2BIG
    struct.pack_into("<III", native.mem, 48, 0, 0xFFFF_FFF0, 0xFFFF_FFF0)  # free, fresh wild
    assert m.update_elem(b"\x05" * 4, bytes(4)) == -E2BIG
    assert native.next_key(None) is None or len(native.next_key(None) or b"") == 4


# -- the native runtime against the Python helpers -----------------------------------

_SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(HealthCheck))


@st.composite
def _cases(draw: Any) -> tuple[tuple[Any, ...], list[bytes], list[tuple[Any, ...]]]:
    percpu = draw(st.booleans())
    key_size = draw(st.integers(1, 64))
    value_size = draw(st.integers(1, 24))
    max_entries = draw(st.integers(1, 6))
    ncpus = draw(st.integers(1, 3))
    keys = draw(st.lists(st.binary(min_size=key_size, max_size=key_size), min_size=1,
                         max_size=8, unique=True))
    op = st.tuples(st.integers(0, 3), st.integers(0, len(keys) - 1), st.integers(0, 3),
                   st.binary(min_size=value_size, max_size=value_size), st.integers(0, ncpus))
    ops = draw(st.lists(op, min_size=1, max_size=24))
    return (percpu, key_size, value_size, max_entries, ncpus), keys, ops


def _outcome(fn: Any) -> Any:
    try:
        return fn()
    except EbpfError as exc:
        return type(exc).__name__


def _apply(native: Native, ref: Reference, op: tuple[Any, ...], keys: list[bytes]) -> None:
    number, which, flags, value, cpu = op
    native.cpu = ref.cpu = cpu
    key = keys[which]
    args: list[list[int]] = []
    for side in (native, ref):
        arg = [side.key(key)]
        if number == LOOKUP_PERCPU:
            arg.append(cpu)
        if number == UPDATE:
            arg += [side.value(value), flags]
        args.append(arg)
    got = _outcome(lambda: native.call(number, *args[0]))
    if got == RT_HASH_PYTHON:  # the dispatcher's fallback: the Python helper, same map
        fallback = Reference(native.map, cpu, native.rt.scratch)
        got = _outcome(lambda: fallback.call(HELPER_NAMES[number], *args[0]))
        native.rt.charged += fallback.charged
    expected = _outcome(lambda: ref.call(HELPER_NAMES[number], *args[1]))
    if number in (LOOKUP, LOOKUP_PERCPU) and isinstance(got, int) and got:
        got -= native.map.base
        expected -= ref.map.base
    assert got == expected & M64 if isinstance(expected, int) else got == expected, op


def _same_state(native: Native, ref: Reference) -> None:
    a, b = native.map.native_hash, ref.map.native_hash
    assert a is not None and b is not None
    assert a.mem[:32] == b.mem[:32] and a.mem[40:] == b.mem[40:]  # all but the slab address
    assert native.map.slab == ref.map.slab
    assert list(native.map) == list(ref.map) and len(native.map) == len(ref.map)
    assert native.charged == ref.charged


def _twins(shape: tuple[Any, ...], engine: str) -> tuple[Native, Reference]:
    percpu, key_size, value_size, max_entries, ncpus = shape
    native = Native(make_map(percpu, key_size, value_size, max_entries, ncpus), engine)
    native.rt.charged = 0
    return native, Reference(make_map(percpu, key_size, value_size, max_entries, ncpus))


@given(case=_cases())
@_SETTINGS
def test_runtime_agrees_with_the_python_helpers(engine: str, case: Any) -> None:
    shape, keys, ops = case
    native, ref = _twins(shape, engine)
    for op in ops:
        _apply(native, ref, op, keys)
        _same_state(native, ref)


@given(case=_cases(), damage=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, M64)),
                                      min_size=1, max_size=6))
@_SETTINGS
def test_runtime_agrees_on_corrupted_layouts(engine: str, case: Any,
                                             damage: list[tuple[int, int]]) -> None:
    shape, keys, ops = case
    native, ref = _twins(shape, engine)
    for op in ops[: len(ops) // 2]:
        _apply(native, ref, op, keys)
    a, b = native.map.native_hash, ref.map.native_hash
    assert a is not None and b is not None
    for where, word in damage:  # the dynamic part: count, free list, buckets, links
        spot = where % (3 + (a.size - HEADER_SIZE) // 4)
        offset = 48 + 4 * spot if spot < 3 else HEADER_SIZE + 4 * (spot - 3)
        struct.pack_into("<I", a.mem, offset, word & 0xFFFF_FFFF)
        struct.pack_into("<I", b.mem, offset, word & 0xFFFF_FFFF)
    for op in ops:
        _apply(native, ref, op, keys)
        _same_state(native, ref)


@pytest.mark.parametrize(("number", "wild"), [
    (LOOKUP, "key"), (LOOKUP_PERCPU, "key"), (UPDATE, "key"), (DELETE, "key"),
    (UPDATE, "value"),  # only an update reads a value
])
def test_wild_pointers_fault_with_address_and_size(engine: str, number: int, wild: str) -> None:
    native, ref = _twins((number == LOOKUP_PERCPU, 13, 24, 4, 2), engine)
    faults = []
    for side in (native, ref):
        key = 0xDEAD_0000 if wild == "key" else side.key(b"k" * 13)
        args = [key, 0] if number == LOOKUP_PERCPU else [key]
        if number == UPDATE:
            args = [key, 0xBEEF_0000 if wild == "value" else side.value(bytes(24)), 0]
        faults.append(memory_fault_of(side, native, number, HELPER_NAMES[number], args))
    expected = (0xDEAD_0000, 13, "load") if wild == "key" else (0xBEEF_0000, 24, "load")
    assert faults == [expected, expected]
    assert len(native.map) == 0 and native.map.native_hash is not None
    assert native.map.native_hash.mem[48:60] == NativeHash(
        MapType.HASH, 13, 24, 4, 0, 1, 0).mem[48:60]  # nothing changed
    assert NIL == 0xFFFF_FFFF


def test_read_only_maps_and_bad_cpus_fall_back_to_python(engine: str) -> None:
    native, _ref = _twins((True, 4, 4, 2, 2), engine)
    native.cpu = 5
    assert native.call(LOOKUP, native.key(b"kkkk")) == RT_HASH_PYTHON
    assert native.call(UPDATE, native.key(b"kkkk"), native.value(b"vvvv"), 0) == RT_HASH_PYTHON
    assert native.charged == 0  # nothing charged before the fallback
    with pytest.raises(MapError):
        native.map.update_cpu(b"kkkk", b"vvvv", 0, 5)


# -- the kernel as the oracle of the semantics (syscall updates, deletes, next key) ---

_KERNEL_OPS = st.lists(st.tuples(st.sampled_from(["update", "delete"]), st.integers(0, 5),
                                 st.integers(0, 3), st.integers(0, 255)), max_size=30)


def _kernel_delete(fd: int, key: bytes) -> None:
    import ctypes

    import kernel_oracle

    key_buf = ctypes.create_string_buffer(key, len(key))
    attr = ctypes.create_string_buffer(160)
    struct.pack_into("<IIQ", attr, 0, fd, 0, ctypes.addressof(key_buf))
    kernel_oracle.bpf(3, attr)  # BPF_MAP_DELETE_ELEM


def _errno(fn: Any, *args: Any) -> int:
    try:
        fn(*args)
    except OSError as exc:
        return -exc.errno
    return 0


@NEEDS_KBPF
@pytest.mark.parametrize("flags", [0, 1])  # preallocated, BPF_F_NO_PREALLOC
@given(ops=_KERNEL_OPS)
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_updates_and_deletes_agree_with_the_kernel(flags: int,
                                                   ops: list[tuple[str, int, int, int]]) -> None:
    import ctypes
    import os

    import kernel_oracle

    fd = kernel_oracle.map_create_extra(MapType.HASH, 3, 2, 4, flags, 0)
    ours = create_map("h", MapType.HASH, 3, 2, 4, flags)
    assert isinstance(ours, Map)
    try:
        for op, which, update_flags, byte in ops:
            key, value = bytes([which, 7, which]), bytes([byte, which])
            if op == "update":
                buf = ctypes.create_string_buffer(value, 2)
                theirs = _errno(kernel_oracle._elem, kernel_oracle.BPF_MAP_UPDATE_ELEM, fd, key,
                                buf, update_flags)
                assert ours.update_elem(key, value, update_flags) == theirs, (op, which)
            else:
                assert ours.delete_elem(key) == _errno(_kernel_delete, fd, key)
        kernel = dict(kernel_oracle.map_items(fd, 3, 2))
        assert dict(ours) == kernel and len(ours) == len(kernel)
        native = ours.native_hash
        assert native is not None
        first = native.next_key(None)  # the kernel's get_next_key of a missing key: the first
        assert (first is None) == (not kernel) and native.next_key(b"\xff\xff\xff") == first
    finally:
        os.close(fd)


def test_a_per_cpu_map_given_more_cpus_moves_its_values_in_the_descriptor(engine: str) -> None:
    m = make_map(True, 4, 8, 4, ncpus=2)
    m[b"kkkk"] = [b"\x01" * 8, b"\x02" * 8]
    m.set_possible_cpus(3)
    native = Native(m, engine)
    assert m.native_hash is not None
    assert struct.unpack_from("<IQ", m.native_hash.mem, 28) == (3, m.base)
    native.cpu = 2
    address = native.call(LOOKUP, native.key(b"kkkk"))
    assert address == m.lookup_cpu(b"kkkk", 2) and m[b"kkkk"][2] == bytes(8)
    assert native.call(UPDATE, native.key(b"kkkk"), native.value(b"\x03" * 8), BPF_EXIST) == 0
    assert m[b"kkkk"] == [b"\x01" * 8, b"\x02" * 8, b"\x03" * 8]
