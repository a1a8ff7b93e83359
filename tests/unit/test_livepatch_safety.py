"""Diff-level safety analysis: struct layouts and header inlines, on recorded patches.

Each folder of tests/data/livepatch/diffsafety/ holds a small unpatched
``tree/``, a ``patch.diff`` against it and the expected findings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchflow.livepatch.safety import REASONS, analyze_diff, summarize

CORPUS = Path(__file__).parent.parent / "data" / "livepatch" / "diffsafety"
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())


@pytest.mark.parametrize("case", CASES)
def test_diff_safety_corpus(case: str) -> None:
    folder = CORPUS / case
    findings = analyze_diff((folder / "patch.diff").read_text(), folder / "tree")
    expected = json.loads((folder / "expected.json").read_text())
    assert [{"kind": f.kind, "file": f.file, "symbol": f.symbol} for f in findings] == expected
    for f in findings:
        assert f.reason.startswith(REASONS[f.kind])


def test_summary_explains_each_finding() -> None:
    folder = CORPUS / "struct-layout"
    text = summarize(analyze_diff((folder / "patch.diff").read_text(), folder / "tree"))
    assert "mm/vmscan.c: struct reclaim_stat: changes the layout" in text
    assert summarize([]) == "no unsafe change found"
