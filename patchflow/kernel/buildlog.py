"""Reading kbuild's output: warnings, the first errors and the file they blame, a full disk."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

# "mm/vmscan.c:1234:5: warning: unused variable 'x' [-Wunused-variable]"
_WARNING_RE = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?:(?P<col>\d+):)? warning: (?P<msg>.*)$")
# "mm/vmscan.c:1234:5: error: expected ';' before '}' token"
# "mm/vmscan.c:12: error: ..." (no column with some diagnostics)
_ERROR_RE = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?:(?P<col>\d+):)? (?:fatal )?error: (?P<msg>.*)$")
# "make[3]: *** [scripts/Makefile.build:229: mm/vmscan.o] Error 1"
_MAKE_ERROR_RE = re.compile(r"^make(?:\[\d+\])?: \*\*\* \[(?P<rule>[^\]]*?)(?:: (?P<target>[^\]]+))?\] Error \d+")
# "ld: mm/vmscan.o: in function `shrink_folio_list':" then "...: undefined reference to `x'"
_LINK_ERROR_RE = re.compile(r"undefined reference to|multiple definition of|ld: .*error")
# "cc1: fatal error: mm/.tmp_vmscan.o: No space left on device"
# "/usr/bin/ld: final link failed: No space left on device"
ENOSPC_RE = re.compile(r"No space left on device|ENOSPC")


@dataclass(frozen=True, order=True)
class Diagnostic:
    file: str
    line: int
    message: str

    @property
    def key(self) -> tuple[str, str]:
        # line numbers move when a patch adds code above a warning; file+message does not
        return (self.file, self.message)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


def parse_warnings(log: str) -> list[Diagnostic]:
    seen: dict[tuple[str, str], Diagnostic] = {}
    for line in log.splitlines():
        if m := _WARNING_RE.match(line.strip()):
            d = Diagnostic(os.path.normpath(m.group("file")), int(m.group("line")), m.group("msg"))
            seen.setdefault(d.key, d)
    return list(seen.values())


def new_warnings(base: Iterable[Diagnostic], patched: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Warnings the patched build prints that the baseline did not."""
    known = {d.key for d in base}
    return sorted(d for d in patched if d.key not in known)


@dataclass(frozen=True)
class BuildFailure:
    kind: str  # "compile", "link", "make", "enospc"
    file: str | None
    lines: tuple[str, ...]


def classify_failure(log: str, max_lines: int = 8) -> BuildFailure:
    """The first error lines of a failed build and the file they blame."""
    lines = log.splitlines()
    for line in lines:
        if ENOSPC_RE.search(line):
            return BuildFailure("enospc", None, (line.strip(),))
    for i, line in enumerate(lines):
        if m := _ERROR_RE.match(line.strip()):
            block = [ln for ln in lines[i:i + 40] if _ERROR_RE.match(ln.strip())][:max_lines]
            return BuildFailure("compile", os.path.normpath(m.group("file")), tuple(block))
    for i, line in enumerate(lines):
        if _LINK_ERROR_RE.search(line):
            return BuildFailure("link", None, tuple(lines[max(0, i - 1):i + max_lines - 1]))
    for line in lines:
        if m := _MAKE_ERROR_RE.match(line.strip()):
            return BuildFailure("make", m.group("target") or m.group("rule"), (line.strip(),))
    return BuildFailure("make", None, tuple(lines[-max_lines:]))
