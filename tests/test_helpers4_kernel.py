"""helpers4 (issue 13 point 3): bpf_ringbuf_query and the dynptr helpers of
tests/data/elf/helpers4.o, in every engine: the same packets against the
kernel (BPF_PROG_TEST_RUN; skipped where bpf() is unavailable) and against
expected values reasoned from the kernel's documented rules."""

from __future__ import annotations

import os
import struct

import pytest

import kernel_oracle as kernel
from conftest import REPO
from ebpfvm import load

OBJECT = REPO / "tests" / "data" / "elf" / "helpers4.o"  # built from helpers4.c
PACKETS = [bytes(range(64)), bytes(range(100, 164)), b"\xff" * 64]
NO_BPF = kernel.available()
E2BIG, EINVAL = 7, 22


def _ours(name: str, engine: str) -> tuple[list[tuple[int, bytes]], list[bytes]]:
    obj = load(OBJECT)
    runner = obj.xdp(name, engine=engine)
    results = [runner.run(packet) for packet in PACKETS]
    return [(r.r0 & 0xFFFF_FFFF, r.packet) for r in results], list(obj.maps["events"].consume())


def _kernel(name: str) -> tuple[list[tuple[int, bytes]], list[bytes]]:
    program = load(OBJECT).program(name)
    fd = kernel.map_create(27, 0, 0, 4096)  # BPF_MAP_TYPE_RINGBUF
    store = kernel.map_create(2, 4, 16, 1)  # BPF_MAP_TYPE_ARRAY
    try:
        code = kernel.kernel_code(program.code, program.relocations,
                                  {"events": fd, "store": store}, {})
        prog_fd = kernel.prog_load(code)
        try:
            runs = [kernel.test_run(prog_fd, packet) for packet in PACKETS]
        finally:
            os.close(prog_fd)
        return runs, kernel.ringbuf_records(fd, 4096)
    finally:
        os.close(fd)
        os.close(store)


@pytest.mark.skipif(NO_BPF is not None, reason=f"bpf() unavailable: {NO_BPF}")
@pytest.mark.parametrize("name", ["query", "local", "ring", "vprintk"])
def test_against_the_kernel(engine: str, name: str) -> None:
    assert _ours(name, engine) == _kernel(name)


def _words(packet: bytes, count: int) -> list[int]:
    return list(struct.unpack_from(f"<{count}Q", packet))


def test_ringbuf_query(engine: str) -> None:
    runs, _records = _ours("query", engine)
    # each run adds a 20-byte record (8 + 20 -> 32 bytes) and an 8-byte one
    # (16 bytes); nobody consumes, so the consumer stays at 0
    for number, (_r0, packet) in enumerate(runs, start=1):
        assert _words(packet, 5) == [48 * number, 4096, 0, 48 * number, 0]


def test_local_dynptr(engine: str) -> None:
    (r0, packet), *_rest = _ours("local", engine)[0]
    word = int.from_bytes(bytes(range(8, 16)), "little")
    buf = (0x1111111111111111).to_bytes(8, "little") + (0x2222222222222222).to_bytes(8, "little")
    buf = buf[:4] + word.to_bytes(8, "little") + buf[12:]
    back = int.from_bytes(buf[2:10], "little")
    e2big = -E2BIG & 0xFFFF_FFFF_FFFF_FFFF
    assert r0 == 3
    assert _words(packet, 8) == [
        0, 0, 0, back, (e2big << 16 | e2big & 0xFFFF) & 0xFFFF_FFFF_FFFF_FFFF,
        int.from_bytes(buf[8:16], "little"), 0,
        (-EINVAL << 32 | -EINVAL & 0xFFFF_FFFF) & 0xFFFF_FFFF_FFFF_FFFF]


def test_ringbuf_dynptr(engine: str) -> None:
    runs, records = _ours("ring", engine)
    einval = -EINVAL & 0xFFFF_FFFF_FFFF_FFFF
    for number, (_r0, packet) in enumerate(runs, start=1):
        # a 16-byte record (24 bytes with its header) and two failed reserves
        assert _words(packet, 6) == [0, 0, 0x7777, einval, einval, 24 * number]
    assert records == [packet[16:24] + (0x7777).to_bytes(8, "little") for packet in PACKETS]


def test_trace_vprintk(engine: str) -> None:
    obj = load(OBJECT)
    runner = obj.xdp("vprintk", engine=engine)
    einval = -EINVAL & 0xFFFF_FFFF_FFFF_FFFF
    word = int.from_bytes(bytes(range(8)), "little")  # the packet's first 8 bytes
    first = f"v -5 {word:x} xy Q|"
    result = runner.run(PACKETS[0])
    # the wide line prints 1400 bytes, counted in full; the trace keeps 1023
    assert _words(result.packet, 5) == [len(first), einval, einval, einval, 1400]
    assert list(result.trace) == [first, f"{-5:700d}{word & 0xFFFF_FFFF:700d}"[:1023]]
