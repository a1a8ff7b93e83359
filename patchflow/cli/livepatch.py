"""``patchflow livepatch``: analyze, build, verify, bundle and check live patches.

A thin skin over :mod:`patchflow.livepatch`.  ``build`` finds the stored
backport of SERIES for the target (``series/<name>/backports/<target>/*.patch``)
and the target's built kernel in the shared cache (:func:`patchflow.kbuild.locate`);
``--patch``, ``--source`` and ``--build-dir`` override both.

Exit codes: 0 passed; 1 refused as unsafe, build failure, verification
failure, tampered bundle or bundle for another kernel; 2 bad input or
broken infrastructure.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from patchflow.cli.options import Ctx, emit_json, format_option, pass_ctx, target_option
from patchflow.errors import UserError
from patchflow.result import StageResult, Status


def _emit(res: StageResult, fmt: str) -> None:
    if fmt == "json":
        emit_json(res.to_json())
    else:
        colour = {"pass": "green", "warn": "yellow", "skip": "yellow"}.get(res.status.value, "red")
        click.secho(f"{res.stage}: {res.status.value.upper()}: {res.summary}", fg=colour)
        for c in res.details.get("checks", []):
            click.echo(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['check']}: {c['detail']}")
        for f in res.details.get("analysis", {}).get("findings", []):
            click.echo(f"  unsafe: {f['file']}: {f['symbol']}: {f['reason']}")


def _finish(res: StageResult) -> None:
    code = res.status.exit_code
    if code:
        sys.exit(code)


def _tree(ctx: Ctx, target: str | None, source: str | None, build_dir: str | None) -> Any:
    """An explicit tree, or the target's base view (base sources, O= dir, base vmlinux)."""
    from patchflow.livepatch.generate import KernelTree

    if source and build_dir:
        return KernelTree(Path(source).absolute(), Path(build_dir).absolute())
    if not target:
        raise UserError("give --target, or both --source and --build-dir")
    from patchflow.pipeline import base_tree

    return base_tree(ctx.ws, ctx.ws.config.target(target))


@click.group("livepatch")
def livepatch_cmd() -> None:
    """Build, verify and bundle live-patch modules (exit 1: refused/failed/tampered)."""


@livepatch_cmd.command("analyze")
@click.argument("patch", type=click.Path(exists=True, dir_okay=False))
@click.option("--source", required=True, type=click.Path(exists=True, file_okay=False),
              help="Unpatched kernel source tree.")
@click.option("--build-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Its built O= dir (with the .o.cmd files).")
@format_option
@pass_ctx
def analyze_cmd(ctx: Ctx, patch: str, source: str, build_dir: str, fmt: str) -> None:
    """Show the functions PATCH changes and what a live patch cannot carry."""
    from patchflow.livepatch.generate import KernelTree, analyze

    tree = KernelTree(Path(source).absolute(), Path(build_dir).absolute())
    work = ctx.ws.cache_dir("livepatch", "analyze", hashlib.sha256(Path(patch).read_bytes())
                            .hexdigest()[:16])
    an = analyze(Path(patch).read_text(), tree, work)
    if fmt == "json":
        emit_json(an.to_json())
    else:
        for f, d in an.diffs.items():
            click.echo(f"{f}: changed {', '.join(d.changed_functions) or '-'}; "
                       f"new {', '.join(d.new_functions) or '-'}")
        for finding in an.findings:
            click.echo(f"unsafe: {finding}")
    if an.findings:
        sys.exit(1)


@livepatch_cmd.command("build")
@click.argument("series")
@target_option()
@click.option("--patch", type=click.Path(exists=True, dir_okay=False),
              help="Patch file (default: the stored backport for the target).")
@click.option("--source", type=click.Path(exists=True, file_okay=False), help="Kernel source tree.")
@click.option("--build-dir", type=click.Path(exists=True, file_okay=False), help="Built O= dir.")
@click.option("--backend", type=click.Choice(["auto", "native", "kpatch-build", "klp-build"]),
              default="auto", show_default=True)
