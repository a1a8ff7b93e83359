"""Reading a guest's serial console log.

Owns the failure patterns (oops, BUG, WARNING, panic, lockups, hung tasks, RCU
stalls, KASAN/UBSAN, GPF, invalid opcode, ``cut here``, unexpected reboot),
the allowlist of known false positives, and the guest's result protocol: the
init script (``patchflow/templates/boot/init.sh.j2``) prints one JSON object
per line between :data:`BEGIN` and :data:`END`, each ``{"name", "b64"}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field

INIT = "PATCHFLOW-INIT"
BEGIN = "===PATCHFLOW-RESULTS-BEGIN==="
END = "===PATCHFLOW-RESULTS-END==="
MARKERS = {"init": INIT, "begin": BEGIN, "end": END}

# "[    1.234567] " printk timestamp, stripped before matching so patterns can anchor at the start
_TS_RE = re.compile(r"^\[\s*\d+\.\d+\]\s?")

#: (kind, pattern) checked in order, the first that matches names the finding.
#: Patterns match the line with its timestamp stripped.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # "BUG: KASAN: use-after-free in shrink_folio_list+0x1d4/0x8a0"
    ("kasan", re.compile(r"^BUG: KASAN: ")),
    # "UBSAN: shift-out-of-bounds in mm/vmscan.c:1432:17"
    ("ubsan", re.compile(r"^UBSAN: ")),
    # "watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [stress-ng-vm:231]"
    ("soft-lockup", re.compile(r"BUG: soft lockup - CPU#\d+ stuck")),
    # "watchdog: Watchdog detected hard LOCKUP on cpu 1"
    ("hard-lockup", re.compile(r"Watchdog detected hard LOCKUP on cpu")),
    # "INFO: task kworker/u4:2:57 blocked for more than 122 seconds."
    ("hung-task", re.compile(r"^INFO: task .+ blocked for more than \d+ seconds")),
    # "rcu: INFO: rcu_sched detected stalls on CPUs/tasks:"
    # "rcu: INFO: rcu_preempt self-detected stall on CPU"
    ("rcu-stall", re.compile(r"rcu: INFO: rcu_\w+ (?:self-)?detected stalls?")),
    # "general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] PREEMPT SMP NOPTI"
    ("gpf", re.compile(r"^general protection fault")),
    # "invalid opcode: 0000 [#1] PREEMPT SMP NOPTI"
    ("invalid-opcode", re.compile(r"^invalid opcode: ")),
    # "kernel BUG at mm/vmscan.c:1380!"
    ("bug", re.compile(r"^kernel BUG at ")),
    # "BUG: kernel NULL pointer dereference, address: 0000000000000008"
    # "BUG: sleeping function called from invalid context at mm/vmscan.c:412"
    ("bug", re.compile(r"^BUG: ")),
    # "Oops: 0002 [#1] PREEMPT SMP NOPTI"
    ("oops", re.compile(r"^Oops: ")),
    # "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"
    ("panic", re.compile(r"Kernel panic - not syncing")),
    # "------------[ cut here ]------------"
    ("cut-here", re.compile(r"-+\[ cut here \]-+")),
    # "WARNING: CPU: 1 PID: 231 at mm/vmscan.c:1405 shrink_folio_list+0x5a/0x8a0"
    # "WARNING: possible circular locking dependency detected"
    ("warning", re.compile(r"^WARNING: ")),
    # "reboot: Restarting system" (we only ever power off)
    ("reboot", re.compile(r"^reboot: Restarting system")),
)

#: lines that look like a failure and are not one; matched before PATTERNS
FALSE_POSITIVES: tuple[re.Pattern[str], ...] = (
    # "Speculative Return Stack Overflow: WARNING: See https://kernel.org/doc/html/latest/admin-guide/hw-vuln/srso.html for mitigation options."
    re.compile(r"^Speculative Return Stack Overflow: WARNING:"),
    # "RETBleed: WARNING: Spectre v2 mitigation leaves CPU vulnerable to RETBleed attacks, data leaks possible!"
    re.compile(r"^RETBleed: WARNING:"),
    # "MDS CPU bug present and SMT on, data leak possible. See ..." (a hardware note, not a kernel BUG)
    re.compile(r"CPU bug present"),
)

# "reboot: Power down", printed when the guest's "poweroff -f" reaches the kernel
_POWER_DOWN_RE = re.compile(r"reboot: Power down")


#: a result name the guest may hand back: one plain path component, never ``..``
#: (the host writes results under these names; tests/unit/test_console.py::test_hostile_names)
RESULT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*$")
MAX_RESULT_NAME = 64


@dataclass(frozen=True)
class ConsoleFinding:
    """A kernel failure report found on the console."""

    kind: str
    line_no: int  # 1-based
    line: str
    excerpt: str


@dataclass(frozen=True)
class ConsoleScan:
    findings: tuple[ConsoleFinding, ...]
    init_seconds: float | None  # guest uptime when /init started
    results_complete: bool  # both markers seen
    powered_off: bool
    results: dict[str, bytes] = field(default_factory=dict)
    corrupt_lines: int = 0  # lines between the markers that were not result JSON

    @property
    def clean(self) -> bool:
        return not self.findings

    def text(self, name: str) -> str | None:
        raw = self.results.get(name)
        return raw.decode("utf-8", errors="replace") if raw is not None else None


def strip_timestamp(line: str) -> str:
    return _TS_RE.sub("", line.rstrip("\r\n"))


def classify_line(line: str) -> str | None:
    """The failure kind of one console line, or None."""
    body = strip_timestamp(line).strip()
    if not body or any(fp.search(body) for fp in FALSE_POSITIVES):
        return None
    for kind, pat in PATTERNS:
        if pat.search(body):
            return kind
    return None


def scan(text: str, context: int = 12, max_findings: int = 20) -> ConsoleScan:
    """Find failures, the init marker and the result block in a console log."""
    lines = text.splitlines()
    findings: list[ConsoleFinding] = []
    init_seconds: float | None = None
    in_results = False
    complete = False
    results: dict[str, bytes] = {}
    corrupt = 0
    powered_off = False
    last_finding_at = -10**9
    for i, raw in enumerate(lines):
        body = strip_timestamp(raw).strip()
        # anywhere in the line: /init's first write can follow text that ended
        # without a newline (firmware escapes when a quiet kernel printed nothing)
        if (at := body.find(INIT)) >= 0 and init_seconds is None:
            try:
                init_seconds = float(body[at + len(INIT):].split()[0])
            except (IndexError, ValueError):
                init_seconds = None
            continue
        if body == BEGIN:
            in_results = True
            continue
        if body == END:
            in_results = False
            complete = True
            continue
        if in_results and body.startswith("{"):
            item = _result_item(body)
            if item is None:
                corrupt += 1
            else:
                results[item[0]] = item[1]
            continue
        if _POWER_DOWN_RE.search(body):
            powered_off = True
            continue
        kind = classify_line(raw)
        # one report (cut here, WARNING, trace) is one finding, not one per line
        if kind == "cut-here":
            # "cut here" only opens a report: name it after the line that follows (WARNING, BUG)
            for nxt in lines[i + 1:i + 4]:
                follow = classify_line(nxt)
                if follow and follow != "cut-here":
                    kind = follow
                    break
        if kind and len(findings) < max_findings and i - last_finding_at > context:
            lo, hi = max(0, i - 2), min(len(lines), i + context)
            findings.append(ConsoleFinding(kind, i + 1, body, "\n".join(lines[lo:hi])))
            last_finding_at = i
        elif kind:
            last_finding_at = i
    return ConsoleScan(tuple(findings), init_seconds, complete, powered_off, results, corrupt)


def _result_item(line: str) -> tuple[str, bytes] | None:
    try:
        obj = json.loads(line)
        name, b64 = obj["name"], obj["b64"]
        if not isinstance(name, str) or not isinstance(b64, str):
            return None
        if len(name) > MAX_RESULT_NAME or not RESULT_NAME_RE.match(name):
            return None  # counted as a corrupt line: the guest is not trusted
        return name, base64.b64decode(b64, validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
