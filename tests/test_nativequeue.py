"""Queue and stack maps in native memory (issue 15): the Python layout
(ebpfvm.nativequeue under ebpfvm.maps.QueueMap) against the kernel, and the
native runtime (src/ebpfvm/native/rt_queue.o, run as plain programs on every
engine by tests/nhash_harness.py) against the Python helpers over twin maps:
same results, charges, blocks and values written, also from corrupted
blocks, and wild pointers fault with their address and size."""

from __future__ import annotations

import ctypes
import os
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kernel_oracle
from conftest import NEEDS_KBPF
from ebpfvm.errors import EbpfError
from ebpfvm.maps import MapType, QueueMap, create_map
from nhash_harness import QUEUE_FUNCTIONS, VALUE_AT, Reference, memory_fault_of, run, runtime_for

PUSH, PEEK, POP = range(3)
HELPER_NAMES = ("bpf_map_push_elem", "bpf_map_peek_elem", "bpf_map_pop_elem")
M64 = (1 << 64) - 1
M32 = (1 << 32) - 1
TYPES = {"queue": MapType.QUEUE, "stack": MapType.STACK}


class NativeQueueRun:
    """One queue or stack map run by the native runtime on one engine."""

    def __init__(self, the_map: QueueMap, engine: str) -> None:
        self.map = the_map
        the_map.handle = 7
        self.rt = runtime_for(engine, QUEUE_FUNCTIONS)
        self.rt.attach(the_map.native_queue.mem)

    def call(self, number: int, *args: int) -> int:
        words = (number, self.map.native_queue.address, *args)
        struct.pack_into(f"<{len(words)}Q", self.rt.scratch, 0, *(w & M64 for w in words))
        return run(self.rt.vm, self.rt.engine)

    def value(self, value: bytes) -> int:
        self.rt.scratch[VALUE_AT : VALUE_AT + len(value)] = value
        return self.rt.args + VALUE_AT


def _twins(kind: str, value_size: int, max_entries: int,
           engine: str) -> tuple[NativeQueueRun, Reference]:
    native = NativeQueueRun(QueueMap("q", TYPES[kind], value_size, max_entries), engine)
    native.rt.charged = 0
    ref = Reference(QueueMap("q", TYPES[kind], value_size, max_entries))  # type: ignore[arg-type]
    return native, ref


def _outcome(fn: Any) -> Any:
    try:
        return fn()
    except EbpfError as exc:
        return type(exc).__name__


def _apply(native: NativeQueueRun, ref: Reference, op: tuple[int, int, bytes]) -> None:
    number, flags, value = op
    args = []
    for side in (native, ref):
        pointer = side.value(value) if number == PUSH else side.value(bytes(len(value)))
        args.append([pointer, flags] if number == PUSH else [pointer])
    got = _outcome(lambda: native.call(number, *args[0]))
    expected = _outcome(lambda: ref.call(HELPER_NAMES[number], *args[1]))
    assert got == (expected & M64 if isinstance(expected, int) else expected), op
    size = native.map.value_size
    assert native.rt.scratch[VALUE_AT : VALUE_AT + size] == ref.scratch[VALUE_AT : VALUE_AT + size]


def _same_state(native: NativeQueueRun, ref: Reference) -> None:
    a, b = native.map.native_queue.mem, ref.map.native_queue.mem  # type: ignore[attr-defined]
    assert a[:32] == b[:32] and a[40:] == b[40:]  # all but the slab address
    assert list(native.map) == list(ref.map) and len(native.map) == len(ref.map)
    assert native.rt.charged == ref.charged


@st.composite
def _cases(draw: Any) -> tuple[str, int, int, list[tuple[int, int, bytes]]]:
    kind = draw(st.sampled_from(sorted(TYPES)))
    value_size = draw(st.integers(1, 40))
    max_entries = draw(st.integers(1, 5))
    op = st.tuples(st.integers(0, 2), st.integers(0, 3),
                   st.binary(min_size=value_size, max_size=value_size))
    return kind, value_size, max_entries, draw(st.lists(op, min_size=1, max_size=30))


_SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(HealthCheck))


@given(case=_cases())
@_SETTINGS
def test_runtime_agrees_with_the_python_helpers(engine: str, case: Any) -> None:
    kind, value_size, max_entries, ops = case
    native, ref = _twins(kind, value_size, max_entries, engine)
    for op in ops:
        _apply(native, ref, op)
        _same_state(native, ref)


