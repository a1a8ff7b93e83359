"""The live-patch stages for a target: build the module, then verify it in the unpatched kernel.

``patchflow livepatch build|verify`` and the gate's ``livepatch-build`` /
``livepatch-verify`` stages all come here, so the tree (base sources, the
shared O= dir, the *base* vmlinux), the target's lock and the backend choice
are the same whichever way a user got here.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from patchflow.config import user_name
from patchflow.context import StageContext
from patchflow.errors import NotFound, UserError
from patchflow.kernel.artefacts import locate, target_lock
from patchflow.livepatch import backends
from patchflow.livepatch.generate import BuiltTree, generate, module_name
from patchflow.livepatch.results import LivepatchBuildDetails
from patchflow.livepatch.verify import ZRAM_SETUP, VerifySpec, verify
from patchflow.result import StageResult, Status, details_from_json
from patchflow.workspace import Workspace, atomic_write_json

BUILD = "livepatch-build"
VERIFY = "livepatch-verify"


def stored_patch(ws: Workspace, series: str, target: str) -> Path:
    """The stored backport queue of (series, target) as one patch file."""
    from patchflow.backport.queue import stored_patches

    patches = stored_patches(ws.config_root, series, target)
    if not patches:
        raise NotFound(f"no stored backport of {series} for {target}; "
                       f"run: patchflow backport {series} --target {target}")
    out = ws.cache_dir("livepatch", series, target) / "series.patch"
    out.write_text("".join(p.read_text() for p in patches))
    return out


def base_tree(ws: Workspace, target: str) -> BuiltTree:
    """The livepatch view of the base kernel: base sources, the O= dir, base vmlinux.

    The O= dir is shared by both variants and holds the patched vmlinux after a
    patched build, so the vmlinux (symbol positions, build-id) comes from the
    kept base artefacts and the source worktree is put back at the base head,
    whatever the previous stage left there.  The caller holds the target's lock.
    """
    from patchflow.trees import repo as trees

    art = locate(ws.cache, target, "base")
    kt = trees.open_tree(ws, target)
    wt = trees.source_worktree(ws, target)
    trees.checkout(wt, kt.head)
    return BuiltTree(wt, art.build_dir, art.vmlinux)


def distro_tree(ctx: StageContext) -> BuiltTree:
    """A distro target's tree: packages fetched, build dir prepared (both cached)."""
    from patchflow.distro.stage import ensure

    target = ctx.need_target(BUILD)
    prepared, took = ensure(ctx.ws.cache, target, ctx.say, log=ctx.log)
    ctx.say(f"{target.name}: {prepared.kernel.release} ready (fetch {took.fetch_s:.1f} s, "
            f"prepare {took.prepare_s:.1f} s)")
    return BuiltTree(prepared.source, prepared.build, prepared.kernel.vmlinux, distro=prepared)


def build_module(ctx: StageContext, series: str, *, patch: Path | None = None,
                 tree: BuiltTree | None = None, backend: str = "auto", force: bool = False,
                 name: str | None = None, out: Path | None = None) -> StageResult:
    """Build a live-patch module of *series* for the context's target (or an explicit tree).

    ``patch`` defaults to the stored backport of the series onto the target;
    ``tree`` to the target's base build.  Writes ``build.json`` (the result) next
    to the module, where ``patchflow livepatch bundle`` finds it.
    """
    target = ctx.target.name if ctx.target else None
    if tree is None and target is None:
        raise UserError("give --target, or both --source and --build-dir")
    mod = user_name(name, "module") if name else module_name(series)
    outdir = (out or ctx.ws.root / "livepatch" / series / (target or "custom")).absolute()
    outdir.mkdir(parents=True, exist_ok=True)
    if tree is None and ctx.target is not None and ctx.target.distro is not None:
        patch = patch or stored_patch(ctx.ws, series, ctx.target.name)
        tree = distro_tree(ctx)
    if target is not None and tree is None:
        with target_lock(ctx.ws.cache, target):
            tree = base_tree(ctx.ws, target)
            patch = patch or stored_patch(ctx.ws, series, target)
            res = _build(ctx, series, tree, patch, backend, force, mod, outdir)
    else:
        assert tree is not None
        if patch is None:
            raise UserError("give --patch with an explicit --source/--build-dir")
        res = _build(ctx, series, tree, patch, backend, force, mod, outdir)
    atomic_write_json(outdir / "build.json", res.to_json())
    return res


