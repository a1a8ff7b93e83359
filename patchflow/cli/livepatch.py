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
from patchflow.result import StageResult


def _emit(res: StageResult, fmt: str) -> None:
    from patchflow.livepatch.bundle import BundleCheckDetails
    from patchflow.livepatch.results import LivepatchBuildDetails, LivepatchVerifyDetails

    if fmt == "json":
        emit_json(res.to_json(), "patchflow.livepatch/1")
        if (k := res.detail(BundleCheckDetails)) is not None:
            _shout(k.not_verified)
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
        for ok in k.verified:
            click.echo(f"  verified: {ok}")
        for n in k.notes:
            click.echo(f"  note: {n}")
        _shout(k.not_verified)
        if k.extracted:
            click.echo(f"checked files written to {k.extracted}; install with: "
                       f"sudo {k.extracted}/install.sh")


def _shout(not_verified: tuple[str, ...]) -> None:
    """What --insecure did not verify, on stderr, where nobody misses it."""
    for nv in not_verified:
        click.secho(f"NOT VERIFIED: {nv}", fg="red", bold=True, err=True)
    if not_verified:
        click.secho("WARNING: --insecure: nobody vouches for this bundle's origin", fg="red",
                    bold=True, err=True)


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
    if name is not None:
        user_name(name, "module")
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
              help="Private key (PEM) that signs the bundle: a detached CMS signature over "
                   "manifest.json, and the module itself through the kernel's scripts/sign-file. "
                   "Give it with --sign-cert.")
@click.option("--sign-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="X.509 certificate (PEM) of --sign-key, embedded in the signature. `livepatch "
                   "check --trust` accepts the bundle when this certificate, or one that issued "
                   "it, is in the trust root.")
@click.option("--unsigned", is_flag=True,
              help="Make a bundle without a signature; `livepatch check` refuses it unless "
                   "--insecure.")
@click.option("--transition-timeout", type=click.IntRange(1, 3600), default=None,
              help="Seconds install.sh and rollback.sh wait for a transition before reversing "
                   "it [default: livepatch.transition_timeout, 60].")
@click.option("--version", "revision", type=click.IntRange(1, 999), default=None,
              help="Series revision.")
@click.option("--message-id", default="", help="lore message-id of the series cover.")
@pass_ctx
def bundle_cmd(ctx: Ctx, build_json: Path, output: Path, verify_json: Path | None,
               sign_key: Path | None, sign_cert: Path | None, unsigned: bool,
               transition_timeout: int | None, revision: int | None, message_id: str) -> None:
    """Make a rollout bundle from a build's BUILD_JSON (written by `livepatch build`).

    Exit 2 on bad input: a build record that did not pass, a missing key, a
    kernel without a build-id.
    """
    from patchflow.errors import NotFound, UserError
    from patchflow.livepatch.bundle import Signer, bundle_from_build, read_build_record

    if bool(sign_key) != bool(sign_cert):
        raise UserError("--sign-key and --sign-cert go together")
    if not sign_key and not unsigned:
        raise UserError("give --sign-key and --sign-cert (or --unsigned for a bundle that "
                        "`livepatch check` accepts only with --insecure)")
    if sign_key and unsigned:
        raise UserError("--unsigned and --sign-key exclude each other")
    record = read_build_record(build_json)
    msgids: dict[int, str] = {}
    if record.series:
        try:
            msgids = {v.revision: v.msgids[-1]
                      for v in ctx.ws.config.series(record.series).versions}
        except NotFound:
            msgids = {}  # a series not tracked in config is fine for a bundle
    signer = Signer(sign_key, sign_cert) if sign_key and sign_cert else None
    timeout = transition_timeout or ctx.ws.settings.livepatch.transition_timeout
    out = bundle_from_build(build_json, output, cache=ctx.ws.cache_dir("livepatch"),
                            verify_json=verify_json, signer=signer, revision=revision,
                            message_id=message_id, series_msgids=msgids,
                            transition_timeout=timeout)
    click.echo(f"bundle written: {out}" + ("" if signer else " (UNSIGNED)"))


@livepatch_cmd.command("check")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--trust", type=click.Path(exists=True, path_type=Path),
              help="Trust root: a PEM certificate, or a folder of *.pem/*.crt; the signer of "
                   "manifest.json must be one of them or issued by one [default: [bundle] trust "
                   "in the workspace config.toml].")
@click.option("--insecure", is_flag=True,
              help="Check without a trust root: the signature is NOT verified, and the check "
                   "says so.")
@click.option("--kernel-release", help="Check for another host: its `uname -r` (with --build-id)"
                                       " [default: this host's].")
@click.option("--build-id", help="That host's vmlinux build-id (with --kernel-release) "
                                 "[default: this host's, from /sys/kernel/notes].")
@click.option("--extract", type=click.Path(file_okay=False, path_type=Path),
              help="After a pass, write the checked files to DIR/<name>/ (never use tar).")
@format_option
@pass_ctx
def check_cmd(ctx: Ctx, bundle: Path, trust: Path | None, insecure: bool,
              kernel_release: str | None, build_id: str | None, extract: Path | None,
              fmt: str) -> None:
    """Verify BUNDLE against a trust root and a kernel, then (--extract) unpack it.

    Exit 0: verified (with --insecure: all but the signature); 1: refused,
    every reason listed (altered, not signed by the trust root, another
    kernel); 2: could not check (no trust root, bad option, unreadable
    /sys/kernel/notes).
    """
    from patchflow.errors import UserError
    from patchflow.livepatch.bundle import check_bundle

    if trust is not None and insecure:
        raise UserError("--trust and --insecure exclude each other")
    if trust is None and not insecure:
        configured = ctx.settings_if_any().bundle.trust
        trust = Path(configured) if configured else None
    res = check_bundle(bundle, trust=trust, insecure=insecure, kernel_release=kernel_release,
                       build_id=build_id, extract=extract)
    _emit(res, fmt)
    exit_with(res.status.exit_code)
