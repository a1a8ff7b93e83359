"""kbuild command lines: pure argv builders (tests/unit/test_kbuild.py checks them)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path


def make_argv(src_dir: Path, build_dir: Path, targets: Sequence[str], *, jobs: int | None = None,
              cc: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """``make -C SRC O=BUILD -jN [CC=...] TARGETS``."""
    argv = ["make", "-C", str(src_dir), f"O={build_dir}", f"-j{jobs or os.cpu_count() or 1}"]
    if cc:
        # one argv element: make takes "CC=ccache gcc" as a single assignment, no shell involved
        argv.append(f"CC={cc}")
    # LOCALVERSION set (even empty) stops setlocalversion from appending "+" for a
    # source tree that is not at a release tag: base and patched builds (and the
    # live patch built against them) must share one kernel release, or the module's
    # vermagic does not match the kernel it is meant for
    # (tests/integration/test_gate_e2e.py caught "invalid module format").
    argv.append("LOCALVERSION=")
    argv.extend(extra)
    argv.extend(targets)
    return argv


def merge_config_argv(src_dir: Path, build_dir: Path, fragments: Sequence[Path]) -> list[str]:
    """``sh scripts/kconfig/merge_config.sh -m -O BUILD BUILD/.config FRAGS...``.

    Run through ``sh`` because the tarball does not always keep the exec bit.
    """
    script = src_dir / "scripts" / "kconfig" / "merge_config.sh"
    return ["sh", str(script), "-m", "-O", str(build_dir), str(build_dir / ".config"),
            *(str(f) for f in fragments)]


def default_cc() -> str | None:
    """``ccache gcc`` when ccache is installed (rebuilds of the same objects are free)."""
    return "ccache gcc" if shutil.which("ccache") else None
