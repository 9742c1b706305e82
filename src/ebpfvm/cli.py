"""The ``ebpfvm`` command: run, disasm, asm, verify, maps, jit-dump, bench.

A thin shell over the library. Exit status: 0 success, 1 a program or input
error (one line on stderr, no traceback unless ``--debug``), 2 a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .asm import assemble
from .capture import (
    CaptureError,
    CaptureInterrupted,
    CaptureStats,
    all_contexts,
    read_capture,
    run_capture,
    verdict_name,
)
from .cli_io import binary_stdin, binary_stdout, is_std, looks_like_text, read_std, routed_text
from .cli_jobs import add_jobs_option, jobs_of
from .cli_link import map_lines, no_programs, problem_result, verify_targets
from .cli_options import add_conventions
from .cli_run import Writers, clear, print_maps, print_stats, progress, run_document
from .disasm import disassemble_insn
from .engine import REFERENCE, engine_names, engines, find_engine, get_engine
from .errors import EbpfError, MemoryFault
from .kernel import KernelEnv
from .progtypes import PROG_TYPES, prog_type_for_section, runner_class

ASSEMBLY_SUFFIXES = (".s", ".asm", ".txt")
ELF_MAGIC = b"\x7fELF"
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
TRACE_LINES = 20
"""trace_printk lines shown over a capture (the rest are counted)."""
MAX_BUDGET = (1 << 63) - 1
"""--budget is an instruction count, 1 to 2**63 - 1."""
NULL_PAGE = 4096
"""A fault below this address dereferenced a small number, not a pointer."""
MAX_MBUFF_OFFSET = 4096 - 8
"""--mbuff offsets: a u64 pointer at each, within a 4 KiB metadata buffer."""

EPILOG = """examples:
  ebpfvm run examples/bpf/proto_count.o --pcap examples/data/sample.pcap
  ebpfvm run prog.s --hex 'aa bb 11 22' --trace
  ebpfvm disasm examples/bpf/proto_count.o --style llvm
  ebpfvm verify examples/bpf/rate_limit.o
exit status: 0 success, 1 program or input error, 2 usage error"""


class InputError(EbpfError):
    """A file or argument the command cannot use; `path` names the file when
    there is one."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(f"{path}: {message}" if path is not None else message)
        self.path = path


class Loaded:
    """A program from the command line: bytecode, and the object it came from."""

    def __init__(self, code: bytes, obj: Any = None, program: Any = None) -> None:
        self.code = code
        self.obj = obj
        self.program = program

    @property
    def section(self) -> str:
        return self.program.section if self.program is not None else ""


