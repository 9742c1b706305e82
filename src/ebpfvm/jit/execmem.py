"""Executable memory: mapped read-write, filled, then switched to read-execute.

The code is never writable and executable at once (W^X). The mapping is
released by :meth:`ExecMemory.close`, or when the object is collected.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import sys
import weakref

from ..errors import JitError

__all__ = ["ExecMemory", "jit_supported"]

PROT_READ = mmap.PROT_READ
PROT_WRITE = mmap.PROT_WRITE
PROT_EXEC = mmap.PROT_EXEC
MAP_PRIVATE = mmap.MAP_PRIVATE
MAP_ANONYMOUS = mmap.MAP_ANONYMOUS
MAP_FAILED = ctypes.c_void_p(-1).value
PAGE_SIZE = mmap.PAGESIZE


def jit_supported() -> str | None:
    """None when this platform can run the JIT, else the reason it cannot."""
    if sys.platform != "linux":
        return f"the JIT needs Linux, not {sys.platform}"
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"the JIT emits x86-64 code, not {platform.machine()}"
    return None


def _libc() -> ctypes.CDLL:
    # The process's own symbols include libc's; find_library would spawn ldconfig.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mprotect.restype = ctypes.c_int
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


_LIBC: ctypes.CDLL | None = None


def _get_libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = _libc()
    return _LIBC


def _unmap(address: int, size: int) -> None:
    _get_libc().munmap(address, size)


class ExecMemory:
    """A private anonymous mapping holding machine code, read-execute only."""

    def __init__(self, code: bytes) -> None:
        reason = jit_supported()
        if reason:
            raise JitError(reason)
        libc = _get_libc()
        self.size = max(PAGE_SIZE, -(-len(code) // PAGE_SIZE) * PAGE_SIZE)
        address = libc.mmap(None, self.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if address in (None, MAP_FAILED):
            raise JitError(f"mmap failed: errno {ctypes.get_errno()}")
        self.address: int = address
        ctypes.memmove(address, code, len(code))
        if libc.mprotect(address, self.size, PROT_READ | PROT_EXEC) != 0:
            _unmap(address, self.size)
            raise JitError(f"mprotect failed: errno {ctypes.get_errno()}")
        self.code_size = len(code)
        self._finalizer = weakref.finalize(self, _unmap, address, self.size)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Unmap the code. Calling into it afterwards is undefined: the owner
        drops every function pointer first."""
        self._finalizer()

    def read(self) -> bytes:
        """The code bytes (for dumps and tests)."""
        if self.closed:
            raise JitError("executable memory is closed")
        return ctypes.string_at(self.address, self.code_size)

    def __enter__(self) -> ExecMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
