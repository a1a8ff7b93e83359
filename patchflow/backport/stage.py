"""The backport stage: one fetched series version onto one target, as CLI and gate run it.

Ties the engine (:mod:`~patchflow.backport.patches`, :mod:`~patchflow.backport.check`,
:mod:`~patchflow.backport.session`, :mod:`~patchflow.backport.queue`) to a
workspace: the target's prepared tree, the worktree and patch folder of the
backport, the stored queue in the config dir, the ``backports`` table of the
state database, and the typed :class:`BackportDetails` every caller renders.

A conflict, a patch that needs review or (``--build-check``) one that does
not compile is a FAIL (the worktree is left for the maintainer); bad input or
broken infrastructure raises (the gate records an ERROR, the CLI exits 2).
A patch skipped as not applicable (``--skip --note``) makes the backport WARN
and is listed in :attr:`BackportDetails.skipped`, the stored queue and ``status``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from patchflow import gitrepo
from patchflow.backport.buildcheck import prepared
from patchflow.backport.check import Known, check_series, ensure_preimages, known_in
from patchflow.backport.patches import (
    ACCEPTED,
    Outcome,
    PatchInput,
    PatchResult,
    load_patches,
    unique_spots,
)
from patchflow.backport.queue import (
    RebaseReport,
    Skip,
    Stale,
    backport_ref,
    check_stored,
    queue_dir,
    range_diff_report,
    read_manifest,
    skips_in,
    skips_of,
    store,
    stored_entries,
    stored_patches,
)
from patchflow.backport.session import STOPPED, Session, start
from patchflow.context import StageContext
from patchflow.errors import NotFound, UserError
from patchflow.result import Details, Progress, StageResult, Status, Stopwatch, measure, quiet
from patchflow.state import BackportRow, State
from patchflow.workspace import Workspace, atomic_write

STAGE = "backport"
METHOD = "git am -3 with classification"


class Fetched(Protocol):
    """What the backport needs of :class:`patchflow.lore.series.FetchedVersion`."""

    @property
    def series(self) -> str: ...

    @property
    def revision(self) -> int: ...

    @property
    def mbox_path(self) -> Path: ...


@dataclass(frozen=True)
class Conflict:
    """One stopped patch, as the report and the mail show it."""

    patch: int
    files: tuple[str, ...]
    spots: tuple[str, ...]  # "mm/vmscan.c:1672:shrink_folio_list()", target lines
    detail: str


@dataclass(frozen=True)
class BackportDetails(Details):
    kind: ClassVar[str] = "backport"
    series: str
    revision: int
    target: str
    phase: str  # applying | conflict | review | done | stale
    method: str
    base: str
    base_ref: str
    worktree: str
    patches: tuple[PatchResult, ...]
    recovered: bool = False
    #: "series" (the posted patches) or "stored queue" (the maintainer's stored backport)
    source: str = "series"
    queue: str = ""
    ref: str = ""
    head: str = ""
    rebase: RebaseReport | None = None
    stale: tuple[Stale, ...] = ()
    #: why a 3-way merge was impossible for some files (empty: possible for all)
    threeway_unavailable: tuple[str, ...] = ()
    #: patches dropped as not applicable to this target, with the maintainer's reason
    skipped: tuple[Skip, ...] = ()
    #: whether each applied patch was compiled (``--build-check``)
    build_check: bool = False

    @property
    def conflicts(self) -> tuple[Conflict, ...]:
        return tuple(Conflict(p.idx, tuple(p.files), tuple(str(s) for s in unique_spots(p.spots)),
                              p.detail)
                     for p in self.patches if p.outcome in (Outcome.CONFLICT, Outcome.FUZZ))


def worktree_path(ws: Workspace, series: str, target: str) -> Path:
    return ws.worktrees_dir / "backport" / f"{series}--{target}"


def _patch_dir(ws: Workspace, series: str, revision: int, target: str) -> Path:
    # outlives the command: a stopped session's journal points at these files
    return ws.worktrees_dir / "backport" / f".{series}-v{revision}--{target}.patches"


def _summary(s: Session, carried: int = 0) -> tuple[Status, str]:
    """Status and one line; *carried* skips come from the stored queue re-applied."""
    counts: dict[str, int] = {}
    for r in s.results:
        counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
    if carried:
        counts[Outcome.SKIPPED.value] = counts.get(Outcome.SKIPPED.value, 0) + carried
    tally = ", ".join(f"{n} {k}" for k, n in counts.items())
    if s.phase == "conflict":
        r = s.results[-1]
        spots = ", ".join(x.where() for x in unique_spots(r.spots)) or ", ".join(r.files)
        return Status.FAIL, f"conflict in patch {r.idx} ({r.subject}): {spots}"
    if s.phase == "build":
        r = s.results[-1]
        first = r.build_errors[0] if r.build_errors else "compile failed"
        return Status.FAIL, (f"patch {r.idx} ({r.subject}) does not build on {s.target}: "
                             f"{first}")
    if s.phase == "review":
        r = s.results[-1]
        return Status.FAIL, f"patch {r.idx} ({r.subject}) {r.detail}: review it, then --continue"
    if carried or any(r.outcome not in ACCEPTED for r in s.results):
        return Status.WARN, f"applied with changes: {tally}"
    return Status.PASS, f"applied: {tally}"


def _finish(ws: Workspace, state: State, s: Session, sw: Stopwatch, *, source: str = "series",
            no_3way: Sequence[str] = (), carried: Sequence[Skip] = (),
            stored: Sequence[dict[str, Any]] = ()) -> StageResult:
    status, summary = _summary(s, len(carried))
    queue = ref = head = ""
    rebase: RebaseReport | None = None
    if s.phase == "done":
        queue = str(store(s, ws.config_root, carried, stored))
        ref = backport_ref(s.series, s.revision, s.target)
        head = gitrepo.head(s.worktree)
        if s.previous:
            rebase = range_diff_report(s.repo, s.previous, s)
    rows = [*s.results, *(PatchResult(k.patch, k.subject, k.patch_id, Outcome.SKIPPED, k.note)
                          for k in carried)]
    state.save_backport(BackportRow(s.series, s.revision, s.target, s.phase, s.base, head,
                                    str(s.worktree), [r.to_json() for r in rows]))
    details = BackportDetails(
        series=s.series, revision=s.revision, target=s.target, phase=s.phase, method=METHOD,
        base=s.base, base_ref=s.base_ref, worktree=str(s.worktree), patches=tuple(s.results),
        recovered=s.recovered, source=source, queue=queue, ref=ref, head=head, rebase=rebase,
        threeway_unavailable=tuple(no_3way), skipped=(*skips_in(s), *carried),
        build_check=bool(s.build_dir))
    result = StageResult(STAGE, status, summary, sw.elapsed, s.target, details)
    state.record(result, series=s.series, revision=s.revision)
    return result


def _notes(manifest: dict[str, Any] | None) -> dict[str, str]:
    if not manifest:
        return {}
    return {p["patch_id"]: p["detail"] for p in manifest.get("patches", [])
            if p.get("outcome") == Outcome.RESOLVED.value and p.get("detail")}


@contextmanager
def _build_lock(ws: Workspace, target: str, build_dir: str) -> Iterator[None]:
    """The target's build lock while a build check reads its build dir (none without one)."""
    if not build_dir:
        yield
        return
    from patchflow.kernel.artefacts import target_lock

    with target_lock(ws.cache, target):
        yield


