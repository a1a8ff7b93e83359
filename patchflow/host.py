"""Setting up a host, such as a fresh CI runner, with the Debian packages the stages need.

``patchflow ci setup`` is the one step a generated pipeline runs after
installing patchflow: :func:`missing` asks dpkg which of
:func:`patchflow.tools.setup_packages` are absent, :func:`install_argv`
builds the apt-get command line that installs them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from patchflow.errors import UserError
from patchflow.runner import run


def parse_dpkg_status(text: str) -> set[str]:
    """Installed packages from ``dpkg-query -W -f '${Package} ${Status}\\n'`` output.

    Sample line: ``git install ok installed``.
    """
    installed = set()
    for line in text.splitlines():
        name, _, status = line.partition(" ")
        if status.strip() == "install ok installed":
            installed.add(name.split(":")[0])
    return installed


def missing(packages: Sequence[str]) -> list[str]:
    """The packages of *packages* that dpkg does not list as installed."""
    if not packages:
        return []
    done = run(["dpkg-query", "-W", "-f", "${Package} ${Status}\\n", *packages],
               check=False, timeout=60)
    have = parse_dpkg_status(done.stdout)
    return [p for p in packages if p not in have]


def install_argv(packages: Sequence[str]) -> list[list[str]]:
    """The apt-get commands that install *packages* (an index update first).

    The names come from :data:`patchflow.tools.PACKAGES`, never from outside.
    """
    return [["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]]


def install(packages: Sequence[str], log: Path | None = None) -> None:
    """Install *packages* with apt-get; only root can."""
    if os.geteuid() != 0:
        raise UserError(f"{len(packages)} packages missing ({' '.join(packages)}) and this is "
                        "not root: run `patchflow ci setup` as root, or apt-get install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in install_argv(packages):
        run(argv, env=env, timeout=1800, log=log)
