"""The exception hierarchy. Every error carries structured fields; tests assert
on the type and the fields, never on the wording of the message.

::

    EbpfError
    ├── AsmError(line, col)
    ├── DecodeError(pc)
    ├── VerifierError(pc, reason)
    ├── ElfError(section)
    │   ├── CoreRelocationError(insn, kind, type_name, access, field)
    │   └── LinkError(program): UnsupportedHelper, HelperNotAllowed, UnsupportedMapType,
    │       UnsupportedRelocation, UnsupportedExtern   (ebpfvm.linkerrors)
    ├── MapError ── ArrayIndexError(map_name, index, max_entries), MapFull(map_name, max_entries),
    │               BtfValueError(field, value, reason, map_name)
    ├── ResourceLimit(resource, limit, requested)   (a configured bound refused a request)
    ├── VmBusy                        (the VM is running: re-entry, close, set_program)
    ├── ArgumentError(argument, value)      (also a ValueError: a bad library argument)
    ├── ArgumentTypeError(argument, value)  (also a TypeError: an argument of the wrong type)
    ├── Closed(what)                  (also a ValueError: a runner or object used after close)
    ├── JitError ── JitUnsupported(engine, reason)  (an engine that cannot run here)
    └── VmFault(pc)
        ├── MemoryFault(address, size, access)
        ├── HelperFault(helper_id, cause, chain)  (exception inside a helper, or unknown helper)
        ├── BudgetExceeded(count)
        ├── CallDepthExceeded(depth)
        ├── TailCallFault(chain)        (a fault inside a tail-called program)
        ├── RunInterrupted              (Ctrl-C; also a KeyboardInterrupt)
        ├── InvalidInstruction(opcode)  (reached an instruction it cannot run)
        └── CoreRelocationFault(kind, type_name, field)  (ran a poisoned CO-RE instruction)
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "ArrayIndexError",
    "AsmError",
    "BtfValueError",
    "BudgetExceeded",
    "CallDepthExceeded",
    "Closed",
    "CoreRelocationError",
    "CoreRelocationFault",
    "DecodeError",
    "EbpfError",
    "ElfError",
    "HelperFault",
    "InvalidInstruction",
    "JitError",
    "JitUnsupported",
    "LockHeldAtExit",
    "MapError",
    "MapFull",
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
        where = f" in section '{section}'" if section is not None else ""
        super().__init__(f"ELF: {reason}{where}")
        self.reason = reason
        self.section = section


class MapError(EbpfError):
    """Invalid map definition or operation."""


class ArrayIndexError(MapError, IndexError):
    """An array map (or program array) index outside 0..max_entries-1, from
    Python. It is also an IndexError. `map_name`, `index` and `max_entries`
    are fields."""

    def __init__(self, map_name: str, index: int, max_entries: int) -> None:
        super().__init__(f"map {map_name!r}: index {index} is out of range "
                         f"0..{max_entries - 1}")
        self.map_name = map_name
        self.index = index
        self.max_entries = max_entries


class MapFull(MapError):
    """A new key for a hash map that holds `max_entries` entries already
    (the kernel's E2BIG). `map_name` and `max_entries` are fields."""

    def __init__(self, map_name: str, max_entries: int) -> None:
        super().__init__(f"map {map_name!r} is full ({count_of(max_entries, 'entry', 'entries')})")
        self.map_name = map_name
        self.max_entries = max_entries


class BtfValueError(MapError, ValueError):
    """A value that does not fit its BTF type. `field` is the path to it
    (``value.hits``, ``key.addr[2]``), `value` what was given and `reason`
    why it does not fit; `map_name` is set when a map's preload raised it."""

    def __init__(self, field: str, value: object, reason: str, map_name: str = "") -> None:
        where = f"map {map_name}: " if map_name else ""
        super().__init__(f"{where}{field}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason
        self.map_name = map_name


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


class ArgumentError(EbpfError, ValueError):
    """A library argument out of its range, refused when it is given (the
    constructor, a setter, register_helper), not at the first run. It is also
    a ValueError. `argument` names the argument, `value` is what was given."""

    def __init__(self, argument: str, value: object, expected: str) -> None:
        super().__init__(f"{argument} must be {expected}, not {_shown(value)}")
        self.argument = argument
        self.value = value
        self.expected = expected


class ArgumentTypeError(EbpfError, TypeError):
    """A library argument of the wrong type, refused when it is given. It is
    also a TypeError. `argument` names the argument, `value` is what was given."""

    def __init__(self, argument: str, value: object, expected: str) -> None:
        super().__init__(f"{argument} must be {expected}, not {type(value).__name__}")
        self.argument = argument
        self.value = value
        self.expected = expected


class Closed(EbpfError, ValueError):
    """An operation on a runner or loaded object after its close() (or the end
    of its ``with`` block). It is also a ValueError, as for a closed file.
    `what` names the closed object's class."""

    def __init__(self, what: str) -> None:
        super().__init__(f"the {what} is closed")
        self.what = what


def count_of(count: int, noun: str, plural: str | None = None) -> str:
    """``"1 byte"``, ``"2 bytes"``: `count` and `noun`, in the plural
    (`plural`, or `noun` + "s") unless `count` is 1."""
    return f"{count} {noun}" if count == 1 else f"{count} {plural or noun + 's'}"


_SHOWN_CHARS = 40
"""The longest argument value a message repeats."""


def check_int(argument: str, value: object, low: int, high: int | None = None) -> int:
    """`value` as an int from `low` to `high` (no upper bound when None);
    ArgumentTypeError (a TypeError) for a non-int or a bool, ArgumentError
    (a ValueError) outside the range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(argument, value, "an int")
    if value < low or (high is not None and value > high):
        expected = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ArgumentError(argument, value, expected)
    return value


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}..."


class JitError(EbpfError):
    """The JIT compiler cannot be used or failed."""


class JitUnsupported(JitError):
    """An engine that cannot run here (the x86-64 JIT off x86-64 Linux): the
    engine's name and the reason. A JitError, as jit_compile() raised there
    before the engine registry."""

    def __init__(self, engine: str, reason: str) -> None:
        super().__init__(reason)
        self.engine = engine
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
            f"out-of-bounds {access} of {count_of(size, 'byte')} at address 0x{address:x}{extra}",
            pc
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


class LockHeldAtExit(VmFault):
    """The program returned while holding the bpf_spin_lock at `address`
    (taken by the call at `pc`): the kernel's verifier refuses a program that
    can exit inside a bpf_spin_lock-ed region (RFC 9669 section 5.3)."""

    def __init__(self, pc: int, address: int) -> None:
        super().__init__(f"the program exited holding the bpf_spin_lock at {address:#x} "
                         "taken here (the kernel refuses BPF_EXIT inside a "
                         "bpf_spin_lock-ed region)", pc)
        self.address = address


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


# core (issue 13): CO-RE relocations (ebpfvm.core_relo)
class CoreRelocationError(ElfError):
    """A CO-RE relocation that cannot be applied at load: `kind` (its libbpf
    name, ``byte_off``...), the local type `type_name`, the `access` string
    (``0:1:2``), the `field` path it names (``iphdr.saddr``), and the code
    section and instruction index (in that section) of the instruction."""

    def __init__(self, reason: str, section: str, insn: int, kind: str, type_name: str,
                 access: str, field: str) -> None:
        super().__init__(f"CO-RE {kind} relocation of {field or type_name} at instruction "
                         f"{insn}: {reason}", section)
        self.insn = insn
        self.kind = kind
        self.type_name = type_name
        self.access = access
        self.field = field


class CoreRelocationFault(VmFault):
    """A run reached an instruction whose CO-RE relocation failed at load (libbpf
    poisons it; the kernel would refuse it at verification if reachable).
    `relocation` is the ebpfvm.core_relo.CoreRelocation: kind, type name, field."""

    def __init__(self, pc: int, relocation: object, type_name: str, field: str,
                 kind: str) -> None:
        super().__init__(f"reached the instruction of the failed CO-RE {kind} relocation "
                         f"of {field or type_name}", pc)
        self.relocation = relocation
        self.type_name = type_name
        self.field = field
        self.kind = kind
