"""Robustness fuzzing shared by tests/test_robustness.py and tools/fuzz.py.

Five robustness targets, each fed random inputs and mutations of valid ones:

* ``program``: eBPF bytes -> verifier, disassembler, interpreter and checked
  JIT (verifier off for the runs, small instruction budget), and the two
  engines must agree on the result, the error type and pc, and the memory;
  then the JIT's execute_batch over the same input twice must end the same way.
* ``asm``: text -> assembler; text that assembles is disassembled and
  assembled again, which must give the same bytes.
* ``elf``: object bytes -> loader; every program of an object that loads
  runs on the interpreter and the checked JIT.
* ``maps``: map creation and operations from Python with wrong key and value
  sizes and types.
* ``cli``: ``ebpfvm`` invocations, argv and files mutated (tests/fuzzcli.py):
  exit 0, 1 or 2 with the one-line error rule, no traceback, no hang.
* ``hostile``: crafted objects (tests/hostile.py: huge maps of every type,
  hostile BTF, programs looping on map and ring helpers, helpers given huge
  sizes, tail-call chains, recursion, wild pointers, endless loops) loaded with
  ``ebpfvm.load`` and run by ``obj.vm()``, ``obj.xdp()`` or ``obj.skb()`` on
  every checked engine with the DEFAULT budget and limits, in a child under
  HOSTILE_MEMORY and HOSTILE_TIME: a run over either limit is a bug
  (OVER_MEMORY, OVER_TIME), as is a typed error that wraps a MemoryError, a
  RecursionError or another Python exception of a built-in helper, or whose
  message exceeds MESSAGE_LIMIT.

The only outcomes allowed are a result or an :class:`~ebpfvm.errors.EbpfError`
(for maps, also ``KeyError`` for a well-formed key that is absent, as the
Mapping protocol requires). Everything runs in a child process (:class:`Worker`)
so that a segfault or a hang is observed, not fatal: the parent sends one
input at a time, so it always knows which input the child was running when
it died or stopped answering.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import pickle
import random
import resource
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import fuzzcli
import hostile
from fuzzgen import MAP_OPS, View, generate, load_corpus

REPO = Path(__file__).resolve().parents[1]

TARGETS = ("program", "asm", "elf", "maps", "cli")
"""The robustness targets (every one by default)."""
HOSTILE = "hostile"
ALL_TARGETS = (*TARGETS, HOSTILE)
BUDGET = 5_000
"""Instruction budget of every fuzzed run: endless loops end with BudgetExceeded."""
TIMEOUT = 30.0
"""Seconds one input may take in the child before it counts as a hang."""
MEMORY_LIMIT = 4 << 30
"""Address-space limit of the child, so a runaway allocation cannot hurt the machine."""

# Outcome classes of one input.
RESULT = "result"
TYPED = "typed-error"
BUG = "bug"  # an exception outside EbpfError, or the engines disagree
CRASH = "crash"  # the child died (signal or exit)
HANG = "hang"  # no answer within TIMEOUT
OVER_MEMORY = "over-memory"  # a MemoryError, or the child died of memory
OVER_TIME = "over-time"  # a hostile input over HOSTILE_TIME
CLASSES = (RESULT, TYPED, BUG, CRASH, HANG, OVER_MEMORY, OVER_TIME)
FINDINGS = (BUG, CRASH, HANG, OVER_MEMORY, OVER_TIME)

HOSTILE_MEMORY = 1 << 30
"""Address-space limit (RLIMIT_AS) of the hostile target's child: the issue
promises "a typed error within seconds and a few hundred MB"; the child's
baseline is 20 MiB of address space after the imports and about 30 MiB after
XDP, tc and plain runs on both engines (measured with address_space()), so
nearly all of the limit is what one input allocates."""
HOSTILE_TIME = 10.0
"""Seconds one hostile input (a load and a run on each checked engine) may
take; one stage may take hostile.STAGE_TIME."""


# -- map operations ---------------------------------------------------------------------------


def _materialize(value: Any) -> Any:
    return memoryview(value.raw) if isinstance(value, View) else value


def _well_formed_key(the_map: Any, key: Any) -> bool:
    if type(the_map).__name__ == "ProgArray":
        return isinstance(key, int)
    if type(the_map).__name__ == "MapOfMaps" and isinstance(key, int):
        return 0 <= key < 1 << 8 * the_map.key_size
    return isinstance(key, (bytes, bytearray, memoryview)) and len(key) == the_map.key_size


def run_map_script(definition: tuple[Any, ...],
                   ops: list[tuple[int, tuple[Any, ...]]]) -> list[tuple[str, str]]:
    """Run a map script; (operation, outcome name) per step. Any exception other than
    MapError escapes, except KeyError from item access with a well-formed key
    (the Mapping protocol)."""
    from ebpfvm.errors import EbpfError
    from ebpfvm.maps import create_map

    try:
        the_map: Any = create_map(*definition)
    except EbpfError as error:
        return [("create", type(error).__name__)]
    outcomes = [("create", "ok")]
    table = MAP_OPS[type(the_map).__name__]
    for choice, arg_items in ops:
        args = {letter: _materialize(value) for letter, value in arg_items}
        name, letters = table[choice % len(table)]
        values = [args[letter] for letter in letters]
        try:
            if name == "typed":
                the_map.typed  # noqa: B018 (a property that raises for maps without BTF)
            else:
                result = getattr(the_map, name)(*values)
                if name in ("__iter__", "consume"):
                    list(result)
            outcomes.append((name, "ok"))
        except EbpfError as error:
            outcomes.append((name, type(error).__name__))
        except KeyError:
            if name not in ("__getitem__", "__delitem__") or not _well_formed_key(the_map,
                                                                               values[0]):
                raise
            outcomes.append((name, "KeyError"))
    return outcomes


# -- what the child runs on one input ------------------------------------------------------------

Stage = tuple[str, str, str]
"""(stage, outcome, detail): outcome is "ok", an EbpfError class name, or
"BUG:<class>" with a traceback as detail."""


def _stage(name: str, fn: Callable[[], Any]) -> tuple[Stage, Any]:
    from ebpfvm.errors import EbpfError

    try:
        return (name, "ok", ""), fn()
    except EbpfError as error:
        return (name, type(error).__name__, _fault_detail(error)), error
    except Exception as error:
        return (name, f"BUG:{type(error).__name__}", traceback.format_exc(limit=12)), error


def _fault_detail(error: BaseException) -> str:
    pc = getattr(error, "pc", None)
    return "" if pc is None else f"pc={pc}"


def _no_verifier(_code: bytes) -> None:
    return None


def _engine_vm(code: bytes) -> Any:
    from ebpfvm.helpers import ubpf_test_helpers
    from ebpfvm.vm import EbpfVmRaw

    vm = EbpfVmRaw(budget=BUDGET)
    vm.set_verifier(_no_verifier)
    vm.set_program(code)
    for key, helper in ubpf_test_helpers().items():
        vm.register_helper(key, helper)
    return vm


def _engine_run(vm: Any, mem: bytearray, jit: bool) -> tuple[int, bytes]:
    mem[:] = bytes(range(len(mem)))
    if jit:
        vm.jit_compile()
        result = vm.execute_program_jit(mem)
    else:
        result = vm.execute_program(mem)
    return result, bytes(mem)


def _batch_stage(vm: Any, mem: bytearray, jit: Stage, jit_value: Any) -> Stage:
    """execute_batch over the same input twice: the first run must end as the
    single JIT run did; the second too when that run left the input unchanged."""
    from ebpfvm.errors import VmFault

    pattern = bytes(range(len(mem)))
    mem[:] = pattern
    stage, value = _stage("batch", lambda: vm.execute_batch([mem, mem]))
    if stage[1].startswith("BUG"):
        return stage
    if jit[1] == "ok":
        result, after = jit_value
        same = stage[1] == "ok" and value[0] == result and (
            after != pattern or value[1] == result)
    else:
        same = (stage[1], stage[2]) == (jit[1], jit[2]) and (
            not isinstance(value, VmFault) or value.batch_index == 0)
    detail = "" if same else f"batch {stage[1:]} {value!r:.100} / jit {jit[1:]} {jit_value!r:.100}"
    return ("batch", stage[1] if same else "BUG:BatchDisagreement", detail)


def check_program(code: bytes) -> list[Stage]:
    """Both engines run on one VM and one input buffer, so the addresses a
    program computes (stack, input) are the same in both."""
    from ebpfvm import disassemble, verify

    stages = [_stage("verify", lambda: verify(code))[0], _stage("disasm", lambda: disassemble(code))[0]]
    setup, vm = _stage("setup", lambda: _engine_vm(code))
    if setup[1] != "ok":
        return [*stages, setup]
    mem = bytearray(64)
    try:
        interp, interp_value = _stage("interp", lambda: _engine_run(vm, mem, False))
        jit, jit_value = _stage("jit", lambda: _engine_run(vm, mem, True))
        if vm.jit_ready:
            stages.append(_batch_stage(vm, mem, jit, jit_value))
    finally:
        vm.close()
    stages += [interp, jit]
    if not interp[1].startswith("BUG") and not jit[1].startswith("BUG"):
        same = (interp[1], interp[2]) == (jit[1], jit[2]) and (
            interp[1] != "ok" or interp_value == jit_value)
        if interp[1] == "JitUnsupported" or jit[1] == "JitUnsupported":
            same = True
        detail = "" if same else f"interp {interp[1:]} {interp_value!r:.80} / jit {jit[1:]} {jit_value!r:.80}"
        stages.append(("agree", "ok" if same else "BUG:Disagreement", detail))
    return stages


def check_asm(text: str) -> list[Stage]:
    from ebpfvm import assemble, disassemble

    stage, code = _stage("assemble", lambda: assemble(text))
    stages = [stage]
    if stage[1] == "ok":
        text2_stage, text2 = _stage("disasm", lambda: disassemble(code))
        stages.append(text2_stage)
        if text2_stage[1] == "ok":
            again_stage, again = _stage("reassemble", lambda: assemble(text2))
            if again_stage[1] != "ok":
                again_stage = ("reassemble", f"BUG:{again_stage[1]}", again_stage[2] + text2[:400])
            elif again != code:
                again_stage = ("reassemble", "BUG:RoundTrip", f"{code.hex()} -> {text2!r:.300}")
            stages.append(again_stage)
    return stages


def _run_object_program(blob: bytes, name: str, jit: bool) -> tuple[int, bytes]:
    from ebpfvm import load

    vm = load(blob).vm(name, budget=BUDGET)  # a fresh object: its maps and data start empty
    mem = bytearray(range(64))
    try:
        if jit:
            vm.jit_compile()
            return int(vm.execute_program_jit(mem)), bytes(mem)
        return int(vm.execute_program(mem)), bytes(mem)
    finally:
        vm.close()


def check_elf(blob: bytes) -> list[Stage]:
    """Load; then run each program (up to 4) on both engines, each on a fresh
    copy of the object, and count whether they agree on the result or error."""
    from ebpfvm import load

    stage, obj = _stage("load", lambda: load(blob))
    stages = [stage]
    if stage[1] != "ok":
        return stages
    for program in obj.programs[:4]:
        name = program.name
        interp, interp_value = _stage("interp", lambda: _run_object_program(blob, name, False))  # noqa: B023
        jit, jit_value = _stage("jit", lambda: _run_object_program(blob, name, True))  # noqa: B023
        stages += [interp, jit]
        if not interp[1].startswith("BUG") and not jit[1].startswith("BUG"):
            same = (interp[1], interp[2]) == (jit[1], jit[2]) and (
                interp[1] != "ok" or interp_value == jit_value)
            detail = "" if same else (f"{name}: interp {interp[1:]} {interp_value!r:.80} / "
                                      f"jit {jit[1:]} {jit_value!r:.80}")
            # Counted, not a bug: the two copies of the object sit at different
            # addresses, and a mutated program may compute with them (the
            # program target compares the engines strictly, on one VM).
            stages.append(("agree", "ok" if same else "differs", detail))
    return stages


def check_maps(script: tuple[tuple[Any, ...], list[tuple[Any, ...]]]) -> list[Stage]:
    stage, outcomes = _stage("maps", lambda: run_map_script(*script))
    if stage[1] == "ok":
        return [(name, outcome, "") for name, outcome in outcomes]
    return [stage]


HUGE_ALLOCATION = 1 << 40
"""Bytes the "memory" self-test asks for: more than any limit and any machine."""


def check_selftest(what: str) -> list[Stage]:
    """Misbehaviour on purpose, to show the harness sees it: "crash" (SIGSEGV),
    "hang", "raise" (a TypeError), "typed" (an EbpfError), "memory" (a
    MemoryError), "wrapped-memory" (an EbpfError over a MemoryError), anything
    else is a result."""
    import ctypes
    import time

    from ebpfvm.errors import EbpfError

    def act() -> None:
        if what == "crash":
            ctypes.string_at(8)
        elif what == "hang":
            time.sleep(3600)
        elif what == "raise":
            raise TypeError("on purpose")
        elif what == "typed":
            raise EbpfError("on purpose")
        elif what == "memory":
            bytearray(HUGE_ALLOCATION)
        elif what == "wrapped-memory":
            try:
                bytearray(HUGE_ALLOCATION)
            except MemoryError as error:
                raise EbpfError("a typed error over a MemoryError") from error

    if what in ("memory", "wrapped-memory"):
        return [hostile.stage("selftest", act)[0]]

    return [_stage("selftest", act)[0]]


CHECKS: dict[str, Callable[[Any], list[Stage]]] = {
    "program": check_program, "asm": check_asm, "elf": check_elf, "maps": check_maps,
    "cli": fuzzcli.check_cli, HOSTILE: hostile.check, "selftest": check_selftest,
}


def classify(stages: list[Stage]) -> str:
    outcomes = [outcome for _stage, outcome, _detail in stages]
    if any(outcome.startswith("OVER-MEMORY") or outcome == "BUG:MemoryError"
           for outcome in outcomes):
        return OVER_MEMORY
    if any(outcome.startswith("OVER-TIME") for outcome in outcomes):
        return OVER_TIME
    if any(outcome.startswith("BUG") for outcome in outcomes):
        return BUG
    if all(outcome == "ok" for outcome in outcomes):
        return RESULT
    return TYPED


# -- the child process ----------------------------------------------------------------------------

_FRAME = struct.Struct("<I")


def _send(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj)
    stream.write(_FRAME.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise EOFError
    (size,) = _FRAME.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def address_space() -> int:
    """This process's address-space size in bytes (VmSize), what RLIMIT_AS limits."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def worker_main(memory_limit: int = MEMORY_LIMIT) -> None:
    """The child: reads (target, input) frames on stdin, answers with (stages,
    address-space size after the input) on the original stdout; programs that
    print (trace helpers) print to /dev/null."""
    answer = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)
    faulthandler.enable()
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > memory_limit:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, hard))
    requests = sys.stdin.buffer
    while True:
        try:
            target, payload = _receive(requests)
        except EOFError:
            return
        try:
            stages = CHECKS[target](payload)
        except MemoryError:  # in the harness itself, after the stage's own
            stages = [("child", "OVER-MEMORY:MemoryError", "in the harness")]
        size = address_space()
        if size > memory_limit // 4:  # a full collection costs about as much as an input
            gc.collect()
            size = address_space()
        _send(answer, (stages, size))


