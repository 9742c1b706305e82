"""Every engine on the shared/bench programs, side by side, in one run.

Run: python benchmarks/engines.py [--bench-dir DIR] [--quick] [--programs NAME ...] [--markdown]

For each of the eight shared/bench programs (xdp32 layout, see xdp32.py) this
measures nanoseconds per run of

* the interpreter (``execute_program``, median of single runs in a time budget),
* the JIT, checked and unchecked (``test_run``: many runs in one native call),
* the kernel JIT (``tools/kernel_run.py``: BPF_PROG_TEST_RUN, median over
  several loads; needs root and bpf()),
* native code (``tools/build_native.sh``, built in a temporary copy of the
  bench folder; the faster of gcc and clang),

checks every r0 against bench.json's expected_r0 and prints each engine's
ratio to the kernel JIT with the geometric mean per engine. Then it measures
JIT compile time, the cost of one ``execute_program_jit`` call from Python
(with the ctypes call floor for scale) and the per-input overhead of
``execute_batch``, and prints them beside the targets of issue 3.

Every engine measurement runs in a forked child process, so an engine that
raises, crashes or hangs shows its error in its cell and the run goes on.
"""

from __future__ import annotations

import argparse
import array
import ctypes
import gc
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from xdp32 import xdp32_region, xdp32_regions

from ebpfvm.encoding import encode_one
from ebpfvm.isa import Cls, Src
from ebpfvm.jit.runtime import RunInput
from ebpfvm.vm import EbpfVmRaw, buffer_address

T = TypeVar("T")
M32 = 0xFFFF_FFFF
DEFAULT_BENCH_DIR = Path(__file__).resolve().parents[2] / "shared" / "bench"

# Targets of issue 3.
TARGET_CHECKED = 1.2  # JIT checked / kernel JIT, geometric mean
TARGET_UNCHECKED = 1.0  # JIT unchecked / kernel JIT, geometric mean
TARGET_COMPILE_MS = 10.0  # jit_compile() per 1,000 eBPF instructions
TARGET_CALL_NS = 1000.0  # one execute_program_jit call from Python
TARGET_BATCH_NS = 20.0  # execute_batch overhead per input


