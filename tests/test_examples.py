"""The example programs in examples/bpf, built by clang and committed."""

from __future__ import annotations

from conftest import REPO
from ebpfvm import load
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
