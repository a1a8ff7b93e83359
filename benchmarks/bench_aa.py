#!/usr/bin/env python3
"""A/A calibration: N benches of the base kernel against itself, false positives per metric.

Each bench is ``patchflow bench --aa`` (the same code path: rounds of A B / B A
boots, the sequential signed-rank verdict of patchflow.stats, the workspace's
bench settings unless overridden).  Every "improved" or "regressed" verdict
of an A/A bench is a false positive; the script prints, per judged metric,
how many of the N benches claimed a difference at the gate's alpha, and how
many ended "no significant difference" or "inconclusive".  Each bench's
result is saved as JSON in --out (bench_power.py reads them).

    python3 benchmarks/bench_aa.py --n 10 --out DIR [--profile reclaim] [--reps R]
    python3 benchmarks/bench_aa.py --from DIR        # only summarise saved benches
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from patchflow.bench import calibrate
from patchflow.bench.ab import format_change
from patchflow.workspace import Workspace


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="A/A benches to run")
    ap.add_argument("--target", default="linux-6.12.y")
    ap.add_argument("--profile", default=None, help="[default: the workspace's bench.profile]")
    ap.add_argument("--reps", type=int, default=0, help="planned rounds [default: profile's]")
    ap.add_argument("--budget", type=int, default=0, help="minutes per bench [default: none]")
    ap.add_argument("--out", type=Path, default=None, help="where each bench's JSON goes")
    ap.add_argument("--from", dest="saved", type=Path, default=None,
                    help="summarise the aa-*.json in this folder instead of running")
    return ap.parse_args()


def run(args: argparse.Namespace) -> Path:
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-aa-"))
    out.mkdir(parents=True, exist_ok=True)
    ws = Workspace.open(out / "ws")
    s = ws.settings
    bench = dataclasses.replace(s.bench, profile=args.profile or s.bench.profile,
                                reps=args.reps or s.bench.reps,
                                budget=args.budget or s.bench.budget)
    settings = dataclasses.replace(s, bench=bench)
    print(f"A/A benches of {args.target} base: profile {bench.profile}, planned rounds "
          f"{bench.reps or 'profile'}, budget {bench.budget or 'none'}; results in {out}")
    first = len(list(out.glob("aa-*.json")))
    for i in range(first, first + args.n):
        t0 = time.monotonic()
        res = calibrate.run_bench(ws, args.target, out / f"aa-{i:02d}.json", aa=True,
                                  settings=settings)
        d = next(iter(calibrate.details([res])), None)
        what = (f"{d.rounds} rounds ({d.stop}); bogo {format_change(c)} {c.verdict}"
                if d is not None and (c := d.comparison("bogo_ops_per_s")) else res.summary)
        print(f"  aa-{i:02d}: {res.status.value}, {time.monotonic() - t0:.0f}s, {what}",
              flush=True)
    return out


def summarise(folder: Path) -> None:
    benches = calibrate.details(calibrate.load_results(sorted(folder.glob("aa-*.json"))))
    if not benches:
        print(f"no complete A/A bench in {folder}")
        return
    env = benches[0].environment
    rounds = [d.rounds for d in benches]
    print(f"\n{len(benches)} A/A benches: profile {env.profile}, {env.vcpus} vCPUs, {env.accel}, "
          f"planned {env.reps} rounds, rounds run {min(rounds)}-{max(rounds)} "
          f"(mean {sum(rounds) / len(rounds):.1f})")
    print(f"{'metric':<24} {'N':>3} {'false +':>8} {'rate':>6} {'alpha':>6} {'no diff':>8} "
          f"{'inconcl.':>8}")
    for row in calibrate.false_positive_rates(benches):
        print(f"{row.metric:<24} {row.benches:>3} {row.false_positives:>8} {row.rate:>6.2f} "
              f"{row.alpha:>6.2f} {row.no_difference:>8} {row.inconclusive:>8}")


def main() -> int:
    args = _args()
    folder = args.saved or run(args)
    summarise(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