@dataclass
class Report:
    """Counts of one campaign: per target and class, and per stage outcome."""

    classes: Counter[tuple[str, str]] = field(default_factory=Counter)
    stages: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    seconds: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    """Seconds the worker took, per target and class."""
    bugs: list[tuple[str, str, Any, str]] = field(default_factory=list)
    """(target, class, input, detail) of every bug, crash and hang."""

    def count(self, target: str, kind: str | None = None) -> int:
        return sum(n for (t, k), n in self.classes.items()
                   if t == target and (kind is None or k == kind))

    def format(self) -> str:
        lines = [f"{'target':8} {'inputs':>8} " + " ".join(f"{c:>11}" for c in CLASSES)]
        for target in sorted({t for t, _k in self.classes}):
            row = " ".join(f"{self.count(target, c):>11}" for c in CLASSES)
            lines.append(f"{target:8} {self.count(target):>8} {row}")
        lines.append("mean seconds per input: " + ", ".join(
            f"{target} {kind} {total / self.classes[target, kind]:.3f}"
            for (target, kind), total in sorted(self.seconds.items()) if self.classes[target, kind]))
        lines.append("stage outcomes:")
        for (target, stage, outcome), n in sorted(self.stages.items()):
            lines.append(f"  {target}.{stage}: {outcome} {n}")
        return "\n".join(lines)


