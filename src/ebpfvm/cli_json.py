"""``--json`` output of the ``ebpfvm`` commands (issue 14, point 4): one JSON
document on standard output, like bpftool's ``-j``, for other programs to
parse. Errors stay one ``ebpfvm: error:`` line on standard error, with the
exit status of the text output.

The documents (every key always present unless said otherwise):

* ``run``: ``program``, ``section``, ``function``, ``engine``, ``context``;
  a single run adds ``r0`` and ``verdict`` (the name, or null); a capture
  adds ``capture``: ``packets``, ``seconds``, ``packets_per_second``,
  ``mode``, ``why``, ``verdicts`` (name: count), ``interrupted``, ``written``
  and ``tx_written`` (null without --out/--tx-out); then ``trace_printk``
  (the lines), ``trace_printk_dropped`` and ``maps`` (as ``maps --dump``).
* ``maps``: a list of maps: ``name``, ``type``, ``key_size``, ``value_size``,
  ``max_entries``, ``flags``, ``description``; with --dump their contents
  (ebpfvm.cli_maps).
* ``verify``: ``programs``, each ``name``, ``section``, ``slots``, ``ok``,
  ``pc``, ``reason``, ``rule`` (null when OK); ``rejected``.
* ``disasm``: ``file``, ``format``, ``sections``, each ``name`` and
  ``insns``: ``pc``, ``bytes`` (hex), ``text``, ``symbol`` (the label that
  starts there, or null), ``source`` (the C line, or null) and
  ``relocations`` (``offset``, ``type``, ``symbol``).
* ``bench``: ``results``, each ``engine``, ``ns_per_run``, ``runs``, ``r0``,
  ``verdict``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["emit", "listing_document", "maps_report", "verify_report"]


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def emit(document: Any) -> None:
    """Print `document` as one line of JSON on standard output."""
    sys.stdout.write(json.dumps(document, default=_default) + "\n")


def _instruction(line: str, symbol: str | None, source: str | None) -> dict[str, Any]:
    pc, _tab, rest = line.partition(":\t")
    raw, _tab, text = rest.partition("\t")
    return {"pc": int(pc), "bytes": raw.replace(" ", ""), "text": text, "symbol": symbol,
            "source": source, "relocations": []}


def listing_document(path: str, listing: str, elf: bool) -> dict[str, Any]:
    """The disasm document of `listing` (an ebpfvm.objdump listing, whose
    line kinds are fixed: section headers, labels, source comments,
    instructions, relocations)."""
    sections: list[dict[str, Any]] = []
    symbol: str | None = None
    source: str | None = None
    insns: list[dict[str, Any]] = []
    for line in listing.splitlines():
        if line.startswith("Disassembly of section "):
            insns = []
            sections.append({"name": line[len("Disassembly of section "):-1], "insns": insns})
        elif line.endswith(">:") and " <" in line:
            symbol = line[line.index(" <") + 2 : -2]
        elif line.startswith("; "):
            source = line[2:]
        elif line.startswith("\t\t") and insns:
            offset, _sep, rest = line.strip().partition(":  ")
            kind, _tab, name = rest.partition("\t")
            insns[-1]["relocations"].append({"offset": int(offset, 16), "type": kind,
                                             "symbol": name})
        elif line.strip():
            if not sections:
                insns = []
                sections.append({"name": None, "insns": insns})
            insns.append(_instruction(line, symbol, source))
            symbol = source = None
    return {"file": path, "format": "elf64-bpf" if elf else "raw", "sections": sections}


def verify_report(args: Any, found: list[dict[str, Any]], rejected: int) -> int:
    """Print the verify results (text or --json); exit 1, with the one error
    line on stderr, when any program was rejected."""
    if getattr(args, "json", False):
        emit({"programs": found, "rejected": rejected})
    else:
        for result in found:
            if result["ok"]:
                print(f"{result['name']}: OK ({result['slots']} slots)")
            else:
                where = f"pc {result['pc']}" if result["pc"] is not None else "program"
                print(f"{result['name']}: REJECTED at {where}: {result['reason']} "
                      f"[{result['rule']}]")
    if not rejected:
        return 0
    sys.stdout.flush()
    print(f"ebpfvm: error: {args.program}: the verifier rejected {rejected} of "
          f"{len(found)} program{'' if len(found) == 1 else 's'}", file=sys.stderr)
    return 1


def maps_report(args: Any, obj: Any) -> bool:
    """--json (a list of maps) or --dump (every entry) of `ebpfvm maps`;
    False when neither was asked for (the plain listing follows)."""
    from .cli_maps import dump_lines, map_document

    dump = getattr(args, "dump", False)
    if getattr(args, "json", False):
        unsupported = list(getattr(obj, "unsupported_maps", {}).values())
        emit([map_document(m, dump) for m in [*obj.maps.values(), *unsupported]])
        return True
    if not dump:
        return False
    for m in obj.maps.values():
        print(m.describe())
        for line in dump_lines(m):
            print(f"    {line}")
    for unsupported in getattr(obj, "unsupported_maps", {}).values():
        print(unsupported.describe())
    if not obj.maps and not getattr(obj, "unsupported_maps", None):
        print("no maps")
    return True
