"""What the live-patch stages hand on: the typed details of a build and of a verification.

The generator (:mod:`~patchflow.livepatch.generate`), the external backends
(:mod:`~patchflow.livepatch.backends`) and the verification
(:mod:`~patchflow.livepatch.verify`) write these; the bundle, the gate's
records and the report read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from patchflow.livepatch.safety import SafetyFinding
from patchflow.result import Details


@dataclass(frozen=True)
class ReplacedFunction:
    """A vmlinux function the live patch redirects, and the symbol that replaces it."""

    name: str
    file: str
    sympos: int
    new_symbol: str


@dataclass(frozen=True)
class DiffSummary:
    """What changed between the before and after objects of one translation unit."""

    changed_functions: tuple[str, ...] = ()
    new_functions: tuple[str, ...] = ()
    removed_functions: tuple[str, ...] = ()
    changed_data: tuple[str, ...] = ()
    new_data: tuple[str, ...] = ()


@dataclass(frozen=True)
class AnalysisRecord:
    files: tuple[str, ...]
    objects: dict[str, DiffSummary]
    findings: tuple[SafetyFinding, ...]


@dataclass(frozen=True)
class LivepatchBuildDetails(Details):
    """A live-patch build: the module, what it replaces, and why it was refused if it was."""

    kind: ClassVar[str] = "livepatch-build"
    backend: str  # native | kpatch-build | klp-build
    backend_reason: str = ""
    analysis: AnalysisRecord | None = None
    module: str = ""
    name: str = ""
    functions: tuple[ReplacedFunction, ...] = ()
    copied: tuple[str, ...] = ()
    klp_symbols: tuple[str, ...] = ()
    exported_refs: tuple[str, ...] = ()
    #: special sections whose entries for the replaced code the module carries
    carried_tables: tuple[str, ...] = ()
    release: str = ""
    forced_findings: tuple[SafetyFinding, ...] = ()
    #: the patch and the tree it was built from (the bundle records them)
    series: str = ""
    patch: str = ""
    patch_sha256: str = ""
    source: str = ""
    build_dir: str = ""
    vmlinux: str = ""
    #: what an external backend printed (kpatch-build, klp-build)
    errors: tuple[str, ...] = ()
    unsupported: tuple[str, ...] = ()

    @property
    def findings(self) -> tuple[SafetyFinding, ...]:
        return self.analysis.findings if self.analysis else ()


@dataclass(frozen=True)
class Check:
    """One check of a verification run in the guest."""

    check: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class LivepatchVerifyDetails(Details):
    """The module loaded into the unpatched kernel: every check, the transition, the effect."""

    kind: ClassVar[str] = "livepatch-verify"
    module: str
    checks: tuple[Check, ...]
    enabled: bool
    transition_s: float | None
    blocking_tasks: tuple[str, ...]
    disable_s: float | None
    tlb_shootdowns_before: int | None
    tlb_shootdowns_after: int | None
    effect_before: str
    effect_after: str
    effect_rollback: str
    taint: int | None
    console: str

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)
