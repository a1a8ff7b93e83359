"""Distribution kernels, fast half: the Debian provider, the build-dir checks, object mapping,
the transactional source swap and the reproduction check, on recorded inputs and fakes.

The real packages, kbuild and vmlinux are exercised in
tests/integration/test_distro_livepatch.py.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from patchflow.cli import cli
from patchflow.config import DistroKernel
from patchflow.distro import deb, debian
from patchflow.distro.kernel import DistroKernelFiles, config_compiler, provider
from patchflow.distro.objects import NotBuilt, object_for, restore, swapped
from patchflow.distro.prepare import (
    PreparedTree,
    check_compiler,
    config_drift,
    distro_config,
    make_argv,
)
from patchflow.errors import NotFound, UserError
from patchflow.livepatch.generate import kbuild_error
from patchflow.livepatch.reproduce import (
    ReproductionError,
    VmlinuxImage,
    check_object,
    require_reproduced,
)

DATA = Path(__file__).parent.parent / "data" / "distro"
CC_TEXT = "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"


def _fake_tool(bindir: Path, name: str, script: str) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    p = bindir / name
    p.write_text("#!/bin/sh\n" + script)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)


def _kernel(tmp: Path, compiler: str = CC_TEXT) -> DistroKernelFiles:
    cfg = tmp / "config"
    cfg.write_text(f'CONFIG_CC_VERSION_TEXT="{compiler}"\nCONFIG_X=y\n')
    return DistroKernelFiles("debian", "6.1.0-53-cloud-amd64", "6.1.187-1", tmp / "vmlinuz",
                             tmp / "vmlinux", cfg, tmp / "Module.symvers", tmp / "modules",
                             tmp / "src", config_compiler(cfg))


# ---- the Debian provider ---------------------------------------------------------------


def test_package_names_and_argv() -> None:
    names = debian.package_names("6.12.113+deb12-cloud-amd64")
    assert names == {"image": "linux-image-6.12.113+deb12-cloud-amd64-unsigned",
                     "dbg": "linux-image-6.12.113+deb12-cloud-amd64-dbg",
                     "headers": "linux-headers-6.12.113+deb12-cloud-amd64",
                     "source": "linux-source-6.12"}
    assert debian.apt_download_argv("linux-source-6.1", "6.1.187-1") == [
        "apt-get", "download", "--", "linux-source-6.1=6.1.187-1"]
    assert debian.apt_show_argv("x") == ["apt-cache", "show", "--", "x"]


def test_parse_show_recorded() -> None:
    assert debian.parse_show((DATA / "apt-cache-show-headers.txt").read_text()) == {
        "6.1.187-1": 1493172}
    versions = debian.parse_show((DATA / "apt-cache-show-source.txt").read_text())
    assert list(versions) == ["6.1.192-3", "6.1.192-2", "6.1.192-1", "6.1.190-1", "6.1.187-1"]
    assert versions["6.1.187-1"] == 139246836


@pytest.fixture
def fake_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An apt-cache that knows one kernel, 6.1.0-53-cloud-amd64 at 6.1.187-1."""
    bindir = tmp_path / "bin"
    _fake_tool(bindir, "apt-cache", """
case "$3" in
  linux-image-6.1.0-53-cloud-amd64-unsigned|linux-image-6.1.0-53-cloud-amd64-dbg|\\
  linux-headers-6.1.0-53-cloud-amd64|linux-source-6.1)
    printf 'Package: %s\\nVersion: 6.1.187-1\\nSize: 1000\\n\\n' "$3";;
  *) echo "E: No packages found" >&2; exit 100;;
esac
""")
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return bindir


def test_resolve_finds_all_four(fake_apt: Path) -> None:
    pkgs = debian.resolve(DistroKernel("debian", "6.1.0-53-cloud-amd64"))
    assert [(p.role, p.version) for p in pkgs] == [
        ("image", "6.1.187-1"), ("dbg", "6.1.187-1"), ("headers", "6.1.187-1"),
        ("source", "6.1.187-1")]