def _read(path: Path) -> bytes:
    """The bytes of `path` ('-': standard input); InputError "cannot read PATH:
    reason" when it cannot."""
    if is_std(path):
        return read_std(str(path))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _text(path: Path, data: bytes) -> str:
    """`data` (read from `path`) as UTF-8 text."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start]
        raise InputError(f"not UTF-8 text: byte {bad:#04x} at offset {exc.start}", path) from exc


CORE_BTF: dict[str, str | None] = {}
"""The --core-btf of this run (ebpfvm.core_btf)."""


def _object(data: bytes) -> Any:
    """The loaded ELF object in `data`."""
    from .elf import load

    return load(data, core_btf=CORE_BTF.get("target"))  # --core-btf (CO-RE)


def _pick(obj: Any, path: Path, section: str | None, function: str | None) -> Any:
    """The object's program chosen by --section/--function: with neither, the
    only one (several: InputError listing them and suggesting --function)."""
    names = ", ".join(f"{p.name} (section '{p.section}')" for p in obj.programs)
    if not obj.programs:
        raise no_programs(obj) or InputError("no programs in this object", path)
    if section is None and function is None and len(obj.programs) > 1:
        raise InputError(f"{len(obj.programs)} programs: {names}; choose one with "
                         "--function NAME", path)
    return obj.program(function, section=section)


def load_program(path: Path, section: str | None = None, function: str | None = None,
                 data: bytes | None = None) -> Loaded:
    """An ELF object's program (by section/function), assembly text, or raw
    bytecode; from `data` when given (already read from `path`)."""
    data = _read(path) if data is None else data
    if data[:4] == ELF_MAGIC:
        obj = _object(data)
        program = _pick(obj, path, section, function)
        return Loaded(program.code, obj, program)
    if section or function:
        raise InputError("--section/--function need an ELF object", path)
    if path.suffix == ".o":
        raise InputError("not an ELF object (raw bytecode goes in a file not named .o)", path)
    if path.suffix in ASSEMBLY_SUFFIXES or (is_std(path) and looks_like_text(data)):
        return Loaded(assemble(_text(path, data)))
    if not data:
        raise InputError("empty file: no instructions", path)
    return Loaded(data)


# -- argument parsing ----------------------------------------------------------------


def _program_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("program", type=Path, help="ELF object (.o), assembly (.s) or bytecode")
    parser.add_argument("--section", help="the object's program in this section")
    parser.add_argument("--function", help="the object's program with this function name")


def _input_args(parser: argparse.ArgumentParser, pcap: bool) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--mem", type=Path, metavar="FILE", help="input memory from a file")
    group.add_argument("--hex", help="input memory as hex bytes ('aa bb 01')")
    group.add_argument("--packet", type=Path, metavar="FILE", help="one raw Ethernet frame")
    if pcap:
        group.add_argument("--pcap", type=Path, metavar="FILE",
                           help="run once per packet of a pcap or pcapng capture")
    parser.add_argument("--context", choices=("auto", *all_contexts()), default="auto",
                        help="how the program gets its input: xdp (struct xdp_md), skb "
                             "(struct __sk_buff), mbuff (see --mbuff) or raw (r1 = input, "
                             "r2 = its length); auto: xdp for xdp* sections, skb for tc/"
                             "socket ones, else raw")
    parser.add_argument("--mbuff", metavar="DATA,DATA_END", type=_mbuff_offsets,
                        help="rbpf fixed mbuff: offsets where the input's start and end "
                             f"pointers go (e.g. 0x40,0x50; 0 to {MAX_MBUFF_OFFSET}); "
                             "implies --context mbuff")


def _mbuff_offsets(text: str) -> tuple[int, int]:
    """--mbuff DATA,DATA_END: two offsets from 0 to MAX_MBUFF_OFFSET."""
    try:
        data, end = (int(part, 0) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected two offsets, DATA,DATA_END") from None
    for value in (data, end):
        if not 0 <= value <= MAX_MBUFF_OFFSET:
            raise argparse.ArgumentTypeError(
                f"offset {value} is outside 0..{MAX_MBUFF_OFFSET}")
    return data, end


def _budget(text: str) -> int:
    """--budget N: an instruction count from 1 to MAX_BUDGET."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 < value <= MAX_BUDGET:
        raise argparse.ArgumentTypeError(f"{value} is outside 1..2**63-1")
    return value


