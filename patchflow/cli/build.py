"""``patchflow build|boot|bench``: the thin skin over kbuild, qemu and bench.

Where the sources come from:

* normally the tree provider (:mod:`patchflow.trees.repo`): the target branch's
  persistent source worktree, checked out at the branch head for the baseline,
  then at the series' backport branch (:func:`patchflow.backport.backport_ref`,
  written by ``patchflow backport``) for the patched kernel; git rewrites only
  the files that differ, so the patched build is incremental;
* with ``--mbox``: the target's newest Debian ``linux-source`` release unpacked
  into the cache and the mbox applied with ``git apply`` (no fuzz) for the
  patched build, then reverted: for a quick A/B of any patch without the
  backport stage.

Both keep one build dir per target; artefacts are kept per variant.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from patchflow.cli.options import (
    Ctx,
    emit_json,
    format_option,
    interactive,
    pass_ctx,
    table,
)
from patchflow.config import TargetConfig
from patchflow.errors import WorkspaceError
from patchflow.result import StageResult, Status, exit_code
from patchflow.workspace import Workspace, atomic_write, atomic_write_json, reproduce_cmdline

if TYPE_CHECKING:
    from patchflow.kernel.build import Diagnostic


def _say(fmt: str, msg: str) -> None:
    if fmt == "text":
        click.echo(f"... {msg}", err=True)


# --------------------------------------------------------------------------
# the --mbox path: a Debian source tarball, patched with git apply


@dataclass(frozen=True)
class SourceTree:
    path: Path
    release: str  # kernel release of the checked-out head


def source_tree(ws: Workspace, target: TargetConfig,
                progress: Callable[[str], None] | None = None) -> SourceTree:
    """The target's persistent source worktree, at the branch head.

    ``--mbox`` builds apply the mbox on top of it and revert it afterwards.
    It is the same worktree the backport path builds in: kbuild records the
    source path in every object, so one source path per build dir is what
    keeps the patched (and the next base) build incremental.
    """
    from patchflow.trees import repo as tree

    kt = tree.prepare_tree(ws, target, progress=progress)
    wt = tree.source_worktree(ws, target)
    _undo_leftover_patch(SourceTree(wt, kt.release), ws.root / "logs" / "apply-undo.log")
    tree.checkout(wt, kt.head)
    return SourceTree(wt, kt.release)


def apply_argv(mbox: Path, reverse: bool = False, check: bool = False) -> list[str]:
    """``git apply`` of a whole mbox in a plain (non-git) directory; no fuzz, ever."""
    argv = ["git", "apply", "--whitespace=nowarn"]
    if reverse:
        argv.append("-R")
    if check:
        argv.append("--check")
    return [*argv, str(mbox)]


# --------------------------------------------------------------------------
# build


@click.command("build")
@click.argument("series")
@click.option("--target", "-t", required=True, help="Target name (targets/<name>.toml).")
@click.option("--variant", type=click.Choice(["base", "patched", "both"]), default="both",
              show_default=True, help="Which kernel to build; patched rebuilds over base.")
@click.option("--mbox", type=click.Path(dir_okay=False, exists=True),
              help="Apply this mbox to the Debian source instead of using the backport branch.")
@click.option("--jobs", "-j", type=click.IntRange(1, 512), default=None,
              help="make -j [default: nproc].")
@format_option
@pass_ctx
def build_cmd(ctx: Ctx, series: str, target: str, variant: str, mbox: str | None,
              jobs: int | None, fmt: str) -> None:
    """Build the baseline and/or patched kernel of SERIES for a target.

    Baseline: the target branch head; patched: the backport branch that
    `patchflow backport` wrote (or, with --mbox, that mbox applied).

    The config is the target's base config plus its kconfig fragments; every
    requested option is checked after olddefconfig.  Artefacts are kept per
    variant in the shared cache.  Exit 1 on a build failure or a dropped
    option, 2 on a missing tool or a full disk.
    """
    from patchflow.kernel import build as kbuild

    ws = ctx.ws
    tcfg = ws.config.target(target)
    run_id, run_dir = _start(ctx, "build")

    def progress(msg: str) -> None:
        _say(fmt, msg)

    with kbuild.target_lock(ws.cache, tcfg.name):
        results = _build_variants(ws, tcfg, series, variant, mbox, jobs, run_dir, progress)
    for r in results:
        ctx.state.record(r, run_id=run_id, series=series)
    _finish(ctx, run_id, run_dir, results)
    _show(results, fmt)
    code = exit_code(r.status for r in results)
    if code:
        raise click.exceptions.Exit(code)


def _applied_marker(src: SourceTree) -> Path:
    return src.path.parent / f".{src.path.name}.applied"


def _undo_leftover_patch(src: SourceTree, log: Path) -> None:
    """A run killed between apply and revert left the tree patched: revert it first."""
    from patchflow.runner import run

    marker = _applied_marker(src)
    if not marker.exists():
        return
    patch = Path(marker.read_text().strip())
    if not patch.exists() or not run(apply_argv(patch, reverse=True, check=True), cwd=src.path,
                                     check=False, timeout=300, log=log).ok:
        raise WorkspaceError(f"{src.path} was left patched with {patch} by an interrupted run "
                             f"and it cannot be reverted; delete the tree to unpack it again")
    run(apply_argv(patch, reverse=True), cwd=src.path, timeout=300, log=log)
    marker.unlink()


def _git_build(ws: Workspace, tcfg: TargetConfig, series: str, variant: str,
               jobs: int | None, run_dir: Path,
               progress: Callable[[str], None]) -> list[StageResult]:
    """Base at the branch head, patched at the backport branch (see patchflow.pipeline)."""
    from patchflow.pipeline import build_from_git

    return build_from_git(ws, tcfg, series, variant, jobs=jobs, log_dir=run_dir,
                          progress=progress)


def _base_warnings(ws: Workspace, tcfg: TargetConfig) -> list[Diagnostic]:
    from patchflow.pipeline import base_warnings

    return base_warnings(ws, tcfg)


def _build_variants(ws: Workspace, tcfg: TargetConfig, series: str, variant: str,
                    mbox: str | None, jobs: int | None, run_dir: Path,
                    progress: Callable[[str], None]) -> list[StageResult]:
    from patchflow.kernel import build as kbuild
    from patchflow.runner import run

    if mbox is None:
        return _git_build(ws, tcfg, series, variant, jobs, run_dir, progress)
    src = source_tree(ws, tcfg, progress=progress)
    _undo_leftover_patch(src, run_dir / f"apply-{tcfg.name}.log")
    bdir = kbuild.build_dir_for(ws.cache, tcfg.name)
    results: list[StageResult] = []
    if variant in ("base", "both"):
        progress(f"building base {tcfg.name} in {bdir}")
        r = kbuild.build(src.path, bdir, tcfg.kconfig, base_config=tcfg.base_config,
                         log=run_dir / f"build-{tcfg.name}-base.log", jobs=jobs,
                         keep_to=kbuild.artefact_dir(ws.cache, tcfg.name, "base"),
                         target=tcfg.name, variant="base", progress=progress)
        results.append(r)
    if variant in ("patched", "both") and all(r.status.exit_code == 0 for r in results):
        base_warnings = _base_warnings(ws, tcfg)
        patch = Path(mbox)
        chk = run(apply_argv(patch, check=True), cwd=src.path, check=False, timeout=300,
                  log=run_dir / f"apply-{tcfg.name}.log")
        if not chk.ok:
            results.append(StageResult("build-patched", Status.FAIL,
                                       f"{patch.name} does not apply to {src.release}: "
                                       f"{chk.tail.strip().splitlines()[0] if chk.tail.strip() else ''}",
                                       chk.duration, tcfg.name, {"mbox": str(patch)},
                                       str(run_dir / f"apply-{tcfg.name}.log")))
        else:
            # the marker lets a later run undo a patch left behind by a killed run
            atomic_write(_applied_marker(src), str(patch) + "\n")
            run(apply_argv(patch), cwd=src.path, timeout=300, log=run_dir / f"apply-{tcfg.name}.log")
            try:
                progress(f"rebuilding patched {tcfg.name} incrementally")
                r = kbuild.build(src.path, bdir, tcfg.kconfig, base_config=tcfg.base_config,
                                 log=run_dir / f"build-{tcfg.name}-patched.log", jobs=jobs,
                                 reconfigure=False,
                                 keep_to=kbuild.artefact_dir(ws.cache, tcfg.name, "patched"),
                                 target=tcfg.name, variant="patched",
                                 compare_warnings=base_warnings, progress=progress)
                results.append(r)
            finally:
                # the shared tree goes back to the baseline whatever happened
                run(apply_argv(patch, reverse=True), cwd=src.path, timeout=300,
                    log=run_dir / f"apply-{tcfg.name}.log")
                _applied_marker(src).unlink(missing_ok=True)
    return results


# --------------------------------------------------------------------------
# boot


@click.command("boot")
@click.argument("series", required=False)
@click.option("--target", "-t", required=True, help="Target name (targets/<name>.toml).")
@click.option("--variant", type=click.Choice(["base", "patched"]), default="base",
              show_default=True)
@click.option("--profile", default="smoke", show_default=True,
              help="Benchmark profile run as the smoke check.")
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto",
              show_default=True, help="auto: KVM only if a probe boot proves it works.")
@format_option
@pass_ctx
def boot_cmd(ctx: Ctx, series: str | None, target: str, variant: str, profile: str, accel: str,
             fmt: str) -> None:
    """Boot a built kernel in QEMU and run a short stress-ng smoke check.

    Exit 1 if the console shows an oops, BUG, WARNING, panic, lockup...; 2 if
    the guest hangs or the run is incomplete.
    """
    from patchflow.bench import ab as bench
    from patchflow.boot import qemu
    from patchflow.kernel import build as kbuild

    ws = ctx.ws
    tcfg = ws.config.target(target)
    art = kbuild.locate(ws.cache, tcfg.name, variant)
    prof = bench.find_profile(profile, ws.config_root)
    run_id, run_dir = _start(ctx, "boot")
    choice = qemu.choose_accel(ws.cache, art.bzimage, force=None if accel == "auto" else accel)
    _say(fmt, f"accelerator: {choice.accel} ({choice.reason})")
    rep = bench.run_once(art.bzimage, prof, cache=ws.cache,
                         log=run_dir / f"console-{tcfg.name}-{variant}.log", accel=choice.accel,
                         variant=variant, target=tcfg.name)
    res = StageResult(f"boot-{variant}", rep.status, rep.summary, rep.wall_seconds, tcfg.name,
                      {"accel": choice.to_json(), "metrics": rep.metrics,
                       "kernel_release": rep.kernel_release, "profile": prof.name}, str(rep.log))
    ctx.state.record(res, run_id=run_id, series=series)
    _finish(ctx, run_id, run_dir, [res])
    _show([res], fmt)
    if res.status.exit_code:
        raise click.exceptions.Exit(res.status.exit_code)


# --------------------------------------------------------------------------
# bench


@click.command("bench")
@click.argument("series")
@click.option("--target", "-t", required=True, help="Target name (targets/<name>.toml).")
@click.option("--reps", type=click.IntRange(1, 100), default=None,
              help="Boots per variant [default: the profile's].")
@click.option("--profile", default="reclaim", show_default=True, help="Benchmark profile.")
@click.option("--vcpus", type=click.IntRange(1, 64), default=None,
              help="Guest vCPUs [default: the profile's]; the workload scales with them.")
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto",
              show_default=True, help="auto: KVM only if a probe boot proves it works.")
@format_option
@pass_ctx
def bench_cmd(ctx: Ctx, series: str, target: str, reps: int | None, profile: str,
              vcpus: int | None, accel: str, fmt: str) -> None:
    """Compare the patched kernel against the baseline under the reclaim workload.

    Runs are fresh boots, interleaved A B B A...; each metric gets the medians,
    the relative change with a bootstrap 95% interval, a Mann-Whitney U p-value
    and a verdict.  Exit 1 on a significant regression of a primary metric or
    an oops; 2 when a run hangs or yields no metrics.
    """
    from patchflow.bench import ab as bench
    from patchflow.boot import qemu
    from patchflow.kernel import build as kbuild

    ws = ctx.ws
    tcfg = ws.config.target(target)
    arts = {v: kbuild.locate(ws.cache, tcfg.name, v) for v in ("base", "patched")}
    prof = bench.find_profile(profile, ws.config_root)
    run_id, run_dir = _start(ctx, "bench")
    choice = qemu.choose_accel(ws.cache, arts["base"].bzimage,
                               force=None if accel == "auto" else accel)
    _say(fmt, f"accelerator: {choice.accel} ({choice.reason})")
    report = bench.run_ab({v: a.bzimage for v, a in arts.items()}, prof, cache=ws.cache,
                          run_dir=run_dir, accel=choice, reps=reps, vcpus=vcpus,
                          target=tcfg.name, progress=lambda m: _say(fmt, m))
    report.environment["builds"] = {v: a.info.get("kernel_release", "") for v, a in arts.items()}
    ctx.state.record(report.result, run_id=run_id, series=series, samples=report.samples)
    atomic_write_json(run_dir / "bench.json", report.to_json())
    _finish(ctx, run_id, run_dir, [report.result])
    if fmt == "json":
        emit_json(report.to_json())
    else:
        rows = [(c.metric, _num(c.median_a), _num(c.median_b), bench.format_change(c),
                 f"{c.p_value:.3f}", c.better, c.verdict) for c in report.comparisons]
        if rows:
            table(["metric", "base", "patched", "change [95% CI]", "p", "better", "verdict"],
                  rows, title=f"{series} on {tcfg.name}: {prof.name}, "
                              f"{report.environment['vcpus']} vCPUs, {choice.accel}")
        _show([report.result], fmt)
    if report.result.status.exit_code:
        raise click.exceptions.Exit(report.result.status.exit_code)


# --------------------------------------------------------------------------
# helpers


def _num(x: float) -> str:
    return f"{x:.4g}"


def _start(ctx: Ctx, command: str) -> tuple[str, Path]:
    run_id = ctx.state.start_run(command, reproduce_cmdline())
    run_dir = ctx.ws.runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "metadata.json", {"command": command, "run_id": run_id,
                                                  "cmdline": reproduce_cmdline(),
                                                  "started": time.time(), "pid": os.getpid()})
    return run_id, run_dir


def _finish(ctx: Ctx, run_id: str, run_dir: Path, results: list[StageResult]) -> None:
    meta_path = run_dir / "metadata.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta.update(finished=time.time(), results=[r.to_json() for r in results])
    atomic_write_json(meta_path, meta)
    worst = max((r.status.exit_code for r in results), default=0)
    ctx.state.finish_run(run_id, {0: "pass", 1: "fail", 2: "error"}[worst])


def _show(results: list[StageResult], fmt: str) -> None:
    if fmt == "json":
        emit_json([r.to_json() for r in results])
        return
    for r in results:
        colour = {"pass": "green", "warn": "yellow", "fail": "red", "error": "red"}.get(
            r.status.value)
        line = f"{r.stage} {r.target or ''}: {r.status.value.upper()} {r.summary}"
        click.secho(line, fg=colour if interactive() else None)
        if r.log:
            click.echo(f"  log: {r.log}")
