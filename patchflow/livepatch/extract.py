"""Cut the patched functions out of a patched object, and klp-convert the .ko.

:func:`extract` builds a new relocatable object holding only the changed
functions (renamed ``__klp_new__<name>`` so the generated C can point
``klp_func.new_func`` at them), the new helpers of the patch and the static
functions they call that vmlinux no longer has because they were inlined.
Read-only anonymous constants (string literals, constant pools) are copied;
**existing data is never copied**: a reference to it, or to any function that
vmlinux has, becomes an undefined symbol ``__klp_ref__<sympos>__<name>``
unless vmlinux exports it.

:func:`klp_convert` post-processes the module kbuild linked (modpost was told
to let those undefined references through) the way klp-convert does: each
``__klp_ref__`` symbol becomes ``.klp.sym.vmlinux.<name>,<sympos>`` with
``SHN_LIVEPATCH`` and the relocations using it move to
``.klp.rela.vmlinux.<section>`` sections flagged ``SHF_RELA_LIVEPATCH``
(``Documentation/livepatch/module-elf-format.rst``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from patchflow.errors import UserError
from patchflow.livepatch.elf import (
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_INFO_LINK,
    SHF_RELA_LIVEPATCH,
    SHF_WRITE,
    SHN_ABS,
    SHN_COMMON,
    SHN_LIVEPATCH,
    SHN_UNDEF,
    SHT_NULL,
    SHT_PROGBITS,
    SHT_RELA,
    SHT_STRTAB,
    SHT_SYMTAB,
    STB_GLOBAL,
    STB_LOCAL,
    STT_FUNC,
    STT_NOTYPE,
    STT_OBJECT,
    STT_SECTION,
    ElfObject,
    Rela,
    Section,
    Symbol,
)
from patchflow.livepatch.kallsyms import VmlinuxSymbols

KLP_REF = re.compile(r"^__klp_ref__(\d+)__(.+)$")
NEW_PREFIX = "__klp_new__"
#: sections whose entries for copied functions can simply be left out
DROP_SECTIONS = re.compile(
    r"^(?:__patchable_function_entries|\.discard\..*|\.note\..*|\.comment|"
    r"\.eh_frame|\.debug_.*|\.BTF.*|"
    r"\.ibt_endbr_seal|\.cfi_sites|\.initcall.*|\.init\..*|\.exit\..*|_*__ksymtab.*|"
    # lock-prefix locations, only used to patch LOCK out on a uniprocessor boot
    r"\.smp_locks|"
    r"\.modinfo|\.export_symbol)$")
COLD = re.compile(r"^.+\.cold(?:\.\d+)?$")


class ExtractionError(UserError):
    """The patched functions reference something a live patch cannot carry."""


@dataclass(frozen=True)
class TableSpec:
    """A special section of fixed-size entries whose first field points at a code site.

    ``size`` 0 derives the entry size from ``relocs`` relocations per entry (the
    x86 ``struct alt_instr`` grew from 12 to 14 bytes in 6.3).  The module loader
    processes each of these for a module (kernel/module/main.c, arch/x86/kernel/
    module.c: module_finalize), after it applied the vmlinux klp relocations
    (since 5.8), so entries may name vmlinux keys and thunks through klp symbols.
    """

    construct: str
    size: int = 0
    relocs: int = 1
    #: a parallel array without relocations, sliced with the same entries (ORC)
    companion: str = ""
    companion_size: int = 0


#: what each carried table is; everything else with entries for patched code is refused
TABLES: dict[str, TableSpec] = {
    "__ex_table": TableSpec("exception table entry", 12),
    "__bug_table": TableSpec("BUG/WARN entry"),
    "__jump_table": TableSpec("static key / tracepoint jump label", 16),
    ".altinstructions": TableSpec("alternative instruction", 0, relocs=2),
    ".static_call_sites": TableSpec("static call site", 8),
    ".parainstructions": TableSpec("paravirt patch site", 16),
    ".retpoline_sites": TableSpec("retpoline site", 4),
    ".return_sites": TableSpec("return thunk site", 4),
    ".call_sites": TableSpec("call depth tracking site", 4),
    ".orc_unwind_ip": TableSpec("ORC unwind entry", 4, companion=".orc_unwind",
                                companion_size=6),
    # the __fentry__ call sites: ftrace records the module's functions at load, so the new
    # code is traceable and kprobe-able like any function (kpatch does the same)
    "__mcount_loc": TableSpec("ftrace call site", 8),
}
R_X86_64_64 = 1
#: data sections a module carries its own copy of, as any module does (dynamic debug)
OWN_DATA = ("__dyndbg", "__dyndbg_classes")
#: sections of constructs named in a refusal: 6.12's runtime constants (behind access_ok)
CONSTRUCTS = {"runtime_ptr_": "runtime constant (runtime_const_ptr)",
              "runtime_shift_": "runtime constant (runtime_const_shift_right)"}


@dataclass(frozen=True)
class TablePlan:
    rela: int  # the SHT_RELA section of the table (-1 for a companion)
    size: int
    keep: tuple[int, ...]  # entry indices to carry


def _into_text(obj: ElfObject, include: dict[int, None], r: Rela) -> bool:
    shndx = obj.symbols[r.sym].shndx
    return shndx in include and bool(obj.sections[shndx].flags & SHF_EXECINSTR)


def _function_pointer(obj: ElfObject, r: Rela) -> bool:
    """True for a pointer to the entry of a function (``.open = foo``), not into its body.

    Data that merely points at a patched function (an ops struct, a sched_class in
    ``__dl_sched_class``) stays in vmlinux and keeps calling the old function, whose
    entry livepatch redirects; a table entry pointing into a body is a site and
    must be carried or refused (tests/unit/test_livepatch_extract.py::test_jump_table_entries_are_carried_and_ops_structs_skipped).
    """
    if r.type != R_X86_64_64:
        return False
    sym = obj.symbols[r.sym]
    off = sym.value + r.addend
    return any(s.shndx == sym.shndx and s.type == STT_FUNC and s.value == off
               for s in obj.symbols)


def site_function(obj: ElfObject, r: Rela) -> str:
    """The function a table entry's site points into (for a refusal message)."""
    sym = obj.symbols[r.sym]
    off = sym.value + r.addend if sym.type == STT_SECTION else sym.value
    for s in obj.symbols:
        if s.shndx == sym.shndx and s.type == STT_FUNC and s.value <= off < s.value + max(s.size, 1):
            return s.name
    return sym.name or obj.sections[sym.shndx].name


