"""Live patches for a distribution kernel: per real stable fix, built or refused, and how long.

    (--verify: and loaded, transitioned, stressed and rolled back in its own kernel.)

    python benchmarks/bench_distro_livepatch.py [--target debian12-cloud-6.1]
        [--corpus tests/data/distro-corpus/6.1] [--only NAME ...] [--json OUT]
        [--estimate-full-build N]

Fetches and prepares the target (timed separately: downloads and unpacking,
then olddefconfig + prepare + modules_prepare; both cached), then runs the
native generator on each fix of the corpus (real single-file stable changes
between Debian's 6.1.187 and 6.1.192 sources) and prints per fix: the time to
a built module, the replaced functions, or the reason it was refused.

``--estimate-full-build N`` compiles N objects of vmlinux from the prepared
tree with ccache off and extrapolates to every object vmlinux was linked from
(its STT_FILE symbols): the cost of kpatch-build's method, which builds the
whole distro kernel.  Said as an estimate, with N, the per-object mean and the
object count.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from patchflow.config import ConfigDir
from patchflow.distro.prepare import PreparedTree, make_argv
from patchflow.distro.stage import ensure
from patchflow.errors import PatchflowError
from patchflow.livepatch.generate import BuiltTree, generate, module_name
from patchflow.livepatch.results import LivepatchBuildDetails, LivepatchVerifyDetails
from patchflow.result import Status
from patchflow.runner import run

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "distro-corpus" / "6.1"


@dataclass(frozen=True)
class FixResult:
    fix: str
    status: str  # built | refused | error
    seconds: float
    functions: tuple[str, ...]
    reason: str
    tables: tuple[str, ...] = ()


def run_fix(tree: BuiltTree, patch: Path, verify_in: Path | None = None) -> FixResult:
    """One fix through the generator (and the guest); a refusal is a result, not a crash."""
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-distro-") as d:
        try:
            res = generate(patch.read_text(), tree, Path(d), name=module_name(patch.stem))
        except PatchflowError as exc:
            return FixResult(patch.stem, "refused", time.monotonic() - t0, (), str(exc))
        took = time.monotonic() - t0
        built = res.detail(LivepatchBuildDetails)
        funcs = tuple(f.name for f in built.functions) if built else ()
        if res.status is not Status.PASS:
            return FixResult(patch.stem, "refused", took, funcs, res.summary)
        tables = built.carried_tables if built else ()
        if verify_in is None or built is None:
            return FixResult(patch.stem, "built", took, funcs, "", tables)
        return _verified(tree, built, patch.stem, took, verify_in)


def _verified(tree: BuiltTree, built: LivepatchBuildDetails, fix: str, took: float,
              cache: Path) -> FixResult:
    """Load the module into the distribution's own kernel under QEMU (the verify stage's code)."""
    from patchflow.distro.guest import WORKLOAD_MODULES, module_closure
    from patchflow.livepatch.bundle import modinfo
    from patchflow.livepatch.verify import ZRAM_SETUP, VerifySpec, verify

    assert tree.distro is not None
    k = tree.distro.kernel
    ko = Path(built.module)
    mods = module_closure(k.modules, WORKLOAD_MODULES, cache / "ko")
    spec = VerifySpec(name=modinfo(ko.read_bytes())["name"], stress_seconds=10,
                      setup_cmd=ZRAM_SETUP, memcg_mb=64,
                      probes=tuple(f.new_symbol for f in built.functions))
    t0 = time.monotonic()
    res = verify(ko, k.vmlinuz, spec, cache=cache, log=cache / "logs" / f"{fix}.log",
                 extra_modules=tuple(mods), mem_mb=1024)
    status = "verified" if res.status is Status.PASS else "verify-failed"
    v = res.detail(LivepatchVerifyDetails)
    ran = next((c.detail for c in v.checks if c.check == "executed"), "") if v else ""
    return FixResult(fix, status, took, tuple(f.name for f in built.functions),
                     f"guest {time.monotonic() - t0:.0f} s: {res.summary}; {ran}",
                     built.carried_tables)


def vmlinux_units(vmlinux: Path) -> list[str]:
    """The STT_FILE symbols of vmlinux: one per translation unit linked into it."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    with open(vmlinux, "rb") as fh:
        symtab = ELFFile(fh).get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        return [s.name for s in symtab.iter_symbols() if s["st_info"]["type"] == "STT_FILE"]


