"""Pipelines for the CI engines kernel teams already run: fan-out without a scheduler of our own.

Owns :class:`PipelineSpec` and :func:`generate`, which renders
``patchflow/templates/ci/<engine>.yml.j2``.  The generated pipeline runs one
job per target (or two, when ``split``: *prepare* = fetch, backport, builds;
*verify* = boot, bench, livepatch), hands each target's workspace (state
database, logs, results) from one job to the next as an artifact, and ends
with one *report* job that merges every results.json into one report and one
verdict (``patchflow report --merge ... --verdict``).

Exit codes inside the pipeline: a gate job exiting 1 (a real failure) is let
through so the report still runs; the report job fails the pipeline with the
merged verdict (1 or 2).  Kernel build trees stay in ``$PATCHFLOW_CACHE``,
which the pipeline keeps in the engine's per-target cache, not in artifacts.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

import jinja2

from patchflow.config import check_name
from patchflow.errors import UserError

ENGINES = ("gitlab", "github")

#: stage groups of a split pipeline: the first ends with the built kernels
PREPARE = ("check-newer", "backport", "build-base", "build-patched")
VERIFY = ("boot", "bench", "livepatch-build", "livepatch-verify")

#: GitLab job names allow ':'; a target name is already restricted by check_name
_SLUG = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class PipelineSpec:
    engine: str
    series: str
    targets: tuple[str, ...]
    split: bool = True
    #: extra arguments for every ``patchflow gate`` call (e.g. ``--dry-run``)
    gate_args: tuple[str, ...] = ()
    #: shell command that installs patchflow on the runner; empty: already there
    install: str = "python3 -m pip install patchflow"
    #: GitLab image / GitHub runs-on
    image: str = "debian:bookworm"
    runs_on: str = "ubuntu-latest"


@dataclass(frozen=True)
class Job:
    """One job of the fan-out, as the templates need it."""

    name: str
    slug: str
    target: str
    group: str  # "gate", "prepare" or "verify"
    stages: tuple[str, ...]  # empty: every stage
    needs: str | None  # name of the job whose artifacts it continues from


def jobs(spec: PipelineSpec) -> list[Job]:
    out: list[Job] = []
    for t in spec.targets:
        slug = _SLUG.sub("_", t)
        if spec.split:
            prep = Job(f"prepare:{t}", slug, t, "prepare", PREPARE, None)
            out += [prep, Job(f"verify:{t}", slug, t, "verify", VERIFY, prep.name)]
        else:
            out.append(Job(f"gate:{t}", slug, t, "gate", (), None))
    return out


def gate_argv(spec: PipelineSpec, job: Job) -> list[str]:
    """The ``patchflow gate`` command line of one job (tested directly)."""
    argv = ["patchflow", "gate", spec.series, "--target", job.target]
    for s in job.stages:
        argv += ["--stage", s]
    argv += ["--out", f".pf/results/{job.slug}-{job.group}", *spec.gate_args]
    return argv


def validate(spec: PipelineSpec) -> None:
    if spec.engine not in ENGINES:
        raise UserError(f"unknown CI engine {spec.engine!r} (known: {', '.join(ENGINES)})")
    if not spec.targets:
        raise UserError("no targets: name at least one with --target")
    try:
        check_name(spec.series, "series")
        for t in spec.targets:
            check_name(t, "target")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if len(set(spec.targets)) != len(spec.targets):
        raise UserError("a target is named twice")


def generate(spec: PipelineSpec) -> str:
    """The pipeline file text for *spec* (``.gitlab-ci.yml`` or a GitHub workflow)."""
    validate(spec)
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("patchflow", "templates/ci"),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True, autoescape=False)  # noqa: S701 - YAML, not HTML
    env.filters["shjoin"] = lambda argv: shlex.join(argv)
    all_jobs = jobs(spec)
    last = [j for j in all_jobs if j.group != "prepare"]
    return env.get_template(f"{spec.engine}.yml.j2").render(
        spec=spec, jobs=all_jobs, last_jobs=last,
        gate_argv=lambda j: gate_argv(spec, j))
