"""CO-RE relocations (ebpfvm.core_relo): tests/data/elf/core.c and core_bad.c,
built against a vmlinux.h of the packaged target BTF, run in every engine.

Expected values come from the packet's bytes and the uapi/RFC layouts
(iphdr: ttl at byte 8, protocol 9, saddr 12; sizeof iphdr 20, ipv6hdr 40;
XDP_DROP 1, XDP_PASS 2), and from the kernel: libbpf (libbpf.so.1, through
ctypes) relocates the same object against the running kernel's BTF, loads it
and BPF_PROG_TEST_RUN runs it on the same packets."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

import ebpfvm
import kernel_oracle
from ebpfvm.btf import parse_btf
from ebpfvm.core_btf import HOST_BTF
from ebpfvm.core_relo import POISON, CoreKind
from ebpfvm.errors import CoreRelocationError, CoreRelocationFault, ElfError

DATA = Path(__file__).parent / "data" / "elf"
CORE = DATA / "core.o"
BAD = DATA / "core_bad.o"
PACKAGED = Path(ebpfvm.__file__).parent / "data" / "kernel.btf"


def udp_packet(ttl: int = 64, dport: int = 53, saddr: bytes = b"\x0a\x00\x00\x01") -> bytes:
    """Ethernet + IPv4 (ihl 5) + UDP, with a zero MAC and checksum."""
    ip = bytes([0x45, 0, 0, 28, 0, 0, 0, 0, ttl, 17, 0, 0]) + saddr + b"\x0a\x00\x00\x02"
    return bytes(12) + b"\x08\x00" + ip + struct.pack(">HHHH", 1234, dport, 8, 0)


def vlan_tcp_packet(flags: int = 0x12, doff: int = 5) -> bytes:
    """802.1Q VLAN + IPv6 (next header TCP, daddr ending in 0x77) + TCP."""
    ip6 = bytes([0x60, 0, 0, 0, 0, 20, 6, 64]) + bytes(16) + bytes(15) + b"\x77"
    tcp = struct.pack(">HHIIBBHHH", 1234, 80, 1, 0, doff << 4, flags, 512, 0, 0)
    return bytes(6) + bytes(5) + b"\x5a" + b"\x81\x00\x00\x07\x86\xdd" + ip6 + tcp


PACKETS = [udp_packet(), udp_packet(ttl=3, dport=8080, saddr=b"\xc0\xa8\x01\x07"),
           vlan_tcp_packet(), vlan_tcp_packet(flags=0x10, doff=8),
           bytes(12) + b"\x86\xdd" + bytes(40),  # IPv6: not parsed
           bytes(12) + b"\x08\x00" + bytes([0x46, 0, 0, 24, 0, 0, 0, 0, 9, 6]) + bytes(14)]


def expected_parse(packet: bytes) -> int:
    """xdp_parse's result, from the packet's bytes (RFC 791, RFC 768)."""
    if packet[12:14] != b"\x08\x00":
        return 2  # XDP_PASS
    ip = packet[14:]
    if ip[9] != 17:
        return 1
    udp = ip[(ip[0] & 0xF) * 4 :]
    return ip[8] << 24 | ip[9] << 16 | int.from_bytes(udp[2:4], "big")


def test_offsets_come_from_the_target(engine: str) -> None:
    obj = ebpfvm.load(CORE)
    found = {(r.field, r.kind): r.value for r in obj.core_relocations}
    # iphdr's layout (RFC 791): saddr sits inside an anonymous union in the
    # kernel's struct, found by name
    assert found["iphdr.ttl", CoreKind.FIELD_BYTE_OFFSET] == 8
    assert found["iphdr___mine.saddr", CoreKind.FIELD_BYTE_OFFSET] == 12
    assert found["iphdr___mine.ttl", CoreKind.FIELD_BYTE_OFFSET] == 8
    assert found["udphdr.dest", CoreKind.FIELD_BYTE_OFFSET] == 2
    assert found["__sk_buff.protocol", CoreKind.FIELD_BYTE_OFFSET] == 16  # uapi bpf.h
    assert found["xdp_action::XDP_PASS", CoreKind.ENUMVAL_VALUE] == 2
    poisoned = [r for r in obj.core_relocations if r.poisoned]
    assert [(r.field, r.kind, r.helper_id) for r in poisoned] == [
        ("iphdr___mine.not_in_kernel", CoreKind.FIELD_BYTE_OFFSET, POISON)]
    for packet in PACKETS:
        with obj.xdp("xdp_parse", engine=engine) as runner:
            assert runner.run(packet).r0 == expected_parse(packet)


def test_flavor_and_guarded_field(engine: str) -> None:
    with ebpfvm.load(CORE).xdp("xdp_flavor", engine=engine) as runner:
        for packet in PACKETS[:2]:
            ip = packet[14:]
            assert runner.run(packet).r0 == ip[8] + ip[9] + ip[12]


def test_type_size_exists_and_enum_values(engine: str) -> None:
    value = (20 | 40 << 8 | 1 << 16 | 0 << 17 | 0 << 18 | 1 << 19 | 4 << 20 | 2 << 24
             | 0 << 28 | 1 << 29)
    with ebpfvm.load(CORE).xdp("xdp_sizes", engine=engine) as runner:
        assert runner.run(udp_packet()).r0 == value


def test_bitfields(engine: str) -> None:
    with ebpfvm.load(CORE).xdp("xdp_bitfields", engine=engine) as runner:
        assert runner.run(udp_packet()).r0 == 4 << 8 | 5
        assert runner.run(PACKETS[-1]).r0 == 4 << 8 | 6


def test_vlan_ipv6_tcp_headers(engine: str) -> None:
    """vlan_ethhdr's addresses sit in an anonymous union (struct_group),
    in6_addr's words in a named union; tcphdr's flags are bitfields (RFC 9293:
    data offset in the high nibble of byte 12, ACK 0x10 and SYN 0x02 of byte 13)."""
    with ebpfvm.load(CORE).xdp("xdp_headers", engine=engine) as runner:
        assert runner.run(vlan_tcp_packet()).r0 == 0x5A << 24 | 0x77 << 16 | 5 << 8 | 1 << 4 | 1
        assert runner.run(vlan_tcp_packet(0x10, 8)).r0 == 0x5A << 24 | 0x77 << 16 | 8 << 8 | 1
        assert runner.run(udp_packet()).r0 == 0


def test_type_id_target(engine: str) -> None:
    ids = [t.id for t in parse_btf(PACKAGED.read_bytes()).types if t.name == "iphdr"]
    with ebpfvm.load(CORE).xdp("xdp_type_id", engine=engine) as runner:
        assert runner.run(udp_packet()).r0 == ids[0]


def test_sk_buff_through_core(engine: str) -> None:
    with ebpfvm.load(CORE).skb("tc_skb", engine=engine) as runner:
        packet = udp_packet()
        # len, protocol (the __be16 as the kernel stores it), pkt_type 0, mark 0
        assert runner.run(packet).r0 == len(packet) + (0x0008 << 16)


def test_poisoned_instruction_faults_when_run(engine: str) -> None:
    obj = ebpfvm.load(BAD)
    relocation = next(r for r in obj.core_relocations if r.poisoned)
    assert (relocation.type_name, relocation.field) == ("iphdr___mine", "iphdr___mine.not_in_kernel")
    with obj.xdp("xdp_missing", engine=engine) as runner:
        assert runner.run(bytes(20)).r0 == 7  # the poisoned load is not reached
        with pytest.raises(CoreRelocationFault) as caught:
            runner.run(udp_packet())
    assert caught.value.pc == relocation.insn == 8
    assert caught.value.type_name == "iphdr___mine"
    assert caught.value.field == "iphdr___mine.not_in_kernel"
    assert caught.value.kind == "byte_off"


def test_load_size_changes(engine: str) -> None:
    """A 64-bit unsigned flavor of xdp_md's 32-bit fields: the loads become
    32-bit (RFC 9669 section 5.1: size field W) at the kernel's offsets; a
    signed 64-bit flavor cannot be narrowed and is poisoned."""
    obj = ebpfvm.load(CORE)
    code = obj.program("xdp_widths").code
    assert [(code[i], code[i + 2]) for i in (0, 8)] == [(0x61, 16), (0x61, 12)]
    with obj.xdp("xdp_widths", engine=engine) as runner:
        result = runner.run(udp_packet())
        context = result.context  # the xdp_md the program saw
        assert result.r0 == context["ingress_ifindex"] << 8 | context["rx_queue_index"]
    bad = ebpfvm.load(BAD)
    with bad.xdp("xdp_signed_width", engine=engine) as runner, \
            pytest.raises(CoreRelocationFault) as caught:
        runner.run(udp_packet())
    assert (caught.value.pc, caught.value.field) == (0, "xdp_md___signed.ingress_ifindex")
    assert caught.value.relocation.helper_id == POISON + 1


def test_strict_refuses_at_load() -> None:
    with pytest.raises(CoreRelocationError) as caught:
        ebpfvm.load(BAD, core_strict=True)
    error = caught.value
    assert (error.section, error.insn, error.kind) == ("xdp", 8, "byte_off")
    assert (error.type_name, error.field, error.access) == (
        "iphdr___mine", "iphdr___mine.not_in_kernel", "0:1")
    assert isinstance(error, ElfError)
    ebpfvm.load(CORE, core_strict=False)


def _section_offset(path: Path, name: str) -> int:
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as handle:
        return int(ELFFile(handle).get_section_by_name(name)["sh_offset"])


def test_instruction_that_disagrees_with_the_local_type_is_refused() -> None:
    """libbpf checks the compiler's value against the local type before it
    patches: an object whose load offset was changed is refused."""
    data = bytearray(CORE.read_bytes())
    at = _section_offset(CORE, "xdp") + 14 * 8  # r1 = *(u8 *)(r6 + 9): iphdr.protocol
    assert data[at + 2] == 9
    data[at + 2] = 7
    with pytest.raises(CoreRelocationError) as caught:
        ebpfvm.load(bytes(data))
    assert (caught.value.insn, caught.value.field) == (14, "iphdr.protocol")


def test_target_btf_choices(tmp_path: Path) -> None:
    blob = PACKAGED.read_bytes()
    (tmp_path / "t.btf").write_bytes(blob)
    for choice in (blob, tmp_path / "t.btf", str(tmp_path / "t.btf")):
        obj = ebpfvm.load(CORE, core_btf=choice)
        assert [r.value for r in obj.core_relocations] == \
            [r.value for r in ebpfvm.load(CORE).core_relocations]
    with pytest.raises(ElfError) as caught:
        ebpfvm.load(CORE, core_btf=tmp_path / "missing.btf")
    assert caught.value.section == "core_btf"
    with pytest.raises(ElfError):
        ebpfvm.load(CORE, core_btf=b"not BTF at all, too short?")


# -- the kernel, through libbpf --------------------------------------------------


class _Libbpf:
    """libbpf.so.1 through ctypes: open, load (CO-RE against the kernel's
    BTF), program fds."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
        lib.bpf_object__open_file.restype = ctypes.c_void_p
        lib.bpf_object__open_file.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        lib.bpf_object__load.argtypes = [ctypes.c_void_p]
        lib.bpf_object__close.argtypes = [ctypes.c_void_p]
        lib.bpf_object__find_program_by_name.restype = ctypes.c_void_p
        lib.bpf_object__find_program_by_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.bpf_program__fd.argtypes = [ctypes.c_void_p]
        lib.libbpf_set_print.argtypes = [ctypes.c_void_p]
        lib.libbpf_set_print.restype = ctypes.c_void_p
        lib.libbpf_set_print(None)
        self.lib = lib

    def load(self, path: Path) -> tuple[int, ctypes.c_void_p]:
        handle = self.lib.bpf_object__open_file(os.fsencode(path), None)
        if not handle:
            raise OSError(ctypes.get_errno(), "bpf_object__open_file failed")
        result = self.lib.bpf_object__load(handle)
        if result:
            self.lib.bpf_object__close(handle)
        return result, handle

    def fd(self, handle: ctypes.c_void_p, name: str) -> int:
        program = self.lib.bpf_object__find_program_by_name(handle, name.encode())
        return int(self.lib.bpf_program__fd(program))


