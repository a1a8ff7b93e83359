"""Reading Debian packages without unpacking all of them.

A ``.deb`` is an ``ar`` archive whose ``data.tar.{xz,gz}`` member holds the
files.  :func:`extract` streams that tarball once and writes only the
members asked for: the 340-590 MB ``vmlinux`` of a ``-dbg`` package without
its gigabyte of module debug files.  Member names are outside data: only
regular files with relative names inside the package are written, through
``tarfile``'s ``data`` filter (tests/unit/test_distro.py::test_deb_member_names).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from patchflow.errors import UserError

_AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60


class DebError(UserError):
    """A file that is not a Debian package patchflow can read."""


def _members(fh: IO[bytes], origin: Path) -> Iterator[tuple[str, int]]:
    if fh.read(len(_AR_MAGIC)) != _AR_MAGIC:
        raise DebError(f"{origin}: not a Debian package (no ar header)")
    while True:
        head = fh.read(_AR_HEADER)
        if len(head) < _AR_HEADER:
            return
        name = head[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(head[48:58].decode("ascii").strip())
        except ValueError:
            raise DebError(f"{origin}: corrupt ar member header") from None
        start = fh.tell()
        yield name, size
        fh.seek(start + size + (size & 1))


@contextmanager
def data_tar(deb: Path) -> Iterator[tarfile.TarFile]:
    """The package's data tarball, opened for one streaming pass."""
    fh = open(deb, "rb")  # noqa: SIM115 (closed in finally)
    try:
        for name, size in _members(fh, deb):
            if name.startswith("data.tar"):
                mode = {"data.tar.xz": "r|xz", "data.tar.gz": "r|gz", "data.tar": "r|"}.get(name)
                if mode is None:
                    raise DebError(f"{deb}: {name} is not supported (xz, gz or plain tar)")
                with tarfile.open(fileobj=_Bounded(fh, size), mode=mode) as tar:  # type: ignore[call-overload]
                    yield tar
                return
        raise DebError(f"{deb}: no data.tar member")
    finally:
        fh.close()


class _Bounded:
    """A read-only view of *size* bytes of *fh* from its current position."""

    def __init__(self, fh: IO[bytes], size: int) -> None:
        self.fh, self.left = fh, size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self.left:
            n = self.left
        data = self.fh.read(n)
        self.left -= len(data)
        return data


def extract(deb: Path, patterns: list[str], dest: Path,
            on_member: Callable[[str], None] | None = None) -> list[Path]:
    """Write the members of *deb* matching *patterns* (fnmatch, ``./`` stripped) under *dest*."""
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with data_tar(deb) as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if not any(fnmatch.fnmatchcase(name, p) for p in patterns):
                continue
            if not member.isfile():
                continue
            if on_member is not None:
                on_member(name)
            tar.extract(member, dest, filter="data")
            written.append(dest / name)
    return written


def extract_all(deb: Path, dest: Path) -> None:
    """Unpack every regular file, directory and symlink of *deb* (into a temp dir, then moved)."""
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    with data_tar(deb) as tar:
        tar.extractall(tmp, filter="data")
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
