"""Strict config validation: every fault names the file and the key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from patchflow.config import (
    ConfigDir,
    WorkspaceConfig,
    check_msgid,
    check_ref_name,
    load_series,
    load_target,
    load_workspace_config,
    with_env,
)
from patchflow.errors import ConfigError, NotFound

DATA = Path(__file__).parent.parent / "data" / "config"
REPO = Path(__file__).resolve().parent.parent.parent


@pytest.mark.parametrize("path", sorted(DATA.glob("*.toml")), ids=lambda p: p.stem)
def test_faulty_config_is_named(path: Path) -> None:
    expect = path.read_text().splitlines()[0].removeprefix("# EXPECT: ")
    loader = load_series if path.name.startswith("series-") else load_target
    with pytest.raises(ConfigError) as err:
        loader(path)
    assert expect in str(err.value)
    assert str(path) in str(err.value)


def test_shipped_config_is_valid() -> None:
    cfg = ConfigDir(REPO)
    assert cfg.target_names() == ["debian12-cloud-6.1", "debian12-cloud-6.12", "linux-6.1.y",
                                  "linux-6.12.y", "linux-6.18.y", "linux-6.6.y"]
    for t in cfg.all_targets():
        if t.distro is not None:
            assert t.git is None and not t.kconfig and t.provider == "distro"
            continue
        assert t.git is not None and t.git.branch == t.name
        assert t.kconfig and all(p.is_file() for p in t.kconfig)
    s = cfg.series("batch-tlb-flush")
    assert [v.revision for v in s.versions] == [2, 3]
    assert s.version(2).msgids == (
        "20260326-batch-tlb-flush-v2-0-403e523325c4@icloud.com",
        "20260326-batch-tlb-flush-v2-0-989ba60f970d@icloud.com")
    assert set(s.targets) <= set(cfg.target_names())
    for s in cfg.all_series():
        assert set(s.targets) <= set(cfg.target_names()), s.name


def test_unknown_names_are_not_found() -> None:
    cfg = ConfigDir(REPO)
    with pytest.raises(NotFound, match="unknown target 'linux-5.4.y'"):
        cfg.target("linux-5.4.y")
    with pytest.raises(NotFound, match="invalid series name"):
        cfg.series("../../etc/passwd")


@pytest.mark.parametrize("raw,clean", [
    ("<a.b@example.com>", "a.b@example.com"),
    ("https://lore.kernel.org/all/20260326-x-v2-0-403e@icloud.com/", "20260326-x-v2-0-403e@icloud.com"),
    ("https://lore.kernel.org/r/abc@def.org", "abc@def.org"),
    ("id:foo@bar", "foo@bar"),
])
def test_msgid_normalised(raw: str, clean: str) -> None:
    assert check_msgid(raw) == clean


@pytest.mark.parametrize("hostile", [
    "a;rm -rf /@x", "$(id)@x", "`id`@x", "a@../../etc", "../a@b", "a/b@c", "a b@c", "a|b@c",
    "no-at-sign", "a@b/c", "-rf@x", "a\n@b",
])
def test_msgid_rejects_hostile(hostile: str) -> None:
    with pytest.raises(ValueError):
        check_msgid(hostile)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("remote", "--upload-pack=touch /tmp/pwned;", "not a git remote patchflow fetches from"),
    ("remote", "ext::sh -c touch% /tmp/pwned", "not a git remote patchflow fetches from"),
    ("branch", "--force", "not a valid branch name"),
    ("branch", "a..b", "not a valid branch name"),
    ("base_config", "--eval=$(shell touch /tmp/pwned)", "not a kernel config target"),
])
def test_values_that_reach_argv(tmp_path: Path, key: str, value: str, message: str) -> None:
    """Target TOML values end up in git's and make's argv: refused where they enter."""
    (tmp_path / "kconfig").mkdir()
    (tmp_path / "kconfig" / "a.config").write_text("CONFIG_X=y\n")
    fields = {"remote": "https://git.kernel.org/x.git", "branch": "linux-6.1.y",
              "base_config": "tinyconfig", key: value}
    t = tmp_path / "t.toml"
    t.write_text(f'arch = "x86_64"\nkconfig = ["kconfig/a.config"]\n'
                 f'base_config = {json.dumps(fields["base_config"])}\n[git]\n'
                 f'remote = {json.dumps(fields["remote"])}\nbranch = {json.dumps(fields["branch"])}\n')
    with pytest.raises(ConfigError, match=message):
        load_target(t)


def test_fragments_stay_inside_the_config_dir(tmp_path: Path) -> None:
    (tmp_path / "targets").mkdir()
    t = tmp_path / "targets" / "t.toml"
    for frag in ("/etc/passwd", "../../etc/passwd"):
        t.write_text(f'arch = "x86_64"\nkconfig = ["{frag}"]\n[git]\nremote = "/r"\n'
                     'branch = "main"\n')
        with pytest.raises(ConfigError, match=r"kconfig\[0\]: fragment .* is outside"):
            load_target(t)


@pytest.mark.parametrize("name", ["linux-6.1.y", "main", "patchflow/x/y", "a.b_c", "-x", "a..b",
                                  "a b", "x.lock", "a/.hidden", "a//b", "a@{1}", "/a", "a/",
                                  "a:b", "a~1", "a^", "a?", "a*", "a[", "a\\b", ".x"])
def test_ref_names_as_git_checks_them(name: str) -> None:
    """The Python rules say what `git check-ref-format --branch` says."""
    import subprocess

    # the plain ref rules (--branch would expand "@" and "@{-1}" against a repository)
    git_ok = subprocess.run(["git", "check-ref-format", f"refs/heads/{name}"],
                            capture_output=True).returncode == 0 and not name.startswith("-")
    try:
        check_ref_name(name)
        ours = True
    except ValueError:
        ours = False
    assert ours == git_ok, name


def test_ref_names_stricter_than_git_where_git_would_expand_them() -> None:
    # "@" is HEAD to `git checkout`/`--branch`; "-x" would be an option
    for name in ("@", "-x"):
        with pytest.raises(ValueError):
            check_ref_name(name)


def test_env_overrides_are_parsed_and_validated(tmp_path: Path) -> None:
    cfg = with_env(WorkspaceConfig(), {"PATCHFLOW_BENCH_REPS": "7", "PATCHFLOW_ACCEL": "tcg",
                                       "PATCHFLOW_MIRROR": "http://127.0.0.1:9/l/%s"})
    assert cfg.bench.reps == 7 and cfg.bench.accel == "tcg"
    assert cfg.lore.midmask == "http://127.0.0.1:9/l/%s"
    for var, value, why in (("PATCHFLOW_BENCH_REPS", "five", "expected a whole number"),
                            ("PATCHFLOW_BENCH_REPS", "99999", "0 (the profile's) to 512"),
                            ("PATCHFLOW_ACCEL", "xen", "expected auto, kvm or tcg"),
                            ("PATCHFLOW_MIRROR", "lore", "URL mask containing %s"),
                            ("PATCHFLOW_BENCH_PROFILE", "../x", "invalid profile name")):
        with pytest.raises(ConfigError, match=rf"\${var}: .*{re.escape(why)}"):
            with_env(WorkspaceConfig(), {var: value})
    (tmp_path / "config.toml").write_text("[bench]\nreps = 3\nsurprise = 1\n")
    with pytest.raises(ConfigError, match="bench.surprise: unknown key"):
        load_workspace_config(tmp_path / "config.toml")


def test_binary_and_directory_toml_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_target(tmp_path / "bin.toml")
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        load_series(tmp_path / "dir.toml")
