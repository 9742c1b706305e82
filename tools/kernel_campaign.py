"""A long kernel differential campaign: random XDP programs (tests/kprogen.py)
run in the Linux kernel and in every engine of ours (tests/kernel_diff.py).

    python tools/kernel_campaign.py --count 100000 --seed 1

Programs are drawn by hypothesis in chunks, each with its own seed (seed,
seed + 1, ...). A divergence stops its chunk: hypothesis shrinks the program,
then kernel_diff.reduce deletes instructions while the divergence stays, and
both are printed in assembler text, ready to paste into a regression test
(tests/test_kernel_regressions.py); the campaign then goes on
with the next chunk until `--count` programs have been generated. Progress
and the final counts (programs generated, accepted by the kernel, rejected
with the verifier's reasons, divergences per engine) go to stdout.

Needs bpf() (root, or CAP_BPF + CAP_PERFMON); exits with status 2 without it.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

import kernel_oracle
from kernel_diff import ENGINES, compare, reduce
from kprogen import KCase, kcases


class Divergence(Exception):
    """Raised inside the hypothesis test so that it shrinks the program."""

    def __init__(self, case: KCase, report: str, engines: list[str]) -> None:
        super().__init__(report)
        self.case = case
        self.report = report
        self.engines = engines


@dataclass
class Tally:
    generated: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    divergences: Counter[str] = field(default_factory=Counter)
    found: list[str] = field(default_factory=list)


def refusal_reason(log: str) -> str:
    """The verifier's complaint: the last log line before its statistics."""
    lines = [line for line in log.strip().splitlines() if line and not line.startswith(
        ("processed ", "verification time", "stack depth"))]
    return lines[-1][:120] if lines else log[:120]


def run_chunk(tally: Tally, chunk_seed: int, examples: int) -> None:
    """Up to `examples` programs; stops at (and shrinks) the first divergence."""
    diverged = False

    @hypothesis_seed(chunk_seed)
    @settings(max_examples=examples, database=None, deadline=None,
              phases=(Phase.generate, Phase.shrink), report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck))
    @given(kcases())
    def check(case: KCase) -> None:
        nonlocal diverged
        outcome = compare(case)
        if not diverged:  # shrinking runs are not new programs
            tally.generated += 1
            if outcome.rejected is not None:
                tally.rejected[refusal_reason(outcome.rejected)] += 1
            else:
                tally.accepted += 1
        if outcome.diverging:
            if not diverged:  # the first find, before shrinking
                tally.divergences.update(outcome.diverging)
            diverged = True
            raise Divergence(case, outcome.report(case), outcome.diverging)

    try:
        check()
    except Divergence as exc:
        print(f"\n== divergence (seed {chunk_seed}), shrunk by hypothesis:\n{exc.report}\n",
              flush=True)
        reduced = reduce(exc.case, exc.engines[0])
        report = compare(reduced).report(reduced)
        tally.found.append(report)
        print(f"== the same, reduced instruction by instruction:\n{report}\n", flush=True)
    except Exception:  # a crash of the harness or an engine: report it, go on
        if not diverged:
            tally.divergences["crash"] += 1
        tally.found.append(traceback.format_exc())
        print(f"\n== crash (seed {chunk_seed}):\n{traceback.format_exc()}\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="programs to generate")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first chunk")
    parser.add_argument("--chunk", type=int, default=1000, help="programs per hypothesis run")
    args = parser.parse_args(argv)
    why = kernel_oracle.available()
    if why is not None:
        print(f"bpf() is unavailable here: {why}", file=sys.stderr)
        return 2
    tally = Tally()
    start = time.monotonic()
    chunk_seed = args.seed
    print(f"engines: {', '.join(ENGINES)}", flush=True)
    while tally.generated < args.count:
        run_chunk(tally, chunk_seed, min(args.chunk, args.count - tally.generated))
        chunk_seed += 1
        elapsed = time.monotonic() - start
        print(f"{elapsed:7.0f}s  generated {tally.generated}  accepted {tally.accepted}  "
              f"rejected {sum(tally.rejected.values())}  "
              f"divergences {sum(tally.divergences.values())}", flush=True)
    print(f"\nprograms generated: {tally.generated}")
    print(f"accepted by the kernel: {tally.accepted} "
          f"({100 * tally.accepted / max(tally.generated, 1):.2f}%)")
    for reason, count in tally.rejected.most_common():
        print(f"  rejected {count}: {reason}")
    names = [*ENGINES, *(name for name in tally.divergences if name not in ENGINES)]
    print("divergences per engine: "
          + ", ".join(f"{name} {tally.divergences[name]}" for name in names))
    print(f"divergent programs found (shrunk above): {len(tally.found)}")
    print(f"time: {time.monotonic() - start:.0f} s")
    return 1 if tally.found else 0


if __name__ == "__main__":
    sys.exit(main())