def _construct(name: str) -> str:
    for prefix, what in CONSTRUCTS.items():
        if name.startswith(prefix):
            return f"{what} {name[len(prefix):]}"
    return f"entries in {name}"


def _entry_size(obj: ElfObject, shndx: int, spec: TableSpec, relas: list[Rela],
                tu_file: str) -> int:
    sec = obj.sections[shndx]
    if sec.name == "__bug_table":
        # one code reference per entry; the file name pointer is not code
        n = sum(1 for r in relas if obj.sections[obj.symbols[r.sym].shndx].flags & SHF_EXECINSTR
                and obj.symbols[r.sym].shndx != SHN_UNDEF)
        size = len(sec.data) // max(n, 1)
    else:
        size = spec.size or (len(sec.data) * spec.relocs // max(len(relas), 1))
    sites = {r.offset for r in relas if r.offset % max(size, 1) == 0}
    if not size or len(sec.data) % size or len(sites) != len(sec.data) // size:
        raise ExtractionError(f"{tu_file}: {sec.name}: cannot read its entries "
                              f"({len(sec.data)} bytes, {len(relas)} relocations)")
    return size


def table_plans(obj: ElfObject, include: dict[int, None], tu_file: str) -> dict[int, TablePlan]:
    """Every table with entries for included text: which entries to carry.

    Refuses, naming the function and the construct, any other section (not
    debug info, not a referrer in data) that points into the included code.
    """
    plans: dict[int, TablePlan] = {}
    for ri, rsec in enumerate(obj.sections):
        if rsec.type != SHT_RELA or rsec.info == 0 or rsec.info in include:
            continue
        target = obj.sections[rsec.info]
        if target.flags & SHF_EXECINSTR or not target.flags & SHF_ALLOC:
            continue  # callers that stay in vmlinux, and debug info
        relas = obj.relas(ri)
        hits = [r for r in relas if _into_text(obj, include, r)]
        if not hits or DROP_SECTIONS.match(target.name):
            continue
        spec = TABLES.get(target.name)
        if spec is None and all(_function_pointer(obj, r) for r in hits):
            continue  # an ops struct, a sched_class: it keeps calling the redirected old one
        if spec is None:
            raise ExtractionError(f"{tu_file}: {site_function(obj, hits[0])}: "
                                  f"{_construct(target.name)}: the native generator cannot "
                                  "carry it")
        size = _entry_size(obj, rsec.info, spec, relas, tu_file)
        keep = tuple(sorted({r.offset // size for r in relas
                             if r.offset % size == 0 and _into_text(obj, include, r)}))
        plans[rsec.info] = TablePlan(ri, size, keep)
        if spec.companion:
            comp = obj.section_index(spec.companion)
            plans[comp] = TablePlan(-1, spec.companion_size, keep)
    return plans


Decide = Callable[[int, int, int], tuple[int, int]]


def slice_table(obj: ElfObject, shndx: int, plan: TablePlan,
                decide: Decide) -> tuple[bytes, list[tuple[int, int, int, int]]]:
    """The carried entries of one table and their relocations (targets decided anew)."""
    data = obj.sections[shndx].data
    out = b"".join(data[e * plan.size:(e + 1) * plan.size] for e in plan.keep)
    rows: list[tuple[int, int, int, int]] = []
    if plan.rela < 0:
        return out, rows
    where = {e: n for n, e in enumerate(plan.keep)}
    for r in sorted(obj.relas(plan.rela), key=lambda r: r.offset):
        n = where.get(r.offset // plan.size)
        if n is not None:
            j, a = decide(r.sym, r.type, r.addend)
            rows.append((n * plan.size + r.offset % plan.size, j, r.type, a))
    return out, rows


def new_symbol(name: str) -> str:
    return NEW_PREFIX + re.sub(r"\W", "_", name)


@dataclass
class Extracted:
    obj: ElfObject
    #: changed function -> its symbol in the extracted object
    replaced: dict[str, str] = field(default_factory=dict)
    copied: list[str] = field(default_factory=list)
    klp_refs: list[str] = field(default_factory=list)
    plain_refs: list[str] = field(default_factory=list)
    #: special sections whose entries for the carried code are carried too
    carried_tables: list[str] = field(default_factory=list)


#: a relocation row of the extracted object: (offset, symbol index in *after*, type, addend)
Row = tuple[int, int, int, int]


def extract(after: ElfObject, *, changed: list[str], new: list[str], new_data: list[str],
            tu_file: str, vm: VmlinuxSymbols, exported: set[str]) -> Extracted:
    """Build the object that carries *changed* and *new* functions of *after* (the patched TU).

    The steps, each a method of :class:`Extraction`: close over what the
    functions reach and carry the special tables' entries for the copied text
    until neither grows (:meth:`Extraction.carry_tables`, which calls
    :meth:`Extraction.collect`), then write the new object
    (:meth:`Extraction.assemble`).
    """
    x = Extraction(after, changed=changed, new=new, new_data=new_data, tu_file=tu_file, vm=vm,
                   exported=exported)
    x.carry_tables()
    return x.assemble()


class Extraction:
    """The state of one extraction: what is copied, what becomes a reference, and why."""

    def __init__(self, after: ElfObject, *, changed: list[str], new: list[str],
                 new_data: list[str], tu_file: str, vm: VmlinuxSymbols,
                 exported: set[str]) -> None:
        self.after, self.changed, self.new = after, changed, new
        self.new_data, self.tu_file, self.vm, self.exported = set(new_data), tu_file, vm, exported
        sym_index = {s.name: i for i, s in enumerate(after.symbols)
                     if s.type in (STT_FUNC, STT_OBJECT) and s.shndx not in (SHN_UNDEF, SHN_ABS)}
        #: section indices to copy, in the order they were pulled in
        self.include: dict[int, None] = {}
        #: functions still to pull in (symbol indices of *after*)
        self.work = [sym_index[n] for n in changed + new]
        self.included_funcs: set[int] = set()
        #: after symbol index -> name of the undefined symbol that stands for it
        self.ext: dict[int, str] = {}
        #: symbols that became references to vmlinux or exports
        self.decisions: dict[int, str] = {}
        #: relocations of every copied section, and the sections already relocated
        self.relas_out: dict[int, list[Row]] = {}
        self.done: set[int] = set()
        #: special table sections and the copies of their carried entries
        self.table_sections: dict[int, tuple[bytes, list[Row]]] = {}
        self.res = Extracted(obj=ElfObject([], []))

    # ---- what a reference points at ------------------------------------------------

    def covering(self, shndx: int, off: int) -> int | None:
        """The function/object a section-relative reference points into.

        The addend of a PC-relative reference also holds the distance to the
        end of the instruction (``addl $1, counter(%rip)`` has -5), so with
        -fdata-sections the one symbol of the section is the answer, and
        otherwise the last symbol starting at or before the offset.
        """
        cands = [(s.value, i) for i, s in enumerate(self.after.symbols)
                 if s.shndx == shndx and s.type in (STT_FUNC, STT_OBJECT)]
        if len(cands) == 1:
            return cands[0][1]
        below = [c for c in sorted(cands) if c[0] <= max(off, 0)]
        return below[-1][1] if below else None

    def external(self, i: int) -> str:
        """The undefined symbol that stands for symbol *i*: an export or a klp reference."""
        s = self.after.symbols[i]
        if i in self.ext:
            return self.ext[i]
        if s.bind != STB_LOCAL and s.name in self.exported:
            name = s.name
            self.res.plain_refs.append(name)
        else:
            k = self.vm.find(s.name, file=self.tu_file, local=s.bind == STB_LOCAL,
                             size=s.size or None)
            if k is None:
                if s.shndx == SHN_UNDEF:
                    # not in vmlinux, not exported: e.g. a compiler helper; the loader reports it
                    self.res.plain_refs.append(s.name)
                    self.ext[i] = s.name
                    return s.name
                raise ExtractionError(f"{self.tu_file}: {s.name} is not in vmlinux")
            name = f"__klp_ref__{self.vm.sympos(k)}__{s.name}"
            self.res.klp_refs.append(f"{s.name},{self.vm.sympos(k)}")
        self.ext[i] = name
        return name

    def _refer(self, i: int) -> None:
        self.decisions[i] = self.external(i)

    def decide(self, i: int, rtype: int, addend: int) -> tuple[int, int]:
        """The symbol index (in *after*) a relocation keeps, and its possibly rebased addend.

        Copies what the live patch must carry (its own functions, statics that
        vmlinux inlined away, constants, new data) and turns everything else
        into a reference: existing data is never copied.
        """
        s = self.after.symbols[i]
        if s.shndx in (SHN_UNDEF, SHN_COMMON):
            self._refer(i)
            return i, addend
        if s.shndx == SHN_ABS:
            raise ExtractionError(f"{self.tu_file}: absolute symbol {s.name} referenced")
        if s.type in (STT_SECTION, STT_NOTYPE):
            return self._decide_section_ref(i, rtype, addend)
        if s.type == STT_FUNC:
            self._decide_function(i)
            return i, addend
        sec = self.after.sections[s.shndx]
        if sec.name in OWN_DATA:
            # pr_debug descriptors: the module registers its own copies (with their static
            # keys, which the carried jump labels point at); vmlinux's have other line numbers
            self.include[s.shndx] = None
        elif s.name in self.new_data or (not (sec.flags & SHF_WRITE) and not self.vm.has(s.name)):
            self.include[s.shndx] = None  # new data, or a constant table vmlinux folded away
        else:
            self._refer(i)
        return i, addend

    def _decide_section_ref(self, i: int, rtype: int, addend: int) -> tuple[int, int]:
        s = self.after.symbols[i]
        sec = self.after.sections[s.shndx]
        target = s.value + addend + (4 if rtype in (2, 4) else 0)
        inner = self.covering(s.shndx, target)
        if inner is not None and not (sec.flags & 0x20):
            return self.decide(inner, rtype, addend + s.value - self.after.symbols[inner].value)
        if sec.flags & SHF_WRITE:
            raise ExtractionError(
                f"{self.tu_file}: patched code references anonymous writable data in {sec.name}")
        self.include[s.shndx] = None  # a constant: string literals, constant pool
        return i, addend

    def _decide_function(self, i: int) -> None:
        s = self.after.symbols[i]
        if s.name in self.changed or s.name in self.new or i in self.included_funcs:
            self.include[s.shndx] = None
            return
        if COLD.match(s.name):
            # gcc's cold part of a function jumps back into its parent's body: it must
            # be the new parent's, never vmlinux's old copy
            self.work.append(i)
            self.include[s.shndx] = None
            return
        k = self.vm.find(s.name, file=self.tu_file, local=s.bind == STB_LOCAL, size=None)
        if k is None and s.bind == STB_LOCAL:
            self.work.append(i)  # inlined everywhere in vmlinux: carry our own copy
            self.include[s.shndx] = None
            return
        self._refer(i)

    # ---- step 1: close over what the functions reach ---------------------------------

    def _pull_functions(self) -> None:
        while self.work:
            fi = self.work.pop()
            if fi not in self.included_funcs:
                self.included_funcs.add(fi)
                self.include[self.after.symbols[fi].shndx] = None

    def _relocate(self, shndx: int) -> None:
        self.done.add(shndx)
        rows = []
        for ri in self.after.rela_sections_for(shndx):
            for r in self.after.relas(ri):
                j, a = self.decide(r.sym, r.type, r.addend)
                rows.append((r.offset, j, r.type, a))
        self.relas_out[shndx] = rows

    def collect(self) -> None:
        """Relocate every copied section until no new section or function is pulled in."""
        self._pull_functions()
        while True:
            pending = [i for i in self.include if i not in self.done]
            if not pending and not self.work:
                return
            self._pull_functions()
            for shndx in pending:
                self._relocate(shndx)

    # ---- step 2: special tables with entries for the copied text ---------------------

    def carry_tables(self) -> None:
        """Carry the entries of every table that points into the copied text (or refuse).

        A carried entry may pull in more (the file name strings of ``__bug_table``,
        a jump label's key, a cold part), which may bring more entries: repeat until
        the entries carried no longer change.
        """
        seen: dict[int, tuple[int, ...]] = {}
        while True:
            self.collect()
            plans = table_plans(self.after, self.include, self.tu_file)
            if {k: p.keep for k, p in plans.items()} == seen:
                return
            seen = {k: p.keep for k, p in plans.items()}
            for shndx, plan in plans.items():
                self.table_sections[shndx] = slice_table(self.after, shndx, plan, self.decide)

    # ---- step 3: write the new object ------------------------------------------------

    def assemble(self) -> Extracted:
        """The new relocatable object, its symbol table and relocations."""
        sections, new_index = self._sections()
        symbols, sym_new = self._symbols(new_index)
        rela_secs = self._rela_sections(sections, new_index, sym_new)
        sections.extend(rela_secs)
        symtab_i = len(sections)
        for rs in rela_secs:
            rs.link = symtab_i
        sections.append(Section(".symtab", SHT_SYMTAB, 0, b"", link=symtab_i + 1, addralign=8,
                                entsize=24))
        sections.append(Section(".strtab", SHT_STRTAB, 0, b""))
        sections.append(Section(".shstrtab", SHT_STRTAB, 0, b""))
        sections.append(Section(".note.GNU-stack", SHT_PROGBITS, 0, b""))
        res = self.res
        res.obj = ElfObject(sections, symbols, machine=self.after.machine,
                            flags=self.after.flags, ident=self.after.ident)
        res.klp_refs = sorted(set(res.klp_refs))
        res.plain_refs = sorted(set(res.plain_refs))
        res.carried_tables = sorted(self.after.sections[i].name for i in self.table_sections)
        missing = [n for n in self.changed if n not in res.replaced]
        if missing:
            raise ExtractionError(f"{self.tu_file}: could not extract {', '.join(missing)}")
        return res

    def _sections(self) -> tuple[list[Section], dict[int, int]]:
        sections: list[Section] = [Section("", SHT_NULL, 0, b"")]
        new_index: dict[int, int] = {}
        for shndx in list(self.include) + list(self.table_sections):
            src = self.after.sections[shndx]
            data = self.table_sections[shndx][0] if shndx in self.table_sections else src.data
            new_index[shndx] = len(sections)
            sections.append(Section(src.name, src.type, src.flags, data, addralign=src.addralign,
                                    entsize=src.entsize, nobits_size=src.nobits_size))
        return sections, new_index

    def _symbols(self, new_index: dict[int, int]) -> tuple[list[Symbol], dict[int, int]]:
        """Section symbols, then locals, then globals, then the undefined references.

        Keys of the returned map are *after* symbol indices; ``-shndx - 1``
        stands for the section symbol of *after* section ``shndx``.
        """
        symbols: list[Symbol] = [Symbol("", 0, 0, STB_LOCAL, 0, 0)]
        sym_new: dict[int, int] = {}
        for shndx, ni in new_index.items():
            sym_new[-shndx - 1] = len(symbols)
            symbols.append(Symbol("", 0, 0, STB_LOCAL, STT_SECTION, ni))
        globals_: list[tuple[int, Symbol]] = []
        for i, s in enumerate(self.after.symbols):
            if s.shndx not in new_index or s.type not in (STT_FUNC, STT_OBJECT, STT_NOTYPE) \
                    or not s.name:
                continue
            if s.name in self.changed:
                self.res.replaced[s.name] = new_symbol(s.name)
                globals_.append((i, Symbol(new_symbol(s.name), s.value, s.size, STB_GLOBAL,
                                           s.type, new_index[s.shndx], s.other)))
                continue
            local = s.bind == STB_LOCAL or s.type == STT_NOTYPE
            copy = Symbol(s.name, s.value, s.size, STB_LOCAL if local else s.bind, s.type,
                          new_index[s.shndx], s.other)
            if local:
                sym_new[i] = len(symbols)
                symbols.append(copy)
            else:
                globals_.append((i, copy))
            if s.type == STT_FUNC:
                self.res.copied.append(s.name)
        for i, sym in globals_:
            sym_new[i] = len(symbols)
            symbols.append(sym)
        undef: dict[str, int] = {}
        for i, name in self.decisions.items():
            if name not in undef:
                undef[name] = len(symbols)
                symbols.append(Symbol(name, 0, 0, STB_GLOBAL, STT_NOTYPE, SHN_UNDEF))
            sym_new[i] = undef[name]
        return symbols, sym_new

    def _rela_sections(self, sections: list[Section], new_index: dict[int, int],
                       sym_new: dict[int, int]) -> list[Section]:
        def map_sym(j: int) -> int:
            if j in sym_new:
                return sym_new[j]
            s = self.after.symbols[j]
            if s.type == STT_SECTION and s.shndx in new_index:
                return sym_new[-s.shndx - 1]
            raise ExtractionError(f"{self.tu_file}: internal: no mapping for symbol {s.name or j}")

        out: list[Section] = []
        for shndx, ni in new_index.items():
            rows = (self.table_sections[shndx][1] if shndx in self.table_sections
                    else self.relas_out.get(shndx, []))
            if not rows:
                continue
            relas = [Rela(off, map_sym(j), t, a) for off, j, t, a in rows]
            out.append(Section(".rela" + sections[ni].name, SHT_RELA, SHF_INFO_LINK,
                               ElfObject.pack_relas(relas), link=0, info=ni, addralign=8,
                               entsize=24))
        return out


ENDBR64 = bytes.fromhex("f30f1efa")
R_X86_64_32 = 10


def annotate_noendbr(obj: ElfObject, names: list[str]) -> list[str]:
    """Mark replacement functions that start without ENDBR as reached by ``jmp``, not by call.

    With ``CONFIG_X86_KERNEL_IBT`` objtool checks the linked module and reports
    ``data relocation to !ENDBR: __klp_new__<fn>+0x0`` for ``klp_func.new_func``:
    gcc emits no ENDBR at a static function whose address it never saw taken.
    livepatch never calls new_func indirectly (the ftrace handler changes the
    saved ip and the trampoline *returns* to it), which is what the kernel's
    ``ANNOTATE_NOENDBR`` (``.discard.noendbr``, one ``.long`` per site) says.
    Returns the functions annotated.
    """
    marked: list[tuple[int, int]] = []
    for i, s in enumerate(obj.symbols):
        if s.name in names and s.type == STT_FUNC and s.shndx not in (SHN_UNDEF, SHN_ABS):
            code = obj.sections[s.shndx].data[s.value:s.value + 4]
            if code != ENDBR64:
                marked.append((i, s.value))
    if not marked:
        return []
    sec_i = len(obj.sections)
    obj.sections.append(Section(".discard.noendbr", SHT_PROGBITS, SHF_ALLOC,
                                b"\0" * (4 * len(marked)), addralign=4))
    relas = [Rela(4 * n, i, R_X86_64_32, 0) for n, (i, _v) in enumerate(marked)]
    obj.sections.append(Section(".rela.discard.noendbr", SHT_RELA, SHF_INFO_LINK,
                                ElfObject.pack_relas(relas), link=obj.symtab_index, info=sec_i,
                                addralign=8, entsize=24))
    return [obj.symbols[i].name for i, _v in marked]


def klp_convert(ko: ElfObject, objname: str = "vmlinux") -> list[str]:
    """Turn ``__klp_ref__`` undefined symbols of a linked .ko into livepatch symbols/relas.

    Symbol indices do not move (the livepatch symbols were already global
    and undefined), so the rest of the module keeps working.  Returns the
    livepatch symbol names.
    """
    klp: set[int] = set()
    names = []
    for i, s in enumerate(ko.symbols):
        m = KLP_REF.match(s.name)
        if m and s.shndx == SHN_UNDEF:
            s.name = f".klp.sym.{objname}.{m.group(2)},{m.group(1)}"
            s.shndx = SHN_LIVEPATCH
            s.bind = STB_GLOBAL
            klp.add(i)
            names.append(s.name)
    if not klp:
        return names
    symtab_i = ko.symtab_index
    new_secs: list[Section] = []
    for sec in list(ko.sections):
        if sec.type != SHT_RELA or sec.flags & SHF_RELA_LIVEPATCH:
            continue
        idx = ko.sections.index(sec)
        relas = ko.relas(idx)
        moved = [r for r in relas if r.sym in klp]
        if not moved:
            continue
        sec.data = ElfObject.pack_relas([r for r in relas if r.sym not in klp])
        target = ko.sections[sec.info].name
        new_secs.append(Section(f".klp.rela.{objname}{target}" if target.startswith(".")
                                else f".klp.rela.{objname}.{target}",
                                SHT_RELA, SHF_ALLOC | SHF_RELA_LIVEPATCH | SHF_INFO_LINK,
                                ElfObject.pack_relas(moved), link=symtab_i, info=sec.info,
                                addralign=8, entsize=24))
    # appended after .shstrtab & co: existing section indices keep their meaning
    ko.sections.extend(new_secs)
    return sorted(names)
