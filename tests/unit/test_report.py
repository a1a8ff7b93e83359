"""Report rendering against golden files, statistics, merging and the mail draft.

Regenerate the golden files after an intended change with
``PATCHFLOW_REGEN_GOLDEN=1 pytest tests/unit/test_report.py`` and review the diff.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from patchflow.cli import cli
from patchflow.report import view as report

DATA = Path(__file__).resolve().parents[1] / "data" / "report"
CASES = sorted(p for p in DATA.iterdir() if p.is_dir())
TESTER = "Ada Tester <ada@example.org>"


def _golden(path: Path, text: str) -> None:
    if os.environ.get("PATCHFLOW_REGEN_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"differs from {path}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case: Path) -> None:
    (_, doc), = report.load_results([case / "results.json"])
    view = report.build_view(doc)
    _golden(case / "report.html", report.render_html(view))
    _golden(case / "summary.md", report.render_markdown(view))
    _golden(case / "mail.txt", report.render_mail(view, TESTER).as_text())


def _doc(name: str = "two-targets") -> dict[str, Any]:
    return json.loads((DATA / name / "results.json").read_text())


def test_mail_threading_headers() -> None:
    mail = report.render_mail(report.build_view(_doc()), TESTER)
    headers = dict(mail.headers)
    assert headers["Subject"] == "Re: [PATCH v3 0/2] mm: batch TLB flushing for dirty folios in vmscan"
    assert headers["In-Reply-To"] == "<20260410-batch-tlb-flush-v3-0-ff0b9d3a351a@icloud.com>"
    assert headers["References"] == headers["In-Reply-To"]
    assert f"Tested-by: {TESTER}" in mail.body
    assert "> Reclaim of dirty file folios" in mail.body


def test_mail_withholds_tested_by_on_a_regression() -> None:
    doc = _doc()
    for r in doc["results"]:
        if (r["target"], r["stage"]) == ("linux-6.12.y", "boot"):
            r["status"], r["summary"] = "fail", "Oops: general protection fault"
    body = report.render_mail(report.build_view(doc), TESTER).body
    assert "Tested-by: " not in body
    assert "No Tested-by from me" in body


def test_significance() -> None:
    up = report.compare("bogo_ops_per_s", [100, 101, 99, 100, 102], [110, 111, 109, 112, 110])
    assert up.significant and up.verdict == "better"
    assert up.ci_low_pct is not None and 8 < up.ci_low_pct < up.change_pct < up.ci_high_pct  # type: ignore[operator]
    flat = report.compare("bogo_ops_per_s", [100, 110, 90, 105, 95], [101, 111, 89, 104, 97])
    assert not flat.significant and flat.verdict == "no significant change"
    worse = report.compare("tlb_shootdowns", [100, 101, 99], [150, 149, 151])
    assert worse.verdict == "worse"
    lone = report.compare("call_ipis", [100], [50])
    assert lone.ci_low_pct is None and not lone.significant


def test_merge_keeps_one_verdict(tmp_path: Path) -> None:
    doc = _doc()
    a, b = copy.deepcopy(doc), copy.deepcopy(doc)
    a["results"] = [r for r in doc["results"] if r["target"] != "linux-6.12.y"]
    a["verdict"] = {"exit_code": 1, "status": "fail"}
    b["results"] = [r for r in doc["results"] if r["target"] == "linux-6.12.y"]
    b["verdict"] = {"exit_code": 0, "status": "pass"}
    b["finished"] += 10
    for name, d in (("job-a", a), ("job-b", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(d))
    merged = report.merge_results(report.load_results([tmp_path]), base_dir=tmp_path / "out")
    assert merged["verdict"] == {"exit_code": 1, "status": "fail"}
    assert len(merged["results"]) == len(doc["results"])
    assert merged["targets"] == ["linux-6.1.y", "linux-6.12.y"]
    bp = next(r for r in merged["results"] if r["stage"] == "backport"
              and r["target"] == "linux-6.1.y")
    assert bp["log"] == "../job-a/linux-6.1.y/backport.log"


def test_report_cli_merge_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["report", "--merge", str(DATA / "two-targets"), "--out",
                                   str(tmp_path / "out"), "--verdict", "--mail",
                                   "--tested-by", TESTER])
    assert res.exit_code == 1, res.output
    assert (tmp_path / "out" / "report.html").exists()
    assert "Tested-by: " + TESTER in (tmp_path / "out" / "mail.txt").read_text()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["verdict"]["exit_code"] == 1


def test_html_is_self_contained() -> None:
    html = report.render_html(report.build_view(_doc()))
    for needle in ("http://", "https://", "src=", "<link", "@import"):
        assert needle not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_schema_is_checked(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"schema": "other/1"}')
    with pytest.raises(report.UserError, match="not a patchflow.results/1 file"):
        report.load_results([tmp_path / "results.json"])
