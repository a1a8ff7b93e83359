"""Unit tests of patchflow.kernel.build on recorded build logs and configs (tests/data/kbuild/)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from patchflow import typed
from patchflow.errors import NotFound, UserError
from patchflow.kernel import artefacts, build, buildlog, kconfig, make

DATA = Path(__file__).resolve().parent.parent / "data" / "kbuild"


def test_make_argv_out_of_tree_with_ccache() -> None:
    argv = make.make_argv(Path("/src"), Path("/b"), ["bzImage", "modules"], jobs=2,
                            cc="ccache gcc")
    assert argv == ["make", "-C", "/src", "O=/b", "-j2", "CC=ccache gcc", "LOCALVERSION=",
                    "bzImage", "modules"]


def test_make_argv_defaults_to_nproc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 7)
    assert make.make_argv(Path("/s"), Path("/b"), ["olddefconfig"])[4] == "-j7"


def test_merge_config_argv() -> None:
    argv = make.merge_config_argv(Path("/s"), Path("/b"), [Path("/t/a.config"), Path("/t/b.config")])
    assert argv == ["sh", "/s/scripts/kconfig/merge_config.sh", "-m", "-O", "/b", "/b/.config",
                    "/t/a.config", "/t/b.config"]


def test_parse_config_set_and_unset() -> None:
    cfg = kconfig.parse_config('CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x y"\n# comment\n')
    assert cfg == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": '"x y"'}


def test_check_config_finds_the_option_a_dependency_dropped() -> None:
    # recorded: 6.12 tinyconfig + the original base.config, where VIRTIO_PCI sits
    # inside "if VIRTIO_MENU" and olddefconfig silently dropped it
    requested = kconfig.read_fragments([DATA / "base-without-virtio-menu.config"])
    actual = kconfig.parse_config((DATA / "tinyconfig-6.12-virtio-dropped.config").read_text())
    check = kconfig.check_config(requested, actual, None)
    assert not check.ok
    assert check.dropped == (kconfig.Dropped("CONFIG_VIRTIO_PCI", "y", "n"),)
    assert check.unknown == ()


def test_check_config_unknown_option_is_its_own_error() -> None:
    check = kconfig.check_config({"CONFIG_ZRAM": "y", "CONFIG_NO_SUCH_THING": "y"},
                                {"CONFIG_ZRAM": "y"}, {"CONFIG_ZRAM"})
    assert check.unknown == ("CONFIG_NO_SUCH_THING",)
    assert check.dropped == ()
    assert typed.dump(check)["unknown"] == ["CONFIG_NO_SUCH_THING"]


def test_kconfig_symbols(tmp_path: Path) -> None:
    (tmp_path / "mm").mkdir()
    (tmp_path / "mm" / "Kconfig").write_text(
        "config SWAP\n\tbool \"swap\"\nmenuconfig CGROUPS\n\tbool\nif CGROUPS\n  config MEMCG\n"
        "\tbool\nendif\n")
    (tmp_path / "Kconfig.debug").write_text("config DEBUG_X\n\tbool\n")
    assert kconfig.kconfig_symbols(tmp_path) == {"CONFIG_SWAP", "CONFIG_CGROUPS", "CONFIG_MEMCG",
                                                 "CONFIG_DEBUG_X"}


@pytest.mark.parametrize("log", sorted(p.name for p in DATA.glob("*.log")
                                       if not p.name.startswith("warnings-")))
def test_classify_failure_corpus(log: str) -> None:
    """Each failing build log has a sidecar <name>.json with the expected reading."""
    expected = json.loads((DATA / log).with_suffix(".json").read_text())
    fail = buildlog.classify_failure((DATA / log).read_text())
    assert fail.kind == expected["kind"]
    assert fail.file == expected["file"]
    assert expected["first_line_contains"] in fail.lines[0]


def test_new_warnings_ignore_moved_lines() -> None:
    base = buildlog.parse_warnings((DATA / "warnings-base.log").read_text())
    patched = buildlog.parse_warnings((DATA / "warnings-patched.log").read_text())
    assert len(base) == 2
    added = buildlog.new_warnings(base, patched)
    # the unused variable moved from line 1401 to 1407: not new; "batch" is new
    assert [(d.file.endswith("mm/vmscan.c"), d.line, "batch" in d.message) for d in added] == [
        (True, 1388, True)]


def _details(**kw: object) -> build.BuildDetails:
    return build.BuildDetails(**{"src_dir": "/src", "build_dir": "/obj", "variant": "base",
                                 "cc": "gcc", "jobs": 2, **kw})  # type: ignore[arg-type]


def test_build_details_round_trip_through_json() -> None:
    """build.json is the typed record: what one build wrote, the next one reads back."""
    from patchflow.result import details_from_json

    ws = buildlog.parse_warnings((DATA / "warnings-base.log").read_text())
    d = _details(warnings=tuple(ws), kernel_release="6.12.117")
    back = details_from_json(json.loads(json.dumps(d.to_json())))
    assert back == d and build.stored_warnings(back) == tuple(ws)


def test_locate_names_the_command_to_run(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="patchflow build SERIES --target linux-6.12.y --variant patched"):
        artefacts.locate(tmp_path, "linux-6.12.y", "patched")
    with pytest.raises(UserError):
        artefacts.artefact_dir(tmp_path, "linux-6.12.y", "other")


def test_keep_and_locate_artefacts(tmp_path: Path) -> None:
    build_dir_ = tmp_path / "obj"
    (build_dir_ / "arch/x86/boot").mkdir(parents=True)
    for rel in ("arch/x86/boot/bzImage", "vmlinux", "System.map", ".config"):
        (build_dir_ / rel).write_text(rel)
    dest = artefacts.artefact_dir(tmp_path, "t1", "base")
    artefacts.keep_artefacts(build_dir_, dest, _details(kernel_release="6.12.117",
                                                        build_dir=str(build_dir_)))
    art = artefacts.locate(tmp_path, "t1", "base")
    assert art.bzimage.read_text() == "arch/x86/boot/bzImage"
    assert art.config.read_text() == ".config"
    assert not art.module_symvers.exists()  # nothing modular: not an error
    assert art.kernel_release == "6.12.117"
    assert art.build_dir == build_dir_ and art.src_dir == Path("/src")


def test_build_reports_an_unknown_fragment_option_before_compiling(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake tree whose Kconfig lacks the option: FAIL kind "config", nothing compiled.

    make is replaced by a fake on PATH that only writes a .config (unit tier).
    """
    src, bdir, bin_ = tmp_path / "src", tmp_path / "obj", tmp_path / "bin"
    (src / "scripts/kconfig").mkdir(parents=True)
    bin_.mkdir()
    (src / "Makefile").write_text("")
    (src / "Kconfig").write_text("config ZRAM\n\tbool\n")
    (src / "scripts/kconfig/merge_config.sh").write_text("#!/bin/sh\nexit 0\n")
    fake_make = bin_ / "make"
    fake_make.write_text("#!/bin/sh\nfor a; do case $a in O=*) d=${a#O=};; esac; done\n"
                         "mkdir -p $d; echo CONFIG_ZRAM=y > $d/.config\n"
                         "case \"$*\" in *bzImage*) echo COMPILED > $d/compiled;; esac\n")
    fake_make.chmod(0o755)
    frag = tmp_path / "frag.config"
    frag.write_text("CONFIG_ZRAM=y\nCONFIG_ZRAM_BACKEND_IMAGINARY=y\n")
    monkeypatch.setenv("PATH", f"{bin_}:{os.environ['PATH']}")
    res = build.build(build.BuildRequest(src, bdir, (frag,), tmp_path / "b.log", cc=None))
    assert res.status.value == "fail"
    d = res.detail(build.BuildDetails)
    assert d is not None and d.outcome == "config"
    assert "CONFIG_ZRAM_BACKEND_IMAGINARY" in res.summary
    assert not (bdir / "compiled").exists()


def test_full_disk_while_configuring_is_an_infrastructure_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, bin_ = tmp_path / "src", tmp_path / "bin"
    src.mkdir()
    bin_.mkdir()
    (src / "Makefile").write_text("")
    fake_make = bin_ / "make"
    fake_make.write_text("#!/bin/sh\necho 'scripts/kconfig/conf: .config: No space left on device'\n"
                         "exit 2\n")
    fake_make.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}:{os.environ['PATH']}")
    res = build.build(build.BuildRequest(src, tmp_path / "obj", (), tmp_path / "b.log", cc=None))
    assert res.status.value == "error"
    d = res.detail(build.BuildDetails)
    assert d is not None and d.outcome == "enospc"
