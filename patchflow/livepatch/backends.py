"""The three ways to build a live patch, how one is chosen, and their argv and errors.

* ``kpatch-build`` (when installed; kernels up to about 6.18),
* the kernel's own ``scripts/livepatch/klp-build`` (6.19 and later),
* ``native``: :mod:`patchflow.livepatch.generate`, which needs nothing more
  than the built tree, and is the fallback everywhere.

The argv builders and the error parsers are pure functions: neither external
tool can be installed here, so tests drive them with fake executables.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from patchflow.errors import UserError
from patchflow.livepatch.results import LivepatchBuildDetails, ReplacedFunction
from patchflow.result import StageResult, Status, measure
from patchflow.runner import run

BACKENDS = ("kpatch-build", "klp-build", "native")
KPATCH_MAX = (6, 18)
KLP_BUILD_MIN = (6, 19)
KLP_BUILD = Path("scripts") / "livepatch" / "klp-build"


@dataclass(frozen=True)
class Choice:
    backend: str
    reason: str


def kernel_version(release: str) -> tuple[int, int]:
    """``6.12.117`` / ``6.19.0-rc1`` -> (6, 12)."""
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        raise UserError(f"cannot read a kernel version from {release!r}")
    return int(m.group(1)), int(m.group(2))


def choose(release: str, source: Path, *, requested: str | None = None,
           which: Callable[[str], str | None] | None = None) -> Choice:
    """Pick a backend by availability and kernel version (or check the requested one)."""
    find = which or shutil.which
    ver = kernel_version(release)
    has_kpatch = find("kpatch-build") is not None
    has_klp = (source / KLP_BUILD).is_file()
    if requested and requested not in BACKENDS:
        raise UserError(f"unknown backend {requested!r}; choose from {', '.join(BACKENDS)}")
    if requested == "kpatch-build" and not has_kpatch:
        raise UserError("kpatch-build is not installed")
    if requested == "klp-build" and not has_klp:
        raise UserError(f"{source / KLP_BUILD} does not exist (klp-build needs 6.19 or later)")
    if requested:
        return Choice(requested, "requested")
    if has_klp and ver >= KLP_BUILD_MIN:
        return Choice("klp-build", f"kernel {ver[0]}.{ver[1]} ships scripts/livepatch/klp-build")
    if has_kpatch and ver <= KPATCH_MAX:
        return Choice("kpatch-build", f"kpatch-build is installed and supports {ver[0]}.{ver[1]}")
    why = "kpatch-build not installed" if not has_kpatch else f"kpatch-build does not support {ver[0]}.{ver[1]}"
    return Choice("native", why + ("" if has_klp else "; no klp-build in this tree"))


def kpatch_build_argv(*, source: Path, config: Path, vmlinux: Path, patch: Path, name: str,
                      output: Path, jobs: int = 2, skip_compiler_check: bool = False) -> list[str]:
    argv = ["kpatch-build", "--sourcedir", str(source), "--config", str(config),
            "--vmlinux", str(vmlinux), "--name", name, "--output", str(output),
            "--jobs", str(jobs)]
    if skip_compiler_check:
        argv.append("--skip-compiler-check")
    return [*argv, str(patch)]


def klp_build_argv(*, source: Path, patch: Path, output: Path, jobs: int = 2) -> list[str]:
    # klp-build runs from the top of a kernel tree that was built in place
    return [str(source / KLP_BUILD), "--jobs", str(jobs), "--output", str(output), str(patch)]


# kpatch-build: "ERROR: 2 unsupported section change(s). Check /root/.kpatch/build.log for more details."
_KPATCH_ERROR = re.compile(r"^ERROR: (.*?)(?:\. Check .* for more details\.)?$")
# create-diff-object: "cmdline.o: changed function: cmdline_proc_show"
_KPATCH_CHANGED = re.compile(r"^(\S+\.o): changed function: (\S+)$")
# create-diff-object: "vmscan.o: data section .data.foo selected for inclusion"
_KPATCH_UNSUPPORTED = re.compile(
    r"^(\S+\.o): (.*(?:selected for inclusion|not supported|unsupported|unreconcilable).*)$")
# klp-build: "error: klp-build: no changes detected"
_KLP_ERROR = re.compile(r"^(?:error|ERROR): (?:klp-build: )?(.*)$")
# objtool klp diff: "vmlinux.o: changed function: cmdline_proc_show"
_KLP_CHANGED = re.compile(r"^(\S+\.o): (?:changed|new) function: (\S+)$")


@dataclass(frozen=True)
class ToolReport:
    errors: list[str]
    changed: list[str]
    unsupported: list[str]


def parse_kpatch_output(text: str) -> ToolReport:
    errors, changed, unsup = [], [], []
    for line in text.splitlines():
        line = line.strip()
        if m := _KPATCH_CHANGED.match(line):
            changed.append(m.group(2))
        elif m := _KPATCH_UNSUPPORTED.match(line):
            unsup.append(f"{m.group(1)}: {m.group(2)}")
        elif m := _KPATCH_ERROR.match(line):
            errors.append(m.group(1))
    return ToolReport(errors, changed, unsup)


def parse_klp_build_output(text: str) -> ToolReport:
    errors, changed = [], []
    for line in text.splitlines():
        line = line.strip()
        if m := _KLP_CHANGED.match(line):
            changed.append(m.group(2))
        elif m := _KLP_ERROR.match(line):
            errors.append(m.group(1))
    return ToolReport(errors, changed, [])


def build_external(backend: str, argv: list[str], *, cwd: Path, module: Path,
                   log: Path | None = None, timeout: float = 3600.0) -> StageResult:
    """Run kpatch-build or klp-build; a failure is a FAIL result carrying the parsed errors."""
    parse = parse_kpatch_output if backend == "kpatch-build" else parse_klp_build_output
    with measure() as sw:
        res = run(argv, cwd=cwd, timeout=timeout, log=log, check=False)
    report = parse(res.stdout + "\n" + res.stderr)
    details = LivepatchBuildDetails(
        backend=backend, errors=tuple(report.errors), unsupported=tuple(report.unsupported),
        functions=tuple(ReplacedFunction(f, "", 0, "") for f in report.changed))
    if res.returncode != 0 or not module.is_file():
        why = "; ".join(report.unsupported + report.errors) or f"exit code {res.returncode}"
        return StageResult("livepatch-build", Status.FAIL, f"{backend} failed: {why}",
                           sw.elapsed, details=details, log=str(log) if log else None)
    return StageResult("livepatch-build", Status.PASS,
                       f"{backend} built {module.name}: {', '.join(report.changed) or '?'}",
                       sw.elapsed, details=dataclasses.replace(details, module=str(module)),
                       log=str(log) if log else None)
