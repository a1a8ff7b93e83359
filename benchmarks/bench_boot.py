#!/usr/bin/env python3
"""Boot time under QEMU (TCG unless a probe proves KVM works): each change against today's.

Boots a busybox-only initramfs whose /init prints the guest uptime and powers
off, through patchflow.boot.qemu.boot (so every console check applies: a run
that oopses, hangs or does not power off cleanly is a failure, not a time),
and for each candidate setting runs N pairs against today's settings,
interleaved (today, candidate; candidate, today; ...).  Prints per candidate:

* wall: host wall-clock from QEMU start to QEMU exit (firmware, decompression,
  kernel init, /init, poweroff), p50 of today's and of the candidate's, and
  the ratio candidate / today;
* init: the guest's uptime when /init starts (the kernel's own init time).

Candidates: qboot instead of SeaBIOS, -cpu max, machine pc instead of q35,
q35 without unused devices (SATA, SMBus, vmport, i8042, USB), i8042 probing
off on the command line, command-line trims, initramfs compression, and the
combination.  ``--kernel NAME=BZIMAGE`` adds a candidate that boots another
build of the same kernel with today's settings (how the bzImage's own
compression was measured: build a copy with another CONFIG_KERNEL_* and pass
it).  Raw figures (one JSON object per boot) go to --raw.

    python3 benchmarks/bench_boot.py [--runs 5] [--target linux-6.12.y] [--debian]
        [--only qboot,i8042-off] [--kernel xz=/tmp/obj-xz/arch/x86/boot/bzImage] [--raw FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from patchflow.boot import qemu
from patchflow.boot.initramfs import GuestSpec, initramfs
from patchflow.demo.kernels import debian_kernel
from patchflow.errors import NotFound
from patchflow.kernel.artefacts import locate
from patchflow.workspace import Workspace

#: the i8042 (PS/2 controller) probe: QEMU's pc/q35 emulate one, and the kernel
#: waits on it (Firecracker measured 1088 -> 296 ms from this alone)
I8042_OFF = ("i8042.noaux", "i8042.nokbd", "i8042.nopnp", "i8042.dumbkbd")
#: one serial port probed instead of four; no IO-APIC timer check; no TSC watchdog
CMDLINE_TRIMS = ("8250.nr_uarts=1", "no_timer_check", "tsc=reliable")
#: q35 without the devices a serial-console guest never uses (QEMU 7.2 machine options)
FEWER_DEVICES = "q35,sata=off,smbus=off,vmport=off,i8042=off,usb=off,graphics=off"


@dataclass(frozen=True)
class Setting:
    """How one boot is made: machine, firmware, CPU model, kernel command line, initramfs."""

    machine: str = "q35"
    bios: Path | None = None
    cpu: str | None = None
    append: tuple[str, ...] = qemu.DEFAULT_APPEND
    compression: str = "gzip"
    #: another bzImage instead of the one under test (--kernel)
    kernel: Path | None = None

    def plus(self, *words: str) -> Setting:
        return dataclasses.replace(self, append=self.append + words)


TODAY = Setting()


def candidates(extra_kernels: dict[str, Path] | None = None) -> dict[str, Setting]:
    out = {"i8042-off": TODAY.plus(*I8042_OFF), "cmdline-trims": TODAY.plus(*CMDLINE_TRIMS),
           "cpu-max": dataclasses.replace(TODAY, cpu="max"),
           "machine-pc": dataclasses.replace(TODAY, machine="pc"),
           "fewer-devices": dataclasses.replace(TODAY, machine=FEWER_DEVICES),
           "initrd-uncompressed": dataclasses.replace(TODAY, compression="none"),
           "initrd-gzip-1": dataclasses.replace(TODAY, compression="gzip-fast")}
    if qemu.QBOOT.exists():
        out["qboot"] = dataclasses.replace(TODAY, bios=qemu.QBOOT)
    out["combined"] = dataclasses.replace(TODAY.plus(*I8042_OFF, *CMDLINE_TRIMS),
                                          bios=qemu.QBOOT if qemu.QBOOT.exists() else None,
                                          machine=FEWER_DEVICES, compression="none")
    for name, path in (extra_kernels or {}).items():
        out[f"kernel-{name}"] = dataclasses.replace(TODAY, kernel=path)
    return out


@dataclass(frozen=True)
class Boot:
    setting: str
    ok: bool
    wall: float
    init: float | None
    summary: str


#: ship stress-ng and its libraries too (the bench's initramfs size), set by --stress
STRESS = [False]


def boot_once(ws: Workspace, kernel: Path, name: str, s: Setting, accel: str, i: int) -> Boot:
    initrd = initramfs(ws.cache, GuestSpec(compression=s.compression, stress_ng=STRESS[0]))
    run = qemu.boot(s.kernel or kernel, initrd, log=ws.root / f"boot-{name}-{i}.log", accel=accel,
                    mem_mb=256, smp=2, timeout=120, append=s.append, machine=s.machine,
                    bios=s.bios, cpu=s.cpu)
    ok = run.result.status.value == "pass" and run.init_seconds is not None
    return Boot(name, ok, run.wall_seconds, run.init_seconds,
                run.result.summary.splitlines()[0])


def p50(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pairwise(ws: Workspace, kernel: Path, name: str, s: Setting, accel: str, runs: int,
             raw: list[dict[str, object]]) -> str:
    """N interleaved pairs of today's setting and *s*; one table row."""
    got: dict[str, list[Boot]] = {"today": [], name: []}
    for i in range(runs):
        order = [("today", TODAY), (name, s)]
        for label, setting in order if i % 2 == 0 else reversed(order):
            b = boot_once(ws, kernel, label, setting, accel, i)
            got[label].append(b)
            raw.append({"kernel": str(kernel), "pair": name, **dataclasses.asdict(b)})
    t, c = ([b for b in got[k] if b.ok] for k in ("today", name))
    fails = [b.summary for b in got[name] if not b.ok]
    tw, cw = p50([b.wall for b in t]), p50([b.wall for b in c])
    ti, ci = p50([b.init or 0 for b in t]), p50([b.init or 0 for b in c])
    note = f"  FAILED {len(fails)}x: {fails[0]}" if fails else ""
    return (f"{name:<20} {tw:>7.2f} {cw:>7.2f} {cw / tw:>6.2f}   {ti:>7.2f} {ci:>7.2f} "
            f"{ci / ti if ti else float('nan'):>6.2f}  {len(c)}/{runs}{note}")


