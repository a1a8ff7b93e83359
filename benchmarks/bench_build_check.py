#!/usr/bin/env python3
"""The cost of ``backport --build-check`` per patch, in seconds, next to a full kernel build.

Applies each patch of MBOX onto the target's branch head in a scratch worktree
(its checkout is not counted: a backport makes one anyway) and compiles the
objects it touches as ``--build-check`` does, twice: without ccache
(``CCACHE_DISABLE=1``, what a new patch costs) and through ccache (a first
miss costs a little more; a repeat is a hit).  Prints one line per patch and
the median next to the compile time the target's last base build recorded
(a full build, or an incremental one when the cache was warm).

    PYTHONPATH=. python3 benchmarks/bench_build_check.py [MBOX] [--target linux-6.12.y]

Needs the target's base build (``patchflow build --target T --variant base``);
run it under the heavy lock (/work/notes/coordination.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from patchflow import gitrepo
from patchflow.backport import buildcheck as bpb
from patchflow.backport import patches as bpp
from patchflow.kernel.artefacts import build_dir_for, locate
from patchflow.trees.repo import open_tree
from patchflow.workspace import Workspace

DEFAULT_MBOX = Path(__file__).resolve().parent.parent / "tests/data/backport/ptrace-demo/v1.mbox"


def timed(tree: bpb.BuildTree, wt: Path, files: list[str], log: Path, cold: bool
          ) -> tuple[bpb.Compiled, float]:
    old = os.environ.get("CCACHE_DISABLE")
    if cold:
        os.environ["CCACHE_DISABLE"] = "1"
    try:
        t0 = time.monotonic()
        c = bpb.compile_patch(tree, wt, files, log)
        return c, time.monotonic() - t0
    finally:
        if old is None:
            os.environ.pop("CCACHE_DISABLE", None)
        else:
            os.environ["CCACHE_DISABLE"] = old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("mbox", nargs="?", type=Path, default=DEFAULT_MBOX)
    ap.add_argument("--target", default="linux-6.12.y")
    args = ap.parse_args()
    ws = Workspace.open(Path(tempfile.mkdtemp(prefix="bench-build-check-")))
    tree = open_tree(ws, args.target)
    kbuild = bpb.prepared(build_dir_for(ws.cache, args.target), args.target)
    info = locate(ws.cache, args.target, "base").info
    colds: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-build-check-") as tmp:
        patches = bpp.load_patches(tree.repo, args.mbox, Path(tmp) / "p")
        wt = Path(tmp) / "wt"
        gitrepo.worktree_add(tree.repo, wt, tree.head)
        try:
            print(f"{'#':>2} {'status':9} {'gcc s':>7} {'ccache s':>8}  objects  subject")
            for p in patches:
                if not gitrepo.am(wt, [p.path], three_way=False).ok:
                    print(f"{p.idx:>2} does not apply; stopping")
                    break
                log = Path(tmp) / f"{p.idx}.log"
                c, cold = timed(kbuild, wt, p.files, log, cold=True)
                _, warm = timed(kbuild, wt, p.files, log, cold=False)
                colds.append(cold)
                print(f"{p.idx:>2} {c.status:9} {cold:7.2f} {warm:8.2f}  "
                      f"{','.join(c.built) or '-'}  {p.subject[:50]}")
        finally:
            gitrepo.am_abort(wt)
            gitrepo.worktree_remove(tree.repo, wt)
    full = info.compile_seconds if info else 0.0
    if colds:
        print(f"build-check per patch (no ccache, median of {len(colds)}): "
              f"{statistics.median(colds):.2f} s; the target's last base build compiled for "
              f"{full:.0f} s")


if __name__ == "__main__":
    main()
