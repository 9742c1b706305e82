"""Run the vectors of ../shared/corpus through ebpfvm's public API and compare
every result with the kernel's (the corpus README's manifest format).

Expected values come only from the corpus's manifest.json, recorded by the
Linux kernel (BPF_PROG_TEST_RUN). This module uses only what a user has:
``ebpfvm.load``, ``obj.xdp()`` / ``obj.skb()``, the runners' ``run()``,
``obj.maps[...]`` and ``obj.data[...]``, ``consume()`` of a ring buffer and a
``KernelEnv``'s trace lines. Where it needs a result the API may not show yet,
it asks for it in one place (the "API" section below) and reports its absence
as a disagreement, so the vector fails until the API shows the result.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import ebpfvm
from ebpfvm.kernel import KernelEnv

REPO = Path(__file__).resolve().parents[1]

NOT_LISTED = {"prog_array", "ringbuf", "perf_event_array", "cgroup_array", "array_of_maps",
              "hash_of_maps", "devmap", "devmap_hash", "cpumap", "xskmap"}
"""Map types the manifest's MAPS leave out (README, "Conventions for MAPS")."""
ZERO_OMITTED = {"array", "percpu_array"}
"""Map types whose all-zero entries MAPS leave out (when defined in .maps)."""
QUEUES = {"queue", "stack"}

SKB_CTX_IN = {"mark": (8, 4), "priority": (32, 4), "ingress_ifindex": (36, 4),
              "ifindex": (40, 4), "tstamp": (152, 8), "wire_len": (160, 4),
              "gso_segs": (164, 4), "gso_size": (176, 4), "hwtstamp": (184, 8)}
"""The struct __sk_buff fields BPF_PROG_TEST_RUN takes from ctx_in (offset, size),
from linux/bpf.h; cb is five u32 words at offset 48. mark, priority and cb are
always given; the others when not zero (zero means the kernel's default)."""
SKB_CB = 48


def corpus_dir() -> Path:
    """shared/corpus beside the repo, or $EBPFVM_CORPUS_DIR."""
    env = os.environ.get("EBPFVM_CORPUS_DIR")
    return Path(env) if env else REPO.parent / "shared" / "corpus"


@dataclass(frozen=True)
class Vector:
    """One vector of one corpus program, with what loading it needs."""

    program: str
    name: str
    directory: Path
    manifest: dict[str, Any]
    """The program's entry in manifest.json."""
    definition: dict[str, Any]
    """The program's entry in vectors.json (section_types, skip_programs)."""
    vector: dict[str, Any]
    """The vector in manifest.json (setup, steps with the kernel's results)."""
    run_cpu: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.program, self.name)


def load_vectors(directory: Path) -> list[Vector]:
    """Every vector of the corpus, in manifest order."""
    manifest = json.loads((directory / "manifest.json").read_text())
    definitions = {p["name"]: p for p in
                   json.loads((directory / "vectors.json").read_text())["programs"]}
    run_cpu = int(manifest.get("run_cpu", 0))
    return [Vector(program["name"], vector["name"], directory, program,
                   definitions[program["name"]], vector, run_cpu)
            for program in manifest["programs"] for vector in program["vectors"]]


@dataclass(frozen=True)
class Disagreement:
    """The first difference between a run and the kernel."""

    field: str
    step: int
    """The step (0-based), or -1 for loading and setup."""
    expected: Any
    actual: Any

    def __str__(self) -> str:
        where = "setup" if self.step < 0 else f"step {self.step}"
        expected, actual = self.expected, self.actual
        detail = ""
        if isinstance(expected, bytes) and isinstance(actual, bytes):
            at = next((i for i, (a, b) in enumerate(zip(expected, actual, strict=False))
                       if a != b), min(len(expected), len(actual)))
            start = max(at - 8, 0)
            detail = (f" (lengths {len(expected)} and {len(actual)}, first difference at "
                      f"byte {at}; shown from byte {start})")
            expected, actual = expected[start : start + 48], actual[start : start + 48]
        return (f"{where}, {self.field}{detail}:\n  kernel: {_show(expected)}\n"
                f"  ebpfvm: {_show(actual)}")


def _show(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).hex()
    text = str(value)
    return text if len(text) <= 400 else text[:400] + "..."


class Differs(Exception):
    """Raised with the first Disagreement found."""

    def __init__(self, disagreement: Disagreement) -> None:
        super().__init__(str(disagreement))
        self.disagreement = disagreement


