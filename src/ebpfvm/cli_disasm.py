"""``ebpfvm disasm`` (issue 14, point 4): objects listed as ``llvm-objdump -dr``
lists them (a ``FILE:\\tfile format elf64-bpf`` header, ``Disassembly of section
NAME:``, ``<function>:`` labels, each relocation after its instruction: the
map, global or function an ``lddw`` or ``call`` names), raw bytecode and
assembly with their pc numbers and bytes; ``--json`` as ebpfvm.cli_json.
"""

from __future__ import annotations

import argparse
import sys

from .cli_json import emit, listing_document
from .errors import EbpfError, ElfError
from .objdump import disassemble_code, disassemble_object

__all__ = ["disasm"]

ELF_MAGIC = b"\x7fELF"


def _object_listing(args: argparse.Namespace, data: bytes) -> str:
    try:
        return disassemble_object(data, style=args.style, section=args.section,
                                  function=args.function, source=not args.no_source,
                                  relocations=True)
    except ElfError as error:
        if error.section not in (".BTF", ".BTF.ext"):
            raise
        raise EbpfError(f"{args.program}: {error} (--no-source lists the code "
                        "without line info)") from error


def disasm(args: argparse.Namespace) -> int:
    """List the program (the disasm command); the exit status."""
    from . import cli

    data = cli._read(args.program)
    elf = data[:4] == ELF_MAGIC
    if elf:
        listing = _object_listing(args, data)
    else:
        code = cli.load_program(args.program, args.section, args.function, data=data).code
        listing = disassemble_code(code, style=args.style)
    if getattr(args, "json", False):
        emit(listing_document(str(args.program), listing, elf))
    elif elf:
        sys.stdout.write(f"\n{args.program}:\tfile format elf64-bpf\n{listing}")
    else:
        sys.stdout.write(listing)
    return cli.EXIT_OK
