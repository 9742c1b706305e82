"""ebpfvm run --pcap: verdict histograms, maps and output captures, checked
against what dpkt (an independent parser) finds in the sample capture."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import dpkt
import pytest

from conftest import REPO
from ebpfvm.cli import main
from ebpfvm.jit.execmem import jit_supported

EXAMPLES = REPO / "examples" / "bpf"
SAMPLE = REPO / "examples" / "data" / "sample.pcap"
ENGINES = ["interp", "jit", "jit-unchecked"] if jit_supported() is None else ["interp"]
Capture = pytest.CaptureFixture[str]


def frames(path: Path) -> list[bytes]:
    with open(path, "rb") as handle:
        head = handle.read(4)
        handle.seek(0)
        reader = dpkt.pcapng.Reader(handle) if head == b"\x0a\x0d\x0d\x0a" \
            else dpkt.pcap.Reader(handle)
        return [bytes(frame) for _ts, frame in reader]


def protocol_mix(packets: list[bytes]) -> Counter[tuple[int, int]]:
    """(EtherType, IPv4 protocol or 0) of each frame, as proto_count.c keys them."""
    mix: Counter[tuple[int, int]] = Counter()
    for data in packets:
        eth = dpkt.ethernet.Ethernet(data)
        proto = eth.data.p if eth.type == dpkt.ethernet.ETH_TYPE_IP else 0
        mix[(eth.type, proto)] += 1
    return mix


def histogram(out: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^  (\S+)\s+(\d+)\s+[\d.]+%$", out, re.MULTILINE)}


def test_sample_capture_is_small_and_mixed() -> None:
    assert SAMPLE.stat().st_size < 200_000
    mix = protocol_mix(frames(SAMPLE))
    assert sum(mix.values()) >= 1000
    for key in [(0x0800, 6), (0x0800, 17), (0x0800, 1), (0x86DD, 0), (0x0806, 0)]:
        assert mix[key] > 20, key


@pytest.mark.parametrize("engine", ENGINES)
def test_proto_count_over_the_sample(engine: str, capsys: Capture) -> None:
    assert main(["run", str(EXAMPLES / "proto_count.o"), "--pcap", str(SAMPLE),
                 "--engine", engine, "--no-progress"]) == 0
    out = capsys.readouterr().out
    mix = protocol_mix(frames(SAMPLE))
    assert histogram(out) == {"XDP_PASS": sum(mix.values())}
    assert re.search(r"^\d+ packets in [\d.]+ s: [\d,]+ packets/s", out, re.MULTILINE)
    assert ("native batches" in out) == (engine != "interp")
    for (ethertype, proto), count in mix.items():
        assert f"{{ethertype: {ethertype}, proto: {proto}, pad: 0}} -> {count}" in out


@pytest.mark.parametrize("engine", ENGINES)
def test_config_drops_udp_and_writes_the_rest(engine: str, tmp_path: Path,
                                              capsys: Capture) -> None:
    out_pcap = tmp_path / "passed.pcap"
    assert main(["run", str(EXAMPLES / "config.o"), "--pcap", str(SAMPLE), "--engine", engine,
                 "--out", str(out_pcap)]) == 0
    packets = frames(SAMPLE)
    udp = [p for p in packets if protocol_mix([p]) == Counter({(0x0800, 17): 1})]
    kept = [p for p in packets if p not in udp]
    out = capsys.readouterr().out
    assert histogram(out) == {"XDP_DROP": len(udp), "XDP_PASS": len(kept)}
    assert frames(out_pcap) == kept  # in order, unchanged by the program
    assert f"wrote {len(kept)} passed packets" in out
    # The globals, by name from the object's BTF: config.c counts both verdicts.
    assert f"    passed = {len(kept)}\n    dropped = {len(udp)}\n" in out
    assert '    blocked_proto = 17\n    label = "ebpfvm example"\n' in out


@pytest.mark.parametrize("engine", ENGINES)
def test_map_preload_and_tail_calls(engine: str, tmp_path: Path, capsys: Capture) -> None:
    """dispatch.c tail-calls handle_tcp (pass) and handle_udp (drop) by IP protocol."""
    table = tmp_path / "handlers.json"
    table.write_text(json.dumps({"6": "handle_tcp", "17": "handle_udp"}))
    assert main(["run", str(EXAMPLES / "dispatch.o"), "--function", "dispatch", "--pcap",
                 str(SAMPLE), "--engine", engine, "--map", f"handlers=@{table}"]) == 0
    mix = protocol_mix(frames(SAMPLE))
    out = capsys.readouterr().out
    udp = mix[(0x0800, 17)]
    assert histogram(out) == {"XDP_PASS": sum(mix.values()) - udp, "XDP_DROP": udp}
    assert "6 -> handle_tcp" in out and "17 -> handle_udp" in out
    # .bss holds tcp_packets and udp_packets, counted by the handlers.
    assert f"    tcp_packets = {mix[(0x0800, 6)]}\n    udp_packets = {udp}\n" in out


def test_map_preload_with_btf_keys(capsys: Capture) -> None:
    seed = json.dumps([[{"ethertype": 2048, "proto": 6}, 1000]])
    assert main(["run", str(EXAMPLES / "proto_count.o"), "--pcap", str(SAMPLE),
                 "--map", f"counts={seed}"]) == 0
    tcp = protocol_mix(frames(SAMPLE))[(0x0800, 6)]
    assert f"{{ethertype: 2048, proto: 6, pad: 0}} -> {1000 + tcp}" in capsys.readouterr().out


def test_pcapng_input_gives_the_same_verdicts(tmp_path: Path, capsys: Capture) -> None:
    packets = frames(SAMPLE)
    ng = tmp_path / "sample.pcapng"
    with open(ng, "wb") as handle:
        writer = dpkt.pcapng.Writer(handle)
        for index, data in enumerate(packets):
            writer.writepkt(data, ts=1.0 + index)
    assert frames(ng) == packets
    args = ["run", str(EXAMPLES / "rate_limit.o"), "--pcap"]
    assert main([*args, str(SAMPLE)]) == 0
    from_pcap = histogram(capsys.readouterr().out)
    assert main([*args, str(ng)]) == 0
    assert histogram(capsys.readouterr().out) == from_pcap
    assert from_pcap["XDP_DROP"] > 0  # the busy sources go over the limit of 3


@pytest.mark.parametrize("data", [b"", b"\xd4\xc3\xb2\xa1\x02\x00", b"not a capture at all"])
def test_a_damaged_capture_is_a_one_line_error(data: bytes, tmp_path: Path,
                                               capsys: Capture) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data)
    assert main(["run", str(EXAMPLES / "proto_count.o"), "--pcap", str(cut)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ebpfvm: error: ") and err.count("\n") == 1
    assert "not a pcap or pcapng capture" in err


# An XDP program in assembly: swap byte 0 (destination MAC) and byte 6 (source MAC).
SWAP_BYTES = """
    ldxw r2, [r1+4]
    ldxw r1, [r1]
    mov r3, r1
    add r3, 14
    jgt r3, r2, out
    ldxb r4, [r1]
    ldxb r5, [r1+6]
    stxb [r1], r5
    stxb [r1+6], r4