_EVERY: list[list[Disagreement]] = []
"""While run_vector(every=True) runs: the list collecting every disagreement."""


def report(disagreement: Disagreement) -> None:
    """Stop at the first disagreement, or collect it (run_vector's `every`)."""
    if not _EVERY:
        raise Differs(disagreement)
    _EVERY[-1].append(disagreement)


def expect(field_name: str, step: int, expected: Any, actual: Any) -> None:
    if expected != actual:
        report(Disagreement(field_name, step, expected, actual))


# -- API: the results the harness asks of ebpfvm's public API ------------------

def xdp_run(runner: Any, packet: bytes, ctx_in: bytes | None) -> Any:
    """XdpRunner.run; a step with a 24-byte struct xdp_md gives it as ``ctx_in``
    (BPF_PROG_TEST_RUN's ctx_in: data = metadata length, ingress_ifindex,
    rx_queue_index)."""
    if ctx_in is None:
        return runner.run(packet)
    return runner.run(packet, ctx=ctx_in)


def skb_run(runner: Any, packet: bytes, ctx_in: bytes | None) -> Any:
    """SkbRunner.run, with a step's 192-byte struct __sk_buff as ``ctx``
    (BPF_PROG_TEST_RUN's ctx_in)."""
    if ctx_in is None:
        return runner.run(packet)
    return runner.run(packet, ctx=ctx_in)


def result_ctx(result: Any) -> dict[str, Any]:
    """The __sk_buff fields mark, priority and cb as the program left them:
    ``result.ctx``, a mapping (or an object) by field name."""
    ctx = getattr(result, "ctx", None)
    if ctx is None:
        raise AttributeError("the run result carries no context (result.ctx)")
    get: Callable[[str], Any] = ctx.__getitem__ if hasattr(ctx, "keys") else \
        (lambda name: getattr(ctx, name))
    return {"mark": int(get("mark")), "priority": int(get("priority")),
            "cb": [int(word) for word in get("cb")]}


def result_xdp_ctx_raw(result: Any) -> bytes:
    """The struct xdp_md after the run, as BPF_PROG_TEST_RUN's ctx_out:
    ``result.context_raw``."""
    raw = getattr(result, "context_raw", None)
    if raw is None:
        raise AttributeError("the run result carries no raw context (result.context_raw)")
    return bytes(raw)


def ringbuf_discarded(ring: Any) -> int:
    """How many records the ring buffer's programs discarded so far:
    ``ring.discarded``."""
    count = getattr(ring, "discarded", None)
    if count is None:
        raise AttributeError(f"ring buffer {ring.name!r} does not count discarded records "
                             "(.discarded)")
    return int(count)


def cpu_value(value: Any, cpu: int) -> bytes:
    """A per-CPU map's value on `cpu` (a list of every CPU's value, as libbpf
    returns it), or the value itself for the other maps."""
    if isinstance(value, (list, tuple)):
        return bytes(value[cpu])
    return bytes(value)


# -- setup ---------------------------------------------------------------------

def load_options(vector: Vector) -> dict[str, Any]:
    """vectors.json's section_types (section -> program type, "*" for every
    unknown section) and skip_programs, for a ``load()`` that takes them. The
    runner is chosen by the entry's type in the manifest either way, and
    skipped programs are never built, so a load() without them still runs
    the vector."""
    accepted = inspect.signature(ebpfvm.load).parameters
    options = {name: vector.definition.get(name) for name in ("section_types", "skip_programs")}
    return {name: value for name, value in options.items() if value and name in accepted}


@dataclass
class Session:
    """One vector's fresh object and runner."""

    vector: Vector
    obj: Any
    runner: Any
    env: KernelEnv
    map_types: dict[str, str]
    data_maps: set[str]
    """The global-data maps: their single entry is the whole section image."""
    discarded: dict[str, int] = field(default_factory=dict)


def entry_type(vector: Vector) -> tuple[str, str]:
    """The program the vector runs and its type (the manifest's, from the kernel load)."""
    entry = vector.vector.get("entry") or vector.manifest["entry"]
    for program in vector.manifest["programs"]:
        if program["name"] == entry:
            return entry, str(program["prog_type"])
    return entry, str(vector.manifest["prog_type"])


