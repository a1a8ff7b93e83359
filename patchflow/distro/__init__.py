"""Distribution kernels: a provider per distribution, behind one registry.

A distro target (``[distro]`` in ``targets/<name>.toml``) names a kernel as
``uname -r`` prints it.  Its provider (:data:`PROVIDERS`) finds the packages of
that exact build in the distribution's registry, fetches them into the cache
and hands on a :class:`~patchflow.distro.kernel.DistroKernelFiles`: Debian's
own vmlinuz and debug vmlinux, the config, ``Module.symvers``, the image's
modules and the exact source tree.  Adding Ubuntu or a RHEL-like distribution
is one module with a :class:`~patchflow.distro.kernel.Provider` and one line
here.
"""

from __future__ import annotations

#: provider name -> "module:Class" (imported on use, so config loading stays light)
PROVIDERS: dict[str, str] = {
    "debian": "patchflow.distro.debian:DebianProvider",
}
