"""The mail draft: a plain-text reply-all to the series' cover letter, for the user to send.

Reply-all as kernel lists expect it (:func:`reply_headers`): threaded to the
cover letter (In-Reply-To and References), To the author, Cc the list and
everybody the cover letter went to, From the configured identity (``git
config sendemail.from``, else ``user.name``/``user.email``); the sender is
never Cc'd to themselves.  Numbers are called medians where they are
(tests/unit/test_mail.py runs it on a recorded thread).
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from patchflow.report.render import environment
from patchflow.report.view import ReportView


@dataclass(frozen=True)
class MailDraft:
    headers: tuple[tuple[str, str], ...]
    body: str

    def as_text(self) -> str:
        return "".join(f"{k}: {v}\n" for k, v in self.headers) + "\n" + self.body


def quote(text: str, limit: int = 12) -> str:
    """The first *limit* lines of *text*, quoted the way mail clients do."""
    lines = text.strip("\n").splitlines()
    cut = lines[:limit]
    out = "\n".join((f"> {ln}" if ln else ">") for ln in cut)
    return out + ("\n> [...]" if len(lines) > limit else "")


#: stages whose failure says nothing against the series itself: a backport
#: conflict on an older branch is a stable-maintainer matter, not a bug
NOT_AGAINST_SERIES = frozenset({"check-newer", "backport"})


def tested_ok(view: ReportView) -> bool:
    """True when a Tested-by is honest: something ran, and nothing that ran on it failed."""
    ran = False
    for row in view.matrix:
        for stage, cell in zip(view.stages, row.cells, strict=True):
            if cell is None or stage in NOT_AGAINST_SERIES:
                continue
            if cell.status in ("fail", "error"):
                return False
            ran |= cell.status in ("pass", "warn")
    return ran


def _address(who: str) -> str:
    return email.utils.parseaddr(who)[1].lower()


def _unique(people: Sequence[str], drop: set[str]) -> list[str]:
    out, seen = [], set(drop)
    for p in people:
        a = _address(p)
        if a and a not in seen:
            seen.add(a)
            out.append(p)
    return out


def reply_headers(series: Mapping[str, Any], sender: str | None) -> list[tuple[str, str]]:
    """From, To, Cc, Subject, In-Reply-To and References of a reply-all to the cover letter."""
    subject = str(series["subject"])
    if not subject.lower().startswith("re:"):
        subject = "Re: " + subject
    author, mlist = str(series.get("author") or ""), str(series.get("list") or "")
    me = {_address(sender)} if sender else set()
    # a reply to one's own cover letter goes To the list
    to = _unique([author] if author else [], me) or _unique([mlist], me)
    cc = _unique([mlist, *[str(c) for c in series.get("cc") or ()]], me | {_address(t) for t in to})
    headers: list[tuple[str, str]] = [("From", sender)] if sender else []
    headers += [("To", ", ".join(to))] if to else []
    headers += [("Cc", ", ".join(cc))] if cc else []
    headers.append(("Subject", subject))
    if series.get("msgid"):
        headers += [("In-Reply-To", f"<{series['msgid']}>"), ("References", f"<{series['msgid']}>")]
    return headers


def render_mail(view: ReportView, tested_by: str, sender: str | None = None) -> MailDraft:
    """A plain-text reply-all to the cover letter, to be sent by the user (never by us);
    From *sender* (the configured identity; *tested_by* when not given)."""
    s = view.series
    headers = reply_headers(s, sender or tested_by)
    body = environment().get_template("mail.txt.j2").render(
        v=view, quoted=quote(str(s.get("cover", ""))), tested_by=tested_by,
        tested_ok=tested_ok(view))
    return MailDraft(headers=tuple(headers), body=body)
