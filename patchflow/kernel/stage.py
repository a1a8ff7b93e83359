"""The build stages (build-base, build-patched), as ``patchflow build`` and the gate run them.

Where the sources come from:

* normally the tree provider (:mod:`patchflow.trees.repo`): the target branch's
  persistent source worktree, checked out at the branch head for the baseline,
  then at the series' backport branch (:func:`patchflow.backport.queue.backport_ref`,
  written by ``patchflow backport``) for the patched kernel; git rewrites only
  the files that differ, so the patched build is incremental;
* with an mbox (``patchflow build --mbox``): the same worktree at the branch
  head with the mbox applied (``git apply``, no fuzz) for the patched build,
  then reverted: a quick A/B of any patch without the backport stage.

Both keep one build dir per target and the artefacts per variant, under the
target's lock (one build at a time per target, CLI and gate alike).
"""

from __future__ import annotations

from pathlib import Path

from patchflow import gitrepo
from patchflow.config import TargetConfig
from patchflow.context import StageContext
from patchflow.errors import NotFound, WorkspaceError
from patchflow.kernel.artefacts import artefact_dir, build_dir_for, locate, target_lock
from patchflow.kernel.build import BuildDetails, BuildRequest, build
from patchflow.kernel.buildlog import Diagnostic
from patchflow.result import Progress, StageResult, Status
from patchflow.workspace import Workspace, atomic_write

VARIANTS = ("base", "patched", "both")


def base_warnings(ws: Workspace, tcfg: TargetConfig) -> tuple[Diagnostic, ...]:
    try:
        info = locate(ws.cache, tcfg.name, "base").info
    except NotFound:
        return ()
    return info.warnings if info else ()


def backport_sha(ws: Workspace, series: str, tcfg: TargetConfig,
                 revision: int | None = None) -> tuple[int, str]:
    """(revision, sha) of the finished backport of *series* onto *tcfg*."""
    from patchflow.backport.queue import backport_ref
    from patchflow.trees import repo as trees

    cfg = ws.config.series(series)
    kt = trees.open_tree(ws, tcfg)
    revs = [revision] if revision is not None else sorted(
        (v.revision for v in cfg.versions), reverse=True)
    for rev in revs:
        sha = gitrepo.rev_parse(kt.repo, backport_ref(series, rev, tcfg.name))
        if sha:
            return rev, sha
    raise NotFound(f"no backport of {series} onto {tcfg.name}: run `patchflow backport "
                   f"{series} --target {tcfg.name}` first")


def _request(ws: Workspace, tcfg: TargetConfig, src: Path, variant: str, log_dir: Path,
             jobs: int | None, keep_to: Path | None = None, **kw: object) -> BuildRequest:
    return BuildRequest(
        src_dir=src, build_dir=build_dir_for(ws.cache, tcfg.name), fragments=tcfg.kconfig,
        log=log_dir / f"build-{tcfg.name}-{variant}.log", base_config=tcfg.base_config,
        jobs=jobs, keep_to=keep_to or artefact_dir(ws.cache, tcfg.name, variant),
        target=tcfg.name, variant=variant, **kw)  # type: ignore[arg-type]


def build_from_git(ws: Workspace, tcfg: TargetConfig, series: str | None, variant: str, *,
                   jobs: int | None, log_dir: Path, progress: Progress,
                   revision: int | None = None) -> list[StageResult]:
    """Base at the branch head, patched at the backport branch, in one source worktree.

    The patched build reuses the base build's objects: only the files the
    backport changed get new mtimes, so kbuild rebuilds just those.  The caller
    holds :func:`~patchflow.kernel.artefacts.target_lock`.
    """
    from patchflow.trees import repo as trees

    kt = trees.prepare_tree(ws, tcfg, progress=progress)
    patched: tuple[int, str] | None = None
    if variant in ("patched", "both"):
        if series is None:
            raise NotFound("a patched build needs a series")
        patched = backport_sha(ws, series, tcfg, revision)
    wt = trees.source_worktree(ws, tcfg)
    results: list[StageResult] = []
    if variant in ("base", "both"):
        trees.checkout(wt, kt.head)
        progress(f"building base {tcfg.name} ({kt.release}, {kt.head[:12]})")
        results.append(build(_request(ws, tcfg, wt, "base", log_dir, jobs), progress))
    if patched and all(r.status.exit_code == 0 for r in results):
        rev, sha = patched
        trees.checkout(wt, sha)
        progress(f"rebuilding {tcfg.name} with {series} v{rev} ({sha[:12]})")
        results.append(build(_request(ws, tcfg, wt, "patched", log_dir, jobs, reconfigure=False,
                                      compare_warnings=base_warnings(ws, tcfg)), progress))
    return results


# --------------------------------------------------------------------------
# the --mbox path: the branch head, patched with git apply


