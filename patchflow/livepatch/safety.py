"""Which changes a live patch cannot carry safely, and why.

Two sources are combined, as kpatch does:

* the **diff** (unidiff): a changed member of a ``struct``/``union``
  definition (its layout changes under running code), a changed ``static
  inline`` in a header (every user was compiled with the old body);
* the **objects** (see :mod:`patchflow.livepatch.diff`): a changed initializer
  of global or static data, a changed ``__init`` function (``.init.text``,
  already freed), a new or changed function-scope static, and a changed
  function without an ftrace entry (``notrace``/no ``__fentry__``), which
  livepatch cannot redirect.

Each :class:`Finding` names the file, the symbol and the reason.  The
generator refuses to build when there is any finding unless forced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from patchflow.livepatch.diff import STATIC_LOCAL, ObjectDiff
from patchflow.livepatch.elf import ElfObject
from patchflow.livepatch.extract import OWN_DATA

#: kinds of findings, with the explanation given to the user
REASONS: dict[str, str] = {
    "struct-layout": "changes the layout of a struct/union: existing instances in the running "
                     "kernel keep the old layout, so patched code would read the wrong fields",
    "header-inline": "changes a static inline in a header: every caller compiled the old body in, "
                     "so all of them would have to be patched",
    "data-init": "changes the initializer of global or static data: the running kernel's data "
                 "was initialised long ago and a live patch must not copy it (second instance)",
    "init-function": "changes an __init function: it already ran at boot and its memory is freed",
    "static-local": "adds or changes a function-scope static variable: its state cannot be "
                    "carried into the running kernel",
    "unpatchable": "changes a function that has no ftrace entry (notrace, or built without "
                   "__fentry__), so livepatch cannot redirect calls to it",
}

_STRUCT_START = re.compile(r"^(?:typedef\s+)?(struct|union)\s+(\w+)\s*(?:__\w+(?:\(\([^)]*\)\))?\s*)*\{")
_INLINE_START = re.compile(
    r"^static\s+(?:__always_inline|inline)\b[^(]*?\b(\w+)\s*\(")
#: a line that carries no code: blank, or a comment
_NOCODE = re.compile(r"^\s*(?:$|/\*|\*|//)")


@dataclass(frozen=True)
class SafetyFinding:
    """A change a live patch cannot carry: where, and why."""

    kind: str
    file: str
    symbol: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.symbol}: {self.reason}"



def finding(kind: str, file: str, symbol: str, extra: str = "") -> SafetyFinding:
    return SafetyFinding(kind, file, symbol, REASONS[kind] + (f" ({extra})" if extra else ""))


# ---- diff level ----------------------------------------------------------------------

def _spans(lines: list[str], start: re.Pattern[str]) -> list[tuple[int, int, str]]:
    """Top-level blocks opened by *start*: (first line, last line, name), 1-based, inclusive."""
    out = []
    i = 0
    while i < len(lines):
        m = start.match(lines[i])
        if not m:
            i += 1
            continue
        name = m.group(m.lastindex or 0)
        depth = 0
        seen = False
        j = i
        while j < len(lines):
            depth += lines[j].count("{") - lines[j].count("}")
            seen = seen or "{" in lines[j]
            if seen and depth <= 0:
                break
            j += 1
        out.append((i + 1, j + 1, name))
        i = j + 1
    return out


def _changed_positions(hunk: object) -> list[tuple[float, str]]:
    """Positions in the pre-image of the hunk's changed code lines (added lines sit between)."""
    pos: list[tuple[float, str]] = []
    last = float(getattr(hunk, "source_start", 1)) - 1
    for line in hunk:  # type: ignore[attr-defined]
        if line.source_line_no is not None:
            last = float(line.source_line_no)
        if (line.is_added or line.is_removed) and not _NOCODE.match(line.value):
            pos.append((last if line.is_removed else last + 0.5, line.value))
    return pos


