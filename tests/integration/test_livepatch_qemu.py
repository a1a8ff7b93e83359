"""Live patches generated from real patches on the Debian 6.12 tree, loaded in QEMU.

Needs a built 6.12 kernel with MODULES/LIVEPATCH/FTRACE (targets/kconfig):
the base build of ``linux-6.12.y`` in the shared cache (``patchflow build``),
or ``PATCHFLOW_LIVEPATCH_TREE=SOURCE:BUILD``.  Each patch is generated with
the native backend, then the *unpatched* kernel boots, loads the module,
shows the effect from userspace, runs stress-ng, and rolls back.  Bundles
(signed, tampered, their scripts in a guest) are in test_bundle_trust.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from patchflow.livepatch.elf import SHN_LIVEPATCH, ElfObject
from patchflow.livepatch.generate import BuiltTree, analyze, generate
from patchflow.livepatch.results import LivepatchBuildDetails
from patchflow.livepatch.verify import VerifySpec, verify
from patchflow.result import Status
from patchflow.runner import run

from .conftest import BuiltKernel

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DATA = Path(__file__).parent.parent / "data" / "livepatch"


def _cache() -> Path:
    return Path(os.environ.get("PATCHFLOW_CACHE", Path.home() / ".cache" / "patchflow"))


@pytest.fixture(scope="module")
def tree(base_612: BuiltKernel) -> tuple[BuiltTree, Path]:
    """The 6.12 base build (built by the session fixture when the cache has none)."""
    cfg = (base_612.tree.build / ".config").read_text()
    # without reliable stack traces (ORC) sleeping kthreads never switch and every
    # transition stalls (kernel/livepatch/transition.c); measured on the tinyconfig build
    for opt in ("CONFIG_LIVEPATCH=y", "CONFIG_MODULES=y", "CONFIG_DYNAMIC_FTRACE=y",
                "CONFIG_UNWINDER_ORC=y"):
        assert opt in cfg, f"the built kernel lacks {opt} (targets/kconfig/livepatch.config)"
    return base_612.tree, base_612.bzimage


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("livepatch")


def _functions(d: LivepatchBuildDetails) -> list[dict[str, object]]:
    return [{"name": f.name, "file": f.file, "sympos": f.sympos} for f in d.functions]


CASES = {
    # a change with an effect visible from userspace, as in samples/livepatch/livepatch-sample.c;
    # reads saved_command_line (global, not exported) through a klp relocation
    "cmdline": ("cat /proc/cmdline", "livepatch=cmdline"),
    # a static function calling a static function (inlined away in vmlinux: carried along)
    # under a static lock, walking a static list: both reached through klp relocations
    "filesystems": ("cat /proc/filesystems", "livepatch-proc"),
    # the patch adds a new helper function
    "cmdline-helper": ("cat /proc/cmdline", "livepatch=helper:"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_generate_load_effect_rollback(tree: tuple[BuiltTree, Path], workdir: Path,
                                       case: str) -> None:
    kt, bzimage = tree
    effect_cmd, expect = CASES[case]
    name = "lp_" + case.replace("-", "_")
    res = generate((DATA / "patches" / f"{case}.patch").read_text(), kt, workdir / case,
                   name=name, series=case)
    assert res.status is Status.PASS, f"{res.summary}\n{res.log}"
    d = res.detail(LivepatchBuildDetails)
    assert d is not None
    ko = Path(d.module)
    obj = ElfObject.read(ko)
    klp = [s.name for s in obj.symbols if s.shndx == SHN_LIVEPATCH]
    assert sorted(klp) == sorted(d.klp_symbols)
    if case == "filesystems":
        assert any("file_systems_lock" in s for s in klp)  # static data: never copied
        assert not any(s.name == "file_systems" and s.shndx not in (0, SHN_LIVEPATCH)
                       for s in obj.symbols)
    out = verify(ko, bzimage, VerifySpec(name=name, effect_cmd=effect_cmd, expect=expect,
                                         timeout=60, stress_seconds=10),
                 cache=_cache(), log=workdir / f"{case}.console.log")
    (workdir / f"{case}.verify.json").write_text(json.dumps(out.to_json(), indent=1))
    assert out.status is Status.PASS, out.summary + "\n" + (workdir / f"{case}.console.log").read_text()[-3000:]


@pytest.mark.parametrize("where", ["workspace-in-a-git-work-tree", "workspace-in-the-kernel-tree"])
def test_generated_from_the_patch_wherever_the_workspace_is(
        tree: tuple[BuiltTree, Path], tmp_path: Path, where: str) -> None:
    """Issue 10: with the workspace inside a git work tree (the patchflow checkout,
    the user's kernel clone) `git apply` skipped the whole patch and exited 0, so
    "after" equalled "before" and the demo found nothing to live patch."""
    kt, _ = tree
    top = tmp_path / "checkout"
    top.mkdir()
    run(["git", "init", "-q", str(top)])
    if where == "workspace-in-the-kernel-tree":
        # the same relative paths at the outer repository's top, as in a kernel clone
        (top / "fs" / "proc").mkdir(parents=True)
        shutil.copy2(kt.source / "fs/proc/cmdline.c", top / "fs/proc/cmdline.c")
    res = generate((DATA / "patches" / "cmdline.patch").read_text(), kt,
                   top / ".patchflow" / "livepatch" / "cmdline", name="lp_where", series="cmdline")
    assert res.status is Status.PASS, res.summary
    d = res.detail(LivepatchBuildDetails)
    assert d is not None and [f.name for f in d.functions] == ["cmdline_proc_show"]
    if where == "workspace-in-the-kernel-tree":
        assert (top / "fs/proc/cmdline.c").read_bytes() == (kt.source / "fs/proc/cmdline.c"
                                                             ).read_bytes()


def test_struct_layout_change_refused(tree: tuple[BuiltTree, Path], workdir: Path) -> None:
    """The shape of the real v2's patch 1: a new field in struct reclaim_stat."""
    kt, _ = tree
    rel = "include/linux/vmstat.h"
    src = (kt.source / rel).read_text().splitlines(keepends=True)
    idx = next(i for i, line in enumerate(src) if line.startswith("struct reclaim_stat {"))
    patch = (f"diff --git a/{rel} b/{rel}\n--- a/{rel}\n+++ b/{rel}\n"
             f"@@ -{idx + 1},3 +{idx + 1},4 @@\n"
             + " " + src[idx] + " " + src[idx + 1] + "+\tunsigned nr_demo_field;\n"
             + " " + src[idx + 2])
    an = analyze(patch, kt, workdir / "struct")
    assert [(f.kind, f.file, f.symbol) for f in an.findings] == [
        ("struct-layout", rel, "struct reclaim_stat")]
    res = generate(patch, kt, workdir / "struct-gen", name="lp_struct")
    assert res.status is Status.FAIL and "struct reclaim_stat" in res.summary
