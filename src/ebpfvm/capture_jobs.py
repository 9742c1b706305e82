"""Every core for a capture (issue 15, point 4): run_capture's ``jobs``.

Worker threads each run whole chunks (capture_native.NativeCapture) with
their own compiled copy of the program: their own JIT context, stack and
``struct rt_env`` (RFC 9669 section 3 names no CPU; the kernel runs each
program invocation on one CPU, and a worker plays one). Worker i runs as
CPU i: bpf_get_smp_processor_id answers i and per-CPU maps use slot i, as
the kernel gives each CPU its own. All workers share ONE set of maps:

- native code runs with the GIL released (the batch entry is a ctypes
  function pointer), so the workers' chunks run at the same time;
- the program's atomic instructions on map values are lock-prefixed x86
  instructions (jit/x86_emit.py), atomic across threads as across CPUs;
- native hash map updates and deletes take the map block's lock word
  (native/rt_hash.h, compare-and-swap), lookups stay lock-free, as the
  kernel's per-bucket locks and lock-free lookups do;
- helpers that fall back to Python run one at a time under one lock
  (JitProgram.serial), with the shared KernelEnv's CPU set to the worker's
  for their duration.

Walking the capture is sequential: a worker fills its chunk under the fill
lock (the walker is a small share of the time), then runs and tallies it
unlocked, and writes its passed packets when every earlier chunk has been
written, so the output keeps the capture's order. A typed error in a chunk
stops every worker; the one of the earliest packet is raised, once, with
its packet_index.
"""

from __future__ import annotations

import ctypes
import os
import threading
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .capture_native import NativeCapture
from .errors import EbpfError
from .native.binding import owner_of
from .native.env import RtEnvBlock
from .pcapmmap import CaptureFile, Record
from .vm import EbpfVmRaw

__all__ = ["default_jobs", "forget_frames", "jobs_for", "jobs_limit", "run_jobs", "worker_vm"]

_TIMER_HELPERS = frozenset({169, 170, 171, 172})
"""bpf_timer_init, set_callback, start, cancel: bound to the VM they were made for."""


