"""Parsing what b4 produced: recorded b4 logs and a recorded am-ready mbox."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from patchflow.errors import SeriesError
from patchflow.lore.series import (
    PatchRow,
    b4_am_argv,
    b4_env,
    classify_b4_failure,
    parse_am_mbox,
    parse_b4_output,
    parse_subject,
    parse_trailers,
)

DATA = Path(__file__).parent.parent / "data" / "b4"


@pytest.mark.parametrize("log", sorted(DATA.glob("*.log")), ids=lambda p: p.stem)
def test_b4_logs(log: Path) -> None:
    text = log.read_text()
    expect = re.search(r"^EXPECT missing=\[(.*)\] overall=(\w+) signers=(.*)$", text, re.M)
    assert expect
    missing, att = parse_b4_output(text)
    assert list(missing) == [int(x) for x in expect.group(1).split(",") if x]
    assert att["overall"] == expect.group(2)
    signers = ",".join(f"{s['status']}:{s['identity']}" for s in att["signers"])
    assert signers == expect.group(3)


@pytest.mark.parametrize("subject,parsed", [
    ("[PATCH v2 3/5] mm: foo", (2, 3, 5, "mm: foo")),
    ("[PATCH 0/2] mm: cover", (1, 0, 2, "mm: cover")),
    ("[RFC PATCH v4 1/1] x: y", (4, 1, 1, "x: y")),
    ("[PATCH RESEND v3 02/10] a:\n b", (3, 2, 10, "a: b")),
    ("mm: plain", (1, 1, 1, "mm: plain")),
])
def test_parse_subject(subject: str, parsed: tuple[int, int, int, str]) -> None:
    assert parse_subject(subject) == parsed


def test_trailers_only_from_last_paragraph() -> None:
    msg = ("mm: x\n\nReviewed-by: in the body, not a trailer\nsome text\n\n"
           "Fixes: 1234567890ab (\"mm: y\")\nReviewed-by: R <r@x>\nSigned-off-by: A <a@x>\n"
           "Not-a-trailer because lower: case\n")
    assert parse_trailers(msg) == ('Fixes: 1234567890ab ("mm: y")', "Reviewed-by: R <r@x>",
                                   "Signed-off-by: A <a@x>")


def test_parse_recorded_mbox() -> None:
    posting = parse_am_mbox((DATA / "three.mbx").read_bytes(), (DATA / "three.cover").read_bytes())
    assert posting.revision == 2
    assert posting.msgid == "cover.1795726576.git.a@example.com"
    assert posting.posted == "2026-11-26T20:56:16Z"
    assert [p.subject for p in posting.patches] == ["mm: change 1", "mm: change 2", "mm: change 3"]
    assert [p.files for p in posting.patches] == [("f.c",)] * 3
    assert len({p.patch_id for p in posting.patches}) == 3
    assert posting.missing == ()


def test_missing_patch_detected_from_mbox_even_if_b4_is_silent() -> None:
    raw = (DATA / "three.mbx").read_bytes()
    msgs = raw.split(b"\nFrom git@z ")
    without_two = msgs[0] + b"\nFrom git@z " + msgs[2]
    posting = parse_am_mbox(without_two, None, "")
    assert posting.missing == (2,)


def test_corrupt_diff_names_patch() -> None:
    raw = (DATA / "three.mbx").read_bytes().replace(b"@@ -1,3 +1,4 @@", b"@@ -1,3 +1,9 @@", 1)
    with pytest.raises(SeriesError, match=r'patch 1/3 "mm: change 1": corrupt diff'):
        parse_am_mbox(raw, None)


def test_b4_argv_never_lets_msgid_be_an_option(tmp_path: Path) -> None:
    argv = b4_am_argv("x@y", tmp_path, "series", revision=3, check_newer=True)
    assert argv == ["b4", "am", "-C", "-o", str(tmp_path), "-n", "series", "-v", "3", "-c",
                    "--", "x@y"]


def test_b4_env_points_at_mirror(tmp_path: Path) -> None:
    env = b4_env("http://127.0.0.1:8080/linux-mm/%s", tmp_path)
    pairs = {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"]
             for i in range(int(env["GIT_CONFIG_COUNT"]))}
    assert pairs["b4.midmask"] == "http://127.0.0.1:8080/linux-mm/%s"
    assert pairs["b4.searchmask"] == "http://127.0.0.1:8080/linux-mm/?x=m&q=%s"
    assert pairs["b4.attestation-checkmarks"] == "simple"


@pytest.mark.parametrize("output,kind,text", [
    ("Could not retrieve thread: Server returned an error: 404", "NotFound", "not found"),
    ("Could not retrieve thread: All hosts failed for http://x", "MirrorError", "unreachable"),
    ("Analyzing 1 messages in the thread\nNo patches found.", "SeriesError", "not a patch series"),
    ("something else entirely", "MirrorError", "b4 failed"),
])
def test_classify_b4_failure(output: str, kind: str, text: str) -> None:
    err = classify_b4_failure("a@b", "http://m/%s", output)
    assert type(err).__name__ == kind
    assert text in str(err)


def _row(idx: int, subject: str, pid: str) -> PatchRow:
    return PatchRow(idx=idx, total=3, subject=subject, author="a", msgid=f"{idx}@x", patch_id=pid,
                    trailers=[], attestation="none", files=[])


def _text(subject: str, line: str) -> str:
    body = "\n".join(f"+{line} {i} {subject}" for i in range(8))
    return (f"From: a <a@x>\nSubject: [PATCH] {subject}\n\n{subject} explained\n---\n"
            f"diff --git a/{line}.c b/{line}.c\n--- a/{line}.c\n+++ b/{line}.c\n"
            f"@@ -1,1 +1,8 @@\n-a\n{body}\n")


def test_range_diff_is_gits_on_reconstructed_bases(tmp_path: Path) -> None:
    """No base anywhere: pre-images are rebuilt from the patches and git pairs them
    (the row subjects are not used: "mm: a renamed" is the same mail, so "=")."""
    from patchflow.lore.rangediff import range_diff
    from patchflow.workspace import Workspace

    old = [(_row(1, "mm: a", "p1"), _text("mm: a", "x")),
           (_row(2, "mm: b", "p2"), _text("mm: b", "y")),
           (_row(3, "mm: gone", "p3"), _text("mm: gone", "z"))]
    new = [(_row(1, "mm: a renamed", "p1"), _text("mm: a", "x")),
           (_row(2, "mm: b", "p9"), _text("mm: b", "y")[:-3] + "2\n"),
           (_row(3, "mm: new", "p7"), _text("mm: new", "q"))]
    ws = Workspace.open(tmp_path / "ws", tmp_path)
    rd = range_diff(ws, (1, "", old), (2, "", new))
    marks = sorted(((e.old, e.new, e.mark) for e in rd.entries), key=str)
    assert marks == sorted([(1, 1, "="), (2, 2, "!"), (3, None, "<"), (None, 3, ">")], key=str)
    assert rd.old.kind == "reconstructed" and rd.old.reconstructed == ("x.c", "y.c", "z.c")


def test_range_diff_says_when_a_preimage_cannot_be_rebuilt(tmp_path: Path) -> None:
    from patchflow.lore.rangediff import range_diff
    from patchflow.workspace import Workspace

    binary = ("From: a <a@x>\nSubject: [PATCH] fw: update\n\nNew firmware.\n---\n"
              "diff --git a/fw.bin b/fw.bin\nindex 1234567..89abcde 100644\n"
              "GIT binary patch\nliteral 1\nIcmZpX0000A00II\n\nliteral 1\nIcmZpX0000A00II\n\n")
    old = [(_row(1, "mm: a", "p1"), _text("mm: a", "x"))]
    new = [(_row(1, "fw: update", "p2"), binary)]
    ws = Workspace.open(tmp_path / "ws", tmp_path)
    with pytest.raises(SeriesError, match=r"v2 patch 1/3 \(fw.bin\)|v2 patch 1/3: binary patch"):
        range_diff(ws, (1, "", old), (2, "", new))
    assert not list((ws.root / "tmp").iterdir())  # the throwaway repository is gone
