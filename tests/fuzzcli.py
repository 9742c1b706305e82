"""Command-line fuzzing (issue 14, point 6): the ``cli`` target of tests/fuzzing.py.

Each input is an ``ebpfvm`` invocation: an argv drawn from templates of every
subcommand (run, disasm, asm, verify, maps, jit-dump, bench) with valid
files (the examples' objects, assembly, bytecode, a capture, --map JSON),
then mutated: tokens dropped, repeated, swapped or replaced by edge values,
option names and paths; files flipped, cut short or replaced by random bytes;
JSON nested, out of range or of the wrong shape. Some inputs read a file from
standard input (``-``).

Most invocations run in the fuzzing worker's process through
``ebpfvm.cli.main(argv)`` with stdout, stderr and stdin replaced (about 10 to
50 ms each, against 300 ms for a fresh interpreter that imports the package);
one in CHILD_SHARE runs as a real ``python -m ebpfvm.cli`` child, which also
sees what only a process shows (a traceback printed by the interpreter at
exit, an exit status from a signal). The worker's own timeout catches a hang
in either. The outcomes allowed:

* exit 0, with at most one line on stderr;
* exit 1 with exactly one line on stderr, ``ebpfvm: error: ...``;
* exit 2 with the usage of the command and one ``error:`` line.

Anything else is a bug: another status, a traceback, more lines, an
exception out of ``main``.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
CHILD_SHARE = 100
"""One invocation in this many runs in a child process."""
CHILD_TIMEOUT = 25.0
"""Seconds a child invocation may take (the worker's own limit is fuzzing.TIMEOUT)."""
DIR = "{D}"
"""Stands for the input's own directory in argv; replaced when it runs."""

Invocation = tuple[list[str], list[tuple[str, bytes]], bytes, bool]
"""(argv, files (name, bytes) in the input's directory, stdin, in a child)."""

_FILES: dict[str, list[tuple[str, bytes]]] = {}


def _load_files() -> dict[str, list[tuple[str, bytes]]]:
    """The valid files by kind: obj, asm, bin, pcap."""
    if _FILES:
        return _FILES
    objects = sorted((EXAMPLES / "bpf").glob("*.o"))
    objects += sorted((REPO / "tests" / "data" / "elf").glob("*.o"))[:12]
    _FILES["obj"] = [(p.name, p.read_bytes()) for p in objects]
    _FILES["asm"] = [("sum_bytes.s", (EXAMPLES / "asm" / "sum_bytes.s").read_bytes()),
                     ("l2.s", b"loop:\nadd r0, 1\njne r0, 2000, loop\nexit\n"),
                     ("loop.s", b"loop:\nadd r0, 1\nja loop\nexit\n"),
                     ("mem.s", b"ldxb r0, [r1]\nexit\n")]
    _FILES["bin"] = [("ret.bin", bytes.fromhex("b700000001000000" "9500000000000000")),
                     ("ld.bin", bytes.fromhex("7110000000000000" "9500000000000000"))]
    _FILES["pcap"] = [("sample.pcap", (EXAMPLES / "data" / "sample.pcap").read_bytes()[:6000])]
    return _FILES


MAP_NAMES = ("counts", "seen", "limit", "config", "events", "blocked", "jmp_table",
             "tc_jmp_table", "nope", "")
SECTIONS = ("xdp", "tc", "socket", "classifier", ".text", "nope", "")
FUNCTIONS = ("proto_count", "rate_limit", "block_port", "nope", "main", "")
ENGINES = ("interp", "jit", "jit-unchecked", "nope")
OPTIONS = ("--pcap", "--out", "--packet", "--mem", "--hex", "--engine", "--budget", "--map",
           "--context", "--mbuff", "--entries", "--trace", "--section", "--function",
           "--no-progress", "--json", "--dump", "--tx-out", "--style", "--no-source",
           "--unchecked", "--repeat", "-o", "--output", "--debug", "--help", "--version", "-",
           "--", "-x", "--against-kernel")
NUMBERS = ("0", "1", "-1", "-5", "100", "0x10", "1e3", "2**70", "18446744073709551616",
           "9223372036854775807", "9223372036854775808", "nan", "", " ", "07", "0b11", "1_000")
BUDGETS = ("100000", "1", "0", "-1", "-5", "2**70", "18446744073709551616",
           "9223372036854775808", "0x100", "x", "")
WORDS = ("run", "disasm", "asm", "verify", "maps", "jit-dump", "bench", "xdp", "skb", "raw",
         "mbuff", "auto", "llvm", "rbpf", "ubpf", "0,0", "0x40,0x50", "100000000000,0",
         "4088,4088", "-1,2", "a,b", "012", "zz", "0102", "aa bb", "\x00", "\udcff", "é",
         "/", ".", "/dev/null", "/nonexistent/x", "@", "x=", "=1")


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 5)
    if kind == 0:
        return rng.choice((0, 1, -1, 255, 256, 300, 2**31, 2**32, 2**63, 2**64, 2**70, -2**63))
    if kind == 1:
        return rng.choice((1.5, -2.0, 1e30, 0.0))
    if kind == 2:
        return rng.choice(("0x1", "ff", "zz", "", "00" * 24, "1.2.3.4", "a" * 100, "@x"))
    if kind == 3:
        return rng.choice((True, False, None))
    if kind == 4:
        return rng.choice(("nope", "proto_count", "rate_limit"))
    if kind in (5, 6):
        return {rng.choice(("0", "1", "6", "-1", "0x2", "k", "hits", "bytes", "packets",
                            "4294967296", "1.5")): _json_value(rng, depth + 1)
                for _ in range(rng.randrange(4))}
    if kind == 7:
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return "[" * rng.randrange(1, 3000)


