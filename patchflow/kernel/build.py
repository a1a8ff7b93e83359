"""One out-of-tree kernel build: configure (or reuse the config), compile, read the log.

:func:`build` takes a :class:`BuildRequest` (a source dir, its ``O=`` dir, the
fragments, the variant, where to keep the artefacts) and does not care where
the source came from (a Debian tarball, a git worktree).  Expected failures
are results: a dropped config option or a compile error is FAIL with the first
error lines and the file; a full disk or a timeout is ERROR (infrastructure).
What happened is :class:`BuildDetails`, also kept as the artefacts' ``build.json``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from patchflow.errors import CommandFailed, CommandTimeout, NotFound
from patchflow.kernel.artefacts import keep_artefacts
from patchflow.kernel.buildlog import (
    ENOSPC_RE,
    Diagnostic,
    classify_failure,
    new_warnings,
    parse_warnings,
)
from patchflow.kernel.kconfig import (
    ConfigCheck,
    check_config,
    configure,
    fragments_hash,
    parse_config,
    read_fragments,
)
from patchflow.kernel.make import default_cc, make_argv
from patchflow.result import Details, Progress, StageResult, Status, Stopwatch, measure, quiet
from patchflow.runner import run, which
from patchflow.workspace import atomic_write

BUILD_TIMEOUT = 3 * 3600.0


@dataclass(frozen=True)
class BuildRequest:
    """What to build: everything :func:`build` needs, nothing it has to look up."""

    src_dir: Path
    build_dir: Path
    fragments: tuple[Path, ...]
    log: Path
    base_config: str = "tinyconfig"
    #: False reuses the ``.config`` in build_dir (an incremental rebuild; olddefconfig still runs)
    reconfigure: bool = True
    jobs: int | None = None
    #: the compiler command; "auto" is ``ccache gcc`` when ccache is there
    cc: str | None = "auto"
    #: copy the artefacts (and build.json) there
    keep_to: Path | None = None
    target: str | None = None
    variant: str = "base"
    #: the baseline's warnings: the ones this build adds make it WARN
    compare_warnings: tuple[Diagnostic, ...] | None = None
    timeout: float = BUILD_TIMEOUT


@dataclass(frozen=True)
class BuildDetails(Details):
    kind: ClassVar[str] = "build"
    src_dir: str
    build_dir: str
    variant: str
    cc: str
    jobs: int
    #: ok | config | compile | link | make | enospc | timeout | configure | stale-config
    outcome: str = "ok"
    config: ConfigCheck | None = None
    compile_seconds: float = 0.0
    warnings: tuple[Diagnostic, ...] = ()
    #: what this build warns about that the baseline did not (None: not compared)
    new_warnings: tuple[Diagnostic, ...] | None = None
    kernel_release: str = ""
    artefacts: str = ""
    error_file: str | None = None
    error_lines: tuple[str, ...] = ()
    duration: float = 0.0


def kernel_release(src_dir: Path, build_dir: Path) -> str:
    rel = build_dir / "include" / "config" / "kernel.release"
    if rel.exists():
        return rel.read_text().strip()
    done = run(["make", "-s", "-C", str(src_dir), f"O={build_dir}", "kernelrelease"], timeout=120,
               check=False)
    return done.stdout.strip().splitlines()[-1] if done.ok and done.stdout.strip() else ""


def _settle_config(req: BuildRequest, cc: str | None, progress: Progress) -> ConfigCheck:
    """A fresh config (base config + fragments), or the existing one settled again."""
    stamp = req.build_dir / ".patchflow-fragments"
    frag_hash = fragments_hash(req.fragments, req.base_config)
    if req.reconfigure or not (req.build_dir / ".config").exists():
        progress("configuring")
        check = configure(req.src_dir, req.build_dir, req.fragments, base_config=req.base_config,
                          log=req.log, jobs=req.jobs, cc=cc)
        atomic_write(stamp, frag_hash + "\n")
        return check
    run(make_argv(req.src_dir, req.build_dir, ["olddefconfig"], jobs=req.jobs, cc=cc),
        log=req.log, timeout=900)
    actual = parse_config((req.build_dir / ".config").read_text(encoding="utf-8"))
    return check_config(read_fragments(req.fragments), actual, None)


def _config_problem(check: ConfigCheck) -> str:
    parts = []
    if check.unknown:
        parts.append("options not in this tree's Kconfig: " + ", ".join(check.unknown))
    if check.dropped:
        parts.append("options dropped by dependencies: " + ", ".join(
            f"{d.option} (wanted {d.wanted}, got {d.got})" for d in check.dropped))
    return "; ".join(parts)


def build(req: BuildRequest, progress: Progress = quiet) -> StageResult:
    """Configure and build a kernel out of tree; return what happened as a result."""
    stage = f"build-{req.variant}"
    cc = default_cc() if req.cc == "auto" else req.cc
    for tool in ("make", "gcc", "flex", "bison", "bc", "perl"):
        which(tool)
    if not (req.src_dir / "Makefile").is_file():
        raise NotFound(f"not a kernel source tree (no Makefile): {req.src_dir}")
    req.log.parent.mkdir(parents=True, exist_ok=True)
    details = BuildDetails(str(req.src_dir), str(req.build_dir), req.variant, cc or "gcc",
                           req.jobs or os.cpu_count() or 1)

    def result(status: Status, summary: str, sw: Stopwatch, **kw: object) -> StageResult:
        return StageResult(stage, status, summary, sw.elapsed, req.target,
                           replace(details, **kw), str(req.log))  # type: ignore[arg-type]

    with measure() as sw:
        stamp = req.build_dir / ".patchflow-fragments"
        if (not req.reconfigure and stamp.exists()
                and stamp.read_text().strip() != fragments_hash(req.fragments, req.base_config)):
            return result(Status.ERROR, "the kconfig fragments changed since the base build "
                          f"configured {req.build_dir}: rebuild the base variant first", sw,
                          outcome="stale-config")
        try:
            check = _settle_config(req, cc, progress)
        except CommandTimeout as exc:
            return result(Status.ERROR, f"configuring timed out after {exc.timeout:.0f}s", sw,
                          outcome="timeout")
        except CommandFailed as exc:
            # the config tools do not fail on a bad fragment (that is the check below):
            # a failure here is the machine (a full disk) or a broken tree
            kind = "enospc" if ENOSPC_RE.search(exc.output_tail) else "configure"
            first = exc.output_tail.strip().splitlines()[-1] if exc.output_tail.strip() else ""
            return result(Status.ERROR, f"configuring failed ({kind}): {first}", sw,
                          outcome=kind)
        details = replace(details, config=check)
        if not check.ok:
            return result(Status.FAIL, _config_problem(check), sw, outcome="config")
        progress("compiling")
        start = req.log.stat().st_size if req.log.exists() else 0
        try:
            done = run(make_argv(req.src_dir, req.build_dir, ["bzImage", "modules"],
                                 jobs=req.jobs, cc=cc),
                       log=req.log, timeout=req.timeout, check=False, capture=False)
        except CommandTimeout as exc:
            return result(Status.ERROR, f"build timed out after {exc.timeout:.0f}s", sw,
                          outcome="timeout")
        text = _read_from(req.log, start)
    return _judge(req, details, done.ok, done.returncode, round(done.duration, 1), text, sw)


def _judge(req: BuildRequest, details: BuildDetails, ok: bool, returncode: int,
           compile_seconds: float, text: str, sw: Stopwatch) -> StageResult:
    """The verdict from the compile's log, and the artefacts kept on success."""
    stage = f"build-{req.variant}"
    warnings = parse_warnings(text)
    previous = _previous(req)
    if previous is not None:
        # an incremental build only prints the warnings of the files it recompiled:
        # keep the ones the previous build of this variant saw for the others
        known = {w.key for w in warnings}
        warnings += [w for w in previous.warnings if w.key not in known]
    details = replace(details, compile_seconds=compile_seconds, warnings=tuple(warnings))
    if not ok:
        fail = classify_failure(text)
        details = replace(details, outcome=fail.kind, error_file=fail.file,
                          error_lines=tuple(fail.lines))
        if fail.kind == "enospc":
            return StageResult(stage, Status.ERROR, f"disk full during the build: {fail.lines[0]}",
                               sw.elapsed, req.target, details, str(req.log))
        where = f" in {fail.file}" if fail.file else ""
        first = fail.lines[0] if fail.lines else f"make exited {returncode}"
        return StageResult(stage, Status.FAIL, f"build failed{where}: {first}", sw.elapsed,
                           req.target, details, str(req.log))
    release = kernel_release(req.src_dir, req.build_dir)
    details = replace(details, kernel_release=release)
    status, summary = Status.PASS, f"built {release} in {sw.elapsed:.0f}s"
    if req.compare_warnings is not None:
        added = tuple(new_warnings(req.compare_warnings, warnings))
        details = replace(details, new_warnings=added)
        if added:
            status = Status.WARN
            summary += f"; {len(added)} new warning(s): {added[0]}"
    if req.keep_to is not None:
        details = replace(details, artefacts=str(req.keep_to), duration=round(sw.elapsed, 1))
        keep_artefacts(req.build_dir, req.keep_to, details)
    return StageResult(stage, status, summary, sw.elapsed, req.target, details, str(req.log))


def _previous(req: BuildRequest) -> BuildDetails | None:
    if req.keep_to is None or not (req.keep_to / "build.json").exists():
        return None
    from patchflow.kernel.artefacts import Artefacts

    return Artefacts(req.target or "", req.variant, req.keep_to, req.build_dir).info


def _read_from(path: Path, offset: int) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        fh.seek(offset)
        return fh.read()


def stored_warnings(previous: BuildDetails | None) -> Sequence[Diagnostic]:
    """The warnings a kept build recorded (none when there is no record)."""
    return previous.warnings if previous is not None else ()
