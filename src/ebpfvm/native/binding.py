"""Which Python helpers a native version stands for.

The reference implementation of a helper with a native version is marked
with :func:`native_version`; the linker (ebpfvm.jit.rtlink) links the native
version only for a VM whose helper is that very implementation, so a helper
the user registers in its place keeps being called. The implementation's
owner (a bound method's object) tells the linker what the native version
reads: ``rt`` (the kernel helpers' RtEnvBlock) or ``maps`` and ``cpu`` (the
map helpers' table)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["is_native_version", "native_version", "owner_of"]

_F = TypeVar("_F", bound=Callable[..., Any])
_MARK = "__rt_native__"


def native_version(fn: _F) -> _F:
    """Mark `fn` as the reference implementation of a helper whose native
    version (rt_<helper> in the runtime objects) does the same."""
    setattr(fn, _MARK, True)
    return fn


def is_native_version(fn: Callable[..., Any]) -> bool:
    """Whether `fn` (a function or bound method) is marked."""
    return bool(getattr(fn, _MARK, False))


def owner_of(fn: Callable[..., Any]) -> Any:
    """The object a bound method is bound to (None for a function)."""
    return getattr(fn, "__self__", None)
