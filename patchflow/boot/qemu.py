"""Booting kernels in QEMU: initramfs assembly, the accelerator probe, the boot itself.

Owns:

* the guest initramfs: Debian's busybox-static, optionally stress-ng with the
  shared libraries ``ldd`` lists (copied to the same paths), extra files (a
  livepatch ``.ko``...), and an ``/init`` rendered from
  ``templates/boot/init.sh.j2``.  The cpio (newc, gzip) is written in Python,
  reproducibly (mtime 0), and cached by content hash;
* the QEMU argv (direct kernel boot, ``-nodefaults``, serial console on stdio
  streamed into a log file, ``-no-reboot``);
* the KVM probe: ``/dev/kvm`` existing proves nothing (guests hang on some
  hosts), so a short probe boot decides, its verdict cached per host kernel and
  QEMU version; otherwise multi-threaded TCG;
* :func:`boot`: one boot with a hard timeout whose console is scanned by
  :mod:`patchflow.boot.console`; an oops is FAIL, a hang (timeout) is ERROR with
  ``details["kind"] == "timeout"``, the log is always kept.
* :func:`debian_kernel`: a prebuilt Debian cloud kernel for a boot check that
  needs no build.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from patchflow.boot import console
from patchflow.errors import CommandTimeout, InfraError, NotFound
from patchflow.result import StageResult, Status, measure
from patchflow.runner import run, which
from patchflow.workspace import atomic_write, atomic_write_json

QEMU = "qemu-system-x86_64"
#: qboot, a minimal firmware for direct kernel boot, shipped by Debian's qemu-system-data
QBOOT = Path("/usr/share/qemu/qboot.rom")
DEFAULT_APPEND = ("console=ttyS0", "panic=-1", "quiet", "oops=panic", "softlockup_panic=1")
TEMPLATES = Path(__file__).parent.parent / "templates" / "boot"
# names handed back by the guest become JSON keys and file names: keep them plain
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# "	libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f7db89c0000)"
# "	/lib64/ld-linux-x86-64.so.2 (0x00007f7db9bf8000)"
# "	linux-vdso.so.1 (0x00007ffd...)"  (no file: skipped)
_LDD_RE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


# --------------------------------------------------------------------------
# the init script


def template_env() -> jinja2.Environment:
    """The templates of ``templates/boot/``; StrictUndefined makes a missing variable an error."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - a shell script, not HTML
    )


def render_init(snippets: Sequence[tuple[str, str]] = (), modules: Sequence[str] = (),
                dmesg_lines: int = 200) -> str:
    """The guest's ``/init``: mounts, then each ``(name, shell snippet)``, then the results.

    Snippets use the helpers the script defines: ``pf_file NAME FILE``,
    ``pf_value NAME VALUE`` and ``pf_run NAME CMD...`` (output and exit code).
    *modules* are guest paths of ``.ko`` files to ``insmod`` first.
    """
    for name, _ in snippets:
        _check_name(name)
    return template_env().get_template("init.sh.j2").render(
        snippets=list(snippets), modules=list(modules), dmesg_lines=dmesg_lines,
        markers=console.MARKERS)


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid guest result/snippet name {name!r}")
    return name


# --------------------------------------------------------------------------
# cpio (newc) writer


@dataclass(frozen=True)
class Entry:
    """One initramfs member; ``data`` for files, ``target`` for symlinks, ``rdev`` for nodes."""

    path: str  # inside the guest, absolute
    mode: int
    data: bytes = b""
    target: str = ""
    rdev: tuple[int, int] = (0, 0)

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(f"{self.path}\0{self.mode:o}\0{self.target}\0{self.rdev}\0".encode())
        h.update(self.data)
        return h.hexdigest()


def _newc_header(ino: int, mode: int, size: int, namesize: int, rdev: tuple[int, int]) -> bytes:
    fields = [ino, mode, 0, 0, 1, 0, size, 0, 0, rdev[0], rdev[1], namesize, 0]
    return b"070701" + b"".join(f"{f:08X}".encode() for f in fields)


