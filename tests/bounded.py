"""Run a piece of Python in a child process under a memory and a time limit.

The security regression tests use it for findings whose old behaviour ate
gigabytes or hours: a regression then fails the test (a MemoryError, a kill,
a timeout) instead of taking the machine down with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_PRELUDE = """\
import resource, sys
_limit = {memory} * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (_limit, _limit))
sys.path.insert(0, {src!r})
sys.path.insert(0, {tests!r})
"""


@dataclass(frozen=True)
class Outcome:
    """What the child did: exit status (negative: killed by that signal),
    its output, and how long it took. `timed_out` when it was killed at the
    time limit."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool

    def result(self) -> object:
        """The JSON value the child printed last with ``report(...)``."""
        for line in reversed(self.stdout.splitlines()):
            if line.startswith("@@result "):
                return json.loads(line[len("@@result "):])
        raise AssertionError(f"the child reported nothing: rc={self.returncode}\n"
                             f"stdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}")


REPORT = """
def report(value):
    import json
    print("@@result " + json.dumps(value), flush=True)
"""


def run_bounded(code: str, *, memory_mb: int = 1024, timeout: float = 30.0) -> Outcome:
    """Run `code` (dedented) in a fresh interpreter with an address-space
    limit of `memory_mb` MiB, killed after `timeout` seconds. The code may
    call ``report(value)`` to hand a JSON value back (Outcome.result())."""
    source = _PRELUDE.format(memory=memory_mb, src=str(REPO / "src"),
                             tests=str(REPO / "tests")) + REPORT + textwrap.dedent(code)
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else expired.stdout
        err = expired.stderr.decode() if isinstance(expired.stderr, bytes) else expired.stderr
        return Outcome(-9, out or "", err or "", time.monotonic() - start, True)
    return Outcome(done.returncode, done.stdout, done.stderr, time.monotonic() - start, False)
