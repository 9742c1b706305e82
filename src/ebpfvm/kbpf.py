"""The Linux kernel's bpf(2) system call through ctypes: just what the kernel
differential (ebpfvm.kdiff) needs.

Maps (BPF_MAP_CREATE, UPDATE, LOOKUP, GET_NEXT_KEY, LOOKUP_AND_DELETE,
FREEZE), program loads with the verifier's log on refusal (BPF_PROG_LOAD,
BPF_BTF_LOAD) and runs (BPF_PROG_TEST_RUN). The ``union bpf_attr`` layouts
are the kernel's UAPI (include/uapi/linux/bpf.h); the instructions handed to
BPF_PROG_LOAD are RFC 9669 instructions (section 3), with the kernel's
64-bit immediate forms of section 5.4 (map fd, map value, function).

Every file descriptor belongs to a :class:`KernelMap` or :class:`KernelProg`
whose ``close()`` closes it. Where bpf() cannot be used at all (another
operating system or machine, no permission, no system call) the calls raise
:class:`KernelUnavailable`; a program the verifier refuses raises
:class:`KernelRejected` with the log.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys
from typing import Any

from .errors import EbpfError

__all__ = ["KernelError", "KernelMap", "KernelProg", "KernelRejected", "KernelUnavailable",
           "bpf", "load_btf", "possible_cpus", "probe"]

MAP_CREATE = 0
MAP_LOOKUP_ELEM = 1
MAP_UPDATE_ELEM = 2
MAP_GET_NEXT_KEY = 4
PROG_LOAD = 5
PROG_TEST_RUN = 10
BTF_LOAD = 18
MAP_LOOKUP_AND_DELETE_ELEM = 21
MAP_FREEZE = 22
_NR_BPF = {"x86_64": 321, "aarch64": 280}
ATTR_SIZE = 160
"""The bytes of union bpf_attr handed over (the kernel checks the unused tail is zero)."""
LOG_SIZE = 1 << 22
OUT_SLACK = 65536
"""Room for a packet to grow in a test run (bpf_skb_change_tail, adjust_head)."""
UNAVAILABLE_ERRNOS = (errno.EPERM, errno.EACCES, errno.ENOSYS)
"""errnos that say bpf() cannot be used here at all (rather than a refusal)."""


class KernelError(EbpfError):
    """A bpf() command the kernel refused: the command, its errno and, for a
    program load, the verifier's log."""

    def __init__(self, what: str, err: int, log: str = "") -> None:
        super().__init__(f"{what}: {os.strerror(err)}")
        self.what = what
        self.errno = err
        self.log = log


class KernelUnavailable(KernelError):
    """bpf() cannot be used here: `reason` says why (not Linux, an unknown
    machine, EPERM without CAP_BPF, ENOSYS); `errno` is 0 when no call was
    made."""

    def __init__(self, reason: str, err: int = 0) -> None:
        EbpfError.__init__(self, f"the kernel's bpf() is not available: {reason}")
        self.what = "bpf()"
        self.errno = err
        self.log = ""
        self.reason = reason


class KernelRejected(KernelError):
    """The kernel refused to load the program (or to create a map it needs):
    `log` is the verifier's log, `first_line` its first meaningful line."""

    def __init__(self, what: str, err: int, log: str = "") -> None:
        super().__init__(what, err, log)
        self.first_line = first_meaningful_line(log)
        if self.first_line:
            self.args = (f"{what}: {os.strerror(err)}: {self.first_line}",)