class Worker:
    """A child process that checks inputs one at a time; restarted after a
    crash, a hang, an input over the memory limit, or when its address space
    stays above half the limit after an input (so garbage of one input is
    never blamed on the next).

    `memory_limit` is the child's RLIMIT_AS; an input with no answer within
    `timeout` seconds is a `timeout_class` (HANG, or OVER_TIME for the
    hostile target)."""

    def __init__(self, timeout: float = TIMEOUT, memory_limit: int = MEMORY_LIMIT,
                 timeout_class: str = HANG) -> None:
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.timeout_class = timeout_class
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr: Any = None
        self.restarts = 0

    @classmethod
    def hostile(cls) -> Worker:
        """A worker with the hostile target's limits."""
        return cls(HOSTILE_TIME, HOSTILE_MEMORY, OVER_TIME)

    def _start(self) -> subprocess.Popen[bytes]:
        if self.stderr is not None:
            self.stderr.close()
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (kept until the next restart)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO / "src"), str(Path(__file__).resolve().parent),
             os.environ.get("PYTHONPATH", "")]))
        code = f"import fuzzing; fuzzing.worker_main({self.memory_limit})"
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        return self.proc

    def check(self, target: str, payload: Any) -> tuple[str, list[Stage]]:
        """(class, stages) of one input; CRASH and HANG carry the child's stderr."""
        proc = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            _send(proc.stdin, (target, payload))
            ready, _w, _x = select.select([proc.stdout], [], [], self.timeout)
            if not ready:
                self._stop()
                return self.timeout_class, [("child", self.timeout_class.upper(),
                                             f"no answer in {self.timeout} s{self._stage()}")]
            stages, size = _receive(proc.stdout)
        except (EOFError, BrokenPipeError):
            status = proc.wait()
            detail = self._stderr_tail()
            self._stop()
            kind = OVER_MEMORY if any(sign in detail for sign in MEMORY_SIGNS) else CRASH
            return kind, [("child", f"{kind.upper()}:{status}{self._stage()}", detail)]
        kind = classify(stages)
        if kind == OVER_MEMORY or size > self.memory_limit // 2:
            self._stop()
        return kind, stages

    def _stage(self) -> str:
        """", in <stage>" when the child marked the stage it was in."""
        marks = [line for line in self._stderr_tail().splitlines()
                 if line.startswith(hostile.STAGE_MARK)]
        return f", in {marks[-1][len(hostile.STAGE_MARK):]}" if marks else ""

    def _stderr_tail(self) -> str:
        if self.stderr is None:
            return ""
        self.stderr.seek(0)
        text: str = self.stderr.read().decode(errors="replace")
        return text[-3000:]

    def _stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.restarts += 1

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        self.proc = None
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


