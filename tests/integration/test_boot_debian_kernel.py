"""Real boots of Debian's prebuilt 6.1 cloud kernel with the generated initramfs.

No kernel build needed: the image comes from ``apt-get download`` (cached in the
shared cache).  Covers the boot path, the result protocol, the stress-ng smoke
profile with real parsed metrics, and the failure kinds a real guest produces:
a hang (timeout), a crash (panic), the KVM probe falling back to TCG.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from patchflow.bench import ab as bench
from patchflow.boot import qemu
from patchflow.result import Status

from ..conftest import REAL_CACHE

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def kernel() -> Path:
    return qemu.debian_kernel(REAL_CACHE)


def test_smoke_profile_metrics_parse(kernel: Path, tmp_path: Path) -> None:
    prof = bench.find_profile("smoke")
    rep = bench.run_once(kernel, prof, cache=REAL_CACHE, log=tmp_path / "console.log", accel="tcg")
    assert rep.status is Status.PASS, rep.summary
    assert rep.kernel_release.startswith("6.1.0-")
    assert rep.metrics["bogo_ops_per_s"] > 0
    # the CAL row counts real IPIs during a 2-vCPU run: never negative, almost surely > 0
    assert rep.metrics["call_ipis"] >= 0
    assert set(rep.metrics) == set(bench.METRICS)
    assert (tmp_path / "console.log").read_text().count("PATCHFLOW-INIT") == 1


def test_extra_files_and_snippet_come_back(kernel: Path, tmp_path: Path) -> None:
    extra = tmp_path / "note.txt"
    extra.write_text("hello from the host\n")
    spec = qemu.GuestSpec(snippets=(("echo", "pf_run cat cat /opt/note.txt"),),
                          files=((extra, "/opt/note.txt"),))
    run = qemu.boot(kernel, qemu.initramfs(REAL_CACHE, spec), log=tmp_path / "c.log", timeout=180)
    assert run.result.status is Status.PASS, run.result.summary
    assert run.scan.text("cat") == "hello from the host\n"
    assert run.scan.text("cat.rc") == "0"
    assert run.init_seconds is not None and run.init_seconds > 0


@pytest.mark.slow
def test_hung_guest_is_a_timeout_and_the_log_is_kept(kernel: Path, tmp_path: Path) -> None:
    spec = qemu.GuestSpec(snippets=(("hang", "sleep 1000"),))
    log = tmp_path / "hang.log"
    run = qemu.boot(kernel, qemu.initramfs(REAL_CACHE, spec), log=log, timeout=40)
    assert run.result.status is Status.ERROR
    assert run.result.details["kind"] == "timeout"
    assert "PATCHFLOW-INIT" in log.read_text()  # the guest got to /init, then hung


@pytest.mark.slow
def test_crashing_guest_fails_with_the_excerpt(kernel: Path, tmp_path: Path) -> None:
    spec = qemu.GuestSpec(snippets=(("crash", "echo c > /proc/sysrq-trigger"),))
    run = qemu.boot(kernel, qemu.initramfs(REAL_CACHE, spec), log=tmp_path / "crash.log",
                    timeout=180)
    assert run.result.status is Status.FAIL
    assert run.result.details["kind"] == "panic"
    assert "sysrq triggered crash" in run.result.summary


@pytest.mark.slow
def test_accel_probe_decides_and_is_cached(kernel: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATCHFLOW_ACCEL", raising=False)
    cache = tmp_path / "cache"
    first = qemu.choose_accel(cache, kernel, timeout=40)
    assert first.accel in ("kvm", "tcg")
    if Path("/dev/kvm").exists() and first.accel == "tcg":
        assert "probe" in first.reason  # /dev/kvm exists here but guests hang: said so
    second = qemu.choose_accel(cache, kernel, timeout=40)
    assert second.accel == first.accel and "cached" in second.reason
