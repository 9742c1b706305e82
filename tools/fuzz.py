"""Long robustness-fuzzing campaign (issue 5, point 3).

    python tools/fuzz.py --count 100000 --seed 1          # every target
    python tools/fuzz.py --target program --seconds 600
    python tools/fuzz.py --jit-cycles 10000               # JIT mapping leak check only

Prints, per target, how many inputs ended in a result, a typed EbpfError, a
bug (another exception, or the interpreter and the JIT disagree), a crash of
the child process, or a hang; then the count of each stage's outcome. Every
bug, crash and hang is written to --save-dir (default fuzz-findings/) with the
input, so it can be replayed with --replay FILE. Exit status 1 when any was found.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzzing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", choices=fuzzing.TARGETS,
                        help="a target to fuzz (repeatable; default: all)")
    parser.add_argument("--count", type=int, help="inputs per target")
    parser.add_argument("--seconds", type=float, help="seconds per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=fuzzing.TIMEOUT,
                        help="seconds one input may take before it counts as a hang")
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
    if args.count is not None or args.seconds is not None:
        status = _campaign(args)
    elif not args.jit_cycles:
        parser.error("give --count, --seconds, --jit-cycles or --replay")
    if args.jit_cycles:
        for close in (True, False):
            before, after = fuzzing.jit_cycles(args.jit_cycles, close)
            how = "close()" if close else "dropped, gc"
            print(f"JIT {args.jit_cycles} compile cycles ({how}): mappings {before[0]} -> "
                  f"{after[0]}, mapped {before[1]} -> {after[1]} bytes, "
                  f"RSS {before[2]} -> {after[2]} bytes")
    return status


def _campaign(args: argparse.Namespace) -> int:
    targets = args.target or list(fuzzing.TARGETS)
    started = time.monotonic()

    def progress(target: str, done: int) -> None:
        if done % 10_000 == 0:
            print(f"  {target}: {done} inputs, {time.monotonic() - started:.0f} s", flush=True)

    with fuzzing.Worker(timeout=args.timeout) as worker:
        report = fuzzing.campaign(targets, args.count, args.seconds, args.seed,
                                  worker=worker, progress=progress)
        restarts = worker.restarts
    elapsed = time.monotonic() - started
    print(f"seed {args.seed}, {elapsed:.0f} s, child restarts {restarts}")
    print(report.format())
    if report.bugs:
        args.save_dir.mkdir(parents=True, exist_ok=True)
        for number, (target, kind, payload, detail) in enumerate(report.bugs):
            path = args.save_dir / f"{target}-{kind}-{number}.pickle"
            path.write_bytes(pickle.dumps((target, payload)))
            print(f"{kind} in {target}: {path}\n  {detail[:2000]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
