"""ebpfvm: a user-space eBPF virtual machine.

The public API: the four rbpf VM kinds, the assembler and disassembler, the
verifier, helpers, the error hierarchy, and ``engines()``: the registered
engines with their capabilities (:mod:`ebpfvm.engine`).
"""

from .asm import assemble
from .cfg import FRAME_SIZE, MAX_CALL_DEPTH
from .disasm import disassemble
from .elf import ElfObject, Program, load
from .engine import engines
from .errors import (
    ArgumentError,
    ArgumentTypeError,
    AsmError,
    BudgetExceeded,
    CallDepthExceeded,
    Closed,
    CoreRelocationError,
    CoreRelocationFault,
    DecodeError,
    EbpfError,
    ElfError,
    HelperFault,
    InvalidInstruction,
    JitError,
    JitUnsupported,
    MapError,
    MemoryFault,
    ResourceLimit,
    RunInterrupted,
    TailCallFault,
    VerifierError,
    VmBusy,
    VmFault,
)
from .helpers import Helper, HelperContext
from .interpreter import STACK_SIZE
from .kbpf import KernelRejected, KernelUnavailable
from .kdiff import KernelDiff, against_kernel
from .linkerrors import (
    HelperNotAllowed,
    LinkError,
    UnsupportedExtern,
    UnsupportedHelper,
    UnsupportedMapAttribute,
    UnsupportedMapType,
    UnsupportedRelocation,
)
from .maps import Map, QueueMap
from .verifier import verify
from .vm import (
    DEFAULT_BUDGET,
    EbpfVmFixedMbuff,
    EbpfVmMbuff,
    EbpfVmNoData,
    EbpfVmRaw,
    buffer_address,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BUDGET",
    "FRAME_SIZE",
    "MAX_CALL_DEPTH",
    "STACK_SIZE",
    "ArgumentError",
    "ArgumentTypeError",
    "AsmError",
    "BudgetExceeded",
    "CallDepthExceeded",
    "Closed",
    "CoreRelocationError",
    "CoreRelocationFault",
    "DecodeError",
    "EbpfError",
    "EbpfVmFixedMbuff",
    "EbpfVmMbuff",
    "EbpfVmNoData",
    "EbpfVmRaw",
    "ElfError",
    "ElfObject",
    "Helper",
    "HelperContext",
    "HelperFault",
    "HelperNotAllowed",
    "InvalidInstruction",
    "JitError",
    "JitUnsupported",
    "KernelDiff",
    "KernelRejected",
    "KernelUnavailable",
    "LinkError",
    "Map",
    "MapError",
    "MemoryFault",
    "Program",
    "QueueMap",
    "ResourceLimit",
    "RunInterrupted",
    "TailCallFault",
    "UnsupportedExtern",
    "UnsupportedHelper",
    "UnsupportedMapAttribute",
    "UnsupportedMapType",
    "UnsupportedRelocation",
    "VerifierError",
    "VmBusy",
    "VmFault",
    "__version__",
    "against_kernel",
    "assemble",
    "buffer_address",
    "disassemble",
    "engines",
    "load",
    "verify",
]
