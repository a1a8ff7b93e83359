"""The stress-ng reclaim benchmark, baseline against patched.

Owns:

* benchmark profiles, kept as data (``patchflow/data/profiles/*.toml``, or
  ``targets/profiles/*.toml`` in a config dir, which wins): the workload's shape
  per guest vCPU, the memcg and zram sizes, the pinned ``--vm-method``, and each
  metric's "better" direction;
* the guest snippet (``templates/boot/bench.sh.j2``) that sets up zram swap and
  a cgroup v2 memcg, snapshots ``/proc/interrupts`` and ``/proc/vmstat`` around
  ``stress-ng --metrics --yaml`` and hands everything back;
* parsing what comes back (stress-ng's YAML, ``/proc/interrupts``,
  ``/proc/vmstat``) into per-run metrics;
* the A/B orchestration: fresh boots, interleaved A B B A A B... so that drift
  over time hits both variants alike, and the per-metric comparison
  (:mod:`patchflow.stats`) with a verdict.
"""

from __future__ import annotations

import dataclasses
import platform
import re
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchflow import stats
from patchflow.boot import qemu
from patchflow.errors import ConfigError, NotFound
from patchflow.result import StageResult, Status
from patchflow.workspace import atomic_write_json

PROFILE_DIR = Path(__file__).parent.parent / "data" / "profiles"
VARIANTS = ("base", "patched")

# "CAL:      35822      36410   Function call interrupts"
# "TLB:       1024        998   TLB shootdowns"
# "ERR:          0"   (no per-CPU columns: one total)
_IRQ_ROW_RE = re.compile(r"^\s*([A-Za-z0-9_]+):((?:\s+\d+)+)(?:\s+(.*))?$")
# "pgscan_kswapd 123456"
_VMSTAT_RE = re.compile(r"^([a-z0-9_]+)\s+(\d+)$")
# "    - stressor: vm"
_YAML_ITEM_RE = re.compile(r"^\s*-\s+([a-z0-9-]+):\s*(.*)$")
# "      bogo-ops-per-second-real-time: 291.758469"
_YAML_KV_RE = re.compile(r"^\s+([a-z0-9-]+):\s*(.*)$")


# --------------------------------------------------------------------------
# profiles


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    vcpus: int
    guest_mem_base_mb: int
    guest_mem_per_vcpu_mb: int
    vm_workers_per_vcpu: int
    vm_bytes_per_vcpu_mb: int
    memcg_max_per_vcpu_mb: int
    zram_per_vcpu_mb: int
    vm_method: str
    timeout_s: int
    boot_timeout_s: int
    require_memcg: bool
    require_zram: bool
    require_reclaim: bool
    reps: int
    alpha: float
    primary: tuple[str, ...]
    better: Mapping[str, str]
    path: Path

    def vm_bytes_mb(self, vcpus: int) -> int:
        # stress-ng splits --vm-bytes between the --vm workers: it is the total
        return self.vm_bytes_per_vcpu_mb * vcpus

    def workers(self, vcpus: int) -> int:
        return self.vm_workers_per_vcpu * vcpus

    def memcg_mb(self, vcpus: int) -> int:
        return self.memcg_max_per_vcpu_mb * vcpus

    def zram_mb(self, vcpus: int) -> int:
        return self.zram_per_vcpu_mb * vcpus

    def mem_mb(self, vcpus: int) -> int:
        return self.guest_mem_base_mb + self.guest_mem_per_vcpu_mb * vcpus

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        d["better"] = dict(self.better)
        d["primary"] = list(self.primary)
        return d


_INT_KEYS = ("vcpus", "guest_mem_base_mb", "guest_mem_per_vcpu_mb", "vm_workers_per_vcpu",
             "vm_bytes_per_vcpu_mb", "memcg_max_per_vcpu_mb", "zram_per_vcpu_mb", "timeout_s",
             "boot_timeout_s", "reps")