def _entries(text: str) -> int:
    """--entries N: a count from 0."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _parser() -> argparse.ArgumentParser:
    """The parser, built once per set of registered contexts and engines
    (main() may be called many times in one process: tests, fuzzing)."""
    return _parser_for(all_contexts(), tuple(engine_names()))


@functools.cache
def _parser_for(_contexts: tuple[str, ...], _engines: tuple[str, ...]) -> argparse.ArgumentParser:
    # --debug before or after the command; SUPPRESS keeps the command's parser
    # from resetting a --debug given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks of errors")
    common.add_argument("--core-btf", metavar="BTF", default=argparse.SUPPRESS, help="target "
                        "BTF of CO-RE relocations: 'host' or a BTF file (default: ebpfvm's)")
    parser = argparse.ArgumentParser(
        prog="ebpfvm", description="A user-space eBPF virtual machine: run, inspect and "
        "benchmark eBPF programs.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--version", action="version", version=f"ebpfvm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run a program on input or a capture",
                         description="Run a program once on input memory or a packet, or "
                         "once per packet of a capture. Prints r0 or the verdict, "
                         "trace_printk output, and for a capture a verdict histogram, "
                         "packets per second and the maps.")
    _program_args(run)
    _input_args(run, pcap=True)
    _run_options(run)

    dis = sub.add_parser("disasm", parents=[common], help="disassemble a program",
                         description="Disassemble bytecode or an object's code sections.")
    _program_args(dis)
    dis.add_argument("--style", choices=("rbpf", "ubpf", "llvm"), default="rbpf",
                     help="rbpf/ubpf: our assembler's dialects; llvm: llvm-objdump's syntax, "
                          "with C source lines from BTF line info")
    dis.add_argument("--no-source", action="store_true", help="leave out source lines")

    asm = sub.add_parser("asm", parents=[common], help="assemble text to bytecode",
                         description="Assemble the rbpf/uBPF dialect to raw bytecode.")
    asm.add_argument("source", type=Path)
    asm.add_argument("-o", "--output", type=Path, metavar="OUT",
                     help="the bytecode file ('-', or no -o when stdout is not a terminal: stdout)")

    ver = sub.add_parser("verify", parents=[common], help="check a program with the verifier",
                         description="Verify every program of an object (or one); prints "
                         "OK or the finding with its pc and reason. Exit 1 when rejected.")
    _program_args(ver)

    maps = sub.add_parser("maps", parents=[common], help="list an object's maps",
                          description="The maps of an object with their BTF key and value "
                          "types.")
    maps.add_argument("program", type=Path, metavar="OBJ")

    dump = sub.add_parser("jit-dump", parents=[common], help="each instruction beside its "
                          "x86-64 code", description="Compile with the JIT and print each "
                          "eBPF instruction beside its x86-64 bytes and disassembly.")
    _program_args(dump)
    dump.add_argument("--unchecked", action="store_true", help="dump the unchecked (unsafe) code")

    bench = sub.add_parser("bench", parents=[common], help="nanoseconds per run per engine",
                           description="Time repeated runs on one input, like the kernel's "
                           "BPF_PROG_TEST_RUN: the JIT engines repeat in one native call.")
    _program_args(bench)
    _input_args(bench, pcap=False)
    bench.add_argument("--engine", choices=engine_names(), action="append",
                       help="engine to time (repeatable; default: all available)")
    bench.add_argument("--repeat", type=int, default=100_000,
                       help="runs per JIT engine (the interpreter does 1/100 of them)")
    for command in (run, dis, asm, ver, maps, dump, bench):
        command.set_defaults(command_parser=command)
    add_conventions({"run": run, "disasm": dis, "verify": ver, "maps": maps, "bench": bench})
    return parser


def _run_options(run: argparse.ArgumentParser) -> None:
    """The options of ``ebpfvm run`` after the program and its input."""
    run.add_argument("--engine", choices=engine_names(),
                     help="interp (default for single runs), jit (default for captures) or "
                          "jit-unchecked (no memory checks: UNSAFE)")
    run.add_argument("--budget", type=_budget, metavar="N",
                     help="instruction budget per run, tail calls and helper work "
                          "included (1 to 2**63-1)")
    add_jobs_option(run)  # --jobs (cli_jobs)
    run.add_argument("--trace", action="store_true",
                     help="print each instruction with its registers (interpreter)")
    run.add_argument("--map", action="append", default=[], metavar="NAME=JSON",
                     help="preload a map: JSON text, or @FILE (repeatable)")
    run.add_argument("--out", type=Path, metavar="FILE",
                     help="with --pcap: write the passed packets (as the program left them)")
    run.add_argument("--entries", type=_entries, default=20, metavar="N",
                     help="map entries to print per map (default 20)")
    run.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    run.add_argument("--against-kernel", action="store_true", help="also run each input in "
                     "the Linux kernel (BPF_PROG_TEST_RUN) and report the divergences")


# -- shared pieces -------------------------------------------------------------------


def _input_bytes(args: argparse.Namespace) -> bytes:
    if args.mem is not None:
        return _read(args.mem)
    if args.packet is not None:
        return _read(args.packet)
    if args.hex is not None:
        try:
            return bytes.fromhex(args.hex)
        except ValueError:
            raise InputError(f"--hex {args.hex!r}: {_hex_problem(args.hex)}") from None
    return b""


def _hex_problem(text: str) -> str:
    """Why bytes.fromhex refused `text`, in words."""
    digits = "".join(text.split())
    bad = next((c for c in digits if c not in "0123456789abcdefABCDEF"), None)
    if bad is not None:
        return f"{bad!r} is not a hex digit"
    if len(digits) % 2:
        return f"odd number of hex digits ({len(digits)})"
    return "hex digits go in pairs ('aa bb 01' or 'aabb01')"


def _mbuff(args: argparse.Namespace) -> tuple[int, int] | None:
    mbuff: tuple[int, int] | None = args.mbuff  # checked by _mbuff_offsets
    return mbuff


def _context(args: argparse.Namespace, loaded: Loaded) -> str:
    if args.mbuff is not None:
        return "mbuff"
    if args.context != "auto":
        return str(args.context)
    found = prog_type_for_section(loaded.section)
    return found.context if found is not None else "raw"


def _verdicts(context: str, loaded: Loaded) -> str:
    """How r0 is named: as the runner of `context` names it, else as the
    section's program type does (ebpfvm.progtypes), else "none"."""
    found = prog_type_for_section(loaded.section)
    if found is None or found.context != context:
        found = next((t for t in PROG_TYPES.values() if t.context == context), found)
    return found.verdicts.key if found is not None else "none"


