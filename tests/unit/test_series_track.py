"""The series file ``series track`` writes: rendered, validated by the one loader, atomic."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from patchflow.config import (
    Claim,
    SeriesConfig,
    SeriesVersion,
    load_series,
    render_series,
    write_series,
)
from patchflow.errors import ConfigError
from patchflow.lore.track import add_postings, linked_versions


def _cfg(path: Path) -> SeriesConfig:
    return SeriesConfig(name=path.stem, title='mm: "quoted" \\ title ü', path=path,
                        versions=(SeriesVersion(1, ("a-1@example.com",)),
                                  SeriesVersion(2, ("b-1@example.com", "b-2@example.com"))),
                        upstream_base="deadbeef", targets=("linux-6.12.y",), author="Ädä <a@b>",
                        claim=Claim("bogo_ops_per_s", 28238.63, 35833.97,
                                    'stress-ng --vm 16 "2G"', 16, "v2 cover letter"))


def test_render_then_load_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "series" / "fx.toml"
    cfg = write_series(path, render_series(_cfg(path)))
    assert cfg == _cfg(path)
    assert load_series(path) == cfg
    assert list(path.parent.iterdir()) == [path]  # no temp file or folder left


def test_write_series_refuses_invalid(tmp_path: Path) -> None:
    path = tmp_path / "series" / "fx.toml"
    path.parent.mkdir()
    path.write_text("# the old file\n")
    bad = render_series(_cfg(path)).replace('"a-1@example.com"', '"../../etc@x"')
    with pytest.raises(ConfigError) as exc:
        write_series(path, bad)
    assert str(path) in str(exc.value) and "versions.v1[0]" in str(exc.value)
    assert path.read_text() == "# the old file\n"  # nothing replaced
    assert [p.name for p in path.parent.iterdir()] == ["fx.toml"]


def test_add_postings_appends_to_a_hand_written_file(tmp_path: Path) -> None:
    path = tmp_path / "hand.toml"
    path.write_text('# mine\ntitle = "t"\nupstream_base = ""\ntargets = []\n\n'
                    '[versions]\nv1 = "a-1@example.com"  # first\n')
    added, note = add_postings(path, {1: ["a-1@example.com"], 2: ["b-1@example.com"]})
    assert [(a.revision, a.msgid) for a in added] == [(2, "b-1@example.com")] and note == ""
    text = path.read_text()
    assert "# mine" in text and "# first" in text
    assert tomllib.loads(text)["versions"]["v2"] == ["b-1@example.com"]


def test_add_postings_rewrites_when_a_listed_revision_gets_a_repost(tmp_path: Path) -> None:
    path = tmp_path / "hand.toml"
    path.write_text('# mine\ntitle = "t"\nupstream_base = ""\ntargets = []\n\n'
                    '[versions]\nv1 = "a-1@example.com"\n')
    added, note = add_postings(path, {1: ["a-1@example.com", "a-2@example.com"]})
    assert len(added) == 1 and "comments it had were not kept" in note
    assert load_series(path).versions[0].msgids == ("a-1@example.com", "a-2@example.com")


def test_linked_versions_reads_b4_prep_links() -> None:
    cover = ("Changes in v3:\n- x\n- Link to v2: https://lore.kernel.org/r/20260326-a-v2-0-1@x.com\n"
             "Changes in v2:\n- Link to v1: https://lore.kernel.org/all/20260301-a-v1-0-2@x.com/\n"
             "- Link to v0: https://evil.example.com/../../etc/passwd\n")
    assert linked_versions(cover) == [(2, "20260326-a-v2-0-1@x.com"), (1, "20260301-a-v1-0-2@x.com")]