# stress-ng --vm-method names are plain words ("write64", "flip", "all")
_METHOD_RE = re.compile(r"^[a-z0-9-]+$")


def load_profile(path: Path) -> Profile:
    """Read one profile strictly: unknown or missing keys name the file and the key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"benchmark profile not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, f"not valid TOML: {exc}") from None
    known = {f.name for f in dataclasses.fields(Profile)} - {"name", "path"}
    for key in data:
        if key not in known:
            raise ConfigError(path, key, f"unknown key (known keys: {', '.join(sorted(known))})")
    for key in known:
        if key not in data:
            raise ConfigError(path, key, "missing required key")
    for key in _INT_KEYS:
        v = data[key]
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(path, key, "expected a positive integer")
    for key in ("require_memcg", "require_zram", "require_reclaim"):
        if not isinstance(data[key], bool):
            raise ConfigError(path, key, "expected boolean")
    for key in ("description", "vm_method"):
        if not isinstance(data[key], str):
            raise ConfigError(path, key, "expected string")
    if not _METHOD_RE.match(data["vm_method"]):
        raise ConfigError(path, "vm_method", "not a stress-ng vm method name")
    alpha = data["alpha"]
    if not isinstance(alpha, float) or not 0 < alpha < 1:
        raise ConfigError(path, "alpha", "expected a number between 0 and 1")
    better = data["better"]
    if not isinstance(better, dict):
        raise ConfigError(path, "better", "expected a table metric = \"higher\"|\"lower\"|\"none\"")
    for metric, direction in better.items():
        if metric not in METRICS:
            raise ConfigError(path, f"better.{metric}", f"unknown metric (known: {', '.join(METRICS)})")
        if direction not in stats.DIRECTIONS:
            raise ConfigError(path, f"better.{metric}", "must be higher, lower or none")
    primary = data["primary"]
    if not isinstance(primary, list) or not all(isinstance(p, str) and p in better for p in primary):
        raise ConfigError(path, "primary", "expected a list of metrics named in [better]")
    return Profile(name=path.stem, path=path, primary=tuple(primary), better=dict(better),
                   alpha=alpha, **{k: data[k] for k in known - {"primary", "better", "alpha"}})


def find_profile(name: str, config_root: Path | None = None) -> Profile:
    """``targets/profiles/NAME.toml`` in the config dir if present, else the packaged one."""
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]*$", name):
        raise NotFound(f"invalid profile name {name!r}")
    dirs = ([config_root / "targets" / "profiles"] if config_root else []) + [PROFILE_DIR]
    for d in dirs:
        if (d / f"{name}.toml").is_file():
            return load_profile(d / f"{name}.toml")
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.toml")})
    raise NotFound(f"unknown benchmark profile {name!r} (known: {', '.join(known)})")


# --------------------------------------------------------------------------
# the guest side


def stress_argv(profile: Profile, vcpus: int) -> list[str]:
    """The stress-ng arguments (after ``stress-ng``) for *vcpus* guest CPUs."""
    return ["--vm", str(profile.workers(vcpus)), "--vm-bytes", f"{profile.vm_bytes_mb(vcpus)}M",
            "--vm-keep", "--vm-method", profile.vm_method, "--timeout", f"{profile.timeout_s}s",
            "--metrics", "--yaml", "/tmp/stress.yaml"]


def bench_snippet(profile: Profile, vcpus: int) -> str:
    env = qemu.template_env()
    return env.get_template("bench.sh.j2").render(
        profile=profile, workers=profile.workers(vcpus), vm_bytes_mb=profile.vm_bytes_mb(vcpus),
        memcg_mb=profile.memcg_mb(vcpus),
        zram_mb=profile.zram_mb(vcpus), stress_args=stress_argv(profile, vcpus))


def guest_spec(profile: Profile, vcpus: int) -> qemu.GuestSpec:
    return qemu.GuestSpec(snippets=(("bench", bench_snippet(profile, vcpus)),), stress_ng=True)


# --------------------------------------------------------------------------
# parsing what the guest sent back


def parse_interrupts(text: str) -> dict[str, int]:
    """Row label -> count summed over CPUs (``TLB``, ``CAL``, ``LOC``, IRQ numbers...)."""
    lines = text.splitlines()
    if not lines:
        return {}
    ncpu = len(lines[0].split())  # header: "CPU0 CPU1 ..."
    out: dict[str, int] = {}
    for line in lines[1:]:
        if m := _IRQ_ROW_RE.match(line):
            counts = m.group(2).split()
            # a row's description may start with a number ("IO-APIC 2-edge" does not, but
            # "PCI-MSI 512000-edge" does after the counts): only the first ncpu fields are counts
            out[m.group(1)] = sum(int(c) for c in counts[:ncpu])
    return out


def parse_vmstat(text: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for line in text.splitlines()
            if (m := _VMSTAT_RE.match(line.strip()))}


def parse_stress_yaml(text: str) -> list[dict[str, str]]:
    """The ``metrics:`` list of a ``stress-ng --yaml`` file (values as strings).

    stress-ng writes a fixed, simple YAML shape; reading just that keeps PyYAML
    out of the dependencies (tests/data/stress-ng/ holds recorded files).
    """
    items: list[dict[str, str]] = []
    in_metrics = False
    for line in text.splitlines():
        if not line.strip() or line.strip() in ("---", "..."):
            continue
        if not line.startswith(" "):
            in_metrics = line.rstrip() == "metrics:"
            continue
        if not in_metrics:
            continue
        if m := _YAML_ITEM_RE.match(line):
            items.append({m.group(1): m.group(2).strip().strip("'\"")})
        elif (m := _YAML_KV_RE.match(line)) and items:
            items[-1][m.group(1)] = m.group(2).strip().strip("'\"")
    return items


#: every metric a run yields, in report order
METRICS = ("bogo_ops_per_s", "tlb_shootdowns", "call_ipis", "tlb_per_reclaimed_page", "pgscan",
           "pgsteal", "pswpout", "pswpin")


class IncompleteRun(Exception):
    """The guest ran but did not hand back what a metric needs (not a pass)."""


def run_metrics(files: Mapping[str, bytes], stressor: str = "vm") -> dict[str, float]:
    """Metrics of one run from the files the guest returned; :class:`IncompleteRun` if absent."""
    def text(name: str) -> str:
        if name not in files:
            raise IncompleteRun(f"the guest returned no {name}")
        return files[name].decode("utf-8", errors="replace")

    items = [i for i in parse_stress_yaml(text("stress.yaml")) if i.get("stressor") == stressor]
    if not items or "bogo-ops-per-second-real-time" not in items[0]:
        rc = files.get("stress.rc", b"?").decode()
        raise IncompleteRun(f"stress-ng printed no metrics for {stressor!r} (exit code {rc})")
    irq_a, irq_b = parse_interrupts(text("interrupts.before")), parse_interrupts(text("interrupts.after"))
    vm_a, vm_b = parse_vmstat(text("vmstat.before")), parse_vmstat(text("vmstat.after"))

    def irq(row: str) -> int:
        return irq_b.get(row, 0) - irq_a.get(row, 0)

    def vm(*names: str) -> int:
        return sum(vm_b.get(k, 0) - vm_a.get(k, 0) for k in names)

    def reclaimed(what: str) -> int:
        # memcg-limit reclaim is not counted in pgscan_kswapd/_direct (only in the
        # memcg's own stats) but is in the _anon/_file split (5.8+), so prefer that;
        # summing both splits would count pages twice, and _direct_throttle counts
        # events, not pages (tests/data/stress-ng/6.12-reclaim-smoke)
        if f"{what}_anon" in vm_b:
            return vm(f"{what}_anon", f"{what}_file")
        return vm(f"{what}_kswapd", f"{what}_direct", f"{what}_khugepaged")

    if "pgsteal_kswapd" not in vm_b or "TLB" not in irq_b:
        raise IncompleteRun("the kernel does not count reclaim or TLB shootdowns: /proc/vmstat "
                            "lacks pgsteal_* (CONFIG_VM_EVENT_COUNTERS) or /proc/interrupts "
                            "lacks the TLB row")
    tlb, steal = irq("TLB"), reclaimed("pgsteal")
    return {
        "bogo_ops_per_s": float(items[0]["bogo-ops-per-second-real-time"]),
        "tlb_shootdowns": float(tlb),
        "call_ipis": float(irq("CAL")),
        # 0 reclaimed pages: nothing to divide by; reported as 0 so the run still counts
        "tlb_per_reclaimed_page": tlb / steal if steal else 0.0,
        "pgscan": float(reclaimed("pgscan")),
        "pgsteal": float(steal),
        "pswpout": float(vm("pswpout")),
        "pswpin": float(vm("pswpin")),
    }


# --------------------------------------------------------------------------
# one run, and the A/B


@dataclass(frozen=True)
class Rep:
    variant: str
    rep: int
    status: Status
    summary: str
    metrics: dict[str, float]
    log: Path
    kernel_release: str = ""
    wall_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"variant": self.variant, "rep": self.rep, "status": self.status.value,
                "summary": self.summary, "metrics": self.metrics, "log": str(self.log),
                "kernel_release": self.kernel_release, "wall_seconds": round(self.wall_seconds, 1)}


def run_once(kernel: Path, profile: Profile, *, cache: Path, log: Path, accel: str,
             vcpus: int | None = None, variant: str = "base", rep: int = 0,
             target: str | None = None) -> Rep:
    """One fresh boot running the profile's workload once."""
    n = vcpus or profile.vcpus
    initrd = qemu.initramfs(cache, guest_spec(profile, n))
    br = qemu.boot(kernel, initrd, log=log, accel=accel, mem_mb=profile.mem_mb(n), smp=n,
                   timeout=profile.boot_timeout_s + profile.timeout_s, stage="bench-run",
                   target=target)
    release = br.scan.text("kernel") or ""
    if br.result.status is not Status.PASS:
        return Rep(variant, rep, br.result.status, br.result.summary, {}, log, release,
                   br.wall_seconds)
    skipped = br.scan.text("skipped")
    if skipped:
        return Rep(variant, rep, Status.ERROR, f"workload not run: {skipped} in this kernel", {},
                   log, release, br.wall_seconds)
    try:
        metrics = run_metrics(br.files)
    except IncompleteRun as exc:
        return Rep(variant, rep, Status.ERROR, f"incomplete run: {exc}", {}, log, release,
                   br.wall_seconds)
    if profile.require_reclaim and metrics["pgsteal"] == 0:
        return Rep(variant, rep, Status.ERROR, "the workload never reached reclaim (pgsteal 0): "
                   f"raise vm_bytes_per_vcpu_mb or lower the memcg limit in {profile.path}",
                   metrics, log, release, br.wall_seconds)
    extras = [f"{k} {br.scan.text(k)}" for k in ("memcg", "zram")]
    return Rep(variant, rep, Status.PASS, f"{metrics['bogo_ops_per_s']:.1f} bogo ops/s; "
               + ", ".join(extras), metrics, log, release, br.wall_seconds)


