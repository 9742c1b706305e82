"""The example programs in examples/bpf, built by clang and committed."""

from __future__ import annotations

import struct

import pytest

from conftest import REPO
from ebpfvm import load
from ebpfvm.contexts import XdpAction
from ebpfvm.jit.execmem import jit_supported
from ebpfvm.kernel import KernelEnv, format_trace_printk
from engines import run

EXAMPLES = REPO / "examples" / "bpf"

# The rbpf README's Ethernet / IPv4 / TCP packet (source port 0x9999).
RBPF_PACKET = bytes([
    0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xFE, 0xDC, 0xBA, 0x98, 0x76, 0x54,
    0x08, 0x00,
    0x45, 0x00, 0x00, 0x3B, 0xA6, 0xAB, 0x40, 0x00, 0x40, 0x06, 0x96, 0x0F,
    0x7F, 0x00, 0x00, 0x01, 0x7F, 0x00, 0x00, 0x01,
    0x99, 0x99, 0xC6, 0xCC, 0xD1, 0xE5, 0xC4, 0x9D, 0xD4, 0x30, 0xB5, 0xD2,
    0x80, 0x18, 0x01, 0x56, 0xFE, 0x2F, 0x00, 0x00,
    0x01, 0x01, 0x08, 0x0A, 0x00, 0x23, 0x75, 0x89, 0x00, 0x23, 0x63, 0x2D,
    0x71, 0x64, 0x66, 0x73, 0x64, 0x66, 0x0A,
])
TC_ACT_OK, TC_ACT_SHOT = 0, 2


def test_block_port_on_the_rbpf_packet(engine: str) -> None:
    obj = load(EXAMPLES / "block_port.o")
    program = obj.program(section=".classifier")
    assert program.name == "block_port" and program.helpers == (6,)
    env = KernelEnv()
    vm = obj.vm(section=".classifier", fixed_mbuff=(0x40, 0x50), env=env)
    assert run(vm, engine, bytearray(RBPF_PACKET)) == TC_ACT_SHOT
    assert env.lines == ["blocked tcp 39321 -> 50892"]  # 0x9999 -> 0xc6cc
    other = bytearray(RBPF_PACKET)
    other[34:36] = (80).to_bytes(2, "big")  # source port 80: passes
    assert run(vm, engine, other) == TC_ACT_OK
    not_ip = bytearray(RBPF_PACKET)
    not_ip[12:14] = b"\x86\xdd"
    assert run(vm, engine, not_ip) == TC_ACT_OK
    assert run(vm, engine, bytearray(RBPF_PACKET[:20])) == TC_ACT_OK  # too short
    assert len(env.lines) == 1


def test_trace_printk_format_rules() -> None:
    def no_strings(_address: int) -> bytes:
        raise AssertionError("no %s here")

    assert format_trace_printk(b"%d %u %x", ((1 << 32) - 1, 5, 255), no_strings) == "-1 5 ff"
    assert format_trace_printk(b"%lld %llx", ((1 << 64) - 2, 1 << 40, 0), no_strings) == \
        "-2 10000000000"
    assert format_trace_printk(b"100%%", (0, 0, 0), no_strings) == "100%"
    assert format_trace_printk(b"%s!", (7, 0, 0), lambda a: b"hi") == "hi!"
    for bad in (b"%d %d %d %d", b"%f", b"%q"):
        try:
            format_trace_printk(bad, (1, 2, 3), no_strings)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} should be refused")


def test_probe_read_helpers() -> None:
    from ebpfvm import EbpfVmRaw, assemble
    from ebpfvm.helpers import Helper
    from ebpfvm.kernel import kernel_helpers

    def vm_with(text: str) -> EbpfVmRaw:
        vm = EbpfVmRaw(assemble(text))
        for key, helper in kernel_helpers(KernelEnv()).items():
            assert isinstance(helper, Helper)
            vm.register_helper(key, helper)
        return vm

    # probe_read(stack-8, 4, input+2): copies; from a wild pointer: -EFAULT, zeroed.
    copy = vm_with("""
        mov r3, r1
        add r3, 2
        mov r1, r10
        add r1, -8
        mov r2, 4
        call 113
        jne r0, 0, out
        ldxw r0, [r10-8]
    out:
        exit
    """)
    assert copy.execute_program(bytearray(b"\x00\x01\x02\x03\x04\x05")) == 0x05040302
    wild = vm_with("stdw [r10-8], -1\nmov r1, r10\nadd r1, -8\nmov r2, 8\nmov r3, 16\n"
                   "call 4\nldxdw r1, [r10-8]\nadd r0, r1\nexit")
    assert wild.execute_program(bytearray(4)) == (-14) & ((1 << 64) - 1)  # dst zeroed: + 0
    # probe_read_str stops at the NUL (or size - 1) and returns the length with it.
    string = vm_with("mov r3, r1\nmov r1, r10\nadd r1, -16\nmov r2, 16\ncall 115\nexit")
    assert string.execute_program(bytearray(b"hi\x00zz")) == 3
    short = vm_with("mov r3, r1\nmov r1, r10\nadd r1, -16\nmov r2, 3\ncall 45\n"
                    "ldxb r0, [r10-14]\nexit")
    assert short.execute_program(bytearray(b"hello\x00")) == 0  # "he" + NUL: byte 2 is NUL