def estimate_full_build(tree: PreparedTree, n: int) -> dict[str, float]:
    """Compile *n* random vmlinux objects (no ccache, one job) and extrapolate to all of them.

    The sample is drawn from the .c files whose name vmlinux's STT_FILE symbols
    carry; the object count is the number of those symbols (assembler files and
    files without local symbols are not counted, so the estimate is low).
    """
    units = vmlinux_units(tree.kernel.vmlinux)
    names = {u for u in units if u.endswith(".c")}
    srcs = [p for p in tree.source.rglob("*.c") if p.name in names
            and p.relative_to(tree.source).parts[0] not in ("tools", "scripts", "samples")]
    pick = random.Random(1).sample(srcs, min(n, len(srcs)))
    objs = [str(p.relative_to(tree.source).with_suffix(".o")) for p in pick]
    t0 = time.monotonic()
    done = run(make_argv(tree.kernel, tree.build, tree.kernel.cc, objs, jobs=1, extra=("-k",)),
               timeout=7200, check=False, env={"CCACHE_DISABLE": "1"})
    took = time.monotonic() - t0
    built = [o for o in objs if (tree.build / o).is_file()]
    for o in built:
        (tree.build / o).unlink()
    per = took / max(len(built), 1)
    return {"objects_compiled": len(built), "asked": len(objs), "seconds": took,
            "per_object_s": per, "vmlinux_objects": len(units),
            "full_build_one_core_h": per * len(units) / 3600,
            "full_build_two_cores_h": per * len(units) / 7200, "make_ok": float(done.ok)}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--target", default="debian12-cloud-6.1")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--estimate-full-build", type=int, default=0, metavar="N")
    ap.add_argument("--verify", action="store_true",
                    help="load each built module into the distribution's kernel under QEMU")
    args = ap.parse_args()
    cache = Path(os.environ.get("PATCHFLOW_CACHE", Path.home() / ".cache" / "patchflow"))
    target = ConfigDir(ROOT).target(args.target)
    downloads: list[float] = []

    def say(msg: str) -> None:
        # "debian: linux-source-6.1_6.1.187-1_all.deb downloaded in 2.9 s"
        if m := re.search(r" downloaded in ([0-9.]+) s$", msg):
            downloads.append(float(m.group(1)))
        print(msg, flush=True)

    prepared, took = ensure(cache, target, say)
    print(f"{args.target}: fetch {took.fetch_s:.1f} s (downloads {sum(downloads):.1f} s), "
          f"prepare {took.prepare_s:.1f} s")
    tree = BuiltTree(prepared.source, prepared.build, prepared.kernel.vmlinux, distro=prepared)
    patches = [p for p in sorted(args.corpus.glob("*.patch"))
               if not args.only or p.stem in args.only]
    rows = []
    for patch in patches:
        r = run_fix(tree, patch, cache / "livepatch" / "bench-distro" if args.verify else None)
        rows.append(r)
        what = ", ".join(r.functions) + (f" [{' '.join(r.tables)}]" if r.tables else "") \
            + (f"; {r.reason}" if r.reason else "") if r.status != "refused" else r.reason
        print(f"{r.fix:<32} {r.status:<8} {r.seconds:6.1f} s  {what}", flush=True)
    built = [r for r in rows if r.status in ("built", "verified", "verify-failed")]
    verified = [r for r in rows if r.status == "verified"]
    print(f"{len(built)} of {len(rows)} built ({len(verified)} verified in the guest), "
          f"{len(rows) - len(built)} refused; "
          f"median {sorted(r.seconds for r in rows)[len(rows) // 2]:.1f} s per fix"
          if rows else "no fixes")
    out: dict[str, object] = {"target": args.target, "fetch_s": took.fetch_s,
                              "download_s": sum(downloads),
                              "prepare_s": took.prepare_s,
                              "fixes": [r.__dict__ for r in rows]}
    if args.estimate_full_build:
        est = estimate_full_build(prepared, args.estimate_full_build)
        out["full_build_estimate"] = est
        print(f"kpatch-build's full build, estimated from {est['objects_compiled']:.0f} objects "
              f"({est['per_object_s']:.2f} s each) x {est['vmlinux_objects']:.0f} vmlinux objects: "
              f"{est['full_build_two_cores_h']:.1f} h on 2 cores")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=list))
    return 0


if __name__ == "__main__":
    sys.exit(main())
