"""The ebpfvm command: version, run, disasm, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ebpfvm import __version__, assemble
from ebpfvm.cli import main
from ebpfvm.jit.execmem import jit_supported


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ebpfvm {__version__}"
    # Plain `ebpfvm` is a usage error (issue 14), like git or ip without a command.
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("usage: ebpfvm")


def test_console_script_is_installed() -> None:
    out = subprocess.run([sys.executable, "-m", "ebpfvm.cli", "--version"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"ebpfvm {__version__}"


def test_run_assembly_on_hex_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "prog.s"
    src.write_text("ldxh r0, [r1+2]\nexit\n")
    assert main(["run", str(src), "--hex", "aabb1122ccdd"]) == 0
    assert "r0 = 0x2211" in capsys.readouterr().out


def test_run_binary_with_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "prog.bin"
    binary.write_bytes(assemble("mov r0, 7\nadd r0, 1\nexit"))
    assert main(["run", str(binary), "--trace"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0].strip() for line in out[:3]] == ["0", "1", "2"]
    assert out[-1] == "r0 = 0x8 (8)"


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "bad.s"
    src.write_text("mov r0, 1\nfrobnicate r1\nexit\n")
    assert main(["run", str(src)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 2" in err
    assert main(["run", str(tmp_path / "missing.s")]) == 1


def test_disasm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "prog.bin"
    binary.write_bytes(assemble("mov r0, 7\nexit"))
    # The rbpf dialect by default; raw listings carry pc numbers and bytes
    # (issue 14, point 4), as llvm-objdump lays them out.
    assert main(["disasm", str(binary)]) == 0
    assert capsys.readouterr().out == ("       0:\tb7 00 00 00 07 00 00 00\tmov64 r0, 7\n"
                                       "       1:\t95 00 00 00 00 00 00 00\texit\n")
    assert main(["disasm", "--style", "ubpf", str(binary)]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("\tmov %r0, 7")


@pytest.mark.skipif(jit_supported() is not None, reason=str(jit_supported()))
def test_jit_dump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "prog.s"
    src.write_text("mov r0, 7\nadd r0, r1\nexit\n")
    assert main(["jit-dump", str(src)]) == 0
    out = capsys.readouterr().out
    sections = [line for line in out.splitlines() if line[:5].strip().isdigit()]
    assert [line.split(":")[0].strip() for line in sections] == ["0", "1", "2"]
    # capstone (a test dependency) decodes our bytes: mov r0 (rax), 7 and add rax, rdi.
    assert "mov" in out and "0x7" in out
    assert "add" in out and "rax, rdi" in out
    assert main(["jit-dump", "--unchecked", str(src)]) == 0
    assert "UNCHECKED" in capsys.readouterr().out
