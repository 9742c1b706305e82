"""uringbuf (issue 13 point 3): BPF_MAP_TYPE_USER_RINGBUF, drained by
bpf_user_ringbuf_drain from every packet program type, in every engine
(tests/data/elf/uringbuf.c). Each scenario produces records from Python and
drains them; where bpf() works the same scenario runs in the kernel, whose
map is produced into through its mmap'ed pages as libbpf's user_ring_buffer
does, and every step's results and positions must agree. Without bpf() the
expected values reasoned from the kernel's rules (kernel/bpf/ringbuf.c's
peek and drain) are checked."""

from __future__ import annotations

import mmap
import random
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol

import pytest

import ebpfvm
import kernel_oracle
from conftest import NEEDS_KBPF
from ebpfvm.errors import BudgetExceeded, MapError
from ebpfvm.mapbase import MapType
from ebpfvm.maps import create_map
from ebpfvm.userringbuf import BUSY, DISCARD, MAX_SAMPLES, ReserveError, UserRingBuf

OBJECT = Path(__file__).parent / "data" / "elf" / "uringbuf.o"
SIZE = 4096
FRAME = bytes(12) + b"\x08\x00" + bytes.fromhex(
    "4500001c00000000401100007f0000017f000001") + bytes.fromhex("0001000200080000") + bytes(18)
"""An IPv4/UDP frame (the kernel refuses shorter IPv4 frames for skb programs)."""
PROGRAMS = {"drain_xdp": "xdp", "drain_tc": "skb", "drain_sk": "skb", "drain_cg": "skb"}
E2BIG, EINVAL, EBUSY = 7, 22, 16
M64 = (1 << 64) - 1


class Producer(Protocol):
    """What a scenario does to a ring: libbpf's producer calls and raw writes."""

    producer_pos: int

    @property
    def consumer_pos(self) -> int: ...
    def reserve(self, size: int) -> Any: ...
    def submit(self, sample: Any) -> None: ...
    def discard(self, sample: Any) -> None: ...
    def push(self, data: bytes) -> None: ...
    def write(self, position: int, data: bytes) -> None: ...


class KernelRing:
    """A kernel user ring buffer's pages mapped as libbpf maps them: the
    consumer page read-only, the producer page and the data pages (twice)
    read-write. The producer calls follow libbpf's."""

    def __init__(self, fd: int) -> None:
        page = mmap.PAGESIZE
        self.consumer = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=0)
        self.pages = mmap.mmap(fd, page + 2 * SIZE, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE, offset=page)
        self.data = page
        self._samples: dict[int, int] = {}

    def close(self) -> None:
        self.consumer.close()
        self.pages.close()

    @property
    def consumer_pos(self) -> int:
        return int(struct.unpack_from("<Q", self.consumer, 0)[0])

    @property
    def producer_pos(self) -> int:
        return int(struct.unpack_from("<Q", self.pages, 0)[0])

    @producer_pos.setter
    def producer_pos(self, value: int) -> None:
        struct.pack_into("<Q", self.pages, 0, value & M64)

    def write(self, position: int, data: bytes) -> None:
        at = self.data + (position & (SIZE - 1))
        self.pages[at : at + len(data)] = data

    def reserve(self, size: int) -> int:
        total = (size + 15) & ~7
        if SIZE - (self.producer_pos - self.consumer_pos) < total:
            raise ReserveError("ring", size, 28)
        position = self.producer_pos
        self.write(position, struct.pack("<II", size | BUSY, 0))
        self.producer_pos = position + total
        self._samples[position] = size
        return position

    def fill(self, sample: int, data: bytes) -> None:
        self.write(sample + 8, data)

    def _commit(self, sample: int, discard: bool) -> None:
        at = self.data + (sample & (SIZE - 1))
        header = struct.unpack_from("<I", self.pages, at)[0] & ~BUSY
        struct.pack_into("<I", self.pages, at, header | (DISCARD if discard else 0))

    def submit(self, sample: int) -> None:
        self._commit(sample, False)

    def discard(self, sample: int) -> None:
        self._commit(sample, True)

    def push(self, data: bytes) -> None:
        sample = self.reserve(len(data))
        self.fill(sample, data)
        self.submit(sample)


def _fill(ring: Any, sample: Any, data: bytes) -> None:
    if isinstance(ring, KernelRing):
        ring.fill(sample, data)
    else:
        sample[:] = data