def _make_vm(loaded: Loaded, args: argparse.Namespace, env: KernelEnv) -> Any:
    from .vm import EbpfVmFixedMbuff, EbpfVmRaw

    mbuff = _mbuff(args)
    vm: Any
    if loaded.obj is not None:
        vm = loaded.obj.vm(loaded.program.name, section=loaded.program.section,
                           fixed_mbuff=mbuff, env=env)
    elif mbuff is not None:
        vm = EbpfVmFixedMbuff(loaded.code, *mbuff)
    else:
        vm = EbpfVmRaw(loaded.code)
    budget = getattr(args, "budget", None)
    if budget is not None:
        vm.budget = budget
    return vm


def _preload_maps(loaded: Loaded, specs: list[str]) -> None:
    from .mapview import preload

    for spec in specs:
        name, sep, text = spec.partition("=")
        if not sep:
            raise EbpfError(f"--map {spec!r}: expected NAME=JSON or NAME=@FILE")
        if loaded.obj is None or name not in loaded.obj.maps:
            known = ", ".join(loaded.obj.maps) if loaded.obj is not None else "none"
            raise EbpfError(f"--map: no map {name!r} (maps: {known or 'none'})")
        if text.startswith("@"):
            source = Path(text[1:])
            text = _text(source, _read(source))
        data = _map_json(name, text)
        programs = [program.name for program in loaded.obj.programs]
        try:
            preload(loaded.obj.maps[name], data, programs)
        except (OverflowError, TypeError, RecursionError) as exc:
            raise EbpfError(f"--map {name}: cannot store {type(exc).__name__}: {exc}") from exc


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a number JSON allows")


def _map_json(name: str, text: str) -> Any:
    """--map JSON: finite numbers only; nesting too deep for the parser is
    an error, not a RecursionError traceback."""
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise EbpfError(f"--map {name}: bad JSON: {exc}") from exc


def _print_maps(loaded: Loaded, args: argparse.Namespace) -> None:
    from .mapview import describe, entries

    print_maps(loaded.obj, args, entries, describe)


def _tracer(vm: Any) -> Callable[[int, tuple[int, ...]], None]:
    by_pc = {insn.pc: insn for insn in vm.image.insns}

    def trace(pc: int, regs: tuple[int, ...]) -> None:
        shown = " ".join(f"r{i}={v:#x}" for i, v in enumerate(regs) if v)
        print(f"{pc:5d}: {disassemble_insn(by_pc[pc], 'rbpf'):<32} {shown}")

    return trace


