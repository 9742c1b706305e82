"""Captures read in place (pcapmmap) and run natively (capture_native, issue 15 point 3).

Expected values come from independent readers (dpkt, tcpdump), from the files
the tests build byte by byte, or from the per-packet path (which runs each
packet through the runner, without the walker or the tally)."""

from __future__ import annotations

import io
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import dpkt  # type: ignore[import-untyped]
import pytest

from ebpfvm import assemble, load
from ebpfvm.capture import CaptureWriter, read_capture, run_capture
from ebpfvm.capture_native import NativeCapture, runtime_engine
from ebpfvm.errors import EbpfError
from ebpfvm.pcapmmap import CaptureError, CaptureFile, exact_usec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from make_sample_pcap import frames, write  # noqa: E402

BATCHING = ("jit", "jit-unchecked")
FRAMES = [(1_700_000_000 + i * 0.25, bytes([i]) * (14 + 7 * i)) for i in range(40)]
TCPDUMP = shutil.which("tcpdump") or ("/usr/sbin/tcpdump" if Path("/usr/sbin/tcpdump").exists()
                                      else None)


def pcap_bytes(order: str, nano: bool, items: list[tuple[int, int, bytes]]) -> bytes:
    """A pcap file of (seconds, fraction, frame) records."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    for sec, frac, frame in items:
        out += struct.pack(order + "IIII", sec, frac, len(frame), len(frame)) + frame
    return out


def block(order: str, kind: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack(order + "II", kind, len(body) + 12) + body + struct.pack(order + "I",
                                                                                len(body) + 12)


def shb(order: str) -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(order: str, snaplen: int = 0, tsresol: int | None = None, linktype: int = 1) -> bytes:
    options = b""
    if tsresol is not None:
        options = struct.pack(order + "HH", 9, 1) + bytes([tsresol, 0, 0, 0]) + bytes(4)
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + options)


def epb(order: str, iface: int, units: int, frame: bytes) -> bytes:
    return block(order, 6, struct.pack(order + "IIIII", iface, units >> 32, units & 0xFFFFFFFF,
                                       len(frame), len(frame)) + frame)


def spb(order: str, frame: bytes, original: int | None = None) -> bytes:
    return block(order, 3, struct.pack(order + "I", original or len(frame)) + frame)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_both_orders_and_resolutions_read_as_dpkt_reads_them(tmp_path: Path, order: str,
                                                                  nano: bool) -> None:
    items = [(1_700_000_000 + i, (i * 123_457) % (10**9 if nano else 10**6), bytes([i]) * (20 + i))
             for i in range(30)]
    path = tmp_path / "a.pcap"
    path.write_bytes(pcap_bytes(order, nano, items))
    with open(path, "rb") as handle:
        expected = [(float(ts), bytes(frame)) for ts, frame in dpkt.pcap.Reader(handle)]
    assert list(read_capture(path)) == expected
    with CaptureFile(path) as capture:
        units = 10**9 if nano else 10**6
        assert [r.usec for r in capture.records()] == [
            exact_usec(sec * units + frac, units) for sec, frac, _frame in items]


def test_pcapng_sections_orders_resolutions_and_blocks(tmp_path: Path) -> None:
    """Two sections (little- then big-endian), interfaces with if_tsresol
    10^-9 and 2^-10, an SPB cut to interface 0's snaplen, an OPB, and blocks
    of other kinds skipped."""
    one = b"\x11" * 60
    two = b"\x22" * 70
    data = (shb("<") + idb("<", tsresol=9) + epb("<", 0, 1_700_000_000_123_456_789, one)
            + block("<", 5, b"statistics") + shb(">") + idb(">", snaplen=50) + idb(">", tsresol=0x8A)
            + spb(">", two) + epb(">", 1, 1024 * 1_700_000_000 + 512, one)
            + block(">", 2, struct.pack(">HHIIII", 0, 0, *divmod(1_700_000_001_000_000, 1 << 32), 70,
                                        70) + two))
    path = tmp_path / "a.pcapng"
    path.write_bytes(data)
    with CaptureFile(path) as capture:
        records = list(capture.records())
    assert [r.frame for r in records] == [one, two[:50], one, two]
    assert [r.usec for r in records] == [1_700_000_000_123_457, 0, 1_700_000_000_500_000,
                                         1_700_000_001_000_000]
    assert records[0].timestamp == 1_700_000_000_123_456_789 / 1e9


def test_pcapng_from_dpkt_reads_as_dpkt_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "s.pcapng"
    write(path, 300, pcapng=True)
    with open(path, "rb") as handle:
        expected = [(float(ts), bytes(frame)) for ts, frame in dpkt.pcapng.Reader(handle)]
    assert list(read_capture(path)) == expected


@pytest.mark.parametrize(("data", "reason", "offset", "text"), [
    (b"\x00" * 24, "", None, "not a pcap or pcapng capture"),
    (shb("<") + struct.pack("<II", 6, 13) + bytes(8), "malformed", 28, "bad block length 13"),
    (shb("<") + idb("<") + epb("<", 0, 0, bytes(20))[:-4] + b"\x00\x00\x00\x01", "malformed", 48,
     "bad block trailer"),
    (pcap_bytes("<", False, [(0, 0, bytes(60))]) + struct.pack("<IIII", 0, 0, 300_000, 60),
     "bad caplen", 100, "bad caplen"),
    (shb("<") + epb("<", 0, 0, bytes(20)), "malformed", 28, "interface 0"),
])
def test_malformed_captures_name_the_offset(tmp_path: Path, data: bytes, reason: str,
                                            offset: int | None, text: str) -> None:
    path = tmp_path / "bad.cap"
    path.write_bytes(data)
    with pytest.raises(CaptureError, match=text) as caught:
        list(read_capture(path))
    assert caught.value.reason == reason and caught.value.offset == offset
    if offset is not None:
        assert f"at byte {offset}" in str(caught.value)


@pytest.mark.parametrize("engine", BATCHING)
def test_truncated_capture_runs_the_packets_before_and_counts_them(tmp_path: Path,
                                                                   engine: str) -> None:
    """As tcpdump's "truncated dump file": the whole records before the cut
    are read (and run), then the error says how many."""
    data = pcap_bytes("<", False, [(0, 0, bytes(60))] * 5)
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:-7])
    vm = load_pass_all()
    with pytest.raises(CaptureError, match=r"truncated dump file.*after 4 packets") as caught:
        run_capture(vm, read_capture(path), engine=engine)
    assert caught.value.reason == "truncated" and caught.value.packets == 4
    assert caught.value.offset == len(data) - 60


def load_pass_all() -> object:
    from ebpfvm import EbpfVmRaw

    return EbpfVmRaw(assemble("mov r0, 2\nexit"))


def _run(path: Path, engine: str, out: Path, prog: str = "config",
         stream: bool = False) -> tuple[dict[str, int], dict[int, int]]:
    obj = load(ROOT / "examples" / "bpf" / f"{prog}.o")
    vm = obj.vm(prog)
    writer = CaptureWriter(out)
    source = read_capture(path, io.BytesIO(path.read_bytes())) if stream else read_capture(path)
    stats = run_capture(vm, source, engine=engine, writer=writer)
    writer.close()
    totals = {0: int.from_bytes(obj.data[".bss"][:8], "little")}
    return dict(stats.histogram), totals


@pytest.mark.parametrize("pcapng", [False, True])
@pytest.mark.parametrize("engine", BATCHING)
def test_native_run_matches_the_per_packet_path(tmp_path: Path, engine: str, pcapng: bool) -> None:
    """Verdict counts, global-data totals and the output capture are those
    of the per-packet path (interp); tcpdump and dpkt read the output."""
    path = tmp_path / ("s.pcapng" if pcapng else "s.pcap")
    write(path, 9000, pcapng=pcapng)  # more than two chunks
    expected = _run(path, "interp", tmp_path / "interp.pcap")
    assert _run(path, engine, tmp_path / "native.pcap") == expected
    assert _run(path, engine, tmp_path / "stream.pcap", stream=True) == expected
    native = (tmp_path / "native.pcap").read_bytes()
    assert native == (tmp_path / "interp.pcap").read_bytes()
    assert native == (tmp_path / "stream.pcap").read_bytes()
    with open(tmp_path / "native.pcap", "rb") as handle:
        assert len(list(dpkt.pcap.Reader(handle))) == expected[0]["XDP_PASS"]
    if TCPDUMP is not None:
        shown = subprocess.run([TCPDUMP, "-nr", str(tmp_path / "native.pcap")],
                               capture_output=True, text=True, check=True).stdout
        assert shown.count("\n") == expected[0]["XDP_PASS"]


def test_routines_agree_checked_and_trusted(tmp_path: Path) -> None:
    """The walker and the tally run by the interpreter, the checked JIT and
    their trusted engine lay out, count and write the same bytes."""
    path = tmp_path / "s.pcapng"
    write(path, 700, pcapng=True)
    outputs = []
    for runtime in ("interp", "jit", runtime_engine("jit")):
        native = NativeCapture(read_capture(path), "jit", 32, 256, 1 << 16, runtime=runtime)
        vm = load_pass_all()
        vm.jit_compile(engine="jit")  # type: ignore[attr-defined]
        got = b""
        try:
            while native.fill():
                counts: dict[int, int] = {}
                from collections import Counter

                tally: Counter[int] = Counter(counts)
                passed, _sent = native.count(native.run(vm), "xdp", (True, False), tally)
                got += bytes(passed) + repr(sorted(tally.items())).encode()
                passed.release()
                _sent.release()
        finally:
            native.close()
        outputs.append(got)
    assert outputs[0] == outputs[1] == outputs[2] and outputs[0]


def test_corrupted_captures_never_fault_the_walker(tmp_path: Path) -> None:
    """Random bytes flipped in a capture: the walker, run checked, never
    touches memory outside its regions; the native run ends as the
    per-packet one does (the same verdicts, or the same CaptureError)."""
    rng = random.Random(15)
    base = bytearray(pcap_bytes("<", False, [(1, 2, bytes(frame)) for _ts, frame in
                                             frames(60)]))
    pcapng_path = tmp_path / "b.pcapng"
    write(pcapng_path, 60, pcapng=True)
    for original in (base, bytearray(pcapng_path.read_bytes())):
        for case in range(40):
            data = bytearray(original)
            for _ in range(3):
                data[rng.randrange(24, len(data))] = rng.randrange(256)
            if case % 5 == 0:
                del data[rng.randrange(24, len(data)):]
            path = tmp_path / f"c{case}.cap"
            path.write_bytes(bytes(data))
            assert _outcome(path, "interp") == _outcome(path, "jit", checked_routines=True)


def _outcome(path: Path, engine: str, checked_routines: bool = False) -> object:
    from ebpfvm import capture_native

    vm = load_pass_all()
    saved = capture_native.runtime_engine
    if checked_routines:
        capture_native.runtime_engine = lambda name: name  # type: ignore[assignment]
    try:
        stats = run_capture(vm, read_capture(path), engine=engine)
        return dict(stats.histogram)
    except CaptureError as error:
        return (error.reason, error.offset, error.packets)
    except EbpfError as error:  # a walker fault would be a MemoryFault: fail loudly
        raise AssertionError(f"{type(error).__name__}: {error}") from error
    finally:
        capture_native.runtime_engine = saved


def _mapping_rss(address: int) -> int:
    """Resident kB of the mapping starting at `address` (/proc/self/smaps;
    0 once it is unmapped: the last progress call comes after the end)."""
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for index, line in enumerate(lines):
        start = line.split("-", 1)[0]
        if all(c in "0123456789abcdef" for c in start) and int(start, 16) == address:
            for field in lines[index + 1 :]:
                if field.startswith("Rss:"):
                    return int(field.split()[1])
    return 0


@pytest.mark.parametrize("engine", ["jit", "interp"])
def test_walked_pages_are_released(tmp_path: Path, engine: str) -> None:
    """With a small release step, the mapping of a 6 MB capture never holds
    much more than the step resident, however far the walk goes."""
    path = tmp_path / "big.pcap"
    write(path, 50_000)
    capture = CaptureFile(path, release=256 << 10)
    address = capture.source.address
    peak = [0]

    def seen(_packets: int) -> None:
        peak[0] = max(peak[0], _mapping_rss(address))

    stats = run_capture(load_pass_all(), capture, engine=engine, progress=seen,
                        chunk=512 if engine == "jit" else 4096)
    assert stats.packets == 50_000
    assert path.stat().st_size > 5 << 20
    assert 0 < peak[0] < 1024, peak
