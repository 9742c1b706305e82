"""Kernel helpers with the kernel's numbers, for programs built against libbpf.

The process-related helpers return deterministic, configurable values
(:class:`KernelEnv`), so tests of such programs are repeatable.
trace_printk follows the kernel's format rules: at most three arguments and
the conversions %d %i %u %x %X %c %s %p %%, with l or ll length modifiers.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import MemoryFault
from .helpers import Helper, HelperContext
from .kernel_helper_names import KERNEL_HELPER_NAMES

__all__ = ["KERNEL_HELPER_NAMES", "KernelEnv", "format_trace_printk", "helper_name",
           "kernel_helpers"]

M64 = (1 << 64) - 1
EINVAL = 22
EFAULT = 14
_TRACE_LOG = logging.getLogger("ebpfvm.trace_printk")
_SPEC = re.compile(rb"%(%|(l{0,2})([diuxXc])|s|p[xKs]?)")
_MAX_ARGS = 3


def helper_name(number: int) -> str:
    """The kernel's name of helper `number` (``bpf_map_lookup_elem`` for 1)."""
    if 0 <= number < len(KERNEL_HELPER_NAMES):
        return KERNEL_HELPER_NAMES[number]
    return f"unknown helper {number}"


@dataclass
class KernelEnv:
    """What the process helpers report, and where trace_printk output goes
    (each formatted line to `printk`, else to the ``ebpfvm.trace_printk`` logger)."""

    pid: int = 4242
    tgid: int = 4242
    uid: int = 1000
    gid: int = 1000
    comm: bytes = b"ebpfvm"
    seed: int = 0
    boot_offset_ns: int = 0
    printk: Callable[[str], None] | None = None
    lines: list[str] = field(default_factory=list)
    """Every trace_printk line of the VM's runs, in order."""


def format_trace_printk(fmt: bytes, args: tuple[int, int, int],
                        read_string: Callable[[int], bytes]) -> str:
    """The kernel's bpf_trace_printk formatting; ValueError for a bad format."""
    out = bytearray()
    pos = 0
    used = 0

    def literal(text: bytes) -> bytes:
        if b"%" in text:
            raise ValueError(f"unsupported conversion in {fmt!r}")
        return text

    for match in _SPEC.finditer(fmt):
        out += literal(fmt[pos : match.start()])
        pos = match.end()
        whole = match.group(1)
        if whole == b"%":
            out += b"%"
            continue
        if used == _MAX_ARGS:
            raise ValueError("more than three arguments")
        value = args[used]
        used += 1
        length, conv = match.group(2), match.group(3)
        if whole.startswith(b"p"):
            out += f"0x{value:x}".encode() if whole == b"px" else f"{value:#x}".encode()
        elif whole == b"s":
            out += read_string(value)
        else:
            bits = 64 if length else 32
            value &= (1 << bits) - 1
            if conv in (b"d", b"i") and value >> (bits - 1):
                value -= 1 << bits
            out += {b"d": b"%d", b"i": b"%d", b"u": b"%d", b"x": b"%x", b"X": b"%X",
                    b"c": b"%c"}[conv] % (value if conv != b"c" else value & 0xFF)
    out += literal(fmt[pos:])
    return out.decode("utf-8", "replace")


def kernel_helpers(env: KernelEnv) -> dict[int, Helper]:
    """Helpers 4-8, 14-16, 45, 112-115, 118 and 125 (the map helpers come
    with the maps). probe_read* only read memory the program may read."""
    rng = random.Random(env.seed)

    def ktime_get_ns(*_args: int) -> int:
        return time.monotonic_ns() & M64

    def ktime_get_boot_ns(*_args: int) -> int:
        return (time.monotonic_ns() + env.boot_offset_ns) & M64

    def jiffies64(*_args: int) -> int:
        return time.monotonic_ns() // 4_000_000  # HZ = 250

    def trace_printk(ctx: HelperContext, fmt: int, size: int, a: int, b: int, c: int) -> int:
        raw = ctx.read(fmt, size)
        if b"\0" not in raw:
            return -EINVAL & M64
        try:
            text = format_trace_printk(raw.split(b"\0", 1)[0], (a, b, c), ctx.read_cstring)
        except ValueError:
            return -EINVAL & M64  # as the kernel answers a format it refuses
        env.lines.append(text.rstrip("\n"))
        if env.printk is not None:
            env.printk(text)
        else:
            _TRACE_LOG.info("%s", text.rstrip("\n"))
        return len(text.encode())

    def probe_read(ctx: HelperContext, dst: int, size: int, src: int, *_rest: int) -> int:
        """Copy `size` bytes; a source outside every region gives -EFAULT and a
        zeroed destination, as the kernel's probe_read does."""
        try:
            data = ctx.read(src, size)
        except MemoryFault:
            ctx.write(dst, bytes(size))
            return -EFAULT & M64
        ctx.write(dst, data)
        return 0

    def probe_read_str(ctx: HelperContext, dst: int, size: int, src: int, *_rest: int) -> int:
        """Copy a NUL-terminated string, at most `size` bytes with the NUL;
        returns the bytes copied including the NUL, or -EFAULT."""
        if size == 0:
            return 0
        out = bytearray()
        try:
            while len(out) < size - 1:
                byte = ctx.read(src + len(out), 1)
                if byte == b"\0":
                    break
                out += byte
        except MemoryFault:
            ctx.write(dst, bytes(1))
            return -EFAULT & M64
        ctx.write(dst, bytes(out) + b"\0")
        return len(out) + 1

    def get_current_comm(ctx: HelperContext, buf: int, size: int, *_rest: int) -> int:
        if size == 0:
            return -EINVAL & M64
        ctx.write(buf, (env.comm[: size - 1] + b"\0").ljust(size, b"\0"))
        return 0

    return {
        4: Helper(probe_read, "bpf_probe_read", context=True),
        45: Helper(probe_read_str, "bpf_probe_read_str", context=True),
        112: Helper(probe_read, "bpf_probe_read_user", context=True),
        113: Helper(probe_read, "bpf_probe_read_kernel", context=True),
        114: Helper(probe_read_str, "bpf_probe_read_user_str", context=True),
        115: Helper(probe_read_str, "bpf_probe_read_kernel_str", context=True),
        5: Helper(ktime_get_ns, "bpf_ktime_get_ns"),
        6: Helper(trace_printk, "bpf_trace_printk", context=True),
        7: Helper(lambda *_a: rng.getrandbits(32), "bpf_get_prandom_u32"),
        8: Helper(lambda *_a: 0, "bpf_get_smp_processor_id"),
        14: Helper(lambda *_a: (env.tgid << 32) | env.pid, "bpf_get_current_pid_tgid"),
        15: Helper(lambda *_a: (env.gid << 32) | env.uid, "bpf_get_current_uid_gid"),
        16: Helper(get_current_comm, "bpf_get_current_comm", context=True),
        118: Helper(jiffies64, "bpf_jiffies64"),
        125: Helper(ktime_get_boot_ns, "bpf_ktime_get_boot_ns"),
    }