MEMORY_SIGNS = ("MemoryError", "Cannot allocate memory", "out of memory")
"""What a child's last words say when it died of the memory limit."""


class _Feed:
    """Inputs of one target for several worker threads: the next input with
    its number, under a lock, until the count or the deadline or max_bugs."""

    def __init__(self, target: str, seed: int, count: int | None, seconds: float | None,
                 report: Report, progress: Callable[[str, int], None] | None,
                 max_bugs: int | None) -> None:
        self.target = target
        self.inputs = generate(target, random.Random(f"{seed}:{target}"), load_corpus())
        self.count = count
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.report = report
        self.progress = progress
        self.max_bugs = max_bugs
        self.lock = threading.Lock()
        self.taken = 0

    def next(self) -> Any:
        with self.lock:
            if (self.count is not None and self.taken >= self.count) or (
                    self.deadline is not None and time.monotonic() >= self.deadline) or (
                    self.max_bugs is not None and len(self.report.bugs) >= self.max_bugs):
                return None
            self.taken += 1
            return (next(self.inputs),)

    def record(self, payload: Any, kind: str, stages: list[Stage]) -> None:
        with self.lock:
            report, target = self.report, self.target
            report.classes[target, kind] += 1
            for stage, outcome, _detail in stages:
                report.stages[target, stage, outcome] += 1
            if kind in FINDINGS:
                detail = "\n".join(f"{s}: {o} {d}" for s, o, d in stages if o != "ok")
                report.bugs.append((target, kind, payload, detail))
            done = report.count(target)
            if self.progress is not None and done % 1000 == 0:
                self.progress(target, done)

    def drain(self, worker: Worker) -> None:
        while (item := self.next()) is not None:
            started = time.monotonic()
            kind, stages = worker.check(self.target, item[0])
            self.report.seconds[self.target, kind] += time.monotonic() - started
            self.record(item[0], kind, stages)


