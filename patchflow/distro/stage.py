"""A distro target made ready for live patches: packages fetched, build dir prepared.

``patchflow distro prepare``, ``patchflow livepatch build|verify --target
<distro target>`` and the gate's live-patch stages all come here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from patchflow.config import TargetConfig
from patchflow.distro.kernel import DistroKernelFiles, provider
from patchflow.distro.prepare import PreparedTree, build_lock, prepare
from patchflow.errors import UserError
from patchflow.result import Progress


@dataclass(frozen=True)
class Timings:
    fetch_s: float
    prepare_s: float


def is_distro(target: TargetConfig | None) -> bool:
    return target is not None and target.distro is not None


def fetch(cache: Path, target: TargetConfig, progress: Progress) -> DistroKernelFiles:
    """The target's packages, downloaded and unpacked into *cache* on first use."""
    if target.distro is None:
        raise UserError(f"target {target.name} is not a distribution kernel")
    return provider(target.distro.provider).fetch(cache, target.distro, progress)


def build_dir(cache: Path, kernel: DistroKernelFiles) -> Path:
    return cache / "distro" / kernel.provider / kernel.release / "build"


def ensure(cache: Path, target: TargetConfig, progress: Progress,
           log: Path | None = None) -> tuple[PreparedTree, Timings]:
    """Fetch and prepare the target (both cached), timing each step."""
    t0 = time.monotonic()
    kernel = fetch(cache, target, progress)
    t1 = time.monotonic()
    build = build_dir(cache, kernel)
    with build_lock(build):
        tree = prepare(kernel, build, progress=progress, log=log)
    return tree, Timings(t1 - t0, time.monotonic() - t1)
