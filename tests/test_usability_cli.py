"""Issue 14, the command line: one rule for errors. Exit 0 on success; 1 on a
program or input error with exactly one stderr line ``ebpfvm: error: ...``
naming the file; 2 on a usage error with the subcommand's usage; broken pipes
end quietly. And --map values that do not fit their BTF type are typed errors
naming the field (BtfValueError, from the library too)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from ebpfvm.btf import BtfValueError
from ebpfvm.elf import load
from hostile_elf import SHT_STRTAB, SHT_SYMTAB, Section, write_elf

EXAMPLES = REPO / "examples"
PROTO_COUNT = EXAMPLES / "bpf" / "proto_count.o"  # counts: struct proto_key -> __u64
DISPATCH = EXAMPLES / "bpf" / "dispatch.o"  # programs dispatch, handle_tcp, handle_udp
BTF_MAPS = REPO / "tests" / "data" / "elf" / "btfmaps.o"  # flows: struct flow -> struct stats
SUM_BYTES = EXAMPLES / "asm" / "sum_bytes.s"
TIMEOUT = 60


def cli(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    """`ebpfvm ARGV` from this worktree's sources, in a child process."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "ebpfvm.cli", *map(str, argv)],
                          capture_output=True, text=True, env=env, timeout=TIMEOUT,
                          check=False)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of an input error (exit 1), without a traceback."""
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ebpfvm: error: ")
    return lines[0]


def usage_error(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The message of a usage error (exit 2) after `command`'s own usage."""
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"usage: ebpfvm {command} "), result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"ebpfvm {command}: error: ")
    return last


@pytest.fixture
def loop_s(tmp_path: Path) -> Path:
    path = tmp_path / "loop.s"
    path.write_text("loop:\nadd r0, 1\nja loop\nexit\n")
    return path


# -- the rule: exit statuses, usage, --debug, broken pipes ---------------------------


def test_plain_ebpfvm_is_a_usage_error() -> None:
    result = cli()
    assert result.returncode == 2
    assert result.stderr.startswith("usage: ebpfvm ")
    assert "COMMAND" in result.stderr.splitlines()[-1]


def test_usage_errors_inside_run_print_runs_usage() -> None:
    # --out without --pcap is found after parsing: still run's usage, not the top level's.
    line = usage_error(cli("run", SUM_BYTES, "--out", "x.pcap"), "run")
    assert "--out" in line


def test_trace_with_pcap_is_one_clear_message() -> None:
    line = usage_error(cli("run", SUM_BYTES, "--pcap", EXAMPLES / "data" / "sample.pcap",
                           "--trace"), "run")
    assert "capture" in line and "--engine" not in line


