#!/usr/bin/env python3
"""Full kernel build against the patched incremental rebuild, on the real 6.12 tree.

1. a full build of the target's config in a fresh build dir, ccache disabled
   (a true cold build, not a cache replay);
2. the series applied in the same source tree (the demo series if present,
   else a small real change to mm/vmscan.c), then an incremental rebuild;
3. the tree restored.

Prints both times and their ratio.  Uses its own build dir under the cache
(``kbuild/bench-build/``) so the shared per-target build dir is not disturbed.

    python benchmarks/bench_build.py [--target linux-6.12.y] [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from patchflow import gitrepo
from patchflow.kernel.build import BuildDetails, BuildRequest, build
from patchflow.kernel.stage import source_tree
from patchflow.workspace import Workspace

DEMO = Path(__file__).resolve().parent.parent / "series" / "batch-tlb-flush-demo" / "v2.mbox"
MARKER = "\n/* patchflow bench_build: a one-line change that recompiles vmscan.o */\n" \
         "static int __maybe_unused patchflow_bench_marker;\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="linux-6.12.y")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    ws = Workspace.open(Path(tempfile.mkdtemp(prefix="bench-build-")))
    target = ws.config.target(args.target)
    src, _release = source_tree(ws, target, print)
    bdir = ws.cache / "kbuild" / "bench-build" / "obj"
    shutil.rmtree(bdir, ignore_errors=True)
    os.environ["CCACHE_DISABLE"] = "1"  # a cold build, not a ccache replay
    full = build(BuildRequest(src, bdir, target.kconfig, ws.root / "full.log",
                              base_config=target.base_config, jobs=args.jobs, cc=None))
    fd = full.detail(BuildDetails)
    print(f"full build:  {full.status.value} {fd.compile_seconds if fd else '?'}s compile, "
          f"{full.duration:.1f}s total")
    if full.status.value not in ("pass", "warn"):
        print(full.summary)
        return 1
    vmscan = src / "mm" / "vmscan.c"
    original = vmscan.read_bytes()
    applied = DEMO.exists() and gitrepo.apply_in_worktree(src, DEMO, check=True).ok
    try:
        if applied:
            gitrepo.apply_in_worktree(src, DEMO)
            change = f"series {DEMO.relative_to(DEMO.parents[2])}"
        else:
            vmscan.write_bytes(original + MARKER.encode())
            change = "one line added to mm/vmscan.c"
        inc = build(BuildRequest(src, bdir, target.kconfig, ws.root / "incremental.log",
                                 base_config=target.base_config, jobs=args.jobs, cc=None,
                                 reconfigure=False, variant="patched"))
    finally:
        if applied:
            gitrepo.apply_in_worktree(src, DEMO, reverse=True)
        else:
            vmscan.write_bytes(original)
    print(f"incremental: {inc.status.value} {inc.duration:.1f}s after {change}")
    print(f"ratio full/incremental: {full.duration / inc.duration:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