@click.option("--force", is_flag=True, help="Build even if unsafe changes were found.")
@click.option("--name", help="Module name (default: lp_<series>).")
@click.option("--out", type=click.Path(file_okay=False), help="Output dir.")
@format_option
@pass_ctx
def build_cmd(ctx: Ctx, series: str, target: str | None, patch: str | None, source: str | None,
              build_dir: str | None, backend: str, force: bool, name: str | None,
              out: str | None, fmt: str) -> None:
    """Build a live-patch module of SERIES for --target."""
    from patchflow.livepatch import backends
    from patchflow.livepatch.generate import generate, module_name
    from patchflow.pipeline import stored_patch
    from patchflow.workspace import atomic_write_json

    tree = _tree(ctx, target, source, build_dir)
    patch_path = Path(patch) if patch else stored_patch(ctx.ws, series, target or "")
    mod = name or module_name(series)
    outdir = (Path(out) if out else ctx.ws.root / "livepatch" / series / (target or "custom")).absolute()
    outdir.mkdir(parents=True, exist_ok=True)
    choice = backends.choose(tree.release() or "0.0", tree.source,
                             requested=None if backend == "auto" else backend)
    log = outdir / "build.log"
    if choice.backend == "native":
        res = generate(patch_path.read_text(), tree, outdir / "work", name=mod, series=series,
                       force=force, log=log)
    elif choice.backend == "kpatch-build":
        argv = backends.kpatch_build_argv(source=tree.source, config=tree.build / ".config",
                                          vmlinux=tree.vmlinux, patch=patch_path, name=mod,
                                          output=outdir)
        res = backends.build_external("kpatch-build", argv, cwd=outdir,
                                      module=outdir / f"{mod}.ko", log=log)
    else:
        argv = backends.klp_build_argv(source=tree.source, patch=patch_path,
                                       output=outdir / f"{mod}.ko")
        res = backends.build_external("klp-build", argv, cwd=tree.source,
                                      module=outdir / f"{mod}.ko", log=log)
    details = dict(res.details)
    details.update(backend=choice.backend, backend_reason=choice.reason, series=series,
                   target=target, patch=str(patch_path),
                   patch_sha256=hashlib.sha256(patch_path.read_bytes()).hexdigest(),
                   source=str(tree.source), build_dir=str(tree.build))
    res = StageResult(res.stage, res.status, res.summary, res.duration, target, details, res.log)
    atomic_write_json(outdir / "build.json", res.to_json())
    if ctx.state is not None and target:
        ctx.state.record(res, series=series)
    _emit(res, fmt)
    _finish(res)


@livepatch_cmd.command("verify")
@click.argument("module", type=click.Path(exists=True, dir_okay=False))
@click.option("--kernel", "kernel", type=click.Path(exists=True, dir_okay=False),
              help="The UNPATCHED bzImage (default: the target's base build).")
@target_option()
@click.option("--effect-cmd", default="cat /proc/cmdline", show_default=True,
              help="Guest shell command whose output shows the patch's effect.")
@click.option("--expect", help="Text the effect output must show only while patched.")
@click.option("--stress-seconds", type=int, default=20, show_default=True,
              help="stress-ng reclaim run with the patch loaded (0: none).")
@click.option("--timeout", type=int, default=60, show_default=True,
              help="Transition timeout (s).")
@format_option
@pass_ctx
def verify_cmd(ctx: Ctx, module: str, kernel: str | None, target: str | None, effect_cmd: str,
               expect: str | None, stress_seconds: int, timeout: int, fmt: str) -> None:
    """Boot the unpatched kernel, load MODULE, check it, roll it back."""
    from patchflow.livepatch.bundle import modinfo
    from patchflow.livepatch.verify import VerifySpec, verify

    if kernel is None:
        if not target:
            raise UserError("give --kernel or --target")
        from patchflow.kernel import build as kbuild

        kernel = str(kbuild.locate(ctx.ws.cache, target, "base").bzimage)
    name = modinfo(Path(module).read_bytes()).get("name", Path(module).stem)
    spec = VerifySpec(name=name, effect_cmd=effect_cmd, expect=expect, timeout=timeout,
                      stress_seconds=stress_seconds)
    log = Path(module).with_suffix(".verify.log")
    log.unlink(missing_ok=True)
    res = verify(Path(module), Path(kernel), spec, cache=ctx.ws.cache_dir("livepatch"), log=log)
    from patchflow.workspace import atomic_write_json

    atomic_write_json(Path(module).with_suffix(".verify.json"), res.to_json())
    _emit(res, fmt)
    _finish(res)


