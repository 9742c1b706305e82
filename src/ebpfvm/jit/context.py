"""The block of memory JIT code and Python share during a run.

Generated code keeps a pointer to a :class:`JitContext` in r12 and reads its
inputs, region bounds and stack from it; it reports faults, the registers at
exit and the remaining budget back through it.
"""

from __future__ import annotations

import ctypes
from enum import IntEnum

__all__ = ["BUDGET_SLICE", "FAULT_INFO_SHIFT", "IN_BYTEARRAY", "IN_OFFSET_SHIFT", "IN_R1_IS_INPUT", "Fault", "JitContext", "RegionEntry", "field_offset"]

U64 = ctypes.c_uint64


class Fault(IntEnum):
    """Why generated code stopped early (JitContext.fault)."""

    NONE = 0
    MEMORY = 1  # fault_addr, fault_info = pc << 8 | size << 1 | is_store
    HELPER = 2  # the trampoline recorded a Python exception
    BUDGET = 3  # budget_left, budget_block
    DEPTH = 4  # fault_pc
    INVALID = 5  # fault_pc
    BATCH = 6  # internal: the batch driver stopped at element fault_pc
    INTERRUPT = 7  # helper_pc: the trampoline never ran its body (a signal handler raised)
    POLL = 8  # budget_block: the same for the poll between budget slices
    BATCH_POLL = 9  # the same for the batch loop's poll between two runs (see drivers)
    RT_MEMORY = 10  # a native helper's RT_CHECK: fault_addr, fault_size, fault_info = is_store
    RT_BUDGET = 11  # a native helper's RT_CHARGE (or its call's) ran past the budget


IN_BYTEARRAY = 1
"""in_arg holds a CPython buffer object (bytearray, memoryview): the code reads
its data pointer at the offset in_flags >> IN_OFFSET_SHIFT."""
IN_R1_IS_INPUT = 2
"""With IN_BYTEARRAY: r1 is the input's address (EbpfVmRaw)."""
IN_OFFSET_SHIFT = 8

FAULT_INFO_SHIFT = 8
"""fault_info keeps the pc above this bit; size << 1 and the store flag below."""

BUDGET_SLICE = 1 << 22
"""The budget register holds at most this many instructions; the rest of the
run's budget waits in budget_reserve. When a block's charge runs past the
slice, the code calls the poll (Python code runs, so a pending Ctrl-C stops
the run) and refills the register: a native loop stays interruptible even
without a budget, at no cost on the path that charges blocks."""


class RegionEntry(ctypes.Structure):
    """One region of the native region table: ``[start, start + size)``."""

    _fields_ = [("start", U64), ("size", U64), ("writable", U64)]


class JitContext(ctypes.Structure):
    """Shared state of one VM's JIT runs. Field order matters only for the
    `IN_*` block, which Python writes with one pack (see runtime.IN_LAYOUT)."""

    _fields_ = [
        # inputs of one run, written together by Python (or by the batch driver)
        ("in_arg", U64),  # input memory address, or its buffer object (IN_BYTEARRAY)
        ("in_len", U64),  # input memory length
        ("in_wmask", U64),  # all ones when the input is writable, else 0
        ("in_r1", U64),
        ("in_r2", U64),
        ("in_flags", U64),  # IN_* flags below
        ("in_budget", U64),  # the budget register at entry: at most BUDGET_SLICE
        ("in_reserve", U64),  # the rest of the run's budget
        ("in_nregions", U64),  # region-table entries valid at the start of the run
        ("fault", U64),
        # per-VM constants
        ("s_lo", U64),  # stack region start
        ("s_top", U64),  # stack region end: r10 at entry
        ("s_qwords", U64),  # stack size / 8, zeroed at entry
        ("regions", U64),  # address of the RegionEntry table
        ("helper_fn", U64),  # address of the helper trampoline
        ("poll_fn", U64),  # address of the poll (see BUDGET_SLICE)
        ("mbuff", U64),  # FixedMbuff: the VM's metadata buffer, else 0
        ("data_off", U64),
        ("data_end_off", U64),
        ("batch_limit", U64),  # batch: every span must end at or below this offset
        # run state
        ("in_ptr", U64),  # input memory address (in_arg, resolved)
        ("r1_run", U64),  # r1 at entry: in_r1, or in_ptr with IN_R1_IS_INPUT
        ("p_cnt", U64 * 4),  # valid offsets in the input for sizes 1, 2, 4, 8 (loads)
        ("p_wcnt", U64 * 4),  # the same for stores; 0 when read-only
        ("nregions", U64),
        ("saved_rsp", U64),
        ("depth", U64),
        ("helper_pc", U64),
        ("budget_reserve", U64),  # budget beyond the register (in_reserve at entry)
        # outputs
        ("fault_pc", U64),
        ("fault_addr", U64),
        ("fault_info", U64),
        ("budget_left", U64),  # the budget register: at exit, at a fault, around helper calls
        ("budget_block", U64),
        ("regs_out", U64 * 11),
        # callbacks (bpf_loop...): see jit/callbacks.py
        ("cb_r10", U64),  # r10 of the function at its last helper call, then the callback's
        ("cb_target", U64),  # the callback's native address
        ("cb_budget", U64),  # the budget register for the callback
        ("cb_args", U64 * 5),  # r1..r5 of the callback
        # legacy packet loads (LD_ABS/LD_IND): the input at entry, then what a
        # frame-changing helper made the packet (HelperContext.set_packet)
        ("k_ptr", U64),
        ("k_cnt", U64 * 4),  # valid offsets in the packet for sizes 1, 2, 4, 8
        # set by the trampoline after a tail call made in a bpf-to-bpf function:
        # the code returns the helper's r0 from that function (tailcalls)
        ("tail_exit", U64),
        # the native runtime (jit/rtlink.py): the run's struct rt_env, and the
        # size of an access RT_CHECK refused (any u64, unlike fault_info's)
        ("rt_env", U64),
        ("fault_size", U64),
    ]


def field_offset(name: str) -> int:
    """Byte offset of a JitContext field, for generated code."""
    offset: int = getattr(JitContext, name).offset
    return offset
