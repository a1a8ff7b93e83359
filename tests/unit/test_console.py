"""Unit tests of patchflow.boot.console on recorded and composed console logs (tests/data/console/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchflow.boot import console

DATA = Path(__file__).resolve().parent.parent / "data" / "console"
EXPECTED = json.loads((DATA / "expected.json").read_text())


def test_every_log_has_an_expectation() -> None:
    assert sorted(p.name for p in DATA.glob("*.log")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_console_corpus(name: str) -> None:
    want = EXPECTED[name]
    sc = console.scan((DATA / name).read_text())
    assert [f.kind for f in sc.findings] == want["kinds"]
    assert (sc.init_seconds is not None) == want["init"]
    assert sc.results_complete == want["complete"]
    assert sc.powered_off == want["powered_off"]
    for f in sc.findings:
        assert f.line in f.excerpt  # the excerpt shows the offending line


def test_clean_boot_results_decode() -> None:
    sc = console.scan((DATA / "debian-6.1-clean.log").read_text())
    assert sc.text("kernel") == "6.1.0-56-cloud-amd64"
    assert sc.text("nproc") == "2"
    assert sc.init_seconds is not None and 0 < sc.init_seconds < 60
    assert sc.corrupt_lines == 0


@pytest.mark.parametrize(("line", "kind"), [
    ("[   12.1] BUG: kernel NULL pointer dereference, address: 0000000000000008", "bug"),
    ("[   12.1] Oops: 0000 [#1] PREEMPT SMP NOPTI", "oops"),
    ("kernel BUG at mm/vmscan.c:1380!", "bug"),
    ("[   14.2] WARNING: CPU: 0 PID: 98 at mm/vmscan.c:1405 shrink_folio_list+0x8a1/0xc40", "warning"),
    ("[    5.7] Kernel panic - not syncing: sysrq triggered crash", "panic"),
    ("watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [stress-ng-vm:231]", "soft-lockup"),
    ("watchdog: Watchdog detected hard LOCKUP on cpu 1", "hard-lockup"),
    ("INFO: task kworker/u4:2:57 blocked for more than 122 seconds.", "hung-task"),
    ("rcu: INFO: rcu_sched detected stalls on CPUs/tasks:", "rcu-stall"),
    ("rcu: INFO: rcu_preempt self-detected stall on CPU", "rcu-stall"),
    ("BUG: KASAN: slab-use-after-free in shrink_folio_list+0x1d4/0xc40", "kasan"),
    ("UBSAN: shift-out-of-bounds in mm/vmscan.c:1432:17", "ubsan"),
    ("general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1]", "gpf"),
    ("invalid opcode: 0000 [#1] PREEMPT SMP NOPTI", "invalid-opcode"),
    ("------------[ cut here ]------------", "cut-here"),
    ("reboot: Restarting system", "reboot"),
    # false positives and ordinary lines
    ("[    0.2] Speculative Return Stack Overflow: WARNING: See https://kernel.org/doc/...", None),
    ("[    0.2] RETBleed: WARNING: Spectre v2 mitigation leaves CPU vulnerable to RETBleed attacks", None),
    ("[    0.2] MDS CPU bug present and SMT on, data leak possible.", None),
    ("[   16.8] Memory cgroup out of memory: Killed process 105 (stress-ng-vm)", None),
    ("stress-ng: info:  [95] successful run completed in 3.07s", None),
])
def test_classify_line(line: str, kind: str | None) -> None:
    assert console.classify_line(line) == kind


def test_cut_here_takes_the_name_of_the_report() -> None:
    text = "------------[ cut here ]------------\nWARNING: CPU: 0 PID: 1 at x.c:1 f+0x0/0x1\n"
    assert [f.kind for f in console.scan(text).findings] == ["warning"]


def test_garbled_result_line_is_counted() -> None:
    text = f"{console.BEGIN}\n{{\"name\": \"a\", \"b64\": \"YQ==\"}}\n{{\"name\": \"b\", \"b6[  3.1] x\n{console.END}\n"
    sc = console.scan(text)
    assert sc.results == {"a": b"a"}
    assert sc.corrupt_lines == 1


@pytest.mark.parametrize("name", ["../../etc/cron.d/x", "/etc/passwd", "..", "a/b", ".hidden",
                                  "x" * 65, "a\nb", ""])
def test_hostile_names(name: str) -> None:
    """Result names come from the guest, which runs the code under test: one plain path
    component or the line is not a result (it is counted as garbled)."""
    import base64

    line = json.dumps({"name": name, "b64": base64.b64encode(b"pwned").decode()})
    text = f"{console.INIT} 1.0\n{console.BEGIN}\n{line}\n{console.END}\nreboot: Power down\n"
    sc = console.scan(text)
    assert sc.results == {} and sc.corrupt_lines == 1
