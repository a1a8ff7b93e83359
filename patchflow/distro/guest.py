"""What a verification guest of a distribution kernel needs from the image package.

The distribution's vmlinuz boots as it is; the workload's drivers are
modules there (Debian: ``zram`` needs ``zsmalloc``, and the ``lzo-rle``
compressor is ``crypto/lzo-rle.ko``).  :func:`module_closure` finds them in
the unpacked image by name and orders them so that each comes after the
modules its ``.modinfo`` ``depends=`` names: the initramfs has no depmod
and no modprobe, so ``insmod`` runs them in that order.
"""

from __future__ import annotations

from pathlib import Path

from patchflow.errors import NotFound

#: modules the reclaim workload of ``livepatch verify`` needs (zram swap)
WORKLOAD_MODULES = ("lzo_rle", "zram")


def _norm(name: str) -> str:
    return name.replace("-", "_")


def _stem(p: Path) -> str:
    return _norm(p.name.removesuffix(".xz").removesuffix(".ko"))


def module_index(modules_dir: Path) -> dict[str, Path]:
    """Module name -> .ko (or .ko.xz: Debian's 6.12 compresses them) of ``lib/modules/<r>``."""
    found = sorted(modules_dir.rglob("*.ko")) + sorted(modules_dir.rglob("*.ko.xz"))
    return {_stem(p): p for p in found}


def plain_module(ko: Path, cache: Path) -> Path:
    """*ko* uncompressed (busybox insmod takes plain modules), cached by name and size."""
    if ko.suffix != ".xz":
        return ko
    import lzma

    out = cache / f"{ko.stat().st_size}-{ko.name.removesuffix('.xz')}"
    if not out.is_file():
        from patchflow.workspace import atomic_write

        atomic_write(out, lzma.decompress(ko.read_bytes()))
    return out


def module_closure(modules_dir: Path, names: tuple[str, ...], cache: Path) -> list[Path]:
    """*names* and everything they depend on, dependencies first (built-in ones left out)."""
    from patchflow.livepatch.bundle import modinfo

    index = module_index(modules_dir)
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        n = _norm(name)
        if n in seen or builtin(modules_dir, n):
            return
        if n not in index:
            raise NotFound(f"module {name} is not in {modules_dir} (needed by "
                           f"{' <- '.join(chain) or 'the workload'}); built in, or another "
                           "kernel flavour?")
        seen.add(n)
        plain = plain_module(index[n], cache)
        deps = modinfo(plain.read_bytes()).get("depends", "")
        for dep in filter(None, deps.split(",")):
            visit(dep, (*chain, n))
        order.append(plain)

    for name in names:
        visit(name, ())
    return order


def builtin(modules_dir: Path, name: str) -> bool:
    """True when *name* is built into the kernel (``modules.builtin``)."""
    f = modules_dir / "modules.builtin"
    if not f.is_file():
        return False
    return any(_stem(Path(line.strip())) == _norm(name) for line in f.read_text().splitlines())
