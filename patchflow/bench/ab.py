"""The A/B benchmark: fresh boots of base and patched, interleaved, judged per metric.

Owns the guest snippet (``templates/boot/bench.sh.j2``) that sets up zram swap
and a cgroup v2 memcg, snapshots ``/proc/interrupts`` and ``/proc/vmstat``
around ``stress-ng --metrics --yaml`` and hands everything back; one run
(:func:`run_once`); and the orchestration (:func:`run_ab`): A B B A A B... so
that drift over time hits both variants alike, each metric compared by
:mod:`patchflow.stats` with the direction :mod:`patchflow.bench.metrics`
declares, and the verdict as :class:`BenchDetails`.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from patchflow import stats, typed
from patchflow.bench.metrics import METRICS, IncompleteRun, run_metrics
from patchflow.boot import qemu
from patchflow.boot.initramfs import GuestSpec, initramfs
from patchflow.config import Profile
from patchflow.result import Details, Progress, StageResult, Status, quiet
from patchflow.templates import render
from patchflow.workspace import atomic_write_json

VARIANTS = ("base", "patched")


# --------------------------------------------------------------------------
# the guest side


def stress_argv(profile: Profile, vcpus: int) -> list[str]:
    """The stress-ng arguments (after ``stress-ng``) for *vcpus* guest CPUs."""
    return ["--vm", str(profile.workers(vcpus)), "--vm-bytes", f"{profile.vm_bytes_mb(vcpus)}M",
            "--vm-keep", "--vm-method", profile.vm_method, "--timeout", f"{profile.timeout_s}s",
            "--metrics", "--yaml", "/tmp/stress.yaml"]


def bench_snippet(profile: Profile, vcpus: int) -> str:
    return render("boot", "bench.sh.j2", profile=profile, workers=profile.workers(vcpus),
                  vm_bytes_mb=profile.vm_bytes_mb(vcpus), memcg_mb=profile.memcg_mb(vcpus),
                  zram_mb=profile.zram_mb(vcpus), stress_args=stress_argv(profile, vcpus))


def guest_spec(profile: Profile, vcpus: int) -> GuestSpec:
    return GuestSpec(snippets=(("bench", bench_snippet(profile, vcpus)),), stress_ng=True)


# --------------------------------------------------------------------------
# one run, and the A/B


@dataclass(frozen=True)
class Rep:
    """One boot of one variant running the workload once."""

    variant: str
    rep: int
    status: Status
    summary: str
    metrics: dict[str, float]
    log: str
    kernel_release: str = ""
    wall_seconds: float = 0.0


@dataclass(frozen=True)
class Sample:
    variant: str
    rep: int
    metric: str
    value: float


@dataclass(frozen=True)
class BenchEnvironment:
    """What produced the numbers: the report puts this next to every figure."""

    vcpus: int
    accel: str  # "kvm" or "tcg"
    accel_reason: str
    memory_mb: int
    profile: str
    workload: str  # the stress-ng command line
    reps: int
    host: str
    host_kernel: str
    host_cpus: int
    kernels: dict[str, str]  # variant -> kernel image
    kernel_releases: dict[str, str]
    started: float

    @property
    def emulated(self) -> bool:
        return self.accel == "tcg"


@dataclass(frozen=True)
class BenchDetails(Details):
    kind: ClassVar[str] = "bench"
    environment: BenchEnvironment
    comparisons: tuple[stats.Comparison, ...]
    samples: tuple[Sample, ...]
    reps: tuple[Rep, ...]
    failed_run: Rep | None = None

    def comparison(self, metric: str) -> stats.Comparison | None:
        return next((c for c in self.comparisons if c.metric == metric), None)


def run_once(kernel: Path, profile: Profile, *, cache: Path, log: Path, accel: str,
             vcpus: int | None = None, variant: str = "base", rep: int = 0,
             target: str | None = None) -> Rep:
    """One fresh boot running the profile's workload once."""
    n = vcpus or profile.vcpus
    initrd = initramfs(cache, guest_spec(profile, n))
    br = qemu.boot(kernel, initrd, log=log, accel=accel, mem_mb=profile.mem_mb(n), smp=n,
                   timeout=profile.boot_timeout_s + profile.timeout_s, stage="bench-run",
                   target=target)
    release = br.scan.text("kernel") or ""

    def rep_(status: Status, summary: str, metrics: dict[str, float] | None = None) -> Rep:
        return Rep(variant, rep, status, summary, metrics or {}, str(log), release,
                   round(br.wall_seconds, 1))

    if br.result.status is not Status.PASS:
        return rep_(br.result.status, br.result.summary)
    skipped = br.scan.text("skipped")
    if skipped:
        return rep_(Status.ERROR, f"workload not run: {skipped} in this kernel")
    try:
        metrics = run_metrics(br.files)
    except IncompleteRun as exc:
        return rep_(Status.ERROR, f"incomplete run: {exc}")
    if profile.require_reclaim and metrics["pgsteal"] == 0:
        return rep_(Status.ERROR, "the workload never reached reclaim (pgsteal 0): raise "
                    f"vm_bytes_per_vcpu_mb or lower the memcg limit in {profile.path}", metrics)
    extras = [f"{k} {br.scan.text(k)}" for k in ("memcg", "zram")]
    return rep_(Status.PASS, f"{metrics['bogo_ops_per_s']:.1f} bogo ops/s; " + ", ".join(extras),
                metrics)


