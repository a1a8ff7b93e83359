"""``patchflow livepatch``: analyze, build, verify, bundle and check live patches.

A thin skin over :mod:`patchflow.livepatch.stage` (build, verify: the same
functions the gate runs) and :mod:`patchflow.livepatch.bundle`.

Exit codes: 0 passed; 1 refused as unsafe, build failure, verification
failure, tampered bundle or bundle for another kernel; 2 bad input or
broken infrastructure.
"""

from __future__ import annotations

from pathlib import Path

import click

from patchflow.cli.options import (
    Ctx,
    emit_json,
    exit_with,
    finish_run,
    format_option,
    pass_ctx,
    target_option,
)
from patchflow.result import StageResult, Status


def _emit(res: StageResult, fmt: str) -> None:
    from patchflow.livepatch.bundle import BundleCheckDetails
    from patchflow.livepatch.results import LivepatchBuildDetails, LivepatchVerifyDetails

    if fmt == "json":
        emit_json(res.to_json(), "patchflow.livepatch/1")
        return
    colour = {"pass": "green", "warn": "yellow", "skip": "yellow"}.get(res.status.value, "red")
    click.secho(f"{res.stage}: {res.status.value.upper()}: {res.summary}", fg=colour)
    if (v := res.detail(LivepatchVerifyDetails)) is not None:
        for c in v.checks:
            click.echo(f"  [{'ok' if c.ok else 'FAIL'}] {c.check}: {c.detail}")
    if (b := res.detail(LivepatchBuildDetails)) is not None:
        for f in b.functions:
            click.echo(f"  replaces {f.name} ({f.file}, sympos {f.sympos})")
        for finding in b.findings:
            click.echo(f"  unsafe: {finding}")
    if (k := res.detail(BundleCheckDetails)) is not None:
        for p in k.problems:
            click.echo(f"  problem: {p}")
        for n in k.notes:
            click.echo(f"  note: {n}")


@click.group("livepatch")
def livepatch_cmd() -> None:
    """Build, verify and bundle live-patch modules (exit 1: refused/failed/tampered)."""


@livepatch_cmd.command("analyze")
@click.argument("patch", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", required=True, type=click.Path(exists=True, file_okay=False,
                                                         path_type=Path),
              help="Unpatched kernel source tree.")
@click.option("--build-dir", required=True, type=click.Path(exists=True, file_okay=False,
                                                            path_type=Path),
              help="Its built O= dir (with the .o.cmd files).")
@format_option
@pass_ctx
def analyze_cmd(ctx: Ctx, patch: Path, source: Path, build_dir: Path, fmt: str) -> None:
    """Show the functions PATCH changes and what a live patch cannot carry."""
    import hashlib

    from patchflow import typed
    from patchflow.livepatch.generate import BuiltTree, analyze

    tree = BuiltTree(source.absolute(), build_dir.absolute())
    work = ctx.ws.cache_dir("livepatch", "analyze",
                            hashlib.sha256(patch.read_bytes()).hexdigest()[:16])
    an = analyze(patch.read_text(), tree, work)
    if fmt == "json":
        emit_json(typed.dump(an.record()), "patchflow.livepatch-analysis/1")
    else:
        for f, d in an.diffs.items():
            click.echo(f"{f}: changed {', '.join(d.changed_functions) or '-'}; "
                       f"new {', '.join(d.new_functions) or '-'}")
        for finding in an.findings:
            click.echo(f"unsafe: {finding}")
    exit_with(1 if an.findings else 0)


