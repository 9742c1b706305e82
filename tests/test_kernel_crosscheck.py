"""Kernel cross-check of the examples: each program runs in the Linux kernel
(BPF_PROG_LOAD with maps from BPF_MAP_CREATE, then BPF_PROG_TEST_RUN) and in
every engine of ours on the same packets; verdicts, output packets and map
contents must agree. Skips with the reason where bpf() is unavailable."""

from __future__ import annotations

import os

import pytest

import kernel_oracle as kernel
from ebpfvm import load
from ebpfvm.maps import Map
from test_examples import EXAMPLES, TCP, UDP, XDP_ENGINES, frame

UNAVAILABLE = kernel.available()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"bpf(): {UNAVAILABLE}")

PACKETS = [frame(proto=TCP, saddr="10.0.0.1"), frame(proto=UDP, saddr="10.0.0.2"),
           frame(proto=TCP, saddr="10.0.0.1"), frame(0x86DD), frame(proto=1, saddr="10.0.0.3"),
           frame(proto=TCP, saddr="10.0.0.1"), frame(proto=TCP, saddr="10.0.0.1")]
CASES = [("proto_count.o", ["counts"]), ("rate_limit.o", ["seen"]), ("config.o", [])]


def _in_kernel(name: str, packets: list[bytes]) -> tuple[list[tuple[int, bytes]],
                                                           dict[str, dict[bytes, bytes]]]:
    obj = load(EXAMPLES / name)
    program = obj.programs[0]
    fds: list[int] = []
    try:
        map_fds = {}
        for map_name in program.maps:
            target = obj.maps[map_name]
            assert isinstance(target, Map)
            map_fds[map_name] = fd = kernel.map_create(
                int(target.type), target.key_size, target.value_size, target.max_entries)
            fds.append(fd)
        data_fds = {}
        for section in program.data_sections:
            content = bytes(obj.data[section])
            data_fds[section] = fd = kernel.map_create(2, 4, len(content), 1)
            fds.append(fd)
            kernel.map_update(fd, bytes(4), content)
        code = kernel.kernel_code(program.code, program.relocations, map_fds, data_fds)
        prog_fd = kernel.prog_load(code)
        fds.append(prog_fd)
        results = [kernel.test_run(prog_fd, packet) for packet in packets]
        maps = {}
        for map_name, fd in map_fds.items():
            target = obj.maps[map_name]
            maps[map_name] = dict(kernel.map_items(fd, target.key_size, target.value_size))
        return results, maps
    finally:
        for fd in fds:
            os.close(fd)


def _dispatch_in_kernel(packets: list[bytes]) -> tuple[list[tuple[int, bytes]], bytes]:
    """dispatch.o with its handlers in a kernel program array; returns the runs
    and the .bss the handlers count in."""
    obj = load(EXAMPLES / "dispatch.o")
    fds: list[int] = []
    try:
        handlers = kernel.map_create(3, 4, 4, 256)  # BPF_MAP_TYPE_PROG_ARRAY
        fds.append(handlers)
        bss = kernel.map_create(2, 4, len(obj.data[".bss"]), 1)
        fds.append(bss)
        prog_fds = {}
        for program in obj.programs:
            code = kernel.kernel_code(program.code, program.relocations,
                                      {"handlers": handlers}, {".bss": bss})
            prog_fds[program.name] = fd = kernel.prog_load(code)
            fds.append(fd)
        for proto, handler in ((TCP, "handle_tcp"), (UDP, "handle_udp")):
            kernel.map_update(handlers, proto.to_bytes(4, "little"),
                              prog_fds[handler].to_bytes(4, "little"))
        results = [kernel.test_run(prog_fds["dispatch"], packet) for packet in packets]
        ((_key, counters),) = kernel.map_items(bss, 4, len(obj.data[".bss"]))
        return results, counters
    finally:
        for fd in fds:
            os.close(fd)


@pytest.mark.parametrize("engine", XDP_ENGINES)
def test_tail_call_dispatch_agrees_with_the_kernel(engine: str) -> None:
    expected, kernel_bss = _dispatch_in_kernel(PACKETS)
    obj = load(EXAMPLES / "dispatch.o")
    obj.maps["handlers"][TCP] = "handle_tcp"
    obj.maps["handlers"][UDP] = "handle_udp"
    runner = obj.xdp("dispatch", engine=engine)
    ours = [(r.r0 & 0xFFFF_FFFF, r.packet) for r in map(runner.run, PACKETS)]
    assert ours == expected
    assert bytes(obj.data[".bss"]) == kernel_bss
    assert kernel_bss != bytes(len(kernel_bss))  # the handlers counted something


@pytest.mark.parametrize("engine", XDP_ENGINES)
@pytest.mark.parametrize(("name", "map_names"), CASES)
def test_examples_agree_with_the_kernel(name: str, map_names: list[str], engine: str) -> None:
    expected, kernel_maps = _in_kernel(name, PACKETS)
    obj = load(EXAMPLES / name)
    runner = obj.xdp(engine=engine)
    ours = []
    for packet in PACKETS:
        result = runner.run(packet)
        ours.append((result.r0 & 0xFFFF_FFFF, result.packet))
    assert ours == expected
    for map_name in map_names:
        assert dict(obj.maps[map_name].items()) == kernel_maps[map_name]
    assert any(kernel_maps.values()) or not map_names  # the maps really filled


@pytest.mark.parametrize("engine", XDP_ENGINES)
def test_ringbuf_events_agree_with_the_kernel(engine: str) -> None:
    obj = load(EXAMPLES / "events.o")
    program = obj.program("emit_events")
    ring = obj.maps["events"]
    fd = kernel.map_create(27, 0, 0, ring.max_entries)  # BPF_MAP_TYPE_RINGBUF
    try:
        code = kernel.kernel_code(program.code, program.relocations, {"events": fd}, {})
        prog_fd = kernel.prog_load(code)
        try:
            expected = [kernel.test_run(prog_fd, packet) for packet in PACKETS]
        finally:
            os.close(prog_fd)
        kernel_records = kernel.ringbuf_records(fd, ring.max_entries)
    finally:
        os.close(fd)
    runner = obj.xdp(engine=engine)
    ours = [(r.r0 & 0xFFFF_FFFF, r.packet) for r in map(runner.run, PACKETS)]
    assert ours == expected
    assert list(ring.consume()) == kernel_records
    assert len(kernel_records) == len(PACKETS)
