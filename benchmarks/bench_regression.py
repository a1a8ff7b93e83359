#!/usr/bin/env python3
"""A known regression, caught: the reclaim-slowdown test fixture against the base kernel.

Builds series/reclaim-slowdown-fixture/v1.mbox (udelay(200) per reclaimed folio
in shrink_folio_list(), a labelled TEST FIXTURE) on the target incrementally
over its base build, keeping that kernel aside (the target's ``patched``
artefact is not replaced), then runs the bench at the workspace's default
settings (or --profile/--reps) with base against the fixture, through the same
code as ``patchflow bench``, and prints each metric's verdict, the detected
change and its repeated 95% interval.  Exit 0 only if the primary throughput
metric is flagged "regressed".

    python3 benchmarks/bench_regression.py --out DIR [--runs 1] [--profile reclaim]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from patchflow import stats
from patchflow.bench import calibrate
from patchflow.bench.ab import format_change
from patchflow.bench.metrics import metric
from patchflow.kernel.artefacts import locate, target_lock
from patchflow.kernel.stage import build_mbox
from patchflow.result import Status
from patchflow.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "series" / "reclaim-slowdown-fixture" / "v1.mbox"


def build_fixture(ws: Workspace, target: str, out: Path) -> Path:
    """The fixture kernel's bzImage, built over the target's base, kept in the cache."""
    tcfg = ws.config.target(target)
    keep = ws.cache / "kbuild" / target / "fixtures" / "reclaim-slowdown"
    if (keep / "bzImage").exists():
        print(f"fixture kernel: {keep / 'bzImage'} (already built)")
        return keep / "bzImage"
    locate(ws.cache, target, "base")  # a clear error when the base was never built
    with target_lock(ws.cache, target):
        results = build_mbox(ws, tcfg, FIXTURE, "patched", jobs=None, log_dir=out,
                             progress=print, patched_to=keep)
    last = results[-1]
    if last.status.exit_code:
        raise SystemExit(f"fixture build failed: {last.summary}")
    return keep / "bzImage"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="linux-6.12.y")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--reps", type=int, default=0)
    ap.add_argument("--runs", type=int, default=1, help="benches of base against the fixture")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-regression-"))
    out.mkdir(parents=True, exist_ok=True)
    ws = Workspace.open(out / "ws")
    s = ws.settings
    settings = dataclasses.replace(s, bench=dataclasses.replace(
        s.bench, profile=args.profile or s.bench.profile, reps=args.reps or s.bench.reps))
    fixture = build_fixture(ws, args.target, out)
    kernels = {"base": locate(ws.cache, args.target, "base").bzimage, "patched": fixture}
    caught = 0
    for i in range(args.runs):
        res = calibrate.run_bench(ws, args.target, out / f"regression-{i:02d}.json",
                                  kernels=kernels, settings=settings)
        d = next(iter(calibrate.details([res])), None)
        print(f"\nbench {i}: {res.status.value}: {res.summary}")
        if d is None:
            continue
        print(f"profile {d.environment.profile}, {d.rounds} of {d.environment.reps} rounds "
              f"({d.stop}), {d.environment.vcpus} vCPUs, {d.environment.accel}")
        print(f"{'metric':<36} {'verdict':<26} {'change [95% RCI]':<28} {'p':>7} {'needed':>7}")
        for c in d.comparisons:
            print(f"{metric(c.metric).label:<36} {c.verdict:<26} {format_change(c):<28} "
                  f"{c.p_value:>7.4f} {c.p_threshold or 0:>7.4f}")
        bogo = d.comparison("bogo_ops_per_s")
        caught += res.status is Status.FAIL and bogo is not None and bogo.verdict == stats.REGRESSED
    print(f"\nthe fixture was flagged as a regression in {caught} of {args.runs} benches")
    return 0 if caught == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
