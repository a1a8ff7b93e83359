"""Kernel builds: config assembly and verification, kbuild runs, build-log reading.

Owns everything between "a kernel source tree" and "a bootable bzImage":

* the config: the target's base config (``make tinyconfig``) plus the kconfig
  fragments kept next to the targets, merged with the tree's own
  ``scripts/kconfig/merge_config.sh`` and settled with ``olddefconfig``, then
  *verified*: every requested option must really be set, because kconfig drops
  options whose dependencies are missing without a word;
* the out-of-tree build (``O=``), one build dir per target, so that the patched
  variant rebuilds incrementally over the baseline's objects;
* the artefacts of each variant (bzImage, vmlinux, System.map, Module.symvers,
  .config) copied aside, so A/B boots never need a rebuild;
* reading the build log: the first errors and their file, the warnings a
  variant adds over another, and a full disk (an infrastructure error).

The core (:func:`build`) takes a source dir and a build dir and does not care
where the source came from (a Debian tarball, a git worktree).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchflow.errors import CommandFailed, CommandTimeout, NotFound, UserError
from patchflow.result import StageResult, Status, measure
from patchflow.runner import run, which
from patchflow.workspace import atomic_write, atomic_write_json

#: the files kept per variant; name in the build dir -> name in the artefact dir
ARTEFACTS: dict[str, str] = {
    "arch/x86/boot/bzImage": "bzImage",
    "vmlinux": "vmlinux",
    "System.map": "System.map",
    "Module.symvers": "Module.symvers",
    ".config": "config",
}
VARIANTS = ("base", "patched")
BUILD_TIMEOUT = 3 * 3600.0

# "CONFIG_ZRAM=y", "CONFIG_LOG_BUF_SHIFT=17", 'CONFIG_CMDLINE=""'
_SET_RE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
# "# CONFIG_ZRAM is not set"
_UNSET_RE = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
# "config ZRAM", "menuconfig CGROUPS" (indented inside if/menu blocks too)
_KCONFIG_SYM_RE = re.compile(r"^\s*(?:menu)?config\s+([A-Za-z0-9_]+)\s*$", re.MULTILINE)
# "mm/vmscan.c:1234:5: warning: unused variable 'x' [-Wunused-variable]"
_WARNING_RE = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?:(?P<col>\d+):)? warning: (?P<msg>.*)$")
# "mm/vmscan.c:1234:5: error: expected ';' before '}' token"
# "mm/vmscan.c:12: error: ..." (no column with some diagnostics)
_ERROR_RE = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?:(?P<col>\d+):)? (?:fatal )?error: (?P<msg>.*)$")
# "make[3]: *** [scripts/Makefile.build:229: mm/vmscan.o] Error 1"
_MAKE_ERROR_RE = re.compile(r"^make(?:\[\d+\])?: \*\*\* \[(?P<rule>[^\]]*?)(?:: (?P<target>[^\]]+))?\] Error \d+")
# "ld: mm/vmscan.o: in function `shrink_folio_list':" then "...: undefined reference to `x'"
_LINK_ERROR_RE = re.compile(r"undefined reference to|multiple definition of|ld: .*error")
# "cc1: fatal error: mm/.tmp_vmscan.o: No space left on device"
# "/usr/bin/ld: final link failed: No space left on device"
_ENOSPC_RE = re.compile(r"No space left on device|ENOSPC")


# --------------------------------------------------------------------------
# argv builders (pure; tests/unit/test_kbuild.py checks them)


def make_argv(src_dir: Path, build_dir: Path, targets: Sequence[str], *, jobs: int | None = None,
              cc: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """``make -C SRC O=BUILD -jN [CC=...] TARGETS``."""
    argv = ["make", "-C", str(src_dir), f"O={build_dir}", f"-j{jobs or os.cpu_count() or 1}"]
    if cc:
        # one argv element: make takes "CC=ccache gcc" as a single assignment, no shell involved
        argv.append(f"CC={cc}")
    # LOCALVERSION set (even empty) stops setlocalversion from appending "+" for a
    # source tree that is not at a release tag: base and patched builds (and the
    # live patch built against them) must share one kernel release, or the module's
    # vermagic does not match the kernel it is meant for
    # (tests/integration/test_gate_e2e.py caught "invalid module format").
    argv.append("LOCALVERSION=")
    argv.extend(extra)
    argv.extend(targets)
    return argv


def merge_config_argv(src_dir: Path, build_dir: Path, fragments: Sequence[Path]) -> list[str]:
    """``sh scripts/kconfig/merge_config.sh -m -O BUILD BUILD/.config FRAGS...``.

    Run through ``sh`` because the tarball does not always keep the exec bit.
    """
    script = src_dir / "scripts" / "kconfig" / "merge_config.sh"
    return ["sh", str(script), "-m", "-O", str(build_dir), str(build_dir / ".config"),
            *(str(f) for f in fragments)]


def default_cc() -> str | None:
    """``ccache gcc`` when ccache is installed (rebuilds of the same objects are free)."""
    return "ccache gcc" if shutil.which("ccache") else None


# --------------------------------------------------------------------------
# config files


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
class ConfigCheck:
    """Which requested options did not end up as asked."""

    requested: dict[str, str]
    unknown: tuple[str, ...]  # not declared by any Kconfig file of this tree
    dropped: tuple[tuple[str, str, str], ...]  # (option, wanted, got)

    @property
    def ok(self) -> bool:
        return not self.unknown and not self.dropped

    def to_json(self) -> dict[str, Any]:
        return {"requested": len(self.requested), "unknown": list(self.unknown),
                "dropped": [{"option": o, "wanted": w, "got": g} for o, w, g in self.dropped]}


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
            dropped.append((opt, want, got))
    return ConfigCheck(requested, unknown, tuple(dropped))


def read_fragments(fragments: Iterable[Path]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for frag in fragments:
        merged.update(parse_config(frag.read_text(encoding="utf-8")))
    return merged


# --------------------------------------------------------------------------
# build logs


@dataclass(frozen=True, order=True)
class Diagnostic:
    file: str
    line: int
    message: str

    @property
    def key(self) -> tuple[str, str]:
        # line numbers move when a patch adds code above a warning; file+message does not
        return (self.file, self.message)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


def parse_warnings(log: str) -> list[Diagnostic]:
    seen: dict[tuple[str, str], Diagnostic] = {}
    for line in log.splitlines():
        if m := _WARNING_RE.match(line.strip()):
            d = Diagnostic(os.path.normpath(m.group("file")), int(m.group("line")), m.group("msg"))
            seen.setdefault(d.key, d)
    return list(seen.values())


def stored_warnings(info: dict[str, Any]) -> list[Diagnostic]:
    """The warnings a ``build.json`` (see :func:`keep_artefacts`) recorded."""
    out = []
    for w in info.get("warnings", []):
        if isinstance(w, dict):
            out.append(Diagnostic(str(w["file"]), int(w["line"]), str(w["message"])))
    return out


def new_warnings(base: Iterable[Diagnostic], patched: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Warnings the patched build prints that the baseline did not."""
    known = {d.key for d in base}
    return sorted(d for d in patched if d.key not in known)


