"""Per-function diff and object-level safety findings on small C files compiled by gcc.

Each folder of tests/data/livepatch/objdiff/ holds before.c, after.c and the
expected comparison; both sides are compiled the way the native generator
compiles kernel objects (-ffunction-sections -fdata-sections, ftrace entries).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from patchflow import typed
from patchflow.livepatch.diff import compare
from patchflow.livepatch.elf import ElfObject
from patchflow.livepatch.safety import analyze_objects
from patchflow.runner import run

CORPUS = Path(__file__).parent.parent / "data" / "livepatch" / "objdiff"
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
CFLAGS = ["-O2", "-pg", "-mfentry", "-mrecord-mcount", "-ffunction-sections", "-fdata-sections",
          "-fno-asynchronous-unwind-tables"]

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")


def compile_c(src: Path, out: Path) -> ElfObject:
    run(["gcc", *CFLAGS, "-c", str(src), "-o", str(out)], timeout=60)
    return ElfObject.read(out)


@pytest.mark.parametrize("case", CASES)
def test_objdiff_corpus(case: str, tmp_path: Path) -> None:
    folder = CORPUS / case
    expected = json.loads((folder / "expected.json").read_text())
    before = compile_c(folder / "before.c", tmp_path / "before.o")
    after = compile_c(folder / "after.c", tmp_path / "after.o")
    d = compare(before, after)
    got = typed.dump(d.summary())
    for key in ("changed_functions", "new_functions", "removed_functions", "changed_data",
                "new_data"):
        assert got[key] == expected[key], key
    findings = analyze_objects(f"{case}.c", before, after, d)
    assert [{"kind": f.kind, "symbol": f.symbol} for f in findings] == expected["findings"]
    for f in findings:
        assert f.file == f"{case}.c" and f.reason


def test_identical_compiles_have_no_difference(tmp_path: Path) -> None:
    src = CORPUS / "inlined-static" / "before.c"
    d = compare(compile_c(src, tmp_path / "a.o"), compile_c(src, tmp_path / "b.o"))
    assert not any(typed.dump(d.summary()).values())


COLD_SRC = """
extern void __attribute__((cold)) report(int);
int f(int x)
{
	if (__builtin_expect(x > 100, 0)) {
		report(x);
		report(x + %d);
		return -1;
	}
	return x * 2;
}
"""


def test_cold_part_folds_into_parent(tmp_path: Path) -> None:
    objs = []
    for n in (1, 2):
        src = tmp_path / f"c{n}.c"
        src.write_text(COLD_SRC % n)
        run(["gcc", "-O2", "-ffunction-sections", "-c", str(src), "-o", str(tmp_path / f"c{n}.o")])
        objs.append(ElfObject.read(tmp_path / f"c{n}.o"))
    assert any(s.name == "f.cold" for s in objs[0].symbols)
    d = compare(objs[0], objs[1])
    assert d.changed_functions == ["f"]