def analyze_diff(patch_text: str, source_root: Path | None) -> list[SafetyFinding]:
    """Struct-layout and header-inline findings from a unified diff.

    *source_root* is the unpatched tree; it gives the real extent of each
    struct and inline function around the hunks.
    """
    from unidiff.patch import PatchSet

    out: list[SafetyFinding] = []
    for pf in PatchSet(patch_text):
        path = pf.source_file[2:] if pf.source_file.startswith("a/") else pf.source_file
        if not path.endswith((".c", ".h")) or pf.is_added_file:
            continue
        src = (source_root / path) if source_root is not None else None
        if src is None or not src.is_file():
            continue
        lines = src.read_text(encoding="utf-8", errors="replace").splitlines()
        structs = _spans(lines, _STRUCT_START)
        inlines = _spans(lines, _INLINE_START) if path.endswith(".h") else []
        seen: set[tuple[str, str]] = set()
        for hunk in pf:
            for pos, _text in _changed_positions(hunk):
                for first, last, name in structs:
                    # strictly inside the braces: the opening/closing lines are not members
                    if first < pos < last and ("struct-layout", name) not in seen:
                        seen.add(("struct-layout", name))
                        out.append(finding("struct-layout", path, f"struct {name}"))
                for first, last, name in inlines:
                    if first <= pos <= last and ("header-inline", name) not in seen:
                        seen.add(("header-inline", name))
                        out.append(finding("header-inline", path, name))
    return out


# ---- object level --------------------------------------------------------------------

def has_ftrace_entry(obj: ElfObject, func: str) -> bool:
    """True if *func* starts with a ``call __fentry__`` or has a ``__mcount_loc`` entry."""
    idx = next((i for i, s in enumerate(obj.symbols) if s.name == func and s.type == 2), None)
    if idx is None:
        return False
    sym = obj.symbols[idx]
    for ri in obj.rela_sections_for(sym.shndx):
        for r in obj.relas(ri):
            # endbr64 (4 bytes) + call rel32: the relocation sits at offset 1 or 5
            if (sym.value <= r.offset < sym.value + 16
                    and obj.symbols[r.sym].name in ("__fentry__", "mcount")):
                return True
    for i, sec in enumerate(obj.sections):
        if sec.name == ".rela__mcount_loc":
            for r in obj.relas(i):
                target = obj.symbols[r.sym]
                if target.shndx == sym.shndx and sym.value <= target.value + r.addend < sym.value + 16:
                    return True
    return False


def analyze_objects(file: str, before: ElfObject, after: ElfObject,
                    d: ObjectDiff) -> list[SafetyFinding]:
    """Object-level findings for one translation unit *file*."""
    out: list[SafetyFinding] = []
    for name in d.changed_data:
        info = d.after[name]
        if info.section.startswith(".discard.") or info.section in OWN_DATA:
            # never linked (.discard.addressable), or carried as the module's own copy
            # (pr_debug descriptors in __dyndbg, whose line numbers move with the code)
            continue
        if STATIC_LOCAL.match(info.name):
            out.append(finding("static-local", file, name, f"in {info.section}"))
        else:
            out.append(finding("data-init", file, name, f"in {info.section}"))
    for name in d.new_data:
        info = d.after[name]
        if info.section.startswith(".discard.") or info.section in OWN_DATA:
            continue
        # WARN_ONCE's flag lives in .data.once; kpatch allows new ones too
        if STATIC_LOCAL.match(info.name) and not info.section.startswith(".data.once"):
            out.append(finding("static-local", file, name, f"new, in {info.section}"))
    for name in d.changed_functions + d.new_functions:
        sec = d.after[name].section
        if sec.startswith((".init.text", ".exit.text", ".text.init", ".text.startup")):
            out.append(finding("init-function", file, name, f"in {sec}"))
    for name in d.changed_functions:
        if d.before[name].section.startswith(".init.text"):
            continue
        if not has_ftrace_entry(before, d.before[name].name):
            out.append(finding("unpatchable", file, name))
    return out


def summarize(findings: Iterable[SafetyFinding]) -> str:
    lines = [str(f) for f in findings]
    return "\n".join(lines) if lines else "no unsafe change found"
