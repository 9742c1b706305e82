"""XDP programs on packets: struct xdp_md with 32-bit data/data_end, as in the kernel."""

from __future__ import annotations

import json
import struct

import pytest

from conftest import bench_dir
from ebpfvm import load
from ebpfvm.contexts import XdpAction, XdpRunner
from ebpfvm.jit.execmem import jit_supported

BENCH = bench_dir()
SPEC = json.loads((BENCH / "bench.json").read_text()) if (BENCH / "bench.json").is_file() else None
ENGINES = ["interp", "jit", "jit-unchecked"] if jit_supported() is None else ["interp"]


@pytest.mark.skipif(SPEC is None, reason=f"{BENCH} is absent")
@pytest.mark.parametrize("engine", ENGINES)
def test_bench_objects_run_as_xdp(engine: str) -> None:
    """The shared/bench objects read ctx->data and ctx->data_end as 32-bit fields;
    run on their raw inputs they must give bench.json's expected results."""
    assert SPEC is not None
    for entry in SPEC["benchmarks"]:
        runner = load(BENCH / entry["object"]).xdp(section="xdp", engine=engine)
        mem = (BENCH / entry["mem"]).read_bytes()
        result = runner.run(mem)
        assert result.r0 & 0xFFFF_FFFF == entry["expected_r0"], entry["name"]
        if entry["name"] == "bubble_sort":  # it copies 64 u32 values after them and sorts them
            values = struct.unpack("<64I", result.packet[256:512])
            assert list(values) == sorted(struct.unpack("<64I", mem[:256]))
            assert result.packet[:256] == mem[:256]
        elif entry["name"] == "memcpy_bytes":  # it copies bytes 0..1535 to 1536..3071
            assert result.packet == mem[:1536] * 2
        else:
            assert result.packet == mem
        runner.close()


def test_verdicts_and_context_fields() -> None:
    # r0 = ctx->ingress_ifindex * 16 + ctx->rx_queue_index, or XDP_DROP when
    # data_meta != data (the kernel sets both to the packet start).
    from ebpfvm import assemble

    prog = assemble("""
        ldxw r2, [r1+0]
        ldxw r3, [r1+8]
        jne r2, r3, drop
        ldxw r0, [r1+12]
        lsh r0, 4
        ldxw r4, [r1+16]
        add r0, r4
        exit
    drop:
        mov r0, 1
        exit
    """)
    runner = XdpRunner(prog, ingress_ifindex=3, rx_queue_index=2)
    assert runner.run(b"\x00" * 20).r0 == 3 * 16 + 2
    passing = XdpRunner(assemble("mov r0, 2\nexit"))
    result = passing.run(b"abc")
    assert result.verdict is XdpAction.PASS and result.packet == b"abc"
    assert XdpRunner(assemble("mov r0, 99\nexit")).run(b"").verdict == 99


ADJUST = """
    mov r6, r1
    mov r2, -4
    call 44
    jne r0, 0, fail
    ldxw r2, [r6+0]
    ldxw r3, [r6+4]
    mov r4, r2
    add r4, 4
    jgt r4, r3, fail
    stw [r2+0], 0x44434241
    mov r1, r6
    mov r2, -2
    call 65
    jne r0, 0, fail
    mov r0, 2
    exit
fail:
    mov r0, 1
    exit
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_adjust_head_and_tail(engine: str) -> None:
    from ebpfvm import assemble

    runner = XdpRunner(assemble(ADJUST), engine=engine)
    result = runner.run(b"0123456789abcdef")
    # 4 bytes pushed in front ("ABCD" stored there), 2 cut from the end.
    assert result.verdict is XdpAction.PASS
    assert result.packet == b"ABCD0123456789abcd"


@pytest.mark.parametrize("engine", ENGINES)
def test_adjust_limits_return_einval(engine: str) -> None:
    from ebpfvm import assemble

    einval = (-22) & ((1 << 64) - 1)
    head = XdpRunner(assemble("mov r2, -300\ncall 44\nexit"), engine=engine, headroom=256)
    assert head.run(bytes(20)).r0 == einval  # beyond the headroom
    short = XdpRunner(assemble("mov r2, 10\ncall 44\nexit"), engine=engine)
    assert short.run(bytes(20)).r0 == einval  # would leave less than an Ethernet header
    tail = XdpRunner(assemble("mov r2, 40\ncall 65\nexit"), engine=engine, max_packet=64)
    grown = tail.run(bytes(20))
    assert grown.r0 == 0 and grown.packet == bytes(60)  # grows into the frame's tailroom
    assert tail.run(bytes(25)).r0 == einval  # 65 bytes would pass the 64-byte frame
    assert XdpRunner(assemble("mov r2, 100\ncall 65\nexit"), engine=engine,
                     max_packet=64).run(bytes(60)).r0 == einval


def test_no_bytes_of_an_earlier_packet_are_readable() -> None:
    from ebpfvm import assemble

    # Reads 4 bytes past data_end: the kernel's verifier would refuse it; we
    # allow it inside the frame, but it must not show the previous packet.
    peek = assemble("ldxw r2, [r1+4]\nldxw r0, [r2+0]\nexit")
    runner = XdpRunner(peek)
    runner.run(b"\xff" * 64)
    assert runner.run(b"").r0 == 0