def interleaved(reps: int, variants: Sequence[str] = VARIANTS) -> list[tuple[int, str]]:
    """A B, B A, A B...: never all of A before all of B; alternating which goes first
    cancels a linear drift within each pair (tests/unit/test_bench.py::test_interleaved)."""
    order: list[tuple[int, str]] = []
    for r in range(reps):
        vs = list(variants) if r % 2 == 0 else list(reversed(variants))
        order.extend((r, v) for v in vs)
    return order


def compare_all(done: Sequence[Rep], alpha: float) -> tuple[stats.Comparison, ...]:
    """Patched against base for every metric, directions from :data:`METRICS`."""
    out = []
    for m in METRICS.values():
        a = [r.metrics[m.name] for r in done if r.variant == "base" and m.name in r.metrics]
        b = [r.metrics[m.name] for r in done if r.variant == "patched" and m.name in r.metrics]
        if a and b:
            out.append(stats.compare(m.name, a, b, better=m.better, alpha=alpha))
    return tuple(out)


def verdict(comps: Sequence[stats.Comparison], profile: Profile, reps: int
            ) -> tuple[Status, str]:
    """A primary metric that significantly regressed is FAIL, another WARN, else PASS."""
    regressed = [c.metric for c in comps if c.verdict == stats.REGRESSED]
    improved = [c.metric for c in comps if c.verdict == stats.IMPROVED]
    status = Status.PASS
    if any(m in profile.primary for m in regressed):
        status = Status.FAIL
    elif regressed:
        status = Status.WARN
    parts = [f"regressed: {', '.join(regressed)}" if regressed else "",
             f"improved: {', '.join(improved)}" if improved else ""]
    summary = "; ".join(p for p in parts if p) or "no significant difference in any metric"
    floor = stats.min_p(reps, reps)
    if floor >= profile.alpha:
        summary += (f" (with {reps} reps per variant the smallest possible p is {floor:.3f}, "
                    f"not below alpha {profile.alpha}: use more reps)")
    return status, summary


def run_ab(kernels: Mapping[str, Path], profile: Profile, *, cache: Path, run_dir: Path,
           accel: qemu.AccelChoice, reps: int | None = None, vcpus: int | None = None,
           target: str | None = None, progress: Progress = quiet) -> StageResult:
    """Boot each variant *reps* times, interleaved, and compare patched against base.

    A run that oopses makes the whole benchmark FAIL (it names the variant); a
    hang or an incomplete run makes it ERROR; neither is averaged away.  With
    all runs complete, :func:`verdict` decides.  ``details`` is :class:`BenchDetails`.
    """
    n_reps = reps or profile.reps
    n = vcpus or profile.vcpus
    run_dir.mkdir(parents=True, exist_ok=True)
    done: list[Rep] = []
    start = time.monotonic()
    started = time.time()
    order = interleaved(n_reps, tuple(kernels))
    for i, (r, variant) in enumerate(order, start=1):
        progress(f"run {i}/{len(order)}: {variant} rep {r}")
        rep = run_once(kernels[variant], profile, cache=cache,
                       log=run_dir / f"console-{variant}-{r}.log", accel=accel.accel, vcpus=n,
                       variant=variant, rep=r, target=target)
        done.append(rep)
        atomic_write_json(run_dir / "bench-progress.json", typed.dump(done))
        if rep.status is not Status.PASS:
            break  # a broken kernel or guest will not get better by booting it again
    env = BenchEnvironment(
        vcpus=n, accel=accel.accel, accel_reason=accel.reason, memory_mb=profile.mem_mb(n),
        profile=profile.name, workload="stress-ng " + " ".join(stress_argv(profile, n)),
        reps=n_reps, host=platform.node(), host_kernel=platform.release(),
        host_cpus=os.cpu_count() or 0, kernels={v: str(k) for v, k in kernels.items()},
        kernel_releases={r.variant: r.kernel_release for r in done if r.kernel_release},
        started=started)
    elapsed = time.monotonic() - start
    samples = tuple(Sample(r.variant, r.rep, m, v) for r in done for m, v in r.metrics.items())
    bad = [r for r in done if r.status is not Status.PASS]
    if bad:
        first = bad[0]
        return StageResult("bench", first.status, f"{first.variant} run {first.rep} did not "
                           f"complete: {first.summary}", elapsed, target,
                           BenchDetails(env, (), samples, tuple(done), first), first.log)
    comps = compare_all(done, profile.alpha)
    status, summary = verdict(comps, profile, n_reps)
    return StageResult("bench", status, summary, elapsed, target,
                       BenchDetails(env, comps, samples, tuple(done)), str(run_dir))


def sample_rows(res: StageResult) -> list[tuple[str, int, str, float]]:
    """The benchmark samples of a result, as the state database stores them."""
    d = res.detail(BenchDetails)
    return [(x.variant, x.rep, x.metric, x.value) for x in d.samples] if d else []


def format_change(c: stats.Comparison) -> str:
    if c.change is None or c.ci_low is None or c.ci_high is None:
        return "n/a"
    return f"{c.change:+.1%} [{c.ci_low:+.1%}, {c.ci_high:+.1%}]"
