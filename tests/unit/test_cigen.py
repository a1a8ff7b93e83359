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
        "gitlab", "batch-tlb-flush", ("linux-6.1.y", "linux-6.12.y"), gate_args=("--force",),
        tags=("kvm", "large"), timeout="2h 30m")))
    assert doc["stages"] == ["prepare", "verify", "report"]
    verify = doc["verify:linux-6.12.y"]
    assert verify["needs"] == [{"job": "prepare:linux-6.12.y", "artifacts": True}]
    assert verify["script"] == ["patchflow gate batch-tlb-flush --target linux-6.12.y "
                                "--stage boot --stage bench --stage livepatch-build "
                                "--stage livepatch-verify --out .pf/results/linux-6_12_y-verify "
                                "--force"]
    assert ".pf/ws-linux-6_12_y/" in verify["artifacts"]["paths"]
    # kernel checkouts and live-patch build dirs never travel as artifacts
    assert ".pf/ws-linux-6_12_y/worktrees/**/*" in verify["artifacts"]["exclude"]
    base = doc[".patchflow"]
    assert base["allow_failure"] == {"exit_codes": [1]}
    assert base["image"] == "debian:bookworm" and base["timeout"] == "150m"
    assert base["tags"] == ["kvm", "large"]
    # a bare Debian container: python3/pip from apt, patchflow from pip, then the tools
    assert base["before_script"][1] == ("python3 -m pip install -q --break-system-packages "
                                        "$PATCHFLOW_PIP_SPEC")
    assert base["before_script"][2] == "patchflow ci setup"
    assert doc["variables"]["PATCHFLOW_PIP_SPEC"] == "patchflow"
    [manual, push] = doc["workflow"]["rules"]
    assert "schedule" in manual["if"] and push["changes"] == ["series/**/*", "targets/**/*"]
    rep = doc["report"]
    assert rep["when"] == "always" and len(rep["needs"]) == 4
    assert rep["script"] == ["patchflow report --merge .pf/results --out .pf/report --verdict"]
    assert rep["artifacts"]["reports"]["junit"] == ".pf/report/junit.xml"
    # the report job needs patchflow, not the kernel tools
    assert "patchflow ci setup" not in rep["before_script"]


def test_github_matrix() -> None:
    doc = yaml.safe_load(cigen.generate(cigen.PipelineSpec(
        "github", "batch-tlb-flush", ("linux-6.12.y",), split=False)))
    jobs = doc["jobs"]
    assert set(jobs) == {"gate", "report"}
    assert jobs["gate"]["strategy"]["matrix"]["target"] == ["linux-6.12.y"]
    assert jobs["report"]["needs"] == "gate" and jobs["report"]["if"] == "always()"
    # Debian's kernel packages need Debian's apt, not ubuntu-latest's
    assert jobs["gate"]["container"] == "debian:bookworm"
    assert jobs["gate"]["timeout-minutes"] == 180
    assert doc[True]["push"]["paths"] == ["series/**", "targets/**"]  # YAML 1.1 reads on: as True
    assert "schedule" not in doc[True]


def test_github_schedule_and_labels() -> None:
    doc = yaml.safe_load(cigen.generate(cigen.PipelineSpec(
        "github", "s", ("t",), schedule="17 3 * * 1", tags=("self-hosted", "kvm"))))
    assert doc[True]["schedule"] == [{"cron": "17 3 * * 1"}]
    assert doc["jobs"]["prepare"]["runs-on"] == ["self-hosted", "kvm"]


def test_no_setup_when_the_runner_has_patchflow() -> None:
    doc = yaml.safe_load(cigen.generate(cigen.PipelineSpec("gitlab", "s", ("t",), pip_spec="")))
    assert "before_script" not in doc[".patchflow"] and "PATCHFLOW_PIP_SPEC" not in doc["variables"]


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


@pytest.mark.parametrize(("change", "message"), [
    ({"timeout": "soon"}, "job timeout 'soon'"),
    ({"timeout": "0m"}, "between 1m and 168h"),
    ({"schedule": "daily"}, "not five cron fields"),
    ({"schedule": "1 2 3 4 5\nrun: x"}, "not five cron fields"),
    ({"tags": ("kvm; rm",)}, "runner tag"),
    ({"image": "debian:bookworm\nscript: x"}, "not a container image"),
    ({"watch": ("../secrets/**",)}, "watched path"),
    ({"pip_spec": "patchflow; curl x | sh"}, "pip spec"),
])
def test_rejects_option_values(change: dict[str, object], message: str) -> None:
    """Option values become YAML and shell text: each one is checked where it enters."""
    with pytest.raises(UserError, match=message):
        cigen.generate(cigen.PipelineSpec("gitlab", "s", ("t",), **change))  # type: ignore[arg-type]
