"""The ``ebpfvm`` command. For now: version, and running an assembly or binary program."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .asm import assemble
from .disasm import disassemble
from .errors import EbpfError
from .vm import EbpfVmRaw


def _load(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix in (".s", ".asm", ".txt"):
        return assemble(data.decode("utf-8"))
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = argparse.ArgumentParser(prog="ebpfvm", description="A user-space eBPF VM.")
    parser.add_argument("--version", action="version", version=f"ebpfvm {__version__}")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run a program (.s assembly or raw bytecode) on memory")
    run.add_argument("program", type=Path)
    run.add_argument("--mem", type=Path, help="file whose bytes are the input memory")
    run.add_argument("--hex", help="input memory as hex bytes")
    run.add_argument("--budget", type=int, default=None, help="instruction budget")
    run.add_argument("--trace", action="store_true", help="print each instruction")
    dis = sub.add_parser("disasm", help="disassemble raw bytecode")
    dis.add_argument("program", type=Path)
    dump = sub.add_parser("jit-dump", help="each instruction beside its x86-64 code")
    dump.add_argument("program", type=Path)
    dump.add_argument("--unchecked", action="store_true", help="dump the unchecked (unsafe) code")
    args = parser.parse_args(argv)
    if args.command is None:
        print(f"ebpfvm {__version__}")
        return 0
    try:
        if args.command == "disasm":
            sys.stdout.write(disassemble(args.program.read_bytes()))
            return 0
        if args.command == "jit-dump":
            from .jit.dump import jit_dump

            vm = EbpfVmRaw(_load(args.program))
            vm.jit_compile(unchecked=args.unchecked)
            sys.stdout.write(jit_dump(vm.jit_code()))
            return 0
        return _run(args)
    except (EbpfError, OSError, ValueError) as exc:
        print(f"ebpfvm: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    code = _load(args.program)
    mem = bytearray()
    if args.mem is not None:
        mem = bytearray(args.mem.read_bytes())
    elif args.hex is not None:
        mem = bytearray(bytes.fromhex(args.hex))
    vm = EbpfVmRaw(code)
    if args.budget is not None:
        vm.budget = args.budget
    trace = None
    if args.trace:
        from .disasm import disassemble_insn

        by_pc = {insn.pc: insn for insn in vm.decoded()}

        def trace(pc: int, regs: tuple[int, ...]) -> None:
            shown = " ".join(f"r{i}={v:#x}" for i, v in enumerate(regs) if v)
            print(f"{pc:5d}: {disassemble_insn(by_pc[pc]):<32} {shown}")

    result = vm.execute_program(mem, trace=trace)
    print(f"r0 = {result:#x} ({result})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
