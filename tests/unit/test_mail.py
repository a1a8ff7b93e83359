"""The mail draft's reply-all etiquette, on a thread recorded with ``b4 mbox`` from a
public-inbox (tests/data/mail/thread.mbox: a cover letter with To and Cc, a patch, a reply)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

from patchflow.gate import records
from patchflow.lore.series import recipients_of
from patchflow.report.mail import render_mail
from patchflow.report.view import build_view

DATA = Path(__file__).resolve().parents[1] / "data"
COVER = "20260326-batch-tlb-flush-v2-0-rec1@icloud.example"
ME = "Ada Tester <ada@example.org>"


def _view(cc: tuple[str, ...]):  # type: ignore[no-untyped-def]
    doc = records.load_results([DATA / "report" / "demo-6.12" / "results.json"])[0][1]
    series = dataclasses.replace(
        doc.series, author="Zhang Peng <zhangpeng@icloud.example>", msgid=COVER,
        list_address="linux-mm@kvack.org", cc=cc,
        subject="[PATCH v2 0/2] mm: batch TLB flushing for dirty folios in vmscan")
    return build_view(dataclasses.replace(doc, series=series))


def test_recipients_of_the_recorded_cover_letter() -> None:
    r = recipients_of((DATA / "mail" / "thread.mbox").read_bytes(), COVER)
    assert r is not None
    assert r.to == ("Andrew Morton <akpm@linux-foundation.example>",)
    assert r.cc == ("linux-mm@kvack.org", "linux-kernel@vger.kernel.example",
                    "Kairui Song <kasong@tencent.example>", "Barry Song <baohua@kernel.example>")
    assert r.list_address == "linux-mm@kvack.org"  # from the archive's List-Id
    assert recipients_of((DATA / "mail" / "thread.mbox").read_bytes(), "nope@x") is None


def test_reply_all_to_the_cover_letter() -> None:
    r = recipients_of((DATA / "mail" / "thread.mbox").read_bytes(), COVER)
    assert r is not None
    mail = render_mail(_view(r.everyone), ME)
    h = dict(mail.headers)
    assert [k for k, _ in mail.headers] == ["From", "To", "Cc", "Subject", "In-Reply-To",
                                            "References"]
    assert h["From"] == ME
    assert h["To"] == "Zhang Peng <zhangpeng@icloud.example>"
    assert h["Cc"] == ("linux-mm@kvack.org, Andrew Morton <akpm@linux-foundation.example>, "
                       "linux-kernel@vger.kernel.example, Kairui Song <kasong@tencent.example>, "
                       "Barry Song <baohua@kernel.example>")
    assert h["In-Reply-To"] == h["References"] == f"<{COVER}>"
    assert h["Subject"] == "Re: [PATCH v2 0/2] mm: batch TLB flushing for dirty folios in vmscan"
    # the numbers are medians of the runs, and the mail says so
    assert "median change" in mail.body


def test_the_sender_is_not_copied_to_themselves() -> None:
    r = recipients_of((DATA / "mail" / "thread.mbox").read_bytes(), COVER)
    assert r is not None
    kairui = "Kairui Song <KASONG@tencent.example>"
    h = dict(render_mail(_view(r.everyone), kairui).headers)
    assert h["From"] == kairui and "kasong@" not in h["Cc"].lower()


def test_from_is_sendemail_from_else_user_email(tmp_path: Path) -> None:
    from patchflow import gitrepo

    assert gitrepo.identity() == "Test User <user@example.com>"  # tests/conftest.py's
    subprocess.run(["git", "config", "--global", "sendemail.from", "Ada <ada@kernel.example>"],
                   check=True)
    assert gitrepo.identity() == "Ada <ada@kernel.example>"


def test_a_reply_to_ones_own_cover_letter_goes_to_the_list() -> None:
    h = dict(render_mail(_view(()), "Zhang Peng <ZhangPeng@icloud.example>").headers)
    assert h["To"] == "linux-mm@kvack.org" and "Cc" not in h