# -- run -----------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    parser = args.command_parser
    capture = args.pcap is not None
    engine = args.engine or _default_engine(capture)
    if args.trace and args.json:
        parser.error("--trace prints text, not JSON (drop --json or --trace)")
    if args.trace and capture:
        parser.error("--trace runs one input, not a capture (drop --pcap or --trace)")
    if args.trace and not find_engine(engine).tracing:
        tracing = " or ".join(e.name for e in engines() if e.tracing)
        parser.error(f"--trace needs --engine {tracing}")
    for option in ("out", "tx_out"):
        if getattr(args, option) is not None and not capture:
            parser.error(f"--{option.replace('_', '-')} needs --pcap")
    loaded = load_program(args.program, args.section, args.function)
    if args.against_kernel:
        from .cli_kdiff import run_against_kernel

        _preload_maps(loaded, args.map)
        return run_against_kernel(args, loaded, None if capture else _input_bytes(args), engine)
    printk = _Printk(TRACE_LINES if capture else None, args.json)
    env = KernelEnv(printk=printk)
    vm = _make_vm(loaded, args, env)
    _preload_maps(loaded, args.map)
    context = _context(args, loaded)
    verdicts = _verdicts(context, loaded)
    if args.tx_out is not None and context != "xdp":
        parser.error(f"--tx-out needs an XDP program (XDP_TX); this one runs as {context}")

    def report(stats: CaptureStats | None, writers: Any, interrupted: bool, r0: int | None = None,
               ) -> None:
        if args.json:
            run_document(args, loaded, engine, context, verdicts, printk.kept, printk.dropped,
                         r0, stats, writers, interrupted)

    if capture:
        stats, writers = _run_capture(args, vm, context, verdicts, engine,
                                      _runner_options(context, loaded), report)
        report(stats, writers, False)
    else:
        try:
            r0 = _run_once(vm, context, engine, _input_bytes(args),
                           _runner_options(context, loaded), _tracer(vm) if args.trace else None)
        except MemoryFault as fault:
            if args.mbuff is None and fault.address < NULL_PAGE:
                raise InputError(f"{fault} (a pointer the program read from its context "
                                 f"is not one: if it expects rbpf's fixed mbuff, give "
                                 f"--mbuff DATA,DATA_END)", args.program) from fault
            raise
        name = verdict_name(r0, verdicts)
        report(None, None, False, r0)
        if name != str(r0) and not args.json:
            print(f"verdict: {name}")
        if not args.json:
            print(f"r0 = {r0:#x} ({r0})")
    if printk.dropped and not args.json:
        print(f"... {printk.dropped} more trace_printk lines")
    _print_maps(loaded, args)
    return EXIT_OK


class _Printk:
    """Prints trace_printk lines as they come, at most `limit` of them."""

    def __init__(self, limit: int | None, keep: bool = False) -> None:
        self.limit = limit
        self.shown = 0
        self.dropped = 0
        self.kept: list[str] = []
        """With `keep` (--json), the lines, kept for the document instead of printed."""
        self.keep = keep

    def __call__(self, line: str) -> None:
        if self.limit is not None and self.shown >= self.limit:
            self.dropped += 1
            return
        self.shown += 1
        if self.keep:
            self.kept.append(line.rstrip())
        else:
            print(f"trace_printk: {line.rstrip()}")


def _default_engine(capture: bool) -> str:
    """The reference engine for single runs; for captures the first checked
    engine that batches and runs here (the JIT), else the reference one."""
    if capture:
        for info in engines():
            if info.checked and info.batches and info.unavailable is None:
                return info.name
    return REFERENCE


def _runner_options(context: str, loaded: Loaded) -> dict[str, str]:
    """An skb runner's program type: the section's, when it hands an __sk_buff."""
    found = prog_type_for_section(loaded.section)
    if context == "skb" and found is not None and found.context == context:
        return {"prog_type": found.name}
    return {}