def campaign(targets: list[str], count: int | None, seconds: float | None, seed: int,
             report: Report | None = None, worker: Worker | None = None,
             progress: Callable[[str, int], None] | None = None,
             workers: list[Worker] | None = None, max_bugs: int | None = None) -> Report:
    """Run `count` inputs (or `seconds` of inputs) per target through a worker,
    or through several `workers` in parallel (one thread each). With
    `max_bugs`, stop a target once that many findings are in."""
    report = report or Report()
    pool = workers or [worker or Worker()]
    try:
        for target in targets:
            feed = _Feed(target, seed, count, seconds, report, progress, max_bugs)
            threads = [threading.Thread(target=feed.drain, args=(each,)) for each in pool[1:]]
            for thread in threads:
                thread.start()
            feed.drain(pool[0])
            for thread in threads:
                thread.join()
    finally:
        if workers is None and worker is None:
            pool[0].close()
    return report


# -- JIT memory ---------------------------------------------------------------------------------------


def mapped_memory() -> tuple[int, int]:
    """(number of mappings, total mapped bytes) of this process, from /proc/self/maps."""
    count = total = 0
    with open("/proc/self/maps") as handle:
        for line in handle:
            start, end = line.split(None, 1)[0].split("-")
            count += 1
            total += int(end, 16) - int(start, 16)
    return count, total


