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
from patchflow.bench.metrics import METRICS
from patchflow.boot import qemu
from patchflow.boot.initramfs import GuestSpec, initramfs
from patchflow.config import ConfigDir
from patchflow.demo.kernels import debian_kernel
from patchflow.result import Status

from ..conftest import REAL_CACHE, REPO_ROOT

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def kernel() -> Path:
    return debian_kernel(REAL_CACHE)


def test_smoke_profile_metrics_parse(kernel: Path, tmp_path: Path) -> None:
    prof = ConfigDir(REPO_ROOT).profile("smoke")
    rep = bench.run_once(kernel, prof, cache=REAL_CACHE, log=tmp_path / "console.log", accel="tcg")
    assert rep.status is Status.PASS, rep.summary
    assert rep.kernel_release.startswith("6.1.0-")
    assert set(rep.metrics) == set(METRICS)
    # ranges from real runs of this profile on Debian's 6.1 cloud kernel, 2 vCPUs under TCG
    # (measured: 18-1059 bogo ops/s, as the memcg OOM-kills and restarts the workers a
    # different number of times per run, and a loaded CI host slows TCG further; 36-74
    # function-call IPIs).  A lost stress-ng YAML is an IncompleteRun (not a pass), so the
    # throughput bound only has to catch a wrong field: 0 (a field that is not a rate) or
    # the bogo-ops count itself (tens of thousands in a 10 s run)
    assert 0 < rep.metrics["bogo_ops_per_s"] <= 20000, rep.metrics
    assert 10 <= rep.metrics["call_ipis"] <= 5000, rep.metrics
    # the cloud kernel has zram as a module the smoke initramfs does not carry: no reclaim,
    # and a per-page ratio of 0 rather than a division by zero
    assert rep.metrics["pgsteal"] == 0 and rep.metrics["tlb_per_reclaimed_page"] == 0
    assert (tmp_path / "console.log").read_text().count("PATCHFLOW-INIT") == 1


def test_extra_files_and_snippet_come_back(kernel: Path, tmp_path: Path) -> None:
    extra = tmp_path / "note.txt"
    extra.write_text("hello from the host\n")
    spec = GuestSpec(snippets=(("echo", "pf_run cat cat /opt/note.txt"),),
                          files=((extra, "/opt/note.txt"),))
    run = qemu.boot(kernel, initramfs(REAL_CACHE, spec), log=tmp_path / "c.log", timeout=180)
    assert run.result.status is Status.PASS, run.result.summary
    assert run.scan.text("cat") == "hello from the host\n"
    assert run.scan.text("cat.rc") == "0"
    assert run.init_seconds is not None and run.init_seconds > 0


@pytest.mark.slow
def test_hung_guest_is_a_timeout_and_the_log_is_kept(kernel: Path, tmp_path: Path) -> None:
    spec = GuestSpec(snippets=(("hang", "sleep 1000"),))
    log = tmp_path / "hang.log"
    run = qemu.boot(kernel, initramfs(REAL_CACHE, spec), log=log, timeout=40)
    assert run.result.status is Status.ERROR
    d = run.result.detail(qemu.BootRunDetails)
    assert d is not None and d.outcome == "timeout"
    assert "PATCHFLOW-INIT" in log.read_text()  # the guest got to /init, then hung


@pytest.mark.slow
def test_crashing_guest_fails_with_the_excerpt(kernel: Path, tmp_path: Path) -> None:
    spec = GuestSpec(snippets=(("crash", "echo c > /proc/sysrq-trigger"),))
    run = qemu.boot(kernel, initramfs(REAL_CACHE, spec), log=tmp_path / "crash.log",
                    timeout=180)
    assert run.result.status is Status.FAIL
    d = run.result.detail(qemu.BootRunDetails)
    assert d is not None and d.outcome == "panic"
    assert "sysrq triggered crash" in run.result.summary


@pytest.mark.slow
def test_accel_probe_decides_and_is_cached(kernel: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = qemu.choose_accel(cache, kernel)
    # decided independently: does a real kernel boot to /init and power off under KVM?
    if Path("/dev/kvm").exists():
        real = qemu.boot(kernel, initramfs(REAL_CACHE, GuestSpec()), log=tmp_path / "kvm.log",
                         accel="kvm", mem_mb=256, smp=1, timeout=60)
        kvm_works = real.result.status is Status.PASS
    else:
        kvm_works = False
    assert first.accel == ("kvm" if kvm_works else "tcg"), (first, kvm_works)
    if Path("/dev/kvm").exists() and not kvm_works:
        assert "probe" in first.reason  # /dev/kvm exists but guests hang: said so
    second = qemu.choose_accel(cache, kernel)
    assert second.accel == first.accel and "cached" in second.reason
