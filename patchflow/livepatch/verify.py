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

from patchflow.livepatch.results import Check, LivepatchVerifyDetails
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
#: a memory cgroup (cgroup v2) the memcg profile runs in, so that it must reclaim whatever
#: the guest's size: 75% of a 1 GiB guest never reached swap in some runs
MEMCG_SETUP = ("mount -t cgroup2 none /sys/fs/cgroup && echo +memory > "
               "/sys/fs/cgroup/cgroup.subtree_control && mkdir -p /sys/fs/cgroup/lp && "
               "echo {mb}M > /sys/fs/cgroup/lp/memory.max")
#: stress-ng inside that cgroup, asking for twice its limit
MEMCG_STRESS = ("sh -c 'echo $$ > /sys/fs/cgroup/lp/cgroup.procs && exec stress-ng --vm 2 "
                "--vm-bytes {bytes}M --vm-method rand-set --page-in --timeout {seconds}s "
                "--metrics-brief'")


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
    #: > 0: the stress run goes into a memory cgroup of this limit (and must reclaim)
    memcg_mb: int = 0
    #: replacement functions to count calls of with kprobes (``__klp_new__foo``)
    probes: tuple[str, ...] = ()


def snippet(spec: VerifySpec) -> str:
    from patchflow.livepatch.generate import render

    stress = STRESS.format(seconds=spec.stress_seconds) if spec.stress_seconds else ""
    setup = spec.setup_cmd
    if spec.memcg_mb and spec.stress_seconds:
        stress = MEMCG_STRESS.format(bytes=2 * spec.memcg_mb, seconds=spec.stress_seconds)
        setup = " && ".join(filter(None, (setup, MEMCG_SETUP.format(mb=spec.memcg_mb))))
    return render("verify.sh.j2", name=spec.name, module=GUEST_MODULE, effect_cmd=spec.effect_cmd,
                  timeout=spec.timeout, stress_cmd=stress, setup_cmd=setup,
                  probes=list(spec.probes))


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


def kprobe_hits(text: str, probes: tuple[str, ...]) -> dict[str, int]:
    """Calls of each probed function from ``kprobe_profile`` (events lp1, lp2... in order).

    #   lp1                                                    1234               0
    """
    hits: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith("lp") and parts[0][2:].isdigit():
            i = int(parts[0][2:]) - 1
            if 0 <= i < len(probes) and parts[1].isdigit():
                hits[probes[i]] = int(parts[1])
    return hits


