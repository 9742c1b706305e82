"""The XDP helpers and contexts against the Linux kernel: each assembled
program runs through BPF_PROG_TEST_RUN (with a struct xdp_md ctx_in where the
case gives one) and in every engine of ours; return values, output packets and
the context handed back must agree. Skips with the reason where bpf() is
unavailable."""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator

import pytest

import kernel_oracle as kernel
from ebpfvm import ArgumentError, EbpfVmRaw, assemble
from ebpfvm.contexts import XdpRunner
from ebpfvm.devmaps import RedirectMap
from ebpfvm.mapbase import MapType
from ebpfvm.xdp_helpers import FibRoute

UNAVAILABLE = kernel.available()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"bpf(): {UNAVAILABLE}")

HANDLE = 0x1234
"""The lddw immediate our redirect map answers to (the kernel gets its fd)."""
PACKET = bytes(range(64))
EINVAL, ENODEV = -22, -19


def _kernel_run(code: bytes, packet: bytes, ctx: bytes | None = None,
                map_fd: int | None = None) -> tuple[int, bytes, bytes]:
    """(retval, packet out, ctx out) of one BPF_PROG_TEST_RUN in the kernel."""
    if map_fd is not None:
        code = kernel.kernel_code(code, ((0, "map", "m", 0),), {"m": map_fd}, {})
    fd = kernel.prog_load(code)
    try:
        data_in = ctypes.create_string_buffer(packet, len(packet))
        data_out = ctypes.create_string_buffer(8192)
        ctx_in = ctypes.create_string_buffer(ctx or b"\0", max(len(ctx or b""), 1))
        ctx_out = ctypes.create_string_buffer(24)
        attr = ctypes.create_string_buffer(160)
        struct.pack_into("<IIIIQQII", attr, 0, fd, 0, len(packet), len(data_out),
                         ctypes.addressof(data_in), ctypes.addressof(data_out), 1, 0)
        if ctx is not None:
            struct.pack_into("<IIQQ", attr, 40, len(ctx), len(ctx_out),
                             ctypes.addressof(ctx_in), ctypes.addressof(ctx_out))
        kernel.bpf(kernel.BPF_PROG_TEST_RUN, attr)
        retval, size_out = struct.unpack_from("<I4xI", attr, 4)
        ctx_size = struct.unpack_from("<I", attr, 44)[0] if ctx is not None else 0
        return retval, data_out.raw[:size_out], ctx_out.raw[:ctx_size]
    finally:
        os.close(fd)


def _ours(code: bytes, packet: bytes, engine: str, ctx: bytes | None = None,
          maps: tuple[RedirectMap, ...] = (), **kwargs: object) -> tuple[int, bytes, bytes]:
    with XdpRunner(EbpfVmRaw(code), engine=engine, maps=maps, **kwargs) as runner:  # type: ignore[arg-type]
        result = runner.run(packet, ctx=ctx)
        return result.r0 & 0xFFFF_FFFF, result.packet, result.context_raw if ctx else b""


def _agree(code: bytes, packet: bytes, engine: str, ctx: bytes | None = None) -> int:
    """Run in the kernel and here; assert both agree; return the retval."""
    expected = _kernel_run(code, packet, ctx)
    assert _ours(code, packet, engine, ctx) == expected
    return expected[0]


# -- bpf_xdp_adjust_meta, data_meta ---------------------------------------------------

META_WRITE = """
mov r6, r1
mov r2, {delta}
call 54
mov r7, r0
jne r0, 0, +6
ldxw r2, [r6+8]
ldxw r3, [r6+0]
mov r4, r2
add r4, 4
jgt r4, r3, +1
stw [r2+0], 0x11223344
mov r0, r7
exit
"""


@pytest.mark.parametrize("delta", [-4, -8, -32, -36, -2, -6, 4, 0, -216, -220])
def test_adjust_meta_matches_the_kernel(engine: str, delta: int) -> None:
    """The metadata moves within the headroom (less struct xdp_frame), by
    multiples of 4 up to 32 bytes; packet_out starts with it."""
    _agree(assemble(META_WRITE.format(delta=delta)), PACKET, engine)