def kernels(ws: Workspace, target: str, debian: bool) -> dict[str, Path]:
    out: dict[str, Path] = {}
    try:
        out[f"{target} base (tinyconfig+fragments)"] = locate(ws.cache, target, "base").bzimage
    except NotFound as exc:
        print(f"note: {exc}", file=sys.stderr)
    if debian or not out:
        out["debian 6.1 cloud (prebuilt)"] = debian_kernel(ws.cache)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="pairs per candidate")
    ap.add_argument("--target", default="linux-6.12.y")
    ap.add_argument("--debian", action="store_true", help="also Debian's prebuilt 6.1 kernel")
    ap.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    ap.add_argument("--only", default="", help="comma-separated candidate names")
    ap.add_argument("--raw", type=Path, default=None, help="one JSON line per boot")
    ap.add_argument("--stress", action="store_true",
                    help="the bench's initramfs (with stress-ng) instead of busybox only")
    ap.add_argument("--kernel", action="append", default=[], metavar="NAME=BZIMAGE",
                    help="also boot this bzImage with today's settings (candidate kernel-NAME)")
    args = ap.parse_args()
    extra: dict[str, Path] = {}
    for spec in args.kernel:
        name, sep, path = spec.partition("=")
        if not sep or not name or not Path(path).is_file():
            ap.error(f"--kernel {spec}: want NAME=PATH to an existing bzImage")
        extra[name] = Path(path)
    STRESS[0] = args.stress
    ws = Workspace.open(Path(tempfile.mkdtemp(prefix="bench-boot-")))
    ks = kernels(ws, args.target, args.debian)
    choice = qemu.choose_accel(ws.cache, next(iter(ks.values())),
                               force=None if args.accel == "auto" else args.accel)
    print(f"accelerator: {choice.accel} ({choice.reason}); {args.runs} pairs per candidate, "
          f"interleaved with today's settings ({' '.join(TODAY.append)}, q35, SeaBIOS, gzip)")
    wanted = [w for w in args.only.split(",") if w]
    raw: list[dict[str, object]] = []
    for kname, kernel in ks.items():
        print(f"\n{kname}: {kernel}")
        print(f"{'candidate':<20} {'wall today':>7} {'cand.':>7} {'ratio':>6}   "
              f"{'init today':>7} {'cand.':>7} {'ratio':>6}  ok")
        for name, s in candidates(extra).items():
            if wanted and name not in wanted:
                continue
            print(pairwise(ws, kernel, name, s, choice.accel, args.runs, raw), flush=True)
    if args.raw:
        args.raw.write_text("".join(json.dumps(r, default=str) + "\n" for r in raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
