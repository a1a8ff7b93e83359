"""Rendering a report: ``report.html``, ``summary.md`` and ``mail.txt`` into a folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

from patchflow import templates
from patchflow.gate.records import ResultsDoc
from patchflow.report.plots import fmt_num
from patchflow.report.view import ReportView, build_view, fmt_frac, problems
from patchflow.workspace import atomic_write, atomic_write_json


def environment() -> jinja2.Environment:
    env = templates.environment("report")
    env.filters["pct"] = fmt_frac
    env.filters["num"] = fmt_num
    env.globals["problems"] = problems
    return env


def render_html(view: ReportView) -> str:
    return environment().get_template("report.html.j2").render(v=view)


def render_markdown(view: ReportView) -> str:
    return environment().get_template("summary.md.j2").render(v=view)


@dataclass(frozen=True)
class Written:
    html: Path
    markdown: Path
    results: Path | None
    mail: Path | None
    junit: Path | None = None


def write_report(doc: ResultsDoc, out_dir: Path, *, tested_by: str | None = None,
                 write_results: bool = False) -> Written:
    """Render report.html and summary.md into *out_dir*.

    With *write_results* (a merged report) also the merged ``results.json`` and
    ``junit.xml``, the files a CI engine's report job publishes; with
    *tested_by* a reply to the series thread, ``mail.txt``.
    """
    from patchflow.gate.records import junit_xml
    from patchflow.report.mail import render_mail

    view = build_view(doc)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "report.html", render_html(view))
    atomic_write(out_dir / "summary.md", render_markdown(view))
    res = mail = junit = None
    if write_results:
        res = out_dir / "results.json"
        atomic_write_json(res, doc.to_json())
        junit = out_dir / "junit.xml"
        atomic_write(junit, junit_xml(doc))
    if tested_by is not None:
        mail = out_dir / "mail.txt"
        atomic_write(mail, render_mail(view, tested_by).as_text())
    return Written(out_dir / "report.html", out_dir / "summary.md", res, mail, junit)
