"""Helper functions callable from eBPF programs (``call N``).

A helper takes five u64 arguments (r1..r5) and returns a u64 (r0), as in
rbpf. A *context* helper also receives a :class:`HelperContext` first, which
gives it checked access to the program's memory, lets it hand the program a
new memory region, and lets it end the program early (:meth:`HelperContext.stop`).

Built-ins: rbpf's set with rbpf's numbers where it has them (5 ktime, 6
trace_printf) and the uBPF test helpers used by the conformance suite.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn, TextIO

from .errors import BudgetExceeded, VmFault
from .helper_table import helper_number
from .memory import AddressSpace, Region, address_of

__all__ = [
    "BPF_KTIME_GETNS_IDX",
    "BPF_TRACE_PRINTK_IDX",
    "HELPER_BYTES_PER_UNIT",
    "HELPER_CALL_UNITS",
    "NO_BUDGET",
    "BadCallback",
    "CallbackFault",
    "CallbackRunner",
    "Helper",
    "HelperContext",
    "Unwind",
    "as_helper",
    "bpf_time_getns",
    "bpf_trace_printf",
    "gather_bytes",
    "memfrob",
    "numbered",
    "rand",
    "sqrti",
    "strcmp",
    "ubpf_test_helpers",
]

M64 = 0xFFFF_FFFF_FFFF_FFFF

BPF_KTIME_GETNS_IDX = helper_number("bpf_ktime_get_ns")
"""rbpf's number for bpf_ktime_getns (the kernel's bpf_ktime_get_ns)."""
BPF_TRACE_PRINTK_IDX = helper_number("bpf_trace_printk")
"""rbpf's number for bpf_trace_printf (the kernel's bpf_trace_printk)."""

PlainHelper = Callable[[int, int, int, int, int], int]
ContextHelper = Callable[["HelperContext", int, int, int, int, int], int]


class Unwind(Exception):
    """Raised by :meth:`HelperContext.stop` to end the program with `value` in r0."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


class CallbackFault(Exception):
    """Carries a fault of a callback (bpf_loop...) out of the helper that
    called it: Machine.call raises `fault` itself, not a HelperFault."""

    def __init__(self, fault: VmFault) -> None:
        super().__init__(fault)
        self.fault = fault


CallbackRunner = Callable[[int, tuple[int, ...]], int]
"""An engine's way to run a callback: (value lddw_func loaded, r1..r5) -> r0."""


@dataclass(frozen=True, slots=True)
class Helper:
    """A registered helper: the function, its name, and whether it wants a context."""

    fn: Callable[..., int]
    name: str
    context: bool = False


def numbered(helpers: Iterable[Helper]) -> dict[int, Helper]:
    """`helpers` keyed by the kernel's number of each one's name (the helper
    registry's numbering, ebpfvm.helper_table)."""
    return {helper_number(helper.name): helper for helper in helpers}


def as_helper(fn: Callable[..., int] | Helper, name: str | None = None, context: bool = False) -> Helper:
    """Wrap a plain function as a :class:`Helper` (a Helper passes through)."""
    if isinstance(fn, Helper):
        return fn
    label: str = name or getattr(fn, "__name__", None) or "helper"
    return Helper(fn, label, context)


NO_BUDGET = 1 << 62
"""HelperContext.budget of a run without a budget: it never runs out."""
HELPER_CALL_UNITS = 64
"""Every helper call costs this many instructions of the run's budget, on top
of the bytes it touches: a call from eBPF into Python costs from one to tens
of microseconds, the time of tens to hundreds of interpreted instructions, so
a loop of cheap instructions around a helper call stays bounded in time."""
HELPER_BYTES_PER_UNIT = 16
"""Helper work is charged to the run's instruction budget at one instruction
per this many bytes a helper reads, writes or copies (see HelperContext.charge)."""


