"""Native LRU map lookups (issue 15): a program's bpf_map_lookup_elem on an
lru_hash or lru_percpu_hash map runs in the runtime (rt_lru.h: the key index
and reference bytes in the map's native block), its updates and deletes in
Python (ebpfvm.lru picks the slots). Each sequence of lookups, updates and
deletes on full maps runs on every engine with native helpers linked and is
compared with the interpreter, which always calls the Python helpers: same
r0, same contents (so the same evictions), same reference bytes, same
instruction count, the same typed fault. The LRU lists themselves are
compared with the kernel by tests/test_lru.py."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebpfvm import EbpfVmRaw, assemble
from ebpfvm.errors import EbpfError
from ebpfvm.kernel import KernelEnv, kernel_helpers
from ebpfvm.mapbase import MapType
from ebpfvm.mapflags import MapFlag
from ebpfvm.maps import Map, map_helpers
from ebpfvm.percpu import PerCpuMap
from engines import ALL_ENGINES, run
from test_native import native

COMMON, PERCPU_LISTS, LRU_PERCPU = 0x1100, 0x1200, 0x1300
HANDLES = (COMMON, PERCPU_LISTS, LRU_PERCPU)
WILD = 0x1234
TOP = (1 << 64) - 2
Op = tuple[str, int, int]
"""(lookup, update or delete; the key; an update's flags)."""


def _maps() -> dict[int, Any]:
    """Full maps: every slot taken from Python before the program runs."""
    maps: dict[int, Any] = {
        COMMON: Map("lru", MapType.LRU_HASH, 4, 8, 8, ncpus=2),
        PERCPU_LISTS: Map("lru_own", MapType.LRU_HASH, 4, 8, 8,
                          flags=MapFlag.NO_COMMON_LRU, ncpus=2),
        LRU_PERCPU: PerCpuMap("lru_pcpu", MapType.LRU_PERCPU_HASH, 4, 8, 8, ncpus=2),
    }
    for handle, target in maps.items():
        target.handle = handle
        for key in range(100, 100 + target.max_entries):
            target.update_elem(key.to_bytes(4, "little"), (key * 3).to_bytes(8, "little"))
    return maps


def _state(maps: dict[int, Any]) -> dict[int, Any]:
    """Each map's keys in iteration order, its values (every CPU's) and refs."""
    found: dict[int, Any] = {}
    for handle, target in maps.items():
        keys = [bytes(key) for key in target]
        found[handle] = (keys, bytes(target.slab), bytes(target.native_hash.refs),
                         len(target))
    return found


def _op(handle: int, op: Op) -> str:
    kind, key, flags = op
    head = f"mov r1, {key}\nstxw [r10-4], r1\nlddw r1, {handle:#x}\nmov r2, r10\nadd r2, -4\n"
    if kind == "lookup":
        return head + "call 1\nmul r6, 3\njeq r0, 0, +4\nldxdw r1, [r0]\nadd r6, r1\n" \
            "add r1, 1\nstxdw [r0], r1\n"
    if kind == "update":
        return f"lddw r1, {key * 7 + 1:#x}\nstxdw [r10-16], r1\n" + head + \
            f"mov r3, r10\nadd r3, -16\nmov r4, {flags}\ncall 2\nmul r6, 5\nadd r6, r0\n"
    return head + "call 3\nmul r6, 7\nadd r6, r0\n"


def _outcome(engine: str, source: str) -> tuple[Any, ...]:
    maps = _maps()
    env = KernelEnv(seed=5, cpu=1)
    vm = EbpfVmRaw(assemble(source))
    for key, helper in kernel_helpers(env).items():
        vm.register_helper(key, helper)
    for key, helper in map_helpers(maps, lambda: env.cpu).items():
        vm.register_helper(key, helper)
    try:
        result: Any = run(vm, engine, bytearray(16))
    except EbpfError as error:
        cause = getattr(error, "cause", None)
        result = (type(error).__name__, str(error), getattr(error, "pc", None),
                  type(cause).__name__,
                  *(getattr(cause, name, None) for name in ("pc", "address", "size", "access")))
    return result, _state(maps), vm.last_instruction_count


def _same(engine: str, source: str) -> tuple[Any, ...]:
    expected = _outcome("interp", source)
    with native(True):
        got = _outcome(engine, source)
    assert got == expected
    return got


def _program(ops: list[tuple[int, Op]]) -> str:
    return "mov r6, 0\n" + "".join(_op(handle, op) for handle, op in ops) + "mov r0, r6\nexit\n"


KEYS = st.one_of(st.integers(0, 11), st.integers(100, 115))
OPS = st.tuples(st.sampled_from(HANDLES),
                st.tuples(st.sampled_from(["lookup", "lookup", "lookup", "update", "delete"]),
                          KEYS, st.sampled_from([0, 0, 1, 2])))


@pytest.mark.parametrize("engine", [name for name in ALL_ENGINES if name != "interp"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, min_size=1, max_size=60))
def test_random_sequences(engine: str, ops: list[tuple[int, Op]]) -> None:
    _same(engine, _program(ops))


def _cycle(handle: int) -> list[tuple[int, Op]]:
    """Look some old keys up (their bits set), then insert new keys, which
    evicts; deletes, NOEXIST and EXIST updates in between."""
    ops: list[tuple[int, Op]] = []
    for round_ in range(3):
        ops += [(handle, ("lookup", key, 0)) for key in range(100, 108, 2)]
        ops += [(handle, ("update", key, 0)) for key in range(round_ * 6, round_ * 6 + 6)]
        ops += [(handle, ("delete", 101 + round_, 0)), (handle, ("lookup", round_, 0))]
        ops += [(handle, ("update", 200 + round_, 1)), (handle, ("update", 103, 2))]
    return ops


@pytest.mark.parametrize("handle", HANDLES)
def test_lookups_then_evictions(engine: str, handle: int) -> None:
    _same(engine, _program(_cycle(handle)))


@pytest.mark.parametrize("handle", HANDLES)
@pytest.mark.parametrize("key", [0, WILD, TOP])
@pytest.mark.parametrize("number", [1, 2, 3])
def test_wild_key_pointers(engine: str, handle: int, key: int, number: int) -> None:
    rest = f"lddw r3, {TOP:#x}\nmov r4, 0\n" if number == 2 else ""
    source = f"lddw r1, {handle:#x}\nlddw r2, {key:#x}\n{rest}call {number}\nexit\n"
    outcome = _same(engine, source)
    assert isinstance(outcome[0], tuple) and outcome[0][3] == "MemoryFault"


@pytest.mark.parametrize("engine", [name for name in ALL_ENGINES if name != "interp"])
def test_lookups_never_enter_python(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The common path: found and missing keys, no Python lookup at all."""
    calls: list[bytes] = []
    original = Map.lookup_elem

    def counted(self: Map, key: bytes) -> int:
        calls.append(key)
        return original(self, key)

    monkeypatch.setattr(Map, "lookup_elem", counted)
    ops = [(handle, ("lookup", key, 0)) for handle in HANDLES for key in (100, 5, 107)]
    _same(engine, _program(ops))
    assert len(calls) == len(ops)  # the interpreter's Python lookups only
