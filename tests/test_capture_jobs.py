"""run_capture's jobs (ebpfvm.capture_jobs; issue 15 point 4): several
worker threads give what one does.

Expected values are independent of our output: one job's run is the
reference for two and three (the order-free totals must not depend on how
the chunks are shared out), and the stress and fault tests count what the
capture they write holds.
"""

from __future__ import annotations

import struct
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ebpfvm import load
from ebpfvm.capture import CaptureWriter, read_capture, run_capture
from ebpfvm.capture_jobs import default_jobs, jobs_limit
from ebpfvm.errors import EbpfError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from make_sample_pcap import write  # noqa: E402

JOBS_OBJECT = REPO / "tests" / "data" / "jobs.o"
EXAMPLES = {"proto_count": ("proto_count", {}), "config": ("config", {}),
            "events": ("emit_events", {}),
            "dispatch": ("dispatch", {"handlers": {6: "handle_tcp", 17: "handle_udp"}}),
            "rate_limit": ("rate_limit", {})}
CHUNK = 512
"""Small chunks: many of them for the workers to share."""


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jobs") / "sample.pcap"
    write(path, 12_000)
    return path


def _value(value: Any) -> Any:
    if isinstance(value, list):  # a per-CPU map: the total over CPUs
        return sum(int.from_bytes(bytes(item), "little") for item in value)
    return bytes(value)


def _totals(obj: Any) -> dict[str, Any]:
    """Each map's contents (per-CPU values summed; a ring buffer's record
    count: the examples fill it, and which records fit depends on the order,
    as on the kernel's CPUs)."""
    found: dict[str, Any] = {}
    for name in obj.maps:
        target = obj.maps[name]
        if hasattr(target, "consume"):  # full: which records it kept depends on the order
            found[name] = sum(1 for _record in target.consume())
        elif type(target).__name__ != "ProgArray":
            found[name] = sorted((bytes(key), _value(target[key])) for key in list(target))
    return found


def _run(path: Path, name: str, jobs: int, out: Path) -> tuple[Any, dict[str, Any], bytes]:
    function, tables = EXAMPLES[name]
    obj = load(REPO / "examples" / "bpf" / f"{name}.o")
    for map_name, entries in tables.items():
        for key, value in entries.items():
            obj.maps[map_name][key] = value
    vm = obj.vm(function)
    writer = CaptureWriter(out)
    try:
        stats = run_capture(vm, read_capture(path), engine="jit", writer=writer, jobs=jobs,
                            chunk=CHUNK)
    finally:
        writer.close()
    return stats, _totals(obj), out.read_bytes()


@pytest.mark.parametrize("name", ["proto_count", "config", "events", "dispatch"])
@pytest.mark.parametrize("jobs", [2, 3])
def test_examples_as_one_job(sample: Path, tmp_path: Path, name: str, jobs: int) -> None:
    one, one_maps, one_out = _run(sample, name, 1, tmp_path / "one.pcap")
    many, many_maps, many_out = _run(sample, name, jobs, tmp_path / "many.pcap")
    assert (one.jobs, many.jobs, many.jobs_note) == (1, jobs, "")
    assert many.histogram == one.histogram
    assert many.packets == one.packets == 12_000
    assert many_out == one_out  # the passed packets, in the capture's order
    if name == "config":  # passed/dropped are plain `+= 1` in .bss: not atomic (nor in the kernel)
        for maps in (one_maps, many_maps):
            maps.pop(".bss", None)
    assert many_maps == one_maps


def test_rate_limit_runs_on_jobs(sample: Path, tmp_path: Path) -> None:
    """rate_limit's verdicts depend on the packets' order (an LRU of 4
    sources, a plain increment): only the packet count is the same."""
    stats, _maps, _out = _run(sample, "rate_limit", 2, tmp_path / "out.pcap")
    assert stats.jobs == 2 and stats.packets == 12_000


def _tagged(path: Path, packets: list[tuple[int, int]]) -> Path:
    writer = CaptureWriter(path)
    for index, (tag, op) in enumerate(packets):
        frame = bytes(12) + b"\x08\x00" + struct.pack("<IB", tag, op) + bytes(41)
        writer.write_usec(frame, index)
    writer.close()
    return path


