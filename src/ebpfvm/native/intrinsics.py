"""rt.h's intrinsics as Python helpers: with them, a runtime function runs as
a plain program on any engine, the interpreter included, so the runtime's C
code is tested everywhere (the native engines implement the intrinsics
inline, see ebpfvm.jit.x86_rtcalls).

Such a run reads rt_env, the descriptors and the slabs as guest memory: give
the VM them as allowed memory (:func:`runtime_memory`). Each intrinsic call
is a helper call there, and costs what one does.
"""

from __future__ import annotations

from typing import Any

from ..helpers import Helper, HelperContext
from .abi import RT_CHARGE_ID, RT_CHECK_ID, RT_ENV_ID, RT_PYTHON_BASE
from .env import RtEnvBlock

__all__ = ["intrinsic_helpers", "runtime_memory"]


def intrinsic_helpers(env: RtEnvBlock, python: dict[int, Helper]) -> dict[int, Helper]:
    """RT_ENV (`env`), RT_CHECK, RT_CHARGE and RT_PYTHON(N) for each helper
    N of `python`, keyed by their call ids."""

    def check(ctx: HelperContext, ptr: int, size: int, write: int, *_rest: int) -> int:
        if size:
            ctx.space.find(ptr, size, "store" if write else "load", ctx.pc)
        return ptr

    def charge(ctx: HelperContext, units: int, *_rest: int) -> int:
        ctx.charge(units)
        return 0

    table = {RT_ENV_ID: Helper(lambda *_args: env.address, "rt_env"),
             RT_CHECK_ID: Helper(check, "rt_check", context=True),
             RT_CHARGE_ID: Helper(charge, "rt_charge", context=True)}
    for number, helper in python.items():
        table[RT_PYTHON_BASE + number] = helper
    return table


def runtime_memory(env: RtEnvBlock) -> list[Any]:
    """The buffers a runtime function reads natively: the env, and the
    descriptors of its maps table (an array map's struct rt_map; a hash or
    queue map's whole native block, whose descriptor it starts with); the
    slabs are the maps' own regions."""
    return [env.env, *(getattr(found, "mem", found) for found in env.descriptors)]
