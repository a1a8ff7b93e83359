"""Pre-images rebuilt from patch context (no base anywhere), checked with real git apply,
and the parser of git range-diff's output on a recorded sample."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from patchflow.lore.preimage import FILLER, Unreconstructable, reconstruct
from patchflow.lore.rangediff import parse_range_diff

DATA = Path(__file__).parent.parent / "data" / "range-diff"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def _series(tmp_path: Path, base: dict[str, str], steps: list[dict[str, str | None]]
            ) -> list[str]:
    """Real patches: commit *base*, then each step (path -> text, None deletes); the diffs."""
    repo = tmp_path / "src"
    repo.mkdir()
    _git(repo, "init", "-q")
    for path, text in base.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    diffs = []
    for n, step in enumerate(steps):
        for path, text in step.items():
            if text is None:
                (repo / path).unlink()
            else:
                (repo / path).write_text(text)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", f"step {n}")
        diffs.append(_git(repo, "show", "--format=", "-M", "HEAD"))
    return diffs


def _applies(tmp_path: Path, files: dict[str, str], diffs: list[str]) -> None:
    """Every diff applies in order, with full context (no fuzz), onto *files*."""
    work = tmp_path / "fake"
    work.mkdir()
    for path, text in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    for d in diffs:
        done = subprocess.run(["git", "apply", "--verbose", "-"], cwd=work, input=d, text=True,
                              capture_output=True,
                              env={**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path)})
        assert done.returncode == 0, done.stderr


FUNCS = "".join(f"int f{i}(void)\n{{\n\treturn {i};\n}}\n\n" for i in range(30))


def test_later_patch_context_comes_from_earlier_patch(tmp_path: Path) -> None:
    t1 = FUNCS.replace("return 5;", "return 55;\n\t/* new */")
    t2 = t1.replace("/* new */", "/* newer */").replace("return 20;", "return 2020;")
    diffs = _series(tmp_path, {"a.c": FUNCS}, [{"a.c": t1}, {"a.c": t2}])
    pre = reconstruct([(f"patch {i}", d) for i, d in enumerate(diffs)])
    text = pre.text("a.c")
    # f20's "return 20;" is line 103 of the base: its hunk's trailing context ends at 106,
    # the last line any patch shows (the file is open-ended there, so no more is needed)
    assert len(text.splitlines()) == 106
    assert "int f4(void)" in text  # the hunk heading, one line above the context
    assert FILLER.format(n=1) in text
    _applies(tmp_path, {"a.c": text}, diffs)


def test_end_of_file_without_newline_rename_new_and_deleted_files(tmp_path: Path) -> None:
    base = {"k/x.c": FUNCS + "tail", "k/old.c": FUNCS, "k/gone.c": "one\ntwo\n"}
    diffs = _series(tmp_path, base, [
        {"k/x.c": FUNCS + "tail changed", "k/new.c": "fresh\n", "k/gone.c": None},
        {"k/old.c": None, "k/moved.c": FUNCS.replace("return 2;", "return 22;")},
    ])
    pre = reconstruct([(f"patch {i}", d) for i, d in enumerate(diffs)])
    assert sorted(pre.length) == ["k/gone.c", "k/old.c", "k/x.c"]
    assert not pre.text("k/x.c").endswith("\n") and pre.text("k/gone.c") == "one\ntwo\n"
    _applies(tmp_path, {p: pre.text(p) for p in pre.length}, diffs)


def test_contradicting_context_is_named(tmp_path: Path) -> None:
    diffs = _series(tmp_path, {"a.c": FUNCS}, [{"a.c": FUNCS.replace("return 5;", "return 6;")}])
    bad = diffs[0].replace(" int f5(void)", " int f5(long)")
    with pytest.raises(Unreconstructable, match=r"patch 2 \(a.c\): .*two patches disagree"):
        reconstruct([("patch 1", diffs[0]), ("patch 2", bad)])


def test_binary_patch_is_named() -> None:
    diff = ("diff --git a/fw.bin b/fw.bin\nindex 1111111..2222222 100644\n"
            "Binary files a/fw.bin and b/fw.bin differ\n")
    with pytest.raises(Unreconstructable, match="patch 1: binary patch of fw.bin"):
        reconstruct([("patch 1", diff)])


def test_parse_recorded_range_diff() -> None:
    # recorded with git 2.39.5: `git range-diff base..v1 base..v3` on the fixture commits
    entries = parse_range_diff((DATA / "dropped-added.txt").read_text())
    assert [(e.old, e.new, e.mark) for e in entries] == [
        (1, 1, "="), (2, 2, "="), (3, None, "<"), (None, 3, ">")]
    assert entries[3].subject == "mm: clamp reclaim_9 to the low watermark"
    entries = parse_range_diff((DATA / "changed.txt").read_text())
    changed = next(e for e in entries if e.mark == "!")
    assert "-+\treturn x * 7;" in changed.interdiff.splitlines()