def _build(ctx: StageContext, series: str, tree: BuiltTree, patch: Path, backend: str,
           force: bool, mod: str, outdir: Path) -> StageResult:
    choice = backends.choose(tree.release() or "0.0", tree.source,
                             requested=None if backend == "auto" else backend)
    ctx.say(f"backend: {choice.backend} ({choice.reason})")
    if choice.backend == "native":
        res = generate(patch.read_text(), tree, outdir / "work", name=mod, series=series,
                       force=force, log=ctx.log)
    elif choice.backend == "kpatch-build":
        argv = backends.kpatch_build_argv(source=tree.source, config=tree.build / ".config",
                                          vmlinux=tree.vmlinux, patch=patch, name=mod,
                                          output=outdir)
        res = backends.build_external("kpatch-build", argv, cwd=outdir,
                                      module=outdir / f"{mod}.ko", log=ctx.log)
    else:
        argv = backends.klp_build_argv(source=tree.source, patch=patch, output=outdir / f"{mod}.ko")
        res = backends.build_external("klp-build", argv, cwd=tree.source,
                                      module=outdir / f"{mod}.ko", log=ctx.log)
    d = res.detail(LivepatchBuildDetails) or LivepatchBuildDetails(backend=choice.backend)
    d = dataclasses.replace(
        d, backend=choice.backend, backend_reason=choice.reason, series=series, patch=str(patch),
        patch_sha256=hashlib.sha256(patch.read_bytes()).hexdigest(), source=str(tree.source),
        build_dir=str(tree.build), vmlinux=str(tree.vmlinux))
    ctx.say(f"{res.status.value}: {res.summary}")
    return StageResult(BUILD, res.status, res.summary, res.duration,
                       ctx.target.name if ctx.target else None, d, str(ctx.log))


def run_build(ctx: StageContext) -> StageResult:
    """The gate's livepatch-build stage: the stored backport onto the target's base build."""
    ctx.need_target(BUILD)
    return build_module(ctx, ctx.need_series(BUILD).name)


def verify_module(ctx: StageContext, module: Path, *, kernel: Path | None = None,
                  effect_cmd: str = "cat /proc/cmdline", expect: str | None = None,
                  stress_seconds: int | None = None, timeout: int | None = None) -> StageResult:
    """Boot the unpatched kernel (the target's base build by default) with *module*."""
    from patchflow.livepatch.bundle import modinfo

    extra: tuple[Path, ...] = ()
    setup = ""
    mem = 512
    if kernel is None and ctx.target is not None and ctx.target.distro is not None:
        kernel, extra = distro_guest(ctx)
        setup, mem = ZRAM_SETUP, 1024
    if kernel is None:
        target = ctx.need_target(VERIFY)
        kernel = locate(ctx.ws.cache, target.name, "base").bzimage
    try:
        name = modinfo(module.read_bytes()).get("name", module.stem)
    except OSError as exc:
        raise UserError(f"{module}: cannot be read ({exc.strerror})") from None
    lp = ctx.settings.livepatch
    spec = VerifySpec(name=user_name(name, "module"), effect_cmd=effect_cmd, expect=expect,
                      timeout=timeout if timeout is not None else lp.transition_timeout,
                      stress_seconds=stress_seconds if stress_seconds is not None
                      else lp.stress_seconds, setup_cmd=setup, memcg_mb=64 if setup else 0)
    res = verify(module, kernel, spec, cache=ctx.ws.cache_dir("livepatch"), log=ctx.log,
                 extra_modules=extra, mem_mb=mem)
    ctx.say(f"{res.status.value}: {res.summary}")
    out = StageResult(VERIFY, res.status, res.summary, res.duration,
                      ctx.target.name if ctx.target else None, res.details, res.log)
    atomic_write_json(module.with_suffix(".verify.json"), out.to_json())
    return out


def distro_guest(ctx: StageContext) -> tuple[Path, tuple[Path, ...]]:
    """A distro target's own vmlinuz and the workload's modules from its image package."""
    from patchflow.distro.guest import WORKLOAD_MODULES, module_closure
    from patchflow.distro.stage import fetch

    target = ctx.need_target(VERIFY)
    files = fetch(ctx.ws.cache, target, ctx.say)
    mods = module_closure(files.modules, WORKLOAD_MODULES, ctx.ws.cache_dir("livepatch", "ko"))
    ctx.say(f"{target.name}: booting Debian's {files.vmlinuz.name} with "
            f"{', '.join(m.name for m in mods)}")
    return files.vmlinuz, tuple(mods)


def run_verify(ctx: StageContext) -> StageResult:
    """The gate's livepatch-verify stage: the module the build stage of this target made."""
    cfg, target = ctx.need_series(VERIFY), ctx.need_target(VERIFY)
    row = ctx.state.last_result(series=cfg.name, target=target.name, stage=BUILD)
    built = details_from_json(row["details"]) if row else None
    if not isinstance(built, LivepatchBuildDetails) or not built.module \
            or not Path(built.module).is_file():
        return StageResult(VERIFY, Status.ERROR, "no livepatch module built for this target",
                           target=target.name)
    return verify_module(ctx, Path(built.module))
