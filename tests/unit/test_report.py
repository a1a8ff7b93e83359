"""Report rendering from a recorded gate run: golden files, what the report shows, merging, mail.

Regenerate the golden files after an intended change with
``PATCHFLOW_REGEN_GOLDEN=1 pytest tests/unit/test_report.py`` and review the diff;
re-record the run itself as tests/data/report/README.md says.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from markupsafe import escape

from patchflow.bench.ab import BenchDetails
from patchflow.cli import cli
from patchflow.config import Claim
from patchflow.errors import UserError
from patchflow.gate import records
from patchflow.gate.records import ResultsDoc
from patchflow.livepatch.results import LivepatchBuildDetails, LivepatchVerifyDetails
from patchflow.report.mail import render_mail
from patchflow.report.render import render_html, render_markdown
from patchflow.report.view import build_view
from patchflow.result import StageResult, Status

DATA = Path(__file__).resolve().parents[1] / "data" / "report"
CASES = sorted(p for p in DATA.iterdir() if p.is_dir())
TESTER = "Ada Tester <ada@example.org>"


def _golden(path: Path, text: str) -> None:
    if os.environ.get("PATCHFLOW_REGEN_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"differs from {path}"


def _doc(name: str = "demo-6.12") -> ResultsDoc:
    return records.load_results([DATA / name / "results.json"])[0][1]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case: Path) -> None:
    (_, doc), = records.load_results([case / "results.json"])
    view = build_view(doc)
    _golden(case / "report.html", render_html(view))
    _golden(case / "summary.md", render_markdown(view))
    _golden(case / "mail.txt", render_mail(view, TESTER).as_text())


def test_the_report_shows_what_the_stages_recorded() -> None:
    """Each figure the page shows is read from the stage that produced it."""
    doc = _doc()
    by = {e.result.stage: e.result for e in doc.entries}
    lp = by["livepatch-build"].detail(LivepatchBuildDetails)
    verify = by["livepatch-verify"].detail(LivepatchVerifyDetails)
    bench = by["bench"].detail(BenchDetails)
    assert lp is not None and verify is not None and bench is not None
    view = build_view(doc)
    [lpv] = view.livepatches
    assert lpv.functions == tuple(f.name for f in lp.functions) and "shrink_folio_list" in \
        lpv.functions
    facts = dict(lpv.verify_facts)
    assert facts["enabled"] == "yes"
    assert facts["transition"] == f"{verify.transition_s:.0f} s"
    [bv] = view.benches
    assert bv.emulated and "emulated QEMU guest (TCG" in bv.env_sentence
    throughput = bench.comparison("bogo_ops_per_s")
    assert throughput is not None
    shown = next(m for m in bv.metrics if m.comparison.metric == "bogo_ops_per_s")
    assert shown.comparison == throughput  # the bench stage's own judgement, not recomputed
    assert shown.info.unit == "bogo ops/s" and "higher is better" in shown.svg
    roi = json.loads(view.roi_json)[0]
    assert roi["emulated"] is True and roi["accel"] == "tcg"
    assert roi["environment"] == bv.env_sentence
    html = render_html(view)
    assert "shrink_folio_list" in html and "emulated QEMU guest (TCG" in html


def test_a_drifted_record_is_refused_with_the_field(tmp_path: Path) -> None:
    raw = json.loads((DATA / "demo-6.12" / "results.json").read_text())
    bench = next(r for r in raw["results"] if r["stage"] == "bench")
    bench["details"]["environment"]["accel"] = {"accel": "tcg", "reason": "old shape"}
    (tmp_path / "results.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match=r"results\[\d+\]\.details\.environment\.accel: "
                                        "expected string, got table"):
        records.load_results([tmp_path / "results.json"])


def test_mail_threading_headers() -> None:
    mail = render_mail(build_view(_doc()), TESTER)
    headers = dict(mail.headers)
    s = _doc().series
    assert headers["Subject"] == "Re: " + s.subject
    assert headers["In-Reply-To"] == f"<{s.msgid}>"
    assert headers["References"] == headers["In-Reply-To"]
    assert f"Tested-by: {TESTER}" in mail.body
    assert "median change" in mail.body


def test_mail_withholds_tested_by_on_a_regression() -> None:
    doc = _doc()
    entries = tuple(dataclasses.replace(e, result=dataclasses.replace(
        e.result, status=Status.FAIL, summary="Oops: general protection fault"))
        if e.result.stage == "boot" else e for e in doc.entries)
    body = render_mail(build_view(dataclasses.replace(doc, entries=entries)), TESTER).body
    assert "Tested-by: " not in body
    assert "No Tested-by from me" in body


def _split(tmp_path: Path) -> ResultsDoc:
    """The recorded run as a split pipeline's two jobs would have left it."""
    doc = _doc()
    prepare = ("check-newer", "backport", "build-base", "build-patched")
    a = dataclasses.replace(doc, entries=tuple(e for e in doc.entries
                                               if e.result.stage in prepare))
    b = dataclasses.replace(doc, run_id="r2", finished="9999-01-01T00:00:00Z",
                            verdict=records.Verdict(1, "fail"), entries=tuple(
        dataclasses.replace(e, result=dataclasses.replace(e.result, status=Status.FAIL,
                                                          summary="Oops"))
        if e.result.stage == "boot" else e
        for e in doc.entries if e.result.stage not in prepare))
    for name, d in (("job-a", a), ("job-b", b)):
        records.write_records(tmp_path / name, d)
    return doc


