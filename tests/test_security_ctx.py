"""Issue 11, contexts, BTF and the command line: F10 (runner part), F14, F15,
F17 and F18. Each test fails on the code before its fix."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

import kernel_oracle
from bounded import run_bounded
from conftest import REPO
from ebpfvm import HelperFault, MemoryFault, VmBusy, assemble
from ebpfvm.capture import run_capture
from ebpfvm.contexts import (
    CONTEXT_SIZE,
    SKB_HEADROOM,
    SKB_SIZE,
    XDP_TAILROOM,
    SkbRunner,
    XdpRunner,
)
from ebpfvm.vm import EbpfVmMbuff, EbpfVmRaw

EXAMPLES = REPO / "examples" / "bpf"
M64 = (1 << 64) - 1
MARKER = 0x5A5A5A5A


# -- F17: LD_ABS/LD_IND under SkbRunner read the packet ------------------------------

PACKET = bytes(range(0x40, 0x40 + 60))
"""An Ethernet-sized frame whose every byte differs from the __sk_buff fields."""

LEGACY_LOADS = [
    ("mov r6, r1\nldabsb 0\nexit", PACKET[0]),
    ("mov r6, r1\nldabsh 12\nexit", int.from_bytes(PACKET[12:14], "big")),
    ("mov r6, r1\nldabsw 8\nexit", int.from_bytes(PACKET[8:12], "big")),
    ("mov r6, r1\nmov r7, 3\nldindb r7, 2\nexit", PACKET[5]),
    ("mov r6, r1\nmov r7, 20\nldindw r7, 4\nexit", int.from_bytes(PACKET[24:28], "big")),
    ("mov r6, r1\nldabsw 58\nexit", 0),  # past the end: the program ends with r0 = 0
]
"""(program, r0): expected values read by hand from PACKET (big-endian, as
BPF_LD_ABS/IND define), the same as the kernel gives (test below)."""


@pytest.mark.parametrize(("source", "expected"), LEGACY_LOADS)
def test_skb_legacy_packet_loads_read_the_packet(engine: str, source: str,
                                                 expected: int) -> None:
    """F17: ldabs/ldind under SkbRunner read skb->data, not struct __sk_buff
    (before: ldabsw 8 gave skb->mark, ldabsb 0 the low byte of skb->len)."""
    runner = SkbRunner(assemble(source), engine=engine, mark=0x11223344)
    try:
        assert runner.run(PACKET).r0 == expected
    finally:
        runner.close()


def test_skb_legacy_loads_given_a_raw_vm(engine: str) -> None:
    """F17: an EbpfVmRaw given to SkbRunner runs as an EbpfVmMbuff with the
    same program, helpers and budget; the given VM is left as it was."""
    raw = EbpfVmRaw(assemble("mov r6, r1\nldabsb 0\ncall 6001\nadd r0, r6\nexit"))
    raw.register_helper(6001, lambda *_args: 0)
    raw.budget = 1234
    runner = SkbRunner(raw, engine=engine)
    try:
        assert isinstance(runner.vm, EbpfVmMbuff) and runner.vm.budget == 1234
        skb = runner.base  # the __sk_buff is at the start of the frame
        assert runner.run(PACKET).r0 == 0 + skb  # helper 6001 ran (r0 = 0), r6 = ctx
    finally:
        runner.close()
    assert isinstance(raw, EbpfVmRaw)


def test_object_skb_builds_an_mbuff_vm() -> None:
    """F17: ElfObject.skb() builds the VM kind SkbRunner runs (EbpfVmMbuff)."""
    from ebpfvm import load

    runner = load(EXAMPLES / "block_port.o").skb()
    try:
        assert type(runner.vm) is EbpfVmMbuff
    finally:
        runner.close()


SCHED_CLS = 3
"""BPF_PROG_TYPE_SCHED_CLS: a tc program; its skb->data is the Ethernet header."""


@pytest.mark.skipif(kernel_oracle.available() is not None,
                    reason=f"bpf() unavailable: {kernel_oracle.available()}")
@pytest.mark.parametrize(("source", "expected"), LEGACY_LOADS)
def test_skb_legacy_loads_match_the_kernel(source: str, expected: int) -> None:
    """F17: the kernel (BPF_PROG_TEST_RUN of a tc program) agrees with the
    values read by hand, and so does SkbRunner."""
    code = assemble(source)
    fd = kernel_oracle.prog_load(code, SCHED_CLS)
    try:
        kernel_r0, _packet = kernel_oracle.test_run(fd, PACKET)
    finally:
        os.close(fd)
    runner = SkbRunner(code)
    try:
        assert kernel_r0 == expected == runner.run(PACKET).r0
    finally:
        runner.close()


def test_skb_program_sees_only_its_skb_and_packet(checked_engine: str) -> None:
    """F17/F18: an skb program's memory is its __sk_buff and its packet: a
    store past data_end faults instead of landing in the next packet."""
    prog = assemble("ldxw r2, [r1+80]\nstw [r2+16], 7\nmov r0, 0\nexit")
    runner = SkbRunner(prog, engine=checked_engine)
    try:
        with pytest.raises(MemoryFault) as caught:
            runner.run(bytes(20))
        # data_end + 16; the packet sits after the __sk_buff and a 64-byte gap.
        assert caught.value.address == (runner.base + SKB_SIZE + CONTEXT_SIZE + SKB_HEADROOM
                                        + 20 + 16)
        assert caught.value.size == 4 and caught.value.access == "store"
    finally:
        runner.close()


# -- F18: nothing of an earlier run stays readable in the frame ---------------------


def _peek_and_poke(offset: int) -> bytes:
    """r0 = the u64 at ctx->data + `offset`, then store MARKER there."""
    return assemble(f"""
        ldxw r2, [r1+0]
        add r2, {offset}
        ldxdw r0, [r2+0]
        stdw [r2+0], {MARKER}
        exit
    """)


def _runs(runner: XdpRunner, packets: Iterable[bytes]) -> list[int | str]:
    """r0 of each run, or the fault's type name."""
    out: list[int | str] = []
    for packet in packets:
        try:
            out.append(runner.run(packet).r0)
        except MemoryFault as fault:
            out.append(type(fault).__name__)
    return out


