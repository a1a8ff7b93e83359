"""Judging a verification from what the guest handed back (recorded QEMU runs).

Each folder of tests/data/livepatch/verify/ holds the guest's files from a real
boot (``files/``) and ``case.json``: the spec, the boot result, and the
expected status and failing checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchflow.livepatch.results import LivepatchVerifyDetails
from patchflow.livepatch.verify import VerifySpec, judge, taint_letters, tlb_shootdowns
from patchflow.result import StageResult, Status

CORPUS = Path(__file__).parent.parent / "data" / "livepatch" / "verify"
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())


def load(case: str) -> tuple[VerifySpec, StageResult, dict[str, bytes], dict[str, object]]:
    folder = CORPUS / case
    meta = json.loads((folder / "case.json").read_text())
    spec = VerifySpec(**meta["spec"])
    boot = StageResult("livepatch-verify", Status(meta["boot"]["status"]), meta["boot"]["summary"])
    files = {p.name: p.read_bytes() for p in (folder / "files").iterdir()}
    return spec, boot, files, meta


@pytest.mark.parametrize("case", CASES)
def test_verify_corpus(case: str) -> None:
    spec, boot, files, meta = load(case)
    res = judge(spec, boot, files)
    assert res.status.value == meta["status"], res.summary
    d = res.detail(LivepatchVerifyDetails)
    assert d is not None and [c.check for c in d.failed] == meta["failed"]


def test_missing_rollback_is_a_failure() -> None:
    spec, boot, files, _ = load("cmdline-pass")
    files = dict(files)
    files["modules"] = b"lp_cmdline 16384 0 - Live 0xffffffffa0000000 (OK)\n"
    files["rmmod.rc"] = b"1"
    res = judge(spec, boot, files)
    assert res.status is Status.FAIL and "unload" in res.summary


def test_stalled_transition_names_blocking_tasks() -> None:
    spec, boot, files, _ = load("cmdline-pass")
    files = dict(files)
    files["transition"] = b"1"
    files["blocked-tasks"] = b"7 kworker/0:1 [<0>] worker_thread+0x1b0/0x3a0|\n"
    files["dmesg-tail"] = (b"livepatch: This architecture doesn't have support for the livepatch "
                           b"consistency model.\n")
    res = judge(spec, boot, files)
    assert res.status is Status.FAIL
    assert "stalled; blocking tasks: 7 kworker/0:1" in res.summary
    assert "CONFIG_UNWINDER_ORC" in res.summary


def test_oops_on_console_fails_even_if_guest_files_look_fine() -> None:
    spec, _boot, files, _ = load("cmdline-pass")
    oops = StageResult("livepatch-verify", Status.FAIL, "kernel oops on the console, line 80: ...")
    assert judge(spec, oops, files).status is Status.FAIL


def test_helpers() -> None:
    assert taint_letters((1 << 12) | (1 << 15)) == "OK"
    assert tlb_shootdowns("  TLB:   3   4   TLB shootdowns\n CAL: 1 2\n") == 7
    assert tlb_shootdowns("nothing") is None


def test_guest_names_stay_inside(tmp_path: Path) -> None:
    from patchflow.livepatch.verify import keep_guest_files

    dest = tmp_path / "keep"
    keep_guest_files({"load.rc": b"0", "../escape": b"x", "/etc/owned": b"x", "a/b": b"x"}, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["load.rc"]
    assert not (tmp_path / "escape").exists()


def test_kprobe_hits_and_the_executed_check() -> None:
    from patchflow.livepatch.verify import kprobe_hits

    # kprobe_profile: "%-44s %15lu %15lu" (event, hits, misses)
    profile = ("  lp1                                                    1234               0\n"
               "  lp2                                                       0               0\n")
    probes = ("__klp_new__send_signal_locked", "__klp_new__exit_signals")
    assert kprobe_hits(profile, probes) == {probes[0]: 1234, probes[1]: 0}
    spec, boot, files, _ = load("debian61-pass")
    spec = VerifySpec(**{**spec.__dict__, "probes": probes})
    res = judge(spec, boot, {**files, "kprobe-profile": profile.encode()})
    d = res.detail(LivepatchVerifyDetails)
    assert d is not None and res.status is Status.PASS
    assert "send_signal_locked: 1234 calls; exit_signals: 0 calls" in {
        c.check: c.detail for c in d.checks}["executed"]
    res = judge(spec, boot, files)  # no profile: the probes were not placed
    assert res.status is Status.FAIL and "executed" in res.summary