def _records(count: int, size: int, seed: int = 0) -> Iterator[bytes]:
    for index in range(count):
        yield bytes((seed + index * 7 + at) & 0xFF for at in range(size))


# A step: (what to do to the ring, the drain's flags, stop_after); each
# scenario's steps run in order on one fresh object.
Step = tuple[Callable[[Any], object], int, int]


def _push(*records: bytes) -> Callable[[Any], object]:
    return lambda ring: [ring.push(record) for record in records]


def _busy_then_submit() -> list[Step]:
    held: list[Any] = []

    def first(ring: Any) -> None:
        held.clear()
        ring.push(b"A" * 9)
        held.append(ring.reserve(12))
        _fill(ring, held[0], b"B" * 12)
        ring.push(b"C" * 3)

    def second(ring: Any) -> None:
        ring.submit(held[0])

    return [(first, 0, 0), (second, 0, 0)]


def _discarded(ring: Any) -> None:
    ring.push(b"first record")
    sample = ring.reserve(30)
    _fill(ring, sample, b"x" * 30)
    ring.discard(sample)
    ring.push(b"third")


def _bogus_length(ring: Any) -> None:
    ring.push(b"good")
    ring.write(ring.producer_pos, struct.pack("<II", 100, 0))  # 100 bytes, 16 produced
    ring.producer_pos += 16


def _huge_length(ring: Any) -> None:
    ring.write(ring.producer_pos, struct.pack("<II", 5000, 0))  # longer than the ring
    ring.producer_pos += 8192


def _dynptr_too_big(ring: Any) -> None:
    ring.write(ring.producer_pos, struct.pack("<II", DISCARD - 1, 0))
    ring.producer_pos += 1 << 31


def _unaligned(ring: Any) -> None:
    ring.push(b"ok")
    ring.producer_pos += 4


def _behind(ring: Any) -> None:
    ring.push(b"zz")
    ring.producer_pos = 0


def _both_bits(ring: Any) -> None:
    ring.write(ring.producer_pos, struct.pack("<II", 4 | BUSY | DISCARD, 0))
    ring.producer_pos += 16
    ring.push(b"after")


def _wrap(ring: Any) -> None:
    ring.push(bytes(3000))


def _all_discarded(ring: Any) -> None:
    """Every header in the ring says "discarded, 0 bytes", and the producer
    is 2 MiB ahead: the drain skips 8-byte records up to its limit."""
    for position in range(0, SIZE, 8):
        ring.write(position, struct.pack("<II", DISCARD, 0))
    ring.producer_pos = ring.consumer_pos + (2 << 20)


SCENARIOS: dict[str, list[Step]] = {
    "empty": [(_push(), 0, 0)],
    "records": [(_push(b"", b"hello", *_records(2, 16), *_records(2, 20, 9)), 0, 0)],
    "stop": [(_push(*_records(5, 24)), 0, 2), (_push(), 0, 0)],
    "flags": [(_push(b"a"), 1, 0), (_push(b"b"), 2, 0), (_push(b"c"), 3, 0),
              (_push(b"d"), 4, 0), (_push(), 8, 0), (_push(), 0, 0)],
    "discarded": [(_discarded, 0, 0)],
    "busy": _busy_then_submit(),
    "full": [(_push(bytes(range(256)) * 15 + bytes(248)), 0, 0), (_push(b"next"), 0, 0)],
    "wrap": [(_wrap, 0, 0), (_push(bytes(range(250)) * 8), 0, 0), (_push(b"end"), 0, 0)],
    "bogus_length": [(_bogus_length, 0, 0), (_push(), 0, 0)],
    "huge_length": [(_huge_length, 0, 0)],
    "dynptr_too_big": [(_dynptr_too_big, 0, 0)],
    "unaligned": [(_unaligned, 0, 0)],
    "behind": [(_behind, 0, 0)],
    "both_bits": [(_both_bits, 0, 0)],
    "sample_limit": [(_all_discarded, 0, 0)],
}

Result = tuple[int, int, int, int, int, int]
"""(drain result, callback calls, what they read, nested drain's result,
consumer position, producer position) after a step."""


def _state(flags: int, stop_after: int) -> bytes:
    return struct.pack("<6Q", flags, stop_after, 0, 0, 0, 0)


def _result(state: bytes, ring: Any) -> Result:
    ret, calls, folded, nested = struct.unpack_from("<4Q", state, 16)
    return ret, calls, folded, nested, ring.consumer_pos, ring.producer_pos


