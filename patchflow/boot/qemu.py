"""Booting kernels in QEMU: the argv, the accelerator probe, one boot and its verdict.

Owns:

* the QEMU argv (direct kernel boot, ``-nodefaults``, no network, the seccomp
  sandbox where this QEMU has it, the serial console on stdio streamed into a
  log file capped at :data:`CONSOLE_LIMIT`, ``-no-reboot``);
* the KVM probe: ``/dev/kvm`` existing proves nothing (guests hang on some
  hosts), so :func:`probe_kvm` boots the kernel under KVM (``patchflow doctor``,
  with no kernel at hand, only the firmware); :func:`choose_accel` caches that
  verdict per host kernel and QEMU version, otherwise multi-threaded TCG;
* :func:`boot`: one boot with a hard timeout whose console is scanned by
  :mod:`patchflow.boot.console`; an oops is FAIL, a hang (timeout) is ERROR
  with ``kind == "timeout"``, the log is always kept.  The details are
  :class:`BootRunDetails`.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from patchflow.boot import console
from patchflow.boot.initramfs import GuestSpec, initramfs
from patchflow.errors import CommandTimeout, InfraError, NotFound
from patchflow.result import Details, StageResult, Status, measure
from patchflow.runner import run, which
from patchflow.workspace import atomic_write_json

QEMU = "qemu-system-x86_64"
#: qboot, a minimal firmware for direct kernel boot, shipped by Debian's qemu-system-data
QBOOT = Path("/usr/share/qemu/qboot.rom")
DEFAULT_APPEND = ("console=ttyS0", "panic=-1", "quiet", "oops=panic", "softlockup_panic=1")
#: the most console output one boot may write to its log: a guest printing in a loop
#: must not fill the host's disk (tests/unit/test_runner.py::test_log_limit)
CONSOLE_LIMIT = 64 * 2**20
#: SeaBIOS prints one of these on its debug console once POST is done
SEABIOS_DONE = ("No bootable device", "Booting from")


def qemu_argv(kernel: Path, initrd: Path, *, accel: str = "tcg", mem_mb: int = 512, smp: int = 2,
              append: Sequence[str] = DEFAULT_APPEND, machine: str = "q35",
              bios: Path | None = None, sandbox: bool = True, cpu: str | None = None
              ) -> list[str]:
    """Direct kernel boot with nothing but a serial console on stdio.

    ``-nic none``: the guest runs kernel code under test and gets no network;
    ``-sandbox on``: QEMU itself runs under seccomp where it was built with it.
    ``bios``: another firmware, e.g. :data:`QBOOT` (Debian's qemu-system-data), which
    skips SeaBIOS's device probing before the kernel starts.
    """
    accel_arg = "tcg,thread=multi" if accel == "tcg" else accel
    argv = [QEMU, "-machine", machine, "-accel", accel_arg, "-m", str(mem_mb), "-smp", str(smp),
            "-nodefaults", "-no-user-config", "-nic", "none", "-display", "none",
            "-serial", "stdio", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", " ".join(append), "-no-reboot"]
    if sandbox:
        argv += ["-sandbox", "on"]
    if bios is not None:
        argv += ["-bios", str(bios)]
    if cpu is not None:
        argv += ["-cpu", cpu]
    # no "-cpu host" with KVM: it aborts on an MSR on some hosts (ENVIRONMENT.md)
    return argv


@functools.cache
def has_sandbox() -> bool:
    """Whether this QEMU was built with seccomp (``-sandbox`` is in its help)."""
    done = run([QEMU, "-help"], timeout=30, check=False)
    return "-sandbox" in done.stdout


@dataclass(frozen=True)
class AccelChoice:
    accel: str  # "kvm" or "tcg"
    reason: str


def _qemu_version() -> str:
    done = run([QEMU, "--version"], timeout=30)
    return done.stdout.splitlines()[0].strip() if done.stdout else "unknown"


def kvm_probe_argv(debugcon: Path) -> list[str]:
    """Boot only the firmware under KVM; SeaBIOS logs its POST to the debug console port."""
    return [QEMU, "-accel", "kvm", "-machine", "q35", "-nodefaults", "-nic", "none",
            "-display", "none", "-m", "64", "-no-reboot",
            "-debugcon", f"file:{debugcon}", "-global", "isa-debugcon.iobase=0x402"]


@dataclass(frozen=True)
class KvmProbe:
    usable: bool
    reason: str
    seconds: float


def probe_kvm(kernel: Path | None = None, *, cache: Path | None = None,
              timeout: float = 45.0) -> KvmProbe:
    """Does a KVM guest really run here?

    With a *kernel*: it must boot to ``/init`` and power off under KVM (the
    stages' probe).  Without one (``patchflow doctor``): the firmware must
    finish POST under KVM, a weaker check: on this kind of host SeaBIOS gets
    through POST and the kernel then hangs, which only a kernel boot shows
    (tests/integration/test_boot_debian_kernel.py::test_accel_probe_decides_and_is_cached).
    """
    if not os.path.exists("/dev/kvm"):
        return KvmProbe(False, "/dev/kvm does not exist", 0.0)
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return KvmProbe(False, "/dev/kvm is not accessible", 0.0)
    which(QEMU)
    if kernel is not None:
        assert cache is not None
        log = cache / "qemu" / "kvm-probe.log"
        log.unlink(missing_ok=True)
        run_ = boot(kernel, initramfs(cache, GuestSpec()), log=log, accel="kvm", mem_mb=256,
                    smp=1, timeout=timeout, stage="kvm-probe")
        if run_.result.status is Status.PASS:
            return KvmProbe(True, f"a KVM probe boot reached /init in {run_.wall_seconds:.1f}s",
                            round(run_.wall_seconds, 2))
        return KvmProbe(False, "a KVM probe boot failed ("
                        + run_.result.summary.splitlines()[0] + ")", round(run_.wall_seconds, 2))
    return _probe_firmware(min(timeout, 10.0))


def _probe_firmware(timeout: float) -> KvmProbe:
    with tempfile.TemporaryDirectory(prefix="kvm-probe-") as tmp:
        log = Path(tmp) / "debugcon"
        start = time.monotonic()
        try:
            res = run(kvm_probe_argv(log), timeout=timeout, check=False)
            why = f"qemu exited {res.returncode}: {res.tail.strip()[-200:]}"
        except CommandTimeout:
            why = "timed out"
        except InfraError as exc:
            why = str(exc)
        seconds = round(time.monotonic() - start, 2)
        text = log.read_text(errors="replace") if log.exists() else ""
    if any(marker in text for marker in SEABIOS_DONE):
        return KvmProbe(True, "the firmware finished POST under KVM (firmware only: a kernel "
                              "may still hang; the stages probe with a kernel boot)", seconds)
    last = text.strip().splitlines()[-1] if text.strip() else "no firmware output"
    return KvmProbe(False, f"guest hangs under KVM ({why}; firmware stopped at: {last!r})",
                    seconds)


def choose_accel(cache: Path, kernel: Path, *, timeout: float = 45.0, force: str | None = None
                 ) -> AccelChoice:
    """KVM only if a probe boot of *kernel* with it reaches /init and powers off; else TCG.

    The verdict is cached per (host kernel, QEMU version) in ``qemu/accel.json``.
    ``force`` ("kvm"/"tcg", from ``--accel`` or the workspace config) skips the probe.
    """
    if force and force != "auto":
        return AccelChoice(force, f"forced by the caller ({force})")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return AccelChoice("tcg", "no usable /dev/kvm")
    which(QEMU)
    key = f"{platform.release()} | {_qemu_version()}"
    cache_file = cache / "qemu" / "accel.json"
    try:
        cached = json.loads(cache_file.read_text())
        if cached.get("key") == key:
            return AccelChoice(cached["accel"], cached["reason"] + " (cached probe)")
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    probe = probe_kvm(kernel, cache=cache, timeout=timeout)
    choice = (AccelChoice("kvm", probe.reason) if probe.usable else
              AccelChoice("tcg", f"/dev/kvm exists but {probe.reason}; using TCG "
                                 "(multi-threaded)"))
    atomic_write_json(cache_file, {"key": key, "accel": choice.accel, "reason": choice.reason})
    return choice


@dataclass(frozen=True)
class BootRunDetails(Details):
    """What one boot did: the machine, the console's findings and why it ended."""

    kind: ClassVar[str] = "boot-run"
    outcome: str  # ok | timeout | qemu | unexpected-exit | corrupt-results | <finding kind>
    accel: str
    mem_mb: int
    smp: int
    kernel: str
    initrd: str
    wall_seconds: float
    init_seconds: float | None
    returncode: int | None
    findings: tuple[console.ConsoleFinding, ...]


@dataclass(frozen=True)
class BootRun:
    """One boot: its result, the scanned console and the guest's returned files."""

    result: StageResult
    scan: console.ConsoleScan
    log: Path
    wall_seconds: float
    accel: str
    argv: tuple[str, ...] = ()

    @property
    def files(self) -> dict[str, bytes]:
        return self.scan.results

    @property
    def init_seconds(self) -> float | None:
        return self.scan.init_seconds


def boot(kernel: Path, initrd: Path, *, log: Path, accel: str = "tcg", mem_mb: int = 512,
         smp: int = 2, timeout: float = 300.0, append: Sequence[str] = DEFAULT_APPEND,
         machine: str = "q35", bios: Path | None = None, stage: str = "boot",
         target: str | None = None, cpu: str | None = None,
         on_start: Callable[[list[str]], None] | None = None) -> BootRun:
    """Boot *kernel* with *initrd* and a hard timeout; the console goes to *log*.

    PASS: /init ran, the result block is complete, the guest powered off and the
    console shows no failure.  FAIL: an oops/BUG/WARNING/panic/lockup... (the
    excerpt is in the summary and the details' findings), or the guest ended
    without powering off (unexpected reboot/exit).  ERROR: a timeout (outcome
    "timeout": the guest hung), or a QEMU that did not start.
    """
    which(QEMU)
    if not kernel.is_file():
        raise NotFound(f"kernel image not found: {kernel}")
    argv = qemu_argv(kernel, initrd, accel=accel, mem_mb=mem_mb, smp=smp, append=append,
                     machine=machine, bios=bios, sandbox=has_sandbox(), cpu=cpu)
    if on_start:
        on_start(argv)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = log.stat().st_size if log.exists() else 0
    timed_out = False
    rc: int | None = None
    with measure() as sw:
        try:
            done = run(argv, log=log, timeout=timeout, check=False, capture=False,
                       log_limit=CONSOLE_LIMIT)
            rc = done.returncode
        except CommandTimeout:
            timed_out = True
    with open(log, encoding="utf-8", errors="replace") as fh:
        fh.seek(start)
        text = fh.read()
    res, sc = judge(text, timed_out=timed_out, returncode=rc, timeout=timeout, log=log,
                    stage=stage, target=target, elapsed=sw.elapsed,
                    machine=(accel, mem_mb, smp, str(kernel), str(initrd)))
    return BootRun(res, sc, log, sw.elapsed, accel, tuple(argv))


def run_guest(kernel: Path, spec: GuestSpec, *, cache: Path, log: Path,
              accel: str | None = None, mem_mb: int = 512, smp: int = 2, timeout: float = 300.0,
              stage: str = "boot", target: str | None = None) -> BootRun:
    """Build the initramfs for *spec* and boot *kernel* with it (``accel=None``: probe).

    The one call for callers that ship their own files and script into a guest
    (a livepatch ``.ko`` and the snippet that loads and checks it): the console
    log is at ``BootRun.log``, what the snippet handed back in ``BootRun.files``.
    """
    chosen = accel or choose_accel(cache, kernel).accel
    return boot(kernel, initramfs(cache, spec), log=log, accel=chosen, mem_mb=mem_mb, smp=smp,
                timeout=timeout, stage=stage, target=target)


def judge(text: str, *, timed_out: bool, returncode: int | None, timeout: float, log: Path,
          stage: str = "boot", target: str | None = None, elapsed: float = 0.0,
          machine: tuple[str, int, int, str, str] = ("tcg", 0, 0, "", "")
          ) -> tuple[StageResult, console.ConsoleScan]:
    """The verdict on one boot from its console text (tests/unit/test_qemu.py feeds recordings).

    Order matters: a kernel report beats everything (a hang after an oops is the
    oops); then a timeout; then QEMU failing to start; then a guest that stopped
    without results and power-off.
    """
    sc = console.scan(text)
    accel, mem_mb, smp, kernel, initrd = machine

    def result(status: Status, kind: str, summary: str) -> tuple[StageResult, console.ConsoleScan]:
        det = BootRunDetails(kind, accel, mem_mb, smp, kernel, initrd, round(elapsed, 2),
                             sc.init_seconds, returncode, sc.findings)
        return StageResult(stage, status, summary, elapsed, target, det, str(log)), sc

    if sc.findings:
        f = sc.findings[0]
        more = f" (+{len(sc.findings) - 1} more)" if len(sc.findings) > 1 else ""
        return result(Status.FAIL, f.kind, f"kernel {f.kind} on the console, line {f.line_no}: "
                      f"{f.line}{more}\n{f.excerpt}")
    if timed_out:
        where = "before /init" if sc.init_seconds is None else "after /init started"
        return result(Status.ERROR, "timeout",
                      f"guest hung: no power-off within {timeout:.0f}s ({where}); log kept: {log}")
    if returncode not in (0, None) and sc.init_seconds is None and f"{QEMU}: " in text:
        tail = "\n".join(text.splitlines()[-5:])
        return result(Status.ERROR, "qemu",
                      f"QEMU exited {returncode} before the guest ran:\n{tail}")
    if not sc.results_complete or not sc.powered_off:
        what = "reached /init but " if sc.init_seconds is not None else ""
        return result(Status.FAIL, "unexpected-exit",
                      f"guest {what}stopped without a complete result block and power-off "
                      "(unexpected reboot or exit)")
    if sc.corrupt_lines:
        return result(Status.ERROR, "corrupt-results",
                      f"{sc.corrupt_lines} result line(s) garbled on the console")
    init = f", /init at {sc.init_seconds:.2f}s" if sc.init_seconds is not None else ""
    return result(Status.PASS, "ok", f"booted and powered off cleanly in {elapsed:.1f}s{init}")