def build_dir_of(ws: Workspace, target: str) -> Path:
    """The target's prepared build dir for ``--build-check``; a user error if there is none."""
    from patchflow.kernel.artefacts import build_dir_for

    return prepared(build_dir_for(ws.cache, target), target).build_dir


def backport_version(ws: Workspace, state: State, fetched: Fetched, target: str, *,
                     rebase: bool = False, progress: Progress = quiet,
                     build_check: bool = False) -> StageResult:
    """Backport one fetched version onto one target (or rebase its stored backport).

    With *build_check*, every patch that goes in is compiled in the target's
    prepared build dir (:mod:`~patchflow.backport.buildcheck`).
    """
    from patchflow.trees.repo import open_tree, prepare_tree

    say = progress
    bdir = str(build_dir_of(ws, target)) if build_check else ""
    with measure() as sw, _build_lock(ws, target, bdir):
        try:
            tree = open_tree(ws, target)
        except NotFound:
            tree = prepare_tree(ws, target, progress=say)
        manifest = read_manifest(ws.config_root, fetched.series, target)
        if rebase and manifest is None:
            raise NotFound(f"no stored backport of {fetched.series} onto {target} to rebase; "
                           f"run `patchflow backport {fetched.series} --target {target}` first")
        wt = worktree_path(ws, fetched.series, target)
        pdir = _patch_dir(ws, fetched.series, fetched.revision, target)
        series_patches = load_patches(tree.repo, fetched.mbox_path, pdir)
        if not series_patches:
            raise UserError(f"{fetched.mbox_path} holds no patches")

        def go(patches: Sequence[PatchInput], **kw: Any) -> Session:
            return start(series=fetched.series, revision=fetched.revision, target=target,
                         repo=tree.repo, worktree=wt, base=tree.head, base_ref=tree.ref,
                         patches=patches, link=ws.settings.lore.link,
                         build_dir=Path(bdir) if bdir else None, **kw)

        if manifest is not None and manifest.get("revision") == fetched.revision:
            stored = stored_patches(ws.config_root, fetched.series, target)
            stale = check_stored(tree.repo, manifest, stored, tree.head)
            if not stale:
                say(f"{target}: applying the stored backport queue")
                # every patch skipped: the stored queue is empty (test_cli_skip_status_...)
                s = go(load_patches(tree.repo, _concat(stored, pdir), pdir / "stored")
                       if stored else [])
                s.previous = manifest if rebase or manifest["base"] != tree.head else {}
                return _finish(ws, state, s, sw, source="stored queue",
                               carried=skips_of(manifest),
                               stored=stored_entries(manifest))
            if not rebase:
                return _stale(state, fetched, target, tree.head, tree.release, manifest, stale,
                              queue_dir(ws.config_root, fetched.series, target), sw)
        say(f"{target}: applying {len(series_patches)} patches of {fetched.series} "
            f"v{fetched.revision} onto {tree.release or tree.head[:12]}")
        no_3way = preimages_for(ws, fetched.series, tree.repo, series_patches, say)
        s = go(series_patches, notes=_notes(manifest),
               previous=manifest if rebase and manifest else {},
               known=known_in(tree.repo, tree.head, limit=300),
               skips={k.patch_id: k.note for k in skips_of(manifest)})
        return _finish(ws, state, s, sw, no_3way=no_3way)