def _run_ebpfvm(engine: str, program: str, steps: list[Step]) -> list[Result]:
    results = []
    with ebpfvm.load(OBJECT) as obj:
        ring = obj.maps["ring"]
        make = obj.xdp if PROGRAMS.get(program, "xdp") == "xdp" else obj.skb
        with make(program, engine=engine) as runner:
            for produce, flags, stop_after in steps:
                produce(ring)
                obj.maps["state"][bytes(4)] = _state(flags, stop_after)
                runner.run(FRAME)
                results.append(_result(obj.maps["state"][bytes(4)], ring))
    return results


_KERNEL: dict[tuple[str, str], list[Result]] = {}


def _run_kernel(program: str, scenario: str) -> list[Result]:
    if (program, scenario) not in _KERNEL:
        with kernel_oracle.kernel_object(OBJECT) as (maps, load):
            ring = KernelRing(maps["ring"].fd)
            prog = load(program)
            results = []
            try:
                for produce, flags, stop_after in SCENARIOS[scenario]:
                    produce(ring)
                    maps["state"].update(bytes(4), _state(flags, stop_after))
                    prog.test_run(FRAME)
                    results.append(_result(maps["state"].lookup(bytes(4)), ring))
            finally:
                prog.close()
                ring.close()
        _KERNEL[program, scenario] = results
    return _KERNEL[program, scenario]


@NEEDS_KBPF
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_drain_agrees_with_the_kernel(engine: str, scenario: str) -> None:
    assert _run_ebpfvm(engine, "drain_xdp", SCENARIOS[scenario]) == \
        _run_kernel("drain_xdp", scenario)


@NEEDS_KBPF
@pytest.mark.parametrize("program", ["drain_tc", "drain_sk", "drain_cg", "drain_nested"])
def test_every_program_type_agrees_with_the_kernel(engine: str, program: str) -> None:
    for scenario in ("records", "stop"):
        assert _run_ebpfvm(engine, program, SCENARIOS[scenario]) == \
            _run_kernel(program, scenario)


def _neg(errno: int) -> int:
    return -errno & M64


# (drain result, callback calls, consumer position) per step, from the
# kernel's rules, checked with or without bpf().
REASONED = {
    "empty": [(0, 0, 0)],
    "records": [(6, 6, 8 + 16 + 24 + 24 + 32 + 32)],
    "stop": [(2, 2, 64), (3, 3, 160)],  # 24-byte samples: 32 bytes each
    "flags": [(1, 1, 16), (1, 1, 32), (1, 1, 48), (_neg(EINVAL), 0, 48), (_neg(EINVAL), 0, 48),
              (1, 1, 64)],
    "discarded": [(2, 2, 24 + 40 + 16)],
    "busy": [(1, 1, 24), (2, 2, 24 + 24 + 16)],  # stops at the busy record, then drains it
    "full": [(1, 1, 4096), (1, 1, 4096 + 16)],  # a 4088-byte sample fills the whole ring
    "bogus_length": [(_neg(EINVAL), 1, 16), (_neg(EINVAL), 0, 16)],
    "huge_length": [(_neg(E2BIG), 0, 0)],
    "dynptr_too_big": [(_neg(E2BIG), 0, 0)],
    "unaligned": [(_neg(EINVAL), 0, 0)],
    "behind": [(0, 0, 0)],
    "both_bits": [(1, 1, 32)],  # DISCARD wins: skipped, not waited for
    "sample_limit": [(0, 0, 128 * 1024 * 8)],  # 131072 records looked at, all skipped
}


@pytest.mark.parametrize("scenario", sorted(REASONED))
def test_drain_results(engine: str, scenario: str) -> None:
    got = [(ret, calls, consumer) for ret, calls, _h, _n, consumer, _p
           in _run_ebpfvm(engine, "drain_xdp", SCENARIOS[scenario])]
    assert got == REASONED[scenario]


def test_a_nested_drain_of_the_same_ring_is_busy(engine: str) -> None:
    results = _run_ebpfvm(engine, "drain_nested", [(_push(b"one"), 0, 0)])
    assert results[0][:4] == (1, 1, 0, _neg(EBUSY))


