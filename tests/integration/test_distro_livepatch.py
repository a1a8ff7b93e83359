"""Live patches for Debian's own 6.1 cloud kernel, end to end with the real parts.

Real Debian packages (``apt-get download``: image, -dbg, headers,
linux-source 6.1.187-1), the distribution's config through kbuild
(``prepare modules_prepare`` only), real stable fixes from the corpus in
tests/data/distro-corpus/6.1 (single-file changes between Debian's 6.1.187
and 6.1.192 sources), and Debian's own vmlinuz booted under QEMU TCG.

Measured on two shared cores: from an empty cache (ccache off) the fetch took
50 s (downloads 5.7 s of it; the rest streams vmlinux out of the -dbg package
and unpacks the source) and prepare 23 s; each fix then takes 4-15 s to a
module and each QEMU verification ~20-30 s.  The whole file took ~5.5 min with
the cache warm (12 tests), so ~7 min on an empty cache.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchflow.config import ConfigDir
from patchflow.distro.prepare import PreparedTree, build_lock
from patchflow.distro.stage import ensure
from patchflow.livepatch.elf import SHF_RELA_LIVEPATCH, ElfObject
from patchflow.livepatch.generate import BuiltTree, generate
from patchflow.livepatch.reproduce import ReproductionError
from patchflow.livepatch.results import LivepatchBuildDetails, LivepatchVerifyDetails
from patchflow.result import Status

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent.parent
CORPUS = ROOT / "tests" / "data" / "distro-corpus" / "6.1"
CACHE = Path(os.environ.get("PATCHFLOW_CACHE") or Path.home() / ".cache" / "patchflow")


@pytest.fixture(scope="module")
def prepared() -> Iterator[PreparedTree]:
    if shutil.which("apt-get") is None or shutil.which("gcc-12") is None:
        pytest.skip("needs apt-get and gcc-12 (Debian 12)")
    target = ConfigDir(ROOT).target("debian12-cloud-6.1")
    tree, _took = ensure(CACHE, target, print)
    yield tree


def _tree(p: PreparedTree) -> BuiltTree:
    return BuiltTree(p.source, p.build, p.kernel.vmlinux, distro=p)


def _build(p: PreparedTree, fix: str, tmp: Path) -> tuple[Status, str, LivepatchBuildDetails]:
    res = generate((CORPUS / f"{fix}.patch").read_text(), _tree(p), tmp, name=f"lp_{fix}")
    d = res.detail(LivepatchBuildDetails)
    assert d is not None
    return res.status, res.summary, d


def _klp_sections(ko: Path) -> set[str]:
    obj = ElfObject.read(ko)
    return {s.name for s in obj.sections if s.flags & SHF_RELA_LIVEPATCH}


@pytest.mark.parametrize(("fix", "function"), [
    ("kernel_sys", "prctl_set_auxv"),
    ("fs_fcntl", "do_fcntl"),
])
def test_fix_builds(prepared: PreparedTree, fix: str, function: str, tmp_path: Path) -> None:
    """A real fix becomes a module for Debian's kernel: MODVERSIONS, modpost, vermagic."""
    status, summary, d = _build(prepared, fix, tmp_path)
    assert status is Status.PASS, summary
    assert function in [f.name for f in d.functions]
    from patchflow.livepatch.bundle import modinfo

    info = modinfo(Path(d.module).read_bytes())
    assert info["vermagic"].startswith("6.1.0-53-cloud-amd64 SMP ")
    assert "modversions" in info["vermagic"] and info["livepatch"] == "Y"


def test_static_key_fix_carries_its_jump_labels(prepared: PreparedTree, tmp_path: Path) -> None:
    """mm/vmscan.c: __jump_table entries point at vmlinux's own (static, unexported) keys
    through klp relocations; its static calls likewise."""
    status, summary, d = _build(prepared, "mm_vmscan", tmp_path)
    assert status is Status.PASS, summary
    assert {"__jump_table", ".static_call_sites", "__mcount_loc"} <= set(d.carried_tables)
    assert {".klp.rela.vmlinux.__jump_table", ".klp.rela.vmlinux.static_call_sites"} <= \
        _klp_sections(Path(d.module))


