"""The native runtime (issue 15): helpers and map operations written once in
restricted C, compiled to eBPF (``NAME.c`` -> ``NAME.o``, see ``rt.h`` for
the ABI), and run trusted by every native engine.

- :mod:`.abi`: the Python mirror of ``rt.h`` (struct rt_env, struct rt_map,
  the intrinsic ids);
- :mod:`.registry`: the objects' ``rt_<helper>`` functions, by helper number
  (the one list of helpers with a native version);
- :mod:`.env`: a run's ``struct rt_env`` and the maps' descriptors, kept by
  the Python side;
- :mod:`.intrinsics`: the intrinsics as Python helpers, so runtime code runs
  as a plain program in any engine (the interpreter included).

An eBPF program's instructions are RFC 9669's; the runtime is more of them.
"""
