"""The kernel concepts as tables: the helper registry, the map registry, the
program-type registry, and the loader that only loads (issue 12, point 4)."""

from __future__ import annotations

import ast
import struct
from collections.abc import Collection, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ebpfvm import assemble, load
from ebpfvm.bloom import BloomFilter
from ebpfvm.callbacks import callback_helpers
from ebpfvm.capture import passes, run_capture, verdict_name
from ebpfvm.cli import Loaded, _preload_maps, main
from ebpfvm.contexts import SkbRunner, XdpRunner
from ebpfvm.devmaps import RedirectMap
from ebpfvm.errors import ElfError, MapError
from ebpfvm.helper_table import (
    BASE,
    HELPERS,
    ArgKind,
    HelperSpec,
    Impl,
    allowed_helpers,
    helper_name,
    helper_number,
    helpers_of,
    markdown_table,
    supported_helpers,
)
from ebpfvm.kernel import KernelEnv, kernel_helpers
from ebpfvm.kernel_helper_names import KERNEL_HELPER_NAMES
from ebpfvm.lpmtrie import LpmTrie
from ebpfvm.mapbase import MAP_CLASSES, BpfMap, MapSpec, map_bytes
from ebpfvm.mapinmap import MapOfMaps
from ebpfvm.maps import Map, MapType, ProgArray, QueueMap, RingBuf, create_map, map_helpers
from ebpfvm.mapview import describe, entries, preload
from ebpfvm.percpu import PerCpuMap
from ebpfvm.perf import PerfEventArray
from ebpfvm.progtypes import (
    PROG_TYPES,
    SKB_LAYOUT,
    XDP_MD,
    ProgType,
    TcAction,
    Verdicts,
    XdpAction,
    prog_type,
    prog_type_for_section,
    runner_class,
)
from ebpfvm.userringbuf import UserRingBuf
from ebpfvm.vm import EbpfVmRaw

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src" / "ebpfvm"
DATA = Path(__file__).resolve().parent / "data" / "elf"

# -- helpers --------------------------------------------------------------------------------

# The kernel's numbers from linux/bpf.h's __BPF_FUNC_MAPPER, written here from
# the UAPI header, not from our own list.
UAPI_NUMBERS = {
    "bpf_map_lookup_elem": 1, "bpf_map_update_elem": 2, "bpf_map_delete_elem": 3,
    "bpf_ktime_get_ns": 5, "bpf_trace_printk": 6, "bpf_skb_store_bytes": 9,
    "bpf_l3_csum_replace": 10, "bpf_l4_csum_replace": 11, "bpf_tail_call": 12,
    "bpf_get_current_pid_tgid": 14, "bpf_skb_load_bytes": 26, "bpf_csum_diff": 28,
    "bpf_xdp_adjust_head": 44, "bpf_xdp_adjust_tail": 65, "bpf_map_push_elem": 87,
    "bpf_ringbuf_output": 130,
}


@pytest.mark.parametrize(("name", "number"), sorted(UAPI_NUMBERS.items()))
def test_registry_numbers_are_the_kernels(name: str, number: int) -> None:
    assert helper_number(name) == number
    assert helper_name(number) == name
    assert HELPERS[number].name == name and HELPERS[number].number == number


def test_helper_names_are_unique_and_unknown_numbers_named() -> None:
    assert len(set(KERNEL_HELPER_NAMES)) == len(KERNEL_HELPER_NAMES)
    assert helper_name(1 << 20) == "unknown helper 1048576"
    with pytest.raises(KeyError):
        helper_number("bpf_no_such_helper")


def _normal(name: str) -> str:
    return name.lower().removesuffix("_idx").replace("_", "")


_HELPER_CONSTANTS = {_normal(name): name for name in KERNEL_HELPER_NAMES}


def numeric_helper_definitions(source: str, path: str) -> Iterator[str]:
    """Where `source` writes a helper number as a literal: ``BPF_TAIL_CALL = 12``,
    ``{12: Helper(...)}`` or ``register_helper(12, ...)`` (uBPF's own test
    helpers, numbered by uBPF, are not kernel helpers)."""
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "ubpf_test_helpers":
            skip.update(id(inner) for inner in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, int):
            for target in node.targets:
                if isinstance(target, ast.Name) and _normal(target.id) in _HELPER_CONSTANTS:
                    yield f"{path}:{node.lineno} {target.id} = {node.value.value}"
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(key.value, int) \
                        and isinstance(value, ast.Call) and getattr(value.func, "id", "") == "Helper":
                    yield f"{path}:{node.lineno} {{{key.value}: Helper(...)}}"
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "register_helper" \
                and node.args and isinstance(node.args[0], ast.Constant):
            yield f"{path}:{node.lineno} register_helper({node.args[0].value}, ...)"


