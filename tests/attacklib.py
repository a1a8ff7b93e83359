"""Helpers of the bad-input and attack suite.

Used by tests/unit/test_attacks.py (fast cases), tests/integration/test_bundle_trust.py
(tampering a real, signed bundle; install.sh and rollback.sh in QEMU) and
tests/integration/test_signals.py (SIGINT/SIGTERM to real commands).  Each
case runs the attack against the real code path and asserts the refusal or
the safe outcome; the before/after table is in the issue's closing note.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from patchflow.livepatch.bundle import (
    MANIFEST,
    SIGNATURE,
    Signer,
    read_archive,
    sha256,
    sign_manifest,
    tar_bytes,
)
from patchflow.runner import run

REPO_ROOT = Path(__file__).resolve().parent.parent


def patchflow(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m patchflow ARGS`` from this checkout, as a user runs it."""
    full = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "patchflow", *args], capture_output=True,
                          text=True, env=full, cwd=cwd, timeout=timeout)


def one_line_error(stderr: str, *needles: str) -> str:
    """The single ``error: ...`` line of a refused command (no traceback), checked."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def make_key(where: Path, name: str, *, ca: Signer | None = None) -> Signer:
    """A test key pair: self-signed, or issued by *ca*."""
    key, cert = where / f"{name}.key", where / f"{name}.pem"
    if ca is None:
        run(["openssl", "req", "-new", "-nodes", "-utf8", "-sha256", "-days", "2", "-batch",
             "-x509", "-subj", f"/CN={name}", "-newkey", "rsa:2048", "-out", str(cert),
             "-keyout", str(key)])
        return Signer(key, cert)
    csr = where / f"{name}.csr"
    run(["openssl", "req", "-new", "-nodes", "-batch", "-subj", f"/CN={name}", "-newkey",
         "rsa:2048", "-keyout", str(key), "-out", str(csr)])
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
         "-CAcreateserial", "-days", "2", "-out", str(cert)])
    return Signer(key, cert)


Members = dict[str, tuple[bytes, int]]


def unpack(bundle: Path) -> tuple[str, Members]:
    arch = read_archive(bundle)
    return arch.top, dict(arch.members)


def pack(out: Path, top: str, members: Members) -> Path:
    out.write_bytes(tar_bytes({f"{top}/{k}": v for k, v in members.items()}))
    return out


def remanifest(members: Members, *, signer: Signer | None,
               edit: Callable[[dict[str, Any]], Any] | None = None) -> Members:
    """What an attacker who changed members does next: list them again in the manifest,
    optionally *edit* it, and sign it with *signer* (or drop the signature)."""
    doc = json.loads(members[MANIFEST][0])
    doc["members"] = [{"path": k, "sha256": sha256(v), "size": len(v), "mode": f"{m:04o}"}
                      for k, (v, m) in sorted(members.items()) if k not in (MANIFEST, SIGNATURE)]
    if edit is not None:
        doc = edit(doc) or doc
    raw = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    out = {MANIFEST: (raw, 0o644)}
    if signer is not None:
        out[SIGNATURE] = (sign_manifest(raw, signer), 0o644)
    out.update((k, v) for k, v in members.items() if k not in (MANIFEST, SIGNATURE))
    return out


def tar_with(out: Path, bundle: Path, extra: Sequence[tarfile.TarInfo | tuple[tarfile.TarInfo,
                                                                              bytes]],
             *, fmt: int = tarfile.USTAR_FORMAT) -> Path:
    """*bundle*'s members, then *extra* members (links, devices...) in ustar headers."""
    top, members = unpack(bundle)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        for name, (data, mode) in members.items():
            ti = tarfile.TarInfo(f"{top}/{name}")
            ti.size, ti.mode = len(data), mode
            tar.addfile(ti, io.BytesIO(data))
        for item in extra:
            ti, data = item if isinstance(item, tuple) else (item, b"")
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data) if data else None)
    out.write_bytes(gzip.compress(raw.getvalue()))
    return out


def gnu_tar_extract(bundle: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    """What ``tar xzf`` (GNU tar) makes of *bundle*: the SRE's old way to unpack one."""
    dest.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["tar", "-xzf", str(bundle), "-C", str(dest)], capture_output=True,
                          text=True)