def open_session(vector: Vector, engine: str) -> Session:
    """Load the object afresh, apply the vector's setup, build the entry's runner."""
    obj: Any = ebpfvm.load(vector.directory / vector.manifest["object"], **load_options(vector))
    setup = vector.vector.get("setup") or {}
    for section, data in (setup.get("data_sections") or {}).items():
        image = bytes.fromhex(data["image"])
        obj.data[section][: len(image)] = image
    map_types = {m["name"]: m["type"] for m in vector.manifest["maps"]}
    for name, entries in (setup.get("maps") or {}).items():
        write_entries(obj, name, entries)
    for name, slots in (setup.get("prog_array") or {}).items():
        for index, program in slots.items():
            obj.maps[name][int(index)] = program
    env = KernelEnv(printk=lambda _line: None)
    entry, prog_type = entry_type(vector)
    runner: Any
    if prog_type == "xdp":
        runner = obj.xdp(entry, engine=engine, env=env)
    else:
        runner = obj.skb(entry, engine=engine, env=env)
    data_maps = {m["name"] for m in vector.manifest["maps"] if m["origin"] == "data"}
    return Session(vector, obj, runner, env, map_types, data_maps)


def write_entries(obj: Any, name: str, entries: list[dict[str, str]]) -> None:
    """Write MAPS-style entries: key "" pushes onto a queue or stack."""
    target = obj.maps[name]
    for entry in entries:
        value = bytes.fromhex(entry["value"])
        if entry["key"] == "":
            target.push(value)
        else:
            target[bytes.fromhex(entry["key"])] = value


# -- running and comparing -----------------------------------------------------

def run_vector(vector: Vector, engine: str, *, every: bool = False) -> list[Disagreement]:
    """Run every step of `vector` on `engine`: the first disagreement with the
    kernel (every one with `every`, to diagnose), or [] when all agree. A
    failure to load or to run stops the vector."""
    if every:
        _EVERY.append([])
    try:
        _run_steps(vector, engine)
    except Differs as differs:
        if not every:
            return [differs.disagreement]
        _EVERY[-1].append(differs.disagreement)
    return _EVERY.pop() if every else []


def _run_steps(vector: Vector, engine: str) -> None:
    try:
        session = open_session(vector, engine)
    except Exception as error:  # a load or setup failure is the finding
        raise Differs(Disagreement("load and setup", -1, "loads",
                                   f"{type(error).__name__}: {error}")) from error
    try:
        for number, step in enumerate(vector.vector["steps"]):
            run_step(session, number, step)
    finally:
        session.obj.close()


def run_step(session: Session, number: int, step: dict[str, Any]) -> None:
    vector = session.vector
    for name, entries in (step.get("map_updates") or {}).items():
        write_entries(session.obj, name, entries)
    packet = bytes.fromhex(step["packet_in"])
    ctx_in = bytes.fromhex(step["ctx_in"]) if step.get("ctx_in") else None
    lines_before = len(session.env.lines)
    _entry, prog_type = entry_type(vector)
    try:
        if prog_type == "xdp":
            result = xdp_run(session.runner, packet, ctx_in)
        else:
            result = skb_run(session.runner, packet, ctx_in)
    except Exception as error:  # the kernel ran it: an error is a disagreement
        raise Differs(Disagreement("run", number, "runs",
                                   f"{type(error).__name__}: {error}")) from error
    expected = step["expected"]
    expect("retval", number, expected["retval"], result.r0 & 0xFFFF_FFFF)
    start = int(vector.manifest.get("packet_out_compare_from", 0))
    expect(f"packet_out[{start}:]", number, bytes.fromhex(expected["packet_out"])[start:],
           bytes(result.packet)[start:])
    compare_context(number, expected, result, prog_type)
    if "trace" in expected:
        expect("trace", number, expected["trace"], session.env.lines[lines_before:])
    compare_ringbufs(session, number, expected)
    compare_maps(session, number, step["maps_after"])


def _asked(what: str, number: int, expected: Any, get: Callable[[], Any]) -> Any:
    """get(), or None after reporting that the API does not show `what`."""
    try:
        return get()
    except AttributeError as error:
        report(Disagreement(what, number, expected, f"not shown: {error}"))
        return None