def _stale(state: State, fetched: Fetched, target: str, head: str, release: str,
           manifest: dict[str, Any], stale: Sequence[Stale], queue: Path,
           sw: Stopwatch) -> StageResult:
    state.save_backport(BackportRow(fetched.series, fetched.revision, target, "stale",
                                    manifest["base"], manifest["head"]))
    details = BackportDetails(
        series=fetched.series, revision=fetched.revision, target=target, phase="stale",
        method=METHOD, base=head, base_ref=str(manifest.get("base_ref", "")), worktree="",
        patches=(), source="stored queue", queue=str(queue), stale=tuple(stale))
    result = StageResult(
        STAGE, Status.FAIL,
        f"stored backport is stale on {release or head[:12]}: "
        + "; ".join(f"{x.patch} ({', '.join(x.moved[:4]) or ', '.join(x.files)})" for x in stale)
        + f" - run `patchflow rebase {fetched.series} --target {target}`",
        sw.elapsed, target, details)
    state.record(result, series=fetched.series, revision=fetched.revision)
    return result


def preimages_for(ws: Workspace, series: str, repo: Path, patches: Sequence[PatchInput],
                  say: Progress) -> list[str]:
    """Import the series' base when a target provides it, then write the pre-images.

    Returns why a 3-way merge is impossible for some files (empty when it is
    possible for all), the same answer on a fresh cache as on a warm one.
    """
    from patchflow.trees.repo import ensure_release

    try:
        base = ws.config.series(series).upstream_base
    except NotFound:
        base = ""
    if base and ensure_release(ws, base, say) is None:
        say(f"the series' base {base} is not provided by any target: 3-way merges can use "
            "only blobs the repository already has")
    return sorted(ensure_preimages(repo, patches).values())


def _concat(paths: Sequence[Path], workdir: Path) -> Path:
    """One mbox from stored format-patch files (each starts with a From line)."""
    workdir.mkdir(parents=True, exist_ok=True)
    mbox = workdir / "stored.mbox"
    atomic_write(mbox, b"".join(p.read_bytes() for p in paths))
    return mbox


