"""The bpf_timer helpers: bpf_timer_init, bpf_timer_set_callback,
bpf_timer_start and bpf_timer_cancel (Impl.TIMERS in ebpfvm.helper_table;
RFC 9669 section 5.3, helper functions, and section 4, maps).

A ``struct bpf_timer`` lives in the value of an array, hash or LRU hash map
whose BTF value type has one as a member (found as spin locks are). Its 16
bytes are opaque: ebpfvm keeps each timer's state here, in the object's
:class:`TimerQueue`, keyed by the map and the element, and never reads or
writes those bytes, so what a program stores there changes nothing. An
update of the element (from a program or from Python) and its deletion
cancel and free the timer, as the kernel's map code does.

Guest programs never run re-entrantly: a timer fires after a run, never
during one. A started timer expires at a time on its program's KernelEnv
clock (the monotonic reading, plus the env's boot offset for
CLOCK_BOOTTIME or its TAI offset less 37 s for CLOCK_REALTIME; the host's
realtime with the host clock). :meth:`TimerQueue.fire` reads each clock
once, then fires every timer due at that reading, earliest first (then in
the order they were armed), timers the callbacks arm included, at most
`limit` of them (MAX_FIRINGS): what is left stays pending for the next
call. The runners of a loaded object call it at the end of each run; a VM
made with ``obj.vm()`` leaves it to the caller.

A callback runs in the engine of the program that set it, with that VM's
budget, as a local call made by a short entry stub placed before the
program's code (the stub hands it r1 = the map, r2 = a pointer to the key,
r3 = the value, as the kernel does). A fault in it is raised by ``fire``
as :class:`TimerCallbackFault`, with the pc in the program's own numbering.
"""

from __future__ import annotations

import struct
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard, cast

from .cfg import CALLBACK_BASE, CALLBACK_SCALE, callback_target
from .encoding import decode
from .engine import get_engine
from .errors import EbpfError, VmFault
from .helpers import BadCallback, Helper, HelperContext, numbered
from .mapbase import MapType
from .maps import Map

if TYPE_CHECKING:
    from .elf import ElfObject
    from .kernel import KernelEnv
    from .vm import EbpfVmRaw, _VmBase

__all__ = ["MAX_FIRINGS", "TIMER_HELPERS", "PendingTimer", "TimerCallbackFault", "TimerMisuse",
           "TimerQueue", "timer_helpers", "timer_offset", "timers_of"]

MAX_FIRINGS = 100
"""The most callbacks one TimerQueue.fire call runs (a callback re-arming
its timer at 0 ns would otherwise fire forever)."""
TIMER_HELPERS = ("bpf_timer_init", "bpf_timer_set_callback", "bpf_timer_start",
                 "bpf_timer_cancel")
TIMER_SIZE = 16
"""sizeof(struct bpf_timer)."""
CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME = 0, 1, 7
_MAX_CLOCKS = 16
BPF_F_TIMER_ABS = 1
BPF_F_TIMER_CPU_PIN = 2
EINVAL, EBUSY, EDEADLK = 22, 16, 35
_TAI_UTC_NS = 37_000_000_000
_KTIME_MAX = (1 << 63) - 1
_M64 = (1 << 64) - 1
_TIMER_MAPS = (MapType.ARRAY, MapType.HASH, MapType.LRU_HASH)
_ARGS = struct.Struct("<QQQQ")
"""The stub's input: map handle, value address, unused, callback pc; the key follows."""


class TimerMisuse(EbpfError):
    """A timer helper given what the kernel's verifier refuses (a pointer
    that is not the struct bpf_timer of a map value, another map than the
    timer's): `reason` says what, `address` is the pointer's."""

    def __init__(self, reason: str, address: int) -> None:
        super().__init__(f"{reason} (timer at {address:#x})")
        self.reason = reason
        self.address = address


