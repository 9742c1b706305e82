"""The Linux kernel as a test oracle, through bpf(2) and ctypes (stdlib only).

Used by the kernel cross-check tests; every entry point raises OSError when
the kernel refuses, and `available()` says whether bpf() works here at all.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
BPF_PROG_TYPE_XDP = 6
BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_MAP_VALUE = 2
_NR_BPF = {"x86_64": 321, "aarch64": 280}
_ATTR_SIZE = 160

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise OSError(f"bpf(): unsupported machine {platform.machine()}")
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_long(cmd),
                        ctypes.c_void_p(ctypes.addressof(attr)), ctypes.c_long(len(attr)))
    if ret < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"bpf(cmd={cmd}): {os.strerror(errno)}")
    return int(ret)


def available() -> str | None:
    """None when bpf() can create a map here, else why not."""
    try:
        fd = map_create(2, 4, 4, 1)
    except OSError as exc:
        return str(exc)
    os.close(fd)
    return None


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int) -> int:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIII", attr, 0, map_type, key_size, value_size, max_entries)
    return bpf(BPF_MAP_CREATE, attr)


def map_create_extra(map_type: int, key_size: int, value_size: int, max_entries: int,
                     flags: int, map_extra: int) -> int:
    """BPF_MAP_CREATE with map_flags and map_extra (a bloom filter's hashes)."""
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIIII", attr, 0, map_type, key_size, value_size, max_entries, flags)
    struct.pack_into("<Q", attr, 64, map_extra)
    return bpf(BPF_MAP_CREATE, attr)


def map_create_inner(map_type: int, key_size: int, value_size: int, max_entries: int,
                     inner_map_fd: int) -> int:
    """BPF_MAP_CREATE of a map of maps whose inner maps are like `inner_map_fd`."""
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIIIII", attr, 0, map_type, key_size, value_size, max_entries, 0,
                     inner_map_fd)
    return bpf(BPF_MAP_CREATE, attr)


def keyless_elem(cmd: int, fd: int, value: bytes, flags: int = 0) -> None:
    """BPF_MAP_UPDATE_ELEM (push) or BPF_MAP_LOOKUP_ELEM (peek) with no key,
    as queues and bloom filters take them."""
    buf = ctypes.create_string_buffer(value, len(value))
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIQQQ", attr, 0, fd, 0, 0, ctypes.addressof(buf), flags)
    bpf(cmd, attr)


def _elem(cmd: int, fd: int, key: bytes, value: ctypes.Array[ctypes.c_char],
          flags: int = 0) -> int:
    key_buf = ctypes.create_string_buffer(key, max(len(key), 1))
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIQQQ", attr, 0, fd, 0, ctypes.addressof(key_buf),
                     ctypes.addressof(value), flags)
    return bpf(cmd, attr)


def map_update(fd: int, key: bytes, value: bytes) -> None:
    _elem(BPF_MAP_UPDATE_ELEM, fd, key, ctypes.create_string_buffer(value, len(value)))