def test_the_callback_reads_the_sample_through_its_dynptr(engine: str) -> None:
    """A 16-byte sample: bpf_dynptr_read of 16 bytes at 0 and 4 at 12, and
    its first byte through bpf_dynptr_data, folded as uringbuf.c does."""
    sample = bytes(range(1, 17))
    words = struct.unpack("<2Q", sample)
    tail = struct.unpack_from("<I", sample, 12)[0]
    expected = (((words[0] ^ (words[1] << 1)) & M64) * 31 + tail) * 31 + sample[0]
    results = _run_ebpfvm(engine, "drain_xdp", [(_push(sample), 0, 0)])
    assert results[0][2] == expected & M64
    short = _run_ebpfvm(engine, "drain_xdp", [(_push(b"\x05"), 0, 0)])  # reads past it fail
    assert short[0][2] == ((_neg(E2BIG) * 31 + _neg(E2BIG)) * 31 + 5) & M64


def test_the_producer_api() -> None:
    ring = create_map("r", MapType.USER_RINGBUF, 0, 0, SIZE)
    assert isinstance(ring, UserRingBuf)
    sample = ring.reserve(5)
    sample[:] = b"hello"
    assert ring.producer_pos == 16 and len(ring) == 16
    assert ring.slab[0:8] == struct.pack("<II", 5 | BUSY, 0)
    ring.submit(sample)
    assert ring.slab[0:13] == struct.pack("<II", 5, 0) + b"hello"
    with pytest.raises(MapError):
        ring.submit(sample)  # given back already
    with pytest.raises(ReserveError) as info:
        ring.reserve(SIZE)
    assert info.value.errno == E2BIG
    ring.push(bytes(SIZE - 16 - 8))  # fills the ring exactly
    with pytest.raises(ReserveError) as info:
        ring.push(b"")
    assert info.value.errno == 28  # ENOSPC
    with pytest.raises(MapError):
        ring.push("text")  # type: ignore[arg-type]
    assert "4096 of 4096 bytes" in ring.entries_text(5)[0]


def test_a_wrapping_sample_is_written_to_both_copies() -> None:
    ring = create_map("r", MapType.USER_RINGBUF, 0, 0, SIZE)
    assert isinstance(ring, UserRingBuf)
    ring.producer_pos = ring._consumer = SIZE - 16  # as if drained up to there
    ring.push(bytes(range(40)))
    assert ring.slab[SIZE - 8 : SIZE + 32] == bytes(range(40))
    assert ring.slab[0:32] == bytes(range(8, 40))  # the start of the ring, as mapped twice


@pytest.mark.parametrize("shape", [(4, 0, SIZE, 0), (0, 4, SIZE, 0), (0, 0, 5000, 0),
                                   (0, 0, SIZE, 1)])
def test_map_creation_checks(shape: tuple[int, int, int, int]) -> None:
    """The kernel refuses a key or value size, a size not a power-of-2
    multiple of the page, and any flag but BPF_F_NUMA_NODE (EINVAL)."""
    key, value, entries, flags = shape
    with pytest.raises(MapError):
        create_map("r", MapType.USER_RINGBUF, key, value, entries, flags=flags)


@contextmanager
def _kernel_map(key: int, value: int, entries: int, flags: int) -> Iterator[int]:
    fd = kernel_oracle.map_create_extra(31, key, value, entries, flags, 0)
    try:
        yield fd
    finally:
        import os

        os.close(fd)


@NEEDS_KBPF
@pytest.mark.parametrize("shape", [(4, 0, SIZE, 0), (0, 4, SIZE, 0), (0, 0, 5000, 0),
                                   (0, 0, SIZE, 1), (0, 0, SIZE, 4), (0, 0, 2 * SIZE, 0)])
def test_map_creation_agrees_with_the_kernel(shape: tuple[int, int, int, int]) -> None:
    key, value, entries, flags = shape
    try:
        with _kernel_map(key, value, entries, flags):
            kernel_ok = True
    except OSError:
        kernel_ok = False
    try:
        create_map("r", MapType.USER_RINGBUF, key, value, entries, flags=flags)
        ours = True
    except MapError:
        ours = False
    assert ours == kernel_ok


def test_ebpfvm_maps_lists_it() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ebpfvm.cli", "maps", str(OBJECT)],
                         capture_output=True, text=True, check=True).stdout
    assert "ring: user_ringbuf, 4,096 bytes" in out or "ring: user_ringbuf, 4096 bytes" in out


