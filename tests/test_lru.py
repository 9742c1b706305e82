"""LRU maps (ebpfvm.lru) evict what the kernel evicts.

tests/data/elf/lru.o applies packet-driven lookups, inserts, updates and
deletes to ten small LRU maps (lru_hash of 1, 4, 16 and 200 entries, the
same with BPF_F_NO_COMMON_LRU, lru_percpu_hash common and per-CPU lists);
the kernel runs the same packets, and every map is compared after every
packet (ebpfvm.kdiff). The expected contents are the kernel's.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import pytest

import ebpfvm
from conftest import REPO
from ebpfvm import kbpf
from ebpfvm.capture import read_capture
from ebpfvm.kdiff import KernelSession, against_kernel
from ebpfvm.kernel import KernelEnv
from ebpfvm.lru import SYSCALL_CPU
from ebpfvm.mapbase import MapType
from ebpfvm.maps import create_map

EXAMPLES = REPO / "examples" / "bpf"
SAMPLE = REPO / "examples" / "data" / "sample.pcap"
LRU_O = REPO / "tests" / "data" / "elf" / "lru.o"
MAPS = ["lru1", "lru4", "lru16", "lru200", "own1", "own4", "own200", "pcpu4", "pcpu16",
        "pcpu_own16"]
"""lru.o's maps, by the operation's map number."""
RANGES = [3, 11, 35, 403, 5, 11, 403, 11, 35, 35]
"""Each map's key range (lru.c's `apply` calls): more keys than entries."""


def _unavailable() -> str | None:
    try:
        kbpf.probe()
    except kbpf.KernelError as exc:
        return str(exc)
    if not hasattr(os, "sched_getaffinity") or not {0, 1} <= os.sched_getaffinity(0):
        return "CPUs 0 and 1 are not both available"
    return None


REASON = _unavailable()
needs_kernel = pytest.mark.skipif(REASON is not None, reason=f"no kernel bpf(): {REASON}")


def _op(rng: random.Random) -> bytes:
    """One lru.c operation: lookups most often, then updates (any flags),
    then deletes."""
    kind = rng.choice([0, 0, 0, 1, 1, 2, 3])
    key = rng.randrange(1 << 16)
    return bytes([rng.randrange(len(MAPS)) | kind << 4 | rng.randrange(4) << 6,
                  key & 0xFF, key >> 8, rng.randrange(256)])


def _packets(seed: int, count: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    for _ in range(count):
        yield b"".join(_op(rng) for _ in range(16))


@needs_kernel
@pytest.mark.parametrize("cpu", [0, 1])
def test_packet_driven_operations_agree_with_the_kernel(engine: str, cpu: int) -> None:
    """Each map's key range is larger than the map and a third of the
    operations update, so the maps fill and evict all along. The map code is
    the same in every engine: the long run is the interpreter's."""
    count = 300 if cpu else 2000 if engine == "interp" else 600
    with ebpfvm.load(LRU_O) as obj:
        diff = against_kernel(obj, _packets(1000 + cpu, count), engine=engine,
                              env=KernelEnv(cpu=cpu))
        assert diff.packets == count
        assert diff.divergences == [], [str(d) for d in diff.divergences[:5]]
        assert sum(len(obj.maps[name]) for name in MAPS) > 0


@needs_kernel
def test_rate_limit_agrees_with_the_kernel_over_the_whole_sample(engine: str) -> None:
    """rate_limit's 4-entry lru_hash fills at packet 24 of the sample and
    evicts from then on: all 1200 packets agree."""
    with ebpfvm.load(EXAMPLES / "rate_limit.o") as obj:
        diff = against_kernel(obj, [frame for _ts, frame in read_capture(SAMPLE)],
                              engine=engine)
    assert diff.packets == 1200
    assert diff.divergences == [], [str(d) for d in diff.divergences[:5]]


def _fill(obj: Any, session: KernelSession, rng: random.Random) -> None:
    """Python-side updates and lookups on both sides, from CPU 0 (the CPU
    ebpfvm's Python-side operations stand for)."""
    os.sched_setaffinity(0, {SYSCALL_CPU})
    try:
        for _ in range(60):
            number = rng.randrange(len(MAPS))
            name, key = MAPS[number], rng.randrange(RANGES[number]).to_bytes(4, "little")
            ours, kernel = obj.maps[name], session.maps[name]
            if rng.random() < 0.3:
                assert ours.get(key) == kernel.lookup(key)  # marks nothing on either side
                continue
            value = rng.randrange(1 << 32).to_bytes(4, "little")
            ours[key] = value
            kernel.update(key, value)
    finally:
        os.sched_setaffinity(0, {session.cpu})


@needs_kernel
def test_python_updates_then_program_lookups_agree_with_the_kernel(engine: str) -> None:
    """Updates from Python fill the maps on CPU 0 (ebpfvm) and through bpf()
    on CPU 0 (kernel); the program then runs on CPU 1, whose local lists
    start empty, so it takes nodes from CPU 0's (steals) and the global
    lists. Compared after every packet."""
    rng = random.Random(7)
    env = KernelEnv(cpu=1)
    with ebpfvm.load(LRU_O) as obj, KernelSession(obj, env=env) as session:
        for round_number in range(4):
            _fill(obj, session, rng)
            diff = against_kernel(obj, _packets(round_number, 150), engine=engine, env=env,
                                  kernel=session)
            assert diff.divergences == [], [str(d) for d in diff.divergences[:5]]


def test_no_common_lru_rounds_the_entries_to_the_cpus() -> None:
    """With BPF_F_NO_COMMON_LRU every CPU's lists get the same number of
    nodes: a 1-entry map on 2 possible CPUs holds 2 entries (the kernel
    rounds max_entries up to a multiple of the CPUs; checked with bpf())."""
    own = create_map("own", MapType.LRU_HASH, 4, 4, 1, flags=2)
    common = create_map("common", MapType.LRU_HASH, 4, 4, 1)
    assert own.max_entries == 2 and common.max_entries == 1
    for number in range(5):
        own[number.to_bytes(4, "little")] = bytes(4)
        common[number.to_bytes(4, "little")] = bytes(4)
    assert len(common) == 1 and list(common) == [(4).to_bytes(4, "little")]
    # Python updates run on CPU 0, whose lists hold 1 of the 2 nodes.
    assert len(own) == 1


def test_a_failed_update_of_a_full_lru_hash_still_evicts() -> None:
    """An lru_hash update takes a free node before it checks its flags, as
    the kernel's: BPF_NOEXIST on a present key fails with EEXIST, yet a full
    1-entry map first evicted that very key to make the node, so the key is
    then new and the update succeeds (as bpf() does here)."""
    m = create_map("m", MapType.LRU_HASH, 4, 4, 1)
    key = bytes(4)
    m[key] = b"\1\0\0\0"
    assert m.update_elem(key, b"\2\0\0\0", 1) == 0  # BPF_NOEXIST
    assert m[key] == b"\2\0\0\0"
