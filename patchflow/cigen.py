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

Every job sets up its own runner (:func:`setup_commands`): a Debian 12
container gets python3 and pip from apt, patchflow from pip
(``$PATCHFLOW_PIP_SPEC``, a pipeline variable so a project can point it at
its own copy without regenerating), then ``patchflow ci setup`` installs the
system tools the gate's stages need.  Artifacts carry only what the next job
reads: the workspace's state database, stored results and logs, never the
backport worktrees, which are kernel checkouts (:data:`ARTIFACT_EXCLUDE`).
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


#: workspace members no later job reads: backport worktrees (kernel checkouts) and
#: scratch space; the live-patch module and its build.json stay (they are the product)
ARTIFACT_EXCLUDE = ("worktrees", "tmp")

#: a job timeout as GitLab writes it: "90m", "3h", "2h 30m"
_DURATION = re.compile(r"^\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*$")
#: five cron fields of digits, ranges, steps, lists and '*'
_CRON = re.compile(r"^[0-9*/,-]+( [0-9*/,-]+){4}$")
#: a runner tag / label: GitLab and GitHub both allow these characters
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")
#: a container image reference (registry/name:tag@digest)
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?(@sha256:[0-9a-f]{64})?$")


@dataclass(frozen=True)
class PipelineSpec:
    engine: str
    series: str
    targets: tuple[str, ...]
    split: bool = True
    #: extra arguments for every ``patchflow gate`` call (e.g. ``--force``)
    gate_args: tuple[str, ...] = ()
    #: what ``pip install`` installs on the runner (default of ``$PATCHFLOW_PIP_SPEC``);
    #: empty: the runner already has patchflow and its tools, set nothing up
    pip_spec: str = "patchflow"
    #: the Debian container every job runs in (``apt-get download`` needs Debian)
    image: str = "debian:bookworm"
    #: job timeout ("3h", "90m"): a kernel build plus boots and benches
    timeout: str = "3h"
    #: GitLab runner tags / GitHub ``runs-on`` labels (empty: ``ubuntu-latest``)
    tags: tuple[str, ...] = ()
    #: cron schedule (GitHub ``on.schedule``); None: no schedule (GitLab sets
    #: schedules in its UI; the pipeline's rules let them run)
    schedule: str | None = None
    #: paths whose change triggers the pipeline on a push
    watch: tuple[str, ...] = ("series/**", "targets/**")

    @property
    def timeout_minutes(self) -> int:
        m = _DURATION.match(self.timeout)
        if not m or not any(m.groups()):
            raise UserError(f"job timeout {self.timeout!r}: give hours and minutes, e.g. 3h or 90m")
        return int(m[1] or 0) * 60 + int(m[2] or 0)

    @property
    def runs_on(self) -> str:
        return "[" + ", ".join(self.tags) + "]" if self.tags else "ubuntu-latest"


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


def setup_commands(spec: PipelineSpec) -> list[str]:
    """Shell lines that make a bare Debian container a patchflow runner (empty: set nothing up)."""
    if not spec.pip_spec:
        return []
    apt = ("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
           "--no-install-recommends python3-pip git ca-certificates")
    # $PATCHFLOW_PIP_SPEC stays unquoted so "-e PATH" works; pip's own parser sees it
    return [f"python3 -m pip --version >/dev/null 2>&1 || {{ {apt}; }}",
            "python3 -m pip install -q --break-system-packages $PATCHFLOW_PIP_SPEC",
            "patchflow ci setup"]


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
    if not 1 <= spec.timeout_minutes <= 7 * 24 * 60:
        raise UserError(f"job timeout {spec.timeout!r}: between 1m and 168h")
    if spec.schedule is not None and not _CRON.match(spec.schedule):
        raise UserError(f"schedule {spec.schedule!r}: not five cron fields (e.g. '17 3 * * *')")
    for tag in spec.tags:
        if not _TAG.match(tag):
            raise UserError(f"runner tag {tag!r}: letters, digits, '_', '.', ':' and '-' only")
    if not _IMAGE.match(spec.image):
        raise UserError(f"image {spec.image!r}: not a container image reference")
    for path in spec.watch:
        if not re.match(r"^[A-Za-z0-9_.*/-]+$", path) or path.startswith("/") or ".." in path:
            raise UserError(f"watched path {path!r}: a relative glob inside the repository")
    if any(c in spec.pip_spec for c in "\n\"'`$;&|<>"):
        raise UserError(f"pip spec {spec.pip_spec!r}: a package name, URL or path only")


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
    env.filters["yamlstr"] = _yaml_str
    return env.get_template(f"{spec.engine}.yml.j2").render(
        spec=spec, jobs=all_jobs, last_jobs=last, setup=setup_commands(spec),
        exclude=ARTIFACT_EXCLUDE, gate_argv=lambda j: gate_argv(spec, j))


def _yaml_str(value: str) -> str:
    """A double-quoted YAML scalar (JSON strings are valid YAML)."""
    import json

    return json.dumps(value)