def test_the_cli_preloads_records() -> None:
    """--map pushes each value (hex) as a record; drain_xdp then drains them
    (the kernel's count of two records: checked above)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ebpfvm.cli", "run", str(OBJECT), "--function",
                          "drain_xdp", "--map", 'ring=[[0, "68656c6c6f"], [1, "00"]]',
                          "--entries", "5"], capture_output=True, text=True)
    assert "0 of 4096 bytes produced and not drained" in out.stdout, out.stdout + out.stderr
    assert "ret: 2, calls: 2" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "ebpfvm.cli", "run", str(OBJECT), "--function",
                          "drain_xdp", "--map", 'ring=[[0, 5]]'], capture_output=True, text=True)
    assert bad.returncode != 0 and "hex string" in bad.stderr


@NEEDS_KBPF
def test_the_kernel_diff_copies_the_records() -> None:
    """--against-kernel produces the preloaded records into the kernel's
    ring too, so both sides drain the same samples (the state map, which
    holds what the callback read, is compared after every packet)."""
    import subprocess
    import sys

    pcap = Path(__file__).resolve().parent.parent / "examples" / "data" / "sample.pcap"
    out = subprocess.run([sys.executable, "-m", "ebpfvm.cli", "run", str(OBJECT), "--function",
                          "drain_xdp", "--pcap", str(pcap), "--against-kernel", "--map",
                          'ring=[[0, "68656c6c6f"], [1, "00112233445566778899aabbccddeeff"]]'],
                         capture_output=True, text=True)
    assert " 0 diverge" in out.stdout, out.stdout + out.stderr


def _hostile(seed: int) -> Callable[[Any], object]:
    """A producer that pushes a few records, then writes random headers
    (lengths up to past the ring, random BUSY and DISCARD bits) and moves
    the producer position anywhere near (unaligned, behind, a ring ahead)."""
    def produce(ring: Any) -> None:
        rng = random.Random(seed)
        for _ in range(rng.randrange(4)):
            ring.push(bytes(rng.randrange(256) for _ in range(rng.randrange(100))))
        for _ in range(rng.randrange(4)):
            length = rng.choice([rng.randrange(200), 5000, DISCARD - 1, 4088])
            bits = rng.choice([0, 0, BUSY, DISCARD, BUSY | DISCARD])
            ring.write(rng.randrange(0, SIZE, 8), struct.pack("<II", length | bits, 0))
        ring.producer_pos = ring.consumer_pos + rng.choice(
            [ring.producer_pos - ring.consumer_pos, 4, 8 * rng.randrange(64), 8192,
             -16 if ring.consumer_pos >= 16 else 4,
             8 * rng.randrange(512) + 4])
    return produce


def _later(ring: Any) -> None:
    """One more record where there is room (none when the producer is a
    ring or more ahead)."""
    with suppress(ReserveError):
        ring.push(b"later")


HOSTILE = {seed: [(_hostile(seed), 0, 0), (_later, 0, 0)] for seed in range(24)}


@pytest.mark.parametrize("seed", sorted(HOSTILE))
def test_a_hostile_producer_gets_the_kernels_answers(engine: str, seed: int) -> None:
    """Bogus headers and positions: every drain returns a count or an
    errno, never a fault or a read outside the ring; where bpf() works,
    exactly the kernel's results and positions."""
    ours = _run_ebpfvm(engine, "drain_xdp", HOSTILE[seed])
    for ret, *_rest in ours:
        assert ret < MAX_SAMPLES or ret in (_neg(EINVAL), _neg(E2BIG))
    if kernel_oracle.available() is None:
        scenario = f"hostile{seed}"
        SCENARIOS.setdefault(scenario, HOSTILE[seed])
        assert ours == _run_kernel("drain_xdp", scenario)


def test_python_misuse_is_a_typed_error() -> None:
    ring = create_map("r", MapType.USER_RINGBUF, 0, 0, SIZE)
    assert isinstance(ring, UserRingBuf)
    with pytest.raises(MapError):
        ring.producer_pos = "8"  # type: ignore[assignment]
    with pytest.raises(MapError):
        ring.write(0, bytes(SIZE + 1))
    with pytest.raises(MapError):
        ring.discard(memoryview(bytearray(4)))
    with pytest.raises(ReserveError):
        ring.reserve(-1)
    with pytest.raises(MapError):
        ring.preload_entry(0, "zz", None)


def test_a_producer_position_that_wraps_is_bounded_by_the_budget(engine: str) -> None:
    """A producer position 2**64 - 8 ahead over a zeroed ring: the kernel
    hands 131072 empty samples to the callback; ebpfvm's run stops at its
    instruction budget first, with the typed BudgetExceeded."""
    def produce(ring: Any) -> None:
        ring.producer_pos = -8

    with pytest.raises(BudgetExceeded):
        _run_ebpfvm(engine, "drain_xdp", [(produce, 0, 0)])