def _pad4(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def write_cpio(entries: Iterable[Entry]) -> bytes:
    """A newc archive, parents before children, all owned by root, mtime 0."""
    out = io.BytesIO()
    all_entries = _with_parents(entries)
    for ino, e in enumerate(all_entries, start=1):
        name = e.path.lstrip("/").encode() + b"\0"
        body = e.target.encode() if stat.S_ISLNK(e.mode) else e.data
        hdr = _newc_header(ino, e.mode, len(body), len(name), e.rdev)
        out.write(hdr + name + _pad4(len(hdr) + len(name)))
        out.write(body + _pad4(len(body)))
    trailer = b"TRAILER!!!\0"
    hdr = _newc_header(0, 0, 0, len(trailer), (0, 0))
    out.write(hdr + trailer + _pad4(len(hdr) + len(trailer)))
    return out.getvalue()


def _with_parents(entries: Iterable[Entry]) -> list[Entry]:
    by_path: dict[str, Entry] = {}
    for e in entries:
        parts = e.path.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/" + "/".join(parts[:i])
            by_path.setdefault(d, Entry(d, stat.S_IFDIR | 0o755))
        by_path[e.path] = e
    return [by_path[p] for p in sorted(by_path)]


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


# --------------------------------------------------------------------------
# initramfs contents


def parse_ldd(output: str) -> list[str]:
    """Library paths from ``ldd`` output (the vdso has no file and is skipped)."""
    return [m.group(1) for line in output.splitlines() if (m := _LDD_RE.match(line))]


def binary_with_libs(binary: Path, guest_path: str) -> list[Entry]:
    """*binary* at *guest_path* plus every library ``ldd`` lists, at the same paths."""
    entries = [Entry(guest_path, stat.S_IFREG | 0o755, binary.read_bytes())]
    done = run(["ldd", str(binary)], timeout=60, check=False)
    if "not a dynamic executable" in done.stdout + done.stderr:
        return entries
    for lib in parse_ldd(done.stdout):
        # copy the file the link points at, under the name the loader looks for
        entries.append(Entry(lib, stat.S_IFREG | 0o755, Path(lib).resolve().read_bytes()))
    return entries


def base_entries() -> list[Entry]:
    """busybox-static and the device nodes the kernel needs before devtmpfs is mounted."""
    busybox = Path(which("busybox"))
    return [
        Entry("/bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes()),
        Entry("/bin/sh", stat.S_IFLNK | 0o777, target="busybox"),
        Entry("/dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        Entry("/dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3)),
        Entry("/tmp", stat.S_IFDIR | 0o1777),
    ]


@dataclass(frozen=True)
class GuestSpec:
    """What goes into the initramfs besides busybox."""

    snippets: tuple[tuple[str, str], ...] = ()
    #: host file -> guest path (e.g. a livepatch .ko -> /lib/modules/lp.ko)
    files: tuple[tuple[Path, str], ...] = ()
    #: guest paths of modules to insmod before the snippets
    modules: tuple[str, ...] = ()
    stress_ng: bool = False


def initramfs(cache: Path, spec: GuestSpec) -> Path:
    """Build (or reuse) the gzip'd newc initramfs for *spec*; cached by content hash."""
    entries = base_entries()
    if spec.stress_ng:
        entries += binary_with_libs(Path(which("stress-ng")), "/usr/bin/stress-ng")
    for host, guest in spec.files:
        if not host.is_file():
            raise NotFound(f"file for the guest not found: {host}")
        entries.append(Entry(guest, stat.S_IFREG | 0o644, host.read_bytes()))
    init = render_init(spec.snippets, spec.modules)
    entries.append(Entry("/init", stat.S_IFREG | 0o755, init.encode()))
    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.path):
        h.update(e.digest().encode())
    out = cache / "initramfs" / f"{h.hexdigest()[:24]}.cpio.gz"
    if not out.exists():
        atomic_write(out, gzip_bytes(write_cpio(entries)))
    return out


