"""bpf_for_each_map_elem over the INNER map of a map of maps (an inner array
of an array of maps, an inner hash of a hash of maps), in every engine, with
the kernel as the oracle of r0 and of the inner map after the run
(tests/data/elf/mapinmap_each.c; BPF_PROG_TEST_RUN through the corpus's
loader, which gives the callbacks their BTF func_info). Tail calls through an
inner program array are not tested: the kernel refuses a program array as an
inner map (its map type has no inner-map check), and so does ebpfvm."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

import ebpfvm
import kernel_oracle
from ebpfvm.errors import MapError
from ebpfvm.mapbase import MapSpec, MapType
from ebpfvm.mapinmap import MapOfMaps
from ebpfvm.maps import create_map

OBJECT = Path(__file__).parent / "data" / "elf" / "mapinmap_each.o"
ARRAY_VALUES = {0: 1, 1: 4, 2: 7, 3: 10}
HASH_VALUES = {5: 2, 9: 3, 1: 20}
"""The inner maps' contents before the run (key -> u64)."""
RUNS = {"walk_array": ("outer_array", 1, MapType.ARRAY, 4, ARRAY_VALUES),
        "walk_hash": ("outer_hash", 7, MapType.HASH, 8, HASH_VALUES)}
"""program -> (outer map, outer key, inner type, inner max_entries, contents)."""


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def _kernel_run(name: str) -> tuple[int, dict[int, int]]:
    """(r0, inner map after the run) of program `name` in the kernel."""
    rwobj, kbpf = kernel_oracle.corpus_loader()
    obj = rwobj.BpfObject(str(OBJECT))
    outer_name, key, inner_type, entries, values = RUNS[name]
    made: list[Any] = []
    try:
        btf = kbpf.load_btf(obj.kernel_btf())
        inners = {}
        for other_outer, _key, other_type, other_entries, _values in RUNS.values():
            inners[other_outer] = kbpf.Map("inner", int(other_type), 4, 8, other_entries)
            made.append(inners[other_outer])
        inner = inners[outer_name]
        fds = {}
        for map_name, spec in obj.maps.items():
            table = kbpf.Map(map_name, spec.map_type, spec.key_size, spec.value_size,
                             spec.max_entries, spec.flags, inner_map_fd=inners[map_name].fd)
            made.append(table)
            fds[map_name] = table.fd
            if map_name == outer_name:
                table.update(_u32(key), _u32(inner.fd))
    except OSError as exc:
        for table in made:
            table.close()
        pytest.skip(f"bpf() is not available here: {exc}")
    try:
        for index, value in values.items():
            inner.update(_u32(index), _u64(value))
        linked = obj.link(name)
        prog = kbpf.Prog(name, linked.prog.prog_type_id, linked.image(fds), obj.license,
                         btf_fd=btf, func_info=linked.func_info)
        r0 = prog.test_run(bytes(64))["retval"]
        prog.close()
        after = {}
        for index in (range(entries) if inner_type == MapType.ARRAY else values):
            found = inner.lookup(_u32(index))
            if found is not None:
                after[index] = struct.unpack_from("<Q", found)[0]
        return r0, after
    finally:
        for table in made:
            table.close()


def _ours(name: str, engine: str) -> tuple[int, dict[int, int]]:
    outer_name, key, inner_type, entries, values = RUNS[name]
    with ebpfvm.load(OBJECT) as obj:
        inner = create_map("inner", inner_type, 4, 8, entries)
        for index, value in values.items():
            inner[_u32(index)] = _u64(value)
        obj.maps[outer_name][key] = inner
        with obj.xdp(name, engine=engine) as runner:
            r0 = runner.run(bytes(64)).r0
        return r0, {int.from_bytes(k, "little"): struct.unpack("<Q", v)[0]
                    for k, v in inner.items()}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_for_each_over_an_inner_map_agrees_with_the_kernel(engine: str, name: str) -> None:
    expected = _kernel_run(name)
    assert _ours(name, engine) == expected
    assert expected[0] >> 24 >= 1  # the kernel walked the inner map


def test_an_empty_outer_slot_gives_null(engine: str) -> None:
    # mapinmap_each.c: 1000 when the lookup of the outer slot is NULL.
    with ebpfvm.load(OBJECT) as obj, obj.xdp("walk_array", engine=engine) as runner:
        assert runner.run(bytes(64)).r0 == 1000


@pytest.mark.parametrize("kind", [MapType.PROG_ARRAY, MapType.ARRAY_OF_MAPS,
                                  MapType.HASH_OF_MAPS])
def test_what_the_kernel_refuses_as_an_inner_map(kind: MapType) -> None:
    outer = create_map("outer", MapType.ARRAY_OF_MAPS, 4, 4, 2)
    assert isinstance(outer, MapOfMaps)
    with pytest.raises(MapError, match="cannot be an inner map"):
        outer.set_inner(MapSpec("outer.inner", int(kind), 4, 4, 2, 0, 0))


def test_the_kernel_refuses_a_program_array_as_an_inner_map() -> None:
    why = kernel_oracle.available()
    if why is not None:
        pytest.skip(f"bpf() is not available here: {why}")
    import os

    inner = kernel_oracle.map_create(int(MapType.PROG_ARRAY), 4, 4, 2)
    try:
        with pytest.raises(OSError):
            os.close(kernel_oracle.map_create_inner(int(MapType.ARRAY_OF_MAPS), 4, 4, 2, inner))
    finally:
        os.close(inner)
