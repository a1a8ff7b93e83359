"""Build products kept per target and variant, and the lock that serialises a target's builds.

One ``O=`` dir per target (``<cache>/kbuild/<target>/obj``) is shared by both
variants, so the patched build is incremental over the base; each variant's
bzImage, vmlinux, System.map, Module.symvers and .config are copied aside
(``artefacts/<variant>/``) with the :class:`~patchflow.kernel.build.BuildDetails`
that made them, so A/B boots never need a rebuild.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from patchflow import typed
from patchflow.errors import NotFound, StateError, UserError
from patchflow.result import details_from_json
from patchflow.workspace import atomic_write_json

if TYPE_CHECKING:
    from patchflow.kernel.build import BuildDetails

#: the files kept per variant; name in the build dir -> name in the artefact dir
ARTEFACTS: dict[str, str] = {
    "arch/x86/boot/bzImage": "bzImage",
    "vmlinux": "vmlinux",
    "System.map": "System.map",
    "Module.symvers": "Module.symvers",
    ".config": "config",
}
VARIANTS = ("base", "patched")


@dataclass(frozen=True)
class Artefacts:
    """Where one variant's build products are kept."""

    target: str
    variant: str
    dir: Path
    build_dir: Path
    src_dir: Path | None = None

    @property
    def bzimage(self) -> Path:
        return self.dir / "bzImage"

    @property
    def vmlinux(self) -> Path:
        return self.dir / "vmlinux"

    @property
    def system_map(self) -> Path:
        return self.dir / "System.map"

    @property
    def module_symvers(self) -> Path:
        return self.dir / "Module.symvers"

    @property
    def config(self) -> Path:
        return self.dir / "config"

    @property
    def info(self) -> BuildDetails | None:
        """What the build that produced these artefacts recorded (``build.json``)."""
        from patchflow.kernel.build import BuildDetails

        p = self.dir / "build.json"
        if not p.exists():
            return None
        try:
            d = details_from_json(json.loads(p.read_text()), str(p))
        except (ValueError, typed.TypedError) as exc:
            raise StateError(f"{p}: unreadable build record ({exc}); rebuild the "
                             f"{self.variant} variant") from None
        return d if isinstance(d, BuildDetails) else None

    @property
    def kernel_release(self) -> str:
        return self.info.kernel_release if self.info else ""


def build_root(cache: Path, target: str) -> Path:
    """The per-target folder in the shared cache: ``kbuild/<target>/``."""
    return cache / "kbuild" / target


def build_dir_for(cache: Path, target: str) -> Path:
    """The one ``O=`` dir of a target, shared by both variants."""
    return build_root(cache, target) / "obj"


def artefact_dir(cache: Path, target: str, variant: str) -> Path:
    if variant not in VARIANTS:
        raise UserError(f"unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
    return build_root(cache, target) / "artefacts" / variant


def locate(cache: Path, target: str, variant: str) -> Artefacts:
    """The kept artefacts of (target, variant), or :class:`NotFound` saying what to run."""
    d = artefact_dir(cache, target, variant)
    art = Artefacts(target, variant, d, build_dir_for(cache, target))
    if not art.bzimage.is_file():
        raise NotFound(f"no {variant} kernel built for {target} (looked in {d}); "
                       f"run: patchflow build SERIES --target {target} --variant {variant}")
    info = art.info
    if info is None:
        return art
    return Artefacts(target, variant, d, Path(info.build_dir), Path(info.src_dir))


@contextmanager
def target_lock(cache: Path, target: str) -> Iterator[None]:
    """Serialise builds of one target: its build dir and source tree are shared."""
    path = build_root(cache, target) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def keep_artefacts(build_dir: Path, dest: Path, info: BuildDetails) -> None:
    """Copy the variant's products aside (atomically per file) and write build.json."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel, name in ARTEFACTS.items():
        src = build_dir / rel
        if not src.exists():
            continue  # Module.symvers is absent when nothing is modular
        tmp = dest / f".{name}.tmp"
        shutil.copy2(src, tmp)
        os.replace(tmp, dest / name)
    atomic_write_json(dest / "build.json", info.to_json())