# --------------------------------------------------------------------------
# QEMU


def qemu_argv(kernel: Path, initrd: Path, *, accel: str = "tcg", mem_mb: int = 512, smp: int = 2,
              append: Sequence[str] = DEFAULT_APPEND, machine: str = "q35",
              bios: Path | None = None) -> list[str]:
    """Direct kernel boot with nothing but a serial console on stdio.

    ``bios``: another firmware, e.g. :data:`QBOOT` (Debian's qemu-system-data), which
    skips SeaBIOS's device probing before the kernel starts.
    """
    accel_arg = "tcg,thread=multi" if accel == "tcg" else accel
    argv = [QEMU, "-machine", machine, "-accel", accel_arg, "-m", str(mem_mb), "-smp", str(smp),
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", " ".join(append),
            "-no-reboot"]
    if bios is not None:
        argv += ["-bios", str(bios)]
    # no "-cpu host" with KVM: it aborts on an MSR on some hosts (ENVIRONMENT.md)
    return argv


@dataclass(frozen=True)
class AccelChoice:
    accel: str  # "kvm" or "tcg"
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"accel": self.accel, "reason": self.reason}


def _qemu_version() -> str:
    done = run([QEMU, "--version"], timeout=30)
    return done.stdout.splitlines()[0].strip() if done.stdout else "unknown"


def choose_accel(cache: Path, kernel: Path, *, timeout: float = 45.0,
                 force: str | None = None) -> AccelChoice:
    """KVM only if a probe boot with it reaches /init and powers off; else TCG.

    The verdict is cached per (host kernel, QEMU version) in ``qemu/accel.json``.
    ``force`` ("kvm"/"tcg", or ``$PATCHFLOW_ACCEL``) skips the probe.
    """
    force = force or os.environ.get("PATCHFLOW_ACCEL")
    if force:
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
    except (OSError, ValueError, KeyError):
        pass
    initrd = initramfs(cache, GuestSpec())
    log = cache / "qemu" / "kvm-probe.log"
    log.unlink(missing_ok=True)
    probe = boot(kernel, initrd, log=log, accel="kvm", mem_mb=256, smp=1, timeout=timeout,
                 stage="kvm-probe")
    if probe.result.status is Status.PASS:
        choice = AccelChoice("kvm", f"a KVM probe boot reached /init in {probe.wall_seconds:.1f}s")
    else:
        choice = AccelChoice("tcg", "/dev/kvm exists but a KVM probe boot failed "
                             f"({probe.result.summary}); using TCG (multi-threaded)")
    atomic_write_json(cache_file, {"key": key, **choice.to_json()})
    return choice


@dataclass(frozen=True)
class BootRun:
    """One boot: its result, the scanned console and the guest's returned files."""

    result: StageResult
    scan: console.ConsoleScan
    log: Path
    wall_seconds: float
    accel: str
    argv: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def files(self) -> dict[str, bytes]:
        return self.scan.results

    @property
    def init_seconds(self) -> float | None:
        return self.scan.init_seconds


