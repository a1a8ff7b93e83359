"""Strict config validation: every fault names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchflow.config import ConfigDir, check_msgid, load_series, load_target
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
    assert cfg.target_names() == ["linux-6.1.y", "linux-6.12.y", "linux-6.18.y", "linux-6.6.y"]
    for t in cfg.all_targets():
        assert t.git.branch == t.name
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