def interleaved(reps: int, variants: Sequence[str] = VARIANTS) -> list[tuple[int, str]]:
    """A B, B A, A B...: never all of A before all of B; alternating which goes first
    cancels a linear drift within each pair (tests/unit/test_bench.py::test_interleaved)."""
    order: list[tuple[int, str]] = []
    for r in range(reps):
        vs = list(variants) if r % 2 == 0 else list(reversed(variants))
        order.extend((r, v) for v in vs)
    return order


@dataclass(frozen=True)
class BenchReport:
    result: StageResult
    reps: tuple[Rep, ...]
    comparisons: tuple[stats.Comparison, ...]
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def samples(self) -> list[tuple[str, int, str, float]]:
        return [(r.variant, r.rep, m, v) for r in self.reps for m, v in r.metrics.items()]

    def to_json(self) -> dict[str, Any]:
        return {"result": self.result.to_json(), "environment": self.environment,
                "comparisons": [c.to_json() for c in self.comparisons],
                "reps": [r.to_json() for r in self.reps]}


Progress = Callable[[str], None]


def _nop(_: str) -> None:
    pass


def run_ab(kernels: Mapping[str, Path], profile: Profile, *, cache: Path, run_dir: Path,
           accel: qemu.AccelChoice, reps: int | None = None, vcpus: int | None = None,
           target: str | None = None, progress: Progress = _nop) -> BenchReport:
    """Boot each variant *reps* times, interleaved, and compare patched against base.

    A run that oopses makes the whole benchmark FAIL (it names the variant); a
    hang or an incomplete run makes it ERROR; neither is averaged away.  With
    all runs complete, a primary metric that significantly regressed is FAIL,
    another regressed metric WARN, anything else PASS.
    """
    n_reps = reps or profile.reps
    n = vcpus or profile.vcpus
    run_dir.mkdir(parents=True, exist_ok=True)
    env: dict[str, Any] = {"vcpus": n, "accel": accel.to_json(), "profile": profile.to_json(),
                           "reps": n_reps, "host": platform.node(), "host_kernel": platform.release(),
                           "started": time.time(), "kernels": {v: str(k) for v, k in kernels.items()}}
    done: list[Rep] = []
    start = time.monotonic()
    order = interleaved(n_reps, tuple(kernels))
    for i, (r, variant) in enumerate(order, start=1):
        progress(f"run {i}/{len(order)}: {variant} rep {r}")
        rep = run_once(kernels[variant], profile, cache=cache,
                       log=run_dir / f"console-{variant}-{r}.log", accel=accel.accel, vcpus=n,
                       variant=variant, rep=r, target=target)
        done.append(rep)
        atomic_write_json(run_dir / "bench-progress.json", [x.to_json() for x in done])
        if rep.status is not Status.PASS:
            break  # a broken kernel or guest will not get better by booting it again
    env["kernel_releases"] = {r.variant: r.kernel_release for r in done if r.kernel_release}
    elapsed = time.monotonic() - start
    bad = [r for r in done if r.status is not Status.PASS]
    if bad:
        first = bad[0]
        result = StageResult("bench", first.status, f"{first.variant} run {first.rep} did not "
                             f"complete: {first.summary}", elapsed, target,
                             {"environment": env, "failed_run": first.to_json()}, str(first.log))
        return BenchReport(result, tuple(done), (), env)
    comps = []
    for metric in METRICS:
        a = [r.metrics[metric] for r in done if r.variant == "base"]
        b = [r.metrics[metric] for r in done if r.variant == "patched"]
        comps.append(stats.compare(metric, a, b, better=profile.better.get(metric, "none"),
                                   alpha=profile.alpha))
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
    floor = stats.min_p(n_reps, n_reps)
    if floor >= profile.alpha:
        summary += (f" (with {n_reps} reps per variant the smallest possible p is {floor:.3f}, "
                    f"not below alpha {profile.alpha}: use more reps)")
    result = StageResult("bench", status, summary, elapsed, target,
                         {"environment": env, "comparisons": [c.to_json() for c in comps]},
                         str(run_dir))
    return BenchReport(result, tuple(done), tuple(comps), env)


def format_change(c: stats.Comparison) -> str:
    lo, hi = c.ci
    return f"{c.change:+.1%} [{lo:+.1%}, {hi:+.1%}]"