class TimerCallbackFault(EbpfError):
    """A timer's callback faulted: `fault` is the VmFault, `pc` where (in
    the program's numbering), `map` and `key` the timer's element."""

    def __init__(self, fault: VmFault, pc: int, map_name: str, key: bytes) -> None:
        super().__init__(f"the bpf_timer callback of map {map_name!r} key {key.hex()} "
                         f"faulted at pc {pc}: {fault.reason}")
        self.fault = fault
        self.pc = pc
        self.map = map_name
        self.key = key


@dataclass(frozen=True)
class PendingTimer:
    """A started timer: its map and key, when it expires (nanoseconds on its
    env's monotonic clock), its clock id and the program of its callback."""

    map: str
    key: bytes
    expires_ns: int
    clock: int
    program: str


@dataclass
class _Owner:
    """Where a callback runs: the program, its engine, env and budget."""

    program: str
    engine: str
    env: KernelEnv
    budget: int | None


@dataclass
class _Timer:
    """One initialised timer of one map element."""

    table: Map
    slot: int
    key: bytes
    clock: int
    callback: int | None = None
    """The callback's pc in the program's own numbering (None: not set)."""
    owner: _Owner | None = None
    expires: int | None = None
    """Monotonic nanoseconds of the owner's env when pending; None when not."""
    env: KernelEnv | None = None
    seq: int = 0