def test_the_checker_finds_numeric_helper_definitions() -> None:
    sample = ("BPF_MAP_LOOKUP_ELEM = 1\nBPF_KTIME_GETNS_IDX = 5\n"
              "helpers = {12: Helper(f, 'x')}\nvm.register_helper(44, f)\nOTHER = 3\n")
    assert len(list(numeric_helper_definitions(sample, "sample"))) == 4


def test_every_helper_number_is_defined_once_in_the_registry() -> None:
    """Only the kernel's name list numbers helpers: no module writes a number."""
    found = [hit for path in sorted(SRC.rglob("*.py"))
             for hit in numeric_helper_definitions(path.read_text(), path.name)]
    assert found == []


def test_providers_implement_exactly_their_registry_rows() -> None:
    kernel = kernel_helpers(KernelEnv())
    maps = map_helpers({})
    assert set(kernel) == helpers_of(Impl.KERNEL)
    assert set(maps) == helpers_of(Impl.MAPS)
    callbacks = callback_helpers({})
    assert set(callbacks) == helpers_of(Impl.CALLBACKS)
    for number, helper in {**kernel, **maps, **callbacks}.items():
        assert helper.name == helper_name(number)
    xdp = XdpRunner(assemble("mov r0, 2\nexit"))
    skb = SkbRunner(assemble("mov r0, 0\nexit"))
    try:
        # bpf_csum_diff (an SKB row also allowed for xdp) is registered by both runners
        assert set(xdp.vm._helpers) == (helpers_of(Impl.XDP) | helpers_of(Impl.RUNNER)
                                        | {helper_number("bpf_csum_diff")})
        assert set(skb.vm._helpers) == helpers_of(Impl.SKB) | helpers_of(Impl.RUNNER)
    finally:
        xdp.close()
        skb.close()
    obj = load(DATA / "maps.o")
    with obj:
        vm = obj.vm("count_first_byte")
        assert helper_number("bpf_tail_call") in vm._helpers
        assert set(vm._helpers) == helpers_of(Impl.KERNEL) | helpers_of(Impl.MAPS) \
            | helpers_of(Impl.TAIL_CALL) | helpers_of(Impl.CALLBACKS)
    assert supported_helpers() == frozenset().union(*(helpers_of(impl) for impl in Impl))


def test_rows_have_argument_kinds() -> None:
    assert HELPERS[helper_number("bpf_map_update_elem")].args == (
        ArgKind.MAP, ArgKind.POINTER, ArgKind.POINTER, ArgKind.SCALAR)
    assert HELPERS[helper_number("bpf_xdp_adjust_head")].args == (
        ArgKind.CONTEXT, ArgKind.SCALAR)
    for spec in HELPERS.values():  # a SIZE always follows the POINTER it measures
        for index, kind in enumerate(spec.args):
            if kind is ArgKind.SIZE:
                assert spec.args[index - 1] is ArgKind.POINTER, spec.name


def test_allowed_helpers_per_program_type() -> None:
    store, load_bytes = helper_number("bpf_skb_store_bytes"), helper_number("bpf_skb_load_bytes")
    adjust_head = helper_number("bpf_xdp_adjust_head")
    assert store not in prog_type("xdp").allowed_helpers
    assert store in prog_type("sched_cls").allowed_helpers
    assert store not in prog_type("socket_filter").allowed_helpers
    assert load_bytes in prog_type("socket_filter").allowed_helpers
    assert adjust_head in prog_type("xdp").allowed_helpers
    assert adjust_head not in prog_type("sched_cls").allowed_helpers
    assert helper_number("bpf_csum_diff") in prog_type("xdp").allowed_helpers
    for name in ("xdp", "sched_cls", "socket_filter"):  # bpf_base_func_proto's
        for helper in ("bpf_map_lookup_elem", "bpf_tail_call", "bpf_ktime_get_ns",
                       "bpf_ringbuf_output"):
            assert helper_number(helper) in allowed_helpers(name)
        assert helper_number("bpf_probe_read") not in allowed_helpers(name)  # tracing only


