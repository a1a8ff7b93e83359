"""Reading and writing ELF64 little-endian relocatable objects (ET_REL).

This is the small, pure-Python ELF layer the native live-patch generator
needs: parse sections, symbols and RELA entries of a kernel object or a
``.ko``, change them (rename symbols, mark them ``SHN_LIVEPATCH``, split
relocation sections into ``.klp.rela.*`` ones, build a new object from
selected sections) and serialise the result with fresh offsets.

Only what x86_64 kernel objects use is supported: ELF64, little endian,
``SHT_RELA`` relocations.  Anything else raises :class:`ElfError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from patchflow.errors import UserError

ET_REL = 1
ET_EXEC = 2
EM_X86_64 = 62

SHT_NULL = 0
SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_RELA = 4
SHT_NOBITS = 8
SHT_REL = 9
SHT_GROUP = 17
SHT_SYMTAB_SHNDX = 18

SHF_WRITE = 0x1
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4
SHF_INFO_LINK = 0x40
#: include/uapi/linux/elf.h: a relocation section applied by livepatch, not the module loader
SHF_RELA_LIVEPATCH = 0x00100000

SHN_UNDEF = 0
SHN_ABS = 0xFFF1
SHN_COMMON = 0xFFF2
#: include/uapi/linux/elf.h: a symbol resolved by livepatch (``.klp.sym.*``)
SHN_LIVEPATCH = 0xFF20

STB_LOCAL = 0
STB_GLOBAL = 1
STB_WEAK = 2

STT_NOTYPE = 0
STT_OBJECT = 1
STT_FUNC = 2
STT_SECTION = 3
STT_FILE = 4

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")


class ElfError(UserError):
    """The file is not an ELF64 little-endian relocatable object we can handle."""


@dataclass
class Section:
    """One section; ``data`` holds the bytes (empty for SHT_NOBITS, see ``size``)."""

    name: str
    type: int
    flags: int
    data: bytes
    link: int = 0
    info: int = 0
    addralign: int = 1
    entsize: int = 0
    addr: int = 0
    nobits_size: int = 0

    @property
    def size(self) -> int:
        return self.nobits_size if self.type == SHT_NOBITS else len(self.data)


@dataclass
class Symbol:
    name: str
    value: int
    size: int
    bind: int
    type: int
    shndx: int
    other: int = 0

    @property
    def info(self) -> int:
        return (self.bind << 4) | (self.type & 0xF)


@dataclass(frozen=True)
class Rela:
    offset: int
    sym: int
    type: int
    addend: int


@dataclass
class ElfObject:
    """A parsed ET_REL object.  ``sections[0]`` is the null section."""

    sections: list[Section]
    symbols: list[Symbol]
    machine: int = EM_X86_64
    flags: int = 0
    ident: bytes = field(default=b"\x7fELF\x02\x01\x01" + b"\0" * 9)

    # ---- reading -----------------------------------------------------------------
    @classmethod
    def read(cls, path: Path, *, allow_exec: bool = False) -> ElfObject:
        return cls.parse(Path(path).read_bytes(), str(path), allow_exec=allow_exec)

    @classmethod
    def parse(cls, raw: bytes, origin: str = "<bytes>", *, allow_exec: bool = False) -> ElfObject:
        """Parse *raw*; ``allow_exec`` accepts a linked vmlinux for reading its symbols."""
        if len(raw) < _EHDR.size or raw[:4] != b"\x7fELF":
            raise ElfError(f"{origin}: not an ELF file")
        if raw[4] != 2 or raw[5] != 1:
            raise ElfError(f"{origin}: only ELF64 little-endian objects are supported")
        (ident, e_type, machine, _ver, _entry, _phoff, shoff, flags, _ehsize, _phentsize,
         _phnum, shentsize, shnum, shstrndx) = _EHDR.unpack_from(raw, 0)
        if e_type != ET_REL and not (allow_exec and e_type == ET_EXEC):
            raise ElfError(f"{origin}: not a relocatable object (e_type={e_type})")
        if shentsize != _SHDR.size:
            raise ElfError(f"{origin}: unexpected section header size {shentsize}")
        hdrs = [_SHDR.unpack_from(raw, shoff + i * _SHDR.size) for i in range(shnum)]
        names_off = hdrs[shstrndx][4]

        def cstr(off: int) -> str:
            end = raw.index(b"\0", off)
            return raw[off:end].decode("utf-8", "replace")

        sections: list[Section] = []
        for (sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info,
             sh_addralign, sh_entsize) in hdrs:
            if sh_type == SHT_REL:
                raise ElfError(f"{origin}: SHT_REL relocations are not supported")
            data = b"" if sh_type in (SHT_NOBITS, SHT_NULL) else raw[sh_offset:sh_offset + sh_size]
            sections.append(Section(
                name=cstr(names_off + sh_name), type=sh_type, flags=sh_flags, data=data,
                link=sh_link, info=sh_info, addralign=sh_addralign, entsize=sh_entsize,
                addr=sh_addr, nobits_size=sh_size if sh_type == SHT_NOBITS else 0))
        symbols: list[Symbol] = []
        symtab = next((s for s in sections if s.type == SHT_SYMTAB), None)
        if symtab is not None:
            strtab = sections[symtab.link].data
            for i in range(len(symtab.data) // _SYM.size):
                st_name, info, other, shndx, value, size = _SYM.unpack_from(symtab.data, i * _SYM.size)
                end = strtab.index(b"\0", st_name)
                symbols.append(Symbol(strtab[st_name:end].decode("utf-8", "replace"), value, size,
                                      info >> 4, info & 0xF, shndx, other))
        return cls(sections=sections, symbols=symbols, machine=machine, flags=flags, ident=ident)

    # ---- queries -----------------------------------------------------------------
    def section_index(self, name: str) -> int:
        for i, s in enumerate(self.sections):
            if s.name == name:
                return i
        raise KeyError(name)

    @property
    def symtab_index(self) -> int:
        for i, s in enumerate(self.sections):
            if s.type == SHT_SYMTAB:
                return i
        raise ElfError("object has no symbol table")

    def relas(self, index: int) -> list[Rela]:
        sec = self.sections[index]
        if sec.type != SHT_RELA:
            raise ValueError(f"section {sec.name} is not SHT_RELA")
        out = []
        for i in range(len(sec.data) // _RELA.size):
            off, info, addend = _RELA.unpack_from(sec.data, i * _RELA.size)
            out.append(Rela(off, info >> 32, info & 0xFFFFFFFF, addend))
        return out

    def rela_sections_for(self, index: int) -> list[int]:
        """Indices of the SHT_RELA sections that apply to section *index*."""
        return [i for i, s in enumerate(self.sections) if s.type == SHT_RELA and s.info == index]

    def symbol_name(self, index: int) -> str:
        """A symbol's name, or its section's name for STT_SECTION symbols."""
        sym = self.symbols[index]
        if sym.type == STT_SECTION and sym.shndx < len(self.sections):
            return self.sections[sym.shndx].name
        return sym.name

    @staticmethod
    def pack_relas(relas: list[Rela]) -> bytes:
        return b"".join(_RELA.pack(r.offset, (r.sym << 32) | r.type, r.addend) for r in relas)

    # ---- writing -----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialise: regenerate .symtab/.strtab/.shstrtab, lay sections out afresh."""
        symtab_i = self.symtab_index if any(s.type == SHT_SYMTAB for s in self.sections) else None
        if symtab_i is not None:
            strtab_i = self.sections[symtab_i].link
            strtab, offsets = _strtab([s.name for s in self.symbols])
            self.sections[strtab_i].data = strtab
            first_global = next((i for i, s in enumerate(self.symbols) if s.bind != STB_LOCAL),
                                len(self.symbols))
            if any(s.bind == STB_LOCAL for s in self.symbols[first_global:]):
                raise ElfError("local symbols must precede global ones in the symbol table")
            self.sections[symtab_i].data = b"".join(
                _SYM.pack(offsets[s.name], s.info, s.other, s.shndx, s.value, s.size)
                for s in self.symbols)
            self.sections[symtab_i].info = first_global
            self.sections[symtab_i].entsize = _SYM.size
        shstr_i = next(i for i, s in enumerate(self.sections)
                       if s.type == SHT_STRTAB and s.name == ".shstrtab")
        shstrtab, sh_offsets = _strtab([s.name for s in self.sections])
        self.sections[shstr_i].data = shstrtab

        out = bytearray(b"\0" * _EHDR.size)
        offsets_out: list[int] = []
        for sec in self.sections:
            if sec.type in (SHT_NULL, SHT_NOBITS):
                offsets_out.append(len(out) if sec.type == SHT_NOBITS else 0)
                continue
            align = max(sec.addralign, 1)
            out += b"\0" * (-len(out) % align)
            offsets_out.append(len(out))
            out += sec.data
        out += b"\0" * (-len(out) % 8)
        shoff = len(out)
        for sec, off in zip(self.sections, offsets_out, strict=True):
            name_off = 0 if sec.type == SHT_NULL else sh_offsets[sec.name]
            out += _SHDR.pack(name_off, sec.type, sec.flags, sec.addr, off, sec.size, sec.link,
                              sec.info, sec.addralign, sec.entsize)
        out[0:_EHDR.size] = _EHDR.pack(self.ident, ET_REL, self.machine, 1, 0, 0, shoff, self.flags,
                                       _EHDR.size, 0, 0, _SHDR.size, len(self.sections), shstr_i)
        return bytes(out)

    def write(self, path: Path) -> None:
        Path(path).write_bytes(self.to_bytes())


def _strtab(names: list[str]) -> tuple[bytes, dict[str, int]]:
    buf = bytearray(b"\0")
    offsets: dict[str, int] = {"": 0}
    for n in names:
        if n not in offsets:
            offsets[n] = len(buf)
            buf += n.encode() + b"\0"
    return bytes(buf), offsets


def function_bytes(obj: ElfObject, sym_index: int) -> tuple[bytes, list[tuple[int, int, int, int]]]:
    """The bytes of a defined symbol and the relocations inside it.

    Returns ``(bytes, [(offset_in_symbol, rela_type, target_symbol_index, addend)])``.
    Works both for ``-ffunction-sections`` objects and for symbols sharing a
    section (``.init.text``): the symbol's ``[value, value+size)`` range is cut out.
    """
    sym = obj.symbols[sym_index]
    sec = obj.sections[sym.shndx]
    data = sec.data[sym.value:sym.value + sym.size]
    relocs = []
    for ri in obj.rela_sections_for(sym.shndx):
        for r in obj.relas(ri):
            if sym.value <= r.offset < sym.value + max(sym.size, 1):
                relocs.append((r.offset - sym.value, r.type, r.sym, r.addend))
    relocs.sort()
    return data, relocs