@dataclass(frozen=True)
class BuildFailure:
    kind: str  # "compile", "link", "make", "enospc"
    file: str | None
    lines: tuple[str, ...]


def classify_failure(log: str, max_lines: int = 8) -> BuildFailure:
    """The first error lines of a failed build and the file they blame."""
    lines = log.splitlines()
    for line in lines:
        if _ENOSPC_RE.search(line):
            return BuildFailure("enospc", None, (line.strip(),))
    for i, line in enumerate(lines):
        if m := _ERROR_RE.match(line.strip()):
            block = [ln for ln in lines[i:i + 40] if _ERROR_RE.match(ln.strip())][:max_lines]
            return BuildFailure("compile", os.path.normpath(m.group("file")), tuple(block))
    for i, line in enumerate(lines):
        if _LINK_ERROR_RE.search(line):
            return BuildFailure("link", None, tuple(lines[max(0, i - 1):i + max_lines - 1]))
    for line in lines:
        if m := _MAKE_ERROR_RE.match(line.strip()):
            return BuildFailure("make", m.group("target") or m.group("rule"), (line.strip(),))
    return BuildFailure("make", None, tuple(lines[-max_lines:]))


# --------------------------------------------------------------------------
# artefacts


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
    def info(self) -> dict[str, Any]:
        p = self.dir / "build.json"
        return json.loads(p.read_text()) if p.exists() else {}

    @property
    def kernel_release(self) -> str:
        return str(self.info.get("kernel_release", ""))


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
    src = info.get("src_dir")
    return Artefacts(target, variant, d, Path(info.get("build_dir", art.build_dir)),
                     Path(src) if src else None)


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


