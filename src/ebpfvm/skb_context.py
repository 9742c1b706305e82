"""The ``struct __sk_buff`` of an SkbRunner run: the context a run starts
from (``ctx_in`` as BPF_PROG_TEST_RUN takes it, and keyword fields), the
fields decoded by name after the run, and :class:`SkbResult`.

The context is the program's r1 (RFC 9669 section 4.3.1: helper and program
arguments in r1-r5); its layout is linux/bpf.h's, as
:data:`~ebpfvm.progtypes.SKB_FIELDS` records it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from .errors import ArgumentError
from .progtypes import SKB_ARRAYS, SKB_FIELDS, SKB_FIELDS64, SKB_LAYOUT, Verdicts
from .skb_helpers import Redirect, TunnelKey

__all__ = ["CTX_IN_FIELDS", "SKB_SIZE", "SkbResult", "ctx_in_fields", "decode_skb",
           "encode_fields", "kernel_ctx_out", "socket_fields"]

SKB_SIZE = SKB_LAYOUT.size
GSO_MAX_SEGS = 65535
GSO_LEGACY_MAX_SIZE = 65536
CTX_IN_FIELDS = ("mark", "priority", "ingress_ifindex", "ifindex", "cb", "tstamp", "wire_len",
                 "gso_segs", "gso_size", "hwtstamp")
"""What BPF_PROG_TEST_RUN takes from a ctx_in __sk_buff; every other byte
must be zero. They are also what its ctx_out gives back."""


def _spans() -> list[tuple[int, int]]:
    spans = []
    for name in CTX_IN_FIELDS:
        if name in SKB_ARRAYS:
            offset, count = SKB_ARRAYS[name]
            spans.append((offset, offset + 4 * count))
        elif name in SKB_FIELDS64:
            spans.append((SKB_FIELDS64[name], SKB_FIELDS64[name] + 8))
        else:
            spans.append((SKB_FIELDS[name], SKB_FIELDS[name] + 4))
    return spans


_CTX_IN_SPANS = _spans()


def decode_skb(raw: bytes | memoryview) -> dict[str, Any]:
    """Every field of a __sk_buff by name: ints, and tuples for cb and the
    IPv6 addresses."""
    fields: dict[str, Any] = {}
    for name, offset in SKB_FIELDS.items():
        fields[name] = struct.unpack_from("<I", raw, offset)[0]
    fields["tstamp_type"] &= 0xFF
    for name, offset in SKB_FIELDS64.items():
        fields[name] = struct.unpack_from("<Q", raw, offset)[0]
    for name, (offset, count) in SKB_ARRAYS.items():
        fields[name] = struct.unpack_from(f"<{count}I", raw, offset)
    return fields


def ctx_in_fields(ctx: bytes | bytearray | memoryview, frame_len: int) -> dict[str, Any]:
    """The fields of a ctx_in __sk_buff, checked as BPF_PROG_TEST_RUN checks
    them (ArgumentError where the kernel says EINVAL)."""
    raw = bytes(ctx)
    if len(raw) != SKB_SIZE:
        raise ArgumentError("ctx", len(raw), f"a {SKB_SIZE}-byte struct __sk_buff")
    allowed = bytearray(SKB_SIZE)
    for start, end in _CTX_IN_SPANS:
        allowed[start:end] = b"\xff" * (end - start)
    stray = [at for at in range(SKB_SIZE) if raw[at] and not allowed[at]]
    if stray:
        raise ArgumentError("ctx", f"byte {stray[0]}",
                            f"zero: BPF_PROG_TEST_RUN sets only {', '.join(CTX_IN_FIELDS)}")
    decoded = decode_skb(raw)
    fields = {name: decoded[name] for name in CTX_IN_FIELDS}
    if fields["wire_len"] == 0:
        fields["wire_len"] = frame_len
    elif not frame_len <= fields["wire_len"] <= GSO_LEGACY_MAX_SIZE:
        raise ArgumentError("ctx wire_len", fields["wire_len"],
                            f"from the frame length ({frame_len}) to {GSO_LEGACY_MAX_SIZE}")
    if fields["gso_segs"] > GSO_MAX_SEGS:
        raise ArgumentError("ctx gso_segs", fields["gso_segs"], f"at most {GSO_MAX_SEGS}")
    if fields["ifindex"] == 0:
        fields["ifindex"] = 1
    return fields


def encode_fields(view: memoryview, values: dict[str, Any]) -> None:
    """Write fields by name into a __sk_buff (ArgumentError for a name it lacks)."""
    for name, value in values.items():
        if name in SKB_FIELDS:
            struct.pack_into("<I", view, SKB_FIELDS[name], int(value) & 0xFFFF_FFFF)
        elif name in SKB_FIELDS64:
            struct.pack_into("<Q", view, SKB_FIELDS64[name], int(value) & (1 << 64) - 1)
        elif name in SKB_ARRAYS:
            offset, count = SKB_ARRAYS[name]
            words = tuple(value)
            if len(words) > count:
                raise ArgumentError(name, words, f"at most {count} __sk_buff {name} words")
            for index, word in enumerate(words):
                struct.pack_into("<I", view, offset + 4 * index, int(word) & 0xFFFF_FFFF)
        else:
            names = sorted([*SKB_FIELDS, *SKB_FIELDS64, *SKB_ARRAYS])
            raise ArgumentError("__sk_buff field", name, f"one of {', '.join(names)}")


AF_INET, AF_INET6 = 2, 10


def socket_fields(protocol: int, network: bytes) -> dict[str, Any]:
    """The socket a test run gives the packet, as the __sk_buff shows it:
    the family from the ethertype, and the packet's addresses as the
    socket's (remote = destination, local = source) when the header fits."""
    if protocol == 0x0800:
        fields: dict[str, Any] = {"family": AF_INET}
        if len(network) >= 20:
            fields["remote_ip4"] = int.from_bytes(network[16:20], "little")
            fields["local_ip4"] = int.from_bytes(network[12:16], "little")
        return fields
    if protocol == 0x86DD:
        fields = {"family": AF_INET6}
        if len(network) >= 40:
            fields["remote_ip6"] = struct.unpack("<4I", network[24:40])
            fields["local_ip6"] = struct.unpack("<4I", network[8:24])
        return fields
    return {}