out:
    mov r0, 2
    exit
"""
# bpf_xdp_adjust_head(ctx, 14): the packet now starts after the Ethernet header.
STRIP_ETHERNET = "mov r2, 14\ncall 44\nmov r0, 2\nexit\n"


@pytest.mark.parametrize("engine", ENGINES)
def test_out_pcap_holds_the_packets_as_the_program_changed_them(
        engine: str, tmp_path: Path, capsys: Capture) -> None:
    src, out_pcap = tmp_path / "swap.s", tmp_path / "out.pcap"
    src.write_text(SWAP_BYTES)
    assert main(["run", str(src), "--context", "xdp", "--pcap", str(SAMPLE), "--engine", engine,
                 "--out", str(out_pcap)]) == 0
    expected = [bytes([p[6], *p[1:6], p[0], *p[7:]]) for p in frames(SAMPLE)]
    assert frames(out_pcap) == expected
    out = capsys.readouterr().out
    assert histogram(out) == {"XDP_PASS": len(expected)}
    assert ("native batches" in out) == (engine != "interp")


@pytest.mark.parametrize("engine", ENGINES)
def test_programs_that_move_the_packet_start_run_per_packet(
        engine: str, tmp_path: Path, capsys: Capture) -> None:
    src, out_pcap = tmp_path / "strip.s", tmp_path / "out.pcap"
    src.write_text(STRIP_ETHERNET)
    assert main(["run", str(src), "--context", "xdp", "--pcap", str(SAMPLE), "--engine", engine,
                 "--out", str(out_pcap)]) == 0
    assert frames(out_pcap) == [p[14:] for p in frames(SAMPLE)]
    out = capsys.readouterr().out
    assert "per packet" in out and "native batches" not in out
    if engine != "interp":
        assert "[44]" in out  # the reason names bpf_xdp_adjust_head


@pytest.mark.parametrize("engine", ENGINES)
def test_ring_buffer_fill_is_shown_in_bytes(engine: str, capsys: Capture) -> None:
    """events.c reserves an 8-byte struct event per parsed frame; with the
    ring's 8-byte record header that is 16 bytes a record; the kernel keeps
    the producer less than the ring's size ahead, so its 4,096 bytes hold 255
    records (4,080 bytes) and the sample has more frames than that."""
    assert len(frames(SAMPLE)) > 256
    assert main(["run", str(EXAMPLES / "events.o"), "--pcap", str(SAMPLE),
                 "--engine", engine, "--no-progress"]) == 0
    assert "events: ringbuf" in (out := capsys.readouterr().out)
    assert "4080 of 4096 bytes waiting" in out
