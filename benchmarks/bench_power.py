#!/usr/bin/env python3
"""Power of the default protocol: the smallest effect it detects, from measured A/A noise.

Reads the A/A benches bench_aa.py saved (--from DIR), takes every complete
round's relative paired difference (B - A) / median(A) per metric as the
measured noise of one round, and runs the sequential design of
patchflow.stats (the profile's planned rounds, alpha) on rounds drawn with
replacement from that noise plus a known relative shift.  So the noise is
measured on real boots and the effect is simulated.  Prints the power at a
few shifts and the smallest shift detected with 80% power, for the
throughput (a loss) and TLB shootdowns per reclaimed page (a gain, the
series' claim, and a loss).

    python3 benchmarks/bench_power.py --from DIR [--rounds R] [--trials 400]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from patchflow import stats
from patchflow.bench import calibrate
from patchflow.bench.metrics import METRICS

CASES = (("bogo_ops_per_s", -1), ("bogo_ops_per_s", +1),
         ("tlb_per_reclaimed_page", -1), ("tlb_per_reclaimed_page", +1))
SHIFTS = (0.05, 0.10, 0.20, 0.30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="saved", type=Path, required=True)
    ap.add_argument("--glob", default="aa-*.json",
                    help="which saved benches to read (any bench's rounds give paired noise "
                         "once centred; A/A benches are the ones meant)")
    ap.add_argument("--rounds", type=int, default=0, help="[default: the benches' planned]")
    ap.add_argument("--trials", type=int, default=400)
    args = ap.parse_args()
    benches = calibrate.details(calibrate.load_results(sorted(args.saved.glob(args.glob))))
    if not benches:
        print(f"no complete bench matching {args.glob} in {args.saved}")
        return 2
    env = benches[0].environment
    plan = stats.design(args.rounds or env.reps, benches[0].comparisons[0].alpha)
    print(f"noise: {len(benches)} benches ({args.glob}) ({env.profile}, {env.vcpus} vCPUs, {env.accel}); "
          f"design: {plan.rounds} planned rounds, alpha {plan.alpha}, first decisive look "
          f"{plan.first_decisive()}; effects simulated, {args.trials} benches per point")
    print(f"{'metric':<24} {'rounds':>6} {'noise sd':>8}  direction  "
          + " ".join(f"{f'{s:.0%}':>6}" for s in SHIFTS) + "  smallest at 80%")
    for name, sign in CASES:
        m = METRICS[name]
        noise = calibrate.paired_noise(benches, name)
        if len(noise) < 2:
            print(f"{name:<24} not enough rounds")
            continue
        powers = [calibrate.simulated_power(noise, sign * s, plan, better=m.better, mei=m.mei,
                                            trials=args.trials) for s in SHIFTS]
        best = calibrate.smallest_detectable(noise, plan, better=m.better, sign=sign,
                                             mei=m.mei, trials=args.trials)
        where = "none up to 60%" if best is None else f"{sign * best[0]:+.0%} ({best[1]:.2f})"
        print(f"{name:<24} {len(noise):>6} {statistics.stdev(noise):>8.3f}  "
              f"{'+' if sign > 0 else '-':>9}  " + " ".join(f"{p:>6.2f}" for p in powers)
              + f"  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