@pytest.mark.parametrize("offset", [30, 150, 1000])
def test_xdp_tailroom_is_cleared_between_runs(engine: str, offset: int) -> None:
    """F18: a marker stored past data_end (in the tailroom), or inside an
    earlier longer packet, reads as zero in the next run, in every engine."""
    runner = XdpRunner(_peek_and_poke(offset), engine=engine)
    try:
        first = runner.run(bytes(200)).r0
        assert first == 0
        assert _runs(runner, [bytes(20), bytes(20)]) == [0, 0]
    finally:
        runner.close()


def test_xdp_memory_past_the_tailroom_faults(checked_engine: str) -> None:
    """F18: past the tailroom the frame is out of bounds, so no run can leave
    bytes there for a later one (before: the whole 64 KiB frame was writable
    and never cleared)."""
    offset = XDP_TAILROOM + 4000
    runner = XdpRunner(_peek_and_poke(offset), engine=checked_engine)
    try:
        first = _runs(runner, [bytes(20)])
        assert first == ["MemoryFault"]
        assert _runs(runner, [bytes(20)]) == ["MemoryFault"]
    finally:
        runner.close()


def test_xdp_adjust_tail_grows_into_the_tailroom(engine: str) -> None:
    """F18: bpf_xdp_adjust_tail still grows the packet, up to the tailroom,
    and the grown bytes are zeros, whatever an earlier run left there."""
    grow = assemble("mov r6, r1\nmov r2, 100\ncall 65\nmov r0, 2\nexit")
    runner = XdpRunner(grow, engine=engine)
    poke = XdpRunner(_peek_and_poke(40), engine=engine)
    try:
        assert runner.run(bytes(20)).packet == bytes(120)
        assert runner.run(b"\xff" * 20).packet == b"\xff" * 20 + bytes(100)
        too_far = assemble(f"mov r2, {XDP_TAILROOM + 1}\ncall 65\nexit")
        assert XdpRunner(too_far, engine=engine).run(bytes(20)).r0 == (-22) & M64
    finally:
        runner.close()
        poke.close()


