"""The objects a patch touches, compiled in the distribution kernel's own build dir.

:func:`object_for` maps a changed source file to the object that compiles
it: ``fs/proc/cmdline.c`` -> ``fs/proc/cmdline.o``, and a file ``#include``d
into another translation unit to the includer's object
(``kernel/sched/fair.c`` -> ``kernel/sched/build_policy.o`` on 6.12,
``kernel/sched/syscalls.c`` too): the directory's Makefile names the
object, or a ``.c`` next to it includes the file.

:func:`compile_pair` compiles each object twice through kbuild itself
(``make O=BUILD obj.o``, with ``-ffunction-sections -fdata-sections`` added
through ``KCFLAGS``), so objtool runs exactly as it did for vmlinux: before,
from the pristine tree, and after, with the patched files swapped into the
tree.  The swap is transactional: the originals are kept in a backup folder
with a marker, restored (content and mtime) in a ``finally``, and
:func:`restore` puts them back first thing if a killed run left them
(tests/unit/test_distro.py::test_swap_restores_after_a_crash).  Each built
object is moved out of the build dir, so kbuild never mistakes an object of
the patched tree for an up-to-date one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from patchflow import runner
from patchflow.distro.prepare import PreparedTree, make_argv
from patchflow.errors import UserError

KCFLAGS = "KCFLAGS=-ffunction-sections -fdata-sections"
BACKUP = ".patchflow-swap"


class NotBuilt(UserError):
    """A changed file that no object of this kernel compiles."""


def object_for(source: Path, rel: str, _seen: frozenset[str] = frozenset()) -> str:
    """The object (relative to the tree) whose compilation includes the source file *rel*."""
    path = Path(rel)
    if path.suffix != ".c":
        raise NotBuilt(f"{rel}: only .c files are compiled here")
    if rel in _seen:
        raise NotBuilt(f"{rel}: #include loop")
    makefile = source / path.parent / "Makefile"
    stem = path.stem
    if makefile.is_file() and re.search(rf"(?<![\w/-]){re.escape(stem)}\.o\b",
                                        makefile.read_text(errors="replace")):
        return str(path.with_suffix(".o"))
    includer = _includer(source, path)
    if includer is None:
        raise NotBuilt(f"{rel}: {path.parent}/Makefile builds no {stem}.o and no .c file "
                       f"in {path.parent}/ includes it")
    return object_for(source, includer, _seen | {rel})


def required_option(source: Path, obj: str) -> str | None:
    """The option of ``obj-$(CONFIG_X) += obj.o`` in its Makefile (None for obj-y or unknown)."""
    path = Path(obj)
    makefile = source / path.parent / "Makefile"
    if not makefile.is_file():
        return None
    text = re.sub(r"\\\n", " ", makefile.read_text(errors="replace"))
    mine = re.compile(rf"(?<![\w/-]){re.escape(path.stem)}\.o\b")
    for line in text.splitlines():
        m = re.match(r"^\s*obj-\$\((CONFIG_\w+)\)\s*[+:]?=(.*)$", line)
        if m and mine.search(m.group(2)):
            return m.group(1)
    for line in text.splitlines():
        # a part of a composite object: ext4-y := ... inode.o -> obj-$(CONFIG_EXT4_FS) += ext4.o
        m = re.match(r"^\s*([\w-]+?)-(?:y|objs)\s*[+:]?=(.*)$", line)
        if m and m.group(1) not in ("obj", "lib", path.stem) and mine.search(m.group(2)):
            return required_option(source, str(path.parent / f"{m.group(1)}.o"))
    return None


def check_configured(tree: PreparedTree, obj: str) -> None:
    """Refuse an object whose Makefile option this kernel has off or modular."""
    from patchflow.distro.kernel import config_values

    option = required_option(tree.source, obj)
    if option is None:
        return
    value = config_values((tree.build / ".config").read_text(errors="replace")).get(option, "n")
    if value != "y":
        what = "builds it as a module" if value == "m" else "has it off"
        raise NotBuilt(f"{obj} is built only with {option}, and {tree.kernel.release} {what}: "
                       "only vmlinux functions are live patched here")


def _includer(source: Path, path: Path) -> str | None:
    pattern = re.compile(rf'^\s*#\s*include\s+"{re.escape(path.name)}"', re.M)
    for cand in sorted((source / path.parent).glob("*.c")):
        if cand.name != path.name and pattern.search(cand.read_text(errors="replace")):
            return str(path.parent / cand.name)
    return None


@dataclass(frozen=True)
class CompiledPair:
    obj: str  # kernel/sched/build_policy.o
    before: Path
    after: Path
    files: tuple[str, ...]  # the changed sources it compiles


def _marker(tree: PreparedTree) -> Path:
    # next to the source tree, which several build dirs (releases, tests) may share
    return tree.source.parent / f".{tree.source.name}{BACKUP}" / "swap.json"


@contextmanager
def source_lock(tree: PreparedTree) -> Iterator[None]:
    """One user of a source tree at a time: the swap changes files in it."""
    import fcntl

    with open(tree.source.parent / f".{tree.source.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def restore(tree: PreparedTree) -> list[str]:
    """Put back originals a previous (killed) swap left in the tree; the files restored."""
    marker = _marker(tree)
    if not marker.is_file():
        return []
    saved = json.loads(marker.read_text())
    backup = marker.parent
    for rel, mtime in saved.items():
        dst = tree.source / rel
        src = backup / "files" / rel
        if src.is_file():
            shutil.copyfile(src, dst)
            os.utime(dst, ns=(mtime, mtime))
        elif dst.exists():
            dst.unlink()  # a file the patch created
    marker.unlink()
    shutil.rmtree(backup / "files", ignore_errors=True)
    return list(saved)


@contextmanager
def swapped(tree: PreparedTree, patched: Path, files: list[str]) -> Iterator[None]:
    """The tree with *files* replaced by their patched copies under *patched*, restored after."""
    restore(tree)
    backup = _marker(tree).parent
    saved: dict[str, int] = {}
    for rel in files:
        src = tree.source / rel
        if src.is_file():
            (backup / "files" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, backup / "files" / rel)
            saved[rel] = src.stat().st_mtime_ns
        else:
            saved[rel] = 0
    backup.mkdir(parents=True, exist_ok=True)
    _marker(tree).write_text(json.dumps(saved))
    try:
        for rel in files:
            if (patched / rel).is_file():
                shutil.copyfile(patched / rel, tree.source / rel)
        yield
    finally:
        restore(tree)


def compile_objects(tree: PreparedTree, objs: list[str], dest: Path, suffix: str, *,
                    log: Path | None = None) -> dict[str, Path]:
    """``make obj.o ...`` in the build dir; each object moved to ``dest/<obj>.<suffix>.o``."""
    done = runner.run(make_argv(tree.kernel, tree.build, tree.cc, objs, extra=(KCFLAGS,)),
                      log=log, timeout=1800, check=False)
    out: dict[str, Path] = {}
    for obj in objs:
        built = tree.build / obj
        if not done.ok or not built.is_file():
            from patchflow.livepatch.generate import kbuild_error

            which = "the patched" if suffix == "after" else "the unpatched"
            raise NotBuilt(f"{obj}: kbuild could not compile {which} source for "
                           f"{tree.kernel.release}: {kbuild_error(done.tail)}")
        target = dest / Path(obj).with_suffix(f".{suffix}.o")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(built, target)
        out[obj] = target
    return out


def compile_pair(tree: PreparedTree, patched: Path, files: list[str], dest: Path, *,
                 log: Path | None = None) -> list[CompiledPair]:
    """Before and after objects of every changed ``.c`` (the caller holds the build lock)."""
    by_obj: dict[str, list[str]] = {}
    for rel in files:
        if rel.endswith(".c"):
            by_obj.setdefault(object_for(tree.source, rel), []).append(rel)
    objs = sorted(by_obj)
    if not objs:
        return []
    for obj in objs:
        check_configured(tree, obj)
    with source_lock(tree):
        restore(tree)
        before = compile_objects(tree, objs, dest, "before", log=log)
        with swapped(tree, patched, files):
            after = compile_objects(tree, objs, dest, "after", log=log)
    return [CompiledPair(o, before[o], after[o], tuple(by_obj[o])) for o in objs]


def is_module_object(tree: PreparedTree, obj: str) -> bool:
    """True when kbuild compiled *obj* as part of a loadable module (``-DMODULE``)."""
    rel = Path(obj)
    cmd = tree.build / rel.parent / f".{rel.name}.cmd"
    return cmd.is_file() and " -DMODULE " in cmd.read_text(errors="replace")


#: objtool's per-object options by config (scripts/Makefile.lib of 6.12, objtool-args-y)
OBJTOOL_ARGS: tuple[tuple[str, str], ...] = (
    ("CONFIG_HAVE_JUMP_LABEL_HACK", "--hacks=jump_label"),
    ("CONFIG_HAVE_NOINSTR_HACK", "--hacks=noinstr"),
    ("CONFIG_MITIGATION_CALL_DEPTH_TRACKING", "--hacks=skylake"),
    ("CONFIG_X86_KERNEL_IBT", "--ibt"),
    ("CONFIG_UNWINDER_ORC", "--orc"),
    ("CONFIG_MITIGATION_RETPOLINE", "--retpoline"),
    ("CONFIG_MITIGATION_RETHUNK", "--rethunk"),
    ("CONFIG_MITIGATION_SLS", "--sls"),
    ("CONFIG_HAVE_STATIC_CALL_INLINE", "--static-call"),
    ("CONFIG_HAVE_UACCESS_VALIDATION", "--uaccess"),
)


def delays_objtool(config: dict[str, str]) -> bool:
    """IBT (or clang LTO) kernels run objtool on vmlinux.o, not on each object."""
    return config.get("CONFIG_X86_KERNEL_IBT") == "y" or config.get("CONFIG_LTO_CLANG") == "y"


def objtool_argv(tree: PreparedTree, config: dict[str, str], obj: Path) -> list[str]:
    """objtool as vmlinux.o's link-time pass runs it, on one object (for the proof only)."""
    args = [flag for opt, flag in OBJTOOL_ARGS if config.get(opt) == "y"]
    if config.get("CONFIG_PREFIX_SYMBOLS") == "y":
        args.append(f"--prefix={config.get('CONFIG_FUNCTION_PADDING_BYTES', '16')}")
    # --link as on vmlinux.o: objtool refuses --ibt without it ("--ibt requires --link") and
    # then rewrites nothing, so jump-label sites stayed jmp where vmlinux has NOPs
    return [str(tree.build / "tools" / "objtool" / "objtool"), *args, "--link", str(obj)]


def as_in_vmlinux(tree: PreparedTree, before: Path, *, log: Path | None = None) -> Path:
    """The object vmlinux's bytes came from: on a delayed-objtool kernel, a copy objtool ran on.

    kbuild compiles each object of an IBT kernel without objtool and runs it
    once over vmlinux.o, where it rewrites jump-label sites; the proof compares
    against what that pass would have made of this object.  The live patch
    itself is built from the objects as kbuild compiled them: objtool runs on
    the linked module as for any module of this kernel.
    """
    from patchflow.distro.kernel import config_values

    config = config_values((tree.build / ".config").read_text(errors="replace"))
    if not delays_objtool(config):
        return before
    copy = before.with_name(before.name.replace(".before.o", ".objtool.o"))
    shutil.copyfile(before, copy)
    # objtool's warnings about this one object (it expects all of vmlinux) do not matter here;
    # what it rewrote does, and the comparison judges that
    runner.run(objtool_argv(tree, config, copy), cwd=tree.build, log=log, timeout=600,
               check=False)
    return copy
