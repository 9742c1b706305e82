"""Issue 11, contexts, BTF and the command line: F10 (runner part), F14, F15,
F17 and F18. Each test fails on the code before its fix."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

import kernel_oracle
from bounded import run_bounded
from conftest import REPO
from ebpfvm import HelperFault, MemoryFault, VmBusy, assemble
from ebpfvm.capture import run_capture
from ebpfvm.contexts import CONTEXT_SIZE, SKB_SIZE, XDP_TAILROOM, SkbRunner, XdpRunner
from ebpfvm.vm import EbpfVmMbuff, EbpfVmRaw

EXAMPLES = REPO / "examples" / "bpf"
M64 = (1 << 64) - 1
MARKER = 0x5A5A5A5A


# -- F17: LD_ABS/LD_IND under SkbRunner read the packet ------------------------------

PACKET = bytes(range(0x40, 0x40 + 60))
"""An Ethernet-sized frame whose every byte differs from the __sk_buff fields."""

LEGACY_LOADS = [
    ("mov r6, r1\nldabsb 0\nexit", PACKET[0]),
    ("mov r6, r1\nldabsh 12\nexit", int.from_bytes(PACKET[12:14], "big")),
    ("mov r6, r1\nldabsw 8\nexit", int.from_bytes(PACKET[8:12], "big")),
    ("mov r6, r1\nmov r7, 3\nldindb r7, 2\nexit", PACKET[5]),
    ("mov r6, r1\nmov r7, 20\nldindw r7, 4\nexit", int.from_bytes(PACKET[24:28], "big")),
    ("mov r6, r1\nldabsw 58\nexit", 0),  # past the end: the program ends with r0 = 0
]
"""(program, r0): expected values read by hand from PACKET (big-endian, as
BPF_LD_ABS/IND define), the same as the kernel gives (test below)."""


@pytest.mark.parametrize(("source", "expected"), LEGACY_LOADS)
def test_skb_legacy_packet_loads_read_the_packet(engine: str, source: str,
                                                 expected: int) -> None:
    """F17: ldabs/ldind under SkbRunner read skb->data, not struct __sk_buff
    (before: ldabsw 8 gave skb->mark, ldabsb 0 the low byte of skb->len)."""
    runner = SkbRunner(assemble(source), engine=engine, mark=0x11223344)
    try:
        assert runner.run(PACKET).r0 == expected
    finally:
        runner.close()


def test_skb_legacy_loads_given_a_raw_vm(engine: str) -> None:
    """F17: an EbpfVmRaw given to SkbRunner runs as an EbpfVmMbuff with the
    same program, helpers and budget; the given VM is left as it was."""
    raw = EbpfVmRaw(assemble("mov r6, r1\nldabsb 0\ncall 6001\nadd r0, r6\nexit"))
    raw.register_helper(6001, lambda *_args: 0)
    raw.budget = 1234
    runner = SkbRunner(raw, engine=engine)
    try:
        assert isinstance(runner.vm, EbpfVmMbuff) and runner.vm.budget == 1234
        skb = runner.base  # the __sk_buff is at the start of the frame
        assert runner.run(PACKET).r0 == 0 + skb  # helper 6001 ran (r0 = 0), r6 = ctx
    finally:
        runner.close()
    assert isinstance(raw, EbpfVmRaw)


def test_object_skb_builds_an_mbuff_vm() -> None:
    """F17: ElfObject.skb() builds the VM kind SkbRunner runs (EbpfVmMbuff)."""
    from ebpfvm import load

    runner = load(EXAMPLES / "block_port.o").skb()
    try:
        assert type(runner.vm) is EbpfVmMbuff
    finally:
        runner.close()


SCHED_CLS = 3
"""BPF_PROG_TYPE_SCHED_CLS: a tc program; its skb->data is the Ethernet header."""


@pytest.mark.skipif(kernel_oracle.available() is not None,
                    reason=f"bpf() unavailable: {kernel_oracle.available()}")
@pytest.mark.parametrize(("source", "expected"), LEGACY_LOADS)
def test_skb_legacy_loads_match_the_kernel(source: str, expected: int) -> None:
    """F17: the kernel (BPF_PROG_TEST_RUN of a tc program) agrees with the
    values read by hand, and so does SkbRunner."""
    code = assemble(source)
    fd = kernel_oracle.prog_load(code, SCHED_CLS)
    try:
        kernel_r0, _packet = kernel_oracle.test_run(fd, PACKET)
    finally:
        os.close(fd)
    runner = SkbRunner(code)
    try:
        assert kernel_r0 == expected == runner.run(PACKET).r0
    finally:
        runner.close()


def test_skb_program_sees_only_its_skb_and_packet(checked_engine: str) -> None:
    """F17/F18: an skb program's memory is its __sk_buff and its packet: a
    store past data_end faults instead of landing in the next packet."""
    prog = assemble("ldxw r2, [r1+80]\nstw [r2+16], 7\nmov r0, 0\nexit")
    runner = SkbRunner(prog, engine=checked_engine)
    try:
        with pytest.raises(MemoryFault) as caught:
            runner.run(bytes(20))
        # data_end + 16; the packet sits after the __sk_buff and a 64-byte gap.
        assert caught.value.address == runner.base + SKB_SIZE + CONTEXT_SIZE + 20 + 16
        assert caught.value.size == 4 and caught.value.access == "store"
    finally:
        runner.close()


# -- F18: nothing of an earlier run stays readable in the frame ---------------------


def _peek_and_poke(offset: int) -> bytes:
    """r0 = the u64 at ctx->data + `offset`, then store MARKER there."""
    return assemble(f"""
        ldxw r2, [r1+0]
        add r2, {offset}
        ldxdw r0, [r2+0]
        stdw [r2+0], {MARKER}
        exit
    """)


def _runs(runner: XdpRunner, packets: Iterable[bytes]) -> list[int | str]:
    """r0 of each run, or the fault's type name."""
    out: list[int | str] = []
    for packet in packets:
        try:
            out.append(runner.run(packet).r0)
        except MemoryFault as fault:
            out.append(type(fault).__name__)
    return out