def timer_offset(value_codec: Any) -> int | None:
    """The offset of the struct bpf_timer member of a map's BTF value type,
    or None (no BTF, or no such member)."""
    from .btf import BtfKind  # btf imports the maps

    if value_codec is None or value_codec.type.kind not in (BtfKind.STRUCT, BtfKind.UNION):
        return None
    for _name, member, offset in value_codec.type.items:
        kind = value_codec.btf.strip(member)
        if kind.kind is BtfKind.STRUCT and kind.name == "bpf_timer":
            return int((offset & 0xFFFFFF) // 8)
    return None


def _now(env: KernelEnv) -> int:
    """The env's monotonic clock (the host's when it has none)."""
    return time.monotonic_ns() if env.clock is None else int(env.clock())


def _offset(env: KernelEnv, clock: int) -> int:
    """What `clock` reads above the env's monotonic clock."""
    if clock == CLOCK_BOOTTIME:
        return env.boot_offset_ns
    if clock == CLOCK_REALTIME:
        if env.clock is None:
            return time.time_ns() - time.monotonic_ns()
        return env.tai_offset_ns - _TAI_UTC_NS
    return 0


class TimerQueue:
    """The bpf_timers of one loaded object (``obj.timers``): pending() lists
    the started ones, fire() runs the due callbacks."""

    def __init__(self, obj: ElfObject) -> None:
        self._obj = weakref.ref(obj)
        self._timers: dict[tuple[int, int], _Timer] = {}
        self._seq = 0
        self._stubs: dict[tuple[str, str, int, int | None], tuple[EbpfVmRaw, int]] = {}
        self.firing: _Timer | None = None
        """The timer whose callback is running (bpf_timer_cancel of it: -EDEADLK)."""

    # -- the helpers' side -----------------------------------------------------

    def get(self, table: Map, slot: int) -> _Timer | None:
        """The initialised timer of `table`'s element `slot`, or None."""
        found = self._timers.get((id(table), slot))
        return found if found is not None and self._alive(found) else None

    def _alive(self, timer: _Timer) -> bool:
        """Whether the timer's element still holds its key (an LRU map moves
        an updated key to another node and evicts others: the old node's
        timer is freed with it). A dead timer is dropped."""
        table = timer.table
        if table.is_array or table._slot(timer.key) == timer.slot:
            return True
        self._timers.pop((id(table), timer.slot), None)
        return False

    def init(self, table: Map, slot: int, clock: int) -> int:
        """bpf_timer_init's work: 0, or -EBUSY when already initialised."""
        if self.get(table, slot) is not None:
            return -EBUSY
        if table.on_free is None:
            table.on_free = lambda freed: self._release(table, freed)
        key = slot.to_bytes(4, "little") if table.is_array else next(
            (key for key in table if table._slot(key) == slot), b"")
        self._timers[id(table), slot] = _Timer(table, slot, key, clock)
        return 0

    def arm(self, timer: _Timer, env: KernelEnv, nsecs: int, flags: int) -> None:
        """Start (or restart) `timer`: `nsecs` from now, or at `nsecs` on its
        clock with BPF_F_TIMER_ABS (a time gone by fires at once)."""
        nsecs = min(nsecs, _KTIME_MAX)
        if flags & BPF_F_TIMER_ABS:
            timer.expires = nsecs - _offset(env, timer.clock)
        else:
            timer.expires = _now(env) + nsecs
        timer.env = env
        self._seq += 1
        timer.seq = self._seq

    def _release(self, table: Map, slot: int) -> None:
        """The element at `slot` was replaced or deleted: its timer is
        cancelled and freed."""
        self._timers.pop((id(table), slot), None)

    # -- the user's side -------------------------------------------------------

    def _live(self) -> bool:
        """False once the object is closed (its timers are then dropped, as
        the kernel cancels a map's timers when user space lets it go)."""
        obj = self._obj()
        if obj is None or obj.closed:
            self._timers.clear()
            return False
        return True

    def pending(self) -> list[PendingTimer]:
        """The started timers, in the order they would fire."""
        if not self._live():
            return []
        started = sorted((t for t in list(self._timers.values())
                          if t.expires is not None and self._alive(t)),
                         key=lambda t: (t.expires, t.seq))
        return [PendingTimer(t.table.name, t.key, cast(int, t.expires), t.clock,
                             t.owner.program if t.owner is not None else "")
                for t in started]

    def fire(self, limit: int = MAX_FIRINGS) -> int:
        """Run the callback of every timer due now (each env's clock read
        once), earliest first, then in arming order, including timers the
        callbacks start that are due by then; at most `limit` callbacks.
        Returns how many ran. TimerCallbackFault when one faults."""
        if not self._timers or not self._live():
            return 0
        readings: dict[int, int] = {}

        def due(timer: _Timer) -> bool:
            if timer.expires is None or timer.env is None:
                return False
            env = timer.env
            if id(env) not in readings:
                readings[id(env)] = _now(env)
            return timer.expires <= readings[id(env)]

        fired = 0
        while fired < limit:
            ready = [timer for timer in list(self._timers.values())
                     if due(timer) and self._alive(timer)]
            if not ready:
                break
            timer = min(ready, key=lambda t: (t.expires, t.seq))
            timer.expires = None
            if timer.owner is not None and timer.callback is not None:
                self._run(timer, timer.owner, timer.callback)
                fired += 1
        return fired

    def _run(self, timer: _Timer, owner: _Owner, pc: int) -> None:
        """Run `timer`'s callback at `pc` through its program's stub."""
        vm, shift = self._stub(owner)
        table, key = timer.table, timer.key
        args = _ARGS.pack(table.handle, table.base + timer.slot * table.value_size, 0,
                          pc) + key  # read-only, as the kernel's key
        self.firing = timer
        try:
            if get_engine(owner.engine).reference:
                vm.execute_program(args)
            else:
                vm.execute_program_jit(args)
        except VmFault as fault:
            raise TimerCallbackFault(fault, fault.pc - shift, table.name, key) from None
        finally:
            self.firing = None

    def _stub(self, owner: _Owner) -> tuple[EbpfVmRaw, int]:
        """The VM running `owner`'s callbacks (made once) and its stub length."""
        index = (owner.program, owner.engine, id(owner.env), owner.budget)
        found = self._stubs.get(index)
        if found is None:
            from .objects import build_vm
            from .vm import EbpfVmRaw

            obj = cast("ElfObject", self._obj())
            program = obj.program(owner.program)
            stub = entry_stub(sorted(_callbacks(program.code)))
            vm = cast(EbpfVmRaw, build_vm(obj, owner.program, None, EbpfVmRaw, None, owner.env,
                                          prefix=stub))
            vm.budget = owner.budget
            for table in obj.maps.values():  # the values callbacks get (r3)
                if _holds_timers(table):
                    vm.register_allowed_memory(table.slab, writable=table.region.writable)
            if not get_engine(owner.engine).reference:
                vm.jit_compile(engine=owner.engine)
            found = self._stubs[index] = (vm, len(stub) // 8)
        return found


_QUEUES: weakref.WeakKeyDictionary[Any, TimerQueue] = weakref.WeakKeyDictionary()


def _holds_timers(table: Any) -> TypeGuard[Map]:
    """Whether `table` is a map whose values have a struct bpf_timer."""
    return (isinstance(table, Map) and table.type in _TIMER_MAPS
            and timer_offset(table.value_codec) is not None)


def timers_of(obj: ElfObject) -> TimerQueue:
    """The TimerQueue of a loaded object (made on first use)."""
    queue = _QUEUES.get(obj)
    if queue is None:
        queue = _QUEUES[obj] = TimerQueue(obj)
    return queue


def _callbacks(code: bytes) -> set[int]:
    """The pcs of the program's callback functions (lddw_func targets)."""
    return {target for insn in decode(code) if (target := callback_target(insn)) is not None}


def _insn(opcode: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", opcode, dst | src << 4, off, imm)


def entry_stub(callbacks: list[int]) -> bytes:
    """Instructions placed before a program to run one of its `callbacks`:
    r1 points at the _ARGS input; the stub loads r1 = map, r2 = key, r3 =
    value and calls the callback whose pc (in the program's numbering) the
    input names, returning its r0 (0 when it names none)."""
    head = [_insn(0xBF, 6, 1),  # mov r6, r1
            _insn(0x79, 7, 6, 24),  # ldxdw r7, [r6+24]: the callback's pc
            _insn(0x79, 1, 6, 0),  # ldxdw r1, [r6+0]: the map
            _insn(0x79, 3, 6, 8),  # ldxdw r3, [r6+8]: the value
            _insn(0xBF, 2, 6),  # mov r2, r6
            _insn(0x07, 2, imm=_ARGS.size)]  # add r2, 32: the key
    length = len(head) + 3 * len(callbacks) + 2
    body: list[bytes] = []
    for pc in callbacks:
        at = len(head) + len(body)
        body += [_insn(0x55, 7, off=2, imm=pc),  # jne r7, pc, +2
                 _insn(0x85, 0, 1, imm=length + pc - (at + 2)),  # call the callback
                 _insn(0x95)]  # exit
    tail = [_insn(0xB7, 0), _insn(0x95)]  # mov r0, 0; exit
    return b"".join(head + body + tail)


class _TimerHelpers:
    """The four timer helpers for one VM of an object's program."""

    def __init__(self, queue: TimerQueue, maps: dict[int, Any], program: str,
                 env: KernelEnv, vm: _VmBase, shift: int, entries: set[int]) -> None:
        self.queue = queue
        self.maps = maps
        self.program = program
        self.env = env
        self.vm = weakref.ref(vm)
        self.shift = shift
        self.entries = entries

    def _find(self, ctx: HelperContext, address: int) -> tuple[Map, int]:
        """The map and element slot of the struct bpf_timer at `address`."""
        ctx.space.find(address, TIMER_SIZE, "store", ctx.pc)
        for table in self.maps.values():
            if (isinstance(table, Map) and not table.percpu
                    and table.base <= address < table.base + len(table.slab)):
                found = table
                break
        else:
            raise TimerMisuse("a struct bpf_timer must be in a map value", address)
        if found.type not in _TIMER_MAPS:
            raise TimerMisuse(f"map {found.name!r}: timers live in array, hash and lru_hash "
                              "maps", address)
        offset = timer_offset(found.value_codec)
        slot, within = divmod(address - found.base, found.value_size)
        if offset is None or within != offset:
            raise TimerMisuse(f"map {found.name!r}: not the struct bpf_timer of its BTF "
                              "value type", address)
        return found, slot

    def init(self, ctx: HelperContext, timer: int, handle: int, flags: int, *_rest: int) -> int:
        """bpf_timer_init: -EINVAL for a clock other than CLOCK_MONOTONIC,
        CLOCK_REALTIME and CLOCK_BOOTTIME, -EBUSY when initialised."""
        table, slot = self._find(ctx, timer)
        if self.maps.get(handle) is not table:
            raise TimerMisuse(f"bpf_timer_init: the map is not the timer's ({table.name!r})",
                              timer)
        if flags >= _MAX_CLOCKS or flags not in (CLOCK_MONOTONIC, CLOCK_REALTIME,
                                                 CLOCK_BOOTTIME):
            return -EINVAL & _M64
        return self.queue.init(table, slot, flags) & _M64

    def set_callback(self, ctx: HelperContext, timer: int, function: int, *_rest: int) -> int:
        """bpf_timer_set_callback: -EINVAL when not initialised."""
        found = self.queue.get(*self._find(ctx, timer))
        pc, rest = divmod(function - CALLBACK_BASE, CALLBACK_SCALE)
        pc -= self.shift
        if rest or pc not in self.entries:
            raise BadCallback(f"{function:#x} is not a callback entry of this program")
        if found is None:
            return -EINVAL & _M64
        vm = self.vm()
        engine = (vm.jit_engine if vm is not None else None) or "interp"
        found.callback = pc
        found.owner = _Owner(self.program, engine, self.env,
                             vm.budget if vm is not None else None)
        return 0

    def start(self, ctx: HelperContext, timer: int, nsecs: int, flags: int, *_rest: int) -> int:
        """bpf_timer_start: -EINVAL for unknown flags, a timer not
        initialised or without a callback."""
        if flags & ~(BPF_F_TIMER_ABS | BPF_F_TIMER_CPU_PIN):
            return -EINVAL & _M64
        found = self.queue.get(*self._find(ctx, timer))
        if found is None or found.callback is None:
            return -EINVAL & _M64
        self.queue.arm(found, self.env, nsecs, flags)
        return 0

    def cancel(self, ctx: HelperContext, timer: int, *_rest: int) -> int:
        """bpf_timer_cancel: 1 when the timer was pending, 0 when not;
        -EINVAL when not initialised, -EDEADLK from its own callback. The
        callback is dropped: a new start needs bpf_timer_set_callback."""
        found = self.queue.get(*self._find(ctx, timer))
        if found is None:
            return -EINVAL & _M64
        if self.queue.firing is found:
            return -EDEADLK & _M64
        was_pending = found.expires is not None
        found.callback = found.owner = found.expires = None
        return int(was_pending)


def timer_helpers(obj: ElfObject, program: str, code: bytes, maps: dict[int, Any],
                  env: KernelEnv, vm: _VmBase, shift: int = 0) -> dict[int, Helper]:
    """The timer helpers for `vm`, running `program` of `obj` (its linked
    `code`, placed after a stub of `shift` instructions) over `maps` (handle
    -> map) on `env`'s clock."""
    table = _TimerHelpers(timers_of(obj), maps, program, env, vm, shift, _callbacks(code))
    return numbered([
        Helper(table.init, "bpf_timer_init", context=True),
        Helper(table.set_callback, "bpf_timer_set_callback", context=True),
        Helper(table.start, "bpf_timer_start", context=True),
        Helper(table.cancel, "bpf_timer_cancel", context=True),
    ])


def uses_timers(helpers: tuple[int, ...]) -> bool:
    """Whether a program calling `helpers` (numbers) calls a timer helper."""
    from .helper_table import helper_number

    return any(helper_number(name) in helpers for name in TIMER_HELPERS)