@livepatch_cmd.command("build")
@click.argument("series")
@target_option()
@click.option("--patch", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Patch file (default: the stored backport for the target).")
@click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Kernel source tree (with --build-dir: build against it instead).")
@click.option("--build-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Built O= dir.")
@click.option("--backend", type=click.Choice(["auto", "native", "kpatch-build", "klp-build"]),
              default="auto", show_default=True)
@click.option("--force", is_flag=True, help="Build even if unsafe changes were found.")
@click.option("--name", help="Module name (default: lp_<series>).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output dir.")
@format_option
@pass_ctx
def build_cmd(ctx: Ctx, series: str, target: str | None, patch: Path | None,
              source: Path | None, build_dir: Path | None, backend: str, force: bool,
              name: str | None, out: Path | None, fmt: str) -> None:
    """Build a live-patch module of SERIES for --target."""
    from patchflow.config import user_name
    from patchflow.errors import UserError
    from patchflow.livepatch.generate import BuiltTree
    from patchflow.livepatch.stage import build_module

    user_name(series, "series")
    if bool(source) != bool(build_dir):
        raise UserError("--source and --build-dir go together")
    tree = BuiltTree(source.absolute(), build_dir.absolute()) if source and build_dir else None
    sc = ctx.stage("livepatch-build", target=target,
                   progress=None if fmt == "text" else (lambda _m: None))
    res = build_module(sc, series, patch=patch, tree=tree, backend=backend, force=force,
                       name=name, out=out)
    finish_run(ctx, sc, [res])
    _emit(res, fmt)
    exit_with(res.status.exit_code)


@livepatch_cmd.command("verify")
@click.argument("module", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--kernel", "kernel", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The UNPATCHED bzImage (default: the target's base build).")
@target_option()
@click.option("--effect-cmd", default="cat /proc/cmdline", show_default=True,
              help="Guest shell command whose output shows the patch's effect.")
@click.option("--expect", help="Text the effect output must show only while patched.")
@click.option("--stress-seconds", type=click.IntRange(0, 3600), default=None,
              help="stress-ng reclaim run with the patch loaded (0: none) "
                   "[default: livepatch.stress_seconds].")
@click.option("--timeout", type=click.IntRange(1, 3600), default=None,
              help="Transition timeout (s) [default: livepatch.transition_timeout].")
@format_option
@pass_ctx
def verify_cmd(ctx: Ctx, module: Path, kernel: Path | None, target: str | None, effect_cmd: str,
               expect: str | None, stress_seconds: int | None, timeout: int | None,
               fmt: str) -> None:
    """Boot the unpatched kernel, load MODULE, check it, roll it back."""
    from patchflow.livepatch.stage import verify_module

    sc = ctx.stage("livepatch-verify", target=target,
                   progress=None if fmt == "text" else (lambda _m: None))
    res = verify_module(sc, module.absolute(), kernel=kernel, effect_cmd=effect_cmd,
                        expect=expect, stress_seconds=stress_seconds, timeout=timeout)
    finish_run(ctx, sc, [res])
    _emit(res, fmt)
    exit_with(res.status.exit_code)


@livepatch_cmd.command("bundle")
@click.argument("build_json", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The bundle to write (.tar.gz).")
@click.option("--verify-json", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Verification result to record (default: next to the module).")
@click.option("--sign-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Private key (PEM) that signs the module, with --sign-cert.")
@click.option("--sign-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="X.509 certificate (PEM) of --sign-key.")
@click.option("--version", "revision", type=click.IntRange(1, 999), default=None,
              help="Series revision.")
@click.option("--message-id", default="", help="lore message-id of the series cover.")
@pass_ctx
def bundle_cmd(ctx: Ctx, build_json: Path, output: Path, verify_json: Path | None,
               sign_key: Path | None, sign_cert: Path | None, revision: int | None,
               message_id: str) -> None:
    """Make a rollout bundle from a build's BUILD_JSON (written by `livepatch build`)."""
    import json

    from patchflow.errors import NotFound
    from patchflow.livepatch.bundle import bundle_from_build

    msgids: dict[int, str] = {}
    try:
        series = json.loads(build_json.read_text()).get("details", {}).get("series", "")
        if series:
            msgids = {v.revision: v.msgids[-1] for v in ctx.ws.config.series(series).versions}
    except (ValueError, AttributeError, NotFound):
        msgids = {}  # a series not tracked in config is fine for a bundle
    out = bundle_from_build(build_json, output, cache=ctx.ws.cache_dir("livepatch"),
                            verify_json=verify_json, sign_key=sign_key, sign_cert=sign_cert,
                            revision=revision, message_id=message_id, series_msgids=msgids)
    click.echo(f"bundle written: {out}")


@livepatch_cmd.command("check")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--kernel-release", help="Expected kernel release (default: uname -r).")
@click.option("--build-id", help="Expected vmlinux build-id (default: /sys/kernel/notes).")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Certificate to verify the module signature with.")
@format_option
def check_cmd(bundle: Path, kernel_release: str | None, build_id: str | None, cert: Path | None,
              fmt: str) -> None:
    """Refuse a tampered BUNDLE or one built for another kernel (exit 1)."""
    from patchflow.livepatch.bundle import check_bundle

    res = check_bundle(bundle, kernel_release=kernel_release, build_id=build_id, cert=cert)
    _emit(res, fmt)
    exit_with(0 if res.status is Status.PASS else res.status.exit_code)
