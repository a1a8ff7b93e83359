"""Host checks: which stages can run here, and what to install for the others.

Every stage declares the host tools it needs; :func:`diagnose` looks each
one up and names the Debian package (or PyPI project) that provides a
missing one.  :func:`probe_kvm` proves that KVM really runs a guest instead
of trusting ``/dev/kvm``: here /dev/kvm exists but guests hang, so the probe
boots only the firmware (SeaBIOS) and waits for it to finish POST.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchflow import runner
from patchflow.errors import CommandTimeout, InfraError

# tool, Debian package, optional?  (optional tools make a stage faster, not possible)
STAGES: dict[str, list[tuple[str, str, bool]]] = {
    "series": [("git", "git", False), ("b4", "pip:b4", False)],
    "mirror": [("public-inbox-init", "public-inbox", False),
               ("public-inbox-mda", "public-inbox", False),
               ("public-inbox-httpd", "public-inbox", False)],
    "tree": [("git", "git", False), ("apt-get", "apt", False), ("dpkg-deb", "dpkg", False),
             ("tar", "tar", False), ("xz", "xz-utils", False)],
    "backport": [("git", "git", False)],
    "build": [("make", "make", False), ("gcc", "gcc", False), ("ld", "binutils", False),
              ("flex", "flex", False), ("bison", "bison", False), ("bc", "bc", False),
              ("perl", "perl", False), ("file:/usr/include/libelf.h", "libelf-dev", False),
              ("file:/usr/include/openssl/opensslv.h", "libssl-dev", False),
              ("pahole", "dwarves", True), ("ccache", "ccache", True)],
    "boot": [("qemu-system-x86_64", "qemu-system-x86", False),
             ("file:/bin/busybox", "busybox-static", False), ("cpio", "cpio", False),
             ("gzip", "gzip", False), ("ldd", "libc-bin", False)],
    "bench": [("stress-ng", "stress-ng", False)],
    "livepatch": [("make", "make", False), ("gcc", "gcc", False),
                  ("objcopy", "binutils", False), ("kpatch-build", "kpatch-build", True)],
    "report": [("chromium", "chromium", True)],
}

SEABIOS_DONE = ("No bootable device", "Booting from")


@dataclass(frozen=True)
class Check:
    stage: str
    tool: str
    package: str
    found: str | None
    optional: bool

    @property
    def ok(self) -> bool:
        return self.found is not None


@dataclass
class Diagnosis:
    checks: list[Check] = field(default_factory=list)
    kvm: dict[str, Any] = field(default_factory=dict)

    def stage_ok(self, stage: str) -> bool:
        return all(c.ok or c.optional for c in self.checks if c.stage == stage)

    @property
    def ok(self) -> bool:
        return all(self.stage_ok(c.stage) for c in self.checks)

    def missing_packages(self) -> list[str]:
        return sorted({c.package for c in self.checks if not c.ok and not c.optional})

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok,
                "stages": {s: self.stage_ok(s) for s in dict.fromkeys(c.stage for c in self.checks)},
                "checks": [{"stage": c.stage, "tool": c.tool, "package": c.package,
                            "found": c.found, "optional": c.optional} for c in self.checks],
                "missing_packages": self.missing_packages(), "kvm": self.kvm}


def locate(tool: str) -> str | None:
    if tool.startswith("file:"):
        path = tool[5:]
        return path if os.path.exists(path) else None
    found = shutil.which(tool)
    if found is None and tool == "b4" and importlib.util.find_spec("b4") is not None:
        return "python module b4"
    return found


def diagnose(stages: list[str] | None = None, kvm: bool = True) -> Diagnosis:
    d = Diagnosis()
    for stage in stages or list(STAGES):
        for tool, pkg, optional in STAGES[stage]:
            d.checks.append(Check(stage, tool.removeprefix("file:"), pkg, locate(tool), optional))
    if kvm:
        d.kvm = probe_kvm()
    return d


def kvm_probe_argv(accel: str, debugcon: Path) -> list[str]:
    """Boot only the firmware; SeaBIOS logs its POST to the debug console port."""
    return ["qemu-system-x86_64", "-accel", accel, "-machine", "q35", "-nodefaults",
            "-display", "none", "-m", "64", "-no-reboot",
            "-debugcon", f"file:{debugcon}", "-global", "isa-debugcon.iobase=0x402"]


def probe_kvm(timeout: float = 10.0) -> dict[str, Any]:
    """Does a KVM guest really run here?  {'usable': bool, 'reason': str, 'seconds': float}."""
    if not os.path.exists("/dev/kvm"):
        return {"usable": False, "reason": "/dev/kvm does not exist", "seconds": 0.0}
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return {"usable": False, "reason": "/dev/kvm is not accessible", "seconds": 0.0}
    if shutil.which("qemu-system-x86_64") is None:
        return {"usable": False, "reason": "qemu-system-x86_64 missing", "seconds": 0.0}
    with tempfile.TemporaryDirectory(prefix="kvm-probe-") as tmp:
        log = Path(tmp) / "debugcon"
        start = time.monotonic()
        try:
            res = runner.run(kvm_probe_argv("kvm", log), timeout=timeout, check=False)
            reason = f"qemu exited {res.returncode}: {res.tail.strip()[-200:]}"
        except CommandTimeout:
            reason = "timed out"
        except InfraError as exc:
            reason = str(exc)
        seconds = time.monotonic() - start
        text = log.read_text(errors="replace") if log.exists() else ""
    if any(marker in text for marker in SEABIOS_DONE):
        return {"usable": True, "reason": "firmware finished POST under KVM",
                "seconds": round(seconds, 2)}
    last = text.strip().splitlines()[-1] if text.strip() else "no firmware output"
    return {"usable": False, "seconds": round(seconds, 2),
            "reason": f"guest hangs under KVM ({reason}; firmware stopped at: {last!r}); "
                      "stages fall back to TCG"}
