"""Robustness: bounded fuzzing of every entry point (tests/fuzzing.py), the JIT's
memory over many compile cycles, and regression tests for what fuzzing found."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from ebpfvm import EbpfVmRaw, InvalidInstruction, MapError
from ebpfvm.maps import BPF_ANY, MapType, ProgArray, QueueMap, RingBuf, create_map
from engines import ALL_ENGINES, run

# -- regressions found by the fuzzer -----------------------------------------------------------


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_empty_program_without_verifier_is_an_invalid_instruction(engine: str) -> None:
    # Found by fuzzing: b"" crashed the JIT (the entry fell through into
    # whatever followed) and made the interpreter generate invalid Python.
    vm = EbpfVmRaw(budget=100)
    vm.set_verifier(lambda code: None)
    vm.set_program(b"")
    with pytest.raises(InvalidInstruction) as info:
        run(vm, engine, bytearray(8))
    assert (info.value.pc, info.value.opcode) == (0, 0)
    vm.close()


def _hash() -> Any:
    return create_map("h", MapType.HASH, 4, 8, 4)


@pytest.mark.parametrize("call", [
    lambda m: m.lookup_elem(7),
    lambda m: m.update_elem(None, bytes(8), BPF_ANY),
    lambda m: m.update_elem(bytes(4), "eight by", BPF_ANY),
    lambda m: m.delete_elem([1, 2, 3, 4]),
    lambda m: m[1.5],
    lambda m: m.__setitem__(bytes(4), 8),
    lambda m: m.get(None),
    lambda m: 5 in m,
], ids=["lookup-int", "update-none-key", "update-str-value", "delete-list", "getitem-float",
        "setitem-int-value", "get-none", "contains-int"])
def test_map_operations_with_wrong_types_raise_map_error(call: Any) -> None:
    # Found by fuzzing: these raised TypeError (or took a list of ints as a key).
    the_map = _hash()
    the_map[b"\x01\x00\x00\x00"] = bytes(range(8))
    with pytest.raises(MapError, match="must be bytes"):
        call(the_map)
    assert dict(the_map) == {b"\x01\x00\x00\x00": bytes(range(8))}  # nothing changed


def test_bytearray_and_memoryview_keys_work_like_bytes() -> None:
    # Found by fuzzing: delete_elem(bytearray) raised "unhashable type".
    the_map = _hash()
    assert the_map.update_elem(bytearray(b"abcd"), memoryview(bytes(8)), BPF_ANY) == 0
    assert the_map.lookup_elem(memoryview(b"abcd")) == the_map.base
    assert the_map.delete_elem(bytearray(b"abcd")) == 0
    assert len(the_map) == 0


def test_queue_push_of_an_int_is_a_map_error_not_zero_bytes() -> None:
    # Found by fuzzing: push(7) pushed bytes(7), seven zero bytes.
    queue = create_map("q", MapType.QUEUE, 0, 7, 4)
    assert isinstance(queue, QueueMap)
    with pytest.raises(MapError, match="must be bytes"):
        queue.push(7)  # type: ignore[arg-type]
    assert len(queue) == 0


def test_ring_and_program_array_arguments_are_checked() -> None:
    ring = create_map("r", MapType.RINGBUF, 0, 0, 4096)
    assert isinstance(ring, RingBuf)
    with pytest.raises(MapError, match="must be bytes"):
        ring.output(3)  # type: ignore[arg-type]
    with pytest.raises(MapError, match="must be an int"):
        ring.reserve(None)  # type: ignore[arg-type]
    jumps = ProgArray("jumps", 4)
    with pytest.raises(MapError, match="must be an int"):
        jumps.get(1.0)  # type: ignore[arg-type]
    with pytest.raises(MapError, match="named by a str"):
        jumps[1] = 7  # type: ignore[assignment]
    assert len(jumps) == 0 and deque(ring.consume()) == deque()