@pytest.fixture(scope="module")
def libbpf() -> Iterator[_Libbpf]:
    reason = kernel_oracle.available()
    if reason is not None:
        pytest.skip(reason)
    if not os.path.exists(HOST_BTF):
        pytest.skip(f"{HOST_BTF} is absent: no kernel BTF for libbpf's CO-RE")
    try:
        yield _Libbpf()
    except OSError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"libbpf.so.1 is not available: {exc}")


XDP_PROGRAMS = ["xdp_parse", "xdp_flavor", "xdp_sizes", "xdp_bitfields", "xdp_type_id",
                "xdp_headers", "xdp_widths"]


def test_same_results_as_libbpf_and_the_kernel(libbpf: _Libbpf, engine: str) -> None:
    """ebpfvm with the host's BTF and the kernel after libbpf's CO-RE give
    the same results (the type id too: both use the host's vmlinux)."""
    status, handle = libbpf.load(CORE)
    assert status == 0
    try:
        obj = ebpfvm.load(CORE, core_btf="host")
        for name in XDP_PROGRAMS:
            fd = libbpf.fd(handle, name)
            with obj.xdp(name, engine=engine) as runner:
                for packet in PACKETS:
                    kernel, _ = kernel_oracle.test_run(fd, packet)
                    assert runner.run(packet).r0 & 0xFFFF_FFFF == kernel, name
        fd = libbpf.fd(handle, "tc_skb")
        with obj.skb("tc_skb", engine=engine) as runner:
            for packet in PACKETS:
                assert runner.run(packet).r0 == kernel_oracle.test_run(fd, packet)[0]
    finally:
        libbpf.lib.bpf_object__close(handle)


