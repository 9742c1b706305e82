"""Run plumbing every engine shares: the busy flag that keeps one run per VM
at a time, and a run's input buffer as address, length and writability."""

from __future__ import annotations

import ctypes
import threading
from typing import Any

from .errors import VmBusy
from .memory import address_of, as_view

__all__ = ["NO_INPUT", "Busy", "RunInput", "run_input"]

_get_ident = threading.get_ident


class Busy:
    """Whether a VM is in the middle of a run. Shared by the VM's interpreter
    and JIT paths. `enter` is atomic, so a helper that calls back into the
    running VM, or a second thread using the same VM, gets VmBusy instead of
    clobbering the stack and context the run in progress is using.

    The flag is a one-item list: `list.pop` takes the item in one step that
    no other thread can split (it holds the list's lock, or the GIL), at a
    quarter of the cost of a lock's ``acquire(blocking=False)`` (about 40
    against 150-370 ns), which counts on the JIT's per-call path."""

    __slots__ = ("_token", "owner")

    def __init__(self) -> None:
        self._token = [True]
        self.owner = 0
        """threading.get_ident() of the thread running, while one is."""

    @property
    def on(self) -> bool:
        return not self._token

    def enter(self) -> None:
        """Mark the VM running; VmBusy when it already is."""
        try:
            self._token.pop()
        except IndexError:
            who = ("a helper called back into the VM that is running it"
                   if self.owner == _get_ident() else "another thread is running this VM")
            raise VmBusy(f"the VM is running: {who}") from None
        try:
            self.owner = _get_ident()
        except BaseException:  # Ctrl-C right after taking the token: the caller never leaves
            self._token.append(True)
            raise

    def leave(self) -> None:
        """Mark the run ended (only the code that entered calls this)."""
        self.owner = 0
        if not self._token:
            self._token.append(True)


class RunInput:
    """One run's input memory as the JIT needs it: address, length, writability,
    and the object itself (kept so helpers can build a checked view lazily)."""

    __slots__ = ("obj", "ptr", "size", "writable")

    def __init__(self, obj: Any, ptr: int, size: int, writable: bool) -> None:
        self.obj = obj
        self.ptr = ptr
        self.size = size
        self.writable = writable


NO_INPUT = RunInput(None, 0, 0, False)
"""The input of a run without memory (EbpfVmNoData)."""
_BYTE = ctypes.c_char
_addressof = ctypes.addressof


def run_input(mem: Any) -> RunInput:
    """A run's view of an input buffer; holds a memoryview or a pin so it
    stays put while the run holds the RunInput."""
    if mem is None:
        return NO_INPUT
    view = as_view(mem)
    size = len(view)
    if not size:
        return RunInput(view, 0, 0, False)
    if view.readonly:
        # A view of our own: the caller releasing theirs cannot free the memory.
        own = memoryview(view)
        return RunInput(own, address_of(own), size, False)
    pin = _BYTE.from_buffer(view)  # pins the buffer while the run holds `pin`
    return RunInput(pin, _addressof(pin), size, True)