def test_capture_batches_do_not_leak_between_packets(engine: str) -> None:
    """F18, capture path: a store into the padding after a packet's xdp_md
    (inside its batch span) is not visible to the next packet in that slot."""
    prog = assemble(f"ldxdw r0, [r1+24]\nstdw [r1+24], {MARKER}\nexit")
    vm = EbpfVmRaw(prog)
    frames = [(0.0, bytes(60)), (1.0, bytes(60)), (2.0, bytes(40))]
    stats = run_capture(vm, frames, context="xdp", verdicts="none", engine=engine, chunk=1)
    assert stats.packets == 3
    assert dict(stats.histogram) == {"0": 3}


# -- F10: closing the runner from a helper during the run --------------------------

_CLOSE_IN_HELPER = """
from ebpfvm import HelperFault, VmBusy, assemble
from ebpfvm.contexts import SkbRunner, XdpRunner
out = []
for kind in (XdpRunner, SkbRunner):
    runner = kind(assemble("call 6000\\nldxw r0, [r1+0]\\nexit"), engine={engine!r})
    runner.vm.register_helper(6000, lambda *_args: runner.close() or 0)
    try:
        runner.run(bytes(64))
        out.append(["returned"])
    except HelperFault as fault:
        out.append([type(fault.cause).__name__, fault.helper_id, fault.pc])
    runner.close()
report(out)
"""


def test_runner_close_inside_a_helper_is_refused(engine: str) -> None:
    """F10: a helper closing the XdpRunner/SkbRunner that runs it gets VmBusy
    (the run ends with a HelperFault whose cause is VmBusy) instead of the
    frame being unmapped under the running code (a segfault)."""
    outcome = run_bounded(_CLOSE_IN_HELPER.format(engine=engine), memory_mb=1024, timeout=60)
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    assert outcome.result() == [["VmBusy", 6000, 0], ["VmBusy", 6000, 0]]


def test_runner_run_inside_a_helper_is_refused() -> None:
    """F10: a helper running the runner again gets VmBusy before it rewrites
    the frame of the run in progress (before: the packet under the running
    program was replaced by the helper's one)."""
    runner = XdpRunner(assemble("call 6000\nexit"))
    runner.vm.register_helper(6000, lambda *_args: runner.run(b"\x22" * 20).r0)
    start = CONTEXT_SIZE + runner.headroom
    try:
        with pytest.raises(HelperFault) as caught:
            runner.run(b"\x11" * 20)
        assert isinstance(caught.value.cause, VmBusy)
        assert bytes(runner._frame.view[start : start + 20]) == b"\x11" * 20
    finally:
        runner.close()


# -- F14: crafted BTF ---------------------------------------------------------------

BTF_INT, BTF_ARRAY, BTF_STRUCT, BTF_TYPEDEF, BTF_VOLATILE, BTF_CONST = 1, 3, 4, 8, 9, 10
BTF_VAR, BTF_DATASEC = 14, 15
BTF_HEADER = struct.Struct("<HBBIIIII")