def test_alternatives_and_paravirt_are_carried(prepared: PreparedTree, tmp_path: Path) -> None:
    """fs/proc/task_mmu.c: .altinstructions (+ replacement) and .parainstructions entries."""
    status, summary, d = _build(prepared, "fs_proc_task_mmu", tmp_path)
    assert status is Status.PASS, summary
    assert {".altinstructions", ".parainstructions"} <= set(d.carried_tables)


def test_unbuilt_file_is_refused(prepared: PreparedTree, tmp_path: Path) -> None:
    """kernel/power/wakelock.c is not built into the cloud kernel (CONFIG_PM_WAKELOCKS off)."""
    from patchflow.distro.objects import NotBuilt

    with pytest.raises(NotBuilt, match="kernel/power/wakelock.o is built only with "
                                       "CONFIG_PM_WAKELOCKS, and 6.1.0-53-cloud-amd64 has it off"):
        _build(prepared, "kernel_power_wakelock", tmp_path)


def test_reproduction_fails_with_a_wrong_config_option(prepared: PreparedTree,
                                                       tmp_path: Path) -> None:
    """A build dir whose config differs from Debian's (-Os instead of -O2) is caught."""
    wrong = tmp_path / "build"
    with build_lock(prepared.build):
        shutil.copytree(prepared.build, wrong, symlinks=True)
    cfg = (wrong / ".config").read_text()
    cfg = cfg.replace("CONFIG_CC_OPTIMIZE_FOR_PERFORMANCE=y",
                      "# CONFIG_CC_OPTIMIZE_FOR_PERFORMANCE is not set")
    cfg = cfg.replace("# CONFIG_CC_OPTIMIZE_FOR_SIZE is not set", "CONFIG_CC_OPTIMIZE_FOR_SIZE=y")
    (wrong / ".config").write_text(cfg)
    from patchflow.distro.prepare import make_argv
    from patchflow.runner import run

    run(make_argv(prepared.kernel, wrong, prepared.cc, ["olddefconfig", "prepare"]),
        timeout=1800)
    bad = PreparedTree(prepared.kernel, wrong, prepared.cc)
    tree = BuiltTree(bad.source, bad.build, bad.kernel.vmlinux, distro=bad)
    with pytest.raises(ReproductionError, match=r"kernel/sys.o does not reproduce "
                                                r"6.1.0-53-cloud-amd64's vmlinux: \w+: .*"
                                                r"compiler or config is not the distribution's"):
        generate((CORPUS / "kernel_sys.patch").read_text(), tree, tmp_path / "w", name="lp_x")


#: fixes loaded into Debian's own kernel: plain code, an alternative, a static key,
#: static calls, a paravirt site, reclaim code under the stress profile
VERIFIED = ["kernel_sys", "fs_proc_task_mmu", "fs_userfaultfd", "kernel_signal",
            "kernel_bpf_ringbuf", "mm_vmscan"]


@pytest.mark.parametrize("fix", VERIFIED)
def test_fix_verified_in_debians_kernel(prepared: PreparedTree, fix: str, tmp_path: Path) -> None:
    """Load, transition, stress (zram reclaim), roll back, clean: in 6.1.0-53-cloud-amd64."""
    from patchflow.distro.guest import WORKLOAD_MODULES, module_closure
    from patchflow.livepatch.verify import ZRAM_SETUP, VerifySpec, verify

    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs qemu-system-x86")
    status, summary, d = _build(prepared, fix, tmp_path / "build")
    assert status is Status.PASS, summary
    k = prepared.kernel
    mods = module_closure(k.modules, WORKLOAD_MODULES, tmp_path / "ko")
    spec = VerifySpec(name=d.name, stress_seconds=10, setup_cmd=ZRAM_SETUP, memcg_mb=64,
                      probes=tuple(f.new_symbol for f in d.functions))
    res = verify(Path(d.module), k.vmlinuz, spec, cache=tmp_path / "guest",
                 log=tmp_path / "console.log", extra_modules=tuple(mods), mem_mb=1024)
    assert res.status is Status.PASS, res.summary
    v = res.detail(LivepatchVerifyDetails)
    assert v is not None and v.enabled
    assert {"transition", "stress", "reclaim", "executed", "disable", "unload", "taint"} <= {
        c.check for c in v.checks}
