"""Run a VM on a named engine, so every test runs the same case everywhere."""

from __future__ import annotations

from typing import Any

from ebpfvm.jit.execmem import jit_supported

ALL_ENGINES = ["interp", "jit", "jit-unchecked"] if jit_supported() is None else ["interp"]
CHECKED_ENGINES = [name for name in ALL_ENGINES if name != "jit-unchecked"]
"""Engines that must stop bad programs with a typed error (unchecked JIT code would crash)."""


def run(vm: Any, engine: str, *args: Any) -> int:
    """vm.execute_program(*args) on `engine`, compiling first when needed."""
    if engine == "interp":
        result: int = vm.execute_program(*args)
        return result
    unchecked = engine == "jit-unchecked"
    if not vm.jit_ready or vm.jit_unchecked != unchecked:
        vm.jit_compile(unchecked=unchecked)
    result = vm.execute_program_jit(*args)
    return result