@given(case=_cases(), head=st.integers(0, M32), tail=st.integers(0, M32))
@_SETTINGS
def test_runtime_agrees_on_corrupted_blocks(engine: str, case: Any, head: int,
                                            tail: int) -> None:
    kind, value_size, max_entries, ops = case
    native, ref = _twins(kind, value_size, max_entries, engine)
    for op in ops[: len(ops) // 2]:
        _apply(native, ref, op)
    for mem in (native.map.native_queue.mem, ref.map.native_queue.mem):  # type: ignore[attr-defined]
        struct.pack_into("<II", mem, 40, head % (max_entries + 3),
                         tail % (max_entries + 3) if tail & 1 else tail)
    for op in ops:
        _apply(native, ref, op)
        _same_state(native, ref)


@pytest.mark.parametrize("kind", sorted(TYPES))
@pytest.mark.parametrize("number", [PUSH, PEEK, POP])
def test_wild_pointers_fault_with_address_and_size(engine: str, kind: str, number: int) -> None:
    native, ref = _twins(kind, 12, 3, engine)
    for side_map in (native.map, ref.map):
        side_map.push(b"x" * 12)  # type: ignore[attr-defined]
    faults = []
    for side in (native, ref):
        args = [0xDEAD_0000, 0] if number == PUSH else [0xDEAD_0000]
        faults.append(memory_fault_of(side, native, number, HELPER_NAMES[number], args))
    access = "load" if number == PUSH else "store"
    assert faults == [(0xDEAD_0000, 12, access)] * 2
    assert list(native.map) == [b"x" * 12]  # a value not written stays in the map


def test_empty_maps_answer_enoent_before_reading_the_pointer(engine: str) -> None:
    native, _ref = _twins("stack", 8, 2, engine)
    assert native.call(POP, 0xDEAD_0000) == -2 & M64
    assert native.call(PEEK, 0xDEAD_0000) == -2 & M64


# -- the kernel as the oracle of the semantics ------------------------------------------

BPF_MAP_LOOKUP_AND_DELETE_ELEM = 21


def _kernel(cmd: int, fd: int, value: bytes, flags: int = 0) -> tuple[int, bytes]:
    buf = ctypes.create_string_buffer(value, len(value))
    attr = ctypes.create_string_buffer(160)
    struct.pack_into("<IIQQQ", attr, 0, fd, 0, 0, ctypes.addressof(buf), flags)
    try:
        kernel_oracle.bpf(cmd, attr)
    except OSError as exc:
        return -exc.errno, b""
    return 0, buf.raw


def _ours(the_map: QueueMap, number: int, value: bytes, flags: int) -> tuple[int, bytes]:
    if number == PUSH:
        return the_map.push_elem(value, flags), b""
    found = the_map.peek_elem() if number == PEEK else the_map.pop_elem()
    return (-2, b"") if found is None else (0, found)


@NEEDS_KBPF
@pytest.mark.parametrize("kind", sorted(TYPES))
@given(ops=st.lists(st.tuples(st.integers(0, 2), st.sampled_from([0, 2]), st.integers(0, 255)),
                    max_size=30))
@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_push_peek_pop_agree_with_the_kernel(kind: str, ops: list[tuple[int, int, int]]) -> None:
    fd = kernel_oracle.map_create(TYPES[kind], 0, 4, 3)
    ours = create_map("q", TYPES[kind], 0, 4, 3)
    assert isinstance(ours, QueueMap)
    commands = (kernel_oracle.BPF_MAP_UPDATE_ELEM, kernel_oracle.BPF_MAP_LOOKUP_ELEM,
                BPF_MAP_LOOKUP_AND_DELETE_ELEM)
    try:
        for number, flags, byte in ops:
            value = bytes([byte]) * 4
            theirs = _kernel(commands[number], fd, value if number == PUSH else bytes(4),
                             flags if number == PUSH else 0)
            theirs = (theirs[0], b"") if number == PUSH else theirs
            assert _ours(ours, number, value, flags) == theirs, (number, flags)
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", sorted(TYPES))
def test_items_are_oldest_first_and_iteration_next_out_first(kind: str) -> None:
    m = QueueMap("q", TYPES[kind], 1, 3)
    for value in (b"a", b"b", b"c"):
        m.push(value)
    assert m.push_elem(b"d", 2) == 0  # BPF_EXIST: the oldest (a) goes
    assert m.items == [b"b", b"c", b"d"]
    assert list(m) == ([b"b", b"c", b"d"] if kind == "queue" else [b"d", b"c", b"b"])
