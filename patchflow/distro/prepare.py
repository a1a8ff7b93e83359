"""A build dir for a distribution kernel without building the kernel.

kpatch-build rebuilds the whole distro kernel (hours on two cores).  The
live-patch generator needs far less: the distribution's config run through
``olddefconfig``, ``prepare modules_prepare`` (generated headers, objtool,
modpost, ``scripts/module.lds``) and Debian's ``Module.symvers``; the objects
a patch touches are then compiled one by one (:mod:`patchflow.distro.objects`).

Refused in one line, before anything is built:

* a compiler whose ``--version`` differs from ``CONFIG_CC_VERSION_TEXT``
  (objects would not reproduce vmlinux, see :mod:`patchflow.livepatch.reproduce`);
* an ``olddefconfig`` that changes a value the distribution set.

The result is cached per release (a stamp records the config's sha256, the
source and the compiler), so the second live patch starts in seconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from patchflow import runner
from patchflow.distro.kernel import DistroKernelFiles, config_values
from patchflow.errors import ToolNotFound, UserError
from patchflow.result import Progress
from patchflow.workspace import atomic_write

#: set to "" in the build dir: the distribution's certificate files are not shipped
BLANKED = ("CONFIG_SYSTEM_TRUSTED_KEYS", "CONFIG_SYSTEM_REVOCATION_KEYS")
STAMP = ".patchflow-prepared"
#: symbols Kconfig computes by probing the host for tools this kernel does not use: with
#: CONFIG_RUST off, a local rustc changes RUSTC_VERSION (0 -> 109500) and nothing else
#: (tests/unit/test_distro.py::test_config_drift)
PROBES = {"CONFIG_RUSTC_VERSION": "CONFIG_RUST", "CONFIG_RUSTC_LLVM_VERSION": "CONFIG_RUST",
          "CONFIG_RUST_IS_AVAILABLE": "CONFIG_RUST", "CONFIG_BINDGEN_VERSION_TEXT": "CONFIG_RUST"}


@dataclass(frozen=True)
class PreparedTree:
    """A distribution kernel's source, its prepared O= dir and its packaged files."""

    kernel: DistroKernelFiles
    build: Path
    cc: str  # the CC= kbuild is given ("ccache gcc-12")

    @property
    def source(self) -> Path:
        return self.kernel.source


def compiler_version_argv(cc: str) -> list[str]:
    return [cc, "--version"]


def check_compiler(kernel: DistroKernelFiles) -> None:
    """The local compiler must print exactly the kernel's CONFIG_CC_VERSION_TEXT."""
    want = kernel.compiler
    if not want:
        raise UserError(f"{kernel.config}: no CONFIG_CC_VERSION_TEXT; cannot check the compiler")
    try:
        done = runner.run(compiler_version_argv(kernel.cc), check=False, timeout=30)
    except ToolNotFound:
        raise UserError(f"kernel {kernel.release} was built with `{want}`: {kernel.cc} is not "
                        "installed") from None
    have = (done.stdout.splitlines() or [""])[0].strip()
    if have != want:
        raise UserError(f"compiler mismatch: kernel {kernel.release} needs `{want}`, "
                        f"{kernel.cc} is `{have}`")


def make_argv(kernel: DistroKernelFiles, build: Path, cc: str, targets: list[str], *,
              jobs: int = 2, extra: tuple[str, ...] = ()) -> list[str]:
    """kbuild for the distribution kernel: its release, its compiler, our O= dir."""
    return ["make", "-C", str(kernel.source), f"O={build}", f"-j{jobs}", f"CC={cc}",
            f"KERNELRELEASE={kernel.release}", *extra, *targets]


def distro_config(text: str) -> str:
    """The distribution's config with the certificate options blanked."""
    out = []
    for line in text.splitlines():
        key = line.split("=", 1)[0]
        out.append(f'{key}=""' if key in BLANKED else line)
    return "\n".join(out) + "\n"


def config_drift(wanted: str, got: str) -> list[str]:
    """Options the distribution set that olddefconfig changed (blanked ones excepted)."""
    w, g = config_values(wanted), config_values(got)

    def ignored(k: str) -> bool:
        return k in BLANKED or (k in PROBES and w.get(PROBES[k], "n") == "n")

    return sorted(f"{k}={w[k]} became {g.get(k, 'unset')}" for k in w
                  if not ignored(k) and g.get(k, "n") != w[k])


def _stamp(kernel: DistroKernelFiles, cc: str) -> str:
    digest = hashlib.sha256(kernel.config.read_bytes()).hexdigest()
    return json.dumps({"config": digest, "source": str(kernel.source), "cc": cc,
                       "release": kernel.release, "version": kernel.version}, sort_keys=True)


@contextmanager
def build_lock(build: Path) -> Iterator[None]:
    """One writer of a release's build dir (and of its source tree) at a time."""
    build.parent.mkdir(parents=True, exist_ok=True)
    with open(build.parent / "build.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def default_cc(kernel: DistroKernelFiles) -> str:
    return f"ccache {kernel.cc}" if shutil.which("ccache") else kernel.cc


def prepare(kernel: DistroKernelFiles, build: Path, *, progress: Progress,
            log: Path | None = None, jobs: int = 2) -> PreparedTree:
    """olddefconfig + prepare + modules_prepare in *build* (cached); the caller holds the lock."""
    check_compiler(kernel)
    cc = default_cc(kernel)
    tree = PreparedTree(kernel, build, cc)
    stamp = build / STAMP
    if stamp.is_file() and stamp.read_text() == _stamp(kernel, cc):
        return tree
    build.mkdir(parents=True, exist_ok=True)
    wanted = distro_config(kernel.config.read_text(encoding="utf-8", errors="replace"))
    (build / ".config").write_text(wanted)
    start = time.monotonic()
    progress(f"prepare {kernel.release}: olddefconfig")
    runner.run(make_argv(kernel, build, cc, ["olddefconfig"], jobs=jobs), log=log, timeout=600)
    drift = config_drift(wanted, (build / ".config").read_text())
    if drift:
        raise UserError(f"olddefconfig changed the distribution's config of {kernel.release} "
                        f"(not the same source or compiler?): {'; '.join(drift[:5])}")
    progress(f"prepare {kernel.release}: make prepare modules_prepare (a few minutes, once)")
    runner.run(make_argv(kernel, build, cc, ["prepare", "modules_prepare"], jobs=jobs),
               log=log, timeout=3600)
    shutil.copyfile(kernel.symvers, build / "Module.symvers")
    atomic_write(stamp, _stamp(kernel, cc))
    progress(f"prepare {kernel.release}: done in {time.monotonic() - start:.0f} s")
    return tree