def _applied_marker(src: Path) -> Path:
    return src.parent / f".{src.name}.applied"


def _undo_leftover_patch(src: Path, log: Path) -> None:
    """A run killed between apply and revert left the tree patched: revert it first."""
    marker = _applied_marker(src)
    if not marker.exists():
        return
    patch = Path(marker.read_text().strip())
    if not patch.exists() or not gitrepo.apply_in_worktree(src, patch, reverse=True, check=True,
                                                           log=log).ok:
        raise WorkspaceError(f"{src} was left patched with {patch} by an interrupted run "
                             f"and it cannot be reverted; delete the tree to unpack it again")
    gitrepo.apply_in_worktree(src, patch, reverse=True, log=log)
    marker.unlink()


def source_tree(ws: Workspace, tcfg: TargetConfig, progress: Progress) -> tuple[Path, str]:
    """The target's persistent source worktree at the branch head: (path, release).

    It is the same worktree the backport path builds in: kbuild records the
    source path in every object, so one source path per build dir is what
    keeps the patched (and the next base) build incremental.
    """
    from patchflow.trees import repo as trees

    kt = trees.prepare_tree(ws, tcfg, progress=progress)
    wt = trees.source_worktree(ws, tcfg)
    _undo_leftover_patch(wt, ws.root / "logs" / "apply-undo.log")
    trees.checkout(wt, kt.head)
    return wt, kt.release


def build_mbox(ws: Workspace, tcfg: TargetConfig, mbox: Path, variant: str, *,
               jobs: int | None, log_dir: Path, progress: Progress,
               patched_to: Path | None = None) -> list[StageResult]:
    """Base at the branch head; patched = the head with *mbox* applied, then reverted.

    *patched_to* keeps the patched artefacts elsewhere than the target's ``patched``
    (benchmarks/bench_regression.py: a test fixture must not replace the series' kernel).
    """
    src, release = source_tree(ws, tcfg, progress)
    apply_log = log_dir / f"apply-{tcfg.name}.log"
    results: list[StageResult] = []
    if variant in ("base", "both"):
        progress(f"building base {tcfg.name}")
        results.append(build(_request(ws, tcfg, src, "base", log_dir, jobs), progress))
    if variant not in ("patched", "both") or any(r.status.exit_code for r in results):
        return results
    chk = gitrepo.apply_in_worktree(src, mbox, check=True, log=apply_log)
    if not chk.ok:
        first = chk.tail.strip().splitlines()[0] if chk.tail.strip() else ""
        return [*results, StageResult("build-patched", Status.FAIL,
                                      f"{mbox.name} does not apply to {release}: {first}",
                                      chk.duration, tcfg.name, None, str(apply_log))]
    # the marker lets a later run undo a patch left behind by a killed run
    atomic_write(_applied_marker(src), str(mbox) + "\n")
    gitrepo.apply_in_worktree(src, mbox, log=apply_log)
    try:
        progress(f"rebuilding patched {tcfg.name} incrementally")
        results.append(build(_request(ws, tcfg, src, "patched", log_dir, jobs, patched_to,
                                      reconfigure=False,
                                      compare_warnings=base_warnings(ws, tcfg)), progress))
    finally:
        # the shared tree goes back to the baseline whatever happened
        gitrepo.apply_in_worktree(src, mbox, reverse=True, log=apply_log)
        _applied_marker(src).unlink(missing_ok=True)
    return results


def build_target(ctx: StageContext, variant: str, *, mbox: Path | None = None,
                 jobs: int | None = None) -> list[StageResult]:
    """``patchflow build``: the variants asked for, under the target's lock."""
    tcfg = ctx.need_target("build")
    with target_lock(ctx.ws.cache, tcfg.name):
        if mbox is not None:
            return build_mbox(ctx.ws, tcfg, mbox, variant, jobs=jobs,
                              log_dir=ctx.log.parent, progress=ctx.say)
        return build_from_git(ctx.ws, tcfg, ctx.series.name if ctx.series else None, variant,
                              jobs=jobs, log_dir=ctx.log.parent, progress=ctx.say,
                              revision=ctx.revision)


def _gate_build(ctx: StageContext, variant: str) -> StageResult:
    tcfg = ctx.need_target(f"build-{variant}")
    results = build_target(ctx, variant)
    res = results[-1]
    return StageResult(f"build-{variant}", res.status, res.summary, res.duration, tcfg.name,
                       res.details, res.log)


def run_base(ctx: StageContext) -> StageResult:
    """The gate's build-base stage."""
    return _gate_build(ctx, "base")


def run_patched(ctx: StageContext) -> StageResult:
    """The gate's build-patched stage (the backport branch, incrementally over base)."""
    return _gate_build(ctx, "patched")


__all__ = ["BuildDetails", "base_warnings", "build_from_git", "build_mbox", "build_target",
           "run_base", "run_patched", "source_tree"]
