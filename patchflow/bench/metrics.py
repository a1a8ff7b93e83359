"""Benchmark metrics: what each one means, and reading them from what the guest sent back.

:data:`METRICS` is the one declaration of every metric's label, unit,
"better" direction and minimal effect of interest; the benchmark's verdicts, the profiles' ``primary`` lists
and the report all read it.  The parsers take the files the guest returns
(``stress-ng --yaml``, ``/proc/interrupts``, ``/proc/vmstat`` before and after
the workload) and each keeps a verbatim sample line as a comment
(tests/unit/test_bench.py feeds recorded files).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    unit: str
    #: "higher" or "lower" is better; "none": reported, never judged
    better: str
    #: minimal effect of interest, relative to the base median: "no significant
    #: difference" is claimed only when the interval excludes a change this large
    #: (patchflow.stats); 10%: about one run-to-run sd of stress-ng under TCG here
    mei: float = 0.10


#: every metric a run yields, in report order
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("bogo_ops_per_s", "stress-ng throughput", "bogo ops/s", "higher"),
    Metric("tlb_shootdowns", "TLB shootdowns", "IPIs per run", "lower"),
    Metric("call_ipis", "function-call IPIs", "IPIs per run", "lower"),
    Metric("tlb_per_reclaimed_page", "TLB shootdowns per reclaimed page", "IPIs per page",
           "lower"),
    Metric("pgscan", "pages scanned", "pages", "none"),
    Metric("pgsteal", "pages reclaimed", "pages", "none"),
    Metric("pswpout", "pages swapped out", "pages", "none"),
    Metric("pswpin", "pages swapped in", "pages", "none"),
)}


def metric(name: str) -> Metric:
    """The declared metric, or one with no direction for a name never declared."""
    return METRICS.get(name, Metric(name, name, "", "none"))


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