def _jobs_vm(function: str) -> tuple[Any, Any]:
    obj = load(JOBS_OBJECT)
    return obj, obj.vm(function)


@pytest.mark.parametrize("jobs", [1, 2])
def test_per_cpu_slots(tmp_path: Path, jobs: int) -> None:
    path = _tagged(tmp_path / "t.pcap", [(0, 0)] * 20_000)
    obj, vm = _jobs_vm("percpu_slots")
    stats = run_capture(vm, read_capture(path), engine="jit", jobs=jobs, chunk=CHUNK)
    assert stats.jobs == jobs
    slots = [int.from_bytes(bytes(value), "little") for value in obj.maps["per_cpu"][
        (0).to_bytes(4, "little")]]
    seen = [int.from_bytes(bytes(obj.maps["by_cpu"][cpu.to_bytes(4, "little")]), "little")
            for cpu in range(len(slots))]
    assert sum(slots) == 20_000
    assert slots == seen  # bpf_get_smp_processor_id names the slot the worker writes
    if jobs == 1:
        assert slots[1:] == [0] * (len(slots) - 1)


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_concurrent_native_ring_buffer(tmp_path: Path, jobs: int) -> None:
    """Workers share one ring: outputs, reserve+submit and reserve+discard
    from every worker (each takes the ring's lock natively) lose no record,
    duplicate none and keep the framing whole."""
    packets = [(tag, tag % 3) for tag in range(30_000)]
    path = _tagged(tmp_path / "r.pcap", packets)
    obj, vm = _jobs_vm("ring_stress")
    stats = run_capture(vm, read_capture(path), engine="jit", jobs=jobs, chunk=CHUNK)
    assert stats.jobs == jobs and stats.histogram == {"XDP_PASS": 30_000}
    ring = obj.maps["records"]
    tags = sorted(int.from_bytes(bytes(record), "little") for record in ring.consume())
    assert tags == [tag for tag, op in packets if op != 2]
    assert ring.discarded == 10_000


def test_jobs_cut_to_possible_cpus() -> None:
    _obj, vm = _jobs_vm("percpu_slots")
    cpus = vm and int(_obj.maps["per_cpu"].ncpus)
    jobs, note = jobs_limit(vm, cpus + 1)
    assert jobs == cpus and "possible CPU" in note
    assert default_jobs() >= 1


@pytest.mark.parametrize("jobs", [2, 3])
def test_concurrent_hash_updates(tmp_path: Path, jobs: int) -> None:
    """Inserts, atomic adds and insert-delete churn from every worker: no
    key lost or doubled, every count whole, the block's count right."""
    tags = 600
    packets = [(index % tags, 0) if index % 3 else (10_000 + index % 50, 1)
               for index in range(60_000)]
    path = _tagged(tmp_path / "t.pcap", packets)
    obj, vm = _jobs_vm("hash_stress")
    stats = run_capture(vm, read_capture(path), engine="jit", jobs=jobs, chunk=256)
    assert stats.histogram == Counter({"XDP_PASS": 60_000})
    expected = Counter(tag for tag, op in packets if op == 0)
    table = obj.maps["tags"]
    found = {int.from_bytes(bytes(key), "little"): int.from_bytes(bytes(table[key]), "little")
             for key in list(table)}
    assert found == dict(expected)
    assert len(table) == len(expected)


def test_fault_in_one_worker(tmp_path: Path) -> None:
    marked = 7_777
    path = _tagged(tmp_path / "t.pcap", [(index, 0xEE if index == marked else 0)
                                         for index in range(30_000)])
    _obj, vm = _jobs_vm("fault_at")
    before = threading.active_count()
    with pytest.raises(EbpfError) as caught:
        run_capture(vm, read_capture(path), engine="jit", jobs=2, chunk=CHUNK)
    assert caught.value.packet_index == marked  # type: ignore[attr-defined]
    assert threading.active_count() == before  # the other worker stopped


def test_one_job_where_not_native(sample: Path) -> None:
    obj = load(REPO / "examples" / "bpf" / "config.o")
    stats = run_capture(obj.vm("config"), read_capture(sample), engine="interp", jobs=2)
    assert stats.jobs == 1 and stats.jobs_note.startswith("one job")