@livepatch_cmd.command("bundle")
@click.argument("build_json", type=click.Path(exists=True, dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False))
@click.option("--verify-json", type=click.Path(exists=True, dir_okay=False),
              help="Verification result to record (default: next to the module).")
@click.option("--sign-key", type=click.Path(exists=True, dir_okay=False))
@click.option("--sign-cert", type=click.Path(exists=True, dir_okay=False))
@click.option("--version", "revision", type=int, default=None, help="Series revision.")
@click.option("--message-id", default="", help="lore message-id of the series cover.")
@pass_ctx
def bundle_cmd(ctx: Ctx, build_json: str, output: str, verify_json: str | None,
               sign_key: str | None, sign_cert: str | None, revision: int | None,
               message_id: str) -> None:
    """Make a rollout bundle from a build's BUILD_JSON (written by `livepatch build`)."""
    import shutil

    from patchflow.livepatch.bundle import (
        build_bundle,
        ensure_sign_file,
        sign_module,
        vmlinux_build_id,
    )
    from patchflow.livepatch.generate import KernelTree, tool_versions

    b = json.loads(Path(build_json).read_text())
    d = b["details"]
    if b["status"] not in ("pass", "warn"):
        raise UserError(f"{build_json}: the build did not pass ({b['summary']})")
    tree = KernelTree(Path(d["source"]), Path(d["build_dir"]))
    ko_src = Path(d["module"])
    stage = Path(output).with_suffix(".staging")
    stage.mkdir(parents=True, exist_ok=True)
    ko = stage / ko_src.name
    shutil.copy2(ko_src, ko)
    if bool(sign_key) != bool(sign_cert):
        raise UserError("--sign-key and --sign-cert go together")
    if sign_key and sign_cert:
        tool = ensure_sign_file(tree.source, tree.build, ctx.ws.cache_dir("livepatch", "tools"))
        sign_module(ko, sign_file=tool, key=Path(sign_key), cert=Path(sign_cert))
    vpath = Path(verify_json) if verify_json else ko_src.with_suffix(".verify.json")
    verification = json.loads(vpath.read_text()) if vpath.is_file() else {"status": "not run"}
    msgid = message_id
    if not msgid or revision is None:
        try:
            sc = ctx.ws.config.series(d["series"])
            v = sc.version(revision) if revision else sc.latest
            if v is not None:
                revision = v.revision
                msgid = msgid or v.msgids[-1]
        except Exception:  # noqa: BLE001 - a series not tracked in config is fine for a bundle
            pass
    manifest = {
        "series": d["series"], "version": revision, "message_id": msgid,
        "patch_sha256": d["patch_sha256"], "kernel_release": tree.release(),
        "build_id": vmlinux_build_id(tree.vmlinux), "functions": d.get("functions", []),
        "backend": d["backend"], "toolchain": tool_versions(tree),
        "verification": verification,
    }
    out = build_bundle(ko, manifest, Path(output))
    shutil.rmtree(stage)
    click.echo(f"bundle written: {out}")


@livepatch_cmd.command("check")
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--kernel-release", help="Expected kernel release (default: uname -r).")
@click.option("--build-id", help="Expected vmlinux build-id (default: /sys/kernel/notes).")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False),
              help="Certificate to verify the module signature with.")
@format_option
def check_cmd(bundle: str, kernel_release: str | None, build_id: str | None, cert: str | None,
              fmt: str) -> None:
    """Refuse a tampered BUNDLE or one built for another kernel (exit 1)."""
    from patchflow.livepatch.bundle import check_bundle

    res = check_bundle(Path(bundle), kernel_release=kernel_release, build_id=build_id,
                       cert=Path(cert) if cert else None)
    if fmt == "json":
        emit_json(res.to_json())
    else:
        click.echo(f"{res.status.value.upper()}: {res.summary}")
    if res.status is not Status.PASS:
        sys.exit(res.status.exit_code)