class BtfBuilder:
    """A .BTF section from scratch (include/uapi/linux/btf.h): header, type
    section, string section. Type ids start at 1, in the order added."""

    def __init__(self) -> None:
        self.strings = bytearray(b"\0")
        self.types: list[bytes] = []

    @property
    def next_id(self) -> int:
        return len(self.types) + 1

    def _name(self, text: str) -> int:
        if not text:
            return 0
        offset = len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def add(self, kind: int, name: str, ref: int, vlen: int = 0, extra: bytes = b"") -> int:
        self.types.append(struct.pack("<III", self._name(name), kind << 24 | vlen, ref) + extra)
        return len(self.types)

    def int(self, name: str, size: int) -> int:
        return self.add(BTF_INT, name, size, extra=struct.pack("<I", size * 8))

    def struct(self, name: str, size: int, members: list[tuple[str, int, int]]) -> int:
        extra = b"".join(struct.pack("<III", self._name(m), t, bits) for m, t, bits in members)
        return self.add(BTF_STRUCT, name, size, len(members), extra)

    def array(self, element: int, index: int, count: int) -> int:
        return self.add(BTF_ARRAY, "", 0, extra=struct.pack("<III", element, index, count))

    def var(self, name: str, type_id: int) -> int:
        return self.add(BTF_VAR, name, type_id, extra=struct.pack("<I", 1))

    def datasec(self, name: str, variables: list[tuple[int, int, int]]) -> int:
        extra = b"".join(struct.pack("<III", *v) for v in variables)
        return self.add(BTF_DATASEC, name, 0, len(variables), extra)

    def build(self) -> bytes:
        types = b"".join(self.types)
        return BTF_HEADER.pack(0xEB9F, 1, 0, BTF_HEADER.size, 0, len(types), len(types),
                               len(self.strings)) + types + bytes(self.strings)


def _with_section(name: str, content: bytes, source: Path = EXAMPLES / "config.o") -> bytes:
    """`source` with section `name`'s content replaced by `content` (appended
    at the end of the file; the section header points there)."""
    from elftools.elf.elffile import ELFFile

    data = bytearray(source.read_bytes())
    with open(source, "rb") as handle:
        elf = ELFFile(handle)
        index = next(i for i, s in enumerate(elf.iter_sections()) if s.name == name)
        header = elf["e_shoff"] + index * elf["e_shentsize"]
    data += bytes(-len(data) % 8)
    struct.pack_into("<QQ", data, header + 24, len(data), len(content))  # sh_offset, sh_size
    return bytes(data + content)


def _generation_as(build: Callable[[BtfBuilder], int]) -> bytes:
    """config.o whose BTF gives its .data variable `generation` (4 bytes at
    offset 0) the type `build` adds."""
    btf = BtfBuilder()
    type_id = build(btf)
    var = btf.var("generation", type_id)
    btf.datasec(".data", [(var, 0, 4)])
    return _with_section(".BTF", btf.build())


def _self_struct(b: BtfBuilder) -> int:
    return b.struct("loop", 4, [("self", b.next_id, 0)])


def _self_array(b: BtfBuilder) -> int:
    index = b.int("int", 4)
    return b.array(b.next_id, index, 1)


def _qualified_self(b: BtfBuilder) -> int:
    first = b.next_id  # struct -> const -> volatile -> typedef -> the struct
    b.struct("loop", 4, [("self", first + 1, 0)])
    b.add(BTF_CONST, "", first + 2)
    b.add(BTF_VOLATILE, "", first + 3)
    b.add(BTF_TYPEDEF, "loop_t", first)
    return first


def _empty_structs(b: BtfBuilder) -> int:
    index = b.int("int", 4)
    empty = b.struct("empty", 0, [])
    return b.array(empty, index, 0xFFFF_FFFF)


def _deep_structs(b: BtfBuilder) -> int:
    inner = b.int("u32", 4)
    for level in range(3000):
        inner = b.struct(f"s{level}", 4, [("m", inner, 0)])
    return inner


def _overflowing_size(b: BtfBuilder) -> int:
    index = b.int("int", 4)
    big = b.array(index, index, 0xFFFF_FFFF)
    return b.array(big, index, 0xFFFF_FFFF)


CRAFTED_BTF = {"self_struct": _self_struct, "self_array": _self_array,
               "qualified_self": _qualified_self, "empty_structs": _empty_structs,
               "deep_structs": _deep_structs, "overflowing_size": _overflowing_size}

_LOAD_CRAFTED = """
from pathlib import Path
from ebpfvm import ElfError, load
try:
    obj = load(Path({path!r}).read_bytes())
except ElfError as error:
    report(["load", type(error).__name__, error.section])
else:
    try:
        obj.variables(".data")
        report(["variables", "ok", None])
    except ElfError as error:
        report(["variables", type(error).__name__, error.section])
"""


