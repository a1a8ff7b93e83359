"""Time ``backport --check`` (temporary index, no checkout) against the obvious
alternative (``git worktree add`` + ``git am -3``) on the Debian-built kernel
repository, for the same series and targets in one run, and print the ratio.

    python benchmarks/bench_check.py [MBOX] [--target linux-6.1.y ...]

Needs the trees prepared (``patchflow tree prepare linux-6.1.y linux-6.12.y``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from patchflow import gitrepo
from patchflow.backport import check as bpc
from patchflow.backport import patches as bpp
from patchflow.trees.repo import open_tree
from patchflow.workspace import Workspace

DEFAULT_MBOX = Path(__file__).resolve().parent.parent / "tests/data/backport/vmscan-demo/v1.mbox"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("mbox", nargs="?", type=Path, default=DEFAULT_MBOX)
    ap.add_argument("--target", action="append", default=None)
    args = ap.parse_args()
    targets = args.target or ["linux-6.1.y", "linux-6.12.y"]
    ws = Workspace.open(Path(tempfile.mkdtemp(prefix="bench-check-")))
    check_total = am_total = 0.0
    for target in targets:
        tree = open_tree(ws, target)
        with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
            patches = bpp.load_patches(tree.repo, args.mbox, Path(tmp) / "p")
            t0 = time.monotonic()
            results = bpc.check_series(tree.repo, tree.head, patches,
                                      bpc.known_in(tree.repo, tree.head, limit=300))
            check = time.monotonic() - t0
            wt = Path(tmp) / "wt"
            t0 = time.monotonic()
            gitrepo.worktree_add(tree.repo, wt, tree.head)
            done = gitrepo.am(wt, [p.path for p in patches], three_way=True)
            am = time.monotonic() - t0
            gitrepo.am_abort(wt)
            gitrepo.worktree_remove(tree.repo, wt)
        check_total += check
        am_total += am
        print(f"{target}: check {check:6.1f}s  worktree+am -3 {am:6.1f}s  "
              f"ratio {am / check:5.1f}x  am rc={done.returncode}  "
              f"results: {', '.join(r.outcome.value for r in results)}")
    print(f"total: check {check_total:.1f}s, worktree+am -3 {am_total:.1f}s, "
          f"ratio {am_total / check_total:.1f}x")


if __name__ == "__main__":
    main()
