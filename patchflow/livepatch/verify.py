"""Verification of a live-patch module inside the unpatched target kernel.

One QEMU boot (:func:`patchflow.qemu.boot`) of the *unpatched* kernel runs the
``templates/livepatch/verify.sh.j2`` snippet: run the effect command, load the
module, wait for ``/sys/kernel/livepatch/<name>/enabled`` = 1 and the
transition to finish (else list the tasks whose ``patch_state`` is still 0,
with their stacks), run the effect command again, run the stress workload,
then disable the patch, wait for the reverse transition, ``rmmod`` it and run
the effect command a last time.  :func:`judge` turns what the guest handed
back into one :class:`StageResult` whose ``details["checks"]`` lists each
check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchflow.result import StageResult, Status

GUEST_MODULE = "/lib/modules/livepatch.ko"
#: taint bits a loaded-then-removed livepatch leaves on a clean system:
#: O (12, out-of-tree module), E (13, unsigned module), K (15, live patched)
ALLOWED_TAINT = (1 << 12) | (1 << 13) | (1 << 15)
TAINT_LETTERS = "PFSRMBUDAWCIOELKXT"
#: zram swap, so that anonymous memory is reclaimed (shared/ENVIRONMENT.md)
ZRAM_SETUP = ("echo 128M > /sys/block/zram0/disksize && mkswap /dev/zram0 >/dev/null && "
              "swapon /dev/zram0")
#: the stress-ng reclaim profile run with the patch loaded: memory pressure inside a small guest
STRESS = ("stress-ng --vm 2 --vm-bytes 75% --vm-method rand-set --page-in --timeout {seconds}s "
          "--metrics-brief")


@dataclass(frozen=True)
class VerifySpec:
    name: str
    effect_cmd: str = "cat /proc/cmdline"
    #: text expected in the effect output with the patch on, and not before/after it
    expect: str | None = None
    timeout: int = 60
    stress_seconds: int = 0
    #: run once before loading (e.g. zram swap, so that the stress run really reclaims)
    setup_cmd: str = ""


def snippet(spec: VerifySpec) -> str:
    from patchflow.livepatch.generate import render

    stress = STRESS.format(seconds=spec.stress_seconds) if spec.stress_seconds else ""
    return render("verify.sh.j2", name=spec.name, module=GUEST_MODULE, effect_cmd=spec.effect_cmd,
                  timeout=spec.timeout, stress_cmd=stress, setup_cmd=spec.setup_cmd)


def taint_letters(value: int) -> str:
    return "".join(TAINT_LETTERS[i] for i in range(len(TAINT_LETTERS)) if value >> i & 1)


def _txt(files: dict[str, bytes], name: str) -> str:
    return files.get(name, b"").decode("utf-8", "replace").strip()


def tlb_shootdowns(interrupts: str) -> int | None:
    """Sum of the per-CPU counts of the ``TLB:`` row of /proc/interrupts."""
    # " TLB:        123        456   TLB shootdowns"
    for line in interrupts.splitlines():
        parts = line.split()
        if parts and parts[0] == "TLB:":
            return sum(int(p) for p in parts[1:] if p.isdigit())
    return None


def judge(spec: VerifySpec, boot: StageResult, files: dict[str, bytes]) -> StageResult:
    """Every check of the verification, from the boot result and the guest's files."""
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail})

    check("console", boot.status is Status.PASS, boot.summary.splitlines()[0] if boot.summary else "")
    check("load", _txt(files, "load.rc") == "0", _txt(files, "load") or "insmod ok")
    check("enabled", _txt(files, "enabled") == "1", f"enabled={_txt(files, 'enabled') or '?'}")
    blocked = _txt(files, "blocked-tasks")
    hint = ""
    # core.c: "This architecture doesn't have support for the livepatch consistency model."
    if "support for the livepatch consistency model" in _txt(files, "dmesg-tail"):
        hint = (" (the kernel has no reliable stack traces, so sleeping kernel threads never "
                "switch: build it with CONFIG_UNWINDER_ORC=y)")
    check("transition", _txt(files, "transition") == "0",
          f"completed in {_txt(files, 'transition-seconds') or '?'}s" if not blocked
          else f"stalled; blocking tasks: {blocked[:600]}{hint}")
    before, after = _txt(files, "effect-before"), _txt(files, "effect-after")
    rollback = _txt(files, "effect-rollback")
    if spec.expect is not None:
        check("effect", spec.expect in after and spec.expect not in before,
              f"before={before[:80]!r} after={after[:80]!r}")
        check("effect-after-stress", spec.expect in _txt(files, "effect-after-stress"),
              _txt(files, "effect-after-stress")[:80])
        check("rollback-effect", spec.expect not in rollback and rollback == before,
              f"after rollback={rollback[:80]!r}")
    if spec.stress_seconds:
        check("stress", _txt(files, "stress.rc") == "0", _txt(files, "stress")[-200:])
    check("disable", _txt(files, "disabled-gone") == "yes",
          f"reverse transition {_txt(files, 'disable-seconds') or '?'}s")
    check("unload", _txt(files, "rmmod.rc") == "0" and
          not any(line.split()[:1] == [spec.name] for line in _txt(files, "modules").splitlines()),
          _txt(files, "rmmod") or "module gone")
    try:
        taint = int(_txt(files, "tainted") or "0")
    except ValueError:
        taint = -1
    check("taint", taint >= 0 and not taint & ~ALLOWED_TAINT,
          f"tainted={taint} ({taint_letters(taint) if taint >= 0 else '?'})")
    tlb = {k: tlb_shootdowns(_txt(files, f"interrupts-{k}")) for k in ("before", "after")}
    details = {"checks": checks, "tlb_shootdowns": tlb, "boot": boot.to_json(),
               "effect": {"before": before, "after": after, "rollback": rollback}}
    failed = [c for c in checks if not c["ok"]]
    if boot.status is Status.ERROR and not files:
        return StageResult("livepatch-verify", Status.ERROR, boot.summary, boot.duration,
                           details=details, log=boot.log)
    if failed:
        return StageResult("livepatch-verify", Status.FAIL,
                           "; ".join(f"{c['check']}: {c['detail']}" for c in failed),
                           boot.duration, details=details, log=boot.log)
    return StageResult("livepatch-verify", Status.PASS,
                       f"loaded, enabled, took effect and rolled back cleanly "
                       f"({len(checks)} checks)", boot.duration, details=details, log=boot.log)


def verify(module: Path, bzimage: Path, spec: VerifySpec, *, cache: Path, log: Path,
           accel: str = "tcg", boot_timeout: float = 600.0) -> StageResult:
    """Boot the unpatched *bzimage* with *module* and run every check."""
    from patchflow.boot import qemu

    guest = qemu.GuestSpec(snippets=(("livepatch", snippet(spec)),),
                           files=((module, GUEST_MODULE),), stress_ng=spec.stress_seconds > 0)
    initrd = qemu.initramfs(cache, guest)
    run = qemu.boot(bzimage, initrd, log=log, accel=accel, timeout=boot_timeout,
                    stage="livepatch-verify")
    # keep what the guest handed back next to the console log, for a later look (or a fixture)
    keep = log.with_name(log.name + ".files")
    keep.mkdir(parents=True, exist_ok=True)
    for fname, data in run.files.items():
        (keep / fname).write_bytes(data)
    return judge(spec, run.result, run.files)
