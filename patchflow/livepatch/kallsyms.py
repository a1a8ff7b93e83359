"""vmlinux's symbol table as livepatch sees it: names, owning files and sympos.

livepatch finds ``old_name``/``.klp.sym.vmlinux.<name>,<sympos>`` through
kallsyms, whose table ``scripts/kallsyms`` sorts by address; so the position
of a duplicated name is its rank by address among the symbols of that name,
counted from 1, and a unique name has position 0.  Local symbols belong to
the ``STT_FILE`` symbol that precedes them in the linker's symbol table,
which is how a static ``foo`` of ``fs/proc/cmdline.c`` is told apart from
another file's static ``foo``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from patchflow.errors import UserError
from patchflow.livepatch.elf import (
    SHN_UNDEF,
    STB_LOCAL,
    STT_FILE,
    STT_FUNC,
    STT_NOTYPE,
    STT_OBJECT,
    ElfObject,
)


class SymbolNotFound(UserError):
    """A symbol the patched code needs is not in vmlinux (or is ambiguous)."""


@dataclass(frozen=True)
class KSym:
    name: str
    address: int
    size: int
    local: bool
    kind: int
    file: str | None


class VmlinuxSymbols:
    """Symbols of a linked vmlinux, grouped by name."""

    def __init__(self, syms: list[KSym]) -> None:
        self.by_name: dict[str, list[KSym]] = defaultdict(list)
        for s in syms:
            self.by_name[s.name].append(s)

    @classmethod
    def read(cls, vmlinux: Path) -> VmlinuxSymbols:
        obj = ElfObject.read(vmlinux, allow_exec=True)
        out: list[KSym] = []
        current: str | None = None
        for s in obj.symbols:
            if s.type == STT_FILE:
                current = s.name
                continue
            if s.shndx == SHN_UNDEF or s.type not in (STT_FUNC, STT_OBJECT, STT_NOTYPE) or not s.name:
                continue
            local = s.bind == STB_LOCAL
            out.append(KSym(s.name, s.value, s.size, local, s.type, current if local else None))
        return cls(out)

    def has(self, name: str) -> bool:
        return name in self.by_name

    def _candidates(self, name: str, file: str | None, local: bool) -> list[KSym]:
        syms = self.by_name.get(name, [])
        if local:
            base = Path(file).name if file else None
            return [s for s in syms if s.local and (base is None or s.file == base)]
        return [s for s in syms if not s.local]

    def find(self, name: str, *, file: str | None, local: bool, size: int | None = None) -> KSym | None:
        """The vmlinux symbol for *name* of translation unit *file* (None when absent)."""
        cands = self._candidates(name, file, local)
        if len(cands) > 1 and size is not None:
            # several files with this basename each have a static of this name
            sized = [s for s in cands if s.size == size]
            cands = sized or cands
        if len(cands) > 1:
            raise SymbolNotFound(
                f"{name} ({file}) is ambiguous in vmlinux: {len(cands)} candidates")
        return cands[0] if cands else None

    def sympos(self, sym: KSym) -> int:
        """kallsyms position of *sym* among its namesakes (0 when the name is unique)."""
        addrs = sorted({s.address for s in self.by_name[sym.name]})
        if len(addrs) <= 1:
            return 0
        return addrs.index(sym.address) + 1


def read_symvers(path: Path) -> set[str]:
    """Exported symbol names from ``Module.symvers`` (``crc<TAB>name<TAB>module<TAB>kind<TAB>ns``)."""
    out: set[str] = set()
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            out.add(parts[1])
    return out