def resident_memory() -> int:
    """Resident set size in bytes, from /proc/self/status."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


LEAK_PROGRAM = "ldxb r1, [r1]\nmov r2, 3\ncall 0\nadd r0, 4\nexit"


def jit_cycles(cycles: int, close: bool, keep: list[Any] | None = None,
               ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Compile a program `cycles` times on fresh VMs, closing each (or dropping
    it and leaving it to the garbage collector, or, with `keep`, keeping it
    there: a leak on purpose); (mappings, mapped bytes, RSS) before and after."""
    from ebpfvm import EbpfVmRaw, HelperFault, assemble

    code = assemble(LEAK_PROGRAM)

    def helper(a: int, b: int, _c: int, _d: int, _e: int) -> int:
        return a + b if a else a // a  # ZeroDivisionError: a fault path each cycle

    def one() -> None:
        vm = EbpfVmRaw(code)
        vm.register_helper(0, helper)
        vm.jit_compile()
        if vm.execute_program_jit(bytearray([2])) != 2 + 3 + 4:  # helper(2, 3) = 5, plus 4
            raise AssertionError("the JIT program computed the wrong value")
        try:
            vm.execute_program_jit(bytearray([0]))
            raise AssertionError("the helper did not fail")
        except HelperFault:
            pass
        if close:
            vm.close()
        if keep is not None:
            keep.append(vm)

    for _ in range(50):  # warm up allocators and caches
        one()
    gc.collect()
    before = (*mapped_memory(), resident_memory())
    for _ in range(cycles):
        one()
    gc.collect()
    after = (*mapped_memory(), resident_memory())
    return before, after


if __name__ == "__main__":
    worker_main()
