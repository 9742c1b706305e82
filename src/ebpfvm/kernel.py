"""Kernel helpers with the kernel's numbers, for programs built against libbpf.

The process-related helpers return deterministic, configurable values
(:class:`KernelEnv`), so tests of such programs are repeatable.
trace_printk follows the kernel's format rules: at most three arguments and
the conversions %d %i %u %x %X %c %s %p %%, with l or ll length modifiers.

Bounds, as the kernel's: the strings of one trace_printk call take at most
TRACE_PRINTK_STRING_BYTES bytes in all (longer ones are cut), a line at most
TRACE_PRINTK_LINE_BYTES; probe_read_str reads at most its size argument. Every
helper charges the bytes it touches to the run's budget
(HelperContext.charge_bytes), and KernelEnv keeps only the last
``max_lines`` trace lines.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .bprintf import bpf_snprintf_text
from .errors import ArgumentTypeError, MemoryFault, check_int
from .helper_table import helper_name
from .helpers import Helper, HelperContext, numbered
from .kernel_helper_names import KERNEL_HELPER_NAMES
from .native.binding import native_version
from .native.env import RtEnvBlock
from .percpu import POSSIBLE_CPUS
from .strings import string_helpers

__all__ = ["INIT_NETNS_COOKIE", "KERNEL_HELPER_NAMES", "MAX_TRACE_LINES", "TRACE_PRINTK_LINE_BYTES",
           "TRACE_PRINTK_STRING_BYTES", "FixedClock", "KernelEnv", "format_trace_printk",
           "helper_name", "kernel_helpers"]

M64 = (1 << 64) - 1
EINVAL = 22
EFAULT = 14
_TRACE_LOG = logging.getLogger("ebpfvm.trace_printk")
_SPEC = re.compile(rb"%(%|(l{0,2})([diuxXc])|s|p[xKs]?)")
_MAX_ARGS = 3
_MAX_VARARGS = 12
"""MAX_BPRINTF_VARARGS: bpf_trace_vprintk's most arguments."""
TRACE_PRINTK_STRING_BYTES = 512
"""What the %s strings of one trace_printk call may take in all, NULs
included: the kernel copies them into a per-call buffer of
MAX_BPRINTF_BIN_ARGS (512) bytes and cuts what does not fit."""
TRACE_PRINTK_UNITS = 256
"""What one trace_printk call costs of the run's budget besides its bytes: the
formatting takes tens of microseconds (the kernel's is rate-limited too)."""
TRACE_PRINTK_LINE_BYTES = 1023
"""The longest trace_printk line: the kernel formats into a buffer of
MAX_BPRINTF_BUF (1024) bytes, the NUL included, and cuts the rest."""
MAX_TRACE_LINES = 4096
INIT_NETNS_COOKIE = 3
"""What the reference kernel (6.18) answers bpf_get_netns_cookie for its
initial network namespace: cookies are numbered as namespaces are set up at
boot, and the initial one's is 3 (KernelEnv's netns cookies by default)."""
"""KernelEnv.max_lines by default: the trace lines kept (about 0.5 MB)."""


class FixedClock:
    """A repeatable clock for :class:`KernelEnv`: the first reading is
    `start_ns`, and each reading moves it on by `step_ns` (0: time stands
    still). ``FixedClock(10**9, 1000)`` reads 1 s, then 1 s + 1 us, ..."""

    def __init__(self, start_ns: int = 0, step_ns: int = 0) -> None:
        self.now = start_ns
        self.step = step_ns

    def __call__(self) -> int:
        now = self.now
        self.now += self.step
        return now

    def __repr__(self) -> str:
        return f"FixedClock({self.now}, {self.step})"