def test_libbpf_also_refuses_the_reachable_poisoned_load(libbpf: _Libbpf) -> None:
    status, _handle = libbpf.load(BAD)
    assert status != 0  # the kernel's verifier reached libbpf's poisoned call


def test_our_relocated_code_loads_in_the_kernel(libbpf: _Libbpf) -> None:
    """The code ebpfvm relocated (host BTF) passes the kernel's verifier and
    gives the kernel's results (the poisoned call is dead code there too)."""
    del libbpf
    obj = ebpfvm.load(CORE, core_btf="host")
    for name in XDP_PROGRAMS:
        fd = kernel_oracle.prog_load(obj.program(name).code)
        try:
            with obj.xdp(name) as runner:
                for packet in PACKETS:
                    assert runner.run(packet).r0 & 0xFFFF_FFFF == \
                        kernel_oracle.test_run(fd, packet)[0]
        finally:
            os.close(fd)


def test_cli_core_btf_and_poisoned_fault() -> None:
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(ebpfvm.__file__).parent.parent)}
    frame = (bytes(12) + b"\x08\x00" + bytes([0x45]) + bytes(40)).hex()
    done = subprocess.run([sys.executable, "-m", "ebpfvm.cli", "run", str(BAD), "--function", "xdp_missing",
                           "--hex", frame],
                          capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 1
    assert "iphdr___mine.not_in_kernel" in done.stderr and "pc 8" in done.stderr
    done = subprocess.run([sys.executable, "-m", "ebpfvm.cli", "run", str(CORE), "--function",
                           "xdp_sizes", "--core-btf", str(PACKAGED), "--hex", frame],
                          capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert f"({0x22492814})" in done.stdout


def test_malformed_core_relocations_are_typed_errors(checked_engine: str) -> None:
    """Random bytes in .BTF.ext's CO-RE records and in .BTF: each load
    succeeds or raises an EbpfError, and every load that succeeds runs to a
    result or a typed fault."""
    import random

    from elftools.elf.elffile import ELFFile

    with open(CORE, "rb") as handle:
        elf = ELFFile(handle)
        ext = elf.get_section_by_name(".BTF.ext")
        start, size = int(ext["sh_offset"]), int(ext["sh_size"])
        relo_at = start + 32 + struct.unpack_from("<I", ext.data(), 24)[0]
    original = CORE.read_bytes()
    rng = random.Random(13)
    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(relo_at, start + size) if rng.random() < 0.8 \
                else rng.randrange(start, start + size)
            data[at] = rng.randrange(256)
        try:
            obj = ebpfvm.load(bytes(data))
        except ebpfvm.EbpfError:
            continue
        for program in obj.programs:
            if program.section != "xdp":
                continue
            with obj.xdp(program.name, engine=checked_engine) as runner, \
                    contextlib.suppress(ebpfvm.VmFault):
                runner.run(udp_packet())


def _with_relocation(insn: int, kind: CoreKind, type_name: str, access: str | None = None) -> bytes:
    """core.o with the CO-RE record of xdp instruction `insn` changed to
    `kind` on the local type `type_name` (clang 14 cannot emit type_matches),
    and its access string to `access` (a string of the object's BTF)."""
    from elftools.elf.elffile import ELFFile

    data = bytearray(CORE.read_bytes())
    with open(CORE, "rb") as handle:
        elf = ELFFile(handle)
        ext = elf.get_section_by_name(".BTF.ext")
        btf_data = bytes(elf.get_section_by_name(".BTF").data())
        local = parse_btf(btf_data)
        start = int(ext["sh_offset"])
        hdr_len, relo_off, relo_len = (struct.unpack_from("<I", ext.data(), at)[0]
                                       for at in (4, 24, 28))
    type_id = next(t.id for t in local.types if t.name == type_name)
    access_off = None
    if access:
        strings = btf_data[struct.unpack_from("<I", btf_data, 4)[0] +
                           struct.unpack_from("<I", btf_data, 16)[0]:]
        access_off = strings.index(access.encode() + b"\0")  # a suffix reads the same
    pos, end = start + hdr_len + relo_off, start + hdr_len + relo_off + relo_len
    rec_size = struct.unpack_from("<I", data, pos)[0]
    pos += 4
    while pos < end:
        count = struct.unpack_from("<II", data, pos)[1]
        pos += 8
        for at in range(pos, pos + count * rec_size, rec_size):
            if struct.unpack_from("<I", data, at)[0] == insn * 8:
                struct.pack_into("<I", data, at + 4, type_id)
                struct.pack_into("<I", data, at + 12, kind)
                if access_off is not None:
                    struct.pack_into("<I", data, at + 8, access_off)
        pos += count * rec_size
    return bytes(data)


TYPE_MATCHES_CASES = [("xdp_md", 1), ("xdp_action", 1), ("iphdr", 0), ("iphdr___mine", 0),
                      ("not_in_kernel", 0)]


@pytest.mark.parametrize(("type_name", "bit"), TYPE_MATCHES_CASES)
def test_type_matches(engine: str, type_name: str, bit: int) -> None:
    """bpf_core_type_matches in place of type_exists(not_in_kernel) (bit 17
    of xdp_sizes). type_matches compares the names of ints too: clang calls
    __u16 "unsigned short", the kernel's BTF (built by gcc) "short unsigned
    int", so iphdr does not match, while xdp_md (only __u32, "unsigned int"
    for both) and the enum xdp_action (same enumerator names) do; the flavor
    also has a member the kernel lacks; the unknown type has no candidate."""
    obj = ebpfvm.load(_with_relocation(68, CoreKind.TYPE_MATCHES, type_name))
    with obj.xdp("xdp_sizes", engine=engine) as runner:
        assert runner.run(udp_packet()).r0 >> 17 & 1 == bit
    exists = ebpfvm.load(_with_relocation(68, CoreKind.TYPE_EXISTS, type_name))
    with exists.xdp("xdp_sizes", engine=engine) as runner:  # both flavors exist
        assert runner.run(udp_packet()).r0 >> 17 & 1 == int(type_name != "not_in_kernel")


def test_type_matches_as_libbpf(libbpf: _Libbpf, tmp_path: Path) -> None:
    for type_name, _bit in TYPE_MATCHES_CASES:
        path = tmp_path / f"{type_name}.o"
        path.write_bytes(_with_relocation(68, CoreKind.TYPE_MATCHES, type_name))
        status, handle = libbpf.load(path)
        assert status == 0
        try:
            fd = libbpf.fd(handle, "xdp_sizes")
            with ebpfvm.load(path, core_btf="host").xdp("xdp_sizes") as runner:
                assert runner.run(udp_packet()).r0 == kernel_oracle.test_run(fd, udp_packet())[0]
        finally:
            libbpf.lib.bpf_object__close(handle)


def test_packaged_btf_is_reproducible(tmp_path: Path) -> None:
    """tools/gen_kernel_btf.py keeps a closure of types in their order: run on
    the packaged BTF itself it gives the same bytes."""
    import subprocess
    import sys

    out = tmp_path / "again.btf"
    subprocess.run([sys.executable, str(Path(__file__).parent.parent / "tools" /
                                        "gen_kernel_btf.py"), "--source", str(PACKAGED),
                    "--out", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == PACKAGED.read_bytes()
    names = {t.name for t in parse_btf(PACKAGED.read_bytes()).types}
    assert {"__sk_buff", "xdp_md", "bpf_sock", "ethhdr", "iphdr", "ipv6hdr", "tcphdr", "udphdr",
            "icmphdr", "icmp6hdr", "vlan_ethhdr", "in6_addr", "arphdr", "xdp_action"} <= names


@pytest.mark.parametrize("access", ["ttl", "0:11", "0:6:0:1:0:2:3"])
def test_bad_access_strings_are_refused(access: str) -> None:
    """A field access that is not numbers, names no member, or indexes into
    an int: CoreRelocationError naming the instruction and the type."""
    with pytest.raises(CoreRelocationError) as caught:
        ebpfvm.load(_with_relocation(33, CoreKind.FIELD_BYTE_OFFSET, "iphdr", access))
    assert (caught.value.insn, caught.value.type_name, caught.value.access) == (33, "iphdr", access)


def test_core_arguments_are_checked() -> None:
    with pytest.raises(ebpfvm.ArgumentTypeError) as caught:
        ebpfvm.load(CORE, core_btf=3)  # type: ignore[arg-type]
    assert caught.value.argument == "core_btf"
    with pytest.raises(ebpfvm.ArgumentTypeError) as caught:
        ebpfvm.load(CORE, core_strict="yes")  # type: ignore[arg-type]
    assert caught.value.argument == "core_strict"
