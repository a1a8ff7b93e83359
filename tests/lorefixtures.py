"""Builds fixture patch series with real ``git format-patch`` for the mirror tests.

Each series is a small C project with real commits; every posting is a
b4-style thread (cover letter, numbered patches, deterministic message-ids,
In-Reply-To/References) that :class:`patchflow.mirror.LocalLore` serves.
"""

from __future__ import annotations

import email
import email.policy
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

LIST = "linux-mm@kvack.org"
AUTHOR = "Ada Dev <ada@example.com>"
COVER_SUBJECT = "mm: batch things in the fixture"


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    import os

    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}).stdout


@dataclass
class Thread:
    revision: int
    cover_msgid: str
    messages: list[bytes]

    def msgid(self, n: int) -> str:
        return self.cover_msgid.replace("-0-", f"-{n}-")


def base_repo(root: Path) -> Path:
    repo = root / "src"
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "mm").mkdir()
    (repo / "mm" / "vmscan.c").write_text(
        "".join(f"static int reclaim_{i}(int x)\n{{\n\treturn x + {i};\n}}\n\n" for i in range(12)))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    git(repo, "tag", "base")
    return repo


def make_thread(repo: Path, out: Path, revision: int, changes: list[tuple[str, int, str]],
                date: str, tag: str, blurb: str = "") -> Thread:
    """Commit *changes* (subject, function index, new body) on a branch off base; format it."""
    branch = f"v{revision}-{tag}"
    git(repo, "checkout", "-q", "-B", branch, "base")
    env = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date,
           "GIT_AUTHOR_NAME": "Ada Dev", "GIT_AUTHOR_EMAIL": "ada@example.com"}
    for subject, idx, new in changes:
        path = repo / "mm" / "vmscan.c"
        text = path.read_text()
        text = re.sub(rf"(static int reclaim_{idx}\(int x\)\n{{\n)\treturn [^\n]*\n",
                      lambda m, new=new: m.group(1) + new, text)
        path.write_text(text)
        git(repo, "commit", "-qam", subject, "-m", f"Body of {subject}.",
            "-m", "Signed-off-by: Ada Dev <ada@example.com>", env=env)
    pdir = out / branch
    git(repo, "format-patch", "-q", "--cover-letter", f"-v{revision}", "--thread=shallow",
        "-o", str(pdir), "base", env=env)
    files = sorted(pdir.glob("*.patch"))
    cover = f"20261101-fixture-v{revision}-0-{tag}@example.com"
    msgs = []
    for n, f in enumerate(files):
        msg = email.message_from_bytes(f.read_bytes(), policy=email.policy.compat32)
        for h in ("Message-Id", "In-Reply-To", "References"):
            del msg[h]
        msg["Message-Id"] = f"<{cover.replace('-0-', f'-{n}-')}>"
        if n:
            msg["In-Reply-To"] = f"<{cover}>"
            msg["References"] = f"<{cover}>"
        msg["To"] = LIST
        if n == 0:
            msg.replace_header("Subject", f"[PATCH v{revision} 0/{len(files) - 1}] {COVER_SUBJECT}")
            body = str(msg.get_payload())
            body = body.replace("*** SUBJECT HERE ***", COVER_SUBJECT)
            body = body.replace("*** BLURB HERE ***", blurb or f"Version {revision} of the fixture.")
            msg.set_payload(body)
        msgs.append(msg.as_bytes())
    return Thread(revision, cover, msgs)


V1 = [("mm: refactor reclaim_3", 3, "\treturn x + 3 + 0;\n"),
      ("mm: batch reclaim_7", 7, "\treturn x * 7;\n")]
V2 = [("mm: refactor reclaim_3", 3, "\treturn x + 3 + 0;\n"),
      ("mm: split reclaim_5", 5, "\treturn x - 5;\n"),
      ("mm: batch reclaim_7", 7, "\treturn x * 7 + 1;\n")]
V3 = [("mm: refactor reclaim_3", 3, "\treturn x + 3 + 0;\n"),
      ("mm: split reclaim_5", 5, "\treturn x - 5;\n"),
      ("mm: batch reclaim_7", 7, "\treturn x * 7 + 2;\n")]


@dataclass
class Fixtures:
    v1: Thread
    v2: Thread
    v2_repost: Thread
    v3: Thread
    partial: Thread  # 2/3 missing
    corrupt: Thread
    chatter: bytes


def build(root: Path) -> Fixtures:
    repo = base_repo(root)
    out = root / "threads"
    v1 = make_thread(repo, out, 1, V1, "2026-11-01T10:00:00+00:00", "aaa111")
    v2 = make_thread(repo, out, 2, V2, "2026-11-05T10:00:00+00:00", "bbb222")
    v2b = make_thread(repo, out, 2, V2, "2026-11-05T12:00:00+00:00", "bbb333",
                      blurb="Version 2 again: the first posting lost the Cc list.")
    v3 = make_thread(repo, out, 3, V3, "2026-11-09T10:00:00+00:00", "ccc444")
    partial = make_thread(repo, out, 1, V2, "2026-10-01T10:00:00+00:00", "ddd555")
    partial.messages.pop(2)  # patch 2/3 never reached the list
    corrupt = make_thread(repo, out, 1, V1, "2026-10-02T10:00:00+00:00", "eee666")
    corrupt.messages[1] = corrupt.messages[1].replace(b"@@ -", b"@@ -x")
    chatter = (b"From: Bob <bob@example.com>\nTo: linux-mm@kvack.org\n"
               b"Subject: question about reclaim\nMessage-Id: <chatter-1@example.com>\n"
               b"Date: Mon, 02 Nov 2026 10:00:00 +0000\n\nIs anybody batching TLB flushes?\n")
    return Fixtures(v1, v2, v2b, v3, partial, corrupt, chatter)
