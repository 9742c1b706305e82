"""The x86-64 JIT compiler, in layers.

``codebuf`` holds the byte buffer, labels and rel32 fixups; ``x86_64`` is the
instruction encoder, which knows nothing about eBPF; the translation layer
maps eBPF instructions onto encoder calls, and executable memory is mapped
RW, filled, then made RX.
"""
