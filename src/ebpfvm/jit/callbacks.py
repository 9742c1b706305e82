"""Callbacks in JIT code: how a helper (bpf_loop, bpf_for_each_map_elem)
runs a function of the program that an ``lddw_func`` referred to (RFC 9669
section 5.4, lddw src 4).

The helper runs in Python, called from native code through the trampoline.
It calls :class:`NativeCallbacks` (the Machine's ``run_callback``), which
enters the code again at a second native entry (x86_stubs._callback_entry):
that entry saves the host's registers, points saved_rsp at its own frame,
loads r1..r5, r10 (a frame below the caller's, which the code stored before
the helper call) and the budget, and calls the callback's native code as a
local call at the caller's depth plus one. The callback's exit returns to the
entry, which returns r0 to Python; a fault in the callback unwinds to the
entry's frame only, and Python raises it as the run's fault (with its pc
and count), through the helper. Code of programs without callbacks has
neither the entry nor the r10 store.
"""

from __future__ import annotations

import ctypes
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..cfg import CALLBACK_BASE, CALLBACK_SCALE, FRAME_SIZE, MAX_CALL_DEPTH
from ..errors import CallDepthExceeded, VmFault
from ..helpers import BadCallback, CallbackFault, Unwind
from .context import BUDGET_SLICE, field_offset

if TYPE_CHECKING:
    from .plan import JitCode
    from .runtime import JitProgram

__all__ = ["NativeCallbacks"]

_ENTRY = ctypes.CFUNCTYPE(ctypes.c_uint64)
M64 = (1 << 64) - 1
_WORD = 8
_SAVED_RSP, _DEPTH, _HELPER_PC, _CB_R10, _CB_BUDGET, _RESERVE, _CB_TARGET, _CB_ARGS, \
    _NREGIONS, _FAULT, _LEFT = (field_offset(name) // _WORD for name in (
        "saved_rsp", "depth", "helper_pc", "cb_r10", "cb_budget", "budget_reserve",
        "cb_target", "cb_args", "nregions", "fault", "budget_left"))


class NativeCallbacks:
    """HelperContext.run_callback for one JIT program: runs the callback at
    the value an lddw_func loaded, after checking it is one of the program's
    callback entries."""

    def __init__(self, program: JitProgram, entries: frozenset[int]) -> None:
        self.program = program
        self.entries = entries
        self._codes: dict[bool, tuple[Callable[[], int], int, dict[int, int]]] = {}
        """By `metered`: the callback entry, the code's address, callback offsets."""

    def add_code(self, metered: bool, base: int, jit: JitCode) -> None:
        """Remember one translation of the program (at address `base`)."""
        self._codes[metered] = (_ENTRY(base + jit.callback_entry), base, jit.callbacks)

    def __call__(self, value: int, args: tuple[int, ...]) -> int:
        program = self.program
        pc, rest = divmod(value - CALLBACK_BASE, CALLBACK_SCALE)
        if rest or pc not in self.entries:
            raise BadCallback(f"{value:#x} is not a callback entry of this program")
        machine = program._get_machine()
        helper_ctx = machine.context
        words = program._words  # the context's fields as words: faster than ctypes'
        entry, base, offsets = self._codes[program.metered]
        saved = words[_SAVED_RSP], words[_DEPTH], words[_HELPER_PC], words[_CB_R10]
        caller_pc = helper_ctx.pc
        if saved[1] + 1 >= MAX_CALL_DEPTH:
            raise CallbackFault(CallDepthExceeded(caller_pc, MAX_CALL_DEPTH))
        if program.metered:
            left = helper_ctx.budget
            words[_CB_BUDGET] = register = min(left, BUDGET_SLICE)
            words[_RESERVE] = left - register
        words[_CB_R10] = (saved[3] - FRAME_SIZE) & M64
        words[_DEPTH] = saved[1] + 1
        words[_CB_TARGET] = base + offsets[pc]
        words[_CB_ARGS : _CB_ARGS + len(args)] = array("Q", args)
        regions = machine.space.regions
        if len(regions) != words[_NREGIONS]:  # the helper gave the program memory (map values)
            program._update_table(regions)
            words[_NREGIONS] = len(regions)
        try:
            r0 = entry()
            if words[_FAULT]:
                self._fault()
            if program.metered:
                helper_ctx.budget = words[_LEFT] + words[_RESERVE]
        finally:
            words[_SAVED_RSP], words[_DEPTH], words[_HELPER_PC], words[_CB_R10] = saved
            helper_ctx.pc = caller_pc
        return int(r0)

    def _fault(self) -> None:
        """The callback stopped early: its fault, raised for the helper to
        pass on (CallbackFault), with the instructions counted up to it; a
        helper that ended the run inside the callback ends it here too."""
        program = self.program
        try:
            value = program._stopped()
        except VmFault as fault:
            program._callback_fault = (fault, program.instruction_count())
            raise CallbackFault(fault) from None
        raise Unwind(value)
