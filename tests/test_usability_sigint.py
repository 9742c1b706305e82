"""Issue 14, Must have 3: Ctrl-C and budgets in every engine.

- SIGINT stops `ebpfvm run --pcap` on every engine (the interpreter, the
  checked JIT, the unchecked JIT with a budget): exit 130, at most one stderr
  line, the partial statistics on stdout, soon after the signal.
- The unchecked JIT honours a budget (BudgetExceeded at the same pc and count
  as the checked engines) and then polls like checked code; without one
  (budget=None) it charges nothing.
- A batch polls between its runs, however short they are.
- run_capture stopped by a KeyboardInterrupt raises CaptureInterrupted with
  the packets done so far, and unmaps its chunk buffer.

CLI tests run the command in a child and send it a real SIGINT."""

from __future__ import annotations

import array
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bounded import run_bounded
from conftest import REPO
from ebpfvm import capture as capture_module
from ebpfvm.asm import assemble
from ebpfvm.capture import CaptureInterrupted, run_capture
from ebpfvm.contexts import XdpAction
from ebpfvm.errors import BudgetExceeded, RunInterrupted
from ebpfvm.jit.context import BUDGET_SLICE
from ebpfvm.jit.drivers import BATCH_RUN_UNITS
from ebpfvm.jit.runtime import JitProgram
from ebpfvm.vm import EbpfVmRaw
from engines import ALL_ENGINES, run

pytestmark = pytest.mark.skipif("jit" not in ALL_ENGINES, reason="no JIT on this platform")

CAPTURE_PACKETS = 200_000
"""Enough for several seconds of SLOW_XDP on any engine (about 20,000
packets/s natively)."""
SLOW_XDP = "mov r1, 30000\nloop:\nsub r1, 1\njne r1, 0, loop\nmov r0, 2\nexit\n"
"""60,000 instructions a packet, then XDP_PASS: slow enough that a capture
is still running when the signal comes, whatever the engine (proto_count,
used before, runs 200,000 packets natively in a few hundredths of a second
since its map helpers are native)."""
SIGNAL_AFTER = 2.0
"""Seconds from the start of the child to the signal: past start-up and load."""
STOP_BOUND = 2.0
"""Seconds from the signal to the child's exit; measured 0.05-0.15 s on a busy
2-core machine (the native poll itself comes within a few ms, see
test_batch_polls_between_short_runs)."""
EXIT_INTERRUPTED = 130
"""128 + SIGINT, as shells report a process that Ctrl-C ended."""


@pytest.fixture(scope="module")
def big_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sigint") / "big.pcap"
    subprocess.run([sys.executable, str(REPO / "tools" / "make_sample_pcap.py"), str(path),
                    "--count", str(CAPTURE_PACKETS)], check=True, capture_output=True)
    return path


def _interrupt_cli(args: list[str], after: float = SIGNAL_AFTER
                   ) -> tuple[int, str, list[str], float]:
    """Run `ebpfvm ARGS` in a child, SIGINT it `after` seconds in: (exit
    status, stdout, stderr lines, seconds from the signal to the exit)."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    child = subprocess.Popen([sys.executable, "-m", "ebpfvm.cli", *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(after)
        assert child.poll() is None, "the run ended before the signal"
        sent = time.monotonic()
        os.kill(child.pid, signal.SIGINT)
        out, err = child.communicate(timeout=30)
        seconds = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    return child.returncode, out, err.splitlines(), seconds


STATS_LINE = re.compile(r"(\d+) packets in [\d.]+ s: ")
VERDICT_LINE = re.compile(r"  (XDP_\w+)\s+(\d+)\s+[\d.]+%")


@pytest.mark.parametrize("engine_args", [["--engine", "interp"], ["--engine", "jit"],
                                         ["--engine", "jit-unchecked", "--budget", "1000000"]],
                         ids=["interp", "jit", "jit-unchecked-budget"])
def test_sigint_stops_a_capture_with_partial_statistics(engine_args: list[str],
                                                        big_capture: Path) -> None:
    """Ctrl-C during a capture run gave exit 1 with "packet N: run
    interrupted", a VmBusy error (interpreter) or a BufferError traceback.
    Now: exit 130, at most one stderr line (no traceback), and the
    statistics of the packets done so far, which add up."""
    program = big_capture.with_name("slow.s")
    program.write_text(SLOW_XDP)
    status, out, err, seconds = _interrupt_cli(
        ["run", str(program), "--context", "xdp", "--pcap", str(big_capture), *engine_args])
    assert status == EXIT_INTERRUPTED, (out, err)
    assert len(err) <= 1, err
    assert not any("Traceback" in line or "Error" in line for line in err), err
    lines = out.splitlines()
    match = STATS_LINE.match(lines[0])
    assert match is not None, out
    packets = int(match.group(1))
    assert 0 < packets < CAPTURE_PACKETS
    verdicts = {m.group(1): int(m.group(2)) for m in map(VERDICT_LINE.match, lines) if m}
    assert verdicts == {"XDP_PASS": packets}  # the program passes every packet
    assert seconds < STOP_BOUND


LOOP = "loop:\nadd r0, 1\nja loop\nexit\n"
"""The issue's loop.s: it never ends (two instructions a round)."""


