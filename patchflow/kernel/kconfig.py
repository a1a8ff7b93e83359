"""Kernel configs: the target's base config plus fragments, settled and verified.

The target's base config (``make tinyconfig``) plus the kconfig fragments kept
next to the targets, merged with the tree's own
``scripts/kconfig/merge_config.sh`` and settled with ``olddefconfig``, then
*verified*: every requested option must really be set, because kconfig drops
options whose dependencies are missing without a word.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from patchflow.kernel.make import make_argv, merge_config_argv
from patchflow.runner import run, which

# "CONFIG_ZRAM=y", "CONFIG_LOG_BUF_SHIFT=17", 'CONFIG_CMDLINE=""'
_SET_RE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
# "# CONFIG_ZRAM is not set"
_UNSET_RE = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
# "config ZRAM", "menuconfig CGROUPS" (indented inside if/menu blocks too)
_KCONFIG_SYM_RE = re.compile(r"^\s*(?:menu)?config\s+([A-Za-z0-9_]+)\s*$", re.MULTILINE)


def parse_config(text: str) -> dict[str, str]:
    """``CONFIG_X`` -> value of a .config or fragment; "is not set" becomes ``"n"``."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if m := _SET_RE.match(line):
            out[m.group(1)] = m.group(2)
        elif m := _UNSET_RE.match(line):
            out[m.group(1)] = "n"
    return out


def kconfig_symbols(src_dir: Path) -> set[str]:
    """Every symbol the tree's Kconfig files declare (``CONFIG_`` prefixed)."""
    syms: set[str] = set()
    for root, dirs, files in os.walk(src_dir):
        # skip VCS data and the build outputs that may sit inside the tree
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("Kconfig"):
                text = Path(root, name).read_text(encoding="utf-8", errors="replace")
                syms.update("CONFIG_" + s for s in _KCONFIG_SYM_RE.findall(text))
    return syms


@dataclass(frozen=True)
class Dropped:
    """A requested option that olddefconfig did not keep (a missing dependency)."""

    option: str
    wanted: str
    got: str


@dataclass(frozen=True)
class ConfigCheck:
    """Which requested options did not end up as asked."""

    requested: dict[str, str]
    unknown: tuple[str, ...]  # not declared by any Kconfig file of this tree
    dropped: tuple[Dropped, ...]

    @property
    def ok(self) -> bool:
        return not self.unknown and not self.dropped


def check_config(requested: dict[str, str], actual: dict[str, str],
                 known: set[str] | None) -> ConfigCheck:
    """Compare the merged fragments against the final .config."""
    unknown = tuple(sorted(o for o in requested if known is not None and o not in known))
    dropped = []
    for opt, want in sorted(requested.items()):
        if opt in unknown:
            continue
        got = actual.get(opt, "n")
        if got != want:
            dropped.append(Dropped(opt, want, got))
    return ConfigCheck(requested, unknown, tuple(dropped))


def read_fragments(fragments: Iterable[Path]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for frag in fragments:
        merged.update(parse_config(frag.read_text(encoding="utf-8")))
    return merged


def configure(src_dir: Path, build_dir: Path, fragments: Sequence[Path], *, base_config: str,
              log: Path, jobs: int | None = None, cc: str | None = None,
              timeout: float = 900.0) -> ConfigCheck:
    """``make BASE_CONFIG``, merge the fragments, ``olddefconfig``; then verify."""
    which("make")
    build_dir.mkdir(parents=True, exist_ok=True)
    run(make_argv(src_dir, build_dir, [base_config], jobs=jobs, cc=cc), log=log, timeout=timeout)
    run(merge_config_argv(src_dir, build_dir, fragments), cwd=build_dir, log=log, timeout=timeout)
    run(make_argv(src_dir, build_dir, ["olddefconfig"], jobs=jobs, cc=cc), log=log, timeout=timeout)
    requested = read_fragments(fragments)
    actual = parse_config((build_dir / ".config").read_text(encoding="utf-8"))
    return check_config(requested, actual, kconfig_symbols(src_dir))


def fragments_hash(fragments: Sequence[Path], base_config: str) -> str:
    """What the configuration was made from: the base config and the fragments' bytes."""
    import hashlib

    h = hashlib.sha256(base_config.encode())
    for f in fragments:
        h.update(b"\0" + f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()
