"""Special sections of a patched object: which entries are carried, skipped or refused.

Objects are compiled by gcc from small sources that emit the same section
layouts as the kernel's macros (arch_static_branch, runtime_const_ptr).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from patchflow.livepatch.elf import ElfObject
from patchflow.livepatch.extract import ExtractionError, table_plans

JUMP = r"""
long key;
int target(int x)
{
	asm goto("1: .byte 0x0f,0x1f,0x44,0x00,0x00\n\t"
			".pushsection __jump_table, \"aw\"\n\t"
			".balign 8\n\t"
			".long 1b - ., %l[yes] - .\n\t"
			".quad key + 1 - .\n\t"
			".popsection" : : : : yes);
	return x + 1;
yes:
	return x + 2;
}
int other(int x) { return x * 5; }
struct ops { int (*f)(int); } the_ops = { .f = target };
"""

RUNTIME = r"""
int target(int x)
{
	asm volatile("1: movabs $0x0123456789abcdef, %%rax\n\t"
			".pushsection runtime_ptr_USER_PTR_MAX, \"a\"\n\t"
			".long 1b - .\n\t"
			".popsection" : : : "rax");
	return x + 1;
}
"""


def _obj(tmp: Path, src: str) -> ElfObject:
    c = tmp / "t.c"
    c.write_text(src)
    subprocess.run(["gcc", "-O2", "-fno-pie", "-ffunction-sections", "-fdata-sections", "-c",
                    str(c), "-o", str(tmp / "t.o")], check=True)
    return ElfObject.read(tmp / "t.o")


def _include(obj: ElfObject, func: str) -> dict[int, None]:
    return {next(s.shndx for s in obj.symbols if s.name == func): None}


def test_jump_table_entries_are_carried_and_ops_structs_skipped(tmp_path: Path) -> None:
    obj = _obj(tmp_path, JUMP)
    plans = table_plans(obj, _include(obj, "target"), "t.c")
    names = {obj.sections[k].name: p for k, p in plans.items()}
    assert set(names) == {"__jump_table"}  # .data.the_ops only points at target's entry
    assert names["__jump_table"].size == 16 and names["__jump_table"].keep == (0,)
    assert table_plans(obj, _include(obj, "other"), "t.c") == {}


def test_runtime_constant_is_refused_naming_function_and_construct(tmp_path: Path) -> None:
    obj = _obj(tmp_path, RUNTIME)
    with pytest.raises(ExtractionError, match=r"t.c: target: runtime constant "
                                              r"\(runtime_const_ptr\) USER_PTR_MAX"):
        table_plans(obj, _include(obj, "target"), "t.c")


def test_noendbr_annotates_only_functions_without_endbr(tmp_path: Path) -> None:
    from patchflow.livepatch.extract import annotate_noendbr

    c = tmp_path / "e.c"
    c.write_text("static int __attribute__((noinline)) hidden(int x) { return x * 7; }\n"
                 "int visible(int x) { return hidden(x) + 1; }\n")
    subprocess.run(["gcc", "-O2", "-fcf-protection=branch", "-ffunction-sections", "-c", str(c),
                    "-o", str(tmp_path / "e.o")], check=True)
    obj = ElfObject.read(tmp_path / "e.o")
    # gcc gives the global an ENDBR and the static, never address-taken, none
    assert annotate_noendbr(obj, ["hidden", "visible"]) == ["hidden"]
    sec = obj.sections[obj.section_index(".discard.noendbr")]
    assert len(sec.data) == 4
    ElfObject.parse(obj.to_bytes())  # still a valid object