def _run_once(vm: Any, context: str, engine: str, data: bytes, options: dict[str, str],
              trace: Callable[[int, tuple[int, ...]], None] | None) -> int:
    if any(found.context == context for found in PROG_TYPES.values()):
        runner = runner_class(context)(vm, engine=engine, **options)
        try:
            r0: int = runner.run(data, trace=trace).r0
        finally:
            runner.close()
        return r0
    mem = bytearray(data)
    if get_engine(engine).reference:
        result: int = vm.execute_program(mem, trace=trace)
        return result
    vm.jit_compile(engine=engine)
    result = vm.execute_program_jit(mem)
    return result


def _run_capture(args: argparse.Namespace, vm: Any, context: str, verdicts: str,
                 engine: str, options: dict[str, str],
                 report: Callable[[CaptureStats, Writers, bool], None] | None = None,
                 ) -> tuple[CaptureStats, Writers]:
    if is_std(args.pcap):
        handle: Any = contextlib.nullcontext(binary_stdin("--pcap"))
    else:
        try:
            handle = open(args.pcap, "rb")  # noqa: SIM115 (closed by the with below)
        except OSError as exc:
            raise InputError(f"cannot read {args.pcap}: {exc.strerror or exc}") from exc
    with handle as stream:
        writers = Writers(args)
        bar, advance = progress(args.pcap, stream, args.no_progress)
        try:
            stats = run_capture(vm, read_capture(args.pcap, stream), context=context,
                                verdicts=verdicts, engine=engine, writer=writers.passed,
                                progress=advance, prog_type=options.get("prog_type"),
                                tx_writer=writers.tx, jobs=jobs_of(args))
        except CaptureInterrupted as stop:  # the partial statistics, then exit 130 (main)
            clear(bar)  # before they print
            writers.close()
            print_stats(stop.stats, engine, args, writers)
            if report is not None:
                report(stop.stats, writers, True)
            raise
        except EbpfError as error:
            index = getattr(error, "packet_index", None)
            if index is not None and not isinstance(error, CaptureError):
                raise EbpfError(f"packet {index}: {error}") from error
            raise
        finally:
            bar.close()
            writers.close()
    print_stats(stats, engine, args, writers)
    return stats, writers


# -- the other commands --------------------------------------------------------------


def _disasm(args: argparse.Namespace) -> int:
    from .cli_disasm import disasm

    return disasm(args)