def test_merge_keeps_one_verdict(tmp_path: Path) -> None:
    doc = _split(tmp_path)
    merged = records.merge(records.load_results([tmp_path]), base_dir=tmp_path / "out")
    assert merged.verdict == records.Verdict(1, "fail")
    assert len(merged.entries) == len(doc.entries)
    assert merged.stages == tuple(e.result.stage for e in doc.entries)


def test_merge_refuses_two_series(tmp_path: Path) -> None:
    doc = _doc()
    other = dataclasses.replace(doc, series=dataclasses.replace(doc.series, name="other"))
    records.write_records(tmp_path / "a", doc)
    records.write_records(tmp_path / "b", other)
    with pytest.raises(UserError, match="different series"):
        records.merge(records.load_results([tmp_path]))


def test_report_cli_merge_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    _split(tmp_path / "jobs")
    res = CliRunner().invoke(cli, ["report", "--merge", str(tmp_path / "jobs"), "--out",
                                   str(tmp_path / "out"), "--verdict", "--mail",
                                   "--tested-by", TESTER])
    assert res.exit_code == 1, res.output
    assert (tmp_path / "out" / "report.html").exists()
    assert "No Tested-by from me" in (tmp_path / "out" / "mail.txt").read_text()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["verdict"]["exit_code"] == 1


def test_html_is_self_contained() -> None:
    html = render_html(build_view(_doc()))
    for needle in ("http://", "https://", "src=", "<link", "@import"):
        assert needle not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_script_in_a_subject_is_escaped() -> None:
    """Subjects and authors come from a mailing list: rendered as text, never as markup."""
    doc = _doc()
    evil = dataclasses.replace(doc, series=dataclasses.replace(
        doc.series, subject='<script>alert("x")</script>', author="<img src=x onerror=alert(1)>"),
        entries=(*doc.entries, records.Entry(StageResult("boot", Status.FAIL,
                                                         "<script>bad()</script>", 1, "t"))))
    html = render_html(build_view(evil))
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    assert "<img src=x" not in html and "<script>bad()" not in html


def test_schema_is_checked(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"schema": "other/1"}')
    with pytest.raises(UserError, match="schema 'other/1', expected patchflow.results/2"):
        records.load_results([tmp_path / "results.json"])
    (tmp_path / "results.json").write_text('[1, 2]')
    with pytest.raises(UserError, match="not a JSON object"):
        records.load_results([tmp_path / "results.json"])


