"""Per-function comparison of an object compiled before and after a patch.

As kpatch's create-diff-object does, both objects are compiled with
``-ffunction-sections -fdata-sections`` and each defined function or data
symbol is compared on its bytes plus its relocations, with the relocation
targets *normalised*: a section symbol becomes its section name, a string
literal becomes its text (its offset in ``.rodata.str*`` moves whenever
another string changes) and gcc's numeric suffixes on static locals
(``__already_done.12``) are dropped.  A caller whose code changed because a
changed static function was inlined into it shows up as changed too, which
is exactly why the comparison is done on objects and not on the diff.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from patchflow.livepatch.elf import (
    SHN_ABS,
    SHN_COMMON,
    SHN_UNDEF,
    SHT_NOBITS,
    STB_LOCAL,
    STT_FUNC,
    STT_OBJECT,
    STT_SECTION,
    ElfObject,
    function_bytes,
)

if TYPE_CHECKING:
    from patchflow.livepatch.results import DiffSummary

SHF_MERGE = 0x10
SHF_STRINGS = 0x20
#: R_X86_64_PC32, R_X86_64_PLT32: the addend carries the -4 of the PC-relative displacement
_PCREL = {2, 4}
_SUFFIX = re.compile(r"\.\d+$")
#: gcc's name for a function-scope static: ``name.<number>`` (``counter.0``)
STATIC_LOCAL = re.compile(r"^[A-Za-z_]\w*\.\d+$")


def normalise_name(name: str) -> str:
    """Drop gcc's per-compile numeric suffix (``foo.12`` -> ``foo``; ``x.constprop.0`` -> ``x.constprop``)."""
    return _SUFFIX.sub("", name)


@dataclass(frozen=True)
class SymbolInfo:
    """A defined function or data symbol of one object, normalised for comparison."""

    name: str
    kind: str  # "func" | "object"
    section: str
    local: bool
    fingerprint: tuple[object, ...]
    #: normalised names of the symbols its relocations point to
    references: tuple[str, ...]
    index: int


@dataclass
class ObjectDiff:
    """What changed between two compilations of one translation unit."""

    changed_functions: list[str] = field(default_factory=list)
    new_functions: list[str] = field(default_factory=list)
    removed_functions: list[str] = field(default_factory=list)
    changed_data: list[str] = field(default_factory=list)
    new_data: list[str] = field(default_factory=list)
    before: dict[str, SymbolInfo] = field(default_factory=dict)
    after: dict[str, SymbolInfo] = field(default_factory=dict)

    def summary(self) -> DiffSummary:
        from patchflow.livepatch.results import DiffSummary

        return DiffSummary(tuple(self.changed_functions), tuple(self.new_functions),
                           tuple(self.removed_functions), tuple(self.changed_data),
                           tuple(self.new_data))


def _string_at(obj: ElfObject, shndx: int, offset: int) -> str | None:
    sec = obj.sections[shndx]
    if not (sec.flags & SHF_STRINGS) or offset < 0 or offset >= len(sec.data):
        return None
    end = sec.data.find(b"\0", offset)
    return sec.data[offset:end if end >= 0 else None].decode("utf-8", "replace")


def reloc_target(obj: ElfObject, sym_index: int, rtype: int, addend: int) -> tuple[str, int]:
    """A relocation target as (normalised name, normalised addend)."""
    sym = obj.symbols[sym_index]
    if sym.shndx not in (SHN_UNDEF, SHN_ABS, SHN_COMMON) and sym.shndx < len(obj.sections):
        adj = 4 if rtype in _PCREL else 0
        text = _string_at(obj, sym.shndx, sym.value + addend + adj)
        if text is not None:
            return (f"str:{text!r}", -adj)
        if sym.type == STT_SECTION:
            # a section symbol + addend points into a data section: name what is there
            target = sym.value + addend + adj
            for s in obj.symbols:
                if (s.shndx == sym.shndx and s.type in (STT_OBJECT, STT_FUNC)
                        and s.value <= target < s.value + max(s.size, 1)):
                    return (normalise_name(s.name), target - s.value - adj)
            return (normalise_name(obj.sections[sym.shndx].name), addend)
    return (normalise_name(sym.name), addend)


def symbols_of(obj: ElfObject) -> dict[str, SymbolInfo]:
    """Defined functions and data objects of *obj*, keyed by normalised name."""
    out: dict[str, SymbolInfo] = {}
    for i, sym in enumerate(obj.symbols):
        if sym.type not in (STT_FUNC, STT_OBJECT) or sym.shndx in (SHN_UNDEF, SHN_ABS, SHN_COMMON):
            continue
        sec = obj.sections[sym.shndx]
        if sec.flags & SHF_STRINGS:
            continue
        data, relocs = function_bytes(obj, i)
        norm = []
        refs = []
        for off, rtype, target, addend in relocs:
            name, add = reloc_target(obj, target, rtype, addend)
            norm.append((off, rtype, name, add))
            refs.append(name)
        body: object = ("nobits", sym.size) if sec.type == SHT_NOBITS else data
        key = normalise_name(sym.name) if sym.bind == STB_LOCAL else sym.name
        out[key] = SymbolInfo(
            name=sym.name, kind="func" if sym.type == STT_FUNC else "object", section=sec.name,
            local=sym.bind == STB_LOCAL, fingerprint=(body, sym.size, tuple(norm)),
            references=tuple(dict.fromkeys(refs)), index=i)
    return out


#: gcc's out-of-line cold part of a function: ``enqueue_task_dl.cold``
COLD = re.compile(r"^(.+)\.cold(?:\.\d+)?$")


def _fold_cold(d: ObjectDiff) -> None:
    """A changed or new cold part is its parent's change: the parent is what gets replaced.

    The cold part has no ftrace entry of its own and is reached only from its
    parent, which the extractor carries it with (tests/unit/test_livepatch_diff.py::
    test_cold_part_folds_into_parent).
    """
    changed = set(d.changed_functions)
    for name in d.changed_functions + d.new_functions:
        m = COLD.match(name)
        if m and m.group(1) in d.after and m.group(1) in d.before:
            changed.add(m.group(1))
    d.changed_functions = [n for n in changed if not COLD.match(n)]
    d.new_functions = [n for n in d.new_functions if not COLD.match(n)]


def compare(before: ElfObject, after: ElfObject) -> ObjectDiff:
    """Compare two compilations of the same translation unit, symbol by symbol."""
    b, a = symbols_of(before), symbols_of(after)
    d = ObjectDiff(before=b, after=a)
    for name, info in a.items():
        old = b.get(name)
        if info.kind == "func":
            if old is None:
                d.new_functions.append(name)
            elif old.fingerprint != info.fingerprint:
                d.changed_functions.append(name)
        elif old is None:
            d.new_data.append(name)
        elif old.fingerprint != info.fingerprint:
            d.changed_data.append(name)
    d.removed_functions = [n for n, i in b.items() if i.kind == "func" and n not in a]
    _fold_cold(d)
    for lst in (d.changed_functions, d.new_functions, d.removed_functions, d.changed_data,
                d.new_data):
        lst.sort()
    return d