def _asm(args: argparse.Namespace) -> int:
    code = assemble(_text(args.source, _read(args.source)))
    if args.output is None and sys.stdout.isatty():
        args.command_parser.error("give -o OUT (bytecode is not written to a terminal)")
    if args.output is None or is_std(args.output):
        binary_stdout("-o").write(code)
        return EXIT_OK
    try:
        args.output.write_bytes(code)
    except OSError as exc:
        raise InputError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    slots = len(code) // 8
    print(f"wrote {slots} slot{'' if slots == 1 else 's'} ({len(code)} bytes) to {args.output}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from .cli_json import verify_report
    from .errors import VerifierError
    from .verifier import verify

    data = _read(args.program)
    if data[:4] == ELF_MAGIC:
        obj = _object(data)
        if not obj.programs and not obj.problems:
            raise InputError("no programs in this object", args.program)
        targets = verify_targets(obj, args.section, args.function)
    else:
        targets = [(str(args.program), load_program(args.program).code)]
    rejected = 0
    found: list[dict[str, Any]] = []
    for name, code in targets:
        if not isinstance(code, bytes):  # a program that cannot be linked (ebpfvm.linkcheck)
            rejected += 1
            found.append(problem_result(name, code))
            continue
        result = {"name": name, "slots": len(code) // 8, "ok": True, "pc": None,
                  "reason": None, "rule": None}
        try:
            verify(code)
        except VerifierError as error:
            rejected += 1
            result.update(ok=False, pc=error.pc, reason=error.reason, rule=error.rule)
        found.append(result)
    return verify_report(args, found, rejected)


def _maps(args: argparse.Namespace) -> int:
    from .cli_json import maps_report

    data = _read(args.program)
    if data[:4] != ELF_MAGIC:
        raise InputError("not an ELF object: maps need one", args.program)
    obj = _object(data)
    if maps_report(args, obj):
        return EXIT_OK
    for line in map_lines(obj):
        print(line)
    return EXIT_OK


def _jit_dump(args: argparse.Namespace) -> int:
    from .jit.dump import jit_dump
    from .vm import EbpfVmRaw

    vm = EbpfVmRaw(load_program(args.program, args.section, args.function).code)
    vm.jit_compile(unchecked=args.unchecked)
    sys.stdout.write(jit_dump(vm.jit_code()))
    return EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    from .bench import bench_engines
    from .cli_json import emit

    loaded = load_program(args.program, args.section, args.function)
    chosen = args.engine or [info.name for info in engines() if info.unavailable is None]
    if args.repeat < 1:
        raise EbpfError("--repeat must be at least 1")
    context = _context(args, loaded)
    verdicts = _verdicts(context, loaded)
    data = _input_bytes(args)
    results: list[dict[str, Any]] = []
    if not args.json:
        print(f"{'engine':<14} {'ns/run':>12} {'runs':>9}  r0")
    for engine in chosen:
        vm = _make_vm(loaded, args, KernelEnv(printk=lambda _line: None))
        repeat = args.repeat if find_engine(engine).batches else max(1, args.repeat // 100)
        r0, ns = bench_engines(vm, context, engine, data, repeat)
        name = verdict_name(r0, verdicts)
        shown = f"{r0} ({name})" if name != str(r0) else str(r0)
        results.append({"engine": engine, "ns_per_run": ns, "runs": repeat, "r0": r0,
                        "verdict": None if name == str(r0) else name})
        if not args.json:
            print(f"{engine:<14} {ns:>12.1f} {repeat:>9}  {shown}")
    if args.json:
        emit({"results": results})
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _run, "disasm": _disasm, "asm": _asm, "verify": _verify, "maps": _maps,
    "jit-dump": _jit_dump, "bench": _bench,
}


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null, so the interpreter's last
    flush does not fail again (the Python docs' recipe for SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (a test's capture)
        pass
    finally:
        os.close(devnull)


def _broken_pipe(exc: BaseException) -> bool:
    """Whether `exc` is, or was caused by, a broken pipe (a trace_printk line
    written to a closed pipe from inside a helper)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, BrokenPipeError):
            return True
        seen.add(id(cause))
        cause = getattr(cause, "cause", None) or cause.__cause__ or cause.__context__
    return False


def _message(exc: BaseException, args: argparse.Namespace) -> str:
    """The one line for `exc`: the file named first (when the error does not
    name it), no Python reprs of OSError."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        message = f"{exc.filename}: {exc.strerror}"
    else:
        message = " ".join(str(exc).split()) or type(exc).__name__
    path = getattr(args, "program", None) or getattr(args, "source", None)
    if path is not None and not isinstance(exc, InputError) and str(path) not in message:
        message = f"{path}: {message}"
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    try:
        return _main(argv)
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_OK


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        CORE_BTF["target"] = getattr(args, "core_btf", None)
        if args.command is None:
            parser.error("a COMMAND is required (see ebpfvm --help)")
    except SystemExit as stop:  # --help, --version (0) and usage errors (2)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    try:
        with routed_text(args):
            status = COMMANDS[args.command](args)
        sys.stdout.flush()
        return status
    except SystemExit as stop:  # a subcommand's parser.error()
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        print("ebpfvm: interrupted", file=sys.stderr)
        return 130
    except (EbpfError, OSError, ValueError, UnicodeDecodeError) as exc:
        if _broken_pipe(exc):
            raise BrokenPipeError from exc
        if args.debug:
            raise
        print(f"ebpfvm: error: {_message(exc, args)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