def test_resolve_refuses_unknown_release_and_version(fake_apt: Path) -> None:
    with pytest.raises(NotFound, match="Debian has no kernel 6.1.0-99-cloud-amd64: no package "
                                       "linux-image-6.1.0-99-cloud-amd64-unsigned"):
        debian.resolve(DistroKernel("debian", "6.1.0-99-cloud-amd64"))
    with pytest.raises(NotFound, match=r"no linux-image-6.1.0-53-cloud-amd64-unsigned 6.1.186-1 "
                                       r"\(it has 6.1.187-1\)"):
        debian.resolve(DistroKernel("debian", "6.1.0-53-cloud-amd64", "6.1.186-1"))


def test_cli_refuses_unknown_release_in_one_line(fake_apt: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "cfg"
    (cfg / "targets").mkdir(parents=True)
    (cfg / "series").mkdir()
    (cfg / "targets" / "deb-bogus.toml").write_text(
        'arch = "x86_64"\nprovider = "distro"\n[distro]\nprovider = "debian"\n'
        'release = "6.1.0-99-cloud-amd64"\n')
    monkeypatch.setenv("PATCHFLOW_CONFIG_DIR", str(cfg))
    monkeypatch.setenv("PATCHFLOW_CACHE", str(tmp_path / "cache"))
    res = CliRunner().invoke(cli, ["distro", "prepare", "deb-bogus"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Debian has no kernel 6.1.0-99-cloud-amd64" in lines[0]


def test_provider_registry() -> None:
    assert provider("debian").name == "debian"
    with pytest.raises(UserError, match="unknown distribution provider 'ubuntu'"):
        provider("ubuntu")


# ---- .deb members ----------------------------------------------------------------------


def _deb(path: Path, members: dict[str, bytes]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    parts = [(b"debian-binary", b"2.0\n"), (b"control.tar.xz", b""),
             (b"data.tar.xz", buf.getvalue())]
    out = bytearray(b"!<arch>\n")
    for name, data in parts:
        out += name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) \
            + b"100644".ljust(8) + str(len(data)).encode().ljust(10) + b"`\n" + data
        if len(data) & 1:
            out += b"\n"
    path.write_bytes(bytes(out))
    return path


def test_deb_extracts_only_the_members_asked(tmp_path: Path) -> None:
    d = _deb(tmp_path / "x.deb", {"./usr/lib/debug/boot/vmlinux-R": b"ELF", "./big": b"x" * 99})
    got = deb.extract(d, ["usr/lib/debug/boot/vmlinux-*"], tmp_path / "out")
    assert got == [tmp_path / "out/usr/lib/debug/boot/vmlinux-R"]
    assert got[0].read_bytes() == b"ELF" and not (tmp_path / "out/big").exists()


def test_deb_member_names(tmp_path: Path) -> None:
    d = _deb(tmp_path / "x.deb", {"../evil": b"bad"})
    with pytest.raises(tarfile.TarError):
        deb.extract(d, ["*"], tmp_path / "out")
    assert not (tmp_path / "evil").exists()
    (tmp_path / "junk.deb").write_bytes(b"not an ar archive")
    with pytest.raises(deb.DebError, match="not a Debian package"):
        deb.extract(tmp_path / "junk.deb", ["*"], tmp_path / "out")


# ---- the build dir ---------------------------------------------------------------------


def test_compiler_must_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    _fake_tool(bindir, "gcc-12", 'echo "gcc-12 (Debian 12.2.0-14) 12.2.0"\n')
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    with pytest.raises(UserError, match=r"compiler mismatch: kernel 6.1.0-53-cloud-amd64 needs "
                                        r"`gcc-12 \(Debian 12.2.0-14\+deb12u1\) 12.2.0`"):
        check_compiler(_kernel(tmp_path))
    _fake_tool(bindir, "gcc-12", f'echo "{CC_TEXT}"\n')
    check_compiler(_kernel(tmp_path))
    with pytest.raises(UserError, match="built with `gcc-13 .*`: gcc-13 is not installed"):
        check_compiler(_kernel(tmp_path, "gcc-13 (Debian 13.1.0-1) 13.1.0"))


def test_config_drift() -> None:
    want = distro_config('CONFIG_A=y\nCONFIG_SYSTEM_TRUSTED_KEYS="debian/certs/x.pem"\n'
                         "# CONFIG_B is not set\nCONFIG_RUSTC_VERSION=0\n# CONFIG_RUST is not set\n")
    assert 'CONFIG_SYSTEM_TRUSTED_KEYS=""' in want
    same = want.replace("CONFIG_RUSTC_VERSION=0", "CONFIG_RUSTC_VERSION=109500") + "CONFIG_NEW=y\n"
    assert config_drift(want, same) == []
    assert config_drift(want, want.replace("CONFIG_A=y", "CONFIG_A=m")) == ["CONFIG_A=y became m"]
    assert config_drift(want, want.replace("# CONFIG_B is not set", "CONFIG_B=y")) == [
        "CONFIG_B=n became y"]


def test_make_argv(tmp_path: Path) -> None:
    k = _kernel(tmp_path)
    assert make_argv(k, tmp_path / "b", "ccache gcc-12", ["prepare"]) == [
        "make", "-C", str(tmp_path / "src"), f"O={tmp_path / 'b'}", "-j2", "CC=ccache gcc-12",
        "KERNELRELEASE=6.1.0-53-cloud-amd64", "prepare"]


# ---- which object compiles a file ------------------------------------------------------


def test_object_for_direct_and_included(tmp_path: Path) -> None:
    sched = tmp_path / "kernel" / "sched"
    sched.mkdir(parents=True)
    (sched / "Makefile").write_text("obj-y += core.o fair.o\nobj-y += build_policy.o\n")
    (sched / "build_policy.c").write_text('#include "idle.c"\n# include "syscalls.c"\n')
    for f in ("core.c", "idle.c", "syscalls.c", "orphan.c"):
        (sched / f).write_text("int x;\n")
    assert object_for(tmp_path, "kernel/sched/core.c") == "kernel/sched/core.o"
    assert object_for(tmp_path, "kernel/sched/syscalls.c") == "kernel/sched/build_policy.o"
    assert object_for(tmp_path, "kernel/sched/idle.c") == "kernel/sched/build_policy.o"
    with pytest.raises(NotBuilt, match="kernel/sched/orphan.c: kernel/sched/Makefile builds no"):
        object_for(tmp_path, "kernel/sched/orphan.c")
    with pytest.raises(NotBuilt, match="only .c files"):
        object_for(tmp_path, "kernel/sched/sched.h")


def _tree(tmp: Path) -> PreparedTree:
    k = _kernel(tmp)
    k.source.mkdir()
    return PreparedTree(k, tmp / "rel" / "build", "gcc-12")


def test_swap_restores_after_a_crash(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    (tree.source / "a.c").write_text("old\n")
    os.utime(tree.source / "a.c", ns=(10**18, 10**18))
    patched = tmp_path / "patched"
    patched.mkdir()
    (patched / "a.c").write_text("new\n")
    with pytest.raises(RuntimeError), swapped(tree, patched, ["a.c"]):
        assert (tree.source / "a.c").read_text() == "new\n"
        raise RuntimeError("compile failed")
    assert (tree.source / "a.c").read_text() == "old\n"
    assert (tree.source / "a.c").stat().st_mtime_ns == 10**18
    # a killed run: the marker and the backup stay, the next use puts the original back
    marker = tree.source.parent / ".src.patchflow-swap" / "swap.json"
    (marker.parent / "files").mkdir(parents=True)
    (marker.parent / "files" / "a.c").write_text("old\n")
    marker.write_text(json.dumps({"a.c": 10**18}))
    (tree.source / "a.c").write_text("half-patched\n")
    assert restore(tree) == ["a.c"]
    assert (tree.source / "a.c").read_text() == "old\n" and not marker.exists()


# ---- reproduction ----------------------------------------------------------------------

SOURCE = """
static int helper(int x) { return x * 3 + 1; }
int __attribute__((noinline)) entry(int x) { return helper(x) ^ 0x55; }
int __attribute__((noinline)) other(int x) { return entry(x) + 7; }
"""


def _compile(tmp: Path, name: str, flags: list[str]) -> Path:
    src = tmp / "unit.c"
    src.write_text(SOURCE)
    out = tmp / name
    subprocess.run(["gcc", *flags, "-fno-pie", "-ffunction-sections", "-c", str(src), "-o",
                    str(out)], check=True)
    return out


def test_reproduction_check(tmp_path: Path) -> None:
    obj = _compile(tmp_path, "a.o", ["-O2"])
    vmlinux = tmp_path / "vmlinux"
    subprocess.run(["gcc", "-nostdlib", "-static", "-no-pie", "-Wl,-e,entry", str(obj), "-o",
                    str(vmlinux)], check=True)
    with VmlinuxImage(vmlinux, tmp_path / "index.json") as vm:
        good = check_object(obj, "unit.o", "unit.c", vm)
        assert good.checked >= 2 and not good.mismatches
        require_reproduced(good, "R")
        bad = check_object(_compile(tmp_path, "b.o", ["-O0"]), "unit.o", "unit.c", vm)
    assert bad.mismatches
    with pytest.raises(ReproductionError, match=r"unit.o does not reproduce R's vmlinux: "
                                                r"(entry|other|helper): .*compiler or config"):
        require_reproduced(bad, "R")
    assert (tmp_path / "index.json").is_file()  # the function table is cached


def test_kbuild_error_line() -> None:
    tail = ("  MODPOST /m/Module.symvers\n/m/.klp_patched.o.cmd: No such file or directory\n"
            "make[1]: *** [Makefile.modpost:127: /m/Module.symvers] Error 1\n"
            "make: Leaving directory '/b'\n")
    assert kbuild_error(tail) == "/m/.klp_patched.o.cmd: No such file or directory"


# ---- the gate on a distro target -------------------------------------------------------


def test_gate_skips_full_build_on_a_distro_target(tmp_path: Path) -> None:
    from patchflow.config import ConfigDir
    from patchflow.context import StageContext
    from patchflow.distro.stage import DISTRO_SKIP
    from patchflow.gate.registry import STAGES
    from patchflow.result import Status
    from patchflow.state import State
    from patchflow.workspace import Workspace

    root = Path(__file__).resolve().parent.parent.parent
    ws = Workspace.open(tmp_path / "ws", root, tmp_path / "cache")
    target = ConfigDir(root).target("debian12-cloud-6.1")
    by_name = {s.name: s for s in STAGES}
    with State(ws.db_path) as st:
        ctx = StageContext.make(ws, st, log=tmp_path / "log", target=target)
        for name in ("build-base", "build-patched", "boot", "bench"):
            res = by_name[name].run(ctx)
            assert res.status is Status.SKIP and res.summary == DISTRO_SKIP
    assert "does not build the whole distro kernel" in DISTRO_SKIP


def test_gate_dry_run_plans_only_the_live_patch_stages(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHFLOW_CACHE", str(tmp_path / "cache"))
    res = CliRunner().invoke(cli, ["gate", "batch-tlb-flush", "-t", "debian12-cloud-6.1",
                                   "--dry-run"])
    assert "Traceback" not in res.output, res.output
    rows = {ln.split()[1]: ln for ln in res.output.splitlines()
            if ln.startswith("debian12-cloud-6.1 ")}
    for stage in ("build-base", "build-patched", "boot", "bench"):
        assert "skipped: distribution kernel" in rows[stage], rows[stage]
    for stage in ("backport", "livepatch-build", "livepatch-verify"):
        assert "would run" in rows[stage]
    assert "debian12-cloud-6.1: distribution kernel not fetched and prepared" in res.output


def test_objects_of_options_this_kernel_has_off(tmp_path: Path) -> None:
    from patchflow.distro.objects import check_configured, required_option

    tree = _tree(tmp_path)
    (tree.source / "mm").mkdir()
    (tree.source / "mm" / "Makefile").write_text(
        "obj-y += vmscan.o\nobj-$(CONFIG_ZSWAP) += zswap.o\nobj-$(CONFIG_ZRAM) += zram.o\n"
        "zram-y := zcomp.o \\\n\tzram_drv.o\n")
    tree.build.mkdir(parents=True)
    (tree.build / ".config").write_text("# CONFIG_ZSWAP is not set\nCONFIG_ZRAM=m\n")
    assert required_option(tree.source, "mm/vmscan.o") is None
    assert required_option(tree.source, "mm/zram_drv.o") == "CONFIG_ZRAM"
    check_configured(tree, "mm/vmscan.o")
    with pytest.raises(NotBuilt, match="mm/zswap.o is built only with CONFIG_ZSWAP, and "
                                       "6.1.0-53-cloud-amd64 has it off"):
        check_configured(tree, "mm/zswap.o")
    with pytest.raises(NotBuilt, match="builds it as a module"):
        check_configured(tree, "mm/zram_drv.o")