@pytest.mark.parametrize("argv,option", [
    (["--budget", "-5"], "--budget"),
    (["--hex", "0102", "--budget", str(2**64), "--engine", "jit"], "--budget"),
    (["--mbuff", "100000000000,0"], "--mbuff"),
    (["--entries", "-1"], "--entries"),
])
def test_bad_numbers_are_usage_errors(argv: list[str], option: str, loop_s: Path) -> None:
    line = usage_error(cli("run", loop_s, *argv), "run")
    assert option in line


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = cli("run", "--debug", tmp_path / "missing.s")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_broken_pipe_ends_quietly(tmp_path: Path) -> None:
    program = tmp_path / "l2.s"
    program.write_text("loop:\nadd r0, 1\njne r0, 200000, loop\nexit\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with subprocess.Popen([sys.executable, "-m", "ebpfvm.cli", "run", str(program), "--trace"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as child:
        assert child.stdout is not None and child.stderr is not None
        first = [child.stdout.readline() for _ in range(2)]
        child.stdout.close()  # like `| head -2`
        status = child.wait(timeout=TIMEOUT)
        err = child.stderr.read()
    assert all(line.strip() for line in first)
    assert status == 0 and err == b""


# -- input errors: one line naming the file ---------------------------------------


def test_missing_file_says_cannot_read(tmp_path: Path) -> None:
    missing = tmp_path / "nofile.s"
    line = error_line(cli("run", missing))
    assert f"cannot read {missing}" in line and "No such file" in line
    assert "Errno" not in line


def test_non_elf_dot_o_is_not_raw_bytecode(tmp_path: Path) -> None:
    bad = tmp_path / "bad.o"
    bad.write_bytes(b"hello, not an object\n")
    for command in ("run", "verify", "disasm"):
        line = error_line(cli(command, bad))
        assert str(bad) in line and "not an ELF object" in line


def test_disasm_of_an_empty_file(tmp_path: Path) -> None:
    for name in ("empty.o", "empty.bin"):
        empty = tmp_path / name
        empty.write_bytes(b"")
        line = error_line(cli("disasm", empty))
        assert str(empty) in line


def _no_program_object(path: Path) -> Path:
    path.write_bytes(write_elf([
        Section("", 0, 0, b""),
        Section(".symtab", SHT_SYMTAB, 0, bytes(24), link=2, entsize=24),
        Section(".strtab", SHT_STRTAB, 0, b"\0"),
    ]))
    return path


def test_verify_an_object_without_programs(tmp_path: Path) -> None:
    obj = _no_program_object(tmp_path / "none.o")
    line = error_line(cli("verify", obj))
    assert str(obj) in line and "no programs" in line


def test_disasm_an_object_without_code(tmp_path: Path) -> None:
    obj = _no_program_object(tmp_path / "none.o")
    line = error_line(cli("disasm", obj))
    assert str(obj) in line and "no code sections" in line and "None" not in line


@pytest.mark.parametrize("text,words", [("012", "odd number"), ("0g", "'g'")])
def test_bad_hex(text: str, words: str, loop_s: Path) -> None:
    line = error_line(cli("run", loop_s, "--hex", text))
    assert words in line and "fromhex" not in line


def test_non_utf8_assembly_is_named(tmp_path: Path) -> None:
    source = tmp_path / "bad.s"
    source.write_bytes(b"mov r0, 1 \xff\nexit\n")
    for argv in (["run", source], ["asm", source, "-o", tmp_path / "out.bin"]):
        line = error_line(cli(*argv))
        assert str(source) in line and "UTF-8" in line and "0xff" in line


def test_several_programs_suggest_function() -> None:
    line = error_line(cli("run", DISPATCH))
    assert "--function" in line
    assert all(name in line for name in ("dispatch", "handle_tcp", "handle_udp"))
    assert "None" not in line


def test_unknown_program_has_no_python_reprs() -> None:
    line = error_line(cli("run", DISPATCH, "--function", "nope"))
    assert "nope" in line and "None" not in line and "name=" not in line


def test_unknown_code_section_has_no_python_reprs() -> None:
    line = error_line(cli("disasm", DISPATCH, "--section", "nope"))
    # Names are quoted one way, as every ElfError quotes its section (issue 14).
    assert "section 'nope'" in line and "None" not in line and '"nope"' not in line


def test_block_port_without_mbuff_hints_at_it() -> None:
    # block_port.c reads rbpf's struct mbuff: without --mbuff its "pointers" are small numbers.
    line = error_line(cli("run", EXAMPLES / "bpf" / "block_port.o", "--hex", "00"))
    assert "--mbuff" in line and "block_port.o" in line
    assert "1 bytes" not in line


# -- --map values that do not fit their BTF type ------------------------------------


def _flow(**stats: object) -> str:
    import json

    return "flows=" + json.dumps([[{"saddr": 1, "daddr": 2, "sport": 3, "dport": 4}, stats]])


@pytest.mark.parametrize("spec,field", [
    ('counts=[[{"ethertype": 2048, "proto": 300, "pad": 0}, 1]]', "key.proto"),  # __u8
    ('counts=[[{"ethertype": 2048, "proto": 6, "pad": 0}, 1e30]]', "value"),
    ('counts=[[{"ethertype": 2048, "proto": 6, "pad": 0}, 1.5]]', "value"),
    ('counts=[[{"ethertype": 2048, "proto": 6, "pad": 0}, -2]]', "value"),
    ('counts=[[{"ethertype": 2048, "proto": 6, "pad": 0}, true]]', "value"),
    ('counts=[[{"ethertype": 2048, "proto": 6, "bogus": 0}, 1]]', "key.bogus"),
    ('counts=[[{"ethertype": 2048, "proto": 6, "pad": 0}, "ff"]]', "value"),
])
def test_map_values_that_do_not_fit(spec: str, field: str) -> None:
    line = error_line(cli("run", PROTO_COUNT, "--map", spec))
    assert "counts" in line and f"{field}:" in line


@pytest.mark.parametrize("stats,field", [
    ({"packets": 2**70}, "value.packets"),
    ({"packets": 1, "nope": 2}, "value.nope"),
])
def test_struct_values_that_do_not_fit(stats: dict[str, int], field: str) -> None:
    line = error_line(cli("run", BTF_MAPS, "--map", _flow(**stats)))
    assert "flows" in line and f"{field}:" in line


def test_short_hex_value_for_a_struct() -> None:
    # struct stats is 16 bytes: one hex byte is not it (it was stored as zeros).
    line = error_line(cli("run", BTF_MAPS, "--map", 'flows=[[{"saddr": 1}, "ff"]]'))
    assert "value" in line and "1 byte," in line and "16" in line


def test_map_json_of_the_wrong_form_shows_the_expected_form() -> None:
    line = error_line(cli("run", PROTO_COUNT, "--map", 'counts={"1": 2}'))
    assert "key" in line and "expected" in line and '"ethertype"' in line
    assert "not iterable" not in line


def test_prog_array_name_is_checked_at_once() -> None:
    line = error_line(cli("run", DISPATCH, "--function", "dispatch",
                          "--map", 'handlers={"1": "nope"}'))
    assert "nope" in line and "handle_tcp" in line and "handle_udp" in line


@pytest.mark.parametrize("value,field", [
    ({"packets": 2**64, "bytes": 0}, "value.packets"),
    ({"packets": -1}, "value.packets"),
    ({"packets": 1.5}, "value.packets"),
    ({"packets": True}, "value.packets"),
    ({"packets": 1, "hits": 2}, "value.hits"),
    ((1, 2, 3), "value"),
    ("ff", "value"),
])
def test_typed_map_values_raise_btf_value_error(value: object, field: str) -> None:
    flows = load(BTF_MAPS).maps["flows"]
    key = {"saddr": 1, "daddr": 2, "sport": 3, "dport": 4}
    with pytest.raises(BtfValueError) as info:
        flows.typed[key] = value
    assert info.value.field == field
    assert len(flows) == 0


def test_typed_map_keys_name_the_key() -> None:
    flows = load(BTF_MAPS).maps["flows"]
    with pytest.raises(BtfValueError) as info:
        flows.typed[{"saddr": 1, "sport": 70000}] = {"packets": 1}
    assert info.value.field == "key.sport" and info.value.value == 70000


def test_asm_of_one_slot_says_slot(tmp_path: Path) -> None:
    source = tmp_path / "one.s"
    source.write_text("exit\n")
    result = cli("asm", source, "-o", tmp_path / "one.bin")
    assert result.returncode == 0 and result.stderr == ""
    assert "1 slot (8 bytes)" in result.stdout
