"""BPF_PROG_TEST_RUN for __sk_buff programs with ctx_in/ctx_out (the kernel as
the oracle of tests/test_skb_*.py; stdlib only, over tests/kernel_oracle.py)."""

from __future__ import annotations

import ctypes
import struct

import kernel_oracle as kernel

SOCKET_FILTER = 1
SCHED_CLS = 3
SCHED_ACT = 4
CGROUP_SKB = 8
SKB_SIZE = 192


def run_skb(fd: int, data: bytes, ctx: bytes | None = None) -> tuple[int, bytes, bytes]:
    """(retval, packet after the run, __sk_buff ctx_out) of one test run."""
    data_in = ctypes.create_string_buffer(data, len(data))
    data_out = ctypes.create_string_buffer(len(data) + 4096)
    ctx_in = ctypes.create_string_buffer(ctx or bytes(SKB_SIZE), SKB_SIZE)
    ctx_out = ctypes.create_string_buffer(SKB_SIZE)
    attr = ctypes.create_string_buffer(160)
    struct.pack_into("<IIIIQQII", attr, 0, fd, 0, len(data), len(data_out),
                     ctypes.addressof(data_in), ctypes.addressof(data_out), 1, 0)
    struct.pack_into("<IIQQ", attr, 40, SKB_SIZE, SKB_SIZE, ctypes.addressof(ctx_in),
                     ctypes.addressof(ctx_out))
    kernel.bpf(kernel.BPF_PROG_TEST_RUN, attr)
    retval, _size_in, size_out = struct.unpack_from("<III", attr, 4)
    return retval, data_out.raw[:size_out], ctx_out.raw


def load_run(code: bytes, prog_type: int, data: bytes,
             ctx: bytes | None = None) -> tuple[int, bytes, bytes]:
    """Load `code` as `prog_type`, run it once, close it."""
    import os

    fd = kernel.prog_load(code, prog_type)
    try:
        return run_skb(fd, data, ctx)
    finally:
        os.close(fd)
