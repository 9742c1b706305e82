"""The run-time state one execution needs besides the program (the address
space, the inlined regions, helpers), and the helper call every engine makes
through it: the interpreter's generated code and the JIT's helper trampoline
both call :meth:`Machine.call`, so neither engine imports the other."""

from __future__ import annotations

from . import alu
from .errors import (
    BudgetExceeded,
    CoreRelocationFault,
    HelperFault,
    LockHeldAtExit,
    RunInterrupted,
    TailCallFault,
)
from .helper_table import helper_number
from .helpers import HELPER_CALL_UNITS, CallbackFault, Helper, HelperContext, Unwind
from .memory import AddressSpace, Region

__all__ = ["MAX_CAUSE_TEXT", "Machine", "describe_exception", "helper_fault"]

M64 = alu.M64
MAX_CAUSE_TEXT = 200
"""Characters of a helper's exception text a HelperFault message keeps."""

_NO_REGION = Region(0, memoryview(b""), False, "none")
_SPIN_UNLOCK = helper_number("bpf_spin_unlock")


class Machine:
    """The run-time state one execution needs besides the program: the address
    space, the two inlined regions, helpers, and the packet for legacy loads.

    The generated function reads the attributes below into locals on entry."""

    def __init__(
        self,
        space: AddressSpace,
        stack: Region,
        primary: Region | None,
        helpers: dict[int, Helper],
        packet: memoryview | None = None,
    ) -> None:
        self.space = space
        self.helpers = helpers
        self.context = HelperContext(space)
        self.load = space.load
        self.store = space.store
        self.regs_out: list[int] = []
        self.count = 0
        self.s_view = stack.view
        self.s_lo = stack.start
        size = len(stack.view)
        self.s_lim = (size - 1, size - 2, size - 4, size - 8)
        if primary is None:
            primary = _NO_REGION
        self.p_view = primary.view
        self.p_lo = primary.start
        size = len(primary.view)
        self.p_lim = (size - 1, size - 2, size - 4, size - 8)
        self.p_wlim = self.p_lim if primary.writable else (-1, -1, -1, -1)
        self.packet = packet if packet is not None else _NO_REGION.view
        """The packet of legacy loads at the start of the run (after a
        frame-changing helper, the interpreter reads context.packet instead)."""
        self.entry = (0, 0)
        """(pc, instructions counted) where the generated code starts: (0, 0)
        for a run, a callback's entry and the count so far for a callback."""
        self.fb = 0
        """Frames below the one being run (a callback's caller's, plus one)."""

    def call(self, helper_id: int, a: int, b: int, c: int, d: int, e: int, pc: int) -> int:
        """Run helper `helper_id`. Its exceptions become a HelperFault (with the
        exception as `cause`), except the run's own outcomes, which pass through:
        Unwind (the helper ended the run), BudgetExceeded (the helper charged
        more than is left), TailCallFault and RunInterrupted; a KeyboardInterrupt
        becomes RunInterrupted at `pc`."""
        helper = self.helpers.get(helper_id)
        if helper is None:
            raise HelperFault(pc, helper_id, "no helper registered with this id")
        ctx = self.context
        if ctx.held_lock is not None and helper_id != _SPIN_UNLOCK:
            raise _locked_call(pc, helper_id, helper.name, ctx.held_lock[0])
        ctx.pc = pc
        ctx.charge(HELPER_CALL_UNITS)
        try:
            if helper.context:
                result = helper.fn(ctx, a, b, c, d, e)
            else:
                result = helper.fn(a, b, c, d, e)
        except _PASS_THROUGH:
            raise
        except CallbackFault as carried:  # a fault of a callback the helper called
            raise carried.fault from None
        except KeyboardInterrupt:
            raise RunInterrupted(pc) from None
        except Exception as exc:
            raise helper_fault(pc, helper_id, helper.name, exc) from exc
        if not isinstance(result, int):
            raise HelperFault(pc, helper_id, f"returned {type(result).__name__}, not int", helper.name)
        return result & M64

    def check_unlocked(self) -> None:
        """LockHeldAtExit when the run returned holding a bpf_spin_lock (the
        engines call this after a run's exit, before its at-exit release)."""
        held = self.context.held_lock
        if held is not None:
            raise LockHeldAtExit(held[1], held[0])

    def atomic(self, op: str, addr: int, size: int, value: int, pc: int) -> int:
        """Read-modify-write for the simple atomics and xchg; returns the old value.
        An atomic needs writable memory even when it ends up writing nothing."""
        region, offset = self.space.find(addr, size, "store", pc)
        old = int.from_bytes(region.view[offset : offset + size], "little")
        base = op.removeprefix("fetch_")
        if base == "add":
            new = old + value
        elif base == "or":
            new = old | value
        elif base == "and":
            new = old & value
        elif base == "xor":
            new = old ^ value
        else:  # xchg
            new = value
        region.view[offset : offset + size] = (new & ((1 << (size * 8)) - 1)).to_bytes(size, "little")
        return old

    def cmpxchg(self, addr: int, size: int, expected: int, value: int, pc: int) -> int:
        """Compare-and-exchange against the low `size` bytes of r0; returns the old value."""
        region, offset = self.space.find(addr, size, "store", pc)
        old = int.from_bytes(region.view[offset : offset + size], "little")
        mask = (1 << (size * 8)) - 1
        if old == expected & mask:
            region.view[offset : offset + size] = (value & mask).to_bytes(size, "little")
        return old


def _locked_call(pc: int, helper_id: int, name: str, address: int) -> HelperFault:
    """The fault of a helper call made while a bpf_spin_lock is held (the
    kernel's verifier refuses any but bpf_spin_unlock): a HelperFault whose
    cause is a LockMisuse."""
    from .cgroup_storage import LockMisuse

    reason = "function calls are not allowed while holding a lock (bpf_spin_lock)"
    fault = HelperFault(pc, helper_id, reason, name)
    fault.cause = LockMisuse(reason, address)
    return fault


_PASS_THROUGH = (Unwind, BudgetExceeded, TailCallFault, RunInterrupted, CoreRelocationFault)
"""What Machine.call lets out of a helper unwrapped."""


def helper_fault(pc: int, helper_id: int, name: str, exc: Exception) -> HelperFault:
    """The HelperFault a helper's exception becomes (its cause: `exc`); a
    native helper's fault (jit/rtlink.py) is made here too."""
    fault = HelperFault(pc, helper_id, f"raised {describe_exception(exc)}", name)
    fault.cause = exc
    return fault


def describe_exception(exc: BaseException) -> str:
    """The exception's type name and its text cut to MAX_CAUSE_TEXT characters:
    a message that embeds it stays short however the text was made."""
    text = str(exc)
    if len(text) > MAX_CAUSE_TEXT:
        text = text[:MAX_CAUSE_TEXT] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
