"""The A/B benchmark: fresh boots of base and patched, interleaved, judged per metric.

Owns the guest snippet (``templates/boot/bench.sh.j2``) that sets up zram swap
and a cgroup v2 memcg, snapshots ``/proc/interrupts`` and ``/proc/vmstat``
around ``stress-ng --metrics --yaml`` and hands everything back; one run
(:func:`run_once`); and the orchestration (:func:`run_ab`), a sequential
paired design: round *r* boots A then B (B then A in odd rounds, so that a
linear drift hits both variants alike), and after every round each metric is
judged by :func:`patchflow.stats.compare_paired` against the group-sequential
boundary of :func:`patchflow.stats.design` (the stopping rule and its
references are in :mod:`patchflow.stats`).  The bench stops as soon as every
primary metric is decided (or one regressed), after the profile's ``reps``
rounds, or when the next round would overrun the time budget; what is then
undecided is "inconclusive".  An A/A bench (``aa``) runs the base kernel as
both variants with exactly the same protocol: its verdicts measure the false
positives.  The verdict is :class:`BenchDetails`.
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
#: the two labels of an A/A bench: the same base kernel both times
AA_VARIANTS = ("base", "base-again")


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
    #: base against itself (``--aa``): every significant verdict is a false positive
    aa: bool = False
    memcg_mb: int = 0
    #: the time budget in minutes (0: none)
    budget_min: int = 0

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
    #: complete rounds (pairs) judged, and why the bench stopped there:
    #: "decided", "rounds" (the planned maximum), "budget" or "failed run"
    rounds: int = 0
    stop: str = ""

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


def round_order(r: int, variants: Sequence[str] = VARIANTS) -> list[str]:
    """Round r's boots: A B in even rounds, B A in odd ones."""
    return list(variants) if r % 2 == 0 else list(reversed(variants))


def interleaved(reps: int, variants: Sequence[str] = VARIANTS) -> list[tuple[int, str]]:
    """A B, B A, A B...: never all of A before all of B; alternating which goes first
    cancels a linear drift within each pair (tests/unit/test_bench.py::test_interleaved)."""
    return [(r, v) for r in range(reps) for v in round_order(r, variants)]


def compare_rounds(done: Sequence[Rep], variants: Sequence[str], plan: stats.Design
                   ) -> tuple[stats.Comparison, ...]:
    """Every metric of :data:`METRICS` over the complete rounds, B against A, paired."""
    by = {(r.variant, r.rep): r for r in done if r.status is Status.PASS}
    pairs = [(by[(variants[0], k)], by[(variants[1], k)]) for k in sorted({r.rep for r in done})
             if (variants[0], k) in by and (variants[1], k) in by]
    out = []
    for m in METRICS.values():
        ps = [(x.metrics[m.name], y.metrics[m.name]) for x, y in pairs
              if m.name in x.metrics and m.name in y.metrics]
        if ps:
            out.append(stats.compare_paired(m.name, [a for a, _ in ps], [b for _, b in ps],
                                            better=m.better, plan=plan, mei=m.mei))
    return tuple(out)


def settled(comps: Sequence[stats.Comparison], profile: Profile) -> bool:
    """The stopping rule: a primary metric regressed, or every primary metric is decided."""
    primary = [c for c in comps if c.metric in profile.primary]
    return bool(primary) and (any(c.verdict == stats.REGRESSED for c in primary)
                              or all(c.decided for c in primary))


def min_rounds(alpha: float, limit: int = 40) -> int:
    """The fewest planned rounds with which any look can reach *alpha*."""
    return next((n for n in range(1, limit) if stats.design(n, alpha).first_decisive()), limit)


def verdict(comps: Sequence[stats.Comparison], profile: Profile, plan: stats.Design,
            stop: str = "", rounds: int = 0) -> tuple[Status, str]:
    """A primary metric that regressed is FAIL; another regression, or an undecided
    primary metric, WARN (exit 0: "inconclusive" blocks nothing but is never a pass)."""
    words = (stats.REGRESSED, stats.IMPROVED, stats.NO_DIFFERENCE, stats.INCONCLUSIVE)
    by = {w: [c.metric for c in comps if c.verdict == w] for w in words}
    status = Status.PASS
    if any(m in profile.primary for m in by[stats.REGRESSED]):
        status = Status.FAIL
    elif by[stats.REGRESSED] or any(m in profile.primary for m in by[stats.INCONCLUSIVE]):
        status = Status.WARN
    summary = "; ".join(f"{w}: {', '.join(ms)}" for w, ms in by.items() if ms) or "nothing judged"
    if plan.first_decisive() is None:
        summary += (f" (with {plan.rounds} rounds the smallest possible p is "
                    f"{min(1.0, 2.0 ** (1 - plan.rounds)):.3f}, so no look can reach alpha "
                    f"{plan.alpha}: use at least {min_rounds(plan.alpha)} rounds)")
    elif stop == "budget":
        summary += f" (the time budget stopped the bench after {rounds} of {plan.rounds} rounds)"
    elif stop == "decided" and rounds < plan.rounds:
        summary += f" (decided after {rounds} of {plan.rounds} rounds)"
    return status, summary


def _over_budget(elapsed: float, rounds: int, budget_s: float) -> bool:
    """Would one more round (as long as the mean round so far) overrun the budget?"""
    return budget_s > 0 and rounds > 0 and elapsed + elapsed / rounds > budget_s