def test_the_loader_check_is_derived_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray((DATA / "maps.o").read_bytes())
    at = data.index(bytes.fromhex("8500000001000000"))  # call 1
    number = helper_number("bpf_sk_lookup_tcp")
    data[at + 4 : at + 8] = number.to_bytes(4, "little")
    with pytest.raises(ElfError, match="bpf_sk_lookup_tcp"):  # the program's problem
        load(bytes(data)).program()
    monkeypatch.setitem(HELPERS, number, HelperSpec(
        "bpf_sk_lookup_tcp", (ArgKind.CONTEXT, ArgKind.POINTER, ArgKind.SIZE, ArgKind.SCALAR, ArgKind.SCALAR),
        frozenset({"xdp"}), Impl.XDP))
    assert load(bytes(data)).program().helpers  # one row, and the loader accepts it


def _guide_table() -> str:
    text = (REPO / "docs" / "guide.md").read_text()
    start = text.index("<!-- helper-table")
    start = text.index("\n", start) + 1
    return text[start : text.index("<!-- end helper-table -->")].strip()


def test_the_guides_helper_table_is_the_registry() -> None:
    assert _guide_table() == markdown_table()
    assert markdown_table().count("\n") == len(HELPERS) + 1


# -- maps -----------------------------------------------------------------------------------

SHAPES = {MapType.HASH: (4, 8, 4, Map), MapType.ARRAY: (4, 8, 4, Map),
          MapType.PERCPU_HASH: (4, 8, 4, PerCpuMap),
          MapType.PERCPU_ARRAY: (4, 8, 4, PerCpuMap),
          MapType.LRU_HASH: (4, 8, 4, Map), MapType.LRU_PERCPU_HASH: (4, 8, 4, PerCpuMap),
          MapType.PROG_ARRAY: (4, 4, 4, ProgArray), MapType.QUEUE: (0, 8, 4, QueueMap),
          MapType.STACK: (0, 8, 4, QueueMap), MapType.RINGBUF: (0, 0, 4096, RingBuf),
          MapType.DEVMAP: (4, 4, 4, RedirectMap), MapType.CPUMAP: (4, 4, 4, RedirectMap),
          MapType.XSKMAP: (4, 4, 4, RedirectMap), MapType.DEVMAP_HASH: (4, 8, 4, RedirectMap),
          MapType.LPM_TRIE: (8, 4, 4, LpmTrie), MapType.BLOOM_FILTER: (0, 4, 4, BloomFilter),
          MapType.PERF_EVENT_ARRAY: (4, 4, 2, PerfEventArray),
          MapType.ARRAY_OF_MAPS: (4, 4, 2, MapOfMaps), MapType.HASH_OF_MAPS: (8, 4, 2, MapOfMaps),
          MapType.USER_RINGBUF: (0, 0, 4096, UserRingBuf)}  # uringbuf
MAP_FLAGS = {MapType.LPM_TRIE: 1}
"""Flags a map type needs (an LPM trie: BPF_F_NO_PREALLOC)."""


@pytest.mark.parametrize("map_type", list(MapType))
def test_the_registry_creates_every_map_type(map_type: MapType) -> None:
    key_size, value_size, max_entries, cls = SHAPES[map_type]
    assert MAP_CLASSES[map_type] is cls
    made = create_map("m", map_type, key_size, value_size, max_entries,
                      MAP_FLAGS.get(map_type, 0))
    assert type(made) is cls and isinstance(made, BpfMap)
    assert made.type == map_type and made.max_entries == max_entries
    assert describe(made).startswith("m: ")
    assert isinstance(entries(made), list)
    assert map_bytes(map_type, key_size, value_size, max_entries) > 0


def test_an_unregistered_map_type_is_refused() -> None:
    with pytest.raises(MapError, match="map type 4242 is not supported yet"):
        create_map("m", 4242, 4, 4, 4)


TOY_TYPE = 0x7001


class ToyMap(BpfMap):
    """A map type the rest of ebpfvm has never heard of: a counter per key."""

    kind = "toy"

    def __init__(self, spec: MapSpec) -> None:
        self.name, self.type = spec.name, spec.type
        self.key_size, self.value_size = spec.key_size, spec.value_size
        self.max_entries, self.flags, self.handle = spec.max_entries, spec.flags, 0
        self.counts: dict[Any, Any] = {}

    @classmethod
    def check_shape(cls, spec: MapSpec) -> None:
        if spec.key_size != 4:
            raise MapError(f"map {spec.name!r}: toy keys are 4 bytes")

    @classmethod
    def create(cls, spec: MapSpec, max_bytes: int) -> ToyMap:
        return cls(spec)

    def describe(self) -> str:
        return f"{self.name}: toy, {self.max_entries} counters"

    def entries_text(self, limit: int) -> list[str]:
        return [f"{key} counted {value}" for key, value in sorted(self.counts.items())][:limit]

    def preload_entry(self, key: Any, value: Any, programs: Collection[str] | None) -> None:
        self.counts[key] = value


