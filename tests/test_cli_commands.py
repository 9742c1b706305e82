"""The ebpfvm command: every subcommand, exit codes, one-line errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from ebpfvm import BudgetExceeded, ElfError, VerifierError, verify
from ebpfvm.cli import main
from ebpfvm.disasm_llvm import format_llvm
from ebpfvm.encoding import decode
from ebpfvm.jit.execmem import jit_supported
from ebpfvm.objdump import disassemble_object

EXAMPLES = REPO / "examples" / "bpf"
GOLDEN = REPO / "tests" / "data" / "llvm_disasm"
JIT = pytest.mark.skipif(jit_supported() is not None, reason=str(jit_supported()))
Capture = pytest.CaptureFixture[str]


def test_usage_errors_exit_2(capsys: Capture) -> None:
    assert main(["run"]) == 2  # no program
    assert main(["frobnicate"]) == 2
    assert main(["run", str(EXAMPLES / "config.o"), "--trace", "--engine", "jit"]) == 2
    assert main(["run", str(EXAMPLES / "config.o"), "--out", "x.pcap"]) == 2  # needs --pcap
    assert "--trace needs --engine interp" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "run a program on input or a capture" in capsys.readouterr().out
    assert main(["run", "--help"]) == 0
    assert "--pcap FILE" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["run", "{missing}"],
    ["run", "{bad_elf}"],
    ["run", "{obj}", "--section", "nosuch"],
    ["run", "{obj}", "--map", "nosuch={{}}"],
    ["run", "{obj}", "--map", "counts=[1"],
    ["run", "{obj}", "--pcap", "{obj}"],  # not a capture
    ["disasm", "{bad_elf}"],
    ["maps", "{asm}"],
    ["asm", "{bad_asm}", "-o", "{out}"],
])
def test_input_errors_are_one_line_exit_1(argv: list[str], tmp_path: Path,
                                          capsys: Capture) -> None:
    bad_elf = tmp_path / "bad.o"
    bad_elf.write_bytes(b"\x7fELF" + bytes(60))
    (tmp_path / "prog.s").write_text("exit\n")
    (tmp_path / "bad.s").write_text("frobnicate r1\n")
    names = {"missing": tmp_path / "missing.o", "bad_elf": bad_elf, "obj": EXAMPLES /
             "proto_count.o", "asm": tmp_path / "prog.s", "bad_asm": tmp_path / "bad.s",
             "out": tmp_path / "out.bin"}
    args = [a.format(**names) for a in argv]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("ebpfvm: error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_debug_shows_the_exception(tmp_path: Path) -> None:
    bad = tmp_path / "bad.o"
    bad.write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(ElfError):
        main(["--debug", "run", str(bad)])
    with pytest.raises(ElfError):
        main(["run", "--debug", str(EXAMPLES / "proto_count.o"), "--section", "nosuch"])


def test_errors_from_the_console_script_have_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "ebpfvm.cli", "verify",
                             str(tmp_path / "none.o")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_asm_writes_the_isa_encoding(tmp_path: Path, capsys: Capture) -> None:
    source, out = tmp_path / "p.s", tmp_path / "p.bin"
    source.write_text("mov r0, 7\nexit\n")
    assert main(["asm", str(source), "-o", str(out)]) == 0
    # RFC 9669: mov64 K is opcode 0xb7 (imm 7 little-endian), exit is 0x95.
    assert out.read_bytes() == bytes.fromhex("b700000007000000" "9500000000000000")
    assert "2 slots" in capsys.readouterr().out


def test_verify_reports_pc_and_reason(tmp_path: Path, capsys: Capture) -> None:
    assert main(["verify", str(EXAMPLES / "dispatch.o")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["xdp/dispatch: OK (21 slots)", "xdp/tcp/handle_tcp: OK (7 slots)",
                     "xdp/udp/handle_udp: OK (7 slots)"]
    bad = tmp_path / "bad.bin"
    # mov r0, 0; then mov r10, 1: r10 is read-only (RFC 9669 section 2.3).
    bad.write_bytes(bytes.fromhex("b700000000000000" "b70a000001000000" "9500000000000000"))
    assert main(["verify", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "REJECTED at pc 1:" in out
    with pytest.raises(VerifierError) as info:
        verify(bad.read_bytes())
    assert info.value.pc == 1 and info.value.rule in out


def test_maps_show_btf_types(capsys: Capture) -> None:
    assert main(["maps", str(EXAMPLES / "proto_count.o")]) == 0
    out = capsys.readouterr().out
    # proto_count.c declares the key as struct proto_key { __u16 ethertype; __u8 proto; __u8 pad; }
    assert "counts: hash" in out
    assert "key struct proto_key { __u16 ethertype; __u8 proto; __u8 pad; } (4 bytes)" in out
    assert "max_entries 64" in out
    assert main(["maps", str(EXAMPLES / "events.o")]) == 0
    assert "events: ringbuf, 4096 bytes" in capsys.readouterr().out


def test_llvm_syntax_of_every_table_row() -> None:
    """Every opcode-table row against what llvm-mc-19 printed (tools/gen_llvm_golden.py)."""
    rows = (GOLDEN / "rows.txt").read_text().splitlines()
    assert len(rows) > 200
    for line in rows:
        code, expected = line.split(" | ", 1)
        ours = format_llvm(decode(bytes.fromhex(code))[0])
        assert ours == expected, code


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.o")))
def test_llvm_listing_of_examples_matches_llvm_objdump(name: str) -> None:
    golden = (GOLDEN / f"{name}.txt").read_text()
    assert disassemble_object((EXAMPLES / f"{name}.o").read_bytes(), source=False) == golden


def test_disasm_interleaves_c_source_lines(capsys: Capture) -> None:
    assert main(["disasm", "--style", "llvm", str(EXAMPLES / "proto_count.o")]) == 0
    out = capsys.readouterr().out
    sources = {"proto_count.c": (EXAMPLES / "proto_count.c").read_text().splitlines(),
               "common.h": (EXAMPLES / "common.h").read_text().splitlines()}
    comments = [line for line in out.splitlines() if line.startswith("; ")]
    assert len(comments) > 5
    for comment in comments:
        text, file_line = comment[2:].rsplit(" @ ", 1)
        file, number = file_line.split(":")
        # The text BTF carries is the C line at that number of the source file.
        assert sources[file][int(number) - 1].strip() == text
    assert any("bpf_map_lookup_elem(&counts, &key)" in c for c in comments)
    # Without source lines, the instruction lines are llvm-objdump's.
    # (The CLI adds llvm-objdump's file line and -r relocation lines: see
    # tests/test_cli_conventions.py.)
    assert main(["disasm", "--style", "llvm", "--no-source", str(EXAMPLES / "proto_count.o")]) == 0
    lines = capsys.readouterr().out.splitlines(keepends=True)
    assert lines[1].endswith("proto_count.o:\tfile format elf64-bpf\n")
    listing = "".join(line for line in lines[2:] if "R_BPF_" not in line)
    assert listing == (GOLDEN / "proto_count.txt").read_text()


def test_disasm_one_function(capsys: Capture) -> None:
    assert main(["disasm", "--style", "llvm", "--no-source", "--function", "handle_udp",
                 str(EXAMPLES / "dispatch.o")]) == 0
    out = capsys.readouterr().out
    assert "<handle_udp>:" in out and "<dispatch>:" not in out and "<handle_tcp>:" not in out
    assert out.rstrip().endswith("exit")


def test_run_single_xdp_packet_with_trace(tmp_path: Path, capsys: Capture) -> None:
    frame = bytes(12) + b"\x08\x00" + bytes([0x45] + [0] * 8 + [17] + [0] * 10) + bytes(8)
    packet = tmp_path / "udp.bin"
    packet.write_bytes(frame)
    # config.c drops blocked_proto, 17 (UDP), unless told otherwise.
    assert main(["run", str(EXAMPLES / "config.o"), "--packet", str(packet), "--trace"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "verdict: XDP_DROP" in out and "r0 = 0x1 (1)" in out
    trace = [line for line in out if re.match(r"\s*\d+: ", line)]
    assert trace and trace[0].split(":")[0].strip() == "0"
    assert trace[-1].split()[1] == "exit"


def test_run_prints_trace_printk_output(capsys: Capture) -> None:
    # block_port.c: rbpf fixed mbuff, data at 0x40, data_end at 0x50; source port 0x9999.
    packet = "0123456789abfedcba987654 0800 4500003ba6ab40004006960f7f0000017f000001 " \
             "9999c6ccd1e5c49dd430b5d2801801560000"
    assert main(["run", str(EXAMPLES / "block_port.o"), "--mbuff", "0x40,0x50",
                 "--hex", packet]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "trace_printk: blocked tcp 39321 -> 50892" in out
    assert "verdict: TC_ACT_SHOT" in out


@JIT
def test_bench_output_shape(capsys: Capture, tmp_path: Path) -> None:
    packet = tmp_path / "p.bin"
    packet.write_bytes(bytes(12) + b"\x08\x00" + bytes([0x45] + [0] * 8 + [6] + [0] * 10))
    assert main(["bench", str(EXAMPLES / "config.o"), "--packet", str(packet),
                 "--repeat", "2000"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["engine", "ns/run", "runs", "r0"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"interp", "jit", "jit-unchecked"}
    for engine, row in rows.items():
        assert float(row[1]) > 0
        assert int(row[2]) == (20 if engine == "interp" else 2000)
        assert row[3:] == ["2", "(XDP_PASS)"]  # TCP is not blocked


def test_budget_stops_a_loop_with_a_one_line_error(tmp_path: Path, capsys: Capture) -> None:
    spin = tmp_path / "spin.s"
    spin.write_text("loop:\nja loop\nexit\n")
    assert main(["run", str(spin), "--budget", "100"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "100" in err
    with pytest.raises(BudgetExceeded) as info:
        main(["run", "--debug", str(spin), "--budget", "100"])
    assert info.value.count == 100


@JIT
@pytest.mark.parametrize("engine", ["interp", "jit", "jit-unchecked"])
def test_run_engines_agree_on_raw_input(engine: str, tmp_path: Path, capsys: Capture) -> None:
    src = tmp_path / "sum.s"
    src.write_text("mov r0, 0\nloop:\njeq r2, 0, done\nldxb r3, [r1]\nadd r0, r3\nadd r1, 1\n"
                   "sub r2, 1\nja loop\ndone:\nexit\n")
    data = tmp_path / "data.bin"
    data.write_bytes(bytes(range(1, 101)))
    assert main(["run", str(src), "--mem", str(data), "--engine", engine]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "r0 = 0x13ba (5050)"  # 1 + ... + 100


@JIT
def test_jit_dump_of_an_object_program(capsys: Capture) -> None:
    assert main(["jit-dump", str(EXAMPLES / "dispatch.o"), "--function", "handle_udp"]) == 0
    out = capsys.readouterr().out
    pcs = [line.split(":")[0].strip() for line in out.splitlines() if line[:5].strip().isdigit()]
    assert pcs[0] == "0" and len(pcs) >= 5  # handle_udp in dispatch.c: 7 slots, one lddw
