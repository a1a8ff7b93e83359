"""Pipeline generation: argv of each job, validation, and the examples in ci/examples."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from patchflow import cigen
from patchflow.errors import UserError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "ci" / "examples").glob("*.yml"))
TARGETS = ("linux-6.1.y", "linux-6.6.y", "linux-6.12.y", "linux-6.18.y")


def spec_for(example: Path) -> cigen.PipelineSpec:
    engine, _, split = example.stem.partition("-")
    return cigen.PipelineSpec(engine=engine, series="batch-tlb-flush", targets=TARGETS,
                              split=split == "split")


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_examples_are_current(example: Path) -> None:
    """ci/examples/ are what `patchflow ci generate` writes today (regenerate: see ci/README.md)."""
    assert cigen.generate(spec_for(example)) == example.read_text()


def test_gitlab_fan_out() -> None:
    doc = yaml.safe_load(cigen.generate(cigen.PipelineSpec(
        "gitlab", "batch-tlb-flush", ("linux-6.1.y", "linux-6.12.y"), gate_args=("--dry-run",))))
    assert doc["stages"] == ["prepare", "verify", "report"]
    verify = doc["verify:linux-6.12.y"]
    assert verify["needs"] == [{"job": "prepare:linux-6.12.y", "artifacts": True}]
    assert verify["script"] == ["patchflow gate batch-tlb-flush --target linux-6.12.y "
                                "--stage boot --stage bench --stage livepatch-build "
                                "--stage livepatch-verify --out .pf/results/linux-6_12_y-verify "
                                "--dry-run"]
    assert ".pf/ws-linux-6_12_y/" in verify["artifacts"]["paths"]
    assert doc[".patchflow"]["allow_failure"] == {"exit_codes": [1]}
    rep = doc["report"]
    assert rep["when"] == "always" and len(rep["needs"]) == 4
    assert rep["script"] == ["patchflow report --merge .pf/results --out .pf/report --verdict"]


def test_github_matrix() -> None:
    doc = yaml.safe_load(cigen.generate(cigen.PipelineSpec(
        "github", "batch-tlb-flush", ("linux-6.12.y",), split=False)))
    jobs = doc["jobs"]
    assert set(jobs) == {"gate", "report"}
    assert jobs["gate"]["strategy"]["matrix"]["target"] == ["linux-6.12.y"]
    assert jobs["report"]["needs"] == "gate" and jobs["report"]["if"] == "always()"


def test_gate_argv_quotes_nothing_unsafe() -> None:
    job = cigen.jobs(cigen.PipelineSpec("gitlab", "s", ("t1",), split=False))[0]
    assert cigen.gate_argv(cigen.PipelineSpec("gitlab", "s", ("t1",)), job) == [
        "patchflow", "gate", "s", "--target", "t1", "--out", ".pf/results/t1-gate"]


@pytest.mark.parametrize(("engine", "targets", "message"), [
    ("jenkins", ("t",), "unknown CI engine"),
    ("gitlab", (), "no targets"),
    ("gitlab", ("a;rm -rf /",), "invalid target name"),
    ("gitlab", ("t", "t"), "named twice"),
])
def test_rejects(engine: str, targets: tuple[str, ...], message: str) -> None:
    with pytest.raises(UserError, match=message):
        cigen.generate(cigen.PipelineSpec(engine, "s", targets))
