"""The kernel differential: run packets through one program of an object in
ebpfvm and in the running Linux kernel, and report where they disagree.

:class:`KernelSession` puts the object in the kernel as libbpf would: every
map the program (and the programs its program arrays name) uses is made with
BPF_MAP_CREATE and filled with the object's current contents (global data
sections as one-element array maps, ``.rodata`` and ``.kconfig`` frozen;
program-array slots with the other programs' fds), and the program's
64-bit immediate loads of maps and global data are rewritten to the
kernel's map-fd and map-value forms (RFC 9669, section 5.4). Each packet
runs through BPF_PROG_TEST_RUN on the CPU of the KernelEnv (the process is
pinned there while the session is open).

:func:`against_kernel` runs each packet on both sides and compares, per
packet: r0 (the low 32 bits, as the kernel returns it), the packet after
the run, the ``__sk_buff`` fields mark, priority, cb and tstamp the kernel's
ctx_out gives back (skb programs; XDP programs given an xdp_md: its
fields), and every compared map afterwards (see
:data:`NOT_COMPARED`). A program that calls a helper whose result differs by
nature between two machines (:data:`NONDETERMINISTIC`) gets its
divergences reported but not counted, unless ``strict=True``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EbpfError
from .helper_table import helper_name
from .kbpf import (
    KernelError,
    KernelMap,
    KernelProg,
    KernelRejected,
    KernelUnavailable,
    load_btf,
    probe,
)
from .kbtf import KernelBtf, kernel_btf
from .kernel import KernelEnv
from .klink import kernel_code
from .progtypes import (
    ETH_HLEN,
    SKB_ARRAYS,
    SKB_FIELDS,
    SKB_FIELDS64,
    XDP_MD,
    XDP_MD_LAYOUT,
    prog_type_for_section,
)

__all__ = ["NONDETERMINISTIC", "NOT_COMPARED", "Divergence", "KernelDiff", "KernelSession",
           "KernelUnsupported", "against_kernel"]

PROG_TYPE_IDS = {"socket_filter": 1, "sched_cls": 3, "sched_act": 4, "xdp": 6, "cgroup_skb": 8}
"""The BPF_PROG_TYPE_* numbers of the types BPF_PROG_TEST_RUN runs with a frame."""
ATTACH_TYPES = {"cgroup_skb/egress": 1, "xdp/devmap": 33, "xdp/cpumap": 35}
"""expected_attach_type of section names that need one (enum bpf_attach_type)."""
XDP_HAS_FRAGS = 1 << 5
SKB_CTX_SIZE = 192
CTX_COMPARED = ("mark", "priority", "cb", "tstamp")
"""The __sk_buff fields of ctx_out compared; the others there (ifindex,
wire_len...) describe the test-run device, not the program's work."""
NOT_COMPARED = frozenset({"prog_array", "ringbuf", "perf_event_array", "redirect",
                          "map_of_maps", "cgroup_storage", "bloom", "user_ringbuf"})
"""Map kinds whose contents are not compared: they hold kernel objects
(programs, devices, maps), records consumed elsewhere, per-run storage or
bits that cannot be read back."""
NONDETERMINISTIC = frozenset({
    "bpf_ktime_get_ns", "bpf_ktime_get_boot_ns", "bpf_ktime_get_coarse_ns",
    "bpf_ktime_get_tai_ns", "bpf_jiffies64", "bpf_get_prandom_u32", "bpf_get_socket_cookie",
    "bpf_get_hash_recalc", "bpf_get_cgroup_classid", "bpf_skb_cgroup_id",
    "bpf_get_numa_node_id"})
"""Helpers whose results come from the machine (clocks, random numbers,
cookies, hash seeds, cgroups), so the two sides differ by nature."""