def map_items(fd: int, key_size: int, value_size: int) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of a hash-like map."""
    key: bytes | None = None
    while True:
        nxt = ctypes.create_string_buffer(key_size)
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        key_buf = ctypes.create_string_buffer(key or b"\0", max(key_size, 1))
        struct.pack_into("<IIQQ", attr, 0, fd, 0, ctypes.addressof(key_buf) if key else 0,
                         ctypes.addressof(nxt))
        try:
            bpf(BPF_MAP_GET_NEXT_KEY, attr)
        except OSError:
            return
        key = nxt.raw
        value = ctypes.create_string_buffer(value_size)
        _elem(BPF_MAP_LOOKUP_ELEM, fd, key, value)
        yield key, value.raw


def prog_load(code: bytes, prog_type: int = BPF_PROG_TYPE_XDP, license: bytes = b"GPL",
              *, quiet_first: bool = False) -> int:
    """Load `code`; on refusal, OSError carries the end of the verifier's log.

    `quiet_first`: try with log_level 0 first (faster for big programs, and
    no ENOSPC from a long log), and only ask for the log when that fails."""
    if quiet_first:
        try:
            return _prog_load(code, prog_type, license, 0)
        except OSError:
            pass
    return _prog_load(code, prog_type, license, 1)


def _prog_load(code: bytes, prog_type: int, license: bytes, log_level: int) -> int:
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(license)
    log = ctypes.create_string_buffer(1 << 16 if log_level else 1)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIQQIIQ", attr, 0, prog_type, len(code) // 8, ctypes.addressof(insns),
                     ctypes.addressof(lic), log_level, len(log) if log_level else 0,
                     ctypes.addressof(log) if log_level else 0)
    try:
        return bpf(BPF_PROG_LOAD, attr)
    except OSError as exc:
        raise OSError(exc.errno, f"{exc}\n{log.value.decode(errors='replace')[-3000:]}") from None


def test_run(fd: int, data: bytes) -> tuple[int, bytes]:
    """(retval, packet after the run) of one BPF_PROG_TEST_RUN."""
    data_in = ctypes.create_string_buffer(data, len(data))
    data_out = ctypes.create_string_buffer(len(data) + 256)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIIIQQII", attr, 0, fd, 0, len(data), len(data_out),
                     ctypes.addressof(data_in), ctypes.addressof(data_out), 1, 0)
    bpf(BPF_PROG_TEST_RUN, attr)
    retval, _size_in, size_out = struct.unpack_from("<III", attr, 4)
    return retval, data_out.raw[:size_out]


def kernel_code(code: bytes, relocations: tuple[tuple[int, str, str, int], ...],
                map_fds: dict[str, int], data_fds: dict[str, int]) -> bytes:
    """The program with its map and global-data lddws in the kernel's form:
    BPF_PSEUDO_MAP_FD / BPF_PSEUDO_MAP_VALUE with file descriptors."""
    out = bytearray(code)
    for pc, kind, name, offset in relocations:
        at = pc * 8
        dst = out[at + 1] & 0x0F
        if kind == "map":
            src, imm, next_imm = BPF_PSEUDO_MAP_FD, map_fds[name], 0
        else:
            src, imm, next_imm = BPF_PSEUDO_MAP_VALUE, data_fds[name], offset
        out[at + 1] = dst | (src << 4)
        struct.pack_into("<i", out, at + 4, imm)
        struct.pack_into("<i", out, at + 12, next_imm)
    return bytes(out)


def ringbuf_records(fd: int, size: int) -> list[bytes]:
    """Submitted records of a kernel ring buffer, read through its mmap'ed pages."""
    import mmap

    page = mmap.PAGESIZE
    consumer = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
    producer = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
    try:
        cons = struct.unpack_from("<Q", consumer, 0)[0]
        prod = struct.unpack_from("<Q", producer, 0)[0]
        records = []
        while cons < prod:
            at = page + (cons & (size - 1))
            header = struct.unpack_from("<I", producer, at)[0]
            length = header & ((1 << 30) - 1)
            if not header & (1 << 30):  # not discarded
                records.append(bytes(producer[at + 8 : at + 8 + length]))
            cons += (8 + length + 7) & ~7
        struct.pack_into("<Q", consumer, 0, cons)
        return records
    finally:
        consumer.close()
        producer.close()


CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
"""The shared corpus, whose kbpf.py and rwobj.py load clang objects into the
kernel with BTF func_info (which programs with callbacks need)."""


def corpus_loader() -> tuple[Any, Any]:
    """The corpus's (rwobj, kbpf) modules; skips the calling test when the
    corpus is not beside the repository."""
    import pytest

    if not (CORPUS / "rwobj.py").exists():
        pytest.skip(f"the corpus's kernel loader is not at {CORPUS}")
    sys.path.insert(0, str(CORPUS))
    try:
        import kbpf  # type: ignore[import-not-found]
        import rwobj  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(CORPUS))
    return rwobj, kbpf


@contextmanager
def kernel_object(path: Path) -> Iterator[tuple[dict[str, Any], Callable[[str], Any]]]:
    """An object file's maps created in the kernel (with its BTF), and a
    function loading one of its programs by name against them: (maps, load).
    Skips the calling test where bpf() is unavailable; closes the maps."""
    import pytest

    rwobj, kbpf = corpus_loader()
    obj = rwobj.BpfObject(str(path))
    try:
        btf = kbpf.load_btf(obj.kernel_btf())
        maps = {name: kbpf.Map(name, spec.map_type, spec.key_size, spec.value_size,
                               spec.max_entries, spec.flags, 0, btf, spec.btf_key_type_id,
                               spec.btf_value_type_id) for name, spec in obj.maps.items()}
    except OSError as exc:
        pytest.skip(f"bpf() is not available here: {exc}")
    fds = {name: table.fd for name, table in maps.items()}

    def load(name: str) -> Any:
        linked = obj.link(name)
        return kbpf.Prog(name, linked.prog.prog_type_id, linked.image(fds), obj.license,
                         linked.prog.expected_attach_type, btf_fd=btf,
                         func_info=linked.func_info)

    try:
        yield maps, load
    finally:
        for table in maps.values():
            table.close()
