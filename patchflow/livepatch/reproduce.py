"""Proof that a recompiled object is the code the running kernel has, before a diff is trusted.

A live patch built from objects that do not match the distribution's
vmlinux would redirect calls into code compiled from another config or
compiler.  :func:`check_object` compares every function of the *before*
object that vmlinux also has (globals by name, statics by name and owning
file) on its size and on its bytes with every relocated field masked out
in both: the relocations are the only thing the linker changes.  One
difference is an error naming the function (:class:`ReproductionError`).

vmlinux is read with pyelftools.  Its function table (name, address, size,
binding, file) is cached next to it as JSON, since walking 120,000 symbols
takes ~8 s and the table never changes for a release.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from patchflow.errors import UserError
from patchflow.livepatch.elf import (
    SHN_ABS,
    SHN_COMMON,
    SHN_UNDEF,
    STB_LOCAL,
    STB_WEAK,
    STT_FUNC,
    ElfObject,
    function_bytes,
)
from patchflow.workspace import atomic_write

#: relocation type -> bytes it patches (x86_64); everything else patches 4
RELOC_WIDTH = {1: 8, 24: 8, 26: 8}  # R_X86_64_64, R_X86_64_PC64, R_X86_64_GOTOFF64
ENDBR64 = bytes.fromhex("f30f1efa")
#: what objtool --ibt-seal writes over an unused ENDBR in vmlinux (6.2+: ENDBR_POISON)
SEALED = (bytes.fromhex("0f1f40d6"), bytes.fromhex("0f1f4000"))


class ReproductionError(UserError):
    """A recompiled function differs from the distribution's vmlinux."""


@dataclass(frozen=True)
class VFunc:
    name: str
    address: int
    size: int
    local: bool
    file: str


@dataclass(frozen=True)
class Mismatch:
    function: str
    reason: str


@dataclass(frozen=True)
class ReproReport:
    """What :func:`check_object` compared for one object."""

    obj: str
    checked: int
    not_in_vmlinux: int
    mismatches: tuple[Mismatch, ...]


class VmlinuxImage:
    """The distribution's vmlinux: its functions and their bytes (pyelftools)."""

    def __init__(self, path: Path, index: Path | None = None) -> None:
        from elftools.elf.elffile import ELFFile

        self.path = path
        self._fh: IO[bytes] = open(path, "rb")  # noqa: SIM115 (closed in close())
        self.elf = ELFFile(self._fh)
        self.by_name: dict[str, list[VFunc]] = defaultdict(list)
        for f in self._functions(index or path.with_name(path.name + ".functions.json")):
            self.by_name[f.name].append(f)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> VmlinuxImage:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _functions(self, index: Path) -> list[VFunc]:
        stat = self.path.stat()
        key = f"{stat.st_size}:{stat.st_mtime_ns}"
        if index.is_file():
            data: dict[str, Any] = json.loads(index.read_text())
            if data.get("key") == key:
                return [VFunc(*row) for row in data["functions"]]
        funcs = list(self._walk())
        atomic_write(index, json.dumps({"key": key, "functions": [
            [f.name, f.address, f.size, f.local, f.file] for f in funcs]}))
        return funcs

    def _walk(self) -> list[VFunc]:
        from elftools.elf.sections import SymbolTableSection

        symtab = self.elf.get_section_by_name(".symtab")
        if not isinstance(symtab, SymbolTableSection):
            raise UserError(f"{self.path}: no symbol table (a stripped vmlinux, not the -dbg one?)")
        out: list[VFunc] = []
        current = ""
        for s in symtab.iter_symbols():
            kind = s["st_info"]["type"]
            if kind == "STT_FILE":
                current = s.name
            elif kind == "STT_FUNC" and s["st_shndx"] != "SHN_UNDEF":
                out.append(VFunc(s.name, s["st_value"], s["st_size"],
                                 s["st_info"]["bind"] == "STB_LOCAL", current))
        return out

    def read(self, address: int, size: int) -> bytes:
        for sec in self.elf.iter_sections():
            start = sec["sh_addr"]
            if start and start <= address < start + sec["sh_size"] and sec["sh_type"] != "SHT_NOBITS":
                self._fh.seek(sec["sh_offset"] + address - start)
                return self._fh.read(size)
        raise UserError(f"{self.path}: no section holds address {address:#x}")

    def find(self, name: str, *, local: bool, file: str, size: int) -> VFunc | None:
        """The vmlinux function of this name (and file, for a static); None when absent."""
        cands = [f for f in self.by_name.get(name, []) if f.local == local
                 and (not local or f.file == Path(file).name)]
        if len(cands) > 1:
            cands = [f for f in cands if f.size == size] or cands
        return cands[0] if len(cands) == 1 else None