def _map_text(rng: random.Random) -> str:
    import json

    value = _json_value(rng)
    text = value if isinstance(value, str) and value.startswith("[") else json.dumps(value)
    if rng.random() < 0.2:
        cut = rng.randrange(len(text) + 1)
        text = text[:cut] + rng.choice(("", "}", "]", ",", "NaN", "Infinity", "1e999")) + text[cut:]
    return text


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    blob = bytearray(data)
    choice = rng.randrange(5)
    if choice == 0 and blob:
        return bytes(blob[: rng.randrange(len(blob))])
    if choice == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if choice == 2 and len(blob) > 64:
        from fuzzgen import mutate_object

        return mutate_object(rng, bytes(blob)) if blob[:4] == b"\x7fELF" else bytes(blob)
    for _ in range(rng.randrange(1, 8)):
        if blob:
            blob[rng.randrange(len(blob))] = rng.randrange(256)
    return bytes(blob)


class _Builder:
    """One invocation being drawn: the argv and the files it names."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.argv: list[str] = []
        self.files: list[tuple[str, bytes]] = []
        self.stdin = b""

    def file(self, kind: str, mutate: float = 0.15) -> str:
        """A path to a file of `kind`; sometimes '-' (stdin), missing, or mutated."""
        rng = self.rng
        name, data = rng.choice(_load_files()[kind])
        if rng.random() < mutate:
            data = _mutate_bytes(rng, data)
        roll = rng.random()
        if roll < 0.05:
            self.stdin = data
            return "-"
        if roll < 0.08:
            return f"{DIR}/missing-{name}"
        if roll < 0.10:
            return DIR
        name = f"f{len(self.files)}-{name}"
        self.files.append((name, data))
        return f"{DIR}/{name}"

    def out(self) -> str:
        roll = self.rng.random()
        return "-" if roll < 0.2 else "/nonexistent/out" if roll < 0.25 else f"{DIR}/out{roll:.3f}"

    def maybe(self, chance: float, *tokens: str) -> None:
        if self.rng.random() < chance:
            self.argv += tokens


def _program(b: _Builder) -> str:
    roll = b.rng.random()
    return b.file("obj" if roll < 0.65 else "asm" if roll < 0.9 else "bin")


def _run_args(b: _Builder) -> None:
    rng = b.rng
    b.argv += ["run", _program(b)]
    roll = rng.random()
    if roll < 0.35:
        b.argv += ["--pcap", b.file("pcap")]
        b.maybe(0.3, "--out", b.out())
        b.maybe(0.2, "--tx-out", b.out())
        b.maybe(0.5, "--no-progress")
    elif roll < 0.6:
        b.argv += ["--hex", rng.choice(("0102", "aa bb 11 22", "00" * 60, "", "012", "zz"))]
    elif roll < 0.8:
        b.argv += [rng.choice(("--packet", "--mem")), b.file("pcap", 0.5)]
    b.maybe(0.4, "--engine", rng.choice(ENGINES))
    # A budget, mostly: the default (10 million instructions) on an endless
    # loop takes seconds in the interpreter, and the largest ones run as
    # long as asked (a long run is not a hang): edge values that parse are
    # kept small; the others (2**70, 2**64...) must be usage errors.
    b.argv += ["--budget", rng.choice(BUDGETS)] if rng.random() < 0.85 else []
    b.maybe(0.15, "--trace")
    b.maybe(0.2, "--context", rng.choice(("auto", "xdp", "skb", "raw", "mbuff", "nope")))
    b.maybe(0.1, "--mbuff", rng.choice(WORDS[15:23]))
    for _ in range(rng.choice((0, 0, 1, 2))):
        text = f"@{b.file('asm', 1.0)}" if rng.random() < 0.1 else _map_text(rng)
        b.argv += ["--map", f"{rng.choice(MAP_NAMES)}={text}"]
    b.maybe(0.1, "--entries", rng.choice(NUMBERS))
    b.maybe(0.1, "--section", rng.choice(SECTIONS))
    b.maybe(0.1, "--function", rng.choice(FUNCTIONS))
    b.maybe(0.2, "--json")
    b.maybe(0.1, "--dump-maps")


def _other_args(b: _Builder, command: str) -> None:
    rng = b.rng
    if command == "asm":
        b.argv += ["asm", b.file("asm", 0.3)]
        b.maybe(0.7, rng.choice(("-o", "--output")), b.out())
        return
    if command == "maps":
        b.argv += ["maps", b.file("obj")]
        b.maybe(0.5, "--dump")
        if rng.random() < 0.3:
            b.argv += ["--pcap", b.file("pcap")]
    else:
        b.argv += [command, _program(b)]
    if command == "disasm":
        b.maybe(0.5, "--style", rng.choice(("llvm", "rbpf", "ubpf", "nope")))
        b.maybe(0.3, "--no-source")
    if command == "jit-dump":
        b.maybe(0.3, "--unchecked")
    if command == "bench":
        b.argv += ["--repeat", rng.choice(("1", "10", "100", "0", "-1", "x"))]
        b.argv += ["--budget", rng.choice(BUDGETS)] if rng.random() < 0.85 else []
        b.maybe(0.5, "--hex", rng.choice(("0102", "00" * 60, "")))
        b.maybe(0.5, "--engine", rng.choice(ENGINES))
    b.maybe(0.1, "--section", rng.choice(SECTIONS))
    b.maybe(0.1, "--function", rng.choice(FUNCTIONS))
    b.maybe(0.3, "--json")


def _mutate_argv(rng: random.Random, argv: list[str]) -> None:
    for _ in range(rng.randrange(1, 4)):
        position = rng.randrange(len(argv) + 1)
        roll = rng.randrange(6)
        pool = rng.choice((OPTIONS, NUMBERS, WORDS, ENGINES, SECTIONS))
        if roll == 0 and argv:
            del argv[min(position, len(argv) - 1)]
        elif roll == 1:
            argv.insert(position, rng.choice(pool))
        elif roll == 2 and argv:
            argv[min(position, len(argv) - 1)] = rng.choice(pool)
        elif roll == 3 and len(argv) > 1:
            i, j = rng.randrange(len(argv)), rng.randrange(len(argv))
            argv[i], argv[j] = argv[j], argv[i]
        elif roll == 4 and argv:
            argv.insert(position, argv[rng.randrange(len(argv))])
        else:
            argv.insert(position, "".join(chr(rng.randrange(32, 0x250)) for _ in range(3)))


def random_invocation(rng: random.Random) -> Invocation:
    """One ebpfvm invocation: a template of a subcommand, mutated half the time."""
    b = _Builder(rng)
    if rng.random() < 0.3:
        b.argv.append("--debug")
    command = rng.choice(("run", "run", "run", "disasm", "asm", "verify", "maps", "maps",
                          "jit-dump", "bench"))
    if command == "run":
        _run_args(b)
    else:
        _other_args(b, command)
    if rng.random() < 0.5:
        _mutate_argv(rng, b.argv)
    # --trace prints a line per instruction: on an endless loop with the
    # default budget, 10 million lines (a minute of output: slow, not stuck).
    if "--trace" in b.argv and "--budget" not in b.argv:
        b.argv += ["--budget", "100000"]
    # The unchecked JIT does what the program says, with no memory checks
    # (documented as UNSAFE): a wild access there may crash, by design.
    b.argv = ["jit" if token == "jit-unchecked" else token for token in b.argv]
    if rng.random() < 0.02:
        b.argv = []
    return b.argv, b.files, b.stdin, rng.randrange(CHILD_SHARE) == 0


# -- running one ------------------------------------------------------------------------------


def _judge(status: Any, err: str, debug: bool, data_out: bool = False) -> str:
    """"ok", "exit1", "exit2", or "BUG:<why>" for an outcome outside the rule.
    With `data_out` (a capture written to stdout), the text report of a
    success goes to stderr, so it may have more lines."""
    lines = err.rstrip("\n").split("\n") if err else []  # (str.splitlines splits at U+0085 too)
    if status not in (0, 1, 2):
        return f"BUG:exit-{status}"
    if debug:
        return "ok" if status == 0 else f"exit{status}"
    if "Traceback" in err or "Exception ignored" in err:
        return "BUG:traceback"
    if status == 0:
        return "ok" if len(lines) <= 1 or data_out else "BUG:stderr-lines"
    if status == 1:
        one = len(lines) == 1 and lines[0].startswith("ebpfvm: error: ")
        return "exit1" if one else "BUG:exit1-stderr"
    usage = lines and lines[0].startswith("usage: ebpfvm") and lines[-1].startswith("ebpfvm")
    errors = sum(": error: " in line for line in lines)
    return "exit2" if usage and errors == 1 else "BUG:exit2-stderr"


def _shown_with_debug(exc: BaseException) -> bool:
    """Whether `exc` is an error main lets through with --debug (the
    interpreter then prints it and exits 1)."""
    from ebpfvm.errors import EbpfError

    return isinstance(exc, (EbpfError, OSError, ValueError))


def _in_process(argv: list[str], stdin: bytes) -> tuple[Any, str, str]:
    from ebpfvm.cli import main

    out, err = io.TextIOWrapper(io.BytesIO(), errors="replace"), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status: Any = main(argv)
            except SystemExit as stop:
                status = f"SystemExit({stop.code!r})"
            except BaseException as exc:
                status = 1 if "--debug" in argv and _shown_with_debug(exc) else "exception"
                err.write(traceback.format_exc(limit=15))
    finally:
        sys.stdin = saved
    out.flush()
    data = out.buffer.getvalue()  # type: ignore[attr-defined]
    return status, data.decode(errors="replace"), err.getvalue()


def _child(argv: list[str], stdin: bytes) -> tuple[Any, str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    try:
        done = subprocess.run([sys.executable, "-m", "ebpfvm.cli", *argv], input=stdin,
                              capture_output=True, timeout=CHILD_TIMEOUT, env=env, check=False)
    except subprocess.TimeoutExpired:
        return "hang", "", f"no exit in {CHILD_TIMEOUT} s"
    return (done.returncode, done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"))


_SCRATCH: list[str] = []


def _scratch() -> str:
    """This process's directory for the inputs' files (made once: creating
    and removing a directory per input costs more than most inputs)."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.mkdtemp(prefix="ebpfvm-fuzzcli-"))
    return _SCRATCH[0]


