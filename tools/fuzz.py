"""Long robustness-fuzzing campaigns (issue 5, point 3; issue 11, point 3).

    python tools/fuzz.py --count 100000 --seed 1          # every robustness target
    python tools/fuzz.py --target program --seconds 600
    python tools/fuzz.py --target hostile --seed 1        # 100,000 hostile inputs, 2 workers
    python tools/fuzz.py --jit-cycles 10000               # JIT mapping leak check only

Prints, per target, how many inputs ended in a result, a typed EbpfError, a
bug (another exception, or the interpreter and the JIT disagree), a crash of
the child process, a hang, or (hostile target) a run over the memory or the
time limit; then the mean seconds per input of each class, the wall time and
the count of each stage's outcome. Every finding is written to --save-dir
(default fuzz-findings/) with the input, so it can be replayed with --replay
FILE; a hostile finding also gets its object file (.o) and its recipe (.txt).
Exit status 1 when any was found. --workers child processes (default 2) check
inputs in parallel; each is reused from input to input, and replaced after a
crash, a hang or an input over the memory limit.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzzing
import hostile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", choices=fuzzing.ALL_TARGETS,
                        help="a target to fuzz (repeatable; default: all but hostile)")
    parser.add_argument("--count", type=int,
                        help=f"inputs per target (default {DEFAULT_COUNT:,} without --seconds)")
    parser.add_argument("--workers", type=int, default=2, help="child processes (default 2)")
    parser.add_argument("--seconds", type=float, help="seconds per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float,
                        help="seconds one input may take before it counts as a hang "
                             f"(default {fuzzing.TIMEOUT:g}; hostile: {fuzzing.HOSTILE_TIME:g})")
    parser.add_argument("--save-dir", type=Path, default=Path("fuzz-findings"))
    parser.add_argument("--jit-cycles", type=int, default=0,
                        help="also compile+close this many JIT programs and print the mappings")
    parser.add_argument("--replay", type=Path, help="run one saved finding again and print it")
    args = parser.parse_args(argv)

    if args.replay is not None:
        target, payload = pickle.loads(args.replay.read_bytes())
        for stage in fuzzing.CHECKS[target](payload):
            print(*stage)
        return 0
    status = 0
    if args.count is not None or args.seconds is not None or not args.jit_cycles:
        if args.count is None and args.seconds is None:
            args.count = DEFAULT_COUNT
        status = _campaign(args)
    if args.jit_cycles:
        for close in (True, False):
            before, after = fuzzing.jit_cycles(args.jit_cycles, close)
            how = "close()" if close else "dropped, gc"
            print(f"JIT {args.jit_cycles} compile cycles ({how}): mappings {before[0]} -> "
                  f"{after[0]}, mapped {before[1]} -> {after[1]} bytes, "
                  f"RSS {before[2]} -> {after[2]} bytes")
    return status


DEFAULT_COUNT = 100_000


def _campaign(args: argparse.Namespace) -> int:
    targets = args.target or list(fuzzing.TARGETS)
    started = time.monotonic()

    def progress(target: str, done: int) -> None:
        if done % 10_000 == 0:
            print(f"  {target}: {done} inputs, {time.monotonic() - started:.0f} s", flush=True)

    report = fuzzing.Report()
    restarts = 0
    for target in targets:  # the hostile target has its own limits, so its own workers
        pool = [fuzzing.Worker.hostile() if target == fuzzing.HOSTILE else fuzzing.Worker()
                for _ in range(max(1, args.workers))]
        for worker in pool:
            worker.timeout = args.timeout or worker.timeout
        try:
            fuzzing.campaign([target], args.count, args.seconds, args.seed, report=report,
                             workers=pool, progress=progress)
        finally:
            for worker in pool:
                restarts += worker.restarts
                worker.close()
    elapsed = time.monotonic() - started
    print(f"seed {args.seed}, {args.workers} workers, wall time {elapsed:.0f} s, "
          f"child restarts {restarts}")
    print(report.format())
    if report.bugs:
        args.save_dir.mkdir(parents=True, exist_ok=True)
        for number, (target, kind, payload, detail) in enumerate(report.bugs):
            path = args.save_dir / f"{target}-{kind}-{number}.pickle"
            path.write_bytes(pickle.dumps((target, payload)))
            if target == fuzzing.HOSTILE:
                path.with_suffix(".o").write_bytes(hostile.build_object(payload))
                path.with_suffix(".txt").write_text(f"{payload!r}\n\n{detail}\n")
            print(f"{kind} in {target}: {path}\n  {detail[:2000]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
