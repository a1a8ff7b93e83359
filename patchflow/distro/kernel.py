"""What a distribution provider hands on, and the interface every provider implements.

:class:`DistroKernelFiles` is the typed hand-off from a provider to the
build-dir preparation (:mod:`patchflow.distro.prepare`), the live-patch
generator and the verification: every path inside the cache, plus the
release, the package version and the compiler the kernel was built with.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from patchflow.config import DistroKernel
from patchflow.errors import UserError
from patchflow.result import Progress


@dataclass(frozen=True)
class DistroKernelFiles:
    """One distribution kernel build, unpacked in the cache."""

    provider: str
    release: str  # uname -r
    version: str  # the packages' version (Debian: 6.1.187-1)
    vmlinuz: Path
    vmlinux: Path  # the full, unstripped vmlinux of the debug package
    config: Path
    symvers: Path
    modules: Path  # lib/modules/<release> of the image package
    source: Path  # the exact source tree
    #: CONFIG_CC_VERSION_TEXT: gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0
    compiler: str

    @property
    def cc(self) -> str:
        """The compiler command the distribution used (the first word of the version text)."""
        return self.compiler.split()[0] if self.compiler else "gcc"


class Provider(Protocol):
    """A distribution: find and fetch the packages of one kernel build."""

    name: str

    def fetch(self, cache: Path, kernel: DistroKernel, progress: Progress) -> DistroKernelFiles:
        """The kernel's files in *cache*, downloaded and unpacked on first use."""


def provider(name: str) -> Provider:
    """The registered provider *name* (:data:`patchflow.distro.PROVIDERS`)."""
    from patchflow.distro import PROVIDERS

    if name not in PROVIDERS:
        raise UserError(f"unknown distribution provider {name!r} (known: "
                        f"{', '.join(sorted(PROVIDERS))})")
    module, cls = PROVIDERS[name].split(":")
    made: Provider = getattr(importlib.import_module(module), cls)()
    return made


# CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"
_CC_TEXT = re.compile(r'^CONFIG_CC_VERSION_TEXT="([^"]*)"', re.M)


def config_compiler(config: Path) -> str:
    """``CONFIG_CC_VERSION_TEXT`` of a kernel config ("" when the config has none)."""
    m = _CC_TEXT.search(config.read_text(encoding="utf-8", errors="replace"))
    return m.group(1) if m else ""


def config_values(text: str) -> dict[str, str]:
    """``CONFIG_X=value`` lines of a .config (``# CONFIG_X is not set`` counts as "n")."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if m := re.match(r"^(CONFIG_\w+)=(.*)$", line):
            out[m.group(1)] = m.group(2)
        elif m := re.match(r"^# (CONFIG_\w+) is not set$", line):
            out[m.group(1)] = "n"
    return out
