"""The exception hierarchy. Every error carries structured fields; tests assert
on the type and the fields, never on the wording of the message.

::

    EbpfError
    ├── AsmError(line, col)
    ├── DecodeError(pc)
    ├── VerifierError(pc, reason)
    ├── ElfError(section)
    ├── MapError
    ├── ResourceLimit(resource, limit, requested)   (a configured bound refused a request)
    ├── VmBusy                        (the VM is running: re-entry, close, set_program)
    ├── JitError ── JitUnsupported(opcode)
    └── VmFault(pc)
        ├── MemoryFault(address, size, access)
        ├── HelperFault(helper_id, cause, chain)  (exception inside a helper, or unknown helper)
        ├── BudgetExceeded(count)
        ├── CallDepthExceeded(depth)
        ├── TailCallFault(chain)        (a fault inside a tail-called program)
        ├── RunInterrupted              (Ctrl-C; also a KeyboardInterrupt)
        └── InvalidInstruction(opcode)  (reached an instruction it cannot run)
"""

from __future__ import annotations

__all__ = [
    "AsmError",
    "BudgetExceeded",
    "CallDepthExceeded",
    "DecodeError",
    "EbpfError",
    "ElfError",
    "HelperFault",
    "InvalidInstruction",
    "JitError",
    "JitUnsupported",
    "MapError",
    "MemoryFault",
    "ResourceLimit",
    "RunInterrupted",
    "TailCallFault",
    "VerifierError",
    "VmBusy",
    "VmFault",
]


class EbpfError(Exception):
    """Base class of every error ebpfvm raises on purpose."""


class AsmError(EbpfError):
    """Assembler input error at a 1-based line and column."""

    def __init__(self, message: str, line: int, col: int) -> None:
        super().__init__(f"line {line}, column {col}: {message}")
        self.reason = message
        self.line = line
        self.col = col


class DecodeError(EbpfError):
    """Bytes that are not a sequence of instructions (bad length, truncated lddw)."""

    def __init__(self, message: str, pc: int | None = None) -> None:
        where = f" at pc {pc}" if pc is not None else ""
        super().__init__(f"{message}{where}")
        self.reason = message
        self.pc = pc


class VerifierError(EbpfError):
    """The verifier rejected the program.

    `rule` is a stable machine-readable name of the broken rule (for example
    ``"write_r10"``); `reason` is the human-readable text; `pc` is the slot
    index of the offending instruction, or None for whole-program rules."""

    def __init__(self, reason: str, pc: int | None = None, rule: str = "custom") -> None:
        where = f" (insn #{pc})" if pc is not None else ""
        super().__init__(f"verifier: {reason}{where}")
        self.reason = reason
        self.pc = pc
        self.rule = rule


class ElfError(EbpfError):
    """Malformed or unsupported ELF input, naming the section when known."""

    def __init__(self, reason: str, section: str | None = None) -> None:
        where = f" in section {section!r}" if section is not None else ""
        super().__init__(f"ELF: {reason}{where}")
        self.reason = reason
        self.section = section


class MapError(EbpfError):
    """Invalid map definition or operation."""


class ResourceLimit(EbpfError):
    """A request over one of the configured resource bounds (see the guide's
    resource model): `resource` names the bound, `limit` is its value and
    `requested` what was asked for, in the same unit."""

    def __init__(self, resource: str, limit: int, requested: int, detail: str = "") -> None:
        extra = f": {detail}" if detail else ""
        super().__init__(f"{resource} limit of {limit} exceeded (asked for {requested}){extra}")
        self.resource = resource
        self.limit = limit
        self.requested = requested


class VmBusy(EbpfError):
    """The VM is in the middle of a run, and the call would disturb it: a
    helper running the same VM again, closing it or loading another program,
    or a second thread using a VM that is running."""


class JitError(EbpfError):
    """The JIT compiler cannot be used or failed."""


class JitUnsupported(JitError):
    """An opcode the JIT cannot translate."""

    def __init__(self, opcode: int, reason: str) -> None:
        super().__init__(f"JIT does not support opcode 0x{opcode:02x}: {reason}")
        self.opcode = opcode
        self.reason = reason


class VmFault(EbpfError):
    """A run-time fault of the guest program at instruction `pc`. In a batch
    run, `batch_index` is the input that faulted."""

    def __init__(self, message: str, pc: int) -> None:
        super().__init__(f"{message} at pc {pc}")
        self.reason = message
        self.pc = pc
        self.batch_index: int | None = None


class MemoryFault(VmFault):
    """A load or store outside every region the program was given, or a store
    into a read-only region. `access` is ``"load"`` or ``"store"``."""

    def __init__(self, pc: int, address: int, size: int, access: str, detail: str = "") -> None:
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"out-of-bounds {access} of {size} byte{'' if size == 1 else 's'} "
            f"at address 0x{address:x}{extra}", pc
        )
        self.address = address
        self.size = size
        self.access = access


class HelperFault(VmFault):
    """A helper call failed: unknown helper id, or the helper raised."""

    def __init__(self, pc: int, helper_id: int, reason: str, helper_name: str = "") -> None:
        name = f" ({helper_name})" if helper_name else ""
        super().__init__(f"helper {helper_id}{name}: {reason}", pc)
        self.helper_id = helper_id
        self.helper_name = helper_name
        self.cause: BaseException | None = None
        """The exception the helper raised, when it raised one."""


class BudgetExceeded(VmFault):
    """The instruction budget ran out: `count` instructions ran, the next one
    (at `pc`) would have exceeded it."""

    def __init__(self, pc: int, count: int) -> None:
        super().__init__(f"instruction budget of {count} exhausted", pc)
        self.count = count


class CallDepthExceeded(VmFault):
    """A local call would nest more than the allowed number of frames."""

    def __init__(self, pc: int, depth: int) -> None:
        super().__init__(f"call depth exceeds {depth} frames", pc)
        self.depth = depth


class TailCallFault(VmFault):
    """A program reached by tail calls faulted. `pc` is the pc of the tail
    call in the outermost program; `chain` names the programs from the
    outermost caller to the one that faulted; `fault` is that program's own
    typed error (its pc is a pc of the last program in `chain`). The message
    stays short however long the chain is."""

    def __init__(self, pc: int, chain: tuple[str, ...], fault: VmFault) -> None:
        shown = " -> ".join(chain) if len(chain) <= 6 else \
            " -> ".join((*chain[:3], f"... {len(chain) - 5} more ...", *chain[-2:]))
        super().__init__(f"in tail-called program {chain[-1]!r} ({shown}): "
                         f"{type(fault).__name__} at pc {fault.pc}: {fault.reason[:200]}", pc)
        self.chain = chain
        self.fault = fault


class RunInterrupted(VmFault, KeyboardInterrupt):
    """The run was interrupted (SIGINT, Ctrl-C) at or near `pc`. It is also a
    KeyboardInterrupt, so ``except KeyboardInterrupt`` still stops a script."""

    def __init__(self, pc: int) -> None:
        super().__init__("run interrupted", pc)


class InvalidInstruction(VmFault):
    """The engine reached an instruction it cannot execute (unverified program)."""

    def __init__(self, pc: int, opcode: int, reason: str) -> None:
        super().__init__(f"invalid instruction 0x{opcode:02x}: {reason}", pc)
        self.opcode = opcode