# -- the XDP examples, on packets built by hand ----------------------------------

XDP_ENGINES = ["interp", "jit", "jit-unchecked"] if jit_supported() is None else ["interp"]
TCP, UDP, ICMP = 6, 17, 1


def frame(ethertype: int = 0x0800, proto: int = TCP, saddr: str = "10.0.0.1",
          payload: int = 20) -> bytes:
    """Ethernet + (for IPv4) a 20-byte IP header, then `payload` zero bytes."""
    eth = bytes(6) + bytes([2, 0, 0, 0, 0, 1]) + ethertype.to_bytes(2, "big")
    if ethertype != 0x0800:
        return eth + bytes(payload)
    ip = bytearray(20)
    ip[0], ip[9] = 0x45, proto
    ip[2:4] = (20 + payload).to_bytes(2, "big")
    ip[12:16] = bytes(int(part) for part in saddr.split("."))
    return eth + bytes(ip) + bytes(payload)


@pytest.mark.parametrize("engine", XDP_ENGINES)
def test_proto_count(engine: str) -> None:
    obj = load(EXAMPLES / "proto_count.o")
    runner = obj.xdp(engine=engine)
    packets = [frame(proto=TCP)] * 3 + [frame(proto=UDP)] * 2 + [frame(0x86DD)] + [b"short"]
    verdicts = [runner.run(p).verdict for p in packets]
    assert verdicts == [XdpAction.PASS] * 6 + [XdpAction.DROP]
    counts = {(k.ethertype, k.proto): v for k, v in obj.maps["counts"].typed.items()}
    assert counts == {(0x0800, TCP): 3, (0x0800, UDP): 2, (0x86DD, 0): 1}


@pytest.mark.parametrize("engine", XDP_ENGINES)
def test_rate_limit(engine: str) -> None:
    obj = load(EXAMPLES / "rate_limit.o")
    obj.data[".rodata"][:4] = (2).to_bytes(4, "little")  # limit = 2, set before the run
    runner = obj.xdp(engine=engine)
    a, b = frame(saddr="10.0.0.1"), frame(saddr="10.0.0.2")
    # First packet creates the entry (count 1); the limit lets one more through.
    assert [runner.run(a).verdict for _ in range(4)] == [
        XdpAction.PASS, XdpAction.PASS, XdpAction.DROP, XdpAction.DROP]
    assert runner.run(b).verdict is XdpAction.PASS
    # Four more sources fill the 4-entry LRU and evict 10.0.0.1: it passes again.
    for n in range(3, 7):
        runner.run(frame(saddr=f"10.0.0.{n}"))
    assert runner.run(a).verdict is XdpAction.PASS
    assert len(obj.maps["seen"]) == 4


@pytest.mark.parametrize("engine", XDP_ENGINES)
def test_events(engine: str) -> None:
    obj = load(EXAMPLES / "events.o")
    runner = obj.xdp(engine=engine)
    for packet in (frame(proto=UDP, payload=10), frame(0x0806, payload=28)):
        assert runner.run(packet).verdict is XdpAction.PASS
    event = struct.Struct("<IHBx")
    records = [event.unpack(r) for r in obj.maps["events"].consume()]
    assert records == [(14 + 20 + 10, 0x0800, UDP), (14 + 28, 0x0806, 0)]


@pytest.mark.parametrize("engine", XDP_ENGINES)
def test_dispatch(engine: str) -> None:
    obj = load(EXAMPLES / "dispatch.o")
    obj.maps["handlers"][TCP] = "handle_tcp"
    obj.maps["handlers"][UDP] = "handle_udp"
    runner = obj.xdp("dispatch", engine=engine)
    assert runner.run(frame(proto=TCP)).verdict is XdpAction.PASS
    assert runner.run(frame(proto=UDP)).verdict is XdpAction.DROP  # handle_udp drops
    assert runner.run(frame(proto=ICMP)).verdict is XdpAction.PASS  # no handler
    bss = obj.data[".bss"]
    assert (int.from_bytes(bss[0:8], "little"), int.from_bytes(bss[8:16], "little")) == (1, 1)


@pytest.mark.parametrize("engine", XDP_ENGINES)
def test_config_globals(engine: str) -> None:
    obj = load(EXAMPLES / "config.o")
    assert bytes(obj.data[".rodata"]).find(b"ebpfvm example") >= 0
    runner = obj.xdp(engine=engine)
    assert runner.run(frame(proto=UDP)).verdict is XdpAction.DROP  # blocked_proto = 17
    assert runner.run(frame(proto=TCP)).verdict is XdpAction.PASS
    # Like a skeleton's rodata: block TCP instead, before the next run.
    rodata = obj.data[".rodata"]
    offset = 0 if rodata[0] == UDP else rodata.index(bytes([UDP]))
    rodata[offset] = TCP
    assert runner.run(frame(proto=TCP)).verdict is XdpAction.DROP
    assert runner.run(frame(proto=UDP)).verdict is XdpAction.PASS
    # Read back by name (BTF DATASEC, offsets from the symbol table): two
    # drops, two passes so far; .rodata as changed above.
    assert obj.variables(".bss") == {"passed": 2, "dropped": 2}
    assert obj.variables(".rodata") == {"blocked_proto": TCP,
                                        "label": b"ebpfvm example\0\0"}
    assert obj.variables(".data") == {"generation": 1}