@dataclass(frozen=True)
class Plan:
    """How one bench runs: the design, the knobs, and whether it is an A/A."""

    profile: Profile
    rounds: int
    vcpus: int
    budget_s: float = 0.0
    aa: bool = False

    @property
    def design(self) -> stats.Design:
        return stats.design(self.rounds, self.profile.alpha)


def _environment(kernels: Mapping[str, Path], plan: Plan, accel: qemu.AccelChoice,
                 done: Sequence[Rep], started: float) -> BenchEnvironment:
    p, n = plan.profile, plan.vcpus
    return BenchEnvironment(
        vcpus=n, accel=accel.accel, accel_reason=accel.reason, memory_mb=p.mem_mb(n),
        profile=p.name, workload="stress-ng " + " ".join(stress_argv(p, n)),
        reps=plan.rounds, host=platform.node(), host_kernel=platform.release(),
        host_cpus=os.cpu_count() or 0, kernels={v: str(k) for v, k in kernels.items()},
        kernel_releases={r.variant: r.kernel_release for r in done if r.kernel_release},
        started=started, aa=plan.aa, memcg_mb=p.memcg_mb(n),
        budget_min=round(plan.budget_s / 60))


def _rounds(kernels: Mapping[str, Path], plan: Plan, *, cache: Path, run_dir: Path,
            accel: str, target: str | None, progress: Progress
            ) -> tuple[list[Rep], tuple[stats.Comparison, ...], str]:
    """Run rounds until the stopping rule, the planned maximum or the budget says stop."""
    variants = tuple(kernels)
    done: list[Rep] = []
    comps: tuple[stats.Comparison, ...] = ()
    start = time.monotonic()
    for r in range(plan.rounds):
        if _over_budget(time.monotonic() - start, r, plan.budget_s):
            return done, comps, "budget"
        for variant in round_order(r, variants):
            progress(f"round {r + 1}/{plan.rounds}: {variant}")
            rep = run_once(kernels[variant], plan.profile, cache=cache,
                           log=run_dir / f"console-{variant}-{r}.log", accel=accel,
                           vcpus=plan.vcpus, variant=variant, rep=r, target=target)
            done.append(rep)
            atomic_write_json(run_dir / "bench-progress.json", typed.dump(done))
            if rep.status is not Status.PASS:
                # a broken kernel or guest will not get better by booting it again
                return done, comps, "failed run"
        comps = compare_rounds(done, variants, plan.design)
        if settled(comps, plan.profile):
            return done, comps, "decided"
    return done, comps, "rounds"


def run_ab(kernels: Mapping[str, Path], profile: Profile, *, cache: Path, run_dir: Path,
           accel: qemu.AccelChoice, reps: int | None = None, vcpus: int | None = None,
           target: str | None = None, progress: Progress = quiet, budget_s: float = 0.0,
           aa: bool = False) -> StageResult:
    """The sequential A/B bench of the two *kernels* (base first); see the module docstring.

    *reps* is the planned maximum of rounds (default: the profile's), *budget_s*
    the time budget (0: none).  A run that oopses makes the whole benchmark FAIL
    (it names the variant); a hang or an incomplete run makes it ERROR; neither
    is averaged away.  ``details`` is :class:`BenchDetails`.
    """
    plan = Plan(profile, reps or profile.reps, vcpus or profile.vcpus, budget_s, aa)
    run_dir.mkdir(parents=True, exist_ok=True)
    stage = "bench-aa" if aa else "bench"
    start, started = time.monotonic(), time.time()
    done, comps, stop = _rounds(kernels, plan, cache=cache, run_dir=run_dir, accel=accel.accel,
                                target=target, progress=progress)
    env = _environment(kernels, plan, accel, done, started)
    elapsed = time.monotonic() - start
    samples = tuple(Sample(r.variant, r.rep, m, v) for r in done for m, v in r.metrics.items())
    rounds = len({r.rep for r in done if r.status is Status.PASS}) if stop != "failed run" \
        else 0
    bad = [r for r in done if r.status is not Status.PASS]
    if bad:
        first = bad[0]
        return StageResult(stage, first.status, f"{first.variant} run {first.rep} did not "
                           f"complete: {first.summary}", elapsed, target,
                           BenchDetails(env, (), samples, tuple(done), first, 0, stop),
                           first.log)
    status, summary = verdict(comps, profile, plan.design, stop, rounds)
    if aa:
        summary = "A/A (base against itself): " + summary
    return StageResult(stage, status, summary, elapsed, target,
                       BenchDetails(env, comps, samples, tuple(done), None, rounds, stop),
                       str(run_dir))


def sample_rows(res: StageResult) -> list[tuple[str, int, str, float]]:
    """The benchmark samples of a result, as the state database stores them."""
    d = res.detail(BenchDetails)
    return [(x.variant, x.rep, x.metric, x.value) for x in d.samples] if d else []


def format_change(c: stats.Comparison) -> str:
    if c.change is None:
        return "n/a"
    if c.ci_low is None or c.ci_high is None:
        return f"{c.change:+.1%} [no interval yet]"
    return f"{c.change:+.1%} [{c.ci_low:+.1%}, {c.ci_high:+.1%}]"
