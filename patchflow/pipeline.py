"""The kernel stages of the pipeline, as the gate runs them for one target.

Owns the glue between the domain modules: which source ref each build
variant uses (the target branch head, or the backport branch), which kernel
each boot and benchmark runs, and which tree and patch the live patch is
built from.  Every ``gate_*`` function follows the gate's adapter contract
(:func:`patchflow.gate.adapter`) and turns expected failures into results.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from patchflow.config import SeriesConfig, TargetConfig
from patchflow.errors import NotFound, PatchflowError, UserError
from patchflow.kernel.build import Diagnostic
from patchflow.result import StageResult, Status
from patchflow.state import State
from patchflow.workspace import Workspace

Progress = Callable[[str], None]


def _logger(log: Path) -> Progress:
    def say(msg: str) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(msg.rstrip() + "\n")
    return say


def _need_target(stage: str, target: TargetConfig | None) -> TargetConfig:
    if target is None:
        raise UserError(f"the {stage} stage needs a target")
    return target


def base_warnings(ws: Workspace, tcfg: TargetConfig) -> list[Diagnostic]:
    from patchflow.kernel import build as kbuild

    try:
        return kbuild.stored_warnings(kbuild.locate(ws.cache, tcfg.name, "base").info)
    except NotFound:
        return []


def backport_sha(ws: Workspace, series: SeriesConfig | str, tcfg: TargetConfig,
                 revision: int | None = None) -> tuple[int, str]:
    """(revision, sha) of the finished backport of *series* onto *tcfg*."""
    from patchflow import gitrepo
    from patchflow.backport import engine as backport
    from patchflow.trees import repo as tree

    name = series if isinstance(series, str) else series.name
    cfg = ws.config.series(name)
    kt = tree.open_tree(ws, tcfg)
    revs = [revision] if revision is not None else sorted(
        (v.revision for v in cfg.versions), reverse=True)
    for rev in revs:
        sha = gitrepo.rev_parse(kt.repo, backport.backport_ref(name, rev, tcfg.name))
        if sha:
            return rev, sha
    raise NotFound(f"no backport of {name} onto {tcfg.name}: run `patchflow backport "
                   f"{name} --target {tcfg.name}` first")


def build_from_git(ws: Workspace, tcfg: TargetConfig, series: str, variant: str, *,
                   jobs: int | None, log_dir: Path, progress: Progress,
                   revision: int | None = None) -> list[StageResult]:
    """Base at the branch head, patched at the backport branch, in one source worktree.

    The patched build reuses the base build's objects: only the files the
    backport changed get new mtimes, so kbuild rebuilds just those.
    """
    from patchflow.kernel import build as kbuild
    from patchflow.trees import repo as tree

    kt = tree.prepare_tree(ws, tcfg, progress=progress)
    patched: tuple[int, str] | None = None
    if variant in ("patched", "both"):
        patched = backport_sha(ws, series, tcfg, revision)
    wt = tree.source_worktree(ws, tcfg)
    bdir = kbuild.build_dir_for(ws.cache, tcfg.name)
    results: list[StageResult] = []
    if variant in ("base", "both"):
        tree.checkout(wt, kt.head)
        progress(f"building base {tcfg.name} ({kt.release}, {kt.head[:12]}) in {bdir}")
        results.append(kbuild.build(
            wt, bdir, tcfg.kconfig, base_config=tcfg.base_config,
            log=log_dir / f"build-{tcfg.name}-base.log", jobs=jobs,
            keep_to=kbuild.artefact_dir(ws.cache, tcfg.name, "base"), target=tcfg.name,
            variant="base", progress=progress))
    if patched and all(r.status.exit_code == 0 for r in results):
        rev, sha = patched
        tree.checkout(wt, sha)
        progress(f"rebuilding {tcfg.name} with {series} v{rev} ({sha[:12]})")
        results.append(kbuild.build(
            wt, bdir, tcfg.kconfig, base_config=tcfg.base_config,
            log=log_dir / f"build-{tcfg.name}-patched.log", jobs=jobs, reconfigure=False,
            keep_to=kbuild.artefact_dir(ws.cache, tcfg.name, "patched"), target=tcfg.name,
            variant="patched", compare_warnings=base_warnings(ws, tcfg), progress=progress))
    return results


# --------------------------------------------------------------------------
# gate adapters


def gate_build(ws: Workspace, state: State, cfg: SeriesConfig, revision: int | None,
               target: TargetConfig | None, *, log: Path, variant: str = "base",
               **_extra: Any) -> StageResult:
    from patchflow.kernel import build as kbuild

    tcfg = _need_target(f"build-{variant}", target)
    say = _logger(log)
    try:
        with kbuild.target_lock(ws.cache, tcfg.name):
            results = build_from_git(ws, tcfg, cfg.name, variant, jobs=None,
                                     log_dir=log.parent, progress=say, revision=revision)
    except PatchflowError as exc:
        say(f"error: {exc}")
        return StageResult(f"build-{variant}", Status.ERROR, str(exc), target=tcfg.name,
                           log=str(log))
    res = results[-1]
    return StageResult(f"build-{variant}", res.status, res.summary, res.duration, tcfg.name,
                       res.details, res.log)


def gate_boot(ws: Workspace, state: State, cfg: SeriesConfig, revision: int | None,
              target: TargetConfig | None, *, log: Path, variant: str = "patched",
              **_extra: Any) -> StageResult:
    """Boot the patched kernel and run the smoke profile; the console decides."""
    from patchflow.bench import ab as bench
    from patchflow.boot import qemu
    from patchflow.kernel import build as kbuild

    tcfg = _need_target("boot", target)
    try:
        art = kbuild.locate(ws.cache, tcfg.name, variant)
        prof = bench.find_profile(os.environ.get("PATCHFLOW_BOOT_PROFILE", "smoke"),
                                  ws.config_root)
        choice = qemu.choose_accel(ws.cache, art.bzimage)
        rep = bench.run_once(art.bzimage, prof, cache=ws.cache, log=log, accel=choice.accel,
                             variant=variant, target=tcfg.name)
    except PatchflowError as exc:
        _logger(log)(f"error: {exc}")
        return StageResult("boot", Status.ERROR, str(exc), target=tcfg.name, log=str(log))
    return StageResult("boot", rep.status, rep.summary, rep.wall_seconds, tcfg.name,
                       {"accel": choice.to_json(), "metrics": rep.metrics, "variant": variant,
                        "kernel_release": rep.kernel_release, "profile": prof.name},
                       str(rep.log))


def gate_bench(ws: Workspace, state: State, cfg: SeriesConfig, revision: int | None,
               target: TargetConfig | None, *, log: Path, **_extra: Any
               ) -> tuple[StageResult, list[tuple[str, int, str, float]]]:
    """A/B benchmark; profile and repetitions from $PATCHFLOW_BENCH_PROFILE/_REPS."""
    from patchflow.bench import ab as bench
    from patchflow.boot import qemu
    from patchflow.kernel import build as kbuild

    tcfg = _need_target("bench", target)
    try:
        arts = {v: kbuild.locate(ws.cache, tcfg.name, v) for v in ("base", "patched")}
        prof = bench.find_profile(os.environ.get("PATCHFLOW_BENCH_PROFILE", "reclaim"),
                                  ws.config_root)
        reps_env = os.environ.get("PATCHFLOW_BENCH_REPS")
        choice = qemu.choose_accel(ws.cache, arts["base"].bzimage)
        report = bench.run_ab({v: a.bzimage for v, a in arts.items()}, prof, cache=ws.cache,
                              run_dir=log.parent / f"bench-{tcfg.name}", accel=choice,
                              reps=int(reps_env) if reps_env else None, target=tcfg.name,
                              progress=_logger(log))
    except PatchflowError as exc:
        _logger(log)(f"error: {exc}")
        return StageResult("bench", Status.ERROR, str(exc), target=tcfg.name, log=str(log)), []
    report.environment["builds"] = {v: a.info.get("kernel_release", "") for v, a in arts.items()}
    res = report.result
    details = {**res.details, "environment": report.environment}
    return (StageResult("bench", res.status, res.summary, res.duration, tcfg.name, details,
                        str(log)), list(report.samples))


def stored_patch(ws: Workspace, series: str, target: str) -> Path:
    """The stored backport queue of (series, target) as one patch file."""
    from patchflow.backport.engine import stored_patches

    patches = stored_patches(ws.config_root, series, target)
    if not patches:
        raise NotFound(f"no stored backport of {series} for {target}; "
                       f"run: patchflow backport {series} --target {target}")
    out = ws.cache_dir("livepatch", series, target) / "series.patch"
    out.write_text("".join(p.read_text() for p in patches))
    return out


def base_tree(ws: Workspace, tcfg: TargetConfig) -> Any:
    """The livepatch view of the base kernel: base sources, the O= dir, base vmlinux.

    The O= dir is shared by both variants and holds the patched vmlinux after a
    patched build, so the vmlinux (symbol positions, build-id) comes from the
    kept base artefacts and the source worktree is put back at the base head.
    """
    from patchflow.kernel import build as kbuild
    from patchflow.livepatch.generate import KernelTree
    from patchflow.trees import repo as tree

    art = kbuild.locate(ws.cache, tcfg.name, "base")
    kt = tree.open_tree(ws, tcfg)
    wt = tree.source_worktree(ws, tcfg)
    tree.checkout(wt, kt.head)

    class BaseTree(KernelTree):
        @property
        def vmlinux(self) -> Path:
            return art.vmlinux

    return BaseTree(wt, art.build_dir)


def gate_livepatch_build(ws: Workspace, state: State, cfg: SeriesConfig, revision: int | None,
                         target: TargetConfig | None, *, log: Path, **_extra: Any
                         ) -> StageResult:
    import hashlib

    from patchflow.kernel import build as kbuild
    from patchflow.livepatch import backends
    from patchflow.livepatch.generate import generate, module_name
    from patchflow.workspace import atomic_write_json

    tcfg = _need_target("livepatch-build", target)
    outdir = ws.root / "livepatch" / cfg.name / tcfg.name
    try:
        with kbuild.target_lock(ws.cache, tcfg.name):
            kt = base_tree(ws, tcfg)
            patch = stored_patch(ws, cfg.name, tcfg.name)
            choice = backends.choose(kt.release() or "0.0", kt.source, requested=None)
            if choice.backend != "native":
                return StageResult("livepatch-build", Status.SKIP,
                                   f"{choice.backend} chosen ({choice.reason}); the gate only "
                                   "drives the native generator", target=tcfg.name)
            res = generate(patch.read_text(), kt, outdir / "work", name=module_name(cfg.name),
                           series=cfg.name, log=log)
    except PatchflowError as exc:
        _logger(log)(f"error: {exc}")
        return StageResult("livepatch-build", Status.ERROR, str(exc), target=tcfg.name,
                           log=str(log))
    details = {**res.details, "backend": choice.backend, "backend_reason": choice.reason,
               "patch": str(patch), "source": str(kt.source), "build_dir": str(kt.build),
               "vmlinux": str(kt.vmlinux),
               "patch_sha256": hashlib.sha256(patch.read_bytes()).hexdigest()}
    out = StageResult("livepatch-build", res.status, res.summary, res.duration, tcfg.name,
                      details, str(log))
    atomic_write_json(outdir / "build.json", out.to_json())
    return out


def gate_livepatch_verify(ws: Workspace, state: State, cfg: SeriesConfig, revision: int | None,
                          target: TargetConfig | None, *, log: Path, **_extra: Any
                          ) -> StageResult:
    from patchflow.kernel import build as kbuild
    from patchflow.livepatch.verify import VerifySpec, verify

    tcfg = _need_target("livepatch-verify", target)
    built = state.last_result(series=cfg.name, target=tcfg.name, stage="livepatch-build")
    built_details: dict[str, Any] = (built or {}).get("details", {})
    module = built_details.get("module")
    if not module or not Path(module).is_file():
        return StageResult("livepatch-verify", Status.ERROR,
                           "no livepatch module built for this target", target=tcfg.name)
    try:
        art = kbuild.locate(ws.cache, tcfg.name, "base")
        spec = VerifySpec(name=str(built_details.get("name", Path(module).stem)),
                          timeout=60, stress_seconds=int(os.environ.get(
                              "PATCHFLOW_LIVEPATCH_STRESS", "20")))
        res = verify(Path(module), art.bzimage, spec, cache=ws.cache_dir("livepatch"), log=log)
    except PatchflowError as exc:
        _logger(log)(f"error: {exc}")
        return StageResult("livepatch-verify", Status.ERROR, str(exc), target=tcfg.name,
                           log=str(log))
    return StageResult("livepatch-verify", res.status, res.summary, res.duration, tcfg.name,
                       res.details, str(log))
