"""bpf_tail_call (helper 12) for the VMs of a loaded object.

The interpreter runs a chain of tail calls in Python, one callee VM per
program (_TailCalls below). JIT code of a VM made by ElfObject.vm jumps to
the target's code instead (jit/tailcall.py, through _TailCalls.native_group),
with the same results."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from .callbacks import callback_helpers
from .errors import (
    BudgetExceeded,
    ElfError,
    JitError,
    RunInterrupted,
    TailCallFault,
    VmFault,
)
from .helper_table import helper_number
from .helpers import NO_BUDGET, HelperContext
from .maps import ProgArray, map_helpers

if TYPE_CHECKING:
    from .elf import ElfObject
    from .jit.tailcall import TailGroup

__all__ = ["BPF_TAIL_CALL", "E2BIG", "ENOENT", "MAX_TAIL_CALLS"]


BPF_TAIL_CALL = helper_number("bpf_tail_call")
MAX_TAIL_CALLS = 33
"""The kernel's limit on a chain of tail calls (MAX_TAIL_CALL_CNT)."""
ENOENT = 2
E2BIG = 7


class _Run:
    """The tail calls of one run: their count (the kernel's tail_call_cnt,
    shared by every function and program of the run), the callee VMs, one per
    program and level of nesting, and the level of the chain running now."""

    __slots__ = ("count", "level", "pool")

    def __init__(self, pool: dict[tuple[str, int], Any]) -> None:
        self.count = 0
        self.level = 0
        self.pool = pool