@pytest.mark.parametrize("case", sorted(CRAFTED_BTF))
def test_crafted_btf_is_refused_at_load(case: str, tmp_path: Path) -> None:
    """F14: a type that contains itself (directly, through an array, or through
    const/volatile/typedef), nesting 3,000 deep, a size past 2**32 or an array
    of 2**32-1 empty structs: load() raises ElfError naming .BTF (before: a
    RecursionError from variables(), or a hang building 2**32 values). Run in
    a child under a memory and a time limit."""
    path = tmp_path / f"{case}.o"
    path.write_bytes(_generation_as(CRAFTED_BTF[case]))
    outcome = run_bounded(_LOAD_CRAFTED.format(path=str(path)), memory_mb=768, timeout=60)
    assert not outcome.timed_out
    assert outcome.result() == ["load", "ElfError", ".BTF"]


def test_crafted_btf_codec_is_refused() -> None:
    """F14: the library's own entry: parse_btf + Codec on a self-containing
    struct raises ElfError('.BTF') instead of recursing when decoding."""
    from ebpfvm import ElfError
    from ebpfvm.btf import Codec, parse_btf

    btf_builder = BtfBuilder()
    loop = _self_struct(btf_builder)
    btf = parse_btf(btf_builder.build())
    with pytest.raises(ElfError) as caught:
        Codec(btf, loop).decode(bytes(4))
    assert caught.value.section == ".BTF"


def test_crafted_btf_run_is_one_line_error(tmp_path: Path) -> None:
    """F14/F15: `ebpfvm run` on an object with a self-containing struct: exit 1,
    one stderr line naming .BTF (before: a RecursionError traceback)."""
    path = tmp_path / "loop.o"
    path.write_bytes(_generation_as(_self_struct))
    result = _cli("run", str(path), "--hex", "00" * 40)
    _assert_one_line_error(result)
    assert ".BTF" in result.stderr


# -- F15: command-line tracebacks ---------------------------------------------------


