"""Run one generated XDP program (tests/kprogen.py) in the Linux kernel and in
every engine of ours, and say where they disagree.

The kernel loads the program (BPF_PROG_LOAD, log level 0 first, the verifier's
log only on refusal) and runs it once on the case's packet (BPF_PROG_TEST_RUN).
Our engines run it on the same packet through :class:`ebpfvm.contexts.XdpRunner`.
Compared: the 32-bit retval and the output packet byte for byte; the packet
holds r0-r9 as 64-bit words (the program's epilogue), so all scalar register
state is compared. A refusal by the kernel is not a divergence: it is counted
(`Outcome.rejected`) so the generator's acceptance rate can be watched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import kernel_oracle as kernel
from ebpfvm.contexts import XdpRunner
from ebpfvm.errors import EbpfError
from ebpfvm.jit.execmem import jit_supported
from ebpfvm.vm import EbpfVmRaw
from kprogen import KCase, dump_registers
from progen import Item, Op, layout

__all__ = ["ENGINES", "Outcome", "Run", "compare", "reduce", "run_engine", "run_kernel"]

ENGINES = ("interp", "jit", "jit-unchecked") if jit_supported() is None else ("interp",)
RUN_BUDGET = 1_000_000
"""Instruction budget of the checked engines: generated programs need a few
thousand at most, so only a wrong jump can exhaust it."""
U32 = 0xFFFF_FFFF


@dataclass(frozen=True)
class Run:
    """What one engine (or the kernel) did: the 32-bit retval and the output
    packet, or the error it stopped with."""

    retval: int | None
    packet: bytes
    error: str | None = None

    def describe(self) -> str:
        if self.error is not None:
            return f"error: {self.error}"
        regs = " ".join(f"r{i}={v:#x}" for i, v in enumerate(dump_registers(self.packet)))
        return f"retval={self.retval:#x} {regs} packet={self.packet.hex()}"


@dataclass
class Outcome:
    """The kernel's run (None when it refused the program, `rejected` then
    holds the end of its log) and each engine's, plus the engines that disagree."""

    kernel: Run | None
    rejected: str | None
    engines: dict[str, Run] = field(default_factory=dict)
    diverging: list[str] = field(default_factory=list)

    def report(self, case: KCase) -> str:
        assert self.kernel is not None
        lines = [f"engines disagreeing with the kernel: {', '.join(self.diverging)}",
                 f"packet in: {case.packet.hex()}", "program:", case.text().rstrip(),
                 f"kernel: {self.kernel.describe()}"]
        lines += [f"{name}: {run.describe()}" for name, run in self.engines.items()]
        return "\n".join(lines)


def run_kernel(case: KCase) -> tuple[Run | None, str | None]:
    """(the kernel's run, None), or (None, the verifier's refusal)."""
    try:
        fd = kernel.prog_load(case.code, quiet_first=True)
    except OSError as exc:
        return None, str(exc)
    try:
        retval, packet = kernel.test_run(fd, case.packet)
    finally:
        os.close(fd)
    return Run(retval & U32, packet), None


def run_engine(case: KCase, engine: str, vm: EbpfVmRaw | None = None) -> Run:
    """Run `case` on `engine`, in `vm` when given (one VM can serve every
    engine: the interpreter's translation and the verifier's pass are kept)."""
    own = vm is None
    if vm is None:
        vm = EbpfVmRaw(case.code)
    vm.budget = None if engine == "jit-unchecked" else RUN_BUDGET
    try:
        runner = XdpRunner(vm, engine=engine)
    except EbpfError as exc:
        return Run(None, b"", f"{type(exc).__name__}: {exc}")
    try:
        result = runner.run(case.packet)
    except EbpfError as exc:
        return Run(None, b"", f"{type(exc).__name__}: {exc}")
    finally:
        runner.close()
        if own:
            vm.close()
    return Run(result.r0 & U32, result.packet)


def compare(case: KCase, engines: tuple[str, ...] = ENGINES) -> Outcome:
    """Run `case` in the kernel and, if it loads, in `engines`.

    The unchecked JIT only runs when the checked engines finished without a
    fault (a wild access there would take the process down)."""
    expected, rejected = run_kernel(case)
    outcome = Outcome(expected, rejected)
    if expected is None:
        return outcome
    try:
        vm = EbpfVmRaw(case.code)
    except EbpfError as exc:  # our verifier refuses what the kernel's accepts
        outcome.engines["verifier"] = Run(None, b"", f"{type(exc).__name__}: {exc}")
        outcome.diverging.append("verifier")
        return outcome
    try:
        for engine in engines:
            if engine == "jit-unchecked" and any(run.error for run in outcome.engines.values()):
                continue
            run = outcome.engines[engine] = run_engine(case, engine, vm)
            if run != expected:
                outcome.diverging.append(engine)
    finally:
        vm.close()
    return outcome


def reduce(case: KCase, engine: str) -> KCase:
    """Delete instructions of `case` one by one (labels stay, so jumps still
    resolve) while the kernel still accepts it and `engine` still disagrees
    with the kernel; repeat until nothing more can go. Runs after hypothesis'
    shrinking, which works on the generator's choices and so cannot drop an
    instruction the generator always emits (register set-up, stack writes)."""
    items = list(case.items)
    if not items:
        return case

    def diverges(candidate: list[Item]) -> KCase | None:
        trial = KCase(layout(candidate), case.packet, case.features, tuple(candidate))
        return trial if engine in compare(trial, (engine,)).diverging else None

    best = case
    changed = True
    while changed:
        changed = False
        index = len(items) - 1
        while index >= 0:
            if isinstance(items[index], Op):
                candidate = items[:index] + items[index + 1 :]
                smaller = diverges(candidate)
                if smaller is not None:
                    items, best, changed = candidate, smaller, True
            index -= 1
    return best
