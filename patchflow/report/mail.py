"""The mail draft: a plain-text reply to the series' cover letter, for the user to send."""

from __future__ import annotations

from dataclasses import dataclass

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


def render_mail(view: ReportView, tested_by: str) -> MailDraft:
    """A plain-text reply to the cover letter, to be sent by the user (never by us)."""
    s = view.series
    subject = str(s["subject"])
    if not subject.lower().startswith("re:"):
        subject = "Re: " + subject
    headers: list[tuple[str, str]] = [("Subject", subject)]
    if s.get("list"):
        headers.append(("To", str(s["list"])))
    if s.get("msgid"):
        headers += [("In-Reply-To", f"<{s['msgid']}>"), ("References", f"<{s['msgid']}>")]
    body = environment().get_template("mail.txt.j2").render(
        v=view, quoted=quote(str(s.get("cover", ""))), tested_by=tested_by,
        tested_ok=tested_ok(view))
    return MailDraft(headers=tuple(headers), body=body)
