"""Time one program on one input per engine, like the kernel's BPF_PROG_TEST_RUN.

JIT engines repeat the run in one native call (``test_run``), so the figure
is the program's own cost. The interpreter runs a Python loop. XDP programs
get the same context layout as a capture run (``struct xdp_md`` then the
packet); programs that move the packet bounds, and skb programs, go through
their context runner once per run, whose Python overhead is then included.
"""

from __future__ import annotations

import time
from typing import Any

from .capture import CONTEXT_SLOT, MAX_PACKET, called_helpers
from .contexts import XDP_HELPERS, SkbRunner, XdpRunner, _Frame
from .engine import get_engine
from .progtypes import pack_xdp_md

__all__ = ["bench_engines"]


def _uses_bounds_helpers(vm: Any) -> bool:
    return bool(XDP_HELPERS & called_helpers(vm))


def _loop(run: Any, repeat: int) -> tuple[int, float]:
    r0 = 0
    start = time.perf_counter_ns()
    for _ in range(repeat):
        r0 = run()
    return r0, (time.perf_counter_ns() - start) / repeat


def bench_engines(vm: Any, context: str, engine: str, data: bytes,
                  repeat: int) -> tuple[int, float]:
    """(r0 of the last run, mean nanoseconds per run) of `repeat` runs."""
    if len(data) > MAX_PACKET:
        raise ValueError(f"input of {len(data)} bytes exceeds {MAX_PACKET}")
    chosen = get_engine(engine)
    if context == "skb" or (context == "xdp" and _uses_bounds_helpers(vm)):
        runner: Any = (SkbRunner if context == "skb" else XdpRunner)(vm, engine=engine)
        try:
            return _loop(lambda: runner.run(data).r0, repeat)
        finally:
            runner.close()
    frame = None
    if context == "xdp":
        frame = _Frame(CONTEXT_SLOT + max(len(data), 1))
        end = CONTEXT_SLOT + len(data)
        pack_xdp_md(frame.view, 0, frame.base + CONTEXT_SLOT, frame.base + end)
        frame.view[CONTEXT_SLOT:end] = data
        mem: Any = frame.view[:end]
    else:
        mem = bytearray(data)
    try:
        if chosen.reference:
            return _loop(lambda: vm.execute_program(mem), repeat)
        vm.jit_compile(engine=engine)
        r0, ns = vm.test_run(mem, repeat)
        return int(r0), float(ns)
    finally:
        if frame is not None:
            mem.release()
            frame.close()