def compare_context(number: int, expected: dict[str, Any], result: Any, prog_type: str) -> None:
    if "ctx_out" in expected and prog_type != "xdp":
        want = {"mark": expected["ctx_out"]["mark"], "priority": expected["ctx_out"]["priority"],
                "cb": list(expected["ctx_out"]["cb"])}
        got = _asked("ctx_out", number, want, lambda: result_ctx(result))
        for name in () if got is None else ("mark", "priority", "cb"):
            expect(f"ctx_out.{name}", number, want[name], got[name])
    if "xdp_ctx_out_raw" in expected:
        want_raw = bytes.fromhex(expected["xdp_ctx_out_raw"])
        got_raw = _asked("xdp_ctx_out_raw", number, want_raw, lambda: result_xdp_ctx_raw(result))
        if got_raw is not None:
            expect("xdp_ctx_out_raw", number, want_raw, got_raw)


def compare_ringbufs(session: Session, number: int, expected: dict[str, Any]) -> None:
    for name, records in (expected.get("ringbuf") or {}).items():
        ring = session.obj.maps[name]
        got = [record.hex() for record in ring.consume()]
        expect(f"ringbuf {name}", number, records, got)
    for name, count in (expected.get("ringbuf_discarded") or {}).items():
        ring = session.obj.maps[name]
        total = _asked(f"ringbuf_discarded {name}", number, count,
                       partial(ringbuf_discarded, ring))
        if total is None:
            continue
        before = session.discarded.get(name, 0)
        session.discarded[name] = total
        expect(f"ringbuf_discarded {name}", number, count, total - before)


def compare_maps(session: Session, number: int, maps_after: dict[str, Any]) -> None:
    """Every map MAPS lists, entry by entry, values masked as the vector says."""
    vector = session.vector
    masks = vector.vector.get("masks") or {}
    key_masks = vector.vector.get("key_masks") or {}
    for name, entries in maps_after.items():
        if name not in session.obj.maps and name not in session.obj.data:
            report(Disagreement(f"map {name}", number, "present", "absent"))
            continue
        actual = read_map(session, name)
        if session.map_types.get(name) in QUEUES:
            mask = masks.get(name)
            expect(f"map {name} (pop order)", number, [e["value"] for e in entries],
                   [_masked(value, mask) for _key, value in actual])
            continue
        want = {e["key"]: (e["value"], e.get("value_mask") or
                           key_masks.get(name, {}).get(e["key"]) or masks.get(name))
                for e in entries}
        compare_entries(number, name, want, dict(actual))


def compare_entries(number: int, name: str, want: dict[str, tuple[str, str | None]],
                    got: dict[str, bytes]) -> None:
    """The entries of one map, in key order: the first missing, extra or
    different one is the disagreement."""
    for key in sorted(set(want) | set(got)):
        if key not in got:
            report(Disagreement(f"map {name} key {key}", number, want[key][0], "missing"))
        elif key not in want:
            report(Disagreement(f"map {name} key {key}", number, "missing", got[key].hex()))
        else:
            value, mask = want[key]
            expect(f"map {name} key {key}", number, value, _masked(got[key], mask))


def _masked(value: bytes, mask: str | None) -> str:
    """value & mask, in hex (bytes past the mask unmasked)."""
    if mask is None:
        return value.hex()
    mask_bytes = bytes.fromhex(mask)
    return bytes(a & b for a, b in zip(value, mask_bytes, strict=False)).hex() \
        + value[len(mask_bytes):].hex()


def read_map(session: Session, name: str) -> list[tuple[str, bytes]]:
    """A map's entries as MAPS lists them: (key hex, value) sorted by key;
    queues and stacks in pop order with key "" (popped, then pushed back)."""
    target = session.obj.maps[name]
    kind = session.map_types.get(name, "")
    if kind in QUEUES:
        values: list[bytes] = []
        while len(target):
            values.append(bytes(target.pop()))
        for value in values if kind == "queue" else reversed(values):
            target.push(value)
        return [("", value) for value in values]
    if name in session.data_maps and name in session.obj.data:
        return [("00000000", bytes(session.obj.data[name]))]
    entries = []
    for key in list(target):
        value = cpu_value(target[key], session.vector.run_cpu)
        if kind in ZERO_OMITTED and not any(value):
            continue
        entries.append((_key_bytes(key, target).hex(), value))
    return sorted(entries)


def _key_bytes(key: Any, target: Any) -> bytes:
    if isinstance(key, int):
        return key.to_bytes(target.key_size, "little")
    return bytes(key)