class KernelUnsupported(EbpfError):
    """What the differential cannot put in the kernel: `what` (a map of a
    kind it does not copy, a program type BPF_PROG_TEST_RUN does not run)."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason} (not supported by --against-kernel)")
        self.what = what
        self.reason = reason


@dataclass(frozen=True)
class Divergence:
    """One difference: `packet` (1-based), `field` ("r0", "packet byte N",
    "packet length", "ctx mark", "map NAME key HEX"...), the kernel's value
    and ebpfvm's; `nondeterministic` when the program calls a helper of
    NONDETERMINISTIC (reported, not counted unless strict)."""

    packet: int
    field: str
    kernel: Any
    ebpfvm: Any
    nondeterministic: bool = False

    def __str__(self) -> str:
        note = " (nondeterministic helpers: not counted)" if self.nondeterministic else ""
        return (f"packet {self.packet}: {self.field}: kernel {_show(self.kernel)}, "
                f"ebpfvm {_show(self.ebpfvm)}{note}")


def _show(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).hex()
        return text if len(text) <= 64 else f"{text[:64]}... ({len(value)} bytes)"
    if isinstance(value, int):
        return f"{value:#x}"
    return str(value)


@dataclass
class KernelDiff:
    """The result of :func:`against_kernel`: `packets` run, `divergences`
    (every record, counted or not), `refused` ((packet, reason) of inputs
    the kernel's test run refused, e.g. frames too short for the type), and
    the `nondeterministic` helpers the program calls. True when any packet
    diverges (as a non-empty diff is)."""

    packets: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    nondeterministic: tuple[str, ...] = ()
    strict: bool = False

    @property
    def counted(self) -> list[Divergence]:
        """The divergences that count (all of them when strict)."""
        return [d for d in self.divergences if self.strict or not d.nondeterministic]

    @property
    def diverging_packets(self) -> list[int]:
        """The numbers of the packets with a counted divergence."""
        return sorted({d.packet for d in self.counted})

    @property
    def agrees(self) -> bool:
        """Whether no packet diverges."""
        return not self.counted

    def __bool__(self) -> bool:
        return not self.agrees

    def summary(self) -> str:
        """``N packets, M diverge`` and what else the reader must know."""
        text = f"{self.packets} packets, {len(self.diverging_packets)} diverge"
        if self.refused:
            text += f", {len(self.refused)} refused by the kernel's test run"
        ignored = len(self.divergences) - len(self.counted)
        if ignored:
            text += (f"; {ignored} differences not counted (the program calls "
                     f"{', '.join(self.nondeterministic)})")
        return text


class KernelSession:
    """One program of `obj` (by function `program`, or the only one) with its
    maps in the kernel, copied from `obj` now. `env` gives the CPU the runs
    are pinned to; `source` (the object file or its bytes) the BTF the
    kernel needs for callbacks, global functions and spin locks;
    `prog_type` the program's type when its section does not say. Close it
    (or use ``with``) to close every fd and restore the CPU affinity."""

    def __init__(self, obj: Any, program: str | None = None, *, section: str | None = None,
                 env: KernelEnv | None = None, prog_type: str | None = None,
                 source: str | os.PathLike[str] | bytes | None = None) -> None:
        self.obj = obj
        self.program = obj.program(program, section=section)
        self.cpu = (env or KernelEnv()).cpu
        self.prog_type = prog_type or _prog_type(self.program.section)
        self.maps: dict[str, KernelMap] = {}
        self.progs: dict[str, KernelProg] = {}
        self._affinity: set[int] | None = None
        self.btf: KernelBtf | None = None
        self.btf_fd = -1
        self.btf_error: KernelError | None = None
        """Why the object's BTF did not load (the programs then load without it)."""
        try:
            probe()
            self._load_btf(source)
            self._pin()
            self._load(self.program)
            self._fill_prog_arrays()
        except BaseException:
            self.close()
            raise

    @property
    def packet_offset(self) -> int:
        """Where the compared packet starts: a socket filter's and cgroup_skb's
        kernel output has 14 zero bytes pushed back in front."""
        return ETH_HLEN if self.prog_type in ("socket_filter", "cgroup_skb") else 0

    def _pin(self) -> None:
        if hasattr(os, "sched_setaffinity"):
            self._affinity = os.sched_getaffinity(0)
            try:
                os.sched_setaffinity(0, {self.cpu})
            except OSError as exc:
                raise KernelUnavailable(f"cannot run on CPU {self.cpu}: {exc.strerror}",
                                        exc.errno or 0) from None

    def _load_btf(self, source: str | os.PathLike[str] | bytes | None) -> None:
        """The object's BTF in the kernel, when `source` (the object file or
        its bytes) is given and has one."""
        if source is None:
            return
        data = bytes(source) if isinstance(source, (bytes, bytearray)) else \
            Path(source).read_bytes()
        self.btf = kernel_btf(data)
        if self.btf is None:
            return
        try:
            self.btf_fd = load_btf(self.btf.blob)
        except KernelRejected as exc:
            self.btf, self.btf_error = None, exc

    def _load(self, program: Any) -> KernelProg:
        """Load `program` (and the maps it uses) unless it is loaded."""
        if program.name in self.progs:
            return self.progs[program.name]
        infos = self.btf.program_func_info(program) if self.btf is not None else []
        code, infos = kernel_code(program.code, program.relocations,
                                  lambda name: self._map(name).fd, infos)
        try:
            prog = KernelProg(program.name, PROG_TYPE_IDS[self.prog_type], code,
                              self.obj.license or "GPL",
                              expected_attach_type=ATTACH_TYPES.get(program.section, 0),
                              btf_fd=self.btf_fd if infos else 0, func_info=infos)
        except KernelRejected as exc:
            if self.btf_error is None:
                raise
            raise KernelRejected(exc.what, exc.errno, f"{exc.log}\nthe object's BTF was "
                                 f"refused: {self.btf_error}") from exc
        self.progs[program.name] = prog
        return prog

    def _map(self, name: str) -> KernelMap:
        found = self.maps.get(name)
        if found is None:
            types = self.btf.map_types.get(name) if self.btf is not None else None
            btf = (self.btf_fd, *types) if types is not None and types[1] else None
            try:
                found = _copy_map(self.obj, name, btf)
            except KernelRejected:
                if btf is None:
                    raise
                found = _copy_map(self.obj, name, None)  # the kernel refused its BTF
            self.maps[name] = found
        return found

    def _fill_prog_arrays(self) -> None:
        """Load the programs every program array names and store their fds,
        until no new program appears."""
        done: set[tuple[str, int]] = set()
        while True:
            todo = [(name, slot, target) for name in list(self.maps)
                    if getattr(self.obj.maps.get(name), "kind", "") == "prog_array"
                    for slot, target in sorted(self.obj.maps[name].slots.items())
                    if (name, slot) not in done]
            if not todo:
                return
            for name, slot, target in todo:
                done.add((name, slot))
                prog = self._load(self.obj.program(target))
                self.maps[name].update(slot.to_bytes(4, "little"),
                                       prog.fd.to_bytes(4, "little"))

    def helpers(self) -> set[str]:
        """The names of the helpers the loaded programs call."""
        return {helper_name(number) for program in self.progs
                for number in self.obj.program(program).helpers}

    def run(self, packet: bytes, ctx: bytes | None = None) -> tuple[int, bytes, bytes | None]:
        """One BPF_PROG_TEST_RUN of the program: (retval, packet, ctx_out);
        skb programs get a zero (or the given) __sk_buff in and out, XDP
        programs the given xdp_md in and out."""
        prog = self.progs[self.program.name]
        if self.prog_type == "xdp":
            return prog.test_run(packet, ctx, XDP_MD.size if ctx else 0)
        return prog.test_run(packet, ctx or bytes(SKB_CTX_SIZE), SKB_CTX_SIZE)

    def entries(self, name: str) -> list[tuple[bytes, Any]]:
        """A kernel map's entries: (key, value) in key order (per-CPU: the list
        of every CPU's value); a queue's or stack's values in pop order with
        empty keys (taken out, then put back)."""
        found = self.maps[name]
        if found.key_size == 0:
            values = []
            while (value := found.pop()) is not None:
                values.append(value)
            for value in values if found.type == 22 else reversed(values):  # queue: FIFO
                found.update(None, value)
            return [(b"", value) for value in values]
        return sorted((key, found.lookup(key)) for key in found.key_list())

    def close(self) -> None:
        """Close every program and map, restore the CPU affinity (idempotent)."""
        for prog in self.progs.values():
            prog.close()
        for made in self.maps.values():
            made.close()
        self.progs, self.maps = {}, {}
        if self.btf_fd >= 0:
            os.close(self.btf_fd)
            self.btf_fd = -1
        if self._affinity is not None:
            os.sched_setaffinity(0, self._affinity)
            self._affinity = None

    def __enter__(self) -> KernelSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _prog_type(section: str) -> str:
    found = prog_type_for_section(section)
    if found is None or found.name not in PROG_TYPE_IDS:
        kind = found.name if found is not None else "unknown"
        raise KernelUnsupported(f"section {section!r}", f"program type {kind}: the kernel's "
                                "test run takes xdp, sched_cls, sched_act, socket_filter "
                                "and cgroup_skb")
    return found.name


def _copy_map(obj: Any, name: str, btf: tuple[int, int, int] | None) -> KernelMap:
    """A kernel map like `obj`'s map `name`, holding its current contents."""
    ours = obj.maps[name]
    kind = getattr(ours, "kind", "keyed")
    if kind in ("map_of_maps",):
        raise KernelUnsupported(f"map {name!r}", "maps of maps are not copied to the kernel")
    percpu = bool(getattr(ours, "percpu", False))
    made = KernelMap(name, int(ours.type), ours.key_size, ours.value_size, ours.max_entries,
                     int(ours.flags), percpu=percpu, map_extra=getattr(ours, "map_extra", 0),
                     btf=btf)
    try:
        if name in obj.data and name in getattr(obj, "_globals", {}):
            made.update(bytes(4), bytes(obj.data[name]).ljust(ours.value_size, b"\0"))
            if name.startswith((".rodata", ".kconfig")):
                made.freeze()
        elif kind == "user_ringbuf":  # uringbuf: the records Python produced
            ours.copy_to_kernel(made.fd)
        elif kind == "queue":
            for value in list(ours.items):
                made.update(None, bytes(value))
        elif kind in ("keyed", "redirect"):
            for key in list(ours):
                value = ours[key]
                made.update(_key(key, ours), [bytes(v) for v in value]
                            if isinstance(value, list) else bytes(value))
    except KernelError as exc:
        made.close()
        if isinstance(exc, KernelUnavailable):
            raise
        raise KernelRejected(f"copying map {name!r} to the kernel", exc.errno) from exc
    except BaseException:
        made.close()
        raise
    return made


def _key(key: Any, ours: Any) -> bytes:
    if isinstance(key, int):
        return key.to_bytes(ours.key_size, "little")
    return bytes(key)


# -- the comparison ---------------------------------------------------------------------------


def against_kernel(obj: Any, packets: Iterable[bytes], *, program: str | None = None,
                   section: str | None = None, engine: str = "interp",
                   env: KernelEnv | None = None, ctx: bytes | None = None,
                   strict: bool = False, kernel: KernelSession | None = None,
                   source: str | os.PathLike[str] | bytes | None = None,
                   prog_type: str | None = None) -> KernelDiff:
    """Run each of `packets` through `program` of `obj` in ebpfvm (`engine`)
    and in the kernel, and compare (see the module's docstring). `kernel`: a
    KernelSession opened earlier (kept open), else one is made from `obj`'s
    current maps and closed at the end. `source`: the object file (or its
    bytes), whose BTF the kernel needs for callbacks, global functions and
    spin locks in map values. `prog_type` ("xdp", "sched_cls"...): the
    program's type when its section name does not say. `ctx`: the context every run starts
    from (a 192-byte __sk_buff, or a 24-byte xdp_md). Raises
    KernelUnavailable, KernelRejected or KernelUnsupported when the kernel
    side cannot run."""
    env = env if env is not None else KernelEnv()
    session = kernel if kernel is not None else KernelSession(
        obj, program, section=section, env=env, source=source, prog_type=prog_type)
    try:
        return _compare_all(obj, session, packets, engine, env, ctx, strict)
    finally:
        if kernel is None:
            session.close()


def _compare_all(obj: Any, session: KernelSession, packets: Iterable[bytes], engine: str,
                 env: KernelEnv, ctx: bytes | None, strict: bool) -> KernelDiff:
    name = session.program.name
    runner = (obj.xdp(name, engine=engine, env=env) if session.prog_type == "xdp"
              else obj.skb(name, engine=engine, env=env, prog_type=session.prog_type))
    diff = KernelDiff(nondeterministic=tuple(sorted(session.helpers() & NONDETERMINISTIC)),
                      strict=strict)
    seen: dict[str, tuple[Any, Any]] = {}
    try:
        for number, packet in enumerate(packets, 1):
            diff.packets = number
            _compare_packet(diff, number, bytes(packet), (runner, session, ctx), seen)
    finally:
        runner.close()
    return diff


def _compare_packet(diff: KernelDiff, number: int, packet: bytes,
                    sides: tuple[Any, KernelSession, bytes | None],
                    seen: dict[str, tuple[Any, Any]]) -> None:
    runner, session, ctx = sides
    try:
        retval, kernel_packet, kernel_ctx = session.run(packet, ctx)
    except KernelUnavailable:
        raise
    except KernelError as exc:
        diff.refused.append((number, str(exc)))
        return
    nondet = bool(diff.nondeterministic)

    def note(field_name: str, kernel_value: Any, ours: Any) -> None:
        diff.divergences.append(Divergence(number, field_name, kernel_value, ours, nondet))

    try:
        result = runner.run(packet, ctx=ctx) if ctx is not None else runner.run(packet)
    except EbpfError as error:  # a fault, or an input ebpfvm refuses where the kernel ran
        note("run", f"r0 = {retval:#x}", f"{type(error).__name__}: {error}")
        return
    if result.r0 & 0xFFFF_FFFF != retval:
        note("r0", retval, result.r0 & 0xFFFF_FFFF)
    start = session.packet_offset
    _compare_bytes(note, kernel_packet[start:], bytes(result.packet)[start:], start)
    if kernel_ctx is not None and session.prog_type == "xdp":
        _compare_xdp_ctx(note, kernel_ctx, bytes(result.context_raw))
    elif kernel_ctx is not None:
        _compare_ctx(note, kernel_ctx, bytes(result.ctx_out))
    for name in sorted(session.maps):
        if getattr(session.obj.maps[name], "kind", "keyed") not in NOT_COMPARED:
            _compare_map(note, session, name, seen)


def _compare_bytes(note: Any, kernel: bytes, ours: bytes, start: int) -> None:
    """The packet's length, and its first differing byte."""
    if len(kernel) != len(ours):
        note("packet length", len(kernel) + start, len(ours) + start)
    at = next((i for i, (a, b) in enumerate(zip(kernel, ours, strict=False)) if a != b), None)
    if at is not None:
        note(f"packet byte {at + start}", kernel[at], ours[at])


def _ctx_fields(raw: bytes) -> dict[str, int]:
    fields: dict[str, int] = {}
    for name in CTX_COMPARED:
        if name in SKB_ARRAYS:
            offset, count = SKB_ARRAYS[name]
            for index in range(count):
                at = offset + 4 * index
                fields[f"{name}[{index}]"] = int.from_bytes(raw[at : at + 4], "little")
        elif name in SKB_FIELDS64:
            at = SKB_FIELDS64[name]
            fields[name] = int.from_bytes(raw[at : at + 8], "little")
        else:
            at = SKB_FIELDS[name]
            fields[name] = int.from_bytes(raw[at : at + 4], "little")
    return fields


def _compare_ctx(note: Any, kernel: bytes, ours: bytes) -> None:
    mine = _ctx_fields(ours.ljust(SKB_CTX_SIZE, b"\0"))
    for name, value in _ctx_fields(kernel.ljust(SKB_CTX_SIZE, b"\0")).items():
        if mine[name] != value:
            note(f"ctx {name}", value, mine[name])


def _compare_xdp_ctx(note: Any, kernel: bytes, ours: bytes) -> None:
    """The xdp_md the kernel hands back when the run was given one."""
    for name, offset in XDP_MD_LAYOUT.fields.items():
        kernel_value = int.from_bytes(kernel[offset : offset + 4], "little")
        our_value = int.from_bytes(ours[offset : offset + 4], "little")
        if kernel_value != our_value:
            note(f"ctx {name}", kernel_value, our_value)


def _our_entries(session: KernelSession, name: str) -> list[tuple[bytes, Any]]:
    ours = session.obj.maps[name]
    if getattr(ours, "kind", "keyed") == "queue":
        return [(b"", bytes(value)) for value in ours]
    if name in session.obj.data and name in getattr(session.obj, "_globals", {}):
        return [(bytes(4), bytes(session.obj.data[name]).ljust(ours.value_size, b"\0"))]
    found = []
    for key in list(ours):
        value = ours[key]
        found.append((_key(key, ours), [bytes(v) for v in value] if isinstance(value, list)
                      else bytes(value)))
    return sorted(found)


def _compare_map(note: Any, session: KernelSession, name: str,
                 seen: dict[str, tuple[Any, Any]]) -> None:
    """Every entry of one map; per-CPU values on the run's CPU. An entry is
    reported when it first differs and again when either side changes."""
    pairs: list[tuple[str, Any, Any]]
    if session.maps[name].key_size == 0:
        pairs = [(f"map {name} (values in pop order)",
                  [value.hex() for _key, value in session.entries(name)],
                  [value.hex() for _key, value in _our_entries(session, name)])]
    else:
        kernel = dict(session.entries(name))
        ours = dict(_our_entries(session, name))
        pairs = [(f"map {name} key {key.hex()}", _on_cpu(kernel.get(key), session.cpu),
                  _on_cpu(ours.get(key), session.cpu))
                 for key in sorted(set(kernel) | set(ours))]
    for where, kernel_value, our_value in pairs:
        if kernel_value == our_value:
            seen.pop(where, None)
        elif seen.get(where) != (kernel_value, our_value):
            seen[where] = (kernel_value, our_value)
            note(where, "missing" if kernel_value is None else kernel_value,
                 "missing" if our_value is None else our_value)


def _on_cpu(value: Any, cpu: int) -> Any:
    if isinstance(value, list):
        return value[cpu] if cpu < len(value) else None
    return value
