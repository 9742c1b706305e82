"""The JIT's translation entry points, where the runtime imports them.

Translation is two layers: :mod:`~ebpfvm.jit.plan` (backend-neutral: blocks,
budget charges, fused bounds checks, the observable stack, the caches) and a
native backend that walks the plan. x86-64 is the one backend today:
:mod:`~ebpfvm.jit.x86_codegen` (the translator), :mod:`~ebpfvm.jit.x86_emit`
(one emitter per instruction form) and :mod:`~ebpfvm.jit.x86_stubs` (register
map, entry, exits, cold stubs), over the encoder :mod:`~ebpfvm.jit.x86_64`.
"""

from __future__ import annotations

from .plan import JitCode, observable_stack
from .x86_codegen import translate
from .x86_stubs import REG_MAP

__all__ = ["REG_MAP", "JitCode", "observable_stack", "translate"]
