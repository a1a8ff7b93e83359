"""The ROI calculator in a real headless Chromium, driven over chromedriver's WebDriver API.

Loads report.html from file:// (offline), types into the inputs like a user
and reads the computed figures, which are checked against the same formula
computed here in Python from the measured change and its interval.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patchflow.gate import records
from patchflow.gate.records import ResultsDoc
from patchflow.report.render import write_report
from patchflow.report.view import build_view

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data" / "report" / "demo-6.12" / "results.json"
TWO_TARGETS = DATA.parents[1] / "demo-two-targets" / "results.json"
REPO = Path(__file__).resolve().parents[2]


def recorded() -> ResultsDoc:
    """The recorded gate run (3+3 smoke boots: nothing there is significant)."""
    return records.load_results([DATA])[0][1]


def recorded_61() -> ResultsDoc:
    """The recorded two-target demo run, kept to its linux-6.1.y cells: 5+5 reclaim boots
    whose throughput gain is significant (a real measurement, not a constructed one)."""
    doc = records.load_results([TWO_TARGETS])[0][1]
    return dataclasses.replace(doc, targets=("linux-6.1.y",), entries=tuple(
        e for e in doc.entries if e.result.target in (None, "linux-6.1.y")))


ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


class Browser:
    def __init__(self, base: str, session: str) -> None:
        self.base, self.session = base, session

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return _request(method, f"{self.base}/session/{self.session}{path}", body)

    def find(self, css: str) -> str:
        found = self.call("POST", "/element", {"using": "css selector", "value": css})
        assert ELEMENT in found, found
        return str(found[ELEMENT])

    def type(self, css: str, text: str) -> None:
        el = self.find(css)
        self.call("POST", f"/element/{el}/clear", {})
        if text:
            self.call("POST", f"/element/{el}/value", {"text": text})

    def click(self, css: str) -> None:
        self.call("POST", f"/element/{self.find(css)}/click", {})

    def text(self, css: str) -> str:
        return str(self.call("GET", f"/element/{self.find(css)}/text"))


def _request(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,  # noqa: S310 - loopback only
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
        return json.loads(resp.read())["value"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    driver, chromium = shutil.which("chromedriver"), shutil.which("chromium")
    if driver is None or chromium is None:
        pytest.fail("needs Debian's chromium and chromium-driver: apt-get install chromium "
                    "chromium-driver")
    port = _free_port()
    # A long-lived server for the test's duration: runner.run() only runs commands
    # to completion, so the fixture starts and stops this one process itself.
    proc = subprocess.Popen([driver, f"--port={port}"],  # noqa: S603 - fixed argv, no shell
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                _request("GET", f"{base}/status")
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={tmp_path / 'profile'}"]}}}}
        session = _request("POST", f"{base}/session", caps)["sessionId"]
        try:
            yield Browser(base, session)
        finally:
            _request("DELETE", f"{base}/session/{session}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _page(doc: ResultsDoc, out: Path) -> str:
    write_report(doc, out)
    return (out / "report.html").as_uri()


def _freed(pct: float) -> float:
    x = pct / 100
    return x / (1 + x)


def test_calculator_uses_the_measured_interval(browser: Browser, tmp_path: Path) -> None:
    doc = recorded_61()
    roi = json.loads(build_view(doc).roi_json)[0]
    assert roi["significant"] and roi["target"] == "linux-6.1.y"
    browser.call("POST", "/url", {"url": _page(doc, tmp_path / "out")})
    browser.type("#roi-fleet", "2000")
    browser.type("#roi-cost", "300")
    browser.type("#roi-hour", "1000")
    lo, hi, mid = (2000 * _freed(roi[k]) for k in ("ci_low_pct", "ci_high_pct", "change_pct"))
    assert browser.text("#roi-nodes") == f"{lo:.1f} to {hi:.1f} nodes (point estimate {mid:.1f})"
    assert browser.text("#roi-money") == (f"saved: {round(lo * 300):,} to {round(hi * 300):,} "
                                          f"(point estimate {round(mid * 300):,})")
    vlo, vhi = (round(1000 * 730 * roi[k] / 100) for k in ("ci_low_pct", "ci_high_pct"))
    assert browser.text("#roi-value") == f"gained: {vlo:,} to {vhi:,}"
    assert browser.text("#roi-verdict").startswith("Significant improvement")
    env = browser.text("#roi-env")
    assert "emulated QEMU guest" in env and "2 vCPUs" in env
    ci = f"95% CI {roi['ci_low_pct']:+.1f}% … {roi['ci_high_pct']:+.1f}%"
    assert f"{ci}, 5 runs per variant, 2 vCPUs, tcg" in browser.text("#roi-change")
    # a user changing the fleet size sees the figures follow
    browser.type("#roi-fleet", "10")
    assert browser.text("#roi-nodes").startswith(f"{10 * _freed(roi['ci_low_pct']):.1f} to ")
    browser.type("#roi-fleet", "")
    assert browser.text("#roi-money") == "—"


def test_calculator_refuses_to_promise_without_significance(browser: Browser,
                                                            tmp_path: Path) -> None:
    doc = recorded()  # the real 3+3 run: its throughput change is not significant
    roi = json.loads(build_view(doc).roi_json)[0]
    assert not roi["significant"] and roi["runs"] == 3
    browser.call("POST", "/url", {"url": _page(doc, tmp_path / "out")})
    browser.type("#roi-fleet", "5000")
    assert browser.text("#roi-verdict").startswith("Not significant")
    assert browser.text("#roi-money") == "none claimed"
    assert browser.text("#roi-nodes") == "none claimed"


def test_calculator_uses_the_metric_the_user_picks(browser: Browser, tmp_path: Path) -> None:
    """Shootdowns per reclaimed page, a cost per unit of work, as the basis of the ROI."""
    doc = recorded_61()
    [roi] = [r for r in json.loads(build_view(doc).roi_json)
             if r["metric"] == "tlb_per_reclaimed_page"]
    assert roi["significant"] and roi["better"] == "lower"
    browser.call("POST", "/url", {"url": _page(doc, tmp_path / "out")})
    browser.click('#roi-metric option[value="tlb_per_reclaimed_page"]')
    browser.type("#roi-fleet", "1000")
    browser.type("#roi-cost", "100")
    # -82.3% of the cost per page is 1/(1-0.823)-1 = +465% work on the same nodes
    gain = (1 / (1 + roi["change_pct"] / 100) - 1) * 100
    assert roi["gain_pct"] == pytest.approx(gain, abs=0.05)  # change_pct is rounded
    lo, hi, mid = (1000 * _freed(roi[k]) for k in ("gain_low_pct", "gain_high_pct", "gain_pct"))
    assert browser.text("#roi-nodes") == f"{lo:.1f} to {hi:.1f} nodes (point estimate {mid:.1f})"
    assert browser.text("#roi-change").startswith(f"TLB shootdowns per reclaimed page "
                                                  f"{roi['change_pct']:+.1f}%".replace("-", "−"))
    assert browser.text("#roi-basis").startswith("Read as a cost per unit of work")
    # the caveat sits next to the result, in the calculator, in full-size text
    assert "2 vCPUs" in browser.text("#roi-env")