def _session_for(ws: Workspace, state: State, series: str, target: str | None) -> Session:
    if target is None:
        live = [r for r in state.backports(series) if r.status in (*STOPPED, "applying")]
        if len(live) != 1:
            names = ", ".join(sorted({r.target for r in live})) or "none"
            raise UserError(f"say which target with --target (backports in progress: {names})")
        target = live[0].target
    return Session.load(worktree_path(ws, series, target))


def continue_backport(ws: Workspace, state: State, series: str, target: str | None,
                      note: str | None) -> StageResult:
    with measure() as sw:
        s = _session_for(ws, state, series, target)
        with _build_lock(ws, s.target, s.build_dir):
            s = s.continue_(note)
        return _finish(ws, state, s, sw)


def skip_patch(ws: Workspace, state: State, series: str, target: str | None,
               note: str | None) -> StageResult:
    """``backport --skip --note WHY``: drop the stopped patch as not applicable, go on."""
    with measure() as sw:
        s = _session_for(ws, state, series, target)
        with _build_lock(ws, s.target, s.build_dir):
            s = s.skip(note)
        return _finish(ws, state, s, sw)


def abort_backport(ws: Workspace, state: State, series: str, target: str | None) -> StageResult:
    with measure() as sw:
        s = _session_for(ws, state, series, target)
        s.abort()
        gitrepo.worktree_remove(s.repo, s.worktree)
        state.save_backport(BackportRow(s.series, s.revision, s.target, "aborted", s.base))
        result = StageResult(STAGE, Status.SKIP, "backport aborted", sw.elapsed, s.target)
        state.record(result, series=s.series, revision=s.revision)
        return result


def check_version(ws: Workspace, fetched: Fetched, targets: Sequence[str]
                  ) -> dict[str, list[PatchResult]]:
    """``backport --check``: per target, whether each patch applies (no worktree)."""
    from patchflow.trees.repo import open_tree

    out: dict[str, list[PatchResult]] = {}
    with tempfile.TemporaryDirectory(prefix="patchflow-check-") as tmp:
        for target in targets:
            tree = open_tree(ws, target)
            patches = load_patches(tree.repo, fetched.mbox_path, Path(tmp) / target)
            preimages_for(ws, fetched.series, tree.repo, patches, quiet)
            known: Known = known_in(tree.repo, tree.head, limit=300)
            out[target] = check_series(tree.repo, tree.head, patches, known)
    return out


@dataclass(frozen=True)
class StatusRow:
    series: str
    revision: int
    target: str
    state: str  # a BackportRow status, or "-" when never backported
    updated: float | None
    head: str
    #: "patch 2 (subject): why", one per patch skipped as not applicable
    skipped: tuple[str, ...] = ()


def status_matrix(state: State, series: str | None = None) -> list[StatusRow]:
    """One row per (series, revision, target): last state and when."""
    table = {(r.series, r.revision, r.target): r for r in state.backports(series)}
    names = [series] if series else sorted({k[0] for k in table} | set(state.series_names()))
    out = []
    for name in names:
        revs = sorted({v.revision for v in state.versions(name)} |
                      {k[1] for k in table if k[0] == name})
        targets = sorted({k[2] for k in table if k[0] == name}) or ["-"]
        for rev in revs:
            for t in targets:
                r = table.get((name, rev, t))
                out.append(StatusRow(name, rev, t, r.status if r else "-",
                                     r.updated if r else None, r.head if r else "",
                                     _skipped(r)))
    return out


def _skipped(row: BackportRow | None) -> tuple[str, ...]:
    return tuple(f"patch {p.get('idx')} ({p.get('subject', '')}): {p.get('detail', '')}"
                 for p in (row.results if row else []) if p.get("outcome") == "skipped")


def run(ctx: StageContext) -> StageResult:
    """The gate's backport stage: the fetched version onto the target (stored queue if any)."""
    from patchflow.lore.series import load_version

    cfg, target = ctx.need_series(STAGE), ctx.need_target(STAGE)
    fetched = load_version(ctx.ws, ctx.state, cfg.name, ctx.revision)
    res = backport_version(ctx.ws, ctx.state, fetched, target.name, progress=ctx.say)
    ctx.say(f"{res.status.value}: {res.summary}")
    d = res.detail(BackportDetails)
    for p in d.patches if d else ():
        ctx.say(f"  {p.idx}: {p.outcome.value} {p.subject} {p.detail}")
    return StageResult(res.stage, res.status, res.summary, res.duration, res.target, res.details,
                       str(ctx.log))