def first_meaningful_line(log: str) -> str:
    """The line of a verifier log that says why: the last line that is not
    the statistics footer or an instruction trace ("N: (...)"), else ''."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    skip = ("processed ", "verification time", "stack depth", "func#", "last_idx",
            "regs=", "parent ", "mark_precise", "from ", "; ")
    reasons = [line for line in lines
               if not line.startswith(skip) and not line.split(":", 1)[0].isdigit()]
    return reasons[-1] if reasons else ""


_libc: Any = None


def bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    """One bpf(cmd, attr) call: its result, or -errno."""
    import platform

    global _libc
    nr = _NR_BPF.get(platform.machine())
    if not sys.platform.startswith("linux") or nr is None:
        raise KernelUnavailable(f"not Linux on x86-64 or arm64 ({sys.platform}, "
                                f"{platform.machine()})")
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    result = int(_libc.syscall(ctypes.c_long(nr), ctypes.c_long(cmd),
                               ctypes.c_void_p(ctypes.addressof(attr)),
                               ctypes.c_long(len(attr))))
    return -ctypes.get_errno() if result < 0 else result


def _checked(what: str, result: int) -> int:
    """`result`, or KernelUnavailable / KernelError for a negative errno."""
    if result >= 0:
        return result
    if -result in UNAVAILABLE_ERRNOS:
        raise KernelUnavailable(f"{what}: {os.strerror(-result)}", -result)
    raise KernelError(what, -result)


def _attr(fmt: str, *values: Any) -> ctypes.Array[ctypes.c_char]:
    buf = ctypes.create_string_buffer(ATTR_SIZE)
    struct.pack_into(fmt, buf, 0, *values)
    return buf


def _addr(buf: ctypes.Array[ctypes.c_char] | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


def _kernel_name(name: str) -> bytes:
    """An object name as the kernel takes it (alphanumerics, '_' and '.', 15 bytes)."""
    return "".join(c if c.isalnum() or c in "_." else "_" for c in name)[:15].encode("ascii",
                                                                                    "replace")


def possible_cpus() -> int:
    """The kernel's number of possible CPUs (a per-CPU value's slot count)."""
    try:
        with open("/sys/devices/system/cpu/possible") as found:
            text = found.read().strip()
    except OSError:
        return os.cpu_count() or 1
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count = max(count, int(high or low) + 1)
    return count


class KernelMap:
    """A kernel map (BPF_MAP_CREATE) and its elements."""

    def __init__(self, name: str, map_type: int, key_size: int, value_size: int,
                 max_entries: int, flags: int = 0, *, percpu: bool = False,
                 map_extra: int = 0, inner_map_fd: int = 0,
                 btf: tuple[int, int, int] | None = None) -> None:
        self.name, self.type, self.flags = name, map_type, flags
        self.key_size, self.value_size, self.max_entries = key_size, value_size, max_entries
        self.percpu = percpu
        self.ncpus = possible_cpus() if percpu else 1
        attr = _attr("<IIIIII4x16s", map_type, key_size, value_size, max_entries, flags,
                     inner_map_fd, _kernel_name(name))
        struct.pack_into("<Q", attr, 64, map_extra)
        if btf is not None:  # (btf fd, key type id, value type id)
            struct.pack_into("<III", attr, 48, *btf)
        result = bpf(MAP_CREATE, attr)
        if result < 0 and -result not in UNAVAILABLE_ERRNOS:
            raise KernelRejected(f"BPF_MAP_CREATE {name}", -result)
        self.fd = _checked(f"BPF_MAP_CREATE {name}", result)

    @property
    def stride(self) -> int:
        """The bytes of one CPU's value in a per-CPU buffer (8-byte aligned)."""
        return (self.value_size + 7) & ~7

    def _value_buffer(self) -> ctypes.Array[ctypes.c_char]:
        return ctypes.create_string_buffer(max(self.stride * self.ncpus if self.percpu
                                               else self.value_size, 1))

    def _elem(self, cmd: int, key: bytes | None, value: ctypes.Array[ctypes.c_char] | None,
              flags: int = 0) -> int:
        key_buf = ctypes.create_string_buffer(key, max(len(key), 1)) if key is not None else None
        return bpf(cmd, _attr("<I4xQQQ", self.fd, _addr(key_buf), _addr(value), flags))

    def update(self, key: bytes | None, value: bytes | list[bytes]) -> None:
        """Store `value` at `key` (None: push onto a queue or stack); a per-CPU
        map takes one value for every CPU, or a list of them."""
        if self.percpu:
            values = value if isinstance(value, list) else [bytes(value)] * self.ncpus
            raw = b"".join(bytes(v).ljust(self.stride, b"\0") for v in values)
            raw = raw.ljust(self.stride * self.ncpus, b"\0")
        else:
            raw = bytes(value)  # type: ignore[arg-type]
        buf = ctypes.create_string_buffer(raw, max(len(raw), 1))
        _checked(f"BPF_MAP_UPDATE_ELEM {self.name}", self._elem(MAP_UPDATE_ELEM, key, buf))

    def lookup(self, key: bytes) -> bytes | list[bytes] | None:
        """The value at `key` (per-CPU: the list of every CPU's), or None."""
        buf = self._value_buffer()
        result = self._elem(MAP_LOOKUP_ELEM, key, buf)
        if result == -errno.ENOENT:
            return None
        _checked(f"BPF_MAP_LOOKUP_ELEM {self.name}", result)
        if self.percpu:
            return [buf.raw[cpu * self.stride : cpu * self.stride + self.value_size]
                    for cpu in range(self.ncpus)]
        return buf.raw[: self.value_size]

    def key_list(self) -> list[bytes]:
        """Every key, in the kernel's order (BPF_MAP_GET_NEXT_KEY)."""
        found: list[bytes] = []
        current: bytes | None = None
        while len(found) <= self.max_entries:
            following = ctypes.create_string_buffer(max(self.key_size, 1))
            key_buf = (ctypes.create_string_buffer(current, self.key_size)
                       if current is not None else None)
            result = bpf(MAP_GET_NEXT_KEY, _attr("<I4xQQ", self.fd, _addr(key_buf),
                                                 _addr(following)))
            if result == -errno.ENOENT:
                break
            _checked(f"BPF_MAP_GET_NEXT_KEY {self.name}", result)
            current = following.raw[: self.key_size]
            found.append(current)
        return found

    def pop(self) -> bytes | None:
        """Take the next value out of a queue or stack, or None when empty."""
        buf = self._value_buffer()
        result = self._elem(MAP_LOOKUP_AND_DELETE_ELEM, None, buf)
        if result == -errno.ENOENT:
            return None
        _checked(f"BPF_MAP_LOOKUP_AND_DELETE_ELEM {self.name}", result)
        return buf.raw[: self.value_size]

    def freeze(self) -> None:
        """BPF_MAP_FREEZE: no more writes from user space (libbpf's .rodata)."""
        _checked(f"BPF_MAP_FREEZE {self.name}", bpf(MAP_FREEZE, _attr("<I", self.fd)))

    def close(self) -> None:
        """Close the map's file descriptor (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def probe() -> None:
    """KernelUnavailable unless bpf() can create a map here."""
    KernelMap("probe", 2, 4, 4, 1).close()  # BPF_MAP_TYPE_ARRAY


def load_btf(blob: bytes) -> int:
    """BPF_BTF_LOAD: the fd of the loaded BTF; KernelRejected with the log."""
    data = ctypes.create_string_buffer(blob, len(blob))
    log = ctypes.create_string_buffer(1 << 16)
    result = bpf(BTF_LOAD, _attr("<QQIII", _addr(data), _addr(log), len(blob), len(log), 1))
    if result < 0 and -result not in UNAVAILABLE_ERRNOS:
        raise KernelRejected("BPF_BTF_LOAD", -result, log.value.decode(errors="replace"))
    return _checked("BPF_BTF_LOAD", result)


class KernelProg:
    """A program loaded with BPF_PROG_LOAD, run with BPF_PROG_TEST_RUN."""

    def __init__(self, name: str, prog_type: int, code: bytes, license: str = "GPL", *,
                 expected_attach_type: int = 0, btf_fd: int = 0,
                 func_info: list[tuple[int, int]] | None = None) -> None:
        self.name = name
        self._request = (prog_type, code, license, expected_attach_type, btf_fd,
                         func_info or [])
        result = self._load(0)
        if result >= 0:
            self.fd = result
            return
        log = ctypes.create_string_buffer(LOG_SIZE)
        again = self._load(1, log)
        if again >= 0:
            os.close(again)
        text = log.value.decode(errors="replace")
        if -result in UNAVAILABLE_ERRNOS and not text.strip():
            raise KernelUnavailable(f"BPF_PROG_LOAD {name}: {os.strerror(-result)}", -result)
        raise KernelRejected(f"BPF_PROG_LOAD {name}", -result, text)

    def _load(self, log_level: int, log: ctypes.Array[ctypes.c_char] | None = None) -> int:
        prog_type, code, license, attach, btf_fd, func_info = self._request
        insns = ctypes.create_string_buffer(code, max(len(code), 1))
        lic = ctypes.create_string_buffer(license.encode() + b"\0")
        infos = b"".join(struct.pack("<II", insn, type_id) for insn, type_id in func_info)
        info_buf = ctypes.create_string_buffer(infos, len(infos)) if infos else None
        attr = _attr("<IIQQIIQII16sII", prog_type, len(code) // 8, _addr(insns), _addr(lic),
                     log_level, len(log) if log is not None else 0, _addr(log), 0, 0,
                     _kernel_name(self.name), 0, attach)
        if info_buf is not None:
            struct.pack_into("<IIQI", attr, 72, btf_fd, 8, _addr(info_buf), len(func_info))
        return bpf(PROG_LOAD, attr)

    def test_run(self, data: bytes, ctx: bytes | None = None, ctx_out_size: int = 0,
                 data_out_size: int = 0) -> tuple[int, bytes, bytes | None]:
        """One BPF_PROG_TEST_RUN: (retval, packet out, context out or None)."""
        data_in = ctypes.create_string_buffer(data, max(len(data), 1))
        out_size = data_out_size or len(data) + OUT_SLACK
        data_out = ctypes.create_string_buffer(out_size)
        ctx_in = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
        ctx_out = ctypes.create_string_buffer(ctx_out_size) if ctx_out_size else None
        attr = _attr("<IIIIQQIIIIQQ", self.fd, 0, len(data), out_size, _addr(data_in),
                     _addr(data_out), 1, 0, len(ctx) if ctx else 0, ctx_out_size,
                     _addr(ctx_in), _addr(ctx_out))
        _checked(f"BPF_PROG_TEST_RUN {self.name}", bpf(PROG_TEST_RUN, attr))
        retval, _size_in, size_out = struct.unpack_from("<III", attr, 4)
        ctx_size = struct.unpack_from("<I", attr, 44)[0]
        return (retval, data_out.raw[:size_out],
                ctx_out.raw[:ctx_size] if ctx_out is not None else None)

    def close(self) -> None:
        """Close the program's file descriptor (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