def test_headline_chart_and_roi_metrics_come_from_the_bench() -> None:
    """The headline shows every judged metric's change and interval; ROI can use any of them."""
    doc = _doc("demo-two-targets")
    view = build_view(doc)
    bench = {e.result.target: e.result.detail(BenchDetails) for e in doc.of_stage("bench")}
    d61 = bench["linux-6.1.y"]
    assert d61 is not None
    shoot = d61.comparison("tlb_per_reclaimed_page")
    assert shoot is not None and shoot.change is not None and shoot.verdict == "improved"
    # the recorded 6.1 run: TLB shootdowns per reclaimed page -82.3% [-82.5% … -82.1%]
    assert (f"TLB shootdowns per reclaimed page (linux-6.1.y, lower is better): "
            f"{shoot.change * 100:+.1f}% [") in view.headline_svg
    assert "pages scanned" not in view.headline_svg  # not judged: not a headline
    roi = json.loads(view.roi_json)
    assert [r["metric"] for r in roi if r["target"] == "linux-6.1.y"][0] == "bogo_ops_per_s"
    [entry] = [r for r in roi if r["target"] == "linux-6.1.y"
               and r["metric"] == "tlb_per_reclaimed_page"]
    # a cost per unit of work: -82.3% of it is 1/(1-0.823)-1 = +465% more work
    assert entry["gain_pct"] == pytest.approx((1 / (1 + shoot.change) - 1) * 100, abs=1e-3)
    assert entry["gain_low_pct"] <= entry["gain_pct"] <= entry["gain_high_pct"]


def test_report_shows_the_patches_skipped_as_not_applicable() -> None:
    """`backport --skip --note` lands in the backport details; the report lists it."""
    from patchflow.backport.queue import Skip
    from patchflow.backport.stage import BackportDetails

    doc = _doc()
    skip = Skip(1, "ptrace: refuse PTRACE_SETSIGMASK on user workers", "0" * 40,
                "6.1 has no PF_USER_WORKER")
    entries = []
    for e in doc.entries:
        d = e.result.detail(BackportDetails)
        if d is not None:
            e = dataclasses.replace(e, result=dataclasses.replace(
                e.result, details=dataclasses.replace(d, skipped=(skip,))))
        entries.append(e)
    view = build_view(dataclasses.replace(doc, entries=tuple(entries)))
    line = "patch 1 (ptrace: refuse PTRACE_SETSIGMASK on user workers): 6.1 has no PF_USER_WORKER"
    assert [b.skipped for b in view.backports] == [(line,)]
    assert line in render_html(view) and line in render_markdown(view)


@pytest.mark.parametrize("after, relation", [
    (35833.97, "the whole interval is above the claimed +26.9%"),
    (53650.0, "the interval contains the claimed +90.0%"),
    (90000.0, "the whole interval is below the claimed +218.7%"),
])
def test_the_series_claim_is_set_beside_the_measurement(after: float, relation: str) -> None:
    """The authors' figure, this bench's interval, and where one lies against the other."""
    doc = _doc()
    claim = Claim("bogo_ops_per_s", 28238.63, after, "stress-ng --vm 16 in a 512M memcg", 16,
                  "v2 cover letter")
    doc = dataclasses.replace(doc, series=dataclasses.replace(doc.series, claim=claim))
    [bv] = build_view(doc).benches
    bench = next(e.result for e in doc.entries if e.result.stage == "bench").detail(BenchDetails)
    assert bench is not None
    c = bench.comparison("bogo_ops_per_s")
    assert c is not None and c.ci_low is not None and c.ci_high is not None
    assert (f"Measured here: {c.change:+.1%} [{c.ci_low:+.1%}, {c.ci_high:+.1%}] on 2 vCPUs "
            f"emulated (TCG), {c.verdict}; {relation}.") in bv.claim_sentence
    assert f"reports stress-ng throughput 28238.63 → {after:.15g} bogo ops/s" in bv.claim_sentence
    assert "2 against 16 CPUs" in bv.claim_sentence
    view = build_view(doc)
    assert str(escape(bv.claim_sentence)) in render_html(view)
    assert bv.claim_sentence in render_markdown(view)


def test_no_claim_no_sentence() -> None:
    [bv] = build_view(_doc()).benches
    assert bv.claim_sentence == ""