def log(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


# -- settings and bench programs ---------------------------------------------------


@dataclass(frozen=True)
class Settings:
    quick: bool
    jit_seconds: float  # per test_run trial
    jit_trials: int
    interp_seconds: float  # time budget per program
    kernel_scale: float  # times bench.json's iterations
    kernel_loads: int
    kernel_trials: int
    native_seconds: float  # per trial
    native_trials: int
    compile_reps: int
    compile_reps_big: int
    call_blocks: int
    call_block_size: int
    batch_inputs: int
    batch_trials: int

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if quick:
            return cls(True, 0.05, 3, 0.1, 0.1, 3, 1, 0.05, 3, 5, 2, 50, 500, 20_000, 3)
        return cls(False, 0.25, 5, 0.4, 1.0, 5, 2, 0.3, 3, 20, 5, 200, 1000, 100_000, 5)


@dataclass(frozen=True)
class Bench:
    name: str
    obj: Path
    prog_path: Path
    mem_path: Path
    prog: bytes
    mem: bytes
    expected: int
    insns_per_run: int
    iterations: int
    iterations_interp: int

    @property
    def slots(self) -> int:
        return len(self.prog) // 8


def load_benches(bench_dir: Path, names: Sequence[str] | None) -> list[Bench]:
    spec = json.loads((bench_dir / "bench.json").read_text())
    benches: list[Bench] = []
    for entry in spec["benchmarks"]:
        if names and entry["name"] not in names:
            continue
        benches.append(Bench(
            name=entry["name"],
            obj=bench_dir / entry["object"],
            prog_path=bench_dir / entry["prog"],
            mem_path=bench_dir / entry["mem"],
            prog=(bench_dir / entry["prog"]).read_bytes(),
            mem=(bench_dir / entry["mem"]).read_bytes(),
            expected=int(entry["expected_r0"]) & M32,
            insns_per_run=int(entry["insns_per_run"]),
            iterations=int(entry["iterations"]),
            iterations_interp=int(entry["iterations_interp"]),
        ))
    unknown = set(names or ()) - {b.name for b in benches}
    if unknown:
        raise SystemExit(f"unknown program(s): {', '.join(sorted(unknown))}")
    return benches


# -- results -----------------------------------------------------------------------------


@dataclass
class Failure:
    """An engine that could not produce a figure."""

    message: str


@dataclass
class Timing:
    """ns per run and the r0 the engine returned (None: not checked)."""

    ns: float
    r0: int | None
    expected: int | None = None
    note: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        return not self.problems and (self.expected is None or self.r0 == self.expected)


Result = Timing | Failure


# -- isolation: one forked child per measurement -----------------------------------


def _child(fn: Callable[[], Any], conn: multiprocessing.connection.Connection) -> None:
    try:
        reply: tuple[str, Any] = ("ok", fn())
    except BaseException as error:  # report everything, including SystemExit
        reply = ("err", f"{type(error).__name__}: {error}")
    try:
        conn.send(reply)
    except Exception as error:  # an unpicklable result
        conn.send(("err", f"result not picklable: {error}"))
    conn.close()


def isolated(fn: Callable[[], T], timeout: float) -> T | Failure:
    """fn() in a forked child: its value, or a Failure for an exception, a
    crash (signal) or a timeout."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, send), daemon=True)
    sys.stdout.flush()
    sys.stderr.flush()
    proc.start()
    send.close()
    reply: tuple[str, Any] | None = None
    timed_out = False
    try:
        if recv.poll(timeout):
            try:
                reply = recv.recv()
            except EOFError:
                reply = None
        else:
            timed_out = True
    finally:
        recv.close()
        proc.join(2.0 if timed_out else 30.0)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if timed_out:
        return Failure(f"timed out after {timeout:.0f} s")
    if reply is None:
        code = proc.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return Failure(f"crashed ({name})")
        return Failure(f"child exited with status {code} and no result")
    status, payload = reply
    if status == "ok":
        value: T = payload
        return value
    return Failure(str(payload))


# -- engines: interpreter and JIT (run inside the child) ----------------------------


def run_interpreter(bench: Bench, settings: Settings) -> Timing:
    _region, view = xdp32_region(bench.mem)
    vm = EbpfVmRaw(bench.prog, budget=None)
    r0 = vm.execute_program(view) & M32  # also translates, outside the timing
    times: list[int] = []
    deadline = time.perf_counter() + settings.interp_seconds
    limit = max(3, bench.iterations_interp)
    while len(times) < limit and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter_ns()
        vm.execute_program(view)
        times.append(time.perf_counter_ns() - start)
    return Timing(statistics.median(times), r0, bench.expected, f"{len(times)} runs")


def _repeat_for(ns_per_run: float, seconds: float) -> int:
    return max(1, min(2_000_000_000, int(seconds * 1e9 / max(ns_per_run, 0.1))))


def timed_test_run(vm: EbpfVmRaw, view: memoryview, calibrate: int, seconds: float,
                   trials: int) -> tuple[float, int, list[int]]:
    """(median ns per run, r0, every r0 seen) of `trials` test_runs of ~`seconds` each."""
    r0, ns = vm.test_run(view, repeat=max(1, calibrate))
    if ns * calibrate < 20e6:  # a longer second calibration for short programs
        r0, ns = vm.test_run(view, repeat=_repeat_for(ns, 0.02))
    repeat = _repeat_for(ns, seconds)
    samples: list[float] = []
    seen = [r0 & M32]
    for _ in range(trials):
        r0, ns = vm.test_run(view, repeat=repeat)
        samples.append(ns)
        seen.append(r0 & M32)
    return statistics.median(samples), seen[-1], seen


def run_jit(bench: Bench, unchecked: bool, settings: Settings) -> Timing:
    _region, view = xdp32_region(bench.mem)
    vm = EbpfVmRaw(bench.prog, budget=None)
    vm.jit_compile(unchecked=unchecked)
    single = vm.execute_program_jit(view) & M32
    ns, r0, seen = timed_test_run(vm, view, bench.iterations // 200, settings.jit_seconds,
                                  settings.jit_trials)
    problems: list[str] = []
    if single != bench.expected:
        problems.append(f"execute_program_jit r0={single}")
    wrong = sorted({value for value in seen if value != bench.expected})
    if wrong:
        problems.append(f"test_run r0={wrong}")
    return Timing(ns, r0, bench.expected, "", problems)


# -- engines: kernel and native (subprocesses) --------------------------------------

_LINE = re.compile(r"ns_per_run=([0-9.]+) result=([0-9]+)")


def _run_tool(cmd: Sequence[str], timeout: float, cwd: Path | None = None) -> tuple[float, int]:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              cwd=cwd, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {timeout:.0f} s") from None
    match = _LINE.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        tail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
        raise RuntimeError(f"exit {proc.returncode}: {' | '.join(tail[:3])[:300]}")
    return float(match.group(1)), int(match.group(2))


def run_kernel(bench: Bench, bench_dir: Path, settings: Settings) -> Timing:
    tool = bench_dir / "tools" / "kernel_run.py"
    count = max(1, int(bench.iterations * settings.kernel_scale))
    cmd = [sys.executable, str(tool), str(bench.obj), str(bench.mem_path), str(count),
           "--loads", str(settings.kernel_loads), "--trials", str(settings.kernel_trials)]
    ns, r0 = _run_tool(cmd, timeout=600)
    return Timing(ns, r0 & M32, bench.expected,
                  f"{settings.kernel_loads} loads x {settings.kernel_trials} trials x {count}")


def build_native(bench_dir: Path, workdir: Path) -> tuple[Path | None, str]:
    """Copy the bench folder into `workdir` (build_native.sh writes next to
    itself) and build there: (out/native of the copy, message)."""
    if shutil.which("gcc") is None:
        return None, "gcc not found"
    copy = workdir / "bench"
    shutil.copytree(bench_dir, copy, ignore=shutil.ignore_patterns("native", "*.dis"))
    script = copy / "tools" / "build_native.sh"
    try:
        proc = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=600,
                              check=False)
    except subprocess.TimeoutExpired:
        return None, "build_native.sh timed out"
    if proc.returncode != 0:
        return None, f"build_native.sh failed: {proc.stderr.strip()[-300:]}"
    compilers = "gcc and clang" if shutil.which("clang") else "gcc only (no clang)"
    return copy / "out" / "native", f"built with {compilers} in a temporary copy"


def run_native(bench: Bench, native_dir: Path, settings: Settings) -> Timing:
    best: Timing | None = None
    errors: list[str] = []
    for compiler in ("gcc", "clang"):
        exe = native_dir / f"{bench.name}.{compiler}"
        if not exe.exists():
            continue
        try:
            ns0, _ = _run_tool([str(exe), str(bench.mem_path), str(bench.iterations)], 600)
            count = _repeat_for(ns0, settings.native_seconds)
            samples: list[float] = []
            r0 = 0
            for _ in range(settings.native_trials):
                ns, r0 = _run_tool([str(exe), str(bench.mem_path), str(count)], 600)
                samples.append(ns)
        except RuntimeError as error:
            errors.append(f"{compiler}: {error}")
            continue
        timing = Timing(statistics.median(samples), r0 & M32, bench.expected, compiler)
        if best is None or timing.ns < best.ns:
            best = timing
    if best is None:
        raise RuntimeError("; ".join(errors) or "no native binary")
    return best


# -- compile time ------------------------------------------------------------------

_ALU_OPS = {  # operation code (bits 4-7 of the opcode) by name
    "add": 0x0, "sub": 0x1, "mul": 0x2, "div": 0x3, "or": 0x4, "and": 0x5, "lsh": 0x6,
    "rsh": 0x7, "neg": 0x8, "mod": 0x9, "xor": 0xA, "mov": 0xB, "arsh": 0xC,
}
_EXIT = 0x95  # BPF_JMP | BPF_EXIT


def synthetic_program(slots: int, seed: int = 1) -> bytes:
    """`slots` instructions of random ALU ops over r0-r9 (both widths, immediate
    and register forms), folded into r0 before exit."""
    rng = random.Random(seed)
    code = [encode_one(Cls.ALU64 | Src.K | (_ALU_OPS["mov"] << 4), reg, 0, 0,
                       rng.randrange(-(1 << 31), 1 << 31)) for reg in range(10)]
    tail = [encode_one(Cls.ALU64 | Src.X | (_ALU_OPS["xor"] << 4), 0, reg) for reg in range(1, 10)]
    tail.append(encode_one(_EXIT))
    names = list(_ALU_OPS)
    while len(code) < slots - len(tail):
        name = rng.choice(names)
        wide = rng.random() < 0.7
        cls = Cls.ALU64 if wide else Cls.ALU
        dst = rng.randrange(10)
        op = _ALU_OPS[name] << 4
        if name == "neg":
            code.append(encode_one(cls | Src.K | op, dst))
        elif rng.random() < 0.5:
            code.append(encode_one(cls | Src.X | op, dst, rng.randrange(10)))
        elif name in ("lsh", "rsh", "arsh"):
            code.append(encode_one(cls | Src.K | op, dst, 0, 0, rng.randrange(64 if wide else 32)))
        elif name in ("div", "mod"):
            code.append(encode_one(cls | Src.K | op, dst, 0, 0, rng.randrange(1, 1 << 31)))
        else:
            code.append(encode_one(cls | Src.K | op, dst, 0, 0, rng.randrange(-(1 << 31), 1 << 31)))
    return b"".join(code + tail)


@dataclass
class CompileTime:
    slots: int
    ctor_ms: float  # EbpfVmRaw(prog): verify
    first_ms: float  # first jit_compile() on a fresh VM (decodes, analyses, translates)
    again_ms: float  # jit_compile() again on the same VM
    cold_ms: float  # the very first jit_compile() in this process (no encodings cached yet)
    after_gc_ms: float  # first jit_compile() on a fresh VM right after a full gc.collect()
    check: str  # interpreter vs JIT agreement (synthetic program)


def run_compile(prog: bytes, unchecked: bool, reps: int, crosscheck: bool) -> CompileTime:
    """Medians over `reps` fresh VMs, timed as timeit does: the garbage
    collector is off while timing. A full gc.collect() just before a compile
    empties CPython's free lists and hands emptied arenas back to the OS, so
    that compile also pays for refilling them; `after_gc_ms` reports it apart."""
    ctor: list[float] = []
    first: list[float] = []
    again: list[float] = []
    after_gc: list[float] = []
    check = ""
    gc.collect()
    for rep in range(2 * reps):
        measured = rep % 2 == 0  # odd reps: a full collection first, then the compile
        if not measured:
            gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            vm = EbpfVmRaw(prog, budget=None)
            t1 = time.perf_counter()
            vm.jit_compile(unchecked=unchecked)
            t2 = time.perf_counter()
            if measured:
                vm.jit_compile(unchecked=unchecked)
            t3 = time.perf_counter()
        finally:
            gc.enable()
        if measured:
            ctor.append(t1 - t0)
            first.append(t2 - t1)
            again.append(t3 - t2)
        else:
            after_gc.append(t2 - t1)
        if crosscheck and not check:
            jit_r0 = vm.execute_program_jit()
            interp_r0 = vm.execute_program()
            check = "r0 agrees" if jit_r0 == interp_r0 else (
                f"MISMATCH: JIT r0={jit_r0:#x}, interpreter r0={interp_r0:#x}")
        vm.close()
    return CompileTime(len(prog) // 8, statistics.median(ctor) * 1e3,
                       statistics.median(first) * 1e3, statistics.median(again) * 1e3,
                       first[0] * 1e3, statistics.median(after_gc) * 1e3, check)


# -- call cost and batches -----------------------------------------------------------


def _blocks(call: Callable[[], object], blocks: int, size: int) -> tuple[float, float]:
    for _ in range(size):  # warm up
        call()
    means: list[float] = []
    for _ in range(blocks):
        start = time.perf_counter_ns()
        for _ in range(size):
            call()
        means.append((time.perf_counter_ns() - start) / size)
    return statistics.median(means), min(means)


def run_call_cost(bench: Bench, unchecked: bool, settings: Settings) -> tuple[float, float]:
    """(median, best) ns of one execute_program_jit(view) call, blocks of calls."""
    _region, view = xdp32_region(bench.mem)
    vm = EbpfVmRaw(bench.prog, budget=None)
    vm.jit_compile(unchecked=unchecked)
    r0 = vm.execute_program_jit(view) & M32
    if r0 != bench.expected:
        raise RuntimeError(f"wrong r0 {r0} (expected {bench.expected})")
    run = vm.execute_program_jit
    return _blocks(lambda: run(view), settings.call_blocks, settings.call_block_size)


def run_ctypes_floor(settings: Settings) -> tuple[float, float]:
    libc = ctypes.CDLL(None)
    labs = libc.labs
    labs.argtypes = [ctypes.c_long]
    labs.restype = ctypes.c_long
    return _blocks(lambda: labs(-5), settings.call_blocks, settings.call_block_size)


@dataclass
class BatchCost:
    """Per-input figures; each trial times every variant back to back, and the
    overheads are medians of the per-trial differences (less drift under load)."""

    inputs: int
    distinct: int
    total_ns: float  # execute_batch, per input
    no_gc_ns: float  # the same with the cyclic garbage collector off
    prebuilt_ns: float  # jit_code().batch() with prebuilt RunInputs, per input
    per_run_ns: float  # test_run, per run
    overhead_ns: float  # median over trials of execute_batch - test_run
    prebuilt_overhead_ns: float  # median over trials of prebuilt batch - test_run
    spans_ns: float  # execute_spans over one buffer, per input
    spans_overhead_ns: float  # median over trials of execute_spans - test_run
    correct: bool


SPAN_PAIRS = 5
"""(execute_spans, test_run) pairs per batch trial."""


def _timed(call: Callable[[], object], count: int, gc_on: bool = True) -> float:
    gc.collect()
    if not gc_on:
        gc.disable()
    try:
        start = time.perf_counter_ns()
        call()
        return (time.perf_counter_ns() - start) / count
    finally:
        gc.enable()


def run_batch(bench: Bench, unchecked: bool, count: int, distinct: int,
              settings: Settings) -> BatchCost:
    whole, views = xdp32_regions(bench.mem, distinct)
    inputs = [views[index % distinct] for index in range(count)]
    vm = EbpfVmRaw(bench.prog, budget=None)
    vm.jit_compile(unchecked=unchecked)
    results = vm.execute_batch(inputs)
    base = buffer_address(whole)
    spans = array.array("Q", [value for view in inputs
                              for value in (buffer_address(view) - base, len(view))])
    span_results = vm.execute_spans(whole, spans)
    correct = (len(results) == count and all((r & M32) == bench.expected for r in results)
               and list(span_results) == list(results))
    jit = vm.jit_code()
    prepared = [RunInput(view, buffer_address(view), len(view), True) for view in inputs]
    _, ns = vm.test_run(views[0], repeat=max(1, bench.iterations // 200))
    repeat = _repeat_for(ns, settings.jit_seconds / 2)
    totals: list[float] = []
    no_gc: list[float] = []
    prebuilt: list[float] = []
    per_run: list[float] = []
    span_pairs: list[tuple[float, float]] = []
    for _ in range(settings.batch_trials):
        # execute_spans is cheap: several (spans, test_run) pairs per trial, each
        # pair back to back, so that its small overhead is not lost in drift.
        for _ in range(SPAN_PAIRS):
            span_pairs.append((_timed(lambda: vm.execute_spans(whole, spans), count),
                               vm.test_run(views[0], repeat=repeat)[1]))
        totals.append(_timed(lambda: vm.execute_batch(inputs), count))
        no_gc.append(_timed(lambda: vm.execute_batch(inputs), count, gc_on=False))
        prebuilt.append(_timed(lambda: jit.batch(prepared, None, None, None), count))
        per_run.append(vm.test_run(views[0], repeat=repeat)[1])
    median = statistics.median
    return BatchCost(
        count, distinct, median(totals), median(no_gc), median(prebuilt), median(per_run),
        median(t - r for t, r in zip(totals, per_run, strict=True)),
        median(b - r for b, r in zip(prebuilt, per_run, strict=True)),
        median(spanned for spanned, _ in span_pairs),
        median(spanned - run for spanned, run in span_pairs), correct)


# -- formatting --------------------------------------------------------------------------


def fmt_ns(ns: float) -> str:
    if abs(ns) >= 100:
        return f"{ns:,.0f}"
    if abs(ns) >= 10:
        return f"{ns:.1f}"
    return f"{ns:.2f}"


def fmt_ratio(ratio: float, digits: int = 2) -> str:
    if ratio >= 100:
        return f"{ratio:,.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    return f"{ratio:.{digits}f}x"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


class Report:
    def __init__(self, markdown: bool) -> None:
        self.markdown = markdown

    def heading(self, text: str) -> None:
        print()
        print(f"### {text}" if self.markdown else f"== {text} ==")
        print()

    def text(self, line: str) -> None:
        print(line)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]],
              left: int = 1) -> None:
        """`left`: how many leading columns are left-aligned (the rest: right)."""
        if self.markdown:
            print("| " + " | ".join(headers) + " |")
            print("|" + "|".join("---" if i < left else "---:" for i in range(len(headers))) + "|")
            for row in rows:
                print("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
            return
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                  for i, h in enumerate(headers)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

        print(line(headers))
        print("  ".join("-" * w for w in widths))
        for row in rows:
            print(line(row))


def machine_info() -> list[tuple[str, str]]:
    model = "unknown"
    cores = ""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
        model = found.group(1).strip() if found else platform.processor() or "unknown"
        per_socket = re.search(r"^cpu cores\s*:\s*(\d+)$", cpuinfo, re.MULTILINE)
        if per_socket:
            cores = f", {per_socket.group(1)} cores per socket"
    except OSError:
        pass
    gcc = "not found"
    if shutil.which("gcc"):
        out = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=False)
        gcc = out.stdout.splitlines()[0] if out.stdout else "unknown"
    return [
        ("CPU", model),
        ("logical CPUs", f"{os.cpu_count()}{cores}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("kernel", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        ("gcc", gcc),
        ("clang", "found" if shutil.which("clang") else "not installed"),
        ("load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg())),
    ]


# -- the run -------------------------------------------------------------------------------

ENGINES = ("interp", "jit_checked", "jit_unchecked", "kernel", "native")
ENGINE_TITLES = {
    "interp": "interpreter", "jit_checked": "JIT checked", "jit_unchecked": "JIT unchecked",
    "kernel": "kernel JIT", "native": "native (best)",
}


def geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


@dataclass
class MainResults:
    cells: dict[str, dict[str, Result]]


def measure_programs(benches: Sequence[Bench], bench_dir: Path, native_dir: Path | None,
                     native_msg: str, settings: Settings) -> MainResults:
    cells: dict[str, dict[str, Result]] = {}
    for index, bench in enumerate(benches, 1):
        row: dict[str, Result] = {}
        prefix = f"[{index}/{len(benches)}] {bench.name}"
        timeout = 120 + 10 * settings.jit_seconds * settings.jit_trials
        log(f"{prefix}: interpreter")
        row["interp"] = isolated(partial(run_interpreter, bench, settings),
                                 timeout + settings.interp_seconds * 4)
        log(f"{prefix}: JIT checked")
        row["jit_checked"] = isolated(partial(run_jit, bench, False, settings), timeout)
        log(f"{prefix}: JIT unchecked")
        row["jit_unchecked"] = isolated(partial(run_jit, bench, True, settings), timeout)
        log(f"{prefix}: kernel")
        try:
            row["kernel"] = run_kernel(bench, bench_dir, settings)
        except Exception as error:
            row["kernel"] = Failure(str(error))
        log(f"{prefix}: native")
        if native_dir is None:
            row["native"] = Failure(native_msg)
        else:
            try:
                row["native"] = run_native(bench, native_dir, settings)
            except Exception as error:
                row["native"] = Failure(str(error))
        cells[bench.name] = row
    return MainResults(cells)


def print_main(report: Report, benches: Sequence[Bench], results: MainResults) -> dict[str, float]:
    """The main table; returns the geometric mean ratio to the kernel per engine."""
    notes: list[str] = []
    ratio_engines = [e for e in ENGINES if e != "kernel"]
    headers = ["program", "insns/run", *(f"{ENGINE_TITLES[e]} ns" for e in ENGINES),
               *(f"{ENGINE_TITLES[e]} / kernel" for e in ratio_engines)]
    rows: list[list[str]] = []
    ratios: dict[str, list[float]] = {e: [] for e in ratio_engines}

    def note(text: str) -> str:
        notes.append(text)
        return f"[{len(notes)}]"

    for bench in benches:
        row = results.cells[bench.name]
        cells = [bench.name, f"{bench.insns_per_run:,}"]
        for engine in ENGINES:
            result = row[engine]
            if isinstance(result, Failure):
                short = result.message.splitlines()[0] if result.message else "failed"
                word = "skipped" if engine == "kernel" else "error"
                cells.append(f"{word} {note(f'{bench.name}, {ENGINE_TITLES[engine]}: {result.message}')}"
                             if len(short) > 40 else f"{word}: {short}")
                continue
            text = fmt_ns(result.ns)
            if engine == "native" and result.note:
                text += f" ({result.note})"
            if not result.correct:
                detail = "; ".join(result.problems) or f"r0={result.r0}"
                text += " WRONG " + note(
                    f"{bench.name}, {ENGINE_TITLES[engine]}: expected r0={result.expected}, {detail}")
            cells.append(text)
        kernel = row["kernel"]
        for engine in ratio_engines:
            result = row[engine]
            if isinstance(kernel, Timing) and kernel.correct and isinstance(result, Timing) \
                    and result.correct and kernel.ns > 0:
                ratio = result.ns / kernel.ns
                ratios[engine].append(ratio)
                cells.append(fmt_ratio(ratio))
            else:
                cells.append("n/a")
        rows.append(cells)
    means: dict[str, float] = {}
    geo = ["geomean", ""] + [""] * len(ENGINES)
    for engine in ratio_engines:
        values = ratios[engine]
        if values:
            means[engine] = geomean(values)
            suffix = "" if len(values) == len(benches) else f" (of {len(values)})"
            geo.append(fmt_ratio(means[engine], 3) + suffix)
        else:
            geo.append("n/a")
    rows.append(geo)
    report.table(headers, rows, left=1)
    if notes:
        report.text("")
        for number, text in enumerate(notes, 1):
            report.text(f"[{number}] {text}")
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench-dir", type=Path, default=DEFAULT_BENCH_DIR,
                        help="shared/bench folder (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="short measurements")
    parser.add_argument("--programs", nargs="+", metavar="NAME", help="only these programs")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args()
    bench_dir: Path = args.bench_dir.resolve()
    if not (bench_dir / "bench.json").is_file():
        raise SystemExit(f"{bench_dir}/bench.json not found (use --bench-dir)")
    settings = Settings.make(args.quick)
    benches = load_benches(bench_dir, args.programs)
    report = Report(args.markdown)
    started = time.perf_counter()

    report.heading("Machine")
    report.table(["item", "value"], [list(item) for item in machine_info()], left=2)

    with tempfile.TemporaryDirectory(prefix="ebpfvm-engines-") as tmp:
        log("building native baselines")
        native_dir, native_msg = build_native(bench_dir, Path(tmp))
        results = measure_programs(benches, bench_dir, native_dir, native_msg, settings)

    report.heading("ns per run (medians) and ratio to the kernel JIT")
    report.text(
        f"Interpreter: median of single execute_program runs within {settings.interp_seconds} s. "
        f"JIT: test_run (one native call), median of {settings.jit_trials} trials of "
        f"~{settings.jit_seconds} s. Kernel: tools/kernel_run.py, median over "
        f"{settings.kernel_loads} loads x {settings.kernel_trials} trials at "
        f"{settings.kernel_scale:g} x bench.json iterations (integer ns). Native: {native_msg}, "
        f"median of {settings.native_trials} runs of ~{settings.native_seconds} s, "
        "faster compiler shown. r0 & 0xffffffff checked against expected_r0 for every engine.")
    report.text("")
    means = print_main(report, benches, results)

    # compile time
    log("compile time")
    by_size = sorted(load_benches(bench_dir, None), key=lambda b: b.slots, reverse=True)[:2]
    compile_inputs: list[tuple[str, bytes, int, bool]] = [
        (b.name, b.prog, settings.compile_reps, False) for b in by_size]
    compile_inputs.append(("synthetic ALU (random)", synthetic_program(10_000),
                           settings.compile_reps_big, True))
    compile_rows: list[list[str]] = []
    worst_compile: dict[bool, float] = {}
    big_compile: dict[bool, float] = {}
    compile_notes: list[str] = []
    for name, prog, reps, cross in compile_inputs:
        for unchecked in (False, True):
            mode = "unchecked" if unchecked else "checked"
            got = isolated(partial(run_compile, prog, unchecked, reps, cross), 600)
            if isinstance(got, Failure):
                compile_rows.append([name, mode, f"{len(prog) // 8:,}", f"error: {got.message}",
                                     "", "", "", "", "", ""])
                continue
            per_k = got.first_ms / (got.slots / 1000)
            if cross:
                big_compile[unchecked] = per_k
            else:
                worst_compile[unchecked] = max(worst_compile.get(unchecked, 0.0), per_k)
            compile_rows.append([
                name, mode, f"{got.slots:,}", f"{got.ctor_ms:.2f}", f"{got.first_ms:.2f}",
                f"{got.again_ms:.2f}", f"{per_k:.2f}", f"{got.again_ms / (got.slots / 1000):.2f}",
                f"{got.after_gc_ms:.2f}", f"{got.cold_ms:.2f}"])
            if got.check:
                compile_notes.append(f"{name}, JIT {mode} vs interpreter: {got.check}")
    report.heading("JIT compile time (medians)")
    report.text("EbpfVmRaw(prog) verifies. jit_compile() is the first compile on a fresh VM "
                "(decode, analysis, translation, executable memory; median over fresh VMs in "
                "one process, timed as timeit does, with the garbage collector off; ms / 1k "
                "insns uses it); 'again' recompiles on the same VM. 'after gc.collect()' is "
                "the first compile right after a full collection, which empties CPython's "
                "free lists and returns arenas to the OS. 'fresh process' is the very first "
                "jit_compile() in a new process, which also encodes every x86 instruction "
                "form for the first time and builds the shared runtime code.")
    report.text("")
    report.table(["program", "mode", "insns", "EbpfVmRaw() ms", "jit_compile() ms",
                  "again ms", "ms / 1k insns", "again ms / 1k insns", "after gc.collect() ms",
                  "fresh process ms"],
                 compile_rows, left=2)
    if compile_notes:
        report.text("")
        report.text("; ".join(compile_notes) + ".")

    # call cost
    log("call cost")
    baseline = next((b for b in load_benches(bench_dir, ["baseline"])), None)
    call_rows: list[list[str]] = []
    call_ns: dict[bool, float] = {}
    if baseline is not None:
        for unchecked in (False, True):
            label = f"execute_program_jit(view), baseline, {'unchecked' if unchecked else 'checked'}"
            got_call = isolated(partial(run_call_cost, baseline, unchecked, settings), 300)
            if isinstance(got_call, Failure):
                call_rows.append([label, f"error: {got_call.message}", ""])
            else:
                call_ns[unchecked] = got_call[0]
                call_rows.append([label, fmt_ns(got_call[0]), fmt_ns(got_call[1])])
    floor = isolated(partial(run_ctypes_floor, settings), 300)
    if isinstance(floor, Failure):
        call_rows.append(["ctypes floor: libc labs(-5)", f"error: {floor.message}", ""])
    else:
        call_rows.append(["ctypes floor: libc labs(-5)", fmt_ns(floor[0]), fmt_ns(floor[1])])
    report.heading("One call from Python")
    report.text(f"Whole call, nothing subtracted: {settings.call_blocks} blocks of "
                f"{settings.call_block_size} calls, median and best block mean.")
    report.text("")
    report.table(["call", "median ns", "best ns"], call_rows)

    # batch
    log("batch overhead")
    batch_rows: list[list[str]] = []
    worst_batch: float | None = None
    for name, distinct in (("baseline", settings.batch_inputs), ("pkt_parse", 64)):
        found = load_benches(bench_dir, [name])
        bench = found[0]
        for unchecked in (False, True):
            mode = "unchecked" if unchecked else "checked"
            got_batch = isolated(
                partial(run_batch, bench, unchecked, settings.batch_inputs, distinct, settings), 600)
            if isinstance(got_batch, Failure):
                batch_rows.append([name, mode, "", "", f"error: {got_batch.message}",
                                   "", "", "", "", ""])
                continue
            if worst_batch is None or got_batch.spans_overhead_ns > worst_batch:
                worst_batch = got_batch.spans_overhead_ns
            batch_rows.append([
                name, mode, f"{got_batch.inputs:,}", f"{got_batch.distinct:,}",
                fmt_ns(got_batch.total_ns), fmt_ns(got_batch.no_gc_ns),
                fmt_ns(got_batch.per_run_ns),
                fmt_ns(got_batch.overhead_ns), fmt_ns(got_batch.prebuilt_overhead_ns),
                fmt_ns(got_batch.spans_ns), fmt_ns(got_batch.spans_overhead_ns),
                "ok" if got_batch.correct else "WRONG"])
    report.heading("execute_batch overhead")
    report.text("ns per input of execute_batch(list of xdp32 regions) minus the program's "
                "own time per run (test_run), gc on as in normal use. 'prebuilt inputs' times jit_code().batch() with "
                "RunInputs built beforehand, i.e. without execute_batch's per-buffer "
                "conversion (the pair array and the result list remain). pkt_parse cycles "
                "through a pool of distinct regions. execute_spans runs the same regions as "
                "(offset, length) spans of their one mapping: the native batch entry point "
                "with no per-input Python work; its overhead, the median of the differences "
                f"over {SPAN_PAIRS} back-to-back (execute_spans, test_run) pairs per trial, is "
                "the figure the target is about.")
    report.text("")
    report.table(["program", "mode", "inputs", "distinct", "batch ns/input",
                  "same, gc off", "test_run ns/run", "overhead ns/input", "overhead, prebuilt inputs",
                  "execute_spans ns/input", "execute_spans overhead", "r0"],
                 batch_rows, left=2)

    # targets
    report.heading("Targets (issue 3)")
    target_rows: list[list[str]] = []

    def add_target(label: str, value: float | None, shown: str, target: str, ok: bool) -> None:
        if value is None:
            target_rows.append([label, "n/a", target, "n/a"])
        else:
            target_rows.append([label, shown, target, verdict(ok)])

    checked_mean = means.get("jit_checked")
    unchecked_mean = means.get("jit_unchecked")
    add_target("JIT checked / kernel JIT (geomean)", checked_mean,
               fmt_ratio(checked_mean or 0, 3), f"<= {TARGET_CHECKED}x",
               checked_mean is not None and checked_mean <= TARGET_CHECKED)
    add_target("JIT unchecked / kernel JIT (geomean)", unchecked_mean,
               fmt_ratio(unchecked_mean or 0, 3), f"<= {TARGET_UNCHECKED}x",
               unchecked_mean is not None and unchecked_mean <= TARGET_UNCHECKED)
    for unchecked in (False, True):
        mode = "unchecked" if unchecked else "checked"
        for label, figures in (("10,000-insn synthetic", big_compile),
                               ("worst bench program", worst_compile)):
            worst = figures.get(unchecked)
            add_target(f"jit_compile() {mode}, ms per 1,000 insns ({label})", worst,
                       f"{worst or 0:.2f} ms", f"<= {TARGET_COMPILE_MS:g} ms",
                       worst is not None and worst <= TARGET_COMPILE_MS)
    for unchecked in (False, True):
        mode = "unchecked" if unchecked else "checked"
        value = call_ns.get(unchecked)
        add_target(f"one execute_program_jit call ({mode})", value, f"{value or 0:,.0f} ns",
                   f"<= {TARGET_CALL_NS:,.0f} ns", value is not None and value <= TARGET_CALL_NS)
    add_target("execute_spans overhead per input (worst)", worst_batch,
               f"{worst_batch or 0:.1f} ns", f"<= {TARGET_BATCH_NS:g} ns",
               worst_batch is not None and worst_batch <= TARGET_BATCH_NS)
    report.table(["metric", "measured", "target", "status"], target_rows, left=1)
    report.text("")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report.text(f"({'quick' if settings.quick else 'full'} run, "
                f"{time.perf_counter() - started:.0f} s, load average at the end {load}; "
                "other processes on the machine disturb every figure)")


if __name__ == "__main__":
    main()