@pytest.fixture
def toy_map_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MAP_CLASSES, TOY_TYPE, ToyMap)


def test_a_new_map_type_is_one_class_and_one_row(toy_map_type: None) -> None:
    toy = create_map("toys", TOY_TYPE, 4, 8, 16)
    assert isinstance(toy, ToyMap)
    assert map_bytes(TOY_TYPE, 4, 8, 16) == 12 * 16  # the base class's estimate
    with pytest.raises(MapError, match="toy keys"):
        create_map("bad", TOY_TYPE, 2, 8, 16)
    assert preload(toy, {"1": 5, "0x2": 7}) == 2
    assert describe(toy) == "toys: toy, 16 counters"
    assert entries(toy) == ["1 counted 5", "2 counted 7"]


def _with_map_type(data: bytes, old: bytes, new_type: int) -> bytes:
    at = data.index(old)
    return data[:at] + struct.pack("<I", new_type) + data[at + 4 :]


def test_the_loader_and_the_cli_use_a_new_map_type(toy_map_type: None) -> None:
    counts = struct.pack("<5I", MapType.HASH, 4, 8, 4, 0)  # maps.c's counts
    data = _with_map_type((DATA / "maps.o").read_bytes(), counts, TOY_TYPE)
    obj = load(data)
    toy = obj.maps["counts"]
    assert isinstance(toy, ToyMap) and toy.handle == id(toy)
    program = obj.program("count_first_byte")
    _preload_maps(Loaded(program.code, obj, program), ['counts={"3": 9}'])
    assert toy.counts == {3: 9}
    assert entries(toy) == ["3 counted 9"]


