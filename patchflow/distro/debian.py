"""Debian's kernels: the packages of one ``uname -r`` build, found and fetched with apt.

For release R (``6.1.0-53-cloud-amd64``) at package version V (``6.1.187-1``):

* ``linux-image-R-unsigned``: vmlinuz, config, System.map, the modules;
* ``linux-image-R-dbg``: only ``usr/lib/debug/boot/vmlinux-R`` is unpacked;
* ``linux-headers-R``: only ``Module.symvers`` (its vmlinux is a BTF stub);
* ``linux-source-X.Y`` of the same version V: the exact source tree.

Versions come from ``apt-cache show`` (the local apt lists), packages from
``apt-get download``; a release Debian does not have, or a pinned version
it does not have, is refused in one line.  Everything lands in
``<cache>/distro/debian/`` and is reused: a second fetch runs no apt at all.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from patchflow import runner
from patchflow.config import DistroKernel
from patchflow.distro import deb
from patchflow.distro.kernel import DistroKernelFiles, config_compiler
from patchflow.errors import NotFound, UserError
from patchflow.result import Progress
from patchflow.workspace import atomic_write

ROLES = ("image", "dbg", "headers", "source")


@dataclass(frozen=True)
class Package:
    role: str
    name: str
    version: str
    size: int  # bytes of the .deb, from the apt lists


def package_names(release: str) -> dict[str, str]:
    """The package of each role for kernel *release* (``uname -r``)."""
    m = re.match(r"^(\d+)\.(\d+)", release)
    if not m:
        raise UserError(f"not a kernel release: {release!r}")
    return {"image": f"linux-image-{release}-unsigned", "dbg": f"linux-image-{release}-dbg",
            "headers": f"linux-headers-{release}",
            "source": f"linux-source-{m.group(1)}.{m.group(2)}"}


def apt_show_argv(package: str) -> list[str]:
    return ["apt-cache", "show", "--", package]


def apt_download_argv(package: str, version: str) -> list[str]:
    return ["apt-get", "download", "--", f"{package}={version}"]


def parse_show(text: str) -> dict[str, int]:
    """Version -> .deb size of every stanza ``apt-cache show`` printed.

    # Package: linux-image-6.1.0-53-cloud-amd64-dbg
    # Version: 6.1.187-1
    # Size: 282096432
    """
    out: dict[str, int] = {}
    for stanza in re.split(r"\n\s*\n", text):
        v = re.search(r"^Version: (\S+)", stanza, re.M)
        s = re.search(r"^Size: (\d+)", stanza, re.M)
        if v:
            out[v.group(1)] = int(s.group(1)) if s else 0
    return out


def _versions(package: str) -> dict[str, int]:
    done = runner.run(apt_show_argv(package), check=False, timeout=120)
    return parse_show(done.stdout) if done.ok else {}


def resolve(kernel: DistroKernel) -> list[Package]:
    """The four packages of *kernel*, all at one version; refuses what Debian lacks."""
    names = package_names(kernel.release)
    image = _versions(names["image"])
    if not image:
        raise NotFound(f"Debian has no kernel {kernel.release}: no package {names['image']} "
                       "in the apt lists (a typo, or run apt-get update)")
    version = kernel.version or max(image, key=_version_key)
    if version not in image:
        raise NotFound(f"Debian has no {names['image']} {version} (it has "
                       f"{', '.join(sorted(image, key=_version_key))})")
    out = [Package("image", names["image"], version, image[version])]
    for role in ROLES[1:]:
        have = _versions(names[role])
        if version not in have:
            raise NotFound(f"Debian has no {names[role]} {version}, which kernel "
                           f"{kernel.release} needs (apt-get update?)")
        out.append(Package(role, names[role], version, have[version]))
    return out


def _version_key(v: str) -> list[tuple[int, str]]:
    # good enough to pick the newest of one package's versions; apt decides ties
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.+~:-]", v)]


def root(cache: Path) -> Path:
    return cache / "distro" / "debian"


def download(pkg: Package, dest: Path, progress: Progress) -> Path:
    """The cached .deb of *pkg*, downloaded on first use."""
    dest.mkdir(parents=True, exist_ok=True)
    pattern = f"{pkg.name}_{pkg.version.replace(':', '%3a')}_*.deb"
    found = sorted(dest.glob(pattern))
    if found:
        return found[0]
    progress(f"debian: downloading {pkg.name} {pkg.version} ({pkg.size / 2**20:.0f} MB)")
    start = time.monotonic()
    done = runner.run(apt_download_argv(pkg.name, pkg.version), cwd=dest, check=False,
                      timeout=1800)
    found = sorted(dest.glob(pattern))
    if not done.ok or not found:
        raise NotFound(f"apt-get download {pkg.name}={pkg.version} failed: "
                       f"{(done.tail.strip().splitlines() or ['no output'])[-1]}")
    progress(f"debian: {found[0].name} downloaded in {time.monotonic() - start:.1f} s")
    return found[0]


def _unpack_image(debfile: Path, files: Path, progress: Progress) -> None:
    if (files / "image.done").is_file():
        return
    progress(f"debian: unpacking {debfile.name}")
    deb.extract_all(debfile, files / "image")
    atomic_write(files / "image.done", "ok\n")


def _unpack_member(debfile: Path, pattern: str, out: Path, progress: Progress) -> None:
    if out.is_file():
        return
    progress(f"debian: unpacking {pattern} from {debfile.name}")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        got = deb.extract(debfile, [pattern], Path(tmp))
        if not got:
            raise UserError(f"{debfile.name} has no {pattern}")
        got[0].replace(out)


def unpack_source(debfile: Path, dest: Path, progress: Progress) -> Path:
    """The source tree of a ``linux-source-X.Y`` package, unpacked once."""
    if (dest / "Makefile").is_file():
        return dest
    progress(f"debian: unpacking the source tree of {debfile.name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".unpack-") as tmp:
        t = Path(tmp)
        tarballs = deb.extract(debfile, ["usr/src/linux-source-*.tar.xz"], t / "deb")
        if not tarballs:
            raise UserError(f"{debfile.name} has no usr/src/linux-source-*.tar.xz")
        (t / "src").mkdir()
        runner.run(["tar", "-xJf", str(tarballs[0]), "-C", str(t / "src"),
                    "--strip-components=1"], timeout=3600)
        if dest.exists():
            shutil.rmtree(dest)
        (t / "src").replace(dest)
    return dest


class DebianProvider:
    """The :class:`~patchflow.distro.kernel.Provider` of Debian (and its security archive)."""

    name = "debian"

    def fetch(self, cache: Path, kernel: DistroKernel, progress: Progress) -> DistroKernelFiles:
        base = root(cache) / kernel.release
        done = base / "files" / "version"
        if done.is_file() and (not kernel.version or done.read_text().strip() == kernel.version):
            return self.files(cache, kernel.release, done.read_text().strip())
        pkgs = {p.role: p for p in resolve(kernel)}
        version = pkgs["image"].version
        debs = {role: download(p, base / "debs" if role != "source" else root(cache) / "debs",
                               progress) for role, p in pkgs.items()}
        files = base / "files"
        files.mkdir(parents=True, exist_ok=True)
        _unpack_image(debs["image"], files, progress)
        _unpack_member(debs["dbg"], f"usr/lib/debug/boot/vmlinux-{kernel.release}",
                       files / "vmlinux", progress)
        _unpack_member(debs["headers"], f"usr/src/linux-headers-{kernel.release}/Module.symvers",
                       files / "Module.symvers", progress)
        unpack_source(debs["source"], root(cache) / "src" / version, progress)
        atomic_write(done, version + "\n")
        return self.files(cache, kernel.release, version)

    def files(self, cache: Path, release: str, version: str) -> DistroKernelFiles:
        files = root(cache) / release / "files"
        image = files / "image"
        config = image / "boot" / f"config-{release}"
        return DistroKernelFiles(
            provider=self.name, release=release, version=version,
            vmlinuz=image / "boot" / f"vmlinuz-{release}", vmlinux=files / "vmlinux",
            config=config,
            symvers=files / "Module.symvers", modules=image / "lib" / "modules" / release,
            source=root(cache) / "src" / version, compiler=config_compiler(config))