def kernel_ctx_out(fields: dict[str, Any]) -> bytes:
    """The ctx_out BPF_PROG_TEST_RUN returns: the CTX_IN_FIELDS of the
    context after the run, zeros elsewhere."""
    out = bytearray(SKB_SIZE)
    encode_fields(memoryview(out), {name: fields[name] for name in CTX_IN_FIELDS})
    return bytes(out)


@dataclass(frozen=True)
class SkbResult:
    """One SkbRunner run: r0, the packet after the run, the __sk_buff as the
    program left it (`ctx`, by field name; `ctx_out`, as BPF_PROG_TEST_RUN's
    ctx_out), the run's trace_printk lines and what the helpers recorded."""

    r0: int
    packet: bytes
    verdicts: Verdicts
    ctx: dict[str, Any] = field(default_factory=dict)
    ctx_out: bytes = b""
    trace: tuple[str, ...] = ()
    redirect: Redirect | None = None
    """The target of bpf_redirect/_peer/_neigh (a test run performs none)."""
    clones: tuple[Redirect, ...] = ()
    """bpf_clone_redirect's copies (recorded, not sent)."""
    tunnel: TunnelKey | None = None
    """The tunnel metadata bpf_skb_set_tunnel_key (and _opt) set."""

    @property
    def actions(self) -> type[IntEnum] | None:
        """The verdict enum of the program type (None: r0 is bytes kept)."""
        return self.verdicts.actions

    @property
    def verdict(self) -> IntEnum | int:
        """r0 as a verdict (TcAction.OK...), or the int when it names none or
        the program type's r0 is the bytes kept."""
        actions = self.verdicts.actions
        if actions is None:
            return self.r0
        value = self.r0 & 0xFFFF_FFFF
        try:
            return actions(value - (1 << 32) if value >> 31 else value)
        except ValueError:
            return self.r0

    @property
    def verdict_name(self) -> str:
        """``TC_ACT_OK``..., or r0 as a number."""
        return self.verdicts.name(self.r0)

    @property
    def mark(self) -> int:
        """ctx["mark"] after the run."""
        return int(self.ctx["mark"])

    @property
    def priority(self) -> int:
        """ctx["priority"] after the run."""
        return int(self.ctx["priority"])

    @property
    def cb(self) -> tuple[int, ...]:
        """ctx["cb"] after the run."""
        return tuple(self.ctx["cb"])
