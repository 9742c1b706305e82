"""bpf_perf_event_output with packet bytes (the flags' context length,
BPF_F_CTXLEN_MASK) from XDP, tc and socket-filter programs, in every engine.
Return values are compared with the kernel's (BPF_PROG_TEST_RUN on an array
whose slots have no perf event: the context length is checked before the
slot, so -EFAULT shows there), records with what the kernel's skb and XDP
event output append: the record's data, then that many bytes of the packet
from data (an independent expectation built from the input packet)."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

import ebpfvm
import kernel_oracle
import skb_oracle
from ebpfvm.perf import PerfEventArray, PerfRecord
from skb_oracle import SCHED_CLS, SOCKET_FILTER
from test_skb_kernel import UDP

DATA = Path(__file__).parent / "data" / "elf"
CURRENT = 0xFFFF_FFFF
RECORD = bytes(range(1, 9))
"""perfpkt.c's record data."""
SKB_CASES = [(0, 0), (14, 0), (44, 0), (45, 0), (58, CURRENT), (59, 0), (0xFFFFF, 5), (10, 5),
             (60, 5), (1, 2)]
"""(context length, slot) runs of perfpkt.c on UDP (58 bytes; 44 from a socket
filter's data, the network header)."""
XDP_CASES = [(0, 0), (20, CURRENT), (52, 0), (53, 0), (0xFFFFF, 1), (10, 2), (60, 2)]
"""(context length, slot) runs of perf.c's emit (its packet: 52 bytes)."""
PROGRAMS = {SCHED_CLS: ("emit_tc", "sched_cls", 0), SOCKET_FILTER: ("emit_socket",
                                                                  "socket_filter", 14)}


def _kernel() -> None:
    why = kernel_oracle.available()
    if why is not None:
        pytest.skip(f"bpf() is not available here: {why}")


def _skb_ctx(ctxlen: int, slot: int) -> bytes:
    ctx = bytearray(skb_oracle.SKB_SIZE)
    struct.pack_into("<I", ctx, 8, slot)  # mark
    struct.pack_into("<I", ctx, 32, ctxlen)  # priority
    return bytes(ctx)


def _xdp_packet(flags: int, size: int) -> bytes:
    return struct.pack("<QI", flags, size) + bytes(range(1, 41))


def _kernel_prog(path: Path, name: str, prog_type: int) -> Iterator[int]:
    obj = ebpfvm.load(path)
    program = obj.program(name)
    fd = kernel_oracle.map_create(4, 4, 4, 2)
    try:
        code = kernel_oracle.kernel_code(program.code, program.relocations, {"events": fd}, {})
        prog = kernel_oracle.prog_load(code, prog_type)
        try:
            yield prog
        finally:
            os.close(prog)
    finally:
        os.close(fd)
        obj.close()


@pytest.mark.parametrize("prog_type", sorted(PROGRAMS))
def test_skb_return_values_against_the_kernel(engine: str, prog_type: int) -> None:
    _kernel()
    name, type_name, _skip = PROGRAMS[prog_type]
    for prog in _kernel_prog(DATA / "perfpkt.o", name, prog_type):
        expected = [skb_oracle.run_skb(prog, UDP, _skb_ctx(*case))[0] for case in SKB_CASES]
    with ebpfvm.load(DATA / "perfpkt.o") as obj:
        events = obj.maps["events"]
        assert isinstance(events, PerfEventArray)
        events.close_slot(0)
        events.close_slot(1)
        with obj.skb(name, engine=engine, prog_type=type_name) as runner:
            got = [runner.run(UDP, ctx=_skb_ctx(*case)).r0 for case in SKB_CASES]
    assert got == expected
    assert 1014 in expected  # -EFAULT: the context length past skb->len


@pytest.mark.parametrize("prog_type", sorted(PROGRAMS))
def test_skb_records_carry_the_packet_bytes(engine: str, prog_type: int) -> None:
    name, type_name, skip = PROGRAMS[prog_type]
    data = UDP[skip:]  # from skb->data: the network header in a socket filter
    with ebpfvm.load(DATA / "perfpkt.o") as obj:
        events = obj.maps["events"]
        assert isinstance(events, PerfEventArray)
        with obj.skb(name, engine=engine, prog_type=type_name) as runner:
            results = [runner.run(UDP, ctx=_skb_ctx(n, CURRENT)).r0
                       for n in (0, 5, len(data), len(data) + 1)]
        assert results == [1000, 1000, 1000, 1014]
        assert events.consume() == [PerfRecord(0, RECORD), PerfRecord(0, RECORD + data[:5]),
                                    PerfRecord(0, RECORD + data)]


def test_xdp_return_values_against_the_kernel(engine: str) -> None:
    _kernel()
    packets = [_xdp_packet(n << 32 | slot, 4) for n, slot in XDP_CASES]
    for prog in _kernel_prog(DATA / "perf.o", "emit", kernel_oracle.BPF_PROG_TYPE_XDP):
        expected = [kernel_oracle.test_run(prog, packet)[0] for packet in packets]
    with ebpfvm.load(DATA / "perf.o") as obj:
        events = obj.maps["events"]
        assert isinstance(events, PerfEventArray)
        events.close_slot(0)
        events.close_slot(1)
        with obj.xdp("emit", engine=engine) as runner:
            got = [runner.run(packet).r0 for packet in packets]
    assert got == expected
    assert 1014 in expected


def test_xdp_records_carry_the_packet_bytes(engine: str) -> None:
    with ebpfvm.load(DATA / "perf.o") as obj:
        events = obj.maps["events"]
        assert isinstance(events, PerfEventArray)
        packets = [_xdp_packet(n << 32 | CURRENT, 3) for n in (12, 52)]
        with obj.xdp("emit", engine=engine) as runner:
            assert [runner.run(packet).r0 for packet in packets] == [1000, 1000]
        assert events.consume() == [PerfRecord(0, bytes([1, 2, 3]) + packets[0][:12]),
                                    PerfRecord(0, bytes([1, 2, 3]) + packets[1])]
