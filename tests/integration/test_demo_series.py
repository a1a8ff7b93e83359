"""The demo series (issue 5) is a real b4 thread pair that patchflow fetches from a local lore."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchflow.demo.offline import DEMO_SERIES, publish
from patchflow.lore import series
from patchflow.state import State
from patchflow.workspace import Workspace

pytestmark = pytest.mark.integration


def test_demo_threads_fetch_through_b4(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    cfg = ws.config.series(DEMO_SERIES)
    lines: list[str] = []
    mirror = publish(ws, cfg, lines.append)
    try:
        with State(ws.db_path) as st:
            report = series.fetch(ws, st, DEMO_SERIES, check_newer=True, mirror=mirror.midmask)
            assert "no revision newer than v2" in report.notes
            v1 = series.load_version(ws, st, DEMO_SERIES, 1)
            v2 = series.load_version(ws, st, DEMO_SERIES, 2)
            assert len(v1.patches) == 2 and len(v2.patches) == 3
            for p in v1.patches + v2.patches:
                assert p.files == ["mm/vmscan.c"]
                assert "Signed-off-by: patchflow demo <demo@patchflow.invalid>" in p.trailers
            assert v2.patches[-1].subject == "mm/vmscan: batch TLB flushing for dirty folios"
            cover = v2.row.cover
            assert "written for the patchflow offline demo" in cover
            assert "Zhang Peng" in cover
            marks = [e.mark for e in series.diff_versions(ws, st, DEMO_SERIES, 1, 2)]
            assert marks == ["!", ">", "!"]
    finally:
        mirror.stop()
    assert any("published v2.mbox: 4 messages" in ln for ln in lines)
