"""Program contexts: run XDP programs on packets as the kernel would.

An XDP program reads ``struct xdp_md``, whose ``data`` and ``data_end`` are
32-bit fields it turns into pointers. :class:`XdpRunner` therefore keeps one
buffer below 4 GiB (``MAP_32BIT``) holding the context, headroom and the
packet, so the program's own loads produce real addresses; no instruction is
rewritten. The packet as the program left it is returned with the verdict.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .errors import EbpfError
from .helpers import HelperContext
from .memory import address_of
from .vm import EbpfVmRaw

__all__ = ["TcAction", "XdpAction", "XdpResult", "XdpRunner"]

MAP_32BIT = 0x40
"""mmap flag (x86-64 Linux): place the mapping in the first 2 GiB."""
XDP_MD = struct.Struct("<6I")
"""struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
egress_ifindex (all u32)."""
CONTEXT_SIZE = 64
"""Bytes reserved for the context before the packet area."""
ETH_HLEN = 14
"""The kernel keeps at least an Ethernet header between data and data_end."""
EINVAL = 22
BPF_XDP_ADJUST_HEAD = 44
BPF_XDP_ADJUST_TAIL = 65
XDP_HELPERS = frozenset({BPF_XDP_ADJUST_HEAD, BPF_XDP_ADJUST_TAIL})
"""Helpers that only exist in an XDP context: XdpRunner registers them."""
M64 = (1 << 64) - 1


class XdpAction(IntEnum):
    """XDP verdicts (enum xdp_action)."""

    ABORTED = 0
    DROP = 1
    PASS = 2
    TX = 3
    REDIRECT = 4


class TcAction(IntEnum):
    """tc verdicts (TC_ACT_*)."""

    UNSPEC = -1
    OK = 0
    RECLASSIFY = 1
    SHOT = 2
    PIPE = 3
    STOLEN = 4
    QUEUED = 5
    REPEAT = 6
    REDIRECT = 7


@dataclass(frozen=True)
class XdpResult:
    """The program's r0, as a verdict when it is one, and the packet after the run."""

    r0: int
    packet: bytes

    @property
    def verdict(self) -> XdpAction | int:
        try:
            return XdpAction(self.r0)
        except ValueError:
            return self.r0


class XdpRunner:
    """Run an XDP program (a VM holding it, or its bytecode) on packets.

    `engine` is ``"interp"``, ``"jit"`` or ``"jit-unchecked"``."""

    def __init__(self, program: EbpfVmRaw | bytes, *, engine: str = "interp",
                 headroom: int = 256, max_packet: int = 65536, ingress_ifindex: int = 1,
                 rx_queue_index: int = 0) -> None:
        self.vm = program if isinstance(program, EbpfVmRaw) else EbpfVmRaw(program)
        self.engine = engine
        if engine != "interp":
            self.vm.jit_compile(unchecked=engine == "jit-unchecked")
        self.headroom = headroom
        self.max_packet = max_packet
        self.ingress_ifindex = ingress_ifindex
        self.rx_queue_index = rx_queue_index
        size = CONTEXT_SIZE + headroom + max_packet
        try:
            self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_32BIT)
        except (OSError, ValueError) as exc:
            raise EbpfError(f"cannot map packet memory below 4 GiB: {exc}") from exc
        self._view = memoryview(self._map)
        self.base = address_of(self._view)
        if self.base + size > 1 << 32:
            raise EbpfError("packet memory is not below 4 GiB on this platform")
        self._dirty = 0
        self.vm.register_helper(BPF_XDP_ADJUST_HEAD, self._adjust_head, context=True,
                                name="bpf_xdp_adjust_head")
        self.vm.register_helper(BPF_XDP_ADJUST_TAIL, self._adjust_tail, context=True,
                                name="bpf_xdp_adjust_tail")

    def _bounds(self, ctx: HelperContext, xdp: int) -> tuple[int, int]:
        data, data_end = struct.unpack("<II", ctx.read(xdp, 8))
        return data, data_end

    def _adjust_head(self, ctx: HelperContext, xdp: int, delta: int, *_rest: int) -> int:
        """bpf_xdp_adjust_head: move data by `delta` (s32) within the headroom."""
        data, data_end = self._bounds(ctx, xdp)
        new = data + _s32(delta)
        if new < self.base + CONTEXT_SIZE or new > data_end - ETH_HLEN:
            return -EINVAL & M64
        ctx.write(xdp, struct.pack("<I", new))
        ctx.write(xdp + 8, struct.pack("<I", new))  # data_meta follows data (no metadata)
        return 0

    def _adjust_tail(self, ctx: HelperContext, xdp: int, delta: int, *_rest: int) -> int:
        """bpf_xdp_adjust_tail: move data_end by `delta` (s32) within the frame."""
        data, data_end = self._bounds(ctx, xdp)
        new = data_end + _s32(delta)
        if new > self.base + len(self._view) or new - data < ETH_HLEN:
            return -EINVAL & M64
        ctx.write(xdp + 4, struct.pack("<I", new))
        self._dirty = max(self._dirty, new - self.base)
        return 0

    def run(self, packet: Any) -> XdpResult:
        """Run once; the context is rebuilt for every packet."""
        data = bytes(packet)
        if len(data) > self.max_packet:
            raise ValueError(f"packet of {len(data)} bytes exceeds max_packet {self.max_packet}")
        start = CONTEXT_SIZE + self.headroom
        end = start + len(data)
        view = self._view
        view[:start] = bytes(start)
        XDP_MD.pack_into(view, 0, self.base + start, self.base + end, self.base + start,
                         self.ingress_ifindex, self.rx_queue_index, 0)
        view[start:end] = data
        if self._dirty > end:  # nothing of an earlier packet stays readable
            view[end : self._dirty] = bytes(self._dirty - end)
        self._dirty = end
        region = view  # growing at the tail (adjust_tail) stays inside the frame
        if self.engine == "interp":
            r0 = self.vm.execute_program(region)
        else:
            r0 = self.vm.execute_program_jit(region)
        new_start, new_end = XDP_MD.unpack_from(view, 0)[:2]
        low, high = new_start - self.base, new_end - self.base
        if not CONTEXT_SIZE <= low <= high <= len(view):
            raise EbpfError("the program left data/data_end outside its packet memory")
        return XdpResult(r0, bytes(view[low:high]))

    def close(self) -> None:
        """Release the packet memory."""
        self._view.release()
        self._map.close()


def _s32(value: int) -> int:
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value >> 31 else value