@pytest.mark.parametrize("offset", [30, 150, 1000])
def test_xdp_tailroom_is_cleared_between_runs(engine: str, offset: int) -> None:
    """F18: a marker stored past data_end (in the tailroom), or inside an
    earlier longer packet, reads as zero in the next run, in every engine."""
    runner = XdpRunner(_peek_and_poke(offset), engine=engine)
    try:
        first = runner.run(bytes(200)).r0
        assert first == 0
        assert _runs(runner, [bytes(20), bytes(20)]) == [0, 0]
    finally:
        runner.close()


def test_xdp_memory_past_the_tailroom_faults(checked_engine: str) -> None:
    """F18: past the tailroom the frame is out of bounds, so no run can leave
    bytes there for a later one (before: the whole 64 KiB frame was writable
    and never cleared)."""
    offset = XDP_TAILROOM + 4000
    runner = XdpRunner(_peek_and_poke(offset), engine=checked_engine)
    try:
        first = _runs(runner, [bytes(20)])
        assert first == ["MemoryFault"]
        assert _runs(runner, [bytes(20)]) == ["MemoryFault"]
    finally:
        runner.close()


def test_xdp_adjust_tail_grows_into_the_tailroom(engine: str) -> None:
    """F18: bpf_xdp_adjust_tail still grows the packet, up to the tailroom,
    and the grown bytes are zeros, whatever an earlier run left there."""
    grow = assemble("mov r6, r1\nmov r2, 100\ncall 65\nmov r0, 2\nexit")
    runner = XdpRunner(grow, engine=engine)
    poke = XdpRunner(_peek_and_poke(40), engine=engine)
    try:
        assert runner.run(bytes(20)).packet == bytes(120)
        assert runner.run(b"\xff" * 20).packet == b"\xff" * 20 + bytes(100)
        too_far = assemble(f"mov r2, {XDP_TAILROOM + 1}\ncall 65\nexit")
        assert XdpRunner(too_far, engine=engine).run(bytes(20)).r0 == (-22) & M64
    finally:
        runner.close()
        poke.close()


def test_capture_batches_do_not_leak_between_packets(engine: str) -> None:
    """F18, capture path: a store into the padding after a packet's xdp_md
    (inside its batch span) is not visible to the next packet in that slot."""
    prog = assemble(f"ldxdw r0, [r1+24]\nstdw [r1+24], {MARKER}\nexit")
    vm = EbpfVmRaw(prog)
    frames = [(0.0, bytes(60)), (1.0, bytes(60)), (2.0, bytes(40))]
    stats = run_capture(vm, frames, context="xdp", verdicts="none", engine=engine, chunk=1)
    assert stats.packets == 3
    assert dict(stats.histogram) == {"0": 3}


# -- F10: closing the runner from a helper during the run --------------------------

_CLOSE_IN_HELPER = """
from ebpfvm import HelperFault, VmBusy, assemble
from ebpfvm.contexts import SkbRunner, XdpRunner
out = []
for kind in (XdpRunner, SkbRunner):
    runner = kind(assemble("call 6000\\nldxw r0, [r1+0]\\nexit"), engine={engine!r})
    runner.vm.register_helper(6000, lambda *_args: runner.close() or 0)
    try:
        runner.run(bytes(64))
        out.append(["returned"])
    except HelperFault as fault:
        out.append([type(fault.cause).__name__, fault.helper_id, fault.pc])
    runner.close()
report(out)
"""


def test_runner_close_inside_a_helper_is_refused(engine: str) -> None:
    """F10: a helper closing the XdpRunner/SkbRunner that runs it gets VmBusy
    (the run ends with a HelperFault whose cause is VmBusy) instead of the
    frame being unmapped under the running code (a segfault)."""
    outcome = run_bounded(_CLOSE_IN_HELPER.format(engine=engine), memory_mb=1024, timeout=60)
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    assert outcome.result() == [["VmBusy", 6000, 0], ["VmBusy", 6000, 0]]


def test_runner_run_inside_a_helper_is_refused() -> None:
    """F10: a helper running the runner again gets VmBusy before it rewrites
    the frame of the run in progress (before: the packet under the running
    program was replaced by the helper's one)."""
    runner = XdpRunner(assemble("call 6000\nexit"))
    runner.vm.register_helper(6000, lambda *_args: runner.run(b"\x22" * 20).r0)
    start = CONTEXT_SIZE + runner.headroom
    try:
        with pytest.raises(HelperFault) as caught:
            runner.run(b"\x11" * 20)
        assert isinstance(caught.value.cause, VmBusy)
        assert bytes(runner._frame.view[start : start + 20]) == b"\x11" * 20
    finally:
        runner.close()