def test_no_isinstance_chains_on_map_classes() -> None:
    names = {"Map", "QueueMap", "RingBuf", "ProgArray", "TypedMap"}
    found = []
    for module in ("maps.py", "mapview.py", "elf.py", "cli.py", "objects.py", "ringbuf.py"):
        tree = ast.parse((SRC / module).read_text())
        tail_calls = {id(node) for top in tree.body if isinstance(top, ast.ClassDef)
                      and top.name == "_TailCalls" for node in ast.walk(top)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance" \
                    and id(node) not in tail_calls:
                classes = ast.unparse(node.args[1])
                if any(name in classes.replace("(", " ").replace(",", " ").split()
                       for name in names):
                    found.append(f"{module}:{node.lineno} {ast.unparse(node)}")
    assert found == []


# -- program types --------------------------------------------------------------------------


@pytest.mark.parametrize(("section", "name"), [
    ("xdp", "xdp"), ("xdp/tcp", "xdp"), ("xdp.frags", "xdp"), ("tc", "sched_cls"),
    ("tcx/ingress", "sched_cls"), ("classifier", "sched_cls"), (".classifier", "sched_cls"),
    ("action", "sched_act"), ("socket", "socket_filter"), ("socket/1", "socket_filter"),
    ("kprobe/sys_open", None), ("license", None)])
def test_section_names_give_program_types(section: str, name: str | None) -> None:
    found = prog_type_for_section(section)
    assert (found.name if found is not None else None) == name


def test_program_type_rows() -> None:
    xdp, tc, socket = prog_type("xdp"), prog_type("sched_cls"), prog_type("socket_filter")
    assert (xdp.context, tc.context, socket.context) == ("xdp", "skb", "skb")
    assert xdp.layout.size == XDP_MD.size == 24 and SKB_LAYOUT.size == 192
    assert xdp.layout.fields["data_end"] == 4 and tc.layout.fields["data_end"] == 80
    assert socket.packet_offset == 14 and xdp.packet_offset == tc.packet_offset == 0
    assert xdp.verdicts.actions is XdpAction and tc.verdicts.actions is TcAction
    assert socket.verdicts.actions is None  # the bytes kept
    assert runner_class("xdp") is XdpRunner and runner_class("skb") is SkbRunner


def test_verdicts_come_from_the_table() -> None:
    assert verdict_name(2, "xdp") == "XDP_PASS" and verdict_name(2, "tc") == "TC_ACT_SHOT"
    assert verdict_name((1 << 64) - 1, "tc") == "TC_ACT_UNSPEC"
    assert verdict_name(64, "none") == "64" and verdict_name(9, "xdp") == "9"
    assert passes(2, "xdp") and not passes(1, "xdp")
    assert passes(0, "tc") and not passes(2, "tc")
    assert passes(64, "none") and not passes(0, "none")


def test_xdp_md_is_packed_in_one_place() -> None:
    packers = [path.name for path in sorted(SRC.rglob("*.py"))
               if '"<6I"' in path.read_text() or "XDP_MD.pack" in path.read_text()
               or "XDP_MD.format" in path.read_text()]
    assert packers == ["progtypes.py"]


class ToyRunner:
    """A program type whose context is the packet's length (r1), nothing more."""

    def __init__(self, vm: Any, *, engine: str = "interp", max_packet: int = 65536) -> None:
        self.vm, self.engine = vm, engine

    def run(self, packet: bytes, trace: Any = None) -> Any:
        return SimpleNamespace(r0=self.vm.execute_program(bytearray(packet)), packet=b"")

    def close(self) -> None:
        pass


@pytest.fixture
def toy_prog_type(monkeypatch: pytest.MonkeyPatch) -> ProgType:
    toy = ProgType("toy", "toy", SKB_LAYOUT, Verdicts("none"), ("toy",),
                   f"{__name__}:ToyRunner")
    monkeypatch.setitem(PROG_TYPES, "toy", toy)
    return toy


def test_a_new_program_type_runs_through_the_table(toy_prog_type: ProgType,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert prog_type_for_section("toy/first") is toy_prog_type
    assert toy_prog_type.allowed_helpers == frozenset()  # no helper row names it yet
    program = "ldxb r0, [r1+1]\nexit"  # the packet's second byte
    stats = run_capture(EbpfVmRaw(assemble(program)), [(0.0, b"\x00\x05"), (0.0, b"\x00\x00")],
                        context="toy", verdicts="none", engine="interp")
    assert stats.histogram == {"5": 1, "0": 1}
    source = tmp_path / "toy.s"
    source.write_text(program)
    assert main(["run", str(source), "--context", "toy", "--hex", "0007"]) == 0
    assert "r0 = 0x7 (7)" in capsys.readouterr().out


# -- the loader only loads --------------------------------------------------------------------


def test_the_loader_imports_no_runner_or_vm() -> None:
    """elf.py builds nothing: VMs and runners come from objects.py (class
    _TailCalls, which another change rewrites, is left out)."""
    tree = ast.parse((SRC / "elf.py").read_text())
    imported = []
    for top in tree.body:
        if isinstance(top, ast.ClassDef) and top.name == "_TailCalls":
            continue
        for node in ast.walk(top):
            if isinstance(node, ast.ImportFrom):
                imported.append((node.level, node.module or ""))
    banned = {"contexts", "vm", "interpreter", "capture"}
    assert [m for level, m in imported if level and m.split(".")[0] in banned] == []
    assert [m for level, m in imported if not level and m.startswith("ebpfvm")] == []
    assert (1, "objects") in imported


def test_object_methods_delegate_to_the_building_module() -> None:
    obj = load(DATA / "maps.o")
    with obj:
        assert isinstance(obj.vm("count_first_byte"), EbpfVmRaw)
        runner = obj.xdp("count_first_byte")
        assert isinstance(runner, XdpRunner) and runner._owns_vm
        skb = obj.skb("count_first_byte")
        assert isinstance(skb, SkbRunner)
    assert runner.closed and skb.closed  # the object closed what it made
    assert {"xdp", "sched_cls", "socket_filter"} <= BASE


def test_the_guides_unsupported_helpers_are_the_registry() -> None:
    """loaderr (issue 13 point 3): the guide lists the helpers a packet
    program type may call that ebpfvm lacks, generated from helper_protos."""
    from ebpfvm.helper_protos import unsupported_markdown

    text = (REPO / "docs" / "guide.md").read_text()
    start = text.index("\n", text.index("<!-- unsupported-helpers")) + 1
    listed = text[start : text.index("<!-- end unsupported-helpers -->")].strip()
    assert listed == unsupported_markdown()
    assert "| 84 | `bpf_sk_lookup_tcp` |" in listed