ADJUST_HEAD_WITH_META = """
mov r6, r1
mov r2, -8
call 54
mov r1, r6
mov r2, {delta}
call 44
exit
"""


@pytest.mark.parametrize("delta", [-4, 4, -200, -208, -209, -216, 50, 51])
def test_adjust_head_carries_the_metadata(engine: str, delta: int) -> None:
    """bpf_xdp_adjust_head moves data and the metadata before it, and keeps
    both after the reserved struct xdp_frame."""
    _agree(assemble(ADJUST_HEAD_WITH_META.format(delta=delta)), PACKET, engine)


@pytest.mark.parametrize("delta", [-216, -217, -256, 50, 51])
def test_adjust_head_limits(engine: str, delta: int) -> None:
    _agree(assemble(f"mov r2, {delta}\ncall 44\nexit"), PACKET, engine)


# -- bpf_xdp_adjust_tail, bpf_xdp_get_buff_len ----------------------------------------

@pytest.mark.parametrize(("size", "delta"), [(64, 3456), (64, 3457), (64, -50), (64, -51),
                                             (1000, 2520), (1000, 2521), (3520, 1)])
def test_adjust_tail_grows_within_the_page(engine: str, size: int, delta: int) -> None:
    """Growth stops at 4096 - 256 - 320 bytes of packet; the new bytes are zeros;
    bpf_xdp_get_buff_len gives the new length."""
    code = assemble(f"mov r6, r1\nmov r2, {delta}\ncall 65\nmov r7, r0\nmov r1, r6\n"
                    "call 188\nlsh r7, 16\nor r0, r7\nexit")
    _agree(code, bytes(range(256)) * (size // 256) + bytes(size % 256), engine)


# -- bpf_xdp_load_bytes / bpf_xdp_store_bytes ---------------------------------------

LOAD_STORE = """
mov r6, r1
stdw [r10-8], 0
mov r2, {offset}
mov r3, r10
add r3, -8
mov r4, {size}
call 189
jne r0, 0, +7
stdw [r10-16], 0x41424344
mov r1, r6
mov r2, {offset}
mov r3, r10
add r3, -16
mov r4, {size}
call 190
ldxw r1, [r10-8]
add r0, r1
exit
"""


@pytest.mark.parametrize(("offset", "size"), [(0, 8), (56, 8), (57, 8), (60, 4), (61, 4),
                                              (0x10000, 1), (63, 1), (64, 1)])
def test_load_and_store_bytes(engine: str, offset: int, size: int) -> None:
    """-EINVAL past the end of a linear frame, -EFAULT past 0xffff."""
    _agree(assemble(LOAD_STORE.format(offset=offset, size=size)), PACKET, engine)


# -- ctx_in: metadata and devices -----------------------------------------------------

CTX_META = """
ldxw r2, [r1+8]
ldxw r3, [r1+0]
mov r4, r2
add r4, 4
mov r0, 99
jgt r4, r3, +1
ldxw r0, [r2+0]
exit
"""


def _xdp_md(data: int, data_end: int, meta: int = 0, ingress: int = 0, queue: int = 0,
            egress: int = 0) -> bytes:
    return struct.pack("<6I", data, data_end, meta, ingress, queue, egress)


@pytest.mark.parametrize(("data", "ingress"), [(0, 0), (4, 0), (8, 1), (32, 1), (36, 0),
                                             (48, 1)])
def test_ctx_in_makes_metadata(engine: str, data: int, ingress: int) -> None:
    """ctx_in's data N makes the first N bytes metadata; ctx_out counts data
    and data_end from data_meta."""
    _agree(assemble(CTX_META), PACKET, engine, _xdp_md(data, len(PACKET), ingress=ingress))


@pytest.mark.parametrize("ctx", [_xdp_md(3, 64), _xdp_md(6, 64), _xdp_md(4, 65),
                                 _xdp_md(0, 64, meta=4), _xdp_md(0, 64, egress=1),
                                 _xdp_md(0, 64, queue=1), _xdp_md(8, 4), _xdp_md(52, 64),
                                 _xdp_md(220, 300)])
def test_ctx_in_the_kernel_refuses(engine: str, ctx: bytes) -> None:
    """Metadata unaligned, past the headroom or leaving less than an Ethernet
    header; data_end past the frame; data_meta or egress_ifindex set; a queue
    without a device."""
    packet = bytes(300) if ctx[4:8] == (300).to_bytes(4, "little") else PACKET
    with pytest.raises(OSError):
        _kernel_run(assemble("mov r0, 2\nexit"), packet, ctx)
    with pytest.raises(ArgumentError):
        _ours(assemble("mov r0, 2\nexit"), packet, engine, ctx)


# -- redirects ------------------------------------------------------------------------

@pytest.mark.parametrize(("ifindex", "flags"), [(1, 0), (7, 0), (1, 1), (1, 8)])
def test_redirect(engine: str, ifindex: int, flags: int) -> None:
    code = assemble(f"mov r1, {ifindex}\nmov r2, {flags}\ncall 23\nexit")
    _agree(code, PACKET, engine)
    with XdpRunner(code, engine=engine) as runner:
        result = runner.run(PACKET)
        assert (result.redirect is not None) == (result.r0 == 4)
        if result.redirect is not None:
            assert result.redirect.ifindex == ifindex


@pytest.fixture
def kernel_devmap(request: pytest.FixtureRequest) -> Iterator[tuple[int, int]]:
    map_type = request.param
    fd = kernel.map_create(map_type, 4, 4, 8)
    kernel.map_update(fd, (3).to_bytes(4, "little"), (1).to_bytes(4, "little"))
    try:
        yield map_type, fd
    finally:
        os.close(fd)


@pytest.mark.parametrize("kernel_devmap", [MapType.DEVMAP, MapType.DEVMAP_HASH],
                         indirect=True)
@pytest.mark.parametrize(("key", "flags"), [(3, 0), (2, 0), (2, 1), (2, 2), (2, 3), (3, 2),
                                            (2, 4), (2, 8), (3, 0x18), (9, 2), (2, 0x20)])
def test_redirect_map(engine: str, kernel_devmap: tuple[int, int], key: int,
                      flags: int) -> None:
    """A set slot redirects; an empty one returns the flags' low bits;
    BPF_F_BROADCAST redirects; unknown flags abort."""
    map_type, fd = kernel_devmap
    code = assemble(f"lddw r1, {HANDLE}\nmov r2, {key}\nmov r3, {flags}\ncall 51\nexit")
    expected = _kernel_run(code, PACKET, map_fd=fd)
    ports = RedirectMap("m", map_type, 4, 8)
    ports.handle = HANDLE
    ports.set(3, 1)
    with XdpRunner(code, engine=engine, maps=[ports]) as runner:
        result = runner.run(PACKET)
    assert (result.r0, result.packet) == expected[:2]
    if result.r0 == 4 and not flags & 8:
        assert result.redirect is not None
        assert (result.redirect.map, result.redirect.key) == ("m", key)


# -- bpf_check_mtu, bpf_fib_lookup ----------------------------------------------------

CHECK_MTU = """
mov r6, r1
stw [r10-4], {given}
mov r2, {ifindex}
mov r3, r10
add r3, -4
mov r4, {diff}
mov r5, {flags}
call 163
ldxw r1, [r10-4]
lsh r0, 32
or r0, r1
mov r2, r0
ldxw r3, [r6+0]
ldxw r4, [r6+4]
mov r5, r3
add r5, 8
jgt r5, r4, +1
stxdw [r3+0], r2
mov r0, 2
exit
"""


@pytest.mark.parametrize(("ifindex", "given", "diff", "flags"), [
    (0, 0, 0, 0), (1, 0, 0, 0), (1, 0, 65536 - 50 + 1, 0), (1, 0, 65536 - 50, 0),
    (0, 1500, 0, 0), (0, 65536, 0, 0), (0, 65537, 0, 0), (0, 0, -100, 0), (0, 0, 0, 1),
    (4242, 0, 0, 0)])
def test_check_mtu(engine: str, ifindex: int, given: int, diff: int, flags: int) -> None:
    """The loopback device's MTU (65536) against the L3 length plus len_diff;
    the MTU written back; -EINVAL for flags, -ENODEV for an unknown device."""
    _agree(assemble(CHECK_MTU.format(ifindex=ifindex, given=given, diff=diff, flags=flags)),
           PACKET, engine)


FIB = """
mov r6, r1
mov r1, 0
stxdw [r10-64], r1
stxdw [r10-56], r1
stxdw [r10-48], r1
stxdw [r10-40], r1
stxdw [r10-32], r1
stxdw [r10-24], r1
stxdw [r10-16], r1
stxdw [r10-8], r1
stb [r10-64], {family}
stw [r10-56], {ifindex}
stw [r10-32], {dst}
mov r1, r6
mov r2, r10
add r2, -64
mov r3, {plen}
mov r4, {flags}
call 69
exit
"""


@pytest.mark.parametrize(("family", "ifindex", "plen", "flags"), [
    (2, 1, 8, 0), (2, 1, 63, 0), (0, 1, 64, 0), (2, 4242, 64, 0), (2, 0, 64, 0),
    (2, 1, 64, 0x100), (2, 1, 64, 0), (10, 1, 64, 0), (2, 1, 64, 2)])
def test_fib_lookup_without_a_table(engine: str, family: int, ifindex: int, plen: int,
                                    flags: int) -> None:
    """Short plen or unknown flags: -EINVAL; no AF_INET/AF_INET6: -EAFNOSUPPORT;
    unknown device: -ENODEV; else forwarding is disabled on the input device
    (the kernel's default), with or without BPF_FIB_LOOKUP_OUTPUT."""
    dst = 0x0100007F  # 127.0.0.1 in network order
    _agree(assemble(FIB.format(family=family, ifindex=ifindex, plen=plen, flags=flags,
                               dst=dst)), PACKET, engine)


def test_fib_lookup_with_a_table(engine: str) -> None:
    """A route the user gives: SUCCESS, the output device, MTU and MACs written,
    the gateway replacing the destination (an independent reading of struct
    bpf_fib_lookup: mtu_result at 6, ifindex at 8, ipv4_dst at 32, smac at 52,
    dmac at 58)."""
    fields = ("ldxw r1, [r10-56]\nlsh r1, 8\nor r0, r1\nldxh r1, [r10-58]\nlsh r1, 16\n"
              "or r0, r1\nldxw r1, [r10-32]\nlsh r1, 32\nor r0, r1\nldxb r1, [r10-12]\n"
              "ldxb r2, [r10-6]\nadd r1, r2\nstxb [r10-1], r1\nexit")
    code = assemble(FIB.format(family=2, ifindex=1, plen=64, flags=0, dst=0x0302000A)
                    .replace("call 69\nexit", "call 69\n" + fields))
    route = FibRoute("10.0.0.0/8", 1, gateway="10.0.0.1", smac=b"\x02" * 6,
                     dmac=b"\x04" * 6, mtu=1500)
    far = FibRoute("0.0.0.0/0", 1)
    with XdpRunner(code, engine=engine, routes=[far, route]) as runner:
        assert runner.run(PACKET).r0 == 0x0100000A << 32 | 1500 << 16 | 1 << 8
    with XdpRunner(code, engine=engine, routes=[FibRoute("192.168.0.0/16", 1)]) as runner:
        assert runner.run(PACKET).r0 & 0xFF == 4  # BPF_FIB_LKUP_RET_NOT_FWDED
    with XdpRunner(code, engine=engine, routes=[route], forwarding=False) as runner:
        assert runner.run(PACKET).r0 & 0xFF == 5  # BPF_FIB_LKUP_RET_FWD_DISABLED
