"""The offline demo: everything patchflow does, on parts that exist on this machine.

lore is unreachable from the offline machines, so the demo publishes the
demo series' threads (``series/<name>/vN.mbox``) into a local public-inbox
mirror on loopback and fetches them with b4 exactly as it would from lore.
Later steps run the stages that need kernel trees (Debian-built), builds and
QEMU.  Each step reports a :class:`~patchflow.result.StageResult`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from patchflow.config import SeriesConfig, WorkspaceConfig
from patchflow.demo.mirror import LocalLore
from patchflow.errors import PatchflowError, UserError
from patchflow.result import StageResult, Status, measure
from patchflow.state import State
from patchflow.workspace import Workspace

DEMO_SERIES = "batch-tlb-flush-demo"

Say = Callable[[str], None]


def thread_files(ws: Workspace, cfg: SeriesConfig) -> list[Path]:
    if cfg.threads is None:
        raise UserError(f"{cfg.path}: series has no 'threads' folder to publish")
    folder = ws.config.series_dir / cfg.threads
    files = sorted(folder.glob("v*.mbox"))
    if not files:
        raise UserError(f"no v*.mbox threads in {folder}")
    return files


def publish(ws: Workspace, cfg: SeriesConfig, say: Say) -> LocalLore:
    """Start (or reuse) the workspace's local lore and deliver the series' threads."""
    mirror = LocalLore(ws.root / "lore", "linux-mm", cfg.list_address or "linux-mm@kvack.org")
    mirror.init()
    for f in thread_files(ws, cfg):
        n = mirror.inject_mbox(f)
        say(f"published {f.name}: {n} messages")
    mirror.start()
    say(f"local lore mirror at {mirror.url}")
    return mirror


def run(ws: Workspace, state: State, name: str, say: Say, *, targets: list[str] | None = None,
        gate: bool = True) -> list[StageResult]:
    """Mirror, fetch, version diff, then (with *gate*) the whole pipeline per target."""
    from patchflow.lore import series

    cfg = ws.config.series(name)
    results: list[StageResult] = []
    with measure() as sw:
        mirror = publish(ws, cfg, say)
    results.append(StageResult("mirror", Status.PASS, f"serving {mirror.url}", sw.elapsed))
    try:
        with measure() as sw:
            try:
                report = series.fetch(ws, state, name, check_newer=True, mirror=mirror.midmask,
                                      progress=say)
                fetched = state.versions(name)
                res = StageResult("fetch", Status.PASS,
                                  f"{len(fetched)} postings of {name} stored with b4 "
                                  f"({'; '.join(report.notes) or 'no notes'})", sw.elapsed)
            except PatchflowError as exc:
                res = StageResult("fetch", Status.ERROR, str(exc), sw.elapsed)
        results.append(res)
        revs = sorted({v.revision for v in state.versions(name)})
        if len(revs) >= 2:
            entries = series.diff_versions(ws, state, name, revs[-2], revs[-1])
            text = series.format_range_diff(entries, revs[-2], revs[-1])
            say(f"range-diff v{revs[-2]}..v{revs[-1]}:\n{text}")
            results.append(StageResult("series-diff", Status.PASS,
                                       f"{sum(e.mark != '=' for e in entries)} of {len(entries)} "
                                       f"patches changed between v{revs[-2]} and v{revs[-1]}"))
        if gate and results[-1].status is Status.PASS:
            # the gate's check-newer stage asks the same local mirror: a setting, not
            # an environment variable (nothing in the library writes os.environ)
            settings = dataclasses.replace(ws.settings, lore=dataclasses.replace(
                ws.settings.lore, midmask=mirror.midmask))
            results.extend(run_gate(ws, state, cfg, targets or list(cfg.targets), say,
                                    settings))
    finally:
        mirror.stop()
    return results


def run_gate(ws: Workspace, state: State, cfg: SeriesConfig, targets: list[str],
             say: Say, settings: WorkspaceConfig) -> list[StageResult]:
    from patchflow.gate import run as gate
    from patchflow.trees import repo as tree
    from patchflow.workspace import reproduce_cmdline

    for t in targets:
        with measure() as sw:
            try:
                kt = tree.prepare_tree(ws, t, progress=say)
                res = StageResult("tree", Status.PASS, f"{t} at {kt.release} ({kt.head[:12]})",
                                  sw.elapsed, target=t)
            except PatchflowError as exc:
                res = StageResult("tree", Status.ERROR, str(exc), sw.elapsed, target=t)
        say(f"{t}: {res.summary}")
        if res.status is not Status.PASS:
            return [res]

    def show(e: gate.GateEntry) -> None:
        r = e.result
        say(f"gate {r.target or '-':14} {r.stage:17} {r.status.value.upper():5} {r.summary}"
            + (" (reused)" if e.cached else ""))

    run = gate.execute(ws, state, cfg, targets=targets, reproduce=reproduce_cmdline(),
                       settings=settings, on_result=show)
    say(f"gate records: {run.run_dir} (report: patchflow report {run.run_dir})")
    return [e.result for e in run.entries]
