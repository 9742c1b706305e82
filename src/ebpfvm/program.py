"""A program value: one program's bytecode and what every consumer derives
from it, built once when the program is set (RFC 9669 section 3 for the
instruction encoding).

The VM makes one :class:`ProgramImage` per ``set_program`` and hands it to
the built-in verifier, every engine's compile, capture runs and the CLI's
tracer. Each fact is computed at its first use and kept: the instructions
are decoded once, by the first consumer that needs them (the verifier reads
the raw slots and decodes nothing), and the others use them as they are."""

from __future__ import annotations

from typing import Any, NamedTuple

from .cfg import basic_blocks, branch_target, callback_target, stack_size
from .encoding import SLOT, Insn, decode
from .isa import Form

__all__ = ["CallGraph", "ProgramImage"]

_U32 = 0xFFFF_FFFF


class CallGraph(NamedTuple):
    """The program's local (bpf-to-bpf) calls: `entries` are the first pcs
    of its functions (0, the main program, first), `edges` the (pc of the
    call, pc it calls) pairs in program order."""

    entries: tuple[int, ...]
    edges: tuple[tuple[int, int], ...]


class ProgramImage:
    """One program's bytecode and the facts derived from it, each computed
    once at its first use: `insns`, `blocks`, `stack_size`, `run_stack`,
    `helpers`, `calls` and `callbacks`. `cache` holds what engines derive from the image
    (the interpreter's translation), so VMs sharing an image share it too."""

    __slots__ = ("_blocks", "_callbacks", "_calls", "_helpers", "_insns", "_run_stack", "_stack_size",
                 "cache", "code")

    def __init__(self, code: bytes) -> None:
        self.code = code
        self._insns: tuple[Insn, ...] | None = None
        self._blocks: tuple[tuple[Insn, ...], ...] | None = None
        self._stack_size: int | None = None
        self._run_stack: int | None = None
        self._helpers: frozenset[int] | None = None
        self._calls: CallGraph | None = None
        self._callbacks: frozenset[int] | None = None
        self.cache: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return f"<ProgramImage {len(self.code) // SLOT} slots>"

    @property
    def slots(self) -> int:
        """The program's length in 8-byte instruction slots."""
        return len(self.code) // SLOT

    @property
    def insns(self) -> tuple[Insn, ...]:
        """The decoded instructions (lddw fused into one)."""
        insns = self._insns
        if insns is None:
            insns = self._insns = tuple(decode(self.code))
        return insns

    @property
    def blocks(self) -> tuple[tuple[Insn, ...], ...]:
        """The basic blocks, as every engine charges the budget for them."""
        if self._blocks is None:
            self._blocks = tuple(tuple(block) for block in basic_blocks(self.insns))
        return self._blocks

    @property
    def stack_size(self) -> int:
        """The stack the program may use: one frame, or all of them when it
        makes local calls."""
        if self._stack_size is None:
            self._stack_size = stack_size(self.insns)
        return self._stack_size

    @property
    def run_stack(self) -> int:
        """The stack bytes a run may touch, cleared before each run in every
        engine: what the program can observe through r10 (all of its frames
        when it makes local calls or r10 escapes into another register), so
        that no run, even through a pointer that does not come from r10, sees
        an earlier run's data."""
        if self._run_stack is None:
            from .jit.translate import observable_stack  # the analysis's home

            self._run_stack = observable_stack(self.insns, self.stack_size)
        return self._run_stack

    @property
    def helpers(self) -> frozenset[int]:
        """The helper numbers the program calls (the u32 imm of ``call imm``)."""
        if self._helpers is None:
            self._helpers = frozenset(insn.imm & _U32 for insn in self.insns
                                      if insn.row is not None and insn.row.form is Form.CALL)
        return self._helpers

    @property
    def calls(self) -> CallGraph:
        """The local-call graph: function entries and call edges."""
        if self._calls is None:
            edges = []
            for insn in self.insns:
                if insn.row is not None and insn.row.form is Form.CALL_LOCAL:
                    target = branch_target(insn)
                    if target is not None:
                        edges.append((insn.pc, target))
            entries = (0, *sorted({target for _pc, target in edges} - {0}))
            self._calls = CallGraph(entries, tuple(edges))
        return self._calls

    @property
    def callbacks(self) -> frozenset[int]:
        """The function entries ``lddw_func`` instructions refer to: the only
        pcs bpf_loop and bpf_for_each_map_elem may call (empty for most
        programs, whose engines then emit no callback support at all)."""
        if self._callbacks is None:
            targets = (callback_target(insn) for insn in self.insns)
            self._callbacks = frozenset(target for target in targets if target is not None)
        return self._callbacks