def masked(data: bytes, relocs: list[tuple[int, int, int, int]]) -> bytearray:
    """*data* with every relocated field zeroed."""
    out = bytearray(data)
    for off, rtype, _sym, _addend in relocs:
        width = RELOC_WIDTH.get(rtype, 4)
        out[off:off + width] = b"\0" * min(width, max(len(out) - off, 0))
    return out


def _unseal(theirs: bytearray, ours: bytearray) -> None:
    """An ENDBR that vmlinux's link-time objtool sealed counts as the same instruction."""
    if ours[:4] == ENDBR64 and bytes(theirs[:4]) in SEALED:
        theirs[:4] = ENDBR64


def compare_function(obj: ElfObject, index: int, vm: VmlinuxImage, tu_file: str) -> str | None:
    """Why the function at symbol *index* differs from vmlinux's; None if it matches or is absent."""
    sym = obj.symbols[index]
    found = vm.find(sym.name, local=sym.bind == STB_LOCAL, file=tu_file, size=sym.size)
    if found is None:
        return "absent"
    if found.size != sym.size:
        return f"{sym.size} bytes here, {found.size} in vmlinux"
    data, relocs = function_bytes(obj, index)
    ours = masked(data, relocs)
    theirs = masked(vm.read(found.address, found.size), relocs)
    _unseal(theirs, ours)
    if ours != theirs:
        at = next(i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
        return f"byte {at:#x} differs ({ours[at]:#04x} here, {theirs[at]:#04x} in vmlinux)"
    return None


def check_object(path: Path, obj: str, tu_file: str, vm: VmlinuxImage) -> ReproReport:
    """Compare every function of the object at *path* with vmlinux (see module docstring)."""
    elf = ElfObject.read(path)
    checked = absent = 0
    bad: list[Mismatch] = []
    for i, s in enumerate(elf.symbols):
        if s.type != STT_FUNC or s.shndx in (SHN_UNDEF, SHN_ABS, SHN_COMMON) or not s.size:
            continue
        if s.bind == STB_WEAK:
            # a __weak default (arch_cpu_idle) that another object overrides in vmlinux
            continue
        why = compare_function(elf, i, vm, tu_file)
        if why == "absent":
            absent += 1
        elif why is None:
            checked += 1
        else:
            checked += 1
            bad.append(Mismatch(s.name, why))
    return ReproReport(obj, checked, absent, tuple(bad))


def require_reproduced(report: ReproReport, release: str) -> None:
    """Raise :class:`ReproductionError` naming the first mismatching function, if any."""
    if report.mismatches:
        m = report.mismatches[0]
        more = f" (and {len(report.mismatches) - 1} more)" if len(report.mismatches) > 1 else ""
        raise ReproductionError(
            f"{report.obj} does not reproduce {release}'s vmlinux: {m.function}: {m.reason}{more}"
            " - the compiler or config is not the distribution's")
    if not report.checked:
        raise ReproductionError(
            f"{report.obj}: none of its functions is in {release}'s vmlinux (not built into this "
            "kernel: a config option is off, or it belongs to a module)")
