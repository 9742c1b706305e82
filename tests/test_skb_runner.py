"""SkbRunner on a loaded object: the program type from the section (a socket
filter sees the network header and returns the bytes kept), the decoded
context, trace_printk lines and what the helpers recorded (tunnel metadata,
clones, the redirect target), in every engine; the same runs in the kernel
where bpf() is available."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import kernel_oracle
import skb_oracle
from conftest import REPO
from ebpfvm import elf
from ebpfvm.capture import CaptureWriter
from ebpfvm.cli import main
from ebpfvm.contexts import SkbRunner
from ebpfvm.errors import ArgumentError
from ebpfvm.skb_helpers import Redirect
from test_skb_kernel import IPV6, UDP

OBJECT = REPO / "tests" / "data" / "elf" / "skb.o"  # built from skb.c
NO_BPF = kernel_oracle.available()


def test_a_socket_filter_keeps_bytes_from_the_network_header(engine: str) -> None:
    obj = elf.load(OBJECT)
    with obj.skb("udp_filter", engine=engine) as runner:
        assert runner.prog_type.name == "socket_filter"
        kept = runner.run(UDP)
        assert (kept.r0, kept.verdict, kept.verdict_name) == (len(UDP) - 14, len(UDP) - 14,
                                                              str(len(UDP) - 14))
        assert kept.packet == UDP  # the frame, Ethernet header included
        assert (kept.ctx["len"], kept.ctx["protocol"]) == (len(UDP) - 14, 0x0008)
        assert runner.run(IPV6).r0 == 0


@pytest.mark.skipif(NO_BPF is not None, reason=f"bpf() unavailable: {NO_BPF}")
@pytest.mark.parametrize("packet", [UDP, IPV6, UDP[:34]])
def test_the_socket_filter_agrees_with_the_kernel(engine: str, packet: bytes) -> None:
    obj = elf.load(OBJECT)
    code = obj.program("udp_filter").code
    retval, _out, ctx_out = skb_oracle.load_run(code, skb_oracle.SOCKET_FILTER, packet)
    with obj.skb("udp_filter", engine=engine) as runner:
        result = runner.run(packet)
    assert (result.r0, result.ctx_out) == (retval, ctx_out)


def test_tc_records_trace_tunnel_clones_and_redirect(engine: str) -> None:
    obj = elf.load(OBJECT)
    with obj.skb("tunnel_out", engine=engine) as runner:
        result = runner.run(UDP, mark=3)
        again = runner.run(UDP[:40])
    assert result.verdict_name == "TC_ACT_REDIRECT"
    assert result.trace == (f"len {len(UDP)} mark 3",)
    assert again.trace == ("len 40 mark 0",)
    assert result.redirect == Redirect("bpf_redirect", 5, 0)
    assert result.clones == (Redirect("bpf_clone_redirect", 3, 1),)
    assert result.tunnel is not None
    assert (result.tunnel.tunnel_id, result.tunnel.remote, result.tunnel.ttl) == (
        42, bytes([10, 0, 0, 1]), 64)
    assert (result.mark, result.priority, result.cb) == (3, 9, (7, 0, 0, 0, 0))


@pytest.mark.skipif(NO_BPF is not None, reason=f"bpf() unavailable: {NO_BPF}")
def test_the_tc_program_agrees_with_the_kernel(engine: str) -> None:
    obj = elf.load(OBJECT)
    code = obj.program("tunnel_out").code
    fd = kernel_oracle.prog_load(code, skb_oracle.SCHED_CLS)
    try:
        retval, packet, ctx_out = skb_oracle.run_skb(fd, UDP)
    finally:
        os.close(fd)
    with obj.skb("tunnel_out", engine=engine) as runner:
        result = runner.run(UDP)
    assert (result.r0, result.packet, result.ctx_out) == (retval, packet, ctx_out)


def test_ctx_in_is_checked_as_the_kernel_checks_it() -> None:
    runner = SkbRunner(bytes.fromhex("b700000000000000" "9500000000000000"))
    with runner:
        for bad in (bytes(191), bytes(4) + b"\x01" + bytes(187),
                    bytes(160) + (10).to_bytes(4, "little") + bytes(28)):
            with pytest.raises(ArgumentError):
                runner.run(UDP, ctx=bad)
        with pytest.raises(ArgumentError):
            runner.run(UDP, no_such_field=1)


def test_the_cli_labels_a_socket_filter_r0_as_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(OBJECT), "--section", "socket", "--hex", UDP.hex()]) == 0
    out = capsys.readouterr().out
    assert "verdict" not in out
    assert f"r0 = {len(UDP) - 14:#x} ({len(UDP) - 14})" in out


def test_a_capture_runs_a_socket_filter_as_one(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    pcap = tmp_path / "in.pcap"
    writer = CaptureWriter(pcap)
    for frame in (UDP, IPV6, UDP):
        writer.write(frame, 0.0)
    writer.close()
    assert main(["run", str(OBJECT), "--section", "socket", "--pcap", str(pcap),
                 "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[:2] == [str(len(UDP) - 14), "2"] for line in lines)
