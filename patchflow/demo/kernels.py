"""A prebuilt Debian cloud kernel: a boot check that needs no build (demo and tests)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from patchflow.errors import InfraError, NotFound
from patchflow.runner import run, which


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
