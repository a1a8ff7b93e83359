"""The guest's initramfs: busybox, optionally stress-ng and modules, and an ``/init``.

Owns the ``/init`` script (``templates/boot/init.sh.j2``) with its result
protocol helpers, a newc cpio writer (reproducible: root-owned, mtime 0,
parents first), and :func:`initramfs`, which assembles Debian's
busybox-static, stress-ng with the shared libraries ``ldd`` lists (copied to
the same paths), extra files (a live-patch ``.ko``...) and the init script,
cached by content hash.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from patchflow.boot import console
from patchflow.errors import NotFound
from patchflow.runner import run, which
from patchflow.templates import render
from patchflow.workspace import atomic_write

# "	libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f7db89c0000)"
# "	/lib64/ld-linux-x86-64.so.2 (0x00007f7db9bf8000)"
# "	linux-vdso.so.1 (0x00007ffd...)"  (no file: skipped)
_LDD_RE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


# --------------------------------------------------------------------------
# the init script


def render_init(snippets: Sequence[tuple[str, str]] = (), modules: Sequence[str] = (),
                dmesg_lines: int = 200) -> str:
    """The guest's ``/init``: mounts, then each ``(name, shell snippet)``, then the results.

    Snippets use the helpers the script defines: ``pf_file NAME FILE``,
    ``pf_value NAME VALUE`` and ``pf_run NAME CMD...`` (output and exit code).
    *modules* are guest paths of ``.ko`` files to ``insmod`` first.
    """
    for name, _ in snippets:
        _check_name(name)
    return render("boot", "init.sh.j2", snippets=list(snippets), modules=list(modules),
                  dmesg_lines=dmesg_lines, markers=console.MARKERS)


def _check_name(name: str) -> str:
    if not console.RESULT_NAME_RE.match(name) or len(name) > console.MAX_RESULT_NAME:
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


def gzip_bytes(data: bytes, level: int = 6) -> bytes:
    return gzip.compress(data, compresslevel=level, mtime=0)


#: how the cpio archive is stored: name -> gzip level (0: uncompressed, which every
#: kernel unpacks; gzip needs CONFIG_RD_GZIP); measured by benchmarks/bench_boot.py
COMPRESSIONS = {"gzip": 6, "gzip-fast": 1, "none": 0}


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
    #: a key of :data:`COMPRESSIONS`
    compression: str = "gzip"


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
    level = COMPRESSIONS[spec.compression]
    suffix = {6: ".cpio.gz", 0: ".cpio"}.get(level, f".cpio.gz{level}")
    out = cache / "initramfs" / f"{h.hexdigest()[:24]}{suffix}"
    if not out.exists():
        data = write_cpio(entries)
        atomic_write(out, gzip_bytes(data, level) if level else data)
    return out