def default_jobs() -> int:
    """The cores this process may run on (its affinity), else os.cpu_count()."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _maps_of(vm: Any) -> list[Any]:
    found: dict[int, Any] = {}
    for helper in vm._helpers.values():
        maps = getattr(owner_of(helper.fn), "maps", None)
        if isinstance(maps, dict):
            for target in maps.values():
                found[id(target)] = target
    return list(found.values())


def jobs_limit(vm: Any, jobs: int) -> tuple[int, str]:
    """How many workers `vm`'s program can use out of `jobs`, and why fewer
    ("" when all): only plain VMs (EbpfVmRaw) copy; a timer's helpers belong
    to one VM; per-CPU maps must have a possible CPU for every worker (the
    workers are then cut to the fewest possible CPUs, as a machine with more
    cores than the maps' CPUs would not run the program on the others)."""
    if jobs <= 1:
        return 1, ""
    if type(vm) is not EbpfVmRaw:
        return 1, f"one job: {type(vm).__name__} programs run on one thread"
    if _TIMER_HELPERS & set(vm._helpers):
        return 1, "one job: the program uses timers (bound to one VM)"
    cpus = [int(target.ncpus) for target in _maps_of(vm) if getattr(target, "percpu", False)]
    if cpus and min(cpus) < jobs:
        fewest = max(1, min(cpus))
        return fewest, (f"{fewest} job(s): the per-CPU maps have {fewest} possible CPU(s), "
                        f"one a worker")
    return jobs, ""


class _Serial:
    """The lock Python helpers of a worker's run take: one lock for all
    workers (re-entered by callbacks), and the KernelEnv's CPU set to the
    worker's while it is held."""

    def __init__(self, lock: threading.RLock, kenv: Any, cpu: int) -> None:
        self.lock, self.kenv, self.cpu = lock, kenv, cpu
        self.saved: list[int] = []

    def acquire(self) -> None:
        self.lock.acquire()
        if self.kenv is not None:
            self.saved.append(self.kenv.cpu)
            self.kenv.cpu = self.cpu

    def release(self) -> None:
        if self.kenv is not None:
            self.kenv.cpu = self.saved.pop()
        self.lock.release()


def _kenv_of(vm: Any) -> Any:
    for helper in vm._helpers.values():
        env = getattr(owner_of(helper.fn), "env", None)
        if env is not None and hasattr(env, "cpu") and hasattr(env, "numa_node"):
            return env
    return None


def worker_vm(vm: Any, engine: str, cpu: int, lock: threading.RLock) -> EbpfVmRaw:
    """A copy of `vm` (same program, helpers, maps and allowed memory)
    compiled on `engine`, running as CPU `cpu`: its own stack, JIT context
    and rt_env (the maps table copied, its own CPU and prandom state)."""
    clone = EbpfVmRaw(vm.program, budget=vm.budget)
    clone._helpers = dict(vm._helpers)
    clone._allowed_buffers = list(vm._allowed_buffers)
    clone._allowed_runs = list(vm._allowed_runs)
    clone._allowed_raw = list(vm._allowed_raw)
    clone._slot_limit = vm._slot_limit
    clone.jit_compile(engine=engine)
    jit: Any = clone._jit
    jit.serial = _Serial(lock, _kenv_of(vm), cpu)
    link = getattr(jit, "_link", None)
    if link is not None:
        old = link.env
        block = RtEnvBlock(None, seed=0x9E37_79B9 * (cpu + 1), ncpus=int(old.env.ncpus))
        block.env.nmaps = old.env.nmaps
        ctypes.memmove(ctypes.addressof(block.env.maps), ctypes.addressof(old.env.maps),
                       ctypes.sizeof(old.env.maps))
        block.kenv = None
        link.keep = old  # the descriptors its maps table points at stay alive
        link.env, link.cpu, link.dynamic = block, (lambda: cpu), True
        link.refresh()
        jit.ctx.rt_env = block.address
    return clone


@dataclass
class _Shared:
    """What the workers share (under `fill` or `turn`)."""

    capture: CaptureFile
    fill: threading.Lock = field(default_factory=threading.Lock)
    turn: threading.Condition = field(default_factory=threading.Condition)
    pending: Record | None = None
    finished: bool = False
    filled: int = 0
    """Chunks handed out."""
    packets: int = 0
    """Packets handed out."""
    written: int = 0
    """Chunks written (the next to write)."""
    stop: bool = False
    errors: list[tuple[int, BaseException]] = field(default_factory=list)
    failure: tuple[int, EbpfError] | None = None
    """A capture error and the chunk it comes after."""


Output = Callable[[NativeCapture, Any, Counter[int]], Callable[[], None]]
"""Counts a chunk's verdicts; returns what writes its packets (capture._native_tally)."""
Progress = Callable[[int], None]


def _take(native: NativeCapture, shared: _Shared) -> tuple[int, int, int]:
    """Fill `native`'s chunk with the capture's next packets: (its chunk
    number, packets, the index of its first packet)."""
    with shared.fill:
        if shared.stop or shared.finished:
            return -1, 0, 0
        native.pending, native.finished = shared.pending, False
        count = native.fill()
        shared.pending, native.pending = native.pending, None
        shared.finished = native.finished
        seq, first = shared.filled, shared.packets
        shared.filled += 1
        shared.packets += count
        if native.failure is not None:
            shared.failure = (seq + 1 if count else seq, native.failure)
            native.failure = None
            shared.finished = True
        return (seq, count, first) if count else (-1, 0, 0)


def _work(native: NativeCapture, vm: Any, shared: _Shared, output: Output,
          counts: Counter[int], progress: Progress | None) -> None:
    """One worker: take chunks, run them, write them in turn."""
    try:
        while True:
            seq, count, first = _take(native, shared)
            if seq < 0:
                return
            try:
                results = native.run(vm)
            except EbpfError as error:
                error.packet_index = first + (getattr(error, "batch_index", None) or 0)  # type: ignore[attr-defined]
                raise
            write = output(native, results, counts)
            with shared.turn:
                shared.turn.wait_for(lambda seq=seq: shared.written == seq or shared.stop)  # type: ignore[misc]
                if shared.stop:
                    return
                try:
                    write()
                finally:
                    shared.written += 1
                    shared.turn.notify_all()
            if progress is not None:
                progress(count)
    except BaseException as error:  # the first stops the others
        with shared.turn:
            shared.errors.append((getattr(error, "packet_index", 1 << 62), error))
            shared.stop = True
            shared.turn.notify_all()


def forget_frames(error: BaseException) -> None:
    """Clear the locals of the finished frames `error` (and its causes)
    went through: they hold views of the packet or chunk buffers, which then
    cannot be unmapped (BufferError) until the exception goes."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__


def run_jobs(vm: Any, capture: CaptureFile, engine: str, jobs: int, make: Callable[[], NativeCapture],
             output: Output, counts: Counter[int], progress: Progress | None) -> None:
    """Run `vm`'s program over `capture` on `jobs` workers (see the module);
    `make` makes a worker's NativeCapture over `capture`; counts go into
    `counts`. The calling thread is worker 0 (Ctrl-C reaches it)."""
    if vm._before_first_run is not None:
        vm._first_run()
    lock = threading.RLock()
    shared = _Shared(capture)
    natives: list[NativeCapture] = []
    vms: list[EbpfVmRaw] = []
    tallies = [Counter[int]() for _ in range(jobs)]
    threads: list[threading.Thread] = []
    try:
        for cpu in range(jobs):
            vms.append(worker_vm(vm, engine, cpu, lock))
            natives.append(make())
        threads = [threading.Thread(target=_work, name=f"ebpfvm-job-{cpu}", daemon=True,
                                    args=(natives[cpu], vms[cpu], shared, output, tallies[cpu],
                                          progress))
                   for cpu in range(1, jobs)]
        for thread in threads:
            thread.start()
        _work(natives[0], vms[0], shared, output, tallies[0], progress)
        for thread in threads:
            thread.join()
    except BaseException:
        with shared.turn:
            shared.stop = True
            shared.turn.notify_all()
        for thread in threads:
            thread.join()
        raise
    finally:
        for tally in tallies:
            counts.update(tally)
        for _index, error in shared.errors:  # their frames hold views of the chunks
            forget_frames(error)
        for native in natives:
            native.close()
        for worker in vms:
            worker.close()
    if shared.errors:
        raise min(shared.errors, key=lambda item: item[0])[1]
    if shared.failure is not None:
        raise shared.failure[1]


def jobs_for(vm: Any, jobs: int, native: bool) -> tuple[int, str]:
    """The workers run_capture uses for `jobs` asked for, and the one-line
    note when fewer (`native`: whether the run goes in native chunks over a
    capture file; else it runs one packet at a time, on one job)."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    if not native:
        return 1, "one job: this run goes one packet at a time" if jobs > 1 else ""
    return jobs_limit(vm, jobs)
