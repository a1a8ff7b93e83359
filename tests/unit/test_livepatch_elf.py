"""ELF round trip, extraction of patched functions and klp conversion, on gcc-built objects."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from patchflow.livepatch.elf import (
    SHF_ALLOC,
    SHF_RELA_LIVEPATCH,
    SHN_LIVEPATCH,
    SHN_UNDEF,
    STB_GLOBAL,
    STB_LOCAL,
    ElfError,
    ElfObject,
)
from patchflow.livepatch.extract import ExtractionError, extract, klp_convert
from patchflow.livepatch.kallsyms import KSym, VmlinuxSymbols
from patchflow.runner import run

DATA = Path(__file__).parent.parent / "data" / "livepatch"
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("ld") is None,
                                reason="needs gcc and binutils")


def build(tmp_path: Path) -> ElfObject:
    out = tmp_path / "after.o"
    run(["gcc", "-O2", "-pg", "-mfentry", "-ffunction-sections", "-fdata-sections",
         "-fno-asynchronous-unwind-tables", "-c", str(DATA / "extract" / "after.c"), "-o", str(out)])
    return ElfObject.read(out)


def fake_vmlinux(*, with_counter: bool = True) -> VmlinuxSymbols:
    syms = [
        KSym("show", 0x1000, 40, False, 2, None),
        KSym("helper", 0x1100, 30, True, 2, "after.c"),
        KSym("helper", 0x0900, 30, True, 2, "other.c"),  # a namesake in another file
        KSym("seq_puts", 0x2000, 10, False, 2, None),
        KSym("saved_command_line", 0x9000, 8, False, 1, None),
    ]
    if with_counter:
        syms.append(KSym("counter", 0x9100, 4, True, 1, "after.c"))
    return VmlinuxSymbols(syms)


def test_round_trip_is_identical_for_readelf(tmp_path: Path) -> None:
    obj = build(tmp_path)
    again = ElfObject.parse(obj.to_bytes())
    assert [s.name for s in again.sections] == [s.name for s in obj.sections]
    assert [(s.name, s.value, s.shndx, s.bind) for s in again.symbols] == \
        [(s.name, s.value, s.shndx, s.bind) for s in obj.symbols]
    for i, s in enumerate(obj.sections):
        assert again.sections[i].data == s.data


def test_rejects_non_elf() -> None:
    with pytest.raises(ElfError):
        ElfObject.parse(b"not an elf file at all, not at all....................................")


def test_sympos_counts_by_address() -> None:
    vm = fake_vmlinux()
    local = vm.find("helper", file="fs/proc/after.c", local=True)
    assert local is not None and vm.sympos(local) == 2  # 0x900 (other.c) sorts first
    assert vm.sympos(vm.find("show", file=None, local=False)) == 0  # type: ignore[arg-type]


def test_extract_and_klp_convert(tmp_path: Path) -> None:
    after = build(tmp_path)
    ex = extract(after, changed=["show"], new=["new_helper"], new_data=[], tu_file="after.c",
                 vm=fake_vmlinux(), exported={"seq_puts", "__fentry__"})
    assert ex.replaced == {"show": "__klp_new__show"}
    # new_helper is new; tiny is not in vmlinux (inlined there) so it is carried along;
    # helper exists in vmlinux and is reached through a klp relocation, not copied
    assert sorted(ex.copied) == ["new_helper", "tiny"]
    assert ex.klp_refs == ["counter,0", "helper,2", "saved_command_line,0"]
    assert "seq_puts" in ex.plain_refs
    # static data is never copied into the module
    assert not any(s.name == "counter" and s.shndx != SHN_UNDEF for s in ex.obj.symbols)
    extracted = tmp_path / "klp_patched.o"
    ex.obj.write(extracted)
    # link it as kbuild would, then convert
    linked = tmp_path / "module.o"
    run(["ld", "-r", "-o", str(linked), str(extracted)])
    run(["readelf", "-aW", str(linked)])
    ko = ElfObject.read(linked)
    names = klp_convert(ko)
    assert names == [".klp.sym.vmlinux.counter,0", ".klp.sym.vmlinux.helper,2",
                     ".klp.sym.vmlinux.saved_command_line,0"]
    out = tmp_path / "module.ko"
    ko.write(out)
    final = ElfObject.read(out)
    klp_syms = [s for s in final.symbols if s.name.startswith(".klp.sym.")]
    assert all(s.shndx == SHN_LIVEPATCH and s.bind == STB_GLOBAL for s in klp_syms)
    assert not any(s.shndx == SHN_UNDEF and s.name.startswith("__klp_ref__") for s in final.symbols)
    klp_secs = [s for s in final.sections if s.name.startswith(".klp.rela.vmlinux.")]
    assert klp_secs, [s.name for s in final.sections]
    for sec in klp_secs:
        assert sec.flags & SHF_RELA_LIVEPATCH and sec.flags & SHF_ALLOC
        target = final.sections[sec.info].name
        assert sec.name == ".klp.rela.vmlinux" + target
        for r in final.relas(final.sections.index(sec)):
            assert final.symbols[r.sym].name.startswith(".klp.sym.vmlinux.")
    # no ordinary relocation still points at a klp symbol
    for i, sec in enumerate(final.sections):
        if sec.type == 4 and not sec.flags & SHF_RELA_LIVEPATCH:
            assert not any(final.symbols[r.sym].shndx == SHN_LIVEPATCH for r in final.relas(i))
    # locals still precede globals, so the symtab stays valid for the module loader
    binds = [s.bind for s in final.symbols]
    assert binds == sorted(binds, key=lambda b: b != STB_LOCAL)
    run(["readelf", "-aW", str(out)])


def test_missing_static_data_is_an_error_not_a_copy(tmp_path: Path) -> None:
    after = build(tmp_path)
    with pytest.raises(ExtractionError, match="counter is not in vmlinux"):
        extract(after, changed=["show"], new=["new_helper"], new_data=[], tu_file="after.c",
                vm=fake_vmlinux(with_counter=False), exported={"seq_puts"})