def _empty(directory: str) -> None:
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)


def check_cli(invocation: Invocation) -> list[tuple[str, str, str]]:
    """Run one invocation in a fresh directory; one stage, named after the
    command (``cli-run``...), whose outcome is "ok", "exit1", "exit2" or BUG."""
    argv, files, stdin, child = invocation
    cwd = os.getcwd()
    tmp = _scratch()
    for name, data in files:
        Path(tmp, name).write_bytes(data)
    real = [token.replace(DIR, tmp) for token in argv]
    os.chdir(tmp)
    try:
        # A process's argv cannot hold a NUL byte (no shell can pass one).
        in_child = child and not any("\0" in token for token in real)
        status, _out, err = (_child if in_child else _in_process)(real, stdin)
    finally:
        os.chdir(cwd)
        _empty(tmp)
    command = next((t for t in argv if not t.startswith("-")), "none")
    stage = f"cli-{command}" if command in WORDS[:7] else "cli-other"
    data_out = any(argv[i] in ("--out", "--tx-out") and argv[i + 1] == "-"
                   for i in range(len(argv) - 1))
    outcome = _judge(status, err, "--debug" in argv, data_out)
    detail = "" if not outcome.startswith("BUG") else f"status {status}: {err[-2500:]}"
    return [(stage, outcome, detail)]
