"""The x86-64 JIT behind the :class:`~ebpfvm.engine.Engine` protocol: the
checked engine (``jit``) and the unchecked one (``jit-unchecked``). The JIT
modules load at the first compile, so listing the engines costs nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .execmem import jit_supported

if TYPE_CHECKING:
    from ..engine import CompileSettings
    from ..program import ProgramImage
    from .executable import JitExecutable

__all__ = ["JitEngine"]


class JitEngine:
    """x86-64 code for Linux; `checked` code checks every memory access and
    the budget as the interpreter does, unchecked code does not (UNSAFE)."""

    batches = True
    tracing = False
    reference = False
    platforms: tuple[str, ...] = ("linux-x86_64",)

    def __init__(self, name: str, *, checked: bool) -> None:
        self.name = name
        self.checked = checked
        self.title = "the checked JIT" if checked else "the unchecked JIT"

    def unavailable(self) -> str | None:
        """Why this platform cannot run the JIT, or None."""
        return jit_supported()

    def compile(self, program: ProgramImage, settings: CompileSettings) -> JitExecutable:
        """Translate `program` to x86-64 code bound to the VM's settings."""
        from .executable import JitExecutable

        return JitExecutable(program.insns, checked=self.checked,
                             stack=settings.stack_for(program.run_stack),
                             helpers=settings.helpers, extra=settings.extra,
                             fixed_mbuff=settings.fixed_mbuff, busy=settings.busy)