def keep_artefacts(build_dir: Path, dest: Path, info: dict[str, Any]) -> None:
    """Copy the variant's products aside (atomically per file) and write build.json."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel, name in ARTEFACTS.items():
        src = build_dir / rel
        if not src.exists():
            continue  # Module.symvers is absent when nothing is modular
        tmp = dest / f".{name}.tmp"
        shutil.copy2(src, tmp)
        os.replace(tmp, dest / name)
    atomic_write_json(dest / "build.json", info)


# --------------------------------------------------------------------------
# the build


Progress = Callable[[str], None]


def _nop(_: str) -> None:
    pass


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


def kernel_release(src_dir: Path, build_dir: Path) -> str:
    rel = build_dir / "include" / "config" / "kernel.release"
    if rel.exists():
        return rel.read_text().strip()
    done = run(["make", "-s", "-C", str(src_dir), f"O={build_dir}", "kernelrelease"], timeout=120,
               check=False)
    return done.stdout.strip().splitlines()[-1] if done.ok and done.stdout.strip() else ""


def build(src_dir: Path, build_dir: Path, fragments: Sequence[Path], *, log: Path,
          base_config: str = "tinyconfig", reconfigure: bool = True, jobs: int | None = None,
          cc: str | None = "auto", keep_to: Path | None = None, target: str | None = None,
          variant: str = "base", compare_warnings: Sequence[Diagnostic] | None = None,
          timeout: float = BUILD_TIMEOUT, progress: Progress = _nop) -> StageResult:
    """Configure and build a kernel out of tree; return what happened as a result.

    * ``reconfigure=False`` reuses the ``.config`` in *build_dir* (an incremental
      rebuild after the sources moved; ``olddefconfig`` still runs).
    * A config check failure (an unknown or dropped option) is FAIL before the
      compile starts; a compile/link failure is FAIL with the first error lines
      and the file; a full disk or a timeout is ERROR (infrastructure).
    * ``keep_to``: copy the artefacts there (see :func:`keep_artefacts`).
    * ``compare_warnings``: the baseline's warnings; the ones this build adds
      are in ``details["new_warnings"]`` and make the status WARN.
    """
    stage = f"build-{variant}"
    if cc == "auto":
        cc = default_cc()
    for tool in ("make", "gcc", "flex", "bison", "bc", "perl"):
        which(tool)
    if not (src_dir / "Makefile").is_file():
        raise NotFound(f"not a kernel source tree (no Makefile): {src_dir}")
    log.parent.mkdir(parents=True, exist_ok=True)
    details: dict[str, Any] = {"src_dir": str(src_dir), "build_dir": str(build_dir),
                               "variant": variant, "cc": cc or "gcc",
                               "jobs": jobs or os.cpu_count() or 1}
    with measure() as sw:
        try:
            stamp = build_dir / ".patchflow-fragments"
            frag_hash = fragments_hash(fragments, base_config)
            if not reconfigure and stamp.exists() and stamp.read_text().strip() != frag_hash:
                return StageResult(
                    stage, Status.ERROR, "the kconfig fragments changed since the base build "
                    f"configured {build_dir}: rebuild the base variant first",
                    0.0, target, {**details, "kind": "stale-config"}, str(log))
            if reconfigure or not (build_dir / ".config").exists():
                progress("configuring")
                check = configure(src_dir, build_dir, fragments, base_config=base_config, log=log,
                                  jobs=jobs, cc=cc)
                atomic_write(stamp, frag_hash + "\n")
            else:
                run(make_argv(src_dir, build_dir, ["olddefconfig"], jobs=jobs, cc=cc), log=log,
                    timeout=900)
                actual = parse_config((build_dir / ".config").read_text(encoding="utf-8"))
                check = check_config(read_fragments(fragments), actual, None)
        except CommandTimeout as exc:
            return StageResult(stage, Status.ERROR, f"configuring timed out after {exc.timeout:.0f}s",
                               sw.elapsed, target, {**details, "kind": "timeout"}, str(log))
        except CommandFailed as exc:
            # the config tools do not fail on a bad fragment (that is the check below):
            # a failure here is the machine (a full disk) or a broken tree
            kind = "enospc" if _ENOSPC_RE.search(exc.output_tail) else "configure"
            first = exc.output_tail.strip().splitlines()[-1] if exc.output_tail.strip() else ""
            return StageResult(stage, Status.ERROR, f"configuring failed ({kind}): {first}",
                               sw.elapsed, target, {**details, "kind": kind}, str(log))
        details["config"] = check.to_json()
        if not check.ok:
            parts = []
            if check.unknown:
                parts.append("options not in this tree's Kconfig: " + ", ".join(check.unknown))
            if check.dropped:
                parts.append("options dropped by dependencies: " + ", ".join(
                    f"{o} (wanted {w}, got {g})" for o, w, g in check.dropped))
            return StageResult(stage, Status.FAIL, "; ".join(parts), sw.elapsed, target,
                               {**details, "kind": "config"}, str(log))
        progress("compiling")
        start = log.stat().st_size if log.exists() else 0
        try:
            done = run(make_argv(src_dir, build_dir, ["bzImage", "modules"], jobs=jobs, cc=cc),
                       log=log, timeout=timeout, check=False, capture=False)
        except CommandTimeout as exc:
            return StageResult(stage, Status.ERROR, f"build timed out after {exc.timeout:.0f}s",
                               sw.elapsed, target, {**details, "kind": "timeout"}, str(log))
        text = _read_from(log, start)
    details["compile_seconds"] = round(done.duration, 1)
    warnings = parse_warnings(text)
    if keep_to is not None and (keep_to / "build.json").exists():
        # an incremental build only prints the warnings of the files it recompiled:
        # keep the ones the previous build of this variant saw for the others
        old = stored_warnings(json.loads((keep_to / "build.json").read_text()))
        known = {w.key for w in warnings}
        warnings += [w for w in old if w.key not in known]
    details["warnings"] = [dataclasses.asdict(w) for w in warnings]
    if not done.ok:
        fail = classify_failure(text)
        details.update(kind=fail.kind, error_file=fail.file, error_lines=list(fail.lines))
        if fail.kind == "enospc":
            return StageResult(stage, Status.ERROR, f"disk full during the build: {fail.lines[0]}",
                               sw.elapsed, target, details, str(log))
        where = f" in {fail.file}" if fail.file else ""
        first = fail.lines[0] if fail.lines else f"make exited {done.returncode}"
        return StageResult(stage, Status.FAIL, f"build failed{where}: {first}", sw.elapsed, target,
                           details, str(log))
    release = kernel_release(src_dir, build_dir)
    details["kernel_release"] = release
    status, summary = Status.PASS, f"built {release} in {sw.elapsed:.0f}s"
    if compare_warnings is not None:
        added = new_warnings(compare_warnings, warnings)
        details["new_warnings"] = [str(w) for w in added]
        if added:
            status = Status.WARN
            summary += f"; {len(added)} new warning(s): {added[0]}"
    if keep_to is not None:
        keep_artefacts(build_dir, keep_to, {**details, "duration": round(sw.elapsed, 1)})
        details["artefacts"] = str(keep_to)
    return StageResult(stage, status, summary, sw.elapsed, target, details, str(log))


def _read_from(path: Path, offset: int) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        fh.seek(offset)
        return fh.read()