def vmstat(text: str) -> dict[str, int]:
    """``/proc/vmstat`` as numbers ("pswpout 32767")."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _int(text: str) -> int | None:
    return int(text) if text.strip().lstrip("-").isdigit() else None


def judge(spec: VerifySpec, boot: StageResult, files: dict[str, bytes]) -> StageResult:
    """Every check of the verification, from the boot result and the guest's files."""
    checks: list[Check] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append(Check(name, ok, detail))

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
    if spec.stress_seconds and spec.memcg_mb:
        # the reclaim profile really reclaimed: pages went out to the zram swap
        out = [vmstat(_txt(files, f"vmstat-{w}")).get("pswpout", 0) for w in ("before", "after")]
        check("reclaim", _txt(files, "setup.rc") == "0" and out[1] > out[0],
              f"pswpout {out[0]} -> {out[1]} in a {spec.memcg_mb} MiB memory cgroup (zram swap "
              f"and cgroup set up: {'yes' if _txt(files, 'setup.rc') == '0' else 'no'})")
    if spec.probes:
        # informational where a workload cannot reach the code (prctl_set_auxv); the check
        # fails only if the probes could not be placed on the module's functions
        hits = kprobe_hits(_txt(files, "kprobe-profile"), spec.probes)
        check("executed", len(hits) == len(spec.probes),
              "; ".join(f"{p.removeprefix('__klp_new__')}: {hits[p]} calls" if p in hits
                        else f"{p}: no probe" for p in spec.probes))
    check("disable", _txt(files, "disabled-gone") == "yes",
          f"reverse transition {_txt(files, 'disable-seconds') or '?'}s")
    check("unload", _txt(files, "rmmod.rc") == "0" and
          not any(line.split()[:1] == [spec.name] for line in _txt(files, "modules").splitlines()),
          _txt(files, "rmmod") or "module gone")
    taint = _int(_txt(files, "tainted") or "0")
    check("taint", taint is not None and taint >= 0 and not taint & ~ALLOWED_TAINT,
          f"tainted={taint} ({taint_letters(taint) if taint is not None and taint >= 0 else '?'})")
    seconds = _txt(files, "transition-seconds")
    details = LivepatchVerifyDetails(
        module=spec.name, checks=tuple(checks), enabled=_txt(files, "enabled") == "1",
        transition_s=float(seconds) if seconds.isdigit() else None,
        blocking_tasks=tuple(line for line in blocked.splitlines() if line.strip()),
        disable_s=float(d) if (d := _txt(files, "disable-seconds")).isdigit() else None,
        tlb_shootdowns_before=tlb_shootdowns(_txt(files, "interrupts-before")),
        tlb_shootdowns_after=tlb_shootdowns(_txt(files, "interrupts-after")),
        effect_before=before, effect_after=after, effect_rollback=rollback, taint=taint,
        console=boot.log or "")
    failed = [c for c in checks if not c.ok]
    if boot.status is Status.ERROR and not files:
        return StageResult("livepatch-verify", Status.ERROR, boot.summary, boot.duration,
                           details=details, log=boot.log)
    if failed:
        return StageResult("livepatch-verify", Status.FAIL,
                           "; ".join(f"{c.check}: {c.detail}" for c in failed),
                           boot.duration, details=details, log=boot.log)
    return StageResult("livepatch-verify", Status.PASS,
                       f"loaded, enabled, took effect and rolled back cleanly "
                       f"({len(checks)} checks)", boot.duration, details=details, log=boot.log)


def keep_guest_files(files: dict[str, bytes], dest: Path) -> None:
    """What the guest handed back, next to the console log, for a later look (or a fixture).

    The names come from the guest, which runs the code under test: only names
    the console scanner accepted (one plain path component) get here, and each
    is checked again so that nothing is written outside *dest*
    (tests/unit/test_livepatch_verify.py::test_guest_names_stay_inside).
    """
    from patchflow.boot.console import RESULT_NAME_RE

    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    for fname, data in files.items():
        path = (dest / fname).resolve()
        if not RESULT_NAME_RE.match(fname) or path.parent != root:
            continue
        path.write_bytes(data)


def verify(module: Path, bzimage: Path, spec: VerifySpec, *, cache: Path, log: Path,
           accel: str = "tcg", boot_timeout: float = 600.0, extra_modules: tuple[Path, ...] = (),
           mem_mb: int = 512) -> StageResult:
    """Boot the unpatched *bzimage* with *module* and run every check.

    *extra_modules* (a distribution kernel's zram and its dependencies, in
    load order) are insmod'ed before the checks start.
    """
    from patchflow.boot import qemu
    from patchflow.boot.initramfs import GuestSpec, initramfs

    extra = tuple((m, f"/lib/modules/extra/{i:02d}-{m.name}") for i, m in enumerate(extra_modules))
    guest = GuestSpec(snippets=(("livepatch", snippet(spec)),),
                      files=((module, GUEST_MODULE), *extra), modules=tuple(g for _m, g in extra),
                      stress_ng=spec.stress_seconds > 0)
    initrd = initramfs(cache, guest)
    run = qemu.boot(bzimage, initrd, log=log, accel=accel, timeout=boot_timeout,
                    stage="livepatch-verify", mem_mb=mem_mb)
    keep_guest_files(run.files, log.with_name(log.name + ".files"))
    return judge(spec, run.result, run.files)