def boot(kernel: Path, initrd: Path, *, log: Path, accel: str = "tcg", mem_mb: int = 512,
         smp: int = 2, timeout: float = 300.0, append: Sequence[str] = DEFAULT_APPEND,
         machine: str = "q35", bios: Path | None = None, stage: str = "boot",
         target: str | None = None,
         on_start: Callable[[list[str]], None] | None = None) -> BootRun:
    """Boot *kernel* with *initrd* and a hard timeout; the console goes to *log*.

    PASS: /init ran, the result block is complete, the guest powered off and the
    console shows no failure.  FAIL: an oops/BUG/WARNING/panic/lockup... (the
    excerpt is in the summary and ``details["findings"]``), or the guest ended
    without powering off (unexpected reboot/exit).  ERROR: a timeout (``kind
    "timeout"``: the guest hung), or a QEMU that did not start.
    """
    which(QEMU)
    if not kernel.is_file():
        raise NotFound(f"kernel image not found: {kernel}")
    argv = qemu_argv(kernel, initrd, accel=accel, mem_mb=mem_mb, smp=smp, append=append,
                     machine=machine, bios=bios)
    if on_start:
        on_start(argv)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = log.stat().st_size if log.exists() else 0
    details: dict[str, Any] = {"accel": accel, "mem_mb": mem_mb, "smp": smp,
                               "kernel": str(kernel), "initrd": str(initrd)}
    timed_out = False
    rc: int | None = None
    with measure() as sw:
        try:
            done = run(argv, log=log, timeout=timeout, check=False, capture=False)
            rc = done.returncode
        except CommandTimeout:
            timed_out = True
    with open(log, encoding="utf-8", errors="replace") as fh:
        fh.seek(start)
        text = fh.read()
    res, sc = judge(text, timed_out=timed_out, returncode=rc, timeout=timeout, log=log,
                    stage=stage, target=target, elapsed=sw.elapsed,
                    details={**details, "wall_seconds": round(sw.elapsed, 2)})
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
          details: dict[str, Any] | None = None) -> tuple[StageResult, console.ConsoleScan]:
    """The verdict on one boot from its console text (tests/unit/test_qemu.py feeds recordings).

    Order matters: a kernel report beats everything (a hang after an oops is the
    oops); then a timeout; then QEMU failing to start; then a guest that stopped
    without results and power-off.
    """
    sc = console.scan(text)
    det = {**(details or {}), "init_seconds": sc.init_seconds, "returncode": returncode,
           "findings": [f.to_json() for f in sc.findings]}

    def result(status: Status, kind: str, summary: str) -> tuple[StageResult, console.ConsoleScan]:
        return StageResult(stage, status, summary, elapsed, target, {**det, "kind": kind},
                           str(log)), sc

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


# --------------------------------------------------------------------------
# a prebuilt Debian kernel


def debian_kernel_package(flavour: str = "cloud-amd64", abi_prefix: str = "6.1.0") -> str:
    """The newest ``linux-image-<abi>-N-<flavour>`` that apt knows of."""
    pattern = rf"^linux-image-{re.escape(abi_prefix)}-[0-9]+-{re.escape(flavour)}$"
    done = run(["apt-cache", "search", "--names-only", pattern], timeout=120)
    names = [line.split(" ", 1)[0] for line in done.stdout.splitlines() if line.strip()]
    if not names:
        raise NotFound(f"apt knows no package matching {pattern} (run apt-get update?)")

    def abi(name: str) -> int:
        return int(name[len(f"linux-image-{abi_prefix}-"):].split("-", 1)[0])

    return max(names, key=abi)


def debian_kernel(cache: Path, package: str | None = None) -> Path:
    """Download (once) a Debian kernel image package and return its vmlinuz, cached."""
    which("apt-get")
    which("dpkg-deb")
    pkg = package or debian_kernel_package()
    root = cache / "debian-kernel" / pkg
    done_marker = root / "vmlinuz"
    if done_marker.is_file():
        return done_marker
    dl = root / "download"
    dl.mkdir(parents=True, exist_ok=True)
    run(["apt-get", "download", pkg], cwd=dl, timeout=600)
    debs = sorted(dl.glob(f"{pkg}_*.deb"))
    if not debs:
        raise InfraError(f"apt-get download {pkg} produced no .deb in {dl}")
    run(["dpkg-deb", "-x", str(debs[-1]), str(root / "x")], timeout=600)
    images = sorted((root / "x" / "boot").glob("vmlinuz-*"))
    if not images:
        raise InfraError(f"{debs[-1].name} has no /boot/vmlinuz-*")
    os.replace(images[-1], done_marker)
    return done_marker
