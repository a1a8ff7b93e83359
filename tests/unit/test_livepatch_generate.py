"""Pure parts of the native generator: kbuild command reuse, names, generated sources (golden)."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchflow.errors import NotFound
from patchflow.livepatch.generate import (
    ReplacedFunction,
    compile_argv,
    kbuild_command,
    module_name,
    patched_files,
    render,
)
from patchflow.livepatch.verify import VerifySpec, snippet

DATA = Path(__file__).parent.parent / "data" / "livepatch"
GOLDEN = DATA / "golden"
SRC = Path("/work/scratch/demo/linux-source-6.12")  # as recorded in the .cmd fixture


def test_kbuild_command_takes_the_compiler_line() -> None:
    argv = kbuild_command(DATA / "kbuild", "fs/proc/cmdline.o")
    assert argv[:3] == ["ccache", "gcc", "-Wp,-MMD,fs/proc/.cmdline.o.d"]
    assert argv[-3:] == ["-o", "fs/proc/cmdline.o", f"{SRC}/fs/proc/cmdline.c"]
    assert "-DKBUILD_MODNAME=\"proc\"" in argv  # shell quoting undone


def test_kbuild_command_missing_object() -> None:
    with pytest.raises(NotFound, match="is fs/proc/nope.o built"):
        kbuild_command(DATA / "kbuild", "fs/proc/nope.o")


def test_compile_argv_rewrites_output_and_includes(tmp_path: Path) -> None:
    base = kbuild_command(DATA / "kbuild", "fs/proc/cmdline.o")
    ov = tmp_path / "after"
    argv = compile_argv(base, source=SRC, overlay=ov, src_file=ov / "fs/proc/cmdline.c",
                        out=tmp_path / "o.o", dep=tmp_path / "o.d")
    assert argv[0] == "gcc" and "ccache" not in argv
    assert f"-Wp,-MMD,{tmp_path / 'o.d'}" in argv
    assert argv[-5:] == ["-ffunction-sections", "-fdata-sections", "-o", str(tmp_path / "o.o"),
                         str(ov / "fs/proc/cmdline.c")]
    # the overlay's include dir comes right before the tree's, for every source-tree -I
    i = argv.index(f"-I{SRC}/include")
    assert argv[i - 1] == f"-I{ov}/include"
    assert argv.count("-o") == 1 and "fs/proc/cmdline.o" not in argv
    before = compile_argv(base, source=SRC, overlay=None, src_file=SRC / "fs/proc/cmdline.c",
                          out=tmp_path / "b.o", dep=tmp_path / "b.d")
    assert not any(a.startswith(f"-I{ov}") for a in before)


def test_module_name_and_patched_files() -> None:
    assert module_name("batch-tlb-flush-demo") == "lp_batch_tlb_flush_demo"
    text = (DATA / "patches" / "filesystems.patch").read_text()
    assert patched_files(text) == ["fs/filesystems.c"]


@pytest.mark.parametrize("template", ["livepatch.c", "Kbuild"])
def test_module_sources_golden(template: str) -> None:
    funcs = [ReplacedFunction("cmdline_proc_show", "fs/proc/cmdline.c", 0,
                              "__klp_new__cmdline_proc_show")]
    text = render(f"{template}.j2", name="lp_cmdline", backend="native", series="cmdline-demo",
                  object="klp_patched.o", funcs=funcs)
    assert text == (GOLDEN / template).read_text()


def test_verify_snippet_golden() -> None:
    spec = VerifySpec(name="lp_cmdline", effect_cmd="cat /proc/cmdline", expect="livepatch=",
                      timeout=30, stress_seconds=10)
    assert snippet(spec) == (GOLDEN / "verify.sh").read_text()


def test_a_patch_that_changes_nothing_is_an_error(tmp_path: Path) -> None:
    """git apply accepts "-x / +x" and exits 0: the overlay would equal the source."""
    from patchflow.errors import UserError
    from patchflow.livepatch.generate import overlay_tree

    src = tmp_path / "src"
    (src / "mm").mkdir(parents=True)
    (src / "mm" / "f.c").write_text("int x;\n")
    noop = ("diff --git a/mm/f.c b/mm/f.c\n--- a/mm/f.c\n+++ b/mm/f.c\n"
            "@@ -1 +1 @@\n-int x;\n+int x;\n")
    with pytest.raises(UserError, match="changes nothing"):
        overlay_tree(noop, src, tmp_path / "after")
