"""kpatch-build / klp-build: backend choice, argv, and error parsing with fake executables.

Neither tool can be installed on this machine (the one allowed exception to
"no fakes outside unit tests"), so a fake on PATH records its argv and
replays a recorded log from tests/data/livepatch/backends/.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from patchflow.errors import UserError
from patchflow.livepatch import backends
from patchflow.livepatch.results import LivepatchBuildDetails
from patchflow.result import Status

DATA = Path(__file__).parent.parent / "data" / "livepatch" / "backends"


def fake_tool(bindir: Path, name: str, log: str, rc: int, make_ko: str | None = None) -> Path:
    bindir.mkdir(parents=True, exist_ok=True)
    exe = bindir / name
    body = [
        "#!/bin/sh",
        f'printf "%s\\n" "$@" > "{bindir}/{name}.argv"',
        f'cat "{DATA / log}"',
    ]
    if make_ko:
        body.append(f'echo ko > "{make_ko}"')
    body.append(f"exit {rc}")
    exe.write_text("\n".join(body) + "\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


@pytest.fixture
def bindir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    return d


@pytest.mark.parametrize(("release", "kpatch", "klp", "expected"), [
    ("6.12.117", False, False, "native"),
    ("6.12.117", True, False, "kpatch-build"),
    ("6.18.3", True, False, "kpatch-build"),
    ("6.19.1", True, False, "native"),     # kpatch-build stops at 6.18, no klp-build in tree
    ("6.19.1", True, True, "klp-build"),
    ("6.19.1", False, True, "klp-build"),
    ("6.12.117", False, True, "native"),   # a klp-build script alone does not make 6.12 supported
])
def test_choice(tmp_path: Path, release: str, kpatch: bool, klp: bool, expected: str) -> None:
    if klp:
        (tmp_path / backends.KLP_BUILD).parent.mkdir(parents=True)
        (tmp_path / backends.KLP_BUILD).write_text("#!/bin/sh\n")
    choice = backends.choose(release, tmp_path,
                             which=lambda t: "/usr/bin/kpatch-build" if kpatch else None)
    assert choice.backend == expected and choice.reason


def test_requested_backend_must_exist(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="kpatch-build is not installed"):
        backends.choose("6.12.117", tmp_path, requested="kpatch-build", which=lambda t: None)
    with pytest.raises(UserError, match="klp-build needs 6.19"):
        backends.choose("6.12.117", tmp_path, requested="klp-build", which=lambda t: None)


def test_kpatch_build_success(bindir: Path, tmp_path: Path) -> None:
    ko = tmp_path / "lp.ko"
    fake_tool(bindir, "kpatch-build", "kpatch-build-ok.log", 0, make_ko=str(ko))
    argv = backends.kpatch_build_argv(source=Path("/src"), config=Path("/b/.config"),
                                      vmlinux=Path("/b/vmlinux"), patch=Path("/p/fix.patch"),
                                      name="lp", output=tmp_path)
    res = backends.build_external("kpatch-build", argv, cwd=tmp_path, module=ko)
    assert res.status is Status.PASS
    assert [f.name for f in res.detail(LivepatchBuildDetails).functions] == ["cmdline_proc_show"]
    recorded = (bindir / "kpatch-build.argv").read_text().split("\n")
    assert recorded[:10] == ["--sourcedir", "/src", "--config", "/b/.config", "--vmlinux",
                             "/b/vmlinux", "--name", "lp", "--output", str(tmp_path)]
    assert recorded[-2] == "/p/fix.patch"


def test_kpatch_build_unsupported_change_is_a_failure(bindir: Path, tmp_path: Path) -> None:
    fake_tool(bindir, "kpatch-build", "kpatch-build-unsupported.log", 1)
    argv = backends.kpatch_build_argv(source=Path("/src"), config=Path("/c"), vmlinux=Path("/v"),
                                      patch=Path("/p"), name="lp", output=tmp_path)
    res = backends.build_external("kpatch-build", argv, cwd=tmp_path, module=tmp_path / "lp.ko")
    assert res.status is Status.FAIL
    assert list(res.detail(LivepatchBuildDetails).unsupported) == [
        "vmscan.o: data section .data.reclaim_stat_defaults selected for inclusion",
        "vmscan.o: 1 unsupported section change(s)"]
    assert list(res.detail(LivepatchBuildDetails).errors) == ["1 unsupported section change(s)"]
    assert "data section .data.reclaim_stat_defaults" in res.summary


def test_klp_build_argv_and_error(tmp_path: Path) -> None:
    src = tmp_path / "linux"
    (src / "scripts" / "livepatch").mkdir(parents=True)
    fake_tool(src / "scripts" / "livepatch", "klp-build", "klp-build-error.log", 1)
    argv = backends.klp_build_argv(source=src, patch=Path("/p/fix.patch"),
                                   output=tmp_path / "lp.ko")
    assert argv == [str(src / "scripts/livepatch/klp-build"), "--jobs", "2", "--output",
                    str(tmp_path / "lp.ko"), "/p/fix.patch"]
    res = backends.build_external("klp-build", argv, cwd=src, module=tmp_path / "lp.ko")
    assert res.status is Status.FAIL
    assert [f.name for f in res.detail(LivepatchBuildDetails).functions] == ["cmdline_proc_show"]
    assert list(res.detail(LivepatchBuildDetails).errors) == [
        "objtool klp diff failed: unsupported change to static local variable"]


def test_kernel_version() -> None:
    assert backends.kernel_version("6.19.0-rc1") == (6, 19)
    with pytest.raises(UserError):
        backends.kernel_version("garbage")
