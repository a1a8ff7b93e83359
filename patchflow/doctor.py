"""Host checks: which stages can run here, with which tool versions, and what to install.

Every stage declares the host tools it needs in :data:`patchflow.tools.STAGE_TOOLS`;
:func:`diagnose` looks each one up, asks the main ones for their version,
measures the free space of the artefact cache, and runs the one KVM probe
(:func:`patchflow.boot.qemu.probe_kvm`), because ``/dev/kvm`` existing proves
nothing on hosts where guests hang.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchflow import runner
from patchflow.errors import InfraError
from patchflow.tools import PACKAGES, STAGE_TOOLS

#: tools whose version doctor prints (the first line of ``TOOL --version``)
VERSIONED = ("git", "b4", "make", "gcc", "qemu-system-x86_64", "stress-ng")
#: "git version 2.39.5", "QEMU emulator version 7.2.22 (Debian ...)", "gcc (Debian 12.2.0-14) 12.2.0",
#: "stress-ng, version 0.15.06 (gcc 12.2.0, ...)", "0.16.0": the number after "version",
#: else the last dotted number before any "(" remark
_VERSION_RE = re.compile(r"version\s+v?(\d+(?:\.\d+)+)", re.I)
_DOTTED_RE = re.compile(r"(\d+(?:\.\d+)+)")


def short_version(line: str) -> str:
    """The version number in a ``--version`` line ('' when there is none)."""
    m = _VERSION_RE.search(line)
    if m:
        return m.group(1)
    head = re.sub(r"\([^)]*\)", " ", line)
    nums = _DOTTED_RE.findall(head)
    return nums[-1] if nums else ""


@dataclass(frozen=True)
class Check:
    stage: str
    tool: str
    package: str
    found: str | None
    optional: bool
    version: str = ""

    @property
    def ok(self) -> bool:
        return self.found is not None


@dataclass
class Diagnosis:
    checks: list[Check] = field(default_factory=list)
    kvm: Any = None  # patchflow.boot.qemu.KvmProbe
    cache: str = ""
    cache_free_gib: float = 0.0
    cache_free_bytes: int = 0
    checked: float = field(default_factory=time.time)

    def stages(self) -> list[str]:
        return list(dict.fromkeys(c.stage for c in self.checks))

    def stage_ok(self, stage: str) -> bool:
        return all(c.ok or c.optional for c in self.checks if c.stage == stage)

    @property
    def ok(self) -> bool:
        return all(self.stage_ok(s) for s in self.stages())

    def versions(self) -> dict[str, str]:
        """tool -> version number, for the versioned tools that were found."""
        return {c.tool: short_version(c.version) for c in self.checks
                if c.version and c.tool in VERSIONED}

    def missing_packages(self) -> list[str]:
        return sorted({c.package for c in self.checks if not c.ok and not c.optional})

    def to_json(self) -> dict[str, Any]:
        from patchflow.gate.records import iso

        return {"ok": self.ok, "checked": iso(self.checked), "versions": self.versions(), "stages": {s: self.stage_ok(s) for s in self.stages()},
                "checks": [{"stage": c.stage, "tool": c.tool, "package": c.package,
                            "found": c.found, "optional": c.optional, "version": c.version}
                           for c in self.checks],
                "missing_packages": self.missing_packages(),
                "cache": {"path": self.cache, "free_gib": round(self.cache_free_gib, 1),
                          "free_bytes": self.cache_free_bytes},
                "kvm": None if self.kvm is None else {"usable": self.kvm.usable,
                                                      "reason": self.kvm.reason,
                                                      "seconds": self.kvm.seconds}}


def locate(tool: str) -> str | None:
    if tool.startswith("file:"):
        path = tool[5:]
        return path if os.path.exists(path) else None
    found = shutil.which(tool)
    if found is None and tool == "b4" and importlib.util.find_spec("b4") is not None:
        return "python module b4"
    return found


def version(tool: str) -> str:
    if tool == "b4" and shutil.which("b4") is None:
        try:
            return importlib.metadata.version("b4")  # the python module, no script on PATH
        except importlib.metadata.PackageNotFoundError:
            return ""
    try:
        done = runner.run([tool, "--version"], check=False, timeout=20)
    except InfraError:
        return ""
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines else ""


def diagnose(stages: list[str] | None = None, kvm: bool = True,
             cache: Path | None = None) -> Diagnosis:
    from patchflow.workspace import default_cache

    d = Diagnosis()
    for stage in stages or list(STAGE_TOOLS):
        for tool, optional in STAGE_TOOLS[stage]:
            found = locate(tool)
            ver = version(tool) if found and tool in VERSIONED else ""
            d.checks.append(Check(stage, tool.removeprefix("file:"), PACKAGES[tool], found,
                                  optional, ver))
    where = cache or default_cache()
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    d.cache = str(where)
    d.cache_free_bytes = shutil.disk_usage(probe).free
    d.cache_free_gib = d.cache_free_bytes / 2**30
    if kvm and shutil.which("qemu-system-x86_64"):
        from patchflow.boot.qemu import probe_kvm

        d.kvm = probe_kvm()
    return d
