"""The native live-patch generator: patch + built kernel tree -> livepatch .ko.

Steps (each a pure function or a single :func:`patchflow.runner.run` call):

1. :func:`overlay_tree` copies the files the patch touches from the source
   tree into an overlay and applies the patch there; the rest of the tree is
   reached through the include paths, which :func:`compile_argv` doubles
   (overlay first), so no tree copy is needed.
2. :func:`compile_argv` takes kbuild's exact command for the object from
   ``BUILD/<dir>/.<obj>.o.cmd`` and adds ``-ffunction-sections
   -fdata-sections``; each changed ``.c`` is compiled before and after.
3. :mod:`patchflow.livepatch.diff` finds the functions that really changed,
   :mod:`patchflow.livepatch.safety` refuses what cannot be live patched.
4. :func:`patchflow.livepatch.extract.extract` cuts the patched functions out,
   the generated ``livepatch.c`` (jinja2 template) declares the klp_patch,
   kbuild links both (``make -C BUILD M=DIR modules``, ``KBUILD_MODPOST_WARN=1``),
   and :func:`patchflow.livepatch.extract.klp_convert` rewrites the .ko.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchflow import templates
from patchflow.errors import NotFound, UserError
from patchflow.livepatch.diff import ObjectDiff, compare
from patchflow.livepatch.elf import ElfObject
from patchflow.livepatch.extract import Extracted, annotate_noendbr, extract, klp_convert
from patchflow.livepatch.kallsyms import VmlinuxSymbols, read_symvers
from patchflow.livepatch.results import AnalysisRecord, LivepatchBuildDetails, ReplacedFunction
from patchflow.livepatch.safety import SafetyFinding, analyze_diff, analyze_objects
from patchflow.result import StageResult, Status, measure
from patchflow.runner import run

if TYPE_CHECKING:
    from patchflow.distro.prepare import PreparedTree

EXTRA_CFLAGS = ["-ffunction-sections", "-fdata-sections"]
OBJECT = "klp_patched.o"


@dataclass(frozen=True)
class BuiltTree:
    """A configured and built kernel: its source tree and its O= build dir.

    ``vmlinux_path`` names the vmlinux to read symbols and the build-id from
    when it is not the build dir's own: the O= dir is shared by both variants
    and holds the *patched* vmlinux after a patched build, so the gate points
    at the kept base artefacts (:func:`patchflow.livepatch.stage.base_tree`).
    """

    source: Path
    build: Path
    vmlinux_path: Path | None = None
    #: a distribution kernel prepared without a full build (:mod:`patchflow.distro`):
    #: objects are compiled through its kbuild and proved against its vmlinux
    distro: PreparedTree | None = None

    @property
    def vmlinux(self) -> Path:
        return self.vmlinux_path or self.build / "vmlinux"

    @property
    def symvers(self) -> Path:
        return self.build / "Module.symvers"

    def release(self) -> str:
        if self.distro is not None:
            return self.distro.kernel.release
        p = self.build / "include" / "config" / "kernel.release"
        return p.read_text().strip() if p.is_file() else ""

    def config_enabled(self, option: str) -> bool:
        cfg = self.build / ".config"
        return cfg.is_file() and f"\n{option}=y\n" in "\n" + cfg.read_text(errors="replace")

    @property
    def make_args(self) -> list[str]:
        """What every make in this tree needs (a distribution kernel's compiler and release)."""
        if self.distro is None:
            return []
        return [f"CC={self.distro.cc}", f"KERNELRELEASE={self.distro.kernel.release}"]


@dataclass
class Analysis:
    """What a patch changes, object by object, and what is unsafe in it."""

    files: list[str]
    diffs: dict[str, ObjectDiff] = field(default_factory=dict)
    findings: list[SafetyFinding] = field(default_factory=list)
    objects: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    @property
    def changed_functions(self) -> list[str]:
        return sorted({f for d in self.diffs.values() for f in d.changed_functions})

    def record(self) -> AnalysisRecord:
        return AnalysisRecord(tuple(self.files), {k: v.summary() for k, v in self.diffs.items()},
                              tuple(self.findings))


def module_name(text: str) -> str:
    """A kbuild/sysfs-safe module name (``/sys/kernel/livepatch/<name>``)."""
    name = re.sub(r"[^a-z0-9_]", "_", text.lower()).strip("_")
    return ("lp_" + name)[:55]


def patched_files(patch_text: str) -> list[str]:
    from unidiff.patch import PatchSet

    out = []
    for pf in PatchSet(patch_text):
        path = pf.target_file if not pf.is_removed_file else pf.source_file
        out.append(path[2:] if path.startswith(("a/", "b/")) else path)
    # a series concatenated into one diff touches a file once per patch
    return list(dict.fromkeys(out))


def overlay_tree(patch_text: str, source: Path, overlay: Path) -> list[str]:
    """Copy the files *patch_text* touches into *overlay* and apply it there."""
    from patchflow import gitrepo

    # every path is checked before anything is copied: a mailed patch is outside data
    gitrepo.checked_patch_paths(patch_text)
    files = patched_files(patch_text)
    overlay.mkdir(parents=True, exist_ok=True)
    for f in files:
        src = source / f
        dst = overlay / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_file():
            shutil.copy2(src, dst)
    patch = overlay.parent / (overlay.name + ".patch")
    patch.write_text(patch_text)
    gitrepo.apply_to_directory(overlay, patch)
    unchanged = [f for f in files if (source / f).is_file() and (overlay / f).is_file()
                 and (source / f).read_bytes() == (overlay / f).read_bytes()]
    if unchanged and len(unchanged) == len(files):
        raise UserError(f"the patch changes nothing in {', '.join(unchanged)}: there is "
                        "nothing to live patch")
    return files


_SAVEDCMD = re.compile(r"^(?:saved)?cmd_\S+ := (.*)$")


def kbuild_command(build: Path, obj: str) -> list[str]:
    """kbuild's compiler argv for *obj* (``fs/proc/cmdline.o``) from its ``.cmd`` file."""
    rel = Path(obj)
    cmd_file = build / rel.parent / f".{rel.name}.cmd"
    if not cmd_file.is_file():
        raise NotFound(f"{cmd_file} not found: is {obj} built in {build}?")
    for line in cmd_file.read_text(encoding="utf-8", errors="replace").splitlines():
        # savedcmd_fs/proc/cmdline.o := gcc -Wp,-MMD,fs/proc/.cmdline.o.d -nostdinc ... ; objtool ...
        m = _SAVEDCMD.match(line)
        if m:
            first = m.group(1).split(" ; ")[0]
            return shlex.split(first)
    raise UserError(f"{cmd_file}: no saved command line")


def compile_argv(base: list[str], *, source: Path, overlay: Path | None, src_file: Path,
                 out: Path, dep: Path) -> list[str]:
    """Rewrite kbuild's argv: our output and dep file, the extra flags, overlay includes first."""
    argv: list[str] = []
    skip = False
    src_prefix = str(source).rstrip("/") + "/"
    for a in base:
        if skip:
            skip = False
            continue
        if a == "ccache":
            continue
        if a == "-o":
            skip = True
            continue
        if a.startswith("-Wp,-MMD,") or a.startswith("-Wp,-MD,"):
            argv.append(f"-Wp,-MMD,{dep}")
            continue
        if a.endswith(".c") and not a.startswith("-"):
            continue
        if overlay is not None and a.startswith("-I") and a[2:].startswith(src_prefix):
            argv.append("-I" + str(overlay) + "/" + a[2 + len(src_prefix):])
        argv.append(a)
    return [*argv, *EXTRA_CFLAGS, "-o", str(out), str(src_file)]


@dataclass(frozen=True)
class Unit:
    """One translation unit compiled before and after the patch."""

    tu: str  # the .c file kbuild compiles (the includer of an #included .c)
    before: Path
    after: Path


def analyze(patch_text: str, tree: BuiltTree, workdir: Path, *, log: Path | None = None) -> Analysis:
    """Compile each changed .c before and after; diff per function; collect findings."""
    overlay = workdir / "after"
    if overlay.exists():
        shutil.rmtree(overlay)
    if tree.distro is not None:
        _restore_source(tree.distro)
    files = overlay_tree(patch_text, tree.source, overlay)
    an = Analysis(files=files)
    an.findings.extend(analyze_diff(patch_text, tree.source))
    units = (_distro_units(tree, files, overlay, workdir, log) if tree.distro is not None
             else _overlay_units(tree, files, overlay, workdir, log))
    for u in units:
        b, a = ElfObject.read(u.before), ElfObject.read(u.after)
        d = compare(b, a)
        an.diffs[u.tu] = d
        an.objects[u.tu] = (u.before, u.after)
        an.findings.extend(analyze_objects(u.tu, b, a, d))
    return an


def _restore_source(tree: PreparedTree) -> None:
    """Originals a killed run left swapped in the distribution source go back first.

    The overlay copies the touched files from the tree: a half-swapped tree
    made the patch itself fail to apply ("patch failed: kernel/sys.c:2142").
    """
    from patchflow.distro.objects import restore, source_lock

    with source_lock(tree):
        restore(tree)


def _overlay_units(tree: BuiltTree, files: list[str], overlay: Path, workdir: Path,
                   log: Path | None) -> list[Unit]:
    """A fully built tree: kbuild's gcc command of each object, rerun on the overlay."""
    units = []
    for f in files:
        if not f.endswith(".c"):
            continue
        obj = f[:-2] + ".o"
        base = kbuild_command(tree.build, obj)
        objdir = workdir / "objs" / Path(f).parent
        objdir.mkdir(parents=True, exist_ok=True)
        stem = Path(f).stem
        before_o, after_o = objdir / f"{stem}.before.o", objdir / f"{stem}.after.o"
        if not (tree.source / f).is_file():
            raise UserError(f"{f}: new files are not supported by the native generator")
        run(compile_argv(base, source=tree.source, overlay=None, src_file=tree.source / f,
                         out=before_o, dep=objdir / f".{stem}.before.d"),
            cwd=tree.build, timeout=300, log=log)
        run(compile_argv(base, source=tree.source, overlay=overlay, src_file=overlay / f,
                         out=after_o, dep=objdir / f".{stem}.after.d"),
            cwd=tree.build, timeout=300, log=log)
        units.append(Unit(f, before_o, after_o))
    return units


def _distro_units(tree: BuiltTree, files: list[str], overlay: Path, workdir: Path,
                  log: Path | None) -> list[Unit]:
    """A distribution kernel: its own kbuild compiles each object; *before* must reproduce vmlinux."""
    from patchflow.distro.objects import NotBuilt, as_in_vmlinux, compile_pair, is_module_object
    from patchflow.distro.prepare import build_lock
    from patchflow.livepatch.reproduce import VmlinuxImage, check_object, require_reproduced

    assert tree.distro is not None
    for f in files:
        if f.endswith(".c") and not (tree.source / f).is_file():
            raise UserError(f"{f}: new files are not supported by the native generator")
    with build_lock(tree.build):
        pairs = compile_pair(tree.distro, overlay, files, workdir / "objs", log=log)
    units = []
    with VmlinuxImage(tree.distro.kernel.vmlinux) as vm:
        for p in pairs:
            if is_module_object(tree.distro, p.obj):
                raise NotBuilt(f"{p.obj} is built as part of a module in "
                               f"{tree.release()}: only vmlinux functions are live patched here")
            tu = p.obj[:-2] + ".c"
            proof = as_in_vmlinux(tree.distro, p.before, log=log)
            require_reproduced(check_object(proof, p.obj, tu, vm), tree.release())
            units.append(Unit(tu, p.before, p.after))
    return units


def render(template: str, **ctx: Any) -> str:
    return templates.render("livepatch", template, **ctx)


def generate(patch_text: str, tree: BuiltTree, workdir: Path, *, name: str, series: str = "",
             force: bool = False, log: Path | None = None, jobs: int = 2) -> StageResult:
    """Build a livepatch module for *patch_text* against *tree* into *workdir*.

    Returns a StageResult: FAIL when the patch is refused as unsafe (the
    findings are in ``details``) or when kbuild fails; PASS with the ``.ko``
    path, the replaced functions and the klp symbols otherwise.
    """
    with measure() as sw:
        workdir.mkdir(parents=True, exist_ok=True)
        an = analyze(patch_text, tree, workdir, log=log)
        details = LivepatchBuildDetails(backend="native", analysis=an.record(),
                                        release=tree.release())
        if an.findings and not force:
            return StageResult("livepatch-build", Status.FAIL,
                               f"refused: {len(an.findings)} unsafe change(s): "
                               + "; ".join(str(f) for f in an.findings),
                               sw.elapsed, details=details)
        if not an.changed_functions:
            return StageResult("livepatch-build", Status.FAIL,
                               "the patch changes no function's object code: nothing to live patch",
                               sw.elapsed, details=details)
        for need in (tree.vmlinux, tree.symvers, tree.build / "scripts" / "module.lds"):
            if not need.is_file():
                raise NotFound(f"{need} is missing: is the kernel in {tree.build} fully built?")
        vm = VmlinuxSymbols.read(tree.vmlinux)
        exported = read_symvers(tree.symvers)
        moddir = workdir / "module"
        if moddir.exists():
            shutil.rmtree(moddir)
        moddir.mkdir()
        funcs: list[ReplacedFunction] = []
        pieces: list[Extracted] = []
        for f, d in an.diffs.items():
            if not d.changed_functions:
                continue
            after = ElfObject.read(an.objects[f][1])
            ex = extract(after, changed=[d.after[n].name for n in d.changed_functions],
                         new=[d.after[n].name for n in d.new_functions],
                         new_data=[d.after[n].name for n in d.new_data], tu_file=f, vm=vm,
                         exported=exported)
            pieces.append(ex)
            for old, new_sym in ex.replaced.items():
                k = vm.find(old, file=f, local=True) or vm.find(old, file=None, local=False)
                if k is None:
                    raise UserError(f"{f}: {old} is not in vmlinux: it cannot be live patched "
                                    "(inlined into its callers, which are patched instead)")
                funcs.append(ReplacedFunction(old, f, vm.sympos(k), new_sym))
        if len(pieces) != 1:
            # kbuild links one shipped object; several TUs would need a partial link first
            raise UserError("the native generator handles patches changing one .c file; "
                            f"this one changes {len(pieces)}")
        if tree.config_enabled("CONFIG_X86_KERNEL_IBT"):
            annotate_noendbr(pieces[0].obj, [f.new_symbol for f in funcs])
        (moddir / f"{OBJECT}_shipped").write_bytes(pieces[0].obj.to_bytes())
        # With CONFIG_MODVERSIONS, modpost reads the CRCs of each object's exports from
        # its .<obj>.cmd ("#SYMVER name crc"); kbuild's copy of a _shipped object writes
        # none, so modpost stopped at ".klp_patched.o.cmd: No such file or directory".
        # The extracted object exports nothing: an empty record is the truth
        # (tests/integration/test_distro_livepatch.py::test_fix_builds).
        (moddir / f".{OBJECT}.cmd").write_text(f"# {OBJECT}: extracted by patchflow, "
                                               "no exported symbols\n")
        (moddir / "livepatch.c").write_text(render(
            "livepatch.c.j2", name=name, backend="native", series=series, object=OBJECT,
            funcs=funcs))
        (moddir / "Kbuild").write_text(render("Kbuild.j2", name=name, object=OBJECT))
        res = run(["make", f"-j{jobs}", "-C", str(tree.build), *tree.make_args, f"M={moddir}",
                   "modules"],
                  env={"KBUILD_MODPOST_WARN": "1"}, timeout=900, log=log, check=False)
        ko = moddir / f"{name}.ko"
        if not res.ok or not ko.is_file():
            return StageResult("livepatch-build", Status.FAIL,
                               "kbuild failed to build the module: " + kbuild_error(res.tail),
                               sw.elapsed, details=details, log=str(log) if log else None)
        kobj = ElfObject.read(ko)
        klp_syms = klp_convert(kobj)
        kobj.write(ko)
        details = dataclasses.replace(
            details, module=str(ko), name=name, functions=tuple(funcs),
            copied=tuple(sorted({c for p in pieces for c in p.copied})),
            klp_symbols=tuple(klp_syms),
            exported_refs=tuple(sorted({r for p in pieces for r in p.plain_refs})),
            carried_tables=tuple(sorted({t for p in pieces for t in p.carried_tables})),
            forced_findings=tuple(an.findings) if force else ())
    status = Status.WARN if (force and an.findings) else Status.PASS
    return StageResult("livepatch-build", status,
                       f"built {ko.name}: replaces {', '.join(f.name for f in funcs)} "
                       f"({len(klp_syms)} klp symbol(s))", sw.elapsed, details=details)


# "ERROR: modpost: "foo" [/tmp/m/lp_x.ko] undefined!"
# "/tmp/m/.klp_patched.o.cmd: No such file or directory"
# "lp_x.o: warning: objtool: data relocation to !ENDBR: __klp_new__f+0x0"
_KBUILD_ERROR = re.compile(r"error|No such file|undefined|objtool:", re.I)


def kbuild_error(tail: str) -> str:
    """The line of kbuild's output that says what failed (not make's "Leaving directory")."""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    # the compiler's own "file:line:col: error: ..." says more than "cc1: some warnings..."
    exact = [ln for ln in lines if ": error:" in ln]
    hits = [ln for ln in lines if _KBUILD_ERROR.search(ln) and not ln.startswith("make")]
    return (exact or hits or lines or ["no output"])[0]


def tool_versions(tree: BuiltTree) -> dict[str, str]:
    """Compiler and kernel versions recorded in the manifest."""
    out: dict[str, str] = {}
    cfg = tree.build / ".config"
    if cfg.is_file():
        # CONFIG_CC_VERSION_TEXT="gcc (Debian 12.2.0-14+deb12u1) 12.2.0"
        m = re.search(r'^CONFIG_CC_VERSION_TEXT="([^"]*)"', cfg.read_text(), re.MULTILINE)
        if m:
            out["compiler"] = m.group(1)
        m = re.search(r'^CONFIG_LD_VERSION=(\d+)', cfg.read_text(), re.MULTILINE)
        if m:
            out["ld_version"] = m.group(1)
    out["patchflow"] = __import__("patchflow").__version__
    out["python"] = sys.version.split()[0]
    return out
