#!/usr/bin/env python3
"""Boot-to-init time under QEMU (TCG unless a probe proves KVM works).

Boots each available kernel N times with a busybox-only initramfs whose /init
prints the guest uptime and powers off, with SeaBIOS and with qboot, and prints:

* init: the guest's uptime when /init starts (the kernel's own init time:
  the physical limit of this measurement),
* wall: host wall-clock from QEMU start to QEMU exit (firmware, decompression,
  kernel init, poweroff).

Kernels: the built linux-6.12.y base (if ``patchflow build`` ran) and Debian's
prebuilt 6.1 cloud kernel (downloaded once into the cache).

    python benchmarks/bench_boot.py [--runs 3] [--target linux-6.12.y]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from patchflow.boot import qemu
from patchflow.boot.initramfs import GuestSpec, initramfs
from patchflow.demo.kernels import debian_kernel
from patchflow.errors import NotFound
from patchflow.kernel.artefacts import locate
from patchflow.workspace import Workspace


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--target", default="linux-6.12.y")
    ap.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    args = ap.parse_args()
    ws = Workspace.open(Path(tempfile.mkdtemp(prefix="bench-boot-")))
    kernels: dict[str, Path] = {}
    try:
        kernels[f"{args.target} base (tinyconfig+fragments)"] = locate(
            ws.cache, args.target, "base").bzimage
    except NotFound as exc:
        print(f"note: {exc}", file=sys.stderr)
    kernels["debian 6.1 cloud (prebuilt)"] = debian_kernel(ws.cache)
    first = next(iter(kernels.values()))
    choice = qemu.choose_accel(ws.cache, first, force=None if args.accel == "auto" else args.accel)
    print(f"accelerator: {choice.accel} ({choice.reason})")
    initrd = initramfs(ws.cache, GuestSpec())
    firmwares: dict[str, Path | None] = {"seabios": None}
    if qemu.QBOOT.exists():
        firmwares["qboot"] = qemu.QBOOT
    print(f"{'kernel':44} {'firmware':8} {'init s (median)':>16} {'wall s (median)':>16}  runs")
    for k, (kname, kernel) in enumerate(kernels.items()):
        for fname, bios in firmwares.items():
            inits: list[float] = []
            walls: list[float] = []
            for i in range(args.runs):
                log = ws.root / f"boot-{k}-{fname}-{i}.log"
                run = qemu.boot(kernel, initrd, log=log, accel=choice.accel, mem_mb=256, smp=2,
                                timeout=120, bios=bios)
                if run.result.status.value != "pass" or run.init_seconds is None:
                    print(f"  {kname} {fname}: {run.result.summary.splitlines()[0]}")
                    continue
                inits.append(run.init_seconds)
                walls.append(run.wall_seconds)
            if inits:
                print(f"{kname:44} {fname:8} {statistics.median(inits):16.2f} "
                      f"{statistics.median(walls):16.2f}  {len(inits)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
