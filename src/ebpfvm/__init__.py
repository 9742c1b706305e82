"""ebpfvm: a user-space eBPF virtual machine."""

from .errors import (
    AsmError,
    BudgetExceeded,
    CallDepthExceeded,
    DecodeError,
    EbpfError,
    ElfError,
    HelperFault,
    InvalidInstruction,
    JitError,
    JitUnsupported,
    MapError,
    MemoryFault,
    VerifierError,
    VmFault,
)

__version__ = "0.1.0"

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
    "VerifierError",
    "VmFault",
    "__version__",
]