def _cli(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.run([sys.executable, "-m", "ebpfvm.cli", *argv], capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


def _assert_one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("ebpfvm: error: ")


def _assert_usage_error(result: subprocess.CompletedProcess[str], option: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("usage: ebpfvm run ")
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ebpfvm run: error: ") and option in last


@pytest.mark.parametrize("text", ["Infinity", '{"0": -Infinity}', '{"0": NaN}',
                                  '{"0": 1e400}', "[" * 5000 + "]" * 5000],
                         ids=["inf", "minus_inf", "nan", "1e400", "nested_5000"])
def test_map_json_out_of_range_is_one_line_error(text: str) -> None:
    """F15: --map JSON with Infinity, NaN, 1e400 or nesting 5,000 deep is a
    one-line error, exit 1 (before: OverflowError or RecursionError)."""
    result = _cli("run", str(EXAMPLES / "proto_count.o"), "--hex", "00",
                  "--map", f"counts={text}")
    _assert_one_line_error(result)
    assert "--map counts" in result.stderr


def test_budget_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    """F15: --budget must be 1..2**63-1: anything else is a usage error with
    the run usage, exit 2 (before: IndexError or struct.error tracebacks);
    2**63-1 itself runs."""
    spin = tmp_path / "loop.s"
    spin.write_text("loop:\nadd r0, 1\nja loop\nexit\n")
    for budget in ("-5", "0", "18446744073709551616", str(1 << 63)):
        result = _cli("run", str(spin), f"--budget={budget}", "--engine", "interp")
        _assert_usage_error(result, "--budget")
    prog = tmp_path / "one.s"
    prog.write_text("mov r0, 7\nexit\n")
    result = _cli("run", str(prog), f"--budget={(1 << 63) - 1}")
    assert result.returncode == 0 and "r0 = 0x7" in result.stdout


@pytest.mark.parametrize("mbuff", ["0,99999999999", "100000000000,0", "-8,0", "1"])
def test_mbuff_out_of_range_is_a_usage_error(mbuff: str) -> None:
    """F15: --mbuff offsets beyond the 4 KiB metadata buffer are a usage error,
    exit 2 (before: a MemoryError allocating 100 GB)."""
    result = _cli("run", str(EXAMPLES / "block_port.o"), f"--mbuff={mbuff}", "--hex", "00")
    _assert_usage_error(result, "--mbuff")


def _btf_ext(line_info: bytes) -> bytes:
    """A .BTF.ext section: the 24-byte header, then `line_info` as its line block."""
    return BTF_HEADER.pack(0xEB9F, 1, 0, BTF_HEADER.size, 0, 0, 0, len(line_info)) + line_info


@pytest.mark.parametrize("line_info", [
    b"\x10\x00",  # a 2-byte block: no room for its record size
    struct.pack("<I", 2),  # records of 2 bytes
    struct.pack("<I", 18) + struct.pack("<II", 0, 1) + bytes(18),  # not a multiple of 4
])
def test_bad_btf_ext_line_info_is_elf_error(line_info: bytes, tmp_path: Path) -> None:
    """F15: malformed .BTF.ext line info raises ElfError('.BTF.ext') in the
    library and is a one-line error in `ebpfvm disasm` (before: struct.error)."""
    from ebpfvm import ElfError
    from ebpfvm.objdump import disassemble_object

    blob = _with_section(".BTF.ext", _btf_ext(line_info))
    with pytest.raises(ElfError) as caught:
        disassemble_object(blob)
    assert caught.value.section == ".BTF.ext"
    assert disassemble_object(blob, source=False).count("Disassembly of section") == 1
    path = tmp_path / "bad_ext.o"
    path.write_bytes(blob)
    result = _cli("disasm", str(path), "--style", "llvm")
    _assert_one_line_error(result)
    assert ".BTF.ext" in result.stderr


PCAP_HEADER = struct.Struct("<IHHiIII")
PCAP_RECORD = struct.Struct("<IIII")
PCAP_MAGIC = 0xA1B2C3D4


def _pcap(records: list[tuple[int, bytes]]) -> bytes:
    """A pcap file (Ethernet) with records of (caplen field, bytes that follow)."""
    out = PCAP_HEADER.pack(PCAP_MAGIC, 2, 4, 0, 0, 65535, 1)
    for caplen, body in records:
        out += PCAP_RECORD.pack(0, 0, caplen, max(caplen, len(body)) & 0xFFFF_FFFF) + body
    return out


_RUN_PCAP = """
import sys
from ebpfvm.cli import main
report(main(["run", {prog!r}, "--pcap", {pcap!r}, "--engine", "interp", "--no-progress"]))
"""


@pytest.mark.parametrize(("case", "records", "reason"), [
    ("huge_caplen", [(60, bytes(60)), (0xFFFF_FFFF, bytes(64))], "bad caplen"),
    ("over_snaplen", [(262145, bytes(100))], "bad caplen"),
    ("truncated", [(60, bytes(60)), (60, bytes(30))], "truncated"),
])
def test_pcap_bad_caplen_is_a_typed_error(case: str, records: list[tuple[int, bytes]],
                                          reason: str, tmp_path: Path) -> None:
    """F15: a pcap record whose caplen is 0xFFFFFFFF (or past tcpdump's 262144)
    is a CaptureError ("bad caplen") before anything is allocated, and a record
    cut short is "truncated"; the command prints one line, exit 1 (before: a
    MemoryError under a memory limit, or a silently short packet)."""
    from ebpfvm.capture import CaptureError, read_capture

    path = tmp_path / f"{case}.pcap"
    path.write_bytes(_pcap(records))
    with pytest.raises(CaptureError) as caught:
        list(read_capture(path))
    assert caught.value.reason == reason and caught.value.path == str(path)
    prog = tmp_path / "pass.s"
    prog.write_text("mov r0, 2\nexit\n")
    outcome = run_bounded(_RUN_PCAP.format(prog=str(prog), pcap=str(path)), memory_mb=512,
                          timeout=60)
    assert outcome.result() == 1
    assert "Traceback" not in outcome.stderr
    assert outcome.stderr.count("\n") == 1 and outcome.stderr.startswith("ebpfvm: error: ")
