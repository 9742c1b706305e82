"""The kernel differential (ebpfvm.kdiff, ``ebpfvm run --against-kernel``).

Objects that the kernel runs as ebpfvm does agree over a capture; a value
given to ebpfvm's side only must come out as a divergence with the right
packet, field and both values (the kernel's value follows from the program's
source, not from our output); where bpf() cannot be used, the user gets one
line. The tests that need the kernel skip, with the reason, where bpf()
cannot create a map.
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import elftools  # type: ignore[import-untyped,unused-ignore]
import pytest

import ebpfvm
from conftest import NEEDS_KBPF, REPO
from ebpfvm import kbpf
from ebpfvm.capture import read_capture
from ebpfvm.cli import main
from ebpfvm.kdiff import Divergence, KernelSession, KernelUnsupported, against_kernel

SAMPLE = REPO / "examples" / "data" / "sample.pcap"
EXAMPLES = REPO / "examples" / "bpf"
ELF = REPO / "tests" / "data" / "elf"
PACKETS = 40
"""Packets of the sample capture each agreeing object runs."""
XDP_DROP, XDP_PASS = 1, 2
UDP, TCP = 17, 6


needs_kernel = NEEDS_KBPF


def _sample() -> list[bytes]:
    return [frame for _ts, frame in read_capture(SAMPLE)][:PACKETS]


def _frame(proto: int) -> bytes:
    """A 60-byte Ethernet + IPv4 frame of protocol `proto` (no options)."""
    ip = bytes([0x45, 0, 0, 46, 0, 0, 0, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
    return bytes(12) + b"\x08\x00" + ip + bytes(26)


AGREEING = [
    (EXAMPLES / "proto_count.o", None),  # hash and array maps, BTF
    (EXAMPLES / "config.o", None),  # .rodata (frozen), .data, .bss
    (EXAMPLES / "dispatch.o", "dispatch"),  # tail calls through a program array
    (EXAMPLES / "rate_limit.o", None),  # LRU hash, full from packet 24: evictions agree
    (EXAMPLES / "events.o", None),  # a ring buffer (created, not compared)
    (ELF / "skb.o", "udp_filter"),  # socket filter: packet compared from byte 14
    (ELF / "skb.o", "tunnel_out"),  # tc, with ctx_out
    (ELF / "calls.o", "first_plus_ten"),  # bpf-to-bpf call: unused .text functions left out
    (ELF / "kconfig.o", "version"),  # .kconfig, frozen
    (ELF / "tailchain.o", "tc_entry"),
    (ELF / "callbacks.o", "loop_prog"),  # bpf_loop: BTF func_info from the object
    (ELF / "callbacks.o", "foreach_prog"),  # bpf_for_each_map_elem
    (ELF / "cgroup_storage.o", "storage_prog"),  # cgroup_skb, spin lock: map BTF
]


@needs_kernel
@pytest.mark.parametrize(("path", "function"), AGREEING,
                         ids=[f"{p.stem}:{f or ''}" for p, f in AGREEING])
def test_objects_agree_with_the_kernel(engine: str, path: Path, function: str | None) -> None:
    with ebpfvm.load(path) as obj:
        diff = against_kernel(obj, _sample(), program=function, engine=engine, source=path)
    assert diff.packets == PACKETS
    assert diff.divergences == [], [str(d) for d in diff.divergences[:5]]
    assert diff.agrees and not diff
    assert diff.summary().startswith(f"{PACKETS} packets, 0 diverge")


@needs_kernel
def test_an_xdp_md_given_to_both_sides_agrees(engine: str) -> None:
    """A 24-byte struct xdp_md in (data 0, data_end 60): the kernel hands it
    back after the run, and its fields are compared too."""
    xdp_md = struct.pack("<6I", 0, 60, 0, 0, 0, 0)
    with ebpfvm.load(EXAMPLES / "config.o") as obj:
        diff = against_kernel(obj, [_frame(UDP), _frame(TCP)], engine=engine, ctx=xdp_md)
    assert diff.packets == 2 and diff.divergences == [] and not diff.refused


@needs_kernel
def test_a_value_given_to_ebpfvm_only_diverges(engine: str) -> None:
    """config.c drops the protocol in blocked_proto (17) and passes the rest.
    The kernel's copy is made with 17; ebpfvm's side then gets 6: the UDP
    packet (1) drops in the kernel and passes here, the TCP one (2) the other
    way round."""
    with ebpfvm.load(EXAMPLES / "config.o") as obj, KernelSession(obj) as session:
        obj.globals["blocked_proto"] = TCP
        diff = against_kernel(obj, [_frame(UDP), _frame(TCP)], engine=engine,
                              kernel=session)
    assert Divergence(1, "r0", XDP_DROP, XDP_PASS) in diff.divergences
    assert Divergence(2, "r0", XDP_PASS, XDP_DROP) in diff.divergences
    rodata = [d for d in diff.divergences if d.field == "map .rodata key 00000000"]
    assert [d.packet for d in rodata] == [1]  # reported once while it stays the same
    assert rodata[0].kernel[0] == UDP and rodata[0].ebpfvm[0] == TCP
    assert diff.diverging_packets == [1, 2] and diff
    assert diff.summary() == "2 packets, 2 diverge"


@needs_kernel
def test_a_map_entry_given_to_ebpfvm_only_diverges() -> None:
    """proto_count counts packets per (ethertype in host order, protocol) in
    its hash map: 41 stored on ebpfvm's side only makes 42 there after one
    UDP packet, and 1 in the kernel, where the entry starts missing."""
    with ebpfvm.load(EXAMPLES / "proto_count.o") as obj:
        name = "counts"
        key = (0x0800).to_bytes(2, "little") + bytes([UDP, 0])
        with KernelSession(obj) as session:
            counts: Any = obj.maps[name]
            counts[key] = (41).to_bytes(8, "little")
            diff = against_kernel(obj, [_frame(UDP)], kernel=session)
    found = [d for d in diff.divergences if d.field == f"map {name} key {key.hex()}"]
    assert len(found) == 1 and found[0].packet == 1
    assert int.from_bytes(found[0].kernel, "little") == 1
    assert int.from_bytes(found[0].ebpfvm, "little") == 42


@needs_kernel
def test_nondeterministic_helpers_are_reported_not_counted() -> None:
    with ebpfvm.load(ELF / "state.o") as obj:
        diff = against_kernel(obj, [_frame(UDP)] * 3, program="clocks")
    assert "bpf_ktime_get_ns" in diff.nondeterministic
    assert diff.divergences and all(d.nondeterministic for d in diff.divergences)
    assert diff.agrees
    with ebpfvm.load(ELF / "state.o") as obj:
        strict = against_kernel(obj, [_frame(UDP)] * 3, program="clocks", strict=True)
    assert not strict.agrees


@needs_kernel
def test_a_program_the_verifier_refuses_is_kernel_rejected() -> None:
    """maps.o reads its packet as plain memory (a raw VM's program): the
    kernel's verifier refuses its context access."""
    with ebpfvm.load(ELF / "maps.o") as obj, pytest.raises(kbpf.KernelRejected) as caught:
        against_kernel(obj, [_frame(UDP)])
    assert caught.value.errno == errno.EACCES
    assert "invalid bpf_context access" in caught.value.first_line
    assert caught.value.log


@needs_kernel
def test_callbacks_need_the_objects_btf() -> None:
    """Without the object file, there is no BTF func_info to give the kernel,
    which its verifier asks for a program with a callback."""
    with ebpfvm.load(ELF / "callbacks.o") as obj, pytest.raises(kbpf.KernelRejected) as caught:
        against_kernel(obj, [_frame(UDP)], program="loop_prog")
    assert "func_info" in caught.value.first_line


@needs_kernel
def test_corpus_programs_agree_with_the_kernel(engine: str) -> None:
    """Every corpus program (clang objects of the kernel's selftests and
    samples) over its vectors' frames and some of the sample capture."""
    corpus = REPO.parent / "shared" / "corpus"
    if not (corpus / "manifest.json").exists():
        pytest.skip(f"no corpus at {corpus}")
    from corpus import entry_type, load_options, load_vectors

    seen: set[str] = set()
    for vector in load_vectors(corpus):
        if vector.program in seen:
            continue
        seen.add(vector.program)
        path = vector.directory / vector.manifest["object"]
        entry, prog_type = entry_type(vector)
        frames = [bytes.fromhex(step["packet_in"]) for step in vector.vector["steps"]]
        with ebpfvm.load(path, **load_options(vector)) as obj:
            diff = against_kernel(obj, frames + _sample()[:10], program=entry, engine=engine,
                                  source=path, prog_type=prog_type)
        assert diff.agrees, (vector.program, [str(d) for d in diff.counted[:5]])
    assert len(seen) > 20


@needs_kernel
def test_maps_of_maps_are_a_typed_refusal() -> None:
    with ebpfvm.load(ELF / "mapinmap.o") as obj, pytest.raises(KernelUnsupported) as caught:
        against_kernel(obj, [_frame(UDP)])
    assert "outer" in caught.value.what


@needs_kernel
def test_cli_reports_and_exits(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(EXAMPLES / "proto_count.o"), "--pcap", str(SAMPLE),
                 "--against-kernel"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1200 packets, 0 diverge"
    status = main(["run", str(ELF / "maps.o"), "--hex", _frame(UDP).hex(), "--against-kernel"])
    captured = capsys.readouterr()
    assert status == 1 and captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "invalid bpf_context access" in lines[0]


@needs_kernel
def test_cli_divergences_exit_1(monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """The kernel's r0 turned into XDP_TX on its way back: each packet's
    line names it, then the summary, and the status is 1."""
    real = KernelSession.run

    def run(self: KernelSession, packet: bytes, ctx: bytes | None = None) -> Any:
        _retval, data, ctx_out = real(self, packet, ctx)
        return 3, data, ctx_out

    monkeypatch.setattr(KernelSession, "run", run)
    frames = _frame(UDP).hex()
    assert main(["run", str(EXAMPLES / "proto_count.o"), "--hex", frames,
                 "--against-kernel"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "packet 1: r0: kernel 0x3, ebpfvm 0x2", "1 packets, 1 diverge"]


def _fail_with(err: int) -> Any:
    def bpf(_cmd: int, _attr: Any) -> int:
        return -err

    return bpf


@pytest.mark.parametrize("err", [errno.EPERM, errno.ENOSYS])
def test_no_bpf_is_one_line(monkeypatch: pytest.MonkeyPatch, err: int,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(kbpf, "bpf", _fail_with(err))
    with ebpfvm.load(EXAMPLES / "config.o") as obj, \
            pytest.raises(kbpf.KernelUnavailable) as caught:
        against_kernel(obj, [_frame(UDP)])
    assert caught.value.errno == err
    status = main(["run", str(EXAMPLES / "config.o"), "--pcap", str(SAMPLE),
                   "--against-kernel"])
    captured = capsys.readouterr()
    assert status == 1 and captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "bpf() is not available" in lines[0], lines
    assert os.strerror(err) in lines[0]


def test_another_system_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(kbpf.KernelUnavailable) as caught:
        kbpf.probe()
    assert caught.value.errno == 0 and "darwin" in caught.value.reason


SETPRIV = shutil.which("setpriv")


@needs_kernel
@pytest.mark.skipif(SETPRIV is None or os.geteuid() != 0,
                    reason="needs root and setpriv to run the CLI as another user")
def test_cli_as_an_unprivileged_user_is_one_line() -> None:
    """The CLI as user nobody (no CAP_BPF): one line, exit 1, no traceback."""
    work = Path(tempfile.mkdtemp(prefix="ebpfvm-kdiff-"))  # pytest's tmp_path is 0700
    try:
        shutil.copytree(REPO / "src", work / "src")
        for package in (elftools,):  # site-packages may be out of nobody's reach
            shutil.copytree(Path(str(package.__file__)).parent, work / "src" / package.__name__)
        shutil.copy(EXAMPLES / "config.o", work / "config.o")
        for root, dirs, files in os.walk(work):
            for name in dirs + files:
                os.chmod(Path(root) / name, 0o755)
        os.chmod(work, 0o755)
        done = subprocess.run([str(SETPRIV), "--reuid=65534", "--regid=65534",
                               "--clear-groups", sys.executable, "-m", "ebpfvm.cli", "run",
                               "config.o", "--hex", _frame(UDP).hex(), "--against-kernel"],
                              cwd=work, env={**os.environ, "PYTHONPATH": str(work / "src")},
                              capture_output=True, text=True, timeout=120, check=False)
    finally:
        shutil.rmtree(work)
    lines = done.stderr.splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and "bpf() is not available" in lines[0], lines


@needs_kernel
def test_an_input_only_ebpfvm_refuses_is_a_run_divergence() -> None:
    """An XdpRunner given max_packet 40 refuses a 60-byte frame that the
    kernel runs: the packet diverges on "run"."""
    with ebpfvm.load(EXAMPLES / "config.o") as obj:
        real = obj.xdp

        def small_xdp(*args: Any, **kwargs: Any) -> Any:
            return real(*args, max_packet=40, **kwargs)

        obj.xdp = small_xdp  # type: ignore[method-assign]
        diff = against_kernel(obj, [_frame(UDP)])
    assert [(d.packet, d.field) for d in diff.divergences] == [(1, "run")]
    assert diff.divergences[0].kernel == f"r0 = {XDP_DROP:#x}"
    assert diff.divergences[0].ebpfvm.startswith("ArgumentError")
