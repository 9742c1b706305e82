"""Program contexts: run XDP programs on packets as the kernel would.

An XDP program reads ``struct xdp_md``, whose ``data`` and ``data_end`` are
32-bit fields it turns into pointers. :class:`XdpRunner` therefore keeps one
buffer below 4 GiB (``MAP_32BIT``) holding the context, headroom and the
packet, so the program's own loads produce real addresses; no instruction is
rewritten. The packet as the program left it is returned with the verdict.

A run may touch only what its packet gives it: the context, the headroom, the
packet and a tailroom of :data:`XDP_TAILROOM` bytes after it (where
``bpf_xdp_adjust_tail`` may grow the packet), all cleared or rewritten before
each run, so nothing an earlier run stored stays readable. An
:class:`SkbRunner` program gets its ``struct __sk_buff`` (r1) and the packet,
nothing more; its legacy packet loads (LD_ABS/LD_IND) read the packet, as in
the kernel.
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeVar

from .engine import Engine, find_engine, get_engine
from .errors import ArgumentError, Closed, EbpfError, VmBusy
from .fib import fib_lookup
from .helper_table import Impl, helper_number, helpers_of
from .helpers import HelperContext
from .interpreter import TraceFn
from .kernel import KernelEnv
from .mapbase import BpfMap
from .memory import address_of
from .perf import PacketOf, with_packet
from .progtypes import (
    ETH_HLEN,
    XDP_MD,
    XDP_MD_LAYOUT,
    TcAction,
    XdpAction,
    pack_xdp_md,
    prog_type,
)
from .skb_context import (
    SKB_SIZE,
    SkbResult,
    ctx_in_fields,
    decode_skb,
    encode_fields,
    kernel_ctx_out,
    socket_fields,
)
from .skb_frame import SkbFrameHelpers
from .skb_helpers import LOOPBACK_MTU, SkbPacket, SkbRecord, packet_type
from .vm import EbpfVmMbuff, EbpfVmRaw, _VmBase
from .xdp_helpers import XDP_FRAME_RESERVED, XDP_METADATA_MAX, FibRoute, Redirect, XdpHelpers

__all__ = ["RunResult", "SkbResult", "SkbRunner", "TcAction", "XdpAction", "XdpResult",
           "XdpRunner", "csum_diff"]

MAP_32BIT = 0x40
"""mmap flag (x86-64 Linux): place the mapping in the first 2 GiB."""
CONTEXT_SIZE = 64
"""Bytes reserved for the context before the packet area."""
XDP_TAILROOM = 4096
"""Bytes after the packet an XDP run may touch (a page, as the kernel's
BPF_PROG_TEST_RUN frame at most): bpf_xdp_adjust_tail grows data_end into
them. Cleared before every run."""
"""The kernel keeps at least an Ethernet header between data and data_end."""
EINVAL = 22
BPF_XDP_ADJUST_HEAD = helper_number("bpf_xdp_adjust_head")
BPF_XDP_ADJUST_TAIL = helper_number("bpf_xdp_adjust_tail")
XDP_HELPERS = helpers_of(Impl.XDP) | helpers_of(Impl.RUNNER)
"""Helpers that only exist in an XDP context: XdpRunner registers them."""
M64 = (1 << 64) - 1
_XDP_DATA = XDP_MD_LAYOUT.fields["data"]


@dataclass(frozen=True)
class RunResult:
    """The program's r0, as a verdict of `actions` when it is one, and the
    packet after the run."""

    r0: int
    packet: bytes
    actions: type[IntEnum] = XdpAction

    @property
    def verdict(self) -> IntEnum | int:
        """r0 as a member of `actions` (XdpAction.PASS...), or the int when
        it names none."""
        try:
            return self.actions(_s32(self.r0))
        except ValueError:
            return self.r0


@dataclass(frozen=True)
class XdpResult(RunResult):
    """An XDP run's result. `packet` is what BPF_PROG_TEST_RUN returns: the
    bytes from data_meta to data_end, so the metadata (`meta_len` bytes)
    comes first. `context` is the xdp_md as the kernel hands it back
    (data and data_end counted from data_meta), `trace` the run's
    trace_printk lines (with the runner's `env`), `redirect` the target of
    an XDP_REDIRECT verdict."""

    meta_len: int = 0
    context: dict[str, int] = field(default_factory=dict)
    trace: tuple[str, ...] = ()
    redirect: Redirect | None = None

    @property
    def data(self) -> bytes:
        """The packet from data (the metadata left out)."""
        return self.packet[self.meta_len:]

    @property
    def meta(self) -> bytes:
        """The metadata bytes before data."""
        return self.packet[: self.meta_len]

    @property
    def context_raw(self) -> bytes:
        """`context` packed as the 24-byte struct xdp_md."""
        raw = bytearray(XDP_MD.size)
        fields = self.context
        pack_xdp_md(raw, 0, fields.get("data", 0), fields.get("data_end", 0),
                    fields.get("ingress_ifindex", 0), fields.get("rx_queue_index", 0), 0)
        return bytes(raw)



class _Frame:
    """One buffer below 4 GiB holding a context and a packet, reused per run."""

    def __init__(self, size: int) -> None:
        try:
            self.map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_32BIT)
        except (OSError, ValueError) as exc:
            raise EbpfError(f"cannot map packet memory below 4 GiB: {exc}") from exc
        self.view = memoryview(self.map)
        self.base = address_of(self.view)
        if self.base + size > 1 << 32:
            raise EbpfError("packet memory is not below 4 GiB on this platform")
        self._zeros: dict[int, bytes] = {}
        self._windows: dict[int, memoryview] = {}

    def load(self, start: int, data: bytes, tail: int = 0) -> int:
        """Clear the context and headroom before `start`, copy the packet to
        `start`, and clear `tail` bytes after it (within the frame). Returns
        the packet's end."""
        view, zeros = self.view, self._zeros
        end = start + len(data)
        view[:start] = zeros.get(start) or self._zero(start)
        view[start:end] = data
        if end + tail <= len(view):
            view[end : end + tail] = zeros.get(tail) or self._zero(tail)
        else:
            view[end:] = bytes(len(view) - end)
        return end

    def _zero(self, size: int) -> bytes:
        """`size` zero bytes, kept for the next runs (sizes are per runner)."""
        found = self._zeros[size] = bytes(size)
        return found

    def window(self, limit: int) -> memoryview:
        """The frame's first `limit` bytes (views kept: packet sizes repeat)."""
        found = self._windows.get(limit)
        if found is None:
            if len(self._windows) >= MAX_WINDOWS:
                self._release_windows()
            found = self._windows[limit] = self.view[:limit]
        return found

    def _release_windows(self) -> None:
        windows, self._windows = self._windows, {}
        for window in windows.values():
            with contextlib.suppress(BufferError):  # still exported: left to the GC
                window.release()

    def execute(self, vm: EbpfVmRaw, memory: memoryview, engine: Engine,
                trace: TraceFn | None = None) -> int:
        """Run `vm` with `memory` (a part of the frame) as its input: on the
        VM's reference path for the reference engine or a traced run, else in
        the code jit_compile() made."""
        if engine.reference or trace is not None:
            return vm.execute_program(memory, trace=trace)
        return vm.execute_program_jit(memory)

    def close(self) -> None:
        """Unmap the frame; when something still holds a view of it (an error's
        traceback), the mapping goes when the last view does."""
        self._release_windows()
        try:
            self.view.release()
            self.map.close()
        except BufferError:
            pass


MAX_WINDOWS = 256
"""Views of a frame kept for reuse, one per packet end (see _Frame.window)."""


_R = TypeVar("_R", bound="_Runner")
_T = TypeVar("_T")
MAX_FRAME = 1 << 30
"""The largest headroom, packet or tailroom a runner maps (1 GiB)."""


class _Runner:
    """What both runners share: close(), ``with``, a short repr. A runner owns
    its frame; it owns its VM too when it made it (from bytecode, or for a
    loaded object), and then close() also frees the VM's JIT code."""

    vm: _VmBase
    engine: str
    _engine: Engine
    max_packet: int
    _frame: _Frame
    _owns_vm: bool = False
    _closed: bool = False
    after_run: Callable[[], object] | None = None
    """Called after each run that returned (a loaded object's runners fire
    its due bpf_timers there: ebpfvm.timers)."""

    def _done(self, result: _T) -> _T:
        if self.after_run is not None:
            self.after_run()
        return result

    @staticmethod
    def _check_settings(engine: str, **sizes: int) -> None:
        """ArgumentError for an unknown engine or a negative size, before
        anything is compiled or mapped."""
        find_engine(engine)
        for argument, size in sizes.items():
            if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FRAME:
                raise ArgumentError(argument, size, f"an int from 0 to {MAX_FRAME}")

    def _use_engine(self, name: str) -> None:
        """Run on the engine `name`: compile with it unless it is the VM's
        reference path (JitUnsupported when it cannot run here)."""
        self._engine = get_engine(name)
        self.engine = name
        if not self._engine.reference:
            self.vm.jit_compile(engine=name)

    def _check_open(self) -> None:
        if self._closed:
            raise Closed(type(self).__name__)

    def close(self) -> None:
        """Release the packet memory (and the JIT code of a VM the runner
        made). Runs after it raise Closed; closing again does nothing. VmBusy
        while the program runs (a helper closing the runner): the frame stays
        mapped under the running code."""
        if self._closed:
            return
        _check_idle(self.vm, f"close the {type(self).__name__}")
        self._closed = True
        self._frame.close()
        if self._owns_vm:
            self.vm.close()

    @property
    def closed(self) -> bool:
        """Whether close() has run."""
        return self._closed

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return (f"<{type(self).__name__} engine={self.engine} "
                f"max_packet={self.max_packet}{state} vm={self.vm!r}>")


def _check_idle(vm: Any, what: str) -> None:
    """VmBusy when `vm` is in the middle of a run (a helper closing or
    re-running the runner that runs it)."""
    if vm._busy.on:
        raise VmBusy(f"cannot {what} while its program is running")


class XdpRunner(_Runner):
    """Run an XDP program (a VM holding it, or its bytecode) on packets.

    `engine` names a registered engine (``ebpfvm.engines()``: ``"interp"``,
    ``"jit"``, ``"jit-unchecked"``). Each run may
    touch the context, the headroom, the packet and `tailroom` bytes after it
    (within `max_packet`), all cleared or rewritten before the run.

    The XDP helpers (ebpfvm.xdp_helpers) see `maps` (the redirect maps
    bpf_redirect_map may name), `devices` (ifindex -> MTU; default: loopback,
    ifindex 1, MTU 65536), `routes` (bpf_fib_lookup's table of
    :class:`~ebpfvm.xdp_helpers.FibRoute`) and `forwarding` (whether the
    input device forwards; default: when routes are given). With `env` (the VM's KernelEnv),
    each result carries the run's trace_printk lines."""

    vm: EbpfVmRaw

    def __init__(self, program: EbpfVmRaw | bytes, *, engine: str = "interp",
                 headroom: int = 256, max_packet: int = 65536, ingress_ifindex: int = 1,
                 rx_queue_index: int = 0, tailroom: int = XDP_TAILROOM,
                 maps: Iterable[BpfMap] = (), devices: Mapping[int, int] | None = None,
                 routes: Iterable[FibRoute] = (), forwarding: bool | None = None,
                 env: KernelEnv | None = None) -> None:
        self._check_settings(engine, headroom=headroom, max_packet=max_packet,
                             tailroom=tailroom)
        self.vm = program if isinstance(program, EbpfVmRaw) else EbpfVmRaw(program)
        self._owns_vm = self.vm is not program
        self._use_engine(engine)
        self.headroom = headroom
        self.max_packet = max_packet
        self.tailroom = tailroom
        self.ingress_ifindex = ingress_ifindex
        self.rx_queue_index = rx_queue_index
        self.env = env
        self._frame = _Frame(CONTEXT_SIZE + headroom + max_packet)
        self.base = self._frame.base
        self.helpers = XdpHelpers(maps, devices, routes, forwarding)
        self.helpers.hard_start = self.base + CONTEXT_SIZE
        for number, (name, fn) in self.helpers.functions().items():
            self.vm.register_helper(number, fn, context=True, name=name)
        _perf_with_packet(self.vm, self._packet_of)

    def _packet_of(self, ctx: HelperContext, xdp: int) -> tuple[int, int]:
        """(address, length) of the packet from data (bpf_perf_event_output)."""
        data, data_end, _meta = self.helpers.bounds(ctx, xdp)
        return data, max(data_end - data, 0)

    def run(self, packet: Any, *, ctx: Any = None, trace: TraceFn | None = None) -> XdpResult:
        """Run once; the context is rebuilt for every packet. `ctx` is a
        24-byte struct xdp_md as BPF_PROG_TEST_RUN takes it: its ``data`` N
        makes the first N bytes of `packet` metadata, and it sets
        ingress_ifindex and rx_queue_index (ArgumentError for what the kernel
        refuses). `trace` (the interpreter's per-instruction callback) makes
        this run interpreted."""
        if self.vm._busy.on:
            _check_idle(self.vm, "run the XdpRunner again")
        if self._closed:
            raise Closed("XdpRunner")
        data = bytes(packet)
        if len(data) > self.max_packet:
            raise ArgumentError("packet length", len(data),
                                f"at most max_packet ({self.max_packet})")
        metalen, ingress, queue = self._context_in(ctx, len(data))
        start = CONTEXT_SIZE + self.headroom
        frame = self._frame
        view = frame.view
        end = frame.load(start - metalen, data, self.tailroom)
        limit = min(end + self.tailroom, len(view))
        self.helpers.limit = self.base + limit
        self.helpers.redirect = None
        pack_xdp_md(view, 0, self.base + start, self.base + end, ingress, queue,
                    self.base + start - metalen)
        lines = self._trace_mark()
        r0 = frame.execute(self.vm, frame.window(limit), self._engine, trace)
        new_start, new_end, new_meta = XDP_MD.unpack_from(view, 0)[:3]
        low, high, meta = new_start - self.base, new_end - self.base, new_meta - self.base
        if not CONTEXT_SIZE <= meta <= low <= high <= limit:
            raise EbpfError("the program left data/data_end outside its packet memory")
        context = {"data": low - meta, "data_end": high - meta, "data_meta": 0,
                   "ingress_ifindex": ingress, "rx_queue_index": queue, "egress_ifindex": 0}
        redirect = self.helpers.redirect if r0 & 0xFFFF_FFFF == XdpAction.REDIRECT else None
        return self._done(XdpResult(r0, bytes(view[meta:high]), XdpAction, low - meta, context,
                                    self._trace_since(lines), redirect))

    def _context_in(self, ctx: Any, size: int) -> tuple[int, int, int]:
        """(metadata length, ingress_ifindex, rx_queue_index) from a ctx_in
        struct xdp_md, checked as BPF_PROG_TEST_RUN checks it."""
        if ctx is None:
            return 0, self.ingress_ifindex, self.rx_queue_index
        raw = bytes(ctx)
        if len(raw) != XDP_MD.size:
            raise ArgumentError("ctx", len(raw), f"a {XDP_MD.size}-byte struct xdp_md")
        data, data_end, meta, ingress, queue, egress = XDP_MD.unpack(raw)
        if meta or egress or data_end != size or data > data_end:
            raise ArgumentError("ctx", raw.hex(), "data_meta and egress_ifindex 0, data_end "
                                "the packet length, data at most data_end")
        most = max(min(XDP_METADATA_MAX, self.headroom - XDP_FRAME_RESERVED), 0)
        if data % 4 or data > most:
            raise ArgumentError("ctx data", data, "metadata of a multiple of 4 bytes, at "
                                f"most {most}")
        if size - data < ETH_HLEN:
            raise ArgumentError("ctx data", data, "at least an Ethernet header after the "
                                "metadata")
        if not ingress and queue:
            raise ArgumentError("ctx rx_queue_index", queue, "0 without an ingress_ifindex")
        return data, ingress, queue

    def _trace_mark(self) -> int:
        env = self.env
        return 0 if env is None else len(env.lines) + env.dropped_lines

    def _trace_since(self, mark: int) -> tuple[str, ...]:
        """The trace_printk lines since `mark` (those `env` still keeps)."""
        env = self.env
        if env is None:
            return ()
        count = len(env.lines) + env.dropped_lines - mark
        return tuple(env.lines[len(env.lines) - min(count, len(env.lines)):]) if count else ()


def _s32(value: int) -> int:
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value >> 31 else value


SKB_HELPERS = helpers_of(Impl.SKB) | helpers_of(Impl.RUNNER)
"""Helpers that need an __sk_buff: SkbRunner registers them."""


def _csum_add(total: int, value: int) -> int:
    """Ones'-complement 32-bit addition with end-around carry."""
    total += value
    return (total & 0xFFFF_FFFF) + (total >> 32)


def _csum_fold(total: int) -> int:
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return total & 0xFFFF


def csum_diff(removed: bytes, added: bytes, seed: int) -> int:
    """bpf_csum_diff: the ones'-complement sum of `added` minus `removed`, plus
    `seed`, folded to 16 bits as the kernel returns it since Linux 6.13 (sizes
    multiples of 4). Pulling data alone (`added` empty) complements the sum of
    `removed` against the complemented seed, so removing zeros gives 0, not 0xffff."""
    def words(data: bytes) -> list[int]:
        return [int.from_bytes(data[at : at + 4], "little") for at in range(0, len(data), 4)]
    if removed and not added:
        total = ~seed & 0xFFFF_FFFF
        for word in words(removed):
            total = _csum_add(total, word)
        return _csum_fold(~total & 0xFFFF_FFFF)
    total = seed & 0xFFFF_FFFF
    for word in words(removed):
        total = _csum_add(total, ~word & 0xFFFF_FFFF)
    for word in words(added):
        total = _csum_add(total, word)
    return _csum_fold(total)


def _mbuff_vm(program: EbpfVmRaw | EbpfVmMbuff | bytes) -> EbpfVmMbuff:
    """The EbpfVmMbuff an SkbRunner runs: `program` itself, a new one for
    bytecode, or for an EbpfVmRaw a new one with its program, verifier,
    helpers, allowed memory and budget (the given VM is left as it was)."""
    if isinstance(program, EbpfVmMbuff):
        return program
    if not isinstance(program, EbpfVmRaw):
        return EbpfVmMbuff(program)
    if program.program is None:
        raise ValueError("the VM has no program: call set_program() first")
    vm = EbpfVmMbuff(budget=program.budget)
    vm.set_verifier(program._verifier)
    vm.set_program(program.program)
    vm._helpers = dict(program._helpers)
    vm._before_first_run = program._before_first_run
    tail_calls = getattr(program, "_tail_calls", None)
    if tail_calls is not None:  # a VM of a loaded object: tail calls from the new VM
        tail_calls.copy_to(vm)
    for region in program._allowed_buffers:
        vm.register_allowed_memory(region.view, writable=region.writable)
    for start, size, writable in program._allowed_runs:
        vm.register_allowed_memory(range(start, start + size), writable=writable)
    return vm


SKB_HEADROOM = 256
"""Bytes before the packet that bpf_skb_change_head, bpf_skb_vlan_push...
may grow into (more moves the packet up)."""
SKB_TAILROOM = 4096
"""Bytes after the packet that growing helpers may use besides max_packet."""
LOOPBACK_IFINDEX = 1
SOCKET_VIEW = frozenset({"cgroup_skb"})
"""Program types that read the test run's socket in the __sk_buff (family,
addresses: ebpfvm.skb_context.socket_fields); the others read zeros."""


class SkbRunner(_Runner):
    """Run a socket-filter, tc or cgroup_skb program on packets with a real
    ``__sk_buff``, as BPF_PROG_TEST_RUN does.

    `prog_type` ("sched_cls", "sched_act", "socket_filter", "cgroup_skb"...:
    ebpfvm.progtypes) says where the packet starts: a tc program's data is
    the frame's Ethernet header; a socket filter's and a cgroup_skb's is the
    network header (frame offset 14, len = frame length - 14), and r0 is the
    bytes kept. Fields (mark, priority, cb...) come from the keyword
    arguments of the constructor, per run from :meth:`run` or its `ctx` (a
    192-byte __sk_buff as BPF_PROG_TEST_RUN takes it); len, protocol, data
    and data_end from the packet. `engine` as for :class:`XdpRunner`.

    The program runs in an :class:`~ebpfvm.vm.EbpfVmMbuff` (``self.vm``):
    r1 is the ``__sk_buff`` and the input memory is the packet from data, so
    legacy LD_ABS/LD_IND loads read it from data, as in the kernel. `program`
    may be that VM, bytecode, or an EbpfVmRaw, whose program, helpers,
    allowed memory and budget are copied into a new EbpfVmMbuff (helpers
    registered on the EbpfVmRaw later do not reach it; register them on
    ``self.vm``). `mtus` maps the ifindexes bpf_check_mtu knows to their MTU
    (default: the test run's loopback device, 1, MTU 65536), and with
    `routes` and `forwarding` (as for :class:`XdpRunner`) they are
    bpf_fib_lookup's table; `env` is the
    KernelEnv whose trace_printk lines each result carries (default: the
    one of the VM's bpf_trace_printk)."""

    vm: EbpfVmMbuff

    def __init__(self, program: EbpfVmRaw | EbpfVmMbuff | bytes, *, engine: str = "interp",
                 max_packet: int = 65536, prog_type: str = "sched_cls",
                 mtus: dict[int, int] | None = None, socket_cookie: int = 1,
                 env: Any = None, routes: Iterable[FibRoute] = (),
                 forwarding: bool | None = None, **fields: Any) -> None:
        self._check_settings(engine, max_packet=max_packet)
        self.prog_type = _skb_prog_type(prog_type)
        self.vm = _mbuff_vm(program)
        self._owns_vm = self.vm is not program
        self._use_engine(engine)
        self.max_packet = max_packet
        self.fields = fields
        self.mtus = dict(mtus) if mtus is not None else {LOOPBACK_IFINDEX: LOOPBACK_MTU}
        self.socket_cookie = socket_cookie
        self.env = env if env is not None else _trace_env(self.vm)
        self._low = SKB_SIZE + CONTEXT_SIZE
        self._high = self._low + SKB_HEADROOM + max_packet + SKB_TAILROOM
        self._frame = _Frame(self._high)
        self.base = self._frame.base
        self._packet = SkbPacket(self._frame.view, self.base, self._low, self._high)
        self._helpers = SkbFrameHelpers(self._packet, self._frame.view[:SKB_SIZE], self.mtus,
                                        socket_cookie)
        self.routes = tuple(routes)  # helpers3: bpf_fib_lookup's table, as XdpRunner's
        self.forwarding = bool(self.routes) if forwarding is None else forwarding
        table: dict[str, Callable[..., int]] = {
            **self._helpers.functions(), "bpf_csum_diff": XdpHelpers.csum_diff,
            "bpf_fib_lookup": self._fib_lookup}
        for name, fn in table.items():
            self.vm.register_helper(helper_number(name), fn, context=True, name=name)
        _perf_with_packet(self.vm, self._packet_of)

    def _fib_lookup(self, ctx: HelperContext, _skb: int, params: int, plen: int, flags: int,
                    *_rest: int) -> int:
        """bpf_fib_lookup (tc's: the packet's length against the output
        device unless tot_len is given) over `routes`, `mtus` and `forwarding`."""
        return fib_lookup(ctx, params, plen, flags, self.routes, self.mtus, self.forwarding,
                          self._packet.length + self._packet.mac)

    def _packet_of(self, _ctx: HelperContext, _skb: int) -> tuple[int, int]:
        """(address, length) of the packet from data (bpf_perf_event_output)."""
        packet = self._packet
        return packet.base + packet.data, packet.length

    def run(self, packet: Any, *, trace: TraceFn | None = None, ctx: Any = None,
            **fields: Any) -> SkbResult:
        """Run once with the packet, the fields of `ctx` (a 192-byte
        __sk_buff, checked as BPF_PROG_TEST_RUN checks it) and these
        __sk_buff fields (and `trace`, as for XdpRunner.run)."""
        _check_idle(self.vm, "run the SkbRunner again")
        self._check_open()
        data = bytes(packet)
        if len(data) > self.max_packet:
            raise ArgumentError("packet length", len(data),
                                f"at most max_packet ({self.max_packet})")
        mac = self.prog_type.packet_offset
        if len(data) < mac:
            raise ArgumentError("packet length", len(data), f"at least {mac} bytes")
        length = len(data) - mac
        values = {"ifindex": LOOPBACK_IFINDEX, "wire_len": length, **self.fields,
                  **(ctx_in_fields(ctx, length) if ctx is not None else {}), **fields}
        start = self._low + SKB_HEADROOM
        frame, pkt = self._frame, self._packet
        end = frame.load(start, data, SKB_TAILROOM)
        pkt.data, pkt.end, pkt.mac = start + mac, end, mac
        pkt.protocol = int.from_bytes(data[12:14], "big") if len(data) >= ETH_HLEN else 0
        if "protocol" in values:  # network order, as the __sk_buff holds it
            pkt.protocol = int.from_bytes(int(values.pop("protocol") & 0xFFFF).to_bytes(
                2, "little"), "big")
        pkt.pkt_type = int(values.pop("pkt_type", packet_type(data)))
        pkt.vlan = None
        helpers = self._helpers
        helpers.record, helpers.encapsulated = SkbRecord(), False
        skb = frame.view[:SKB_SIZE]
        if self.prog_type.name in SOCKET_VIEW:
            values = {**socket_fields(pkt.protocol, data[mac:]), **values}
        encode_fields(skb, values)
        pkt.sync(skb)
        lines_before = self._trace_count()
        packet_view = frame.view[pkt.data : pkt.end]
        pkt.reach = (pkt.data, pkt.end)
        mbuff = frame.view[:SKB_SIZE]
        if self._engine.reference or trace is not None:
            r0 = self.vm.execute_program(packet_view, mbuff, trace=trace)
        else:
            r0 = self.vm.execute_program_jit(packet_view, mbuff)
        return self._done(self._result(r0, lines_before))

    def _result(self, r0: int, lines_before: int) -> SkbResult:
        pkt, record = self._packet, self._helpers.record
        fields = decode_skb(self._frame.view[:SKB_SIZE])
        new_lines = self._trace_count() - lines_before
        lines = tuple(self.env.lines[-new_lines:]) if self.env is not None and new_lines else ()
        return SkbResult(r0, bytes(self._frame.view[pkt.data - pkt.mac : pkt.end]),
                         self.prog_type.verdicts, fields, kernel_ctx_out(fields), lines,
                         record.redirect, tuple(record.clones), record.tunnel)

    def _trace_count(self) -> int:
        env = self.env
        return 0 if env is None else len(env.lines) + env.dropped_lines



def _perf_with_packet(vm: _VmBase, packet: PacketOf) -> None:
    """Give the VM's bpf_perf_event_output, if it has one, the runner's packet."""
    number = helper_number("bpf_perf_event_output")
    found = vm._helpers.get(number)
    made = with_packet(found, packet) if found is not None else None
    if made is not None:
        vm.register_helper(number, made)


def _skb_prog_type(name: str) -> Any:
    """The registered program type `name`, which must hand an __sk_buff."""
    try:
        found = prog_type(name)
    except KeyError:
        found = None
    if found is None or found.context != "skb":
        raise ArgumentError("prog_type", name, "a program type with an __sk_buff context "
                            "(sched_cls, sched_act, socket_filter, cgroup_skb...)")
    return found


def _trace_env(vm: _VmBase) -> Any:
    """The KernelEnv behind the VM's bpf_trace_printk, if it has one."""
    helper = vm._helpers.get(helper_number("bpf_trace_printk"))
    table = getattr(getattr(helper, "fn", None), "__self__", None)
    return getattr(table, "env", None)