@pytest.mark.parametrize("engine", ["jit", "jit-unchecked"])
def test_sigint_stops_a_run_with_a_huge_budget(engine: str, tmp_path: Path) -> None:
    """`--engine jit --budget 100000000000` ignored SIGINT, and so did the
    unchecked JIT with any budget: now both exit 130, quietly."""
    program = tmp_path / "loop.s"
    program.write_text(LOOP)
    status, out, err, seconds = _interrupt_cli(
        ["run", str(program), "--engine", engine, "--budget", "100000000000"], after=1.5)
    assert status == EXIT_INTERRUPTED, (out, err)
    assert len(err) <= 1, err
    assert seconds < STOP_BOUND


def test_unchecked_budget_ends_an_endless_loop_on_the_cli(tmp_path: Path) -> None:
    """`--engine jit-unchecked --budget 100` on an endless loop never ended."""
    program = tmp_path / "loop.s"
    program.write_text(LOOP)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    result = subprocess.run([sys.executable, "-m", "ebpfvm.cli", "run", str(program),
                             "--engine", "jit-unchecked", "--budget", "100"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "budget" in result.stderr


# -- the unchecked JIT and budgets ---------------------------------------------------------

COUNTDOWN = "mov r0, {n}\nloop:\nsub r0, 1\njne r0, 0, loop\nexit"
"""1 + 2n + 1 instructions."""
CALLS = "mov r6, 3\nloop:\ncall 1\nsub r6, 1\njne r6, 0, loop\nmov r0, r6\nexit"
"""Three helper calls (each costs the budget HELPER_CALL_UNITS besides its
instruction): the helper protocol of issue 11 in unchecked code too."""


def _outcome(vm: EbpfVmRaw, engine: str) -> tuple[Any, ...]:
    try:
        return ("returned", run(vm, engine, bytearray(8)), vm.last_instruction_count)
    except BudgetExceeded as error:
        return ("budget", error.pc, error.count, vm.last_instruction_count)


@pytest.mark.parametrize(("source", "budget"), [
    (COUNTDOWN.format(n=5), 12), (COUNTDOWN.format(n=5), 11),
    (COUNTDOWN.format(n=BUDGET_SLICE), 2 * BUDGET_SLICE + 1), (CALLS, 1000), (CALLS, 40)])
def test_unchecked_budget_counts_as_the_checked_engines(source: str, budget: int) -> None:
    """The unchecked JIT ignored the budget and counted nothing. With a
    budget it now stops, or returns, exactly as the interpreter and the
    checked JIT: same pc and count (across slices and helper calls too)."""
    outcomes = {}
    for engine in ALL_ENGINES:
        vm = EbpfVmRaw(assemble(source), budget=budget)
        vm.register_helper(1, lambda *args: 0)
        outcomes[engine] = _outcome(vm, engine)
        vm.close()
    assert outcomes["jit-unchecked"] == outcomes["interp"] == outcomes["jit"]


_ENDLESS_CHILD = """
from ebpfvm.asm import assemble
from ebpfvm.errors import BudgetExceeded
from ebpfvm.vm import EbpfVmRaw
from engines import ALL_ENGINES, run
found = {}
for budget in (100, 101):
    for engine in ALL_ENGINES:
        vm = EbpfVmRaw(assemble(PROGRAM), budget=budget)
        try:
            found[f"{engine} {budget}"] = ["returned", run(vm, engine, b"")]
        except BudgetExceeded as error:
            found[f"{engine} {budget}"] = [error.pc, error.count, vm.last_instruction_count]
report(found)
"""


def test_endless_unchecked_loop_honours_the_budget() -> None:
    """The issue's loop.s with budget 100 never ended on the unchecked JIT
    (run in a child: the old code hangs). Counted by hand: the loop's block
    is pc 0-1; 100 instructions are 50 rounds, the 51st block does not
    start (pc 0); with 101, pc 0 of it fits and pc 1 is the one beyond."""
    outcome = run_bounded(f"PROGRAM = {LOOP!r}\n" + _ENDLESS_CHILD, timeout=60)
    assert not outcome.timed_out
    found = outcome.result()
    assert isinstance(found, dict)
    for engine in ALL_ENGINES:
        assert found[f"{engine} 100"] == [0, 100, 100], found
        assert found[f"{engine} 101"] == [1, 101, 101], found


def test_unchecked_without_budget_stays_uncharged() -> None:
    """budget=None: the unchecked code charges nothing (count 0, as before);
    a budget set later is honoured, and None again drops the charges."""
    vm = EbpfVmRaw(assemble(COUNTDOWN.format(n=5)), budget=None)
    vm.jit_compile(unchecked=True)
    assert vm.execute_program_jit(b"") == 0
    assert vm.last_instruction_count == 0
    vm.budget = 12
    assert vm.execute_program_jit(b"") == 0
    assert vm.last_instruction_count == 12
    vm.budget = 11
    with pytest.raises(BudgetExceeded):
        vm.execute_program_jit(b"")
    vm.budget = None
    assert vm.execute_program_jit(b"") == 0
    assert vm.last_instruction_count == 0


# -- batches poll between runs ---------------------------------------------------------------


@pytest.mark.parametrize("engine", ["jit", "jit-unchecked"])
def test_batch_polls_between_short_runs(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of runs each shorter than a budget slice never polled: a
    chunk of 4096 packets of up to 4M instructions each ran without a
    chance for Ctrl-C. Now the batch loop polls once the instructions its
    runs charged (plus BATCH_RUN_UNITS a run) pass a slice: a poll at least
    every BUDGET_SLICE + one run's worth. Unchecked code without a budget
    charges nothing but the units."""
    polls = [0]

    def poll(self: JitProgram) -> None:
        polls[0] += 1
        original(self)

    original = JitProgram._poll
    monkeypatch.setattr(JitProgram, "_poll", poll)
    n = 50_000
    per_run = 2 * n + 2  # COUNTDOWN: far below a slice
    runs = 400
    vm = EbpfVmRaw(assemble(COUNTDOWN.format(n=n)),
                   budget=None if engine == "jit-unchecked" else 10**9)
    vm.jit_compile(unchecked=engine == "jit-unchecked")
    results = vm.execute_spans(bytearray(8), [(0, 0)] * runs)
    assert list(results) == [0] * runs
    charged = per_run if engine == "jit" else 0
    step = charged + BATCH_RUN_UNITS
    slice_runs = -(-BUDGET_SLICE // step)  # runs until a slice is spent
    assert polls[0] == (runs - 1) // slice_runs


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # pytest's hook
def test_ctrl_c_between_batch_runs_is_run_interrupted() -> None:
    """A signal handler that raises at the batch loop's poll stops the batch
    before the next run: RunInterrupted, whose batch_index is that run and
    whose batch_results hold the runs before it."""
    vm = EbpfVmRaw(assemble(COUNTDOWN.format(n=50_000)), budget=None)
    vm.jit_compile()
    fired = []

    def handler(signum: int, frame: Any) -> None:
        fired.append(signum)
        raise KeyboardInterrupt

    spans = array.array("Q", [0]) * (2 * 10**6)  # a million empty inputs
    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(RunInterrupted) as info:
            vm.execute_spans(bytearray(8), spans)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    index = info.value.batch_index  # type: ignore[attr-defined]
    assert fired and 0 < index < 10**6
    assert list(info.value.batch_results) == [0] * index  # type: ignore[attr-defined]


# -- run_capture ------------------------------------------------------------------------------

PASS_AFTER_CALL = f"call 1\nmov r0, {int(XdpAction.PASS)}\nexit"
FRAME = bytes(60)


@pytest.mark.parametrize("stop_at", [10, 4100])
@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_run_capture_interrupted_keeps_partial_statistics(
        engine: str, stop_at: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A KeyboardInterrupt in packet `stop_at` (raised by its helper, as
    Ctrl-C would) ends run_capture with CaptureInterrupted: exactly the
    packets before it are counted, in the chunk it stopped too (4100: the
    second chunk of 4096); the batch buffer is unmapped (it was left mapped
    behind the traceback's views, or a BufferError)."""
    frames_made: list[Any] = []

    class Recorded(capture_module._Frame):  # type: ignore[name-defined,misc]
        def __init__(self, size: int) -> None:
            super().__init__(size)
            frames_made.append(self)

    monkeypatch.setattr(capture_module, "_Frame", Recorded)
    calls = [0]

    def helper(*args: int) -> int:
        calls[0] += 1
        if calls[0] == stop_at + 1:
            raise KeyboardInterrupt
        return 0

    vm = EbpfVmRaw(assemble(PASS_AFTER_CALL), budget=10**6)
    vm.register_helper(1, helper)
    with pytest.raises(CaptureInterrupted) as info:
        run_capture(vm, [(0.0, FRAME)] * (3 * stop_at), engine=engine)
    stats = info.value.stats
    assert stats.packets == stop_at
    assert dict(stats.histogram) == {"XDP_PASS": stop_at}
    assert isinstance(info.value.__cause__, KeyboardInterrupt)
    if engine != "interp":  # native batches
        assert stats.mode == "native"
        assert len(frames_made) == 1 and frames_made[0].map.closed