@dataclass
class KernelEnv:
    """What the process and time helpers report, and where trace_printk
    output goes (each formatted line to `printk`, else to the
    ``ebpfvm.trace_printk`` logger).

    Defaults: the host's monotonic clock (`clock` None; give a
    :class:`FixedClock` or any callable returning nanoseconds for repeatable
    runs), CPU 0 (`cpu`: what bpf_get_smp_processor_id returns and the CPU
    whose per-CPU map values a program sees), NUMA node 0, prandom seeded
    with 0, pid = tgid = 4242, uid = gid = 1000, comm "ebpfvm", CONFIG_HZ
    250 (`hz`: jiffies and the coarse clock's tick). From the clock's reading
    T: ktime_get_ns = T, ktime_get_boot_ns = T + `boot_offset_ns`,
    ktime_get_coarse_ns = T rounded down to a tick, ktime_get_tai_ns = T +
    `tai_offset_ns` (with the host clock: the host's CLOCK_TAI), jiffies64 =
    T // (10**9 // hz). Network namespace cookies: 3 (INIT_NETNS_COOKIE) for
    the packet's namespace and the initial one."""

    pid: int = 4242
    tgid: int = 4242
    uid: int = 1000
    gid: int = 1000
    comm: bytes = b"ebpfvm"
    seed: int = 0
    boot_offset_ns: int = 0
    clock: Callable[[], int] | None = None
    """Nanoseconds of the monotonic clock; None: the host's."""
    cpu: int = 0
    """The CPU every run is on (bpf_get_smp_processor_id, per-CPU maps)."""
    numa_node: int = 0
    tai_offset_ns: int = 37_000_000_000
    """What ktime_get_tai_ns adds to a user clock's reading (TAI - UTC: 37 s)."""
    hz: int = 250
    printk: Callable[[str], None] | None = None
    lines: list[str] = field(default_factory=list)
    """The last `max_lines` trace_printk lines of the VM's runs, in order."""
    max_lines: int = MAX_TRACE_LINES
    """How many lines `lines` keeps; older ones are dropped (and counted)."""
    dropped_lines: int = 0
    """How many lines were dropped from `lines` to keep it at `max_lines`."""
    netns_cookie: int = INIT_NETNS_COOKIE
    """bpf_get_netns_cookie(ctx): the cookie of the network namespace the
    packet's socket is in (uringbuf; by default the initial namespace's)."""
    init_netns_cookie: int = INIT_NETNS_COOKIE
    """bpf_get_netns_cookie(NULL): the initial network namespace's cookie."""

    def __post_init__(self) -> None:
        """Check the numbers when given (issue 14): ArgumentError (a
        ValueError) or ArgumentTypeError (a TypeError) naming the field."""
        u32, s64 = (1 << 32) - 1, (1 << 63) - 1
        for name, low, high in (("pid", 0, u32), ("tgid", 0, u32), ("uid", 0, u32),
                                ("gid", 0, u32), ("seed", 0, (1 << 64) - 1),
                                ("boot_offset_ns", 0, s64), ("cpu", 0, u32 >> 1),
                                ("numa_node", 0, u32), ("tai_offset_ns", -s64, s64),
                                ("hz", 1, 10**9), ("max_lines", 0, None),
                                ("dropped_lines", 0, None), ("netns_cookie", 0, M64),
                                ("init_netns_cookie", 0, M64)):
            check_int(f"KernelEnv.{name}", getattr(self, name), low, high)
        if not isinstance(self.comm, bytes):
            raise ArgumentTypeError("KernelEnv.comm", self.comm, "bytes")
        for name in ("clock", "printk"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise ArgumentTypeError(f"KernelEnv.{name}", getattr(self, name),
                                        "a callable or None")

    def keep_line(self, line: str) -> None:
        """Append `line` to `lines`, dropping the oldest past `max_lines`."""
        self.lines.append(line)
        excess = len(self.lines) - max(self.max_lines, 0)
        if excess > 0:
            del self.lines[:excess]
            self.dropped_lines += excess


def format_trace_printk(fmt: bytes, args: tuple[int, int, int],
                        read_string: Callable[[int], bytes]) -> str:
    """The kernel's bpf_trace_printk formatting; ValueError for a bad format.
    `read_string` reads the string of a %s argument (kernel_helpers' reads at
    most TRACE_PRINTK_STRING_BYTES for all of a call's strings)."""
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


class _StringBudget:
    """The %s reads of one trace_printk call: at most `limit` bytes in all,
    NULs included; a string that does not fit is cut, as the kernel does."""

    def __init__(self, ctx: HelperContext, limit: int) -> None:
        self.ctx = ctx
        self.left = limit
        self.used = 0

    def read(self, address: int) -> bytes:
        """The string at `address`, cut to what is left of the budget."""
        if self.left <= 0:
            return b""
        data, _ended = self.ctx.read_string(address, self.left - 1)
        self.left -= len(data) + 1
        self.used += len(data) + 1
        return data


class _KernelHelpers:
    """The kernel helpers over one :class:`KernelEnv`, one method per helper
    (bound methods cost a helper call what closures did)."""

    __slots__ = ("env", "rt")

    def __init__(self, env: KernelEnv) -> None:
        self.env = env
        self.rt = RtEnvBlock(env, env.seed, POSSIBLE_CPUS)
        """The struct rt_env native versions read; prandom's state lives there."""

    def now(self) -> int:
        """The env's clock (the host's monotonic clock when it has none)."""
        clock = self.env.clock
        return time.monotonic_ns() if clock is None else int(clock())

    @native_version
    def ktime_get_ns(self, *_args: int) -> int:
        """bpf_ktime_get_ns: the monotonic clock."""
        return self.now() & M64

    def ktime_get_boot_ns(self, *_args: int) -> int:
        """bpf_ktime_get_boot_ns: the monotonic clock plus the env's boot offset."""
        return (self.now() + self.env.boot_offset_ns) & M64

    def ktime_get_coarse_ns(self, *_args: int) -> int:
        """bpf_ktime_get_coarse_ns: the clock as of the last tick (1/hz s)."""
        tick = 1_000_000_000 // self.env.hz
        return (self.now() // tick * tick) & M64

    def ktime_get_tai_ns(self, *_args: int) -> int:
        """bpf_ktime_get_tai_ns: CLOCK_TAI (the host's, or the env's clock
        plus its TAI offset)."""
        if self.env.clock is None and hasattr(time, "CLOCK_TAI"):
            return time.clock_gettime_ns(time.CLOCK_TAI) & M64
        return (self.now() + self.env.tai_offset_ns) & M64

    def jiffies64(self, *_args: int) -> int:
        """bpf_jiffies64: clock ticks at the env's hz."""
        return (self.now() // (1_000_000_000 // self.env.hz)) & M64

    @native_version
    def numa_node_id(self, *_args: int) -> int:
        """bpf_get_numa_node_id: the env's NUMA node."""
        return self.env.numa_node

    def netns_cookie(self, ctx: int, *_args: int) -> int:
        """bpf_get_netns_cookie: the env's namespace's cookie for a context,
        the initial namespace's for NULL (uringbuf)."""
        return self.env.netns_cookie if ctx else self.env.init_netns_cookie

    @native_version
    def prandom_u32(self, *_args: int) -> int:
        """bpf_get_prandom_u32, from the env's seed: the kernel's generator
        (lfsr113), over the state native code steps too (ebpfvm.native.env)."""
        return self.rt.prandom_u32()

    @native_version
    def smp_processor_id(self, *_args: int) -> int:
        """bpf_get_smp_processor_id: the env's CPU."""
        return self.env.cpu

    def current_pid_tgid(self, *_args: int) -> int:
        """bpf_get_current_pid_tgid."""
        return (self.env.tgid << 32) | self.env.pid

    def current_uid_gid(self, *_args: int) -> int:
        """bpf_get_current_uid_gid."""
        return (self.env.gid << 32) | self.env.uid

    def trace_printk(self, ctx: HelperContext, fmt: int, size: int, a: int, b: int,
                     c: int) -> int:
        """bpf_trace_printk: the line goes to the env (kept, then printk or the log)."""
        raw = ctx.read(fmt, size)
        ctx.charge(TRACE_PRINTK_UNITS)
        ctx.charge_bytes(size)
        if b"\0" not in raw:
            return -EINVAL & M64
        strings = _StringBudget(ctx, TRACE_PRINTK_STRING_BYTES)
        try:
            text = format_trace_printk(raw.split(b"\0", 1)[0], (a, b, c), strings.read)
        except ValueError:
            return -EINVAL & M64  # as the kernel answers a format it refuses
        line = text.encode()[:TRACE_PRINTK_LINE_BYTES]
        ctx.charge_bytes(strings.used + len(line))
        self._emit(line.decode("utf-8", "replace"))
        return len(line)

    def _emit(self, text: str) -> None:
        """A trace line to the env (kept, then printk or the log)."""
        env = self.env
        env.keep_line(text.rstrip("\n"))
        if env.printk is not None:
            env.printk(text)
        else:
            _TRACE_LOG.info("%s", text.rstrip("\n"))

    def trace_vprintk(self, ctx: HelperContext, fmt: int, size: int, data: int,
                      data_len: int, *_rest: int) -> int:
        """bpf_trace_vprintk (helpers4): bpf_trace_printk with up to 12
        arguments in an array of u64, formatted by bpf_snprintf's rules
        (ebpfvm.bprintf); -EINVAL for a bad array length or a format without
        its NUL within `size`. Returns every byte the format prints, the
        line being cut at TRACE_PRINTK_LINE_BYTES."""
        size, data_len = size & 0xFFFF_FFFF, data_len & 0xFFFF_FFFF
        if data_len % 8 or data_len > _MAX_VARARGS * 8 or (data_len and not data):
            return -EINVAL & M64
        raw = ctx.read(fmt, size)
        ctx.charge(TRACE_PRINTK_UNITS)
        ctx.charge_bytes(size + data_len)
        if b"\0" not in raw:
            return -EINVAL & M64
        array = ctx.read(data, data_len) if data_len else b""
        values = [int.from_bytes(array[at:at + 8], "little") for at in range(0, data_len, 8)]
        text = bpf_snprintf_text(ctx, raw.split(b"\0", 1)[0], values,
                                 TRACE_PRINTK_LINE_BYTES + 1)
        if isinstance(text, int):
            return text & M64
        ctx.charge_bytes(len(text))
        self._emit(text[:TRACE_PRINTK_LINE_BYTES].decode("utf-8", "replace"))
        return len(text)

    def probe_read(self, ctx: HelperContext, dst: int, size: int, src: int,
                   *_rest: int) -> int:
        """Copy `size` bytes; a source outside every region gives -EFAULT and a
        zeroed destination, as the kernel's probe_read does. The destination
        is checked first, so nothing larger than it is ever built."""
        if size == 0:
            return 0
        region, offset = ctx.space.find(dst, size, "store", ctx.pc)
        ctx.charge_bytes(size)
        try:
            data = ctx.read(src, size)
        except MemoryFault:
            region.view[offset : offset + size] = bytes(size)
            return -EFAULT & M64
        region.view[offset : offset + size] = data
        return 0

    def probe_read_str(self, ctx: HelperContext, dst: int, size: int, src: int,
                       *_rest: int) -> int:
        """Copy a NUL-terminated string, at most `size` bytes with the NUL;
        returns the bytes copied including the NUL, or -EFAULT."""
        if size == 0:
            return 0
        # Never copy more than the destination can take: a longer string
        # faults on the write below, as it did when it was copied whole.
        region, offset = ctx.space.find(dst, 1, "store", ctx.pc)
        try:
            out, _ended = ctx.read_string(src, min(size - 1, len(region.view) - offset))
        except MemoryFault as fault:
            # What the kernel's copy reached before the fault is not kept.
            ctx.charge_bytes(fault.address - src)
            ctx.write(dst, bytes(1))
            return -EFAULT & M64
        ctx.charge_bytes(2 * len(out))
        ctx.write(dst, out + b"\0")
        return len(out) + 1

    def get_current_comm(self, ctx: HelperContext, buf: int, size: int, *_rest: int) -> int:
        """bpf_get_current_comm: the env's comm, cut and NUL-padded to `size`."""
        if size == 0:
            return -EINVAL & M64
        # The destination first: only then is anything built, and never more
        # than the destination holds.
        region, offset = ctx.space.find(buf, size, "store", ctx.pc)
        ctx.charge_bytes(size)
        name = self.env.comm[: size - 1]
        region.view[offset : offset + len(name)] = name
        region.view[offset + len(name) : offset + size] = bytes(size - len(name))
        return 0


def kernel_helpers(env: KernelEnv) -> dict[int, Helper]:
    """The helpers the registry (ebpfvm.helper_table) gives to Impl.KERNEL:
    probe_read*, ktime, trace_printk, prandom, the process helpers, jiffies64
    (the map helpers come with the maps). probe_read* only read memory the
    program may read."""
    table = _KernelHelpers(env)
    return string_helpers() | numbered([  # helpers3: strtol, strtoul, strncmp
        Helper(table.probe_read, "bpf_probe_read", context=True),
        Helper(table.probe_read_str, "bpf_probe_read_str", context=True),
        Helper(table.probe_read, "bpf_probe_read_user", context=True),
        Helper(table.probe_read, "bpf_probe_read_kernel", context=True),
        Helper(table.probe_read_str, "bpf_probe_read_user_str", context=True),
        Helper(table.probe_read_str, "bpf_probe_read_kernel_str", context=True),
        Helper(table.ktime_get_ns, "bpf_ktime_get_ns"),
        Helper(table.trace_printk, "bpf_trace_printk", context=True),
        Helper(table.trace_vprintk, "bpf_trace_vprintk", context=True),  # helpers4
        Helper(table.prandom_u32, "bpf_get_prandom_u32"),
        Helper(table.smp_processor_id, "bpf_get_smp_processor_id"),
        Helper(table.current_pid_tgid, "bpf_get_current_pid_tgid"),
        Helper(table.current_uid_gid, "bpf_get_current_uid_gid"),
        Helper(table.get_current_comm, "bpf_get_current_comm", context=True),
        Helper(table.jiffies64, "bpf_jiffies64"),
        Helper(table.ktime_get_boot_ns, "bpf_ktime_get_boot_ns"),
        Helper(table.ktime_get_coarse_ns, "bpf_ktime_get_coarse_ns"),
        Helper(table.ktime_get_tai_ns, "bpf_ktime_get_tai_ns"),
        Helper(table.numa_node_id, "bpf_get_numa_node_id"),
        Helper(table.netns_cookie, "bpf_get_netns_cookie"),  # uringbuf
    ])
