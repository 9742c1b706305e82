"""Issue 14, point 4 and the small items: the conventions of the tools users
know. '-' for standard input and output, maps --dump and run --dump-maps
(bpftool map dump), --json (bpftool -j), disasm as llvm-objdump -dr, --tx-out
for XDP_TX, the progress bar; plurals in messages, checked KernelEnv numbers
and interpreter_slot_limit; the cli fuzz target's judge.

Expected values come from the programs' C source and the packets the tests
build (tests/data/elf/flows.c: a flow table in network byte order, XDP_TX for
UDP to port 7), and llvm-objdump for the listing's header and relocations."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import fuzzcli
from conftest import REPO
from ebpfvm.capture import CaptureError, CaptureWriter, read_capture
from ebpfvm.errors import ArgumentError, ArgumentTypeError
from ebpfvm.kernel import KernelEnv
from ebpfvm.vm import EbpfVmRaw

EXAMPLES = REPO / "examples"
BPF = EXAMPLES / "bpf"
FLOWS = REPO / "tests" / "data" / "elf" / "flows.o"
SUM_BYTES = EXAMPLES / "asm" / "sum_bytes.s"
SAMPLE = EXAMPLES / "data" / "sample.pcap"
TIMEOUT = 120


def cli(*argv: str | Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "ebpfvm.cli", *map(str, argv)], input=stdin,
                          capture_output=True, timeout=TIMEOUT, check=False)


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def error_line(result: subprocess.CompletedProcess[bytes], status: int = 1) -> str:
    err = result.stderr.decode()
    assert result.returncode == status, err
    assert err.count("\n") == 1 and err.startswith("ebpfvm: error: "), err
    return err


def _udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"ping") -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(payload), 0, 0, 64, 17, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return bytes(6) + bytes(5) + b"\x01" + b"\x08\x00" + ip + struct.pack(
        "!HHHH", sport, dport, 8 + len(payload), 0) + payload


def _tcp(src: str, dst: str, sport: int, dport: int) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return bytes(12) + b"\x08\x00" + ip + struct.pack("!HHIIHHHH", sport, dport, 0, 0,
                                                      0x5002, 0, 0, 0)


ECHO = _udp("10.0.0.1", "10.0.0.2", 1234, 7)
WEB = _tcp("192.168.1.5", "10.0.0.9", 80, 5555)


@pytest.fixture
def flows_pcap(tmp_path: Path) -> Path:
    path = tmp_path / "flows.pcap"
    writer = CaptureWriter(path)
    for number, frame in enumerate((ECHO, WEB, ECHO)):
        writer.write(frame, float(number))
    writer.close()
    return path


# -- '-' for standard input and output ---------------------------------------------------------


def test_dash_reads_the_capture_packet_memory_and_program_from_stdin(flows_pcap: Path) -> None:
    from_file = json.loads(ok(cli("run", FLOWS, "--pcap", flows_pcap, "--json")))
    piped = json.loads(ok(cli("run", FLOWS, "--pcap", "-", "--json",
                              stdin=flows_pcap.read_bytes())))
    assert piped["capture"]["verdicts"] == from_file["capture"]["verdicts"] == {
        "XDP_TX": 2, "XDP_PASS": 1}
    # sum_bytes adds the input's bytes: 1 + 2.
    assert "r0 = 0x3 (3)" in ok(cli("run", SUM_BYTES, "--mem", "-", stdin=b"\x01\x02"))
    assert "r0 = 0x3 (3)" in ok(cli("run", SUM_BYTES, "--packet", "-", stdin=b"\x01\x02"))
    # A program from stdin: assembly text, or an ELF object.
    assert "r0 = 0x3 (3)" in ok(cli("run", "-", "--hex", "0102", stdin=SUM_BYTES.read_bytes()))
    from_stdin = json.loads(ok(cli("run", "-", "--pcap", flows_pcap, "--json",
                                   stdin=FLOWS.read_bytes())))
    assert from_stdin["capture"]["verdicts"] == from_file["capture"]["verdicts"]


def test_one_argument_per_standard_stream(flows_pcap: Path) -> None:
    line = error_line(cli("run", "-", "--pcap", "-", stdin=flows_pcap.read_bytes()))
    assert "standard input" in line and "program, --pcap" in line


def test_out_dash_writes_the_capture_to_stdout_and_the_report_to_stderr(
        flows_pcap: Path, tmp_path: Path) -> None:
    result = cli("run", FLOWS, "--pcap", flows_pcap, "--out", "-")
    assert result.returncode == 0
    passed = tmp_path / "passed.pcap"
    passed.write_bytes(result.stdout)
    assert [frame for _t, frame in read_capture(passed)] == [WEB]
    assert "wrote 1 passed packet to -" in result.stderr.decode()


def test_asm_writes_to_stdout_with_dash_or_without_o_when_piped(tmp_path: Path) -> None:
    with_dash = cli("asm", SUM_BYTES, "-o", "-")
    without = cli("asm", SUM_BYTES)
    to_file = tmp_path / "sum.bin"
    ok(cli("asm", SUM_BYTES, "-o", to_file))
    assert with_dash.stdout == without.stdout == to_file.read_bytes()
    assert with_dash.stderr == without.stderr == b""


# -- --tx-out -----------------------------------------------------------------------------------


def test_tx_out_gets_the_packets_sent_back(checked_engine: str, flows_pcap: Path,
                                          tmp_path: Path) -> None:
    # Per packet (interp) and in native batches (jit) alike.
    engine = checked_engine
    tx, out = tmp_path / "tx.pcap", tmp_path / "out.pcap"
    text = ok(cli("run", FLOWS, "--pcap", flows_pcap, "--engine", engine, "--tx-out", tx,
                  "--out", out))
    assert [frame for _t, frame in read_capture(tx)] == [ECHO, ECHO]
    assert [frame for _t, frame in read_capture(out)] == [WEB]
    assert f"wrote 2 packets sent back (XDP_TX) to {tx}" in text


def test_tx_out_needs_a_capture_and_an_xdp_program(flows_pcap: Path, tmp_path: Path) -> None:
    result = cli("run", FLOWS, "--hex", "00", "--tx-out", tmp_path / "tx.pcap")
    assert result.returncode == 2 and b"--tx-out needs --pcap" in result.stderr
    result = cli("run", SUM_BYTES, "--pcap", flows_pcap, "--tx-out", tmp_path / "tx.pcap")
    assert result.returncode == 2 and b"needs an XDP program" in result.stderr


# -- maps --dump, --dump-maps ------------------------------------------------------------------


def test_dump_maps_decodes_network_order_addresses_and_ports(flows_pcap: Path) -> None:
    text = ok(cli("run", FLOWS, "--pcap", flows_pcap, "--dump-maps"))
    echo = ('{"saddr": "10.0.0.1", "daddr": "10.0.0.2", "sport": 1234, "dport": 7, '
            f'"proto": 17, "pad": ""}} -> {{"packets": 2, "bytes": {2 * len(ECHO)}}}')
    web = ('{"saddr": "192.168.1.5", "daddr": "10.0.0.9", "sport": 80, "dport": 5555, '
           f'"proto": 6, "pad": ""}} -> {{"packets": 1, "bytes": {len(WEB)}}}')
    assert echo in text and web in text and "(2 entries)" in text


def test_maps_dump_shows_the_initial_contents() -> None:
    text = ok(cli("maps", BPF / "rate_limit.o", "--dump"))
    assert "limit = 3" in text  # rate_limit.c: const volatile __u32 limit = 3
    assert "(0 entries)" in text
    assert ok(cli("maps", FLOWS, "--dump")).count("(0 entries)") == 1


# -- --json ---------------------------------------------------------------------------------------


def test_run_json_single_and_capture(flows_pcap: Path) -> None:
    single = json.loads(ok(cli("run", SUM_BYTES, "--hex", "0102", "--json")))
    assert single["r0"] == 3 and single["verdict"] is None and single["maps"] == []
    doc = json.loads(ok(cli("run", FLOWS, "--pcap", flows_pcap, "--json")))
    assert doc["section"] == "xdp" and doc["function"] == "flow_echo"
    assert doc["context"] == "xdp" and doc["capture"]["packets"] == 3
    (flows,) = doc["maps"]
    assert flows["name"] == "flows" and flows["key_size"] == 16 and flows["max_entries"] == 16
    keys = {(e["key"]["saddr"], e["key"]["dport"]): e["value"]["packets"]
            for e in flows["entries"]}
    assert keys == {("10.0.0.1", 7): 2, ("192.168.1.5", 5555): 1}


def test_maps_verify_bench_json() -> None:
    (counts,) = json.loads(ok(cli("maps", BPF / "proto_count.o", "--json")))
    # proto_count.c: BPF_MAP_TYPE_HASH, 64 entries, struct proto_key (4 bytes) -> __u64.
    assert (counts["name"], counts["type"], counts["key_size"], counts["value_size"],
            counts["max_entries"]) == ("counts", "hash", 4, 8, 64)
    verified = json.loads(ok(cli("verify", BPF / "dispatch.o", "--json")))
    assert verified["rejected"] == 0 and len(verified["programs"]) == 3
    bench = json.loads(ok(cli("bench", SUM_BYTES, "--hex", "0102", "--repeat", "10",
                              "--engine", "interp", "--json")))
    (only,) = bench["results"]
    assert only["engine"] == "interp" and only["r0"] == 3 and only["ns_per_run"] > 0


def test_verify_rejection_is_a_document_and_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes.fromhex("ff00000000000000" "9500000000000000"))  # opcode 0xff
    result = cli("verify", bad, "--json")
    line = error_line(result)
    assert "rejected 1 of 1 program" in line
    (program,) = json.loads(result.stdout)["programs"]
    assert program["ok"] is False and program["pc"] == 0 and program["rule"]


# -- disasm -------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("llvm-objdump") is None, reason="llvm-objdump is not installed")
@pytest.mark.parametrize("name", ["rate_limit", "dispatch", "proto_count", "events"])
def test_disasm_header_and_relocations_as_llvm_objdump(name: str) -> None:
    path = BPF / f"{name}.o"
    ours = ok(cli("disasm", path, "--style", "llvm", "--no-source")).splitlines()
    theirs = subprocess.run(["llvm-objdump", "-dr", str(path)], capture_output=True, text=True,
                            check=True, timeout=TIMEOUT).stdout.splitlines()
    assert ours[:2] == theirs[:2] == ["", f"{path}:\tfile format elf64-bpf"]
    assert [line for line in ours if "R_BPF" in line] == [
        line for line in theirs if "R_BPF" in line]
    assert [line for line in ours if line.startswith("Disassembly")] == [
        line for line in theirs if line.startswith("Disassembly")]


def test_disasm_json_names_the_maps_lddw_loads() -> None:
    doc = json.loads(ok(cli("disasm", BPF / "rate_limit.o", "--json")))
    assert doc["format"] == "elf64-bpf" and [s["name"] for s in doc["sections"]] == ["xdp"]
    insns = doc["sections"][0]["insns"]
    assert insns[0]["symbol"] == "rate_limit" and insns[0]["pc"] == 0
    named = [r["symbol"] for i in insns for r in i["relocations"]]
    assert named == ["seen", "seen", "limit"]  # rate_limit.c: seen twice, then limit
    assert all(i["text"].startswith("lddw") for i in insns if i["relocations"])


def test_raw_listings_have_pc_numbers(tmp_path: Path) -> None:
    lines = ok(cli("disasm", SUM_BYTES)).splitlines()
    assert [line.split(":")[0].strip() for line in lines] == [str(pc) for pc in range(len(lines))]


# -- progress, plurals, library arguments --------------------------------------------------------


def test_progress_counts_packets_on_stdin_too() -> None:
    from ebpfvm.cli_run import progress

    bar, advance = progress(Path("-"), io.BytesIO(), disabled=True)
    advance(4096)
    advance(5)
    assert bar.postfix == "4,101 packets" and bar.total is None
    bar.close()


def test_one_byte_is_singular(tmp_path: Path) -> None:
    capture = tmp_path / "cut.pcap"
    writer = CaptureWriter(capture)
    writer.write(WEB, 0.0)
    writer.close()
    data = capture.read_bytes()
    capture.write_bytes(data[: len(data) - len(WEB) + 1])  # one byte of the packet left
    with pytest.raises(CaptureError, match=r"needs 54 bytes, 1 byte left"):
        list(read_capture(capture))


@pytest.mark.parametrize(("field", "value", "error"), [
    ("max_lines", -1, ArgumentError), ("hz", 0, ArgumentError), ("pid", 1 << 32, ArgumentError),
    ("cpu", True, ArgumentTypeError), ("seed", "x", ArgumentTypeError),
    ("boot_offset_ns", -5, ArgumentError), ("comm", "ebpfvm", ArgumentTypeError)])
def test_kernel_env_numbers_are_checked_when_given(field: str, value: object,
                                                   error: type[Exception]) -> None:
    with pytest.raises(error, match=f"KernelEnv.{field} must be"):
        KernelEnv(**{field: value})  # type: ignore[arg-type]


def test_interpreter_slot_limit_is_checked_when_set() -> None:
    vm = EbpfVmRaw()
    for value, error in ((0, ArgumentError), (-3, ArgumentError), ("x", ArgumentTypeError)):
        with pytest.raises(error, match="interpreter_slot_limit must be"):
            vm.interpreter_slot_limit = value  # type: ignore[assignment]
    vm.interpreter_slot_limit = None
    vm.interpreter_slot_limit = 7
    assert vm.interpreter_slot_limit == 7


# -- the cli fuzz target's judge (point 6) ---------------------------------------------------------


@pytest.mark.parametrize(("status", "err", "expected"), [
    (0, "", "ok"),
    (1, "ebpfvm: error: x.o: bad\n", "exit1"),
    (2, "usage: ebpfvm run [-h]\nebpfvm run: error: bad\n", "exit2"),
    (1, "Traceback (most recent call last):\nValueError\n", "BUG:traceback"),
    (1, "ebpfvm: error: one\nebpfvm: error: two\n", "BUG:exit1-stderr"),
    (1, "", "BUG:exit1-stderr"),
    (3, "", "BUG:exit-3"),
    ("hang", "", "BUG:exit-hang"),
    (0, "a\nb\n", "BUG:stderr-lines"),
])
def test_the_cli_judge_sees_what_breaks_the_rule(status: object, err: str, expected: str) -> None:
    assert fuzzcli._judge(status, err, debug=False) == expected


def test_the_cli_target_runs_in_process_and_in_a_child() -> None:
    argv = ["run", str(SUM_BYTES), "--hex", "0102"]
    assert fuzzcli.check_cli((argv, [], b"", False)) == [("cli-run", "ok", "")]
    assert fuzzcli.check_cli((argv, [], b"", True)) == [("cli-run", "ok", "")]
    broken = ["run", str(SUM_BYTES), "--budget", "-5"]
    assert fuzzcli.check_cli((broken, [], b"", False))[0][1] == "exit2"


def test_trace_with_json_is_a_usage_error() -> None:
    result = cli("run", SUM_BYTES, "--hex", "01", "--trace", "--json")
    err = result.stderr.decode()
    assert result.returncode == 2 and err.startswith("usage: ebpfvm run")
    assert err.splitlines()[-1] == ("ebpfvm run: error: --trace prints text, not JSON "
                                    "(drop --json or --trace)")


def test_sizes_of_one_byte_are_singular_in_map_messages() -> None:
    from ebpfvm.errors import MapError
    from ebpfvm.maps import create_map

    with pytest.raises(MapError, match=r"not 1 byte$"):
        create_map("trie", 11, 1, 8, 4, 1)  # BPF_MAP_TYPE_LPM_TRIE, BPF_F_NO_PREALLOC


def test_the_cli_judge_splits_lines_at_newlines_only() -> None:
    # Found by the 100,000-input campaign: argparse echoes an argument with
    # U+0085 (NEL), which str.splitlines took for a second line.
    err = "usage: ebpfvm [-h]\nebpfvm: error: unrecognized arguments: a\x85b\n"
    assert fuzzcli._judge(2, err, debug=False) == "exit2"