class HelperContext:
    """What a context helper can do during a run. `pc` is the calling instruction.

    `budget` is what is left of the run's instruction budget when the helper
    is called (NO_BUDGET for a run without one): the engines write it before
    every helper call and take back what the helper left. `budget_total` is
    the whole run's budget, for BudgetExceeded. One budget covers the whole
    run: tail calls and callbacks draw on it too."""

    __slots__ = ("_at_exit", "budget", "budget_total", "frame", "held_lock", "on_packet",
                 "packet", "pc", "run_callback", "space", "stdout", "tail_exit")

    def __init__(self, space: AddressSpace, stdout: TextIO | None = None) -> None:
        self.space = space
        self.pc = 0
        self.stdout = stdout
        self._at_exit: list[Callable[[], object]] = []
        self.budget = NO_BUDGET
        self.budget_total = NO_BUDGET
        self.frame = (0, 0)
        """(frames below, r10) of the calling function, which engines set
        before helper calls of programs that refer to callbacks."""
        self.run_callback: CallbackRunner | None = None
        """How the engine runs a callback of the program (None: it has none)."""
        self.held_lock: tuple[int, int] | None = None
        """(address, pc of the bpf_spin_lock call) of the lock the run holds:
        the engines refuse other helper calls and the exit while it is set."""
        self.packet: memoryview | None = None
        """The packet the run's legacy loads (LD_ABS/LD_IND) read, once a
        helper changed it (set_packet); None: the run's input memory."""
        self.on_packet: Callable[[memoryview], None] | None = None
        """How the engine points its legacy loads at a new packet."""
        self.tail_exit = False
        """Set by bpf_tail_call made in a bpf-to-bpf function (frame[0] > 0):
        the interpreter then returns the helper's r0 from that function."""

    def charge(self, units: int) -> None:
        """Take `units` instructions of helper work off the run's budget;
        BudgetExceeded at the calling pc when that leaves it below zero."""
        self.budget -= units
        if self.budget < 0:
            self.budget = 0
            raise BudgetExceeded(self.pc, self.budget_total)

    def charge_bytes(self, size: int) -> None:
        """charge() for `size` bytes of helper work (HELPER_BYTES_PER_UNIT a unit)."""
        if size >= HELPER_BYTES_PER_UNIT:
            self.charge(size // HELPER_BYTES_PER_UNIT)

    def at_exit(self, fn: Callable[[], object]) -> None:
        """Call `fn` once when the run ends, whether it returned or faulted
        (to release what the program took and did not give back)."""
        self._at_exit.append(fn)

    def finish(self) -> None:
        """The engines call this when the run has ended."""
        pending, self._at_exit = self._at_exit, []
        for fn in pending:
            fn()

    def set_packet(self, view: memoryview) -> None:
        """Make `view` the packet the run's legacy loads (LD_ABS/LD_IND, RFC
        9669 section 5.3) read from now on, as the kernel reads skb->data and
        skb->len at each one: the frame-changing skb helpers call this. `view`
        must be guest memory the run may read (MemoryFault otherwise)."""
        if len(view):
            self.space.find(address_of(view), len(view), "load", self.pc)
        self.packet = view
        if self.on_packet is not None:
            self.on_packet(view)

    def read(self, addr: int, size: int) -> bytes:
        """Checked read of `size` bytes of guest memory."""
        return self.space.read_bytes(addr, size, self.pc)

    def write(self, addr: int, data: bytes) -> None:
        """Checked write into guest memory."""
        self.space.write_bytes(addr, data, self.pc)

    def read_cstring(self, addr: int, limit: int = 1 << 16) -> bytes:
        """Checked read of a NUL-terminated string (MemoryFault when no NUL
        comes within `limit` bytes)."""
        return self.space.read_cstring(addr, self.pc, limit)

    def read_string(self, addr: int, limit: int) -> tuple[bytes, bool]:
        """Checked read of at most `limit` bytes before a NUL, and whether the
        NUL came (a string cut at `limit` is not an error)."""
        return self.space.read_string(addr, limit, self.pc)

    def add_region(self, buffer: Any, name: str = "helper", writable: bool | None = None) -> int:
        """Let the program access `buffer` for the rest of this run; returns
        its address (what the helper typically returns in r0)."""
        region = Region.of_buffer(buffer, name, writable)
        self.space.add(region)
        return region.start

    def call(self, function: int, *args: int) -> int:
        """Run the program's callback `function` (the value its lddw_func
        loaded) with r1..r5 = `args` as a bpf-to-bpf call: its own frame, the
        run's budget and call depth. BadCallback (a ValueError) when
        `function` is not a callback entry of this program."""
        runner = self.run_callback
        if runner is None:
            raise BadCallback(f"{function:#x} is not a callback: the program refers to none")
        return runner(function, args)

    def stop(self, value: int = 0) -> NoReturn:
        """End the program now, with `value` as its result."""
        raise Unwind(value & M64)


class BadCallback(ValueError):
    """A helper was given a callback value that is not an entry of the
    program's callbacks (a forged or stale function pointer)."""


def bpf_time_getns(_a: int, _b: int, _c: int, _d: int, _e: int) -> int:
    """Monotonic time in nanoseconds."""
    return time.monotonic_ns() & M64


def bpf_trace_printf(_a: int, _b: int, arg3: int, arg4: int, arg5: int) -> int:
    """Print the last three arguments in hex; return the length of the line (rbpf)."""
    line = f"bpf_trace_printf: {arg3:#x}, {arg4:#x}, {arg5:#x}\n"
    sys.stdout.write(line)
    return len(line)


def gather_bytes(a: int, b: int, c: int, d: int, e: int) -> int:
    """rbpf's gather_bytes: ``a << 32 | b << 24 | c << 16 | d << 8 | e`` (mod 2**64)."""
    return ((a << 32) | (b << 24) | (c << 16) | (d << 8) | e) & M64


def memfrob(ctx: HelperContext, ptr: int, length: int, _c: int, _d: int, _e: int) -> int:
    """XOR `length` bytes at `ptr` with 42 (checked); returns 0."""
    ctx.charge_bytes(2 * length)
    data = ctx.read(ptr, length)
    ctx.write(ptr, bytes(byte ^ 42 for byte in data))
    return 0


def sqrti(x: int, _b: int, _c: int, _d: int, _e: int) -> int:
    """Integer square root of the first argument (exact, unlike a float sqrt)."""
    return math.isqrt(x)


def strcmp(ctx: HelperContext, a: int, b: int, _c: int, _d: int, _e: int) -> int:
    """rbpf's strcmp: 0 when the strings are equal, else the absolute difference
    of the first differing bytes; u64 max when either pointer is NULL."""
    if a == 0 or b == 0:
        return M64
    left, right = ctx.read_cstring(a) + b"\0", ctx.read_cstring(b) + b"\0"
    ctx.charge_bytes(len(left) + len(right))
    for x, y in zip(left, right, strict=False):
        if x != y or x == 0:
            return abs(x - y)
    return 0


_rng = random.Random()


def rand(low: int, high: int, _c: int, _d: int, _e: int) -> int:
    """A random u64, in ``[low, high]`` when low < high (rbpf)."""
    n = _rng.getrandbits(64)
    return n % (high + 1 - low) + low if low < high else n


def _ubpf_gather_bytes(a: int, b: int, c: int, d: int, e: int) -> int:
    return ((a & 0xFF) << 32) | ((b & 0xFF) << 24) | ((c & 0xFF) << 16) | ((d & 0xFF) << 8) | (e & 0xFF)


def _ubpf_no_op(_a: int, _b: int, _c: int, _d: int, _e: int) -> int:
    return 0


def _ubpf_strcmp(ctx: HelperContext, a: int, b: int, _c: int, _d: int, _e: int) -> int:
    left, right = ctx.read_cstring(a) + b"\0", ctx.read_cstring(b) + b"\0"
    ctx.charge_bytes(len(left) + len(right))
    for x, y in zip(left, right, strict=False):
        if x != y or x == 0:
            return (x - y) & M64
    return 0


def _ubpf_unwind(ctx: HelperContext, x: int, _b: int, _c: int, _d: int, _e: int) -> int:
    if x == 0:
        ctx.stop(0)
    return x


def ubpf_test_helpers() -> dict[int, Helper]:
    """The helper set of uBPF's test runner, which the conformance suite
    expects: 0 gather_bytes, 1 memfrob, 2 no_op, 3 sqrti, 4 strcmp_ext,
    5 unwind (returns its argument; ends the program with 0 when it is 0)."""
    return {
        0: Helper(_ubpf_gather_bytes, "gather_bytes"),
        1: Helper(memfrob, "memfrob", context=True),
        2: Helper(_ubpf_no_op, "no_op"),
        3: Helper(sqrti, "sqrti"),
        4: Helper(_ubpf_strcmp, "strcmp_ext", context=True),
        5: Helper(_ubpf_unwind, "unwind", context=True),
    }


RBPF_HELPERS: dict[int, Helper] = {
    BPF_KTIME_GETNS_IDX: Helper(bpf_time_getns, "bpf_ktime_getns"),
    BPF_TRACE_PRINTK_IDX: Helper(bpf_trace_printf, "bpf_trace_printf"),
}
"""rbpf's numbered built-ins, for ``vm.register_helper(n, ...)`` convenience."""
