"""Live-patch generation time from a built tree, against a full kernel rebuild.

    python benchmarks/bench_livepatch.py [--source SRC --build BUILD] [--reps 3]

Times the native generator (compile the changed object twice, diff, extract,
kbuild the module, klp-convert) for each recorded patch in
tests/data/livepatch/patches/, and prints it next to the duration of the full
kernel build recorded by kbuild (build.json) or given with --full-build-seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from patchflow.livepatch.generate import BuiltTree, generate
from patchflow.livepatch.results import LivepatchBuildDetails
from patchflow.result import Status

PATCHES = Path(__file__).resolve().parent.parent / "tests" / "data" / "livepatch" / "patches"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path)
    ap.add_argument("--build", type=Path)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--full-build-seconds", type=float, default=None)
    args = ap.parse_args()
    if args.source and args.build:
        tree = BuiltTree(args.source, args.build)
        full = args.full_build_seconds
    else:
        import os

        from patchflow.kernel.artefacts import locate

        cache = Path(os.environ.get("PATCHFLOW_CACHE", Path.home() / ".cache" / "patchflow"))
        art = locate(cache, "linux-6.12.y", "base")
        assert art.src_dir is not None
        tree = BuiltTree(art.src_dir, art.build_dir, art.vmlinux)
        full = args.full_build_seconds or (art.info.duration if art.info else None)
    print(f"tree: {tree.source} (build {tree.build}, release {tree.release()})")
    print(f"{'patch':<18} {'median s':>9} {'min s':>7} {'max s':>7}  functions")
    for patch in sorted(PATCHES.glob("*.patch")):
        times = []
        funcs = ""
        for _ in range(args.reps):
            with tempfile.TemporaryDirectory() as d:
                t0 = time.monotonic()
                res = generate(patch.read_text(), tree, Path(d), name="lp_bench")
                times.append(time.monotonic() - t0)
                if res.status is not Status.PASS:
                    print(f"{patch.stem}: {res.summary}")
                    break
                built = res.detail(LivepatchBuildDetails)
                funcs = ", ".join(f.name for f in built.functions) if built else ""
        if times:
            print(f"{patch.stem:<18} {statistics.median(times):9.1f} {min(times):7.1f} "
                  f"{max(times):7.1f}  {funcs}")
    if full:
        print(f"full kernel build (recorded): {float(full):.0f} s")
    else:
        print("full kernel build: not recorded (pass --full-build-seconds; ~420 s on 2 cores "
              "per shared/ENVIRONMENT.md)")
    print(json.dumps({"full_build_seconds": full}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