class _TailCalls:
    """bpf_tail_call for one VM of an object. The called program runs on the
    same input, in a VM of the same kind kept per program, on the caller's
    engine, and its r0 ends the caller: the call never returns, as in the
    kernel. The helper that starts a chain runs it: a callee's tail call
    ends the callee and the chain's runner runs the next program, so a chain
    of 33 calls of a program compiles it once, not 33 times. A tail call made
    in a bpf-to-bpf function or a callback (ctx.frame[0] > 0) replaces that
    function only: its chain runs nested, on the callee VMs of the next
    level, and its last r0 is what the function returns (ctx.tail_exit tells
    the engine). A missing program, or a 34th tail call in the run, makes the
    helper fail and the caller go on.

    The count belongs to the run, as in the kernel's one program run per
    packet: one _Run is passed down to each callee (never shared by other
    runs or threads), the callee runs on what is left of the caller's
    instruction budget and what it used is taken off, and it gets the helpers
    a runner or the user registered on the caller (they work on the same
    context). A fault in a callee, BudgetExceeded included, surfaces as
    TailCallFault(pc of the tail call in the outermost program, program
    names outermost first, the innermost program's fault); RunInterrupted
    stays what it is (a KeyboardInterrupt), at that pc.

    JIT code does not call this helper for a tail call it can make: it jumps
    into the target's code, compiled with the root's (native_group and
    jit/tailcall.py), with these same results. The chain here then serves the
    interpreter, and the JIT where native_group gives no group."""

    def __init__(self, obj: ElfObject, settings: dict[str, Any], name: str, vm: Any) -> None:
        self.obj = obj
        self.settings = settings
        self.name = name
        self.vm = weakref.ref(vm)
        self.own: dict[int, Any] = {}
        """The helpers ElfObject.vm registered; any other one a callee inherits."""
        self.depth = 0
        """Tail calls made in the run before this VM's current one (0: the VM
        runs the run's root program)."""
        self.request: str | None = None
        """The program a callee's tail call asked the chain to run next."""
        self.run: _Run | None = None
        """The tail calls of the current run (None: none made yet)."""
        self.pool: dict[tuple[str, int], Any] = {}
        """The root's callee VMs, kept from run to run: one per program and
        level of nested chains (callees of one chain run one after the other,
        so a chain of 33 calls of a program needs one)."""

    def attach(self, vm: Any, share: bool = True) -> None:
        """Make this the tail-call helper of `vm` (the VM it was made for).
        With `share`, when the object has a program array, `vm` also gets
        every program's maps and data: JIT code runs tail-called programs on
        `vm`'s helpers and regions (see native_group)."""
        vm.register_helper(BPF_TAIL_CALL, self.helper, context=True, name="bpf_tail_call")
        if share and any(isinstance(m, ProgArray) for m in self.obj.maps.values()):
            self._share(vm)
        self.own = dict(vm._helpers)
        vm._tail_calls = self

    def _share(self, vm: Any) -> None:
        """Give `vm` the maps and data sections of the object's other programs."""
        mine = self.obj.program(self.name)
        sections = {s for p in self.obj.programs for s in p.data_sections} - set(
            mine.data_sections)
        for section in sorted(sections):
            read_only = section.startswith((".rodata", ".kconfig"))
            vm.register_allowed_memory(self.obj.data[section], writable=not read_only)
        names = {n for p in self.obj.programs for n in p.maps}
        if names - set(mine.maps):
            used = {self.obj.maps[n].handle: self.obj.maps[n] for n in sorted(names)}
            env = self.settings.get("env")
            cpu = (lambda: env.cpu) if env is not None else None
            for key, helper in map_helpers(used, cpu).items():
                vm.register_helper(key, helper)
            for key, helper in callback_helpers(used).items():
                vm.register_helper(key, helper)

    def native_group(self) -> TailGroup | None:
        """The object's programs and program arrays for JIT code in which
        this VM's tail calls are native jumps (jit/tailcall.py); None: they
        stay calls of this helper."""
        from .jit.tailcall import TailGroup

        return TailGroup.of(self.obj, self.name)

    def copy_to(self, vm: Any) -> None:
        """Give `vm`, a VM of another kind running the same program with the
        same helpers (SkbRunner turns an EbpfVmRaw into an EbpfVmMbuff), its
        own tail-call helper: callees are then built as `vm`'s kind and get
        the helpers registered on `vm`."""
        settings = {**self.settings, "kind": type(vm)}
        copy = _TailCalls(self.obj, settings, self.name, vm)
        own = dict(self.own)
        copy.attach(vm, share=False)  # vm gets this VM's helpers and memory
        copy.own = {**own, BPF_TAIL_CALL: vm._helpers[BPF_TAIL_CALL]}

    def helper(self, ctx: HelperContext, _ctx_ptr: int, handle: int, index: int, _d: int,
               _e: int) -> int:
        array = next((m for m in self.obj.maps.values() if m.handle == handle), None)
        if not isinstance(array, ProgArray):
            raise ElfError(f"tail call through {handle:#x}, which is not a program array")
        target = array.get(index & 0xFFFF_FFFF)
        if target is None:
            return -ENOENT & 0xFFFF_FFFF_FFFF_FFFF
        run = self.run
        if run is None:  # the run's root program: its count starts with the run
            run = self.run = _Run(self.pool)
            ctx.at_exit(self._end_run)
        if run.count >= MAX_TAIL_CALLS:
            return -E2BIG & 0xFFFF_FFFF_FFFF_FFFF
        depth, ctx.frame = ctx.frame[0], (0, 0)  # the engines set it before each call 12
        if depth > 0:
            # Made in a bpf-to-bpf function (or a callback): the call replaces
            # that function only, and its caller goes on with the r0 of the
            # chain it starts (the engine sees tail_exit), as in the kernel.
            result = self._chain(ctx, target, run)
            ctx.tail_exit = True
            return result
        if self.depth:
            # A callee of a chain: the call replaces this program, as in the
            # kernel. The run ends here and the chain's runner runs `target`
            # next, so one VM per program serves the whole chain.
            self.request = target
            ctx.stop(0)
        ctx.stop(self._chain(ctx, target, run))
        return 0  # not reached: stop() ends the run

    def _end_run(self) -> None:
        self.run = None

    def _chain(self, ctx: HelperContext, target: str, run: _Run) -> int:
        """Run the chain that starts with a tail call to `target` from this
        program, one callee after the other, and return the last one's r0.
        Every call counts in `run`, the tail calls of the whole run."""
        caller = self.vm()
        left, total = ctx.budget, ctx.budget_total
        if total >= NO_BUDGET and caller is not None and caller.budget is not None:
            # An engine that does not keep the run's budget in ctx (the
            # protocol of HelperContext.budget): the callee gets the caller's.
            left = total = caller.budget
        chain = [self.name]
        run.level += 1
        try:
            while True:
                run.count += 1
                chain.append(target)
                callee = self._callee(target, caller, run)
                below: _TailCalls = callee._tail_calls
                callee.budget = None if total >= NO_BUDGET else left
                try:
                    result = self._run(callee, caller, ctx)
                except RunInterrupted:
                    ctx.budget = max(0, left - callee.last_instruction_count)
                    raise RunInterrupted(ctx.pc) from None
                except VmFault as fault:
                    ctx.budget = max(0, left - callee.last_instruction_count)
                    raise self._fault(ctx.pc, total, tuple(chain), fault) from None
                finally:
                    request, below.request = below.request, None
                left = ctx.budget = max(0, left - callee.last_instruction_count)
                if request is None:
                    return result
                target = request
        finally:
            run.level -= 1

    @staticmethod
    def _fault(pc: int, total: int, chain: tuple[str, ...], fault: VmFault) -> TailCallFault:
        """The TailCallFault for the fault of the last program of `chain` (a
        BudgetExceeded names the whole run's budget)."""
        if isinstance(fault, TailCallFault):  # from a chain nested in the callee's function
            chain, fault = (*chain, *fault.chain[1:]), fault.fault
        if isinstance(fault, BudgetExceeded) and fault.count != total:
            fault = BudgetExceeded(fault.pc, total)
        return TailCallFault(pc, chain, fault)

    def _callee(self, target: str, caller: Any, run: _Run) -> Any:
        """The VM that runs `target` in a chain of `run` (one VM per program
        and level of nested chains: a chain started in a bpf-to-bpf function
        runs while its caller's program waits for it)."""
        pool = run.pool
        callee = pool.get((target, run.level))
        if callee is None:
            callee = pool[target, run.level] = self.obj.vm(target, **self.settings)
        if caller is not None:
            # A program calling itself: its translation is a pure function of
            # its bytes, so the callee shares the root's instead of making its own.
            callee._share_image(caller)
        below: _TailCalls = callee._tail_calls
        below.depth = run.count
        below.request = None
        below.run = run
        if caller is not None:
            for key, helper in caller._helpers.items():
                if self.own.get(key) is not helper:  # a runner's or the user's
                    callee.register_helper(key, helper)
        return callee

    @staticmethod
    def _run(callee: Any, caller: Any, ctx: HelperContext) -> int:
        """Run `callee` on the caller's input, with the caller's engine: code
        of the caller's compiled engine when the caller runs compiled code
        (the JIT makes tail calls native jumps where it can: see
        jit.tailcall; this is the path for what it cannot), else the
        interpreter."""
        from .vm import EbpfVmMbuff, EbpfVmNoData

        mem = ctx.packet  # the packet as a frame-changing helper left it, else the input
        if mem is None:
            mem = next((r.view for r in ctx.space.regions if r.name == "mem"), None)
        args: tuple[Any, ...] = () if isinstance(callee, EbpfVmNoData) else (
            mem if mem is not None else b"",)
        if isinstance(callee, EbpfVmMbuff):  # r1 is the caller's context, not its input
            mbuff = next((r.view for r in ctx.space.regions if r.name == "mbuff"), b"")
            args = (*args, mbuff)
        jit = caller is not None and caller.jit_ready and caller._last_jit is not None
        if jit and callee.jit_engine != caller.jit_engine:
            try:
                callee.jit_compile(engine=caller.jit_engine)
            except JitError:
                jit = False  # stated fallback: the interpreter runs what the JIT cannot
        if jit:
            return int(callee.execute_program_jit(*args))
        return int(callee.execute_program(*args))
