"""Every helper a runner offers, called as an attacker would call it.

Each helper that the XDP, tc, socket-filter and cgroup_skb runners register
(their own, the kernel's, the map helpers over one map of each type, the
callback helpers) is called with wild pointers, huge sizes, bad map handles
and bad callbacks, in every checked engine. Each call must end the run with
a result or a typed EbpfError: never another exception, never a crash, and
the whole sweep stays within a memory and a time bound (a child process
under RLIMIT_AS and a timeout, tests/bounded.py)."""

from __future__ import annotations

import pytest

from bounded import run_bounded
from engines import CHECKED_ENGINES

SWEEP_SECONDS = 240.0
SWEEP_MEMORY_MB = 1024

SWEEP = """
from ebpfvm import assemble
from ebpfvm.callbacks import callback_helpers
from ebpfvm.contexts import SkbRunner, XdpRunner
from ebpfvm.errors import EbpfError
from ebpfvm.kernel import KernelEnv, kernel_helpers
from ebpfvm.maps import MapType, create_map, map_helpers

SHAPES = [  # (type, key size, value size, entries, flags): one valid map of each kind
    (MapType.HASH, 4, 8, 16, 0), (MapType.ARRAY, 4, 8, 16, 0),
    (MapType.PERCPU_ARRAY, 4, 8, 16, 0), (MapType.LRU_HASH, 4, 8, 16, 0),
    (MapType.QUEUE, 0, 8, 16, 0), (MapType.STACK, 0, 8, 16, 0),
    (MapType.RINGBUF, 0, 0, 4096, 0), (MapType.DEVMAP, 4, 4, 16, 0),
    (MapType.LPM_TRIE, 8, 8, 16, 1), (MapType.BLOOM_FILTER, 0, 8, 16, 0),
    (MapType.PERF_EVENT_ARRAY, 4, 4, 2, 0),
]
maps = {}
for number, (kind, key, value, entries, flags) in enumerate(SHAPES):
    made = create_map(f"m{number}", kind, key, value, entries, flags)
    maps[made.handle] = made
WILD = 0xDEAD_BEEF_0000
HUGE = 0xFFFF_FFFF
MAX = 0x7FFF_FFFF_FFFF_FFFF
first_map = next(iter(maps))
PATTERNS = [  # r2..r5 (r1 is the context, then all five wild)
    "mov r2, 0\\nmov r3, 0\\nmov r4, 0\\nmov r5, 0",
    f"lddw r2, {WILD}\\nlddw r3, {HUGE}\\nlddw r4, {WILD}\\nlddw r5, {HUGE}",
    f"lddw r2, {first_map}\\nmov r3, r10\\nadd r3, -8\\nlddw r4, {HUGE}\\nmov r5, 0",
    f"lddw r1, {MAX}\\nlddw r2, {MAX}\\nlddw r3, {MAX}\\nlddw r4, {MAX}\\nlddw r5, {MAX}",
    f"lddw r2, {WILD}\\nmov r3, r10\\nadd r3, -64\\nmov r4, 64\\nlddw r5, {MAX}",
]
RUNNERS = [("xdp", lambda code: XdpRunner(code, engine=engine)),
           *((kind, lambda code, kind=kind: SkbRunner(code, engine=engine, prog_type=kind))
             for kind in ("sched_cls", "socket_filter", "cgroup_skb"))]
extra = {**kernel_helpers(KernelEnv()), **map_helpers(maps), **callback_helpers(maps)}
calls, typed, results = 0, 0, 0
for name, make in RUNNERS:
    offered = sorted(set(make(assemble("mov r0, 0\\nexit")).vm._helpers) | set(extra))
    for helper in offered:
        for pattern in PATTERNS:
            runner = make(assemble(f"{pattern}\\ncall {helper}\\nexit"))
            for key, fn in extra.items():
                if key not in runner.vm._helpers:
                    runner.vm.register_helper(key, fn)
            runner.vm.budget = 200_000
            calls += 1
            try:
                runner.run(bytes(range(64)) * 2)
                results += 1
            except EbpfError:
                typed += 1
            except BaseException as error:  # the finding: report it, do not hide it
                report(["untyped", name, helper, pattern, repr(error)])
                raise SystemExit(0)
            finally:
                runner.close()
report(["ok", calls, typed, results, len(extra)])
"""


@pytest.mark.parametrize("engine", CHECKED_ENGINES)
def test_every_helper_survives_hostile_arguments(engine: str) -> None:
    outcome = run_bounded(f"engine = {engine!r}\n{SWEEP}", memory_mb=SWEEP_MEMORY_MB,
                          timeout=SWEEP_SECONDS)
    assert not outcome.timed_out, f"over {SWEEP_SECONDS} s: {outcome.stderr[-2000:]}"
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    found = outcome.result()
    assert isinstance(found, list) and found[0] == "ok", found
    _, calls, typed, results, offered = found
    assert calls == typed + results
    assert offered >= 30  # the kernel's, the maps' and the callbacks' helpers were offered
    assert typed > 0 and results > 0  # both outcomes happen: the sweep reached the helpers
