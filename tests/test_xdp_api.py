"""The XDP runner's results (context, metadata, trace lines, redirect target),
the redirect maps and the LPM trie, through the public API. Values that come
from the kernel are checked against it (skipping where bpf() is unavailable);
the others follow from the layouts (struct xdp_md, struct bpf_lpm_trie_key)."""

from __future__ import annotations

import ctypes
import os
import struct

import pytest

import kernel_oracle as kernel
from ebpfvm import EbpfVmRaw, MapError, assemble
from ebpfvm.contexts import XdpRunner
from ebpfvm.devmaps import RedirectMap
from ebpfvm.kernel import KernelEnv, kernel_helpers
from ebpfvm.lpmtrie import LpmTrie
from ebpfvm.mapbase import MapType
from ebpfvm.maps import create_map, map_helpers

UNAVAILABLE = kernel.available()
needs_kernel = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"bpf(): {UNAVAILABLE}")


def test_result_carries_context_metadata_and_trace(engine: str) -> None:
    """A ctx_in with data 8: the program sees 8 metadata bytes; the result
    splits packet into meta and data, and gives the run's trace_printk line."""
    code = assemble("""
        mov r6, r1
        stw [r10-8], 0x216968
        mov r1, r10
        add r1, -8
        mov r2, 4
        call 6
        ldxw r0, [r6+0]
        ldxw r1, [r6+8]
        sub r0, r1
        exit
    """)
    env = KernelEnv()
    vm = EbpfVmRaw(code)
    for number, helper in kernel_helpers(env).items():
        vm.register_helper(number, helper)
    packet = bytes(range(8)) + bytes(20)
    with XdpRunner(vm, engine=engine, env=env) as runner:
        result = runner.run(packet, ctx=struct.pack("<6I", 8, len(packet), 0, 1, 0, 0))
        assert result.r0 == 8
        assert result.meta == bytes(range(8)) and result.data == bytes(20)
        assert result.packet == packet
        assert result.context == {"data": 8, "data_end": 28, "data_meta": 0,
                                  "ingress_ifindex": 1, "rx_queue_index": 0,
                                  "egress_ifindex": 0}
        assert result.trace == ("hi!",)
        assert runner.run(bytes(20)).trace == ("hi!",)  # each run its own lines


def test_redirect_map_records_the_target(engine: str) -> None:
    ports = create_map("ports", MapType.DEVMAP, 4, 4, 4)
    assert isinstance(ports, RedirectMap)
    ports.handle = 0x77
    ports.set(2, 5)
    assert ports[(2).to_bytes(4, "little")] == (5).to_bytes(4, "little")
    code = assemble("lddw r1, 0x77\nmov r2, 2\nmov r3, 1\ncall 51\nexit")
    with XdpRunner(code, engine=engine, maps=[ports]) as runner:
        result = runner.run(bytes(20))
        assert result.verdict == 4 and result.redirect is not None
        assert (result.redirect.map, result.redirect.key) == ("ports", 2)
        del ports[(2).to_bytes(4, "little")]
        result = runner.run(bytes(20))
        assert result.r0 == 1 and result.redirect is None  # the fallback action
    with pytest.raises(MapError):
        ports.set(4, 1)  # past max_entries
    with pytest.raises(MapError):
        create_map("bad", MapType.XSKMAP, 4, 8, 4)


def _lpm_key(prefix: int, address: bytes) -> bytes:
    return prefix.to_bytes(4, "little") + address


def test_lpm_trie_matches_the_longest_prefix() -> None:
    trie = create_map("t", MapType.LPM_TRIE, 8, 4, 8, 1)
    assert isinstance(trie, LpmTrie)
    trie[_lpm_key(8, bytes([10, 0, 0, 0]))] = b"\x08\0\0\0"
    trie[_lpm_key(24, bytes([10, 1, 2, 99]))] = b"\x18\0\0\0"
    assert trie[_lpm_key(32, bytes([10, 1, 2, 3]))] == b"\x18\0\0\0"
    assert trie[_lpm_key(32, bytes([10, 9, 2, 3]))] == b"\x08\0\0\0"
    assert trie[_lpm_key(16, bytes([10, 1, 2, 3]))] == b"\x08\0\0\0"  # /24 is longer than /16
    assert _lpm_key(32, bytes([11, 0, 0, 0])) not in trie
    assert sorted(trie) == [_lpm_key(8, bytes([10, 0, 0, 0])), _lpm_key(24, bytes([10, 1, 2, 99]))]
    trie[_lpm_key(24, bytes([10, 1, 2, 0]))] = b"\x19\0\0\0"  # the same prefix: replaced
    assert len(trie) == 2 and _lpm_key(24, bytes([10, 1, 2, 0])) in list(trie)
    assert trie.delete_elem(_lpm_key(24, bytes([10, 1, 2, 7]))) == 0
    assert trie.update_elem(_lpm_key(33, bytes(4)), bytes(4)) == -22
    with pytest.raises(MapError, match="BPF_F_NO_PREALLOC"):
        create_map("t", MapType.LPM_TRIE, 8, 4, 8)


@needs_kernel
def test_lpm_trie_lookups_match_the_kernel(engine: str) -> None:
    """Program lookups (bpf_map_lookup_elem) in our trie and in the kernel's."""
    routes = [(8, [10, 0, 0, 0], 1), (16, [10, 1, 0, 0], 2), (24, [10, 1, 2, 0], 3),
              (0, [0, 0, 0, 0], 4), (32, [10, 1, 2, 3], 5)]
    attr = ctypes.create_string_buffer(160)
    struct.pack_into("<IIIII", attr, 0, 11, 8, 4, 16, 1)
    fd = kernel.bpf(kernel.BPF_MAP_CREATE, attr)
    trie = create_map("t", MapType.LPM_TRIE, 8, 4, 16, 1)
    trie.handle = 0x99
    try:
        for prefix, address, value in routes[:-1]:
            key, raw = _lpm_key(prefix, bytes(address)), value.to_bytes(4, "little")
            kernel.map_update(fd, key, raw)
            trie[key] = raw
        code = assemble("""
            ldxw r2, [r1+0]
            ldxw r3, [r1+4]
            mov r4, r2
            add r4, 8
            mov r0, 99
            jgt r4, r3, +9
            ldxdw r5, [r2+0]
            stxdw [r10-8], r5
            lddw r1, 0x99
            mov r2, r10
            add r2, -8
            call 1
            jne r0, 0, +2
            mov r0, 0
            exit
            ldxw r0, [r0+0]
            exit
        """)
        kernel_code = kernel.kernel_code(code, ((8, "map", "t", 0),), {"t": fd}, {})
        prog = kernel.prog_load(kernel_code)
        vm = EbpfVmRaw(code)
        for number, helper in map_helpers({0x99: trie}).items():
            vm.register_helper(number, helper)
        with XdpRunner(vm, engine=engine) as runner:
            for prefix, address in [(32, [10, 1, 2, 3]), (32, [10, 1, 9, 9]),
                                    (32, [10, 7, 7, 7]), (32, [11, 0, 0, 0]),
                                    (20, [10, 1, 2, 3]), (0, [10, 1, 2, 3])]:
                packet = _lpm_key(prefix, bytes(address)) + bytes(12)
                expected = kernel.test_run(prog, packet)
                assert (runner.run(packet).r0, runner.run(packet).packet) == expected
        os.close(prog)
    finally:
        os.close(fd)
