"""Strict loading of everything patchflow is configured with, in one place.

* ``series/<name>.toml`` -> :class:`SeriesConfig`
* ``targets/<name>.toml`` -> :class:`TargetConfig` (kconfig fragments inside the config dir)
* benchmark profiles (``patchflow/data/profiles/*.toml``, or ``targets/profiles/``
  in a config dir, which wins) -> :class:`Profile`
* the workspace's ``config.toml`` -> :class:`WorkspaceConfig`, with the
  documented environment overrides (:data:`ENV_OVERRIDES`) applied by
  :func:`with_env`: the only place patchflow reads ``PATCHFLOW_*`` knobs.

Each file is validated once through :mod:`patchflow.typed` into frozen
dataclasses.  Unknown keys, missing keys and wrong types raise
:class:`~patchflow.errors.ConfigError` naming the file and the dotted key.
Values that reach a command line (git remotes and branches, make targets,
fragment paths) are validated here too: they come from files a user may have
been handed (tests/unit/test_config.py::test_values_that_reach_argv).
Nothing downstream reads raw dicts.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from patchflow import typed
from patchflow.errors import ConfigError, NotFound, UserError

T = TypeVar("T")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
#: names that must also satisfy another tool: a kernel module name is a C identifier
#: of at most 55 characters (MODULE_NAME_LEN - 1, /sys/kernel/livepatch/<name>)
STRICTER_NAMES: dict[str, re.Pattern[str]] = {
    "module": re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,54}$"),
}
REVISION_RE = re.compile(r"^v([1-9][0-9]{0,2})$")
# A Message-ID as b4 and lore accept it, without the angle brackets.  Slashes,
# shell metacharacters and ".." are rejected so an id can never address a path
# outside the workspace (tests/unit/test_config.py::test_msgid_rejects_hostile).
MSGID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=~%-]*@[A-Za-z0-9][A-Za-z0-9.-]*$")
#: remotes git may fetch from: a URL of these schemes, scp-like user@host:path, an absolute path
REMOTE_SCHEMES = ("https://", "http://", "git://", "ssh://", "file://")
_SCP_RE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[A-Za-z0-9._/~-]+$")
# make targets that produce a base config: "tinyconfig", "defconfig", "x86_64_defconfig"
_BASE_CONFIG_RE = re.compile(r"^[a-z0-9_]*(?:config|defconfig)$")


def check_msgid(value: str) -> str:
    """Normalise a message-id (strip <>, lore URLs) and refuse hostile ones."""
    v = value.strip()
    m = re.match(r"^https?://[^/]+/(?:[^/]+/)?([^/]+?)/?(?:T/?|t\.mbox\.gz)?$", v)
    if m and "@" in m.group(1):
        v = m.group(1)
    v = v.removeprefix("id:").strip("<>")
    if not MSGID_RE.match(v) or ".." in v:
        raise ValueError(f"not a valid message-id: {value!r}")
    return v


def check_name(value: str, what: str) -> str:
    """The one validator for every name patchflow turns into a path or a ref.

    Series, targets, live-patch modules and profiles: letters, digits and
    ``. _ + -``, starting with a letter or digit, no ``..``; a kind listed in
    :data:`STRICTER_NAMES` (modules) must match its pattern too.
    """
    if not isinstance(value, str) or not NAME_RE.match(value) or ".." in value:
        raise ValueError(f"invalid {what} name {value!r} (letters, digits, . _ + - only)")
    stricter = STRICTER_NAMES.get(what)
    if stricter is not None and not stricter.match(value):
        raise ValueError(f"invalid {what} name {value!r} (a C identifier of at most 55 "
                         "characters)")
    return value


def user_name(value: str, what: str) -> str:
    """:func:`check_name` for names a user typed: a :class:`UserError` (exit 2)."""
    try:
        return check_name(value, what)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def check_ref_name(value: str) -> str:
    """A branch name as ``git check-ref-format --branch`` accepts it, never an option.

    The rules of git-check-ref-format(1), in Python so that config loading
    runs no git (tests/unit/test_config.py compares with git itself).
    """
    bad = (not value or value.startswith(("-", "/", ".")) or value.endswith(("/", ".", ".lock"))
           or ".." in value or "//" in value or "@{" in value or value == "@"
           or re.search(r"[\x00-\x20\x7f~^:?*\[\\]", value) is not None
           or any(part.startswith(".") or part.endswith(".lock") for part in value.split("/")))
    if bad:
        raise ValueError(f"not a valid branch name: {value!r}")
    return value


def check_remote(value: str) -> str:
    if value.startswith(REMOTE_SCHEMES) and not re.search(r"\s", value):
        return value
    if _SCP_RE.match(value) or (value.startswith("/") and not re.search(r"\s", value)):
        return value
    raise ValueError(f"not a git remote patchflow fetches from: {value!r} "
                     f"(a {', '.join(s[:-3] for s in REMOTE_SCHEMES)} URL, user@host:path, "
                     "or an absolute path)")


# --------------------------------------------------------------------------
# series


@dataclass(frozen=True)
class SeriesVersion:
    revision: int
    msgids: tuple[str, ...]  # every known posting; the newest is used


@dataclass(frozen=True)
class Claim:
    """A figure the series' authors published (a cover letter's benchmark).

    The report puts patchflow's own measurement of *metric* next to it, with
    what differs between the two set-ups (``[claim]`` in the series file).
    """

    metric: str
    before: float
    after: float
    #: how the authors measured it (workload, memcg, machine), as they wrote it
    setup: str
    cpus: int
    #: where it was published ("v2 cover letter")
    source: str = ""

    @property
    def change(self) -> float:
        return (self.after - self.before) / self.before


@dataclass(frozen=True)
class SeriesConfig:
    name: str
    title: str
    versions: tuple[SeriesVersion, ...]
    upstream_base: str
    targets: tuple[str, ...]
    path: Path
    author: str = ""
    list_address: str = ""
    #: folder (relative to series/) holding vN.mbox threads to publish into a local mirror
    threads: str | None = None
    notes: str = ""
    claim: Claim | None = None

    def version(self, revision: int) -> SeriesVersion:
        for v in self.versions:
            if v.revision == revision:
                return v
        raise NotFound(f"series {self.name!r} has no v{revision} in {self.path}")

    @property
    def latest(self) -> SeriesVersion | None:
        return max(self.versions, key=lambda v: v.revision, default=None)


@dataclass(frozen=True)
class _SeriesFile:
    title: str
    upstream_base: str
    targets: tuple[str, ...]
    versions: dict[str, tuple[str, ...] | str]
    author: str = ""
    list_address: str = ""
    threads: str | None = None
    notes: str = ""
    claim: Claim | None = None


def load_series(path: Path) -> SeriesConfig:
    raw = _load(_SeriesFile, _read_toml(path), path)
    name = _checked(path, None, path.stem, lambda v: check_name(v, "series"))
    for i, t in enumerate(raw.targets):
        _checked(path, f"targets[{i}]", t, lambda v: check_name(v, "target"))
    versions: list[SeriesVersion] = []
    for key, value in raw.versions.items():
        m = REVISION_RE.match(key)
        if not m:
            raise ConfigError(path, f"versions.{key}", "version keys are v1, v2, ...")
        ids = (value,) if isinstance(value, str) else value
        if not ids:
            raise ConfigError(path, f"versions.{key}", "needs at least one message-id")
        checked = tuple(_checked(path, f"versions.{key}[{i}]", mid, check_msgid)
                        for i, mid in enumerate(ids))
        versions.append(SeriesVersion(int(m.group(1)), checked))
    if raw.threads is not None and (".." in Path(raw.threads).parts
                                    or Path(raw.threads).is_absolute()):
        raise ConfigError(path, "threads", "must be a folder inside series/")
    if raw.claim is not None:
        _check_claim(path, raw.claim)
    return SeriesConfig(name=name, title=raw.title,
                        versions=tuple(sorted(versions, key=lambda v: v.revision)),
                        upstream_base=raw.upstream_base, targets=raw.targets, path=path,
                        author=raw.author, list_address=raw.list_address, threads=raw.threads,
                        notes=raw.notes, claim=raw.claim)


def _check_claim(path: Path, c: Claim) -> None:
    from patchflow.bench.metrics import METRICS

    if c.metric not in METRICS:
        raise ConfigError(path, "claim.metric",
                          f"unknown metric {c.metric!r} (known: {', '.join(METRICS)})")
    if not (c.before > 0 and c.after >= 0):
        raise ConfigError(path, "claim.before", "expected before > 0 and after >= 0")
    if not 1 <= c.cpus <= 8192:
        raise ConfigError(path, "claim.cpus", "expected 1 to 8192")


#: first line of a series file written by ``patchflow series track``: such a file is
#: rewritten whole when postings are added; a hand-written one only gets lines appended
SERIES_WRITTEN_BY = "# Written by `patchflow series track`; `series fetch NAME --check-newer` adds to it."


def render_series(cfg: SeriesConfig) -> str:
    """The TOML text of *cfg* (strings through ``json.dumps``: a valid TOML basic string)."""
    import json

    def q(v: str) -> str:
        return json.dumps(v)

    lines = [SERIES_WRITTEN_BY, f"title = {q(cfg.title)}", f"author = {q(cfg.author)}",
             f"list_address = {q(cfg.list_address)}", f"upstream_base = {q(cfg.upstream_base)}",
             f"targets = [{', '.join(q(t) for t in cfg.targets)}]", "", "[versions]"]
    for v in cfg.versions:
        lines.append(f"v{v.revision} = [{', '.join(q(m) for m in v.msgids)}]")
    if (c := cfg.claim) is not None:
        lines += ["", "[claim]", f"metric = {q(c.metric)}", f"before = {c.before!r}",
                  f"after = {c.after!r}", f"setup = {q(c.setup)}", f"cpus = {c.cpus}",
                  f"source = {q(c.source)}"]
    return "\n".join(lines) + "\n"


def write_series(path: Path, text: str) -> SeriesConfig:
    """Validate *text* with :func:`load_series`, then put exactly those bytes at *path*.

    The text is written to a file of the same name in a private folder next to
    *path*, loaded from there, and moved into place with ``os.replace``: a
    reader sees the old file or the new, valid one, never half of either
    (tests/unit/test_series_track.py::test_write_series_refuses_invalid).
    """
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".track-") as tmpd:
        tmp = Path(tmpd) / path.name
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())  # on disk before it replaces the old file
        try:
            cfg = load_series(tmp)
        except ConfigError as exc:
            raise ConfigError(path, exc.key, exc.message) from None
        os.replace(tmp, path)
    return dataclasses.replace(cfg, path=path)


# --------------------------------------------------------------------------
# targets


@dataclass(frozen=True)
class GitSource:
    remote: str
    branch: str


@dataclass(frozen=True)
class DebianSource:
    package: str
    releases: tuple[str, ...]  # Debian versions, oldest first: each becomes a commit + tag


@dataclass(frozen=True)
class DistroKernel:
    """A distribution's own kernel build, named as ``uname -r`` prints it.

    ``provider`` picks the module of :mod:`patchflow.distro` that finds its
    packages; ``version`` pins the package version (checked, never guessed
    from: the provider asks the distribution's registry when it is empty).
    """

    provider: str
    release: str
    version: str = ""


@dataclass(frozen=True)
class TargetConfig:
    name: str
    arch: str
    #: None for a distribution kernel (``[distro]``), which has no branch of its own
    git: GitSource | None
    path: Path
    kconfig: tuple[Path, ...]
    base_config: str = "tinyconfig"
    provider: str = "git"  # "git", "debian" or "distro"
    debian: DebianSource | None = None
    description: str = ""
    distro: DistroKernel | None = None

    @property
    def branch(self) -> str:
        """The target's branch in the shared repository (a distro kernel has none)."""
        if self.git is None:
            raise UserError(f"target {self.name} is a distribution kernel "
                            f"({self.distro.release if self.distro else '?'}): it has no "
                            "branch; its sources come with its packages")
        return self.git.branch


@dataclass(frozen=True)
class _TargetFile:
    arch: str
    git: GitSource | None = None
    kconfig: tuple[str, ...] = ()
    base_config: str = "tinyconfig"
    provider: str = "git"
    debian: DebianSource | None = None
    description: str = ""
    distro: DistroKernel | None = None


ARCHES = ("x86_64",)
PROVIDERS = ("git", "debian", "distro")
#: ``uname -r`` of a distribution kernel: ``6.1.0-53-cloud-amd64``, ``6.12.113+deb12-cloud-amd64``
RELEASE_RE = re.compile(r"^[0-9]+\.[0-9]+(?:\.[0-9]+)?[A-Za-z0-9.+_~-]{0,80}$")
#: a Debian package version: ``6.1.187-1``, ``6.12.113-1~deb12u1``
PKG_VERSION_RE = re.compile(r"^[0-9][A-Za-z0-9.+~:-]{0,80}$")


def _check_distro(path: Path, raw: _TargetFile) -> None:
    """A ``[distro]`` target: provider = "distro", a known provider, a valid release."""
    from patchflow.distro import PROVIDERS as DISTROS

    if raw.provider != "distro" or raw.distro is None:
        raise ConfigError(path, "distro" if raw.distro is None else "provider",
                          'provider = "distro" and a [distro] table go together')
    d = raw.distro
    if d.provider not in DISTROS:
        raise ConfigError(path, "distro.provider", f"unknown distribution {d.provider!r} "
                          f"(known: {', '.join(sorted(DISTROS))})")
    if not RELEASE_RE.match(d.release):
        raise ConfigError(path, "distro.release", f"not a kernel release as `uname -r` prints "
                          f"it: {d.release!r}")
    if d.version and not PKG_VERSION_RE.match(d.version):
        raise ConfigError(path, "distro.version", f"not a package version: {d.version!r}")
    for key in ("git", "debian"):
        if getattr(raw, key) is not None:
            raise ConfigError(path, key, "a distribution kernel's sources come with its "
                              "packages: remove this table")


def load_target(path: Path) -> TargetConfig:
    raw = _load(_TargetFile, _read_toml(path), path)
    if raw.provider == "distro" or raw.distro is not None:
        _check_distro(path, raw)
    elif raw.git is None:
        raise ConfigError(path, "git", "missing table (every target but a distribution "
                                       "kernel names its git remote and branch)")
    if raw.arch not in ARCHES:
        raise ConfigError(path, "arch", f"unsupported arch {raw.arch!r} (supported: {', '.join(ARCHES)})")
    if raw.provider not in PROVIDERS:
        raise ConfigError(path, "provider", f"must be one of {', '.join(PROVIDERS)}")
    if raw.provider == "debian" and raw.debian is None:
        raise ConfigError(path, "debian", "provider = \"debian\" needs a [debian] table")
    if raw.debian is not None and not raw.debian.releases:
        raise ConfigError(path, "debian.releases", "needs at least one release")
    if raw.debian is not None and not re.match(r"^linux-source-[0-9.]+$", raw.debian.package):
        raise ConfigError(path, "debian.package", f"not a linux-source package: "
                                                  f"{raw.debian.package!r}")
    if raw.git is not None:
        _checked(path, "git.remote", raw.git.remote, check_remote)
        _checked(path, "git.branch", raw.git.branch, check_ref_name)
    if not _BASE_CONFIG_RE.match(raw.base_config):
        raise ConfigError(path, "base_config", f"not a kernel config target: {raw.base_config!r} "
                                               "(e.g. tinyconfig, defconfig)")
    root = path.parent.resolve()
    frags: list[Path] = []
    for i, rel in enumerate(raw.kconfig):
        frag = (path.parent / rel).resolve()
        if Path(rel).is_absolute() or root not in frag.parents:
            raise ConfigError(path, f"kconfig[{i}]", f"fragment {rel!r} is outside {root}")
        if not frag.is_file():
            raise ConfigError(path, f"kconfig[{i}]", f"fragment not found: {frag}")
        frags.append(frag)
    name = _checked(path, None, path.stem, lambda v: check_name(v, "target"))
    return TargetConfig(
        name=name, arch=raw.arch, git=raw.git, path=path, kconfig=tuple(frags),
        base_config=raw.base_config, provider=raw.provider, debian=raw.debian,
        description=raw.description, distro=raw.distro,
    )


# --------------------------------------------------------------------------
# benchmark profiles


@dataclass(frozen=True)
class Profile:
    """A stress-ng workload's shape per guest vCPU, its limits and its verdict rules."""

    name: str
    description: str
    vcpus: int
    guest_mem_base_mb: int
    guest_mem_per_vcpu_mb: int
    vm_workers_per_vcpu: int
    vm_bytes_per_vcpu_mb: int
    memcg_max_per_vcpu_mb: int
    zram_per_vcpu_mb: int
    vm_method: str
    timeout_s: int
    boot_timeout_s: int
    require_memcg: bool
    require_zram: bool
    require_reclaim: bool
    reps: int
    alpha: float
    #: metrics whose significant regression fails the stage (exit 1)
    primary: tuple[str, ...]
    path: Path
    #: the memcg limit as a total (``--memory``); 0 = memcg_max_per_vcpu_mb per vCPU
    memcg_max_mb: int = 0

    def vm_bytes_mb(self, vcpus: int) -> int:
        # stress-ng splits --vm-bytes between the --vm workers: it is the total
        return self.vm_bytes_per_vcpu_mb * vcpus

    def workers(self, vcpus: int) -> int:
        return self.vm_workers_per_vcpu * vcpus

    def memcg_mb(self, vcpus: int) -> int:
        return self.memcg_max_mb or self.memcg_max_per_vcpu_mb * vcpus

    def zram_mb(self, vcpus: int) -> int:
        return self.zram_per_vcpu_mb * vcpus

    def mem_mb(self, vcpus: int) -> int:
        return self.guest_mem_base_mb + self.guest_mem_per_vcpu_mb * vcpus


_POSITIVE = ("vcpus", "guest_mem_base_mb", "guest_mem_per_vcpu_mb", "vm_workers_per_vcpu",
             "vm_bytes_per_vcpu_mb", "memcg_max_per_vcpu_mb", "zram_per_vcpu_mb", "timeout_s",
             "boot_timeout_s", "reps")
# stress-ng --vm-method names are plain words ("write64", "flip", "all")
_METHOD_RE = re.compile(r"^[a-z0-9-]+$")
#: the packaged profiles
PROFILE_DIR = Path(__file__).resolve().parent / "data" / "profiles"


def load_profile(path: Path) -> Profile:
    """Read one profile strictly: unknown or missing keys name the file and the key."""
    from patchflow.bench.metrics import METRICS

    p = _load(Profile, _read_toml(path), path, extra={"name": path.stem, "path": path})
    for key in _POSITIVE:
        if getattr(p, key) <= 0:
            raise ConfigError(path, key, "expected a positive integer")
    if not _METHOD_RE.match(p.vm_method):
        raise ConfigError(path, "vm_method", "not a stress-ng vm method name")
    if not 0 < p.alpha < 1:
        raise ConfigError(path, "alpha", "expected a number between 0 and 1")
    if p.memcg_max_mb < 0:
        raise ConfigError(path, "memcg_max_mb", "expected 0 (per vCPU) or a size in MiB")
    for i, m in enumerate(p.primary):
        if m not in METRICS or METRICS[m].better == "none":
            raise ConfigError(path, f"primary[{i}]", f"not a judged metric: {m!r} (judged: "
                              + ", ".join(k for k, v in METRICS.items() if v.better != "none")
                              + ")")
    return p


# --------------------------------------------------------------------------
# the workspace config and runtime knobs


@dataclass(frozen=True)
class LoreConfig:
    #: a b4 midmask such as http://127.0.0.1:8080/linux-mm/%s; "" means lore itself
    midmask: str = ""
    timeout: int = 60
    #: the public form of the list archive, for ``Link:`` trailers in backports: a
    #: loopback or private midmask must never end up in a commit message
    link: str = "https://lore.kernel.org/r/%s"


@dataclass(frozen=True)
class BenchConfig:
    """The gate's benchmark and boot knobs."""

    profile: str = "reclaim"
    #: boots per variant; 0 = the profile's
    reps: int = 0
    boot_profile: str = "smoke"
    #: guest vCPUs; 0 = the profile's
    vcpus: int = 0
    #: "auto" (KVM only if a probe boot proves it works), "kvm" or "tcg"
    accel: str = "auto"
    #: minutes of bench time after which the sequential bench stops (undecided
    #: metrics are "inconclusive"); 0 = no budget, the profile's reps are the limit
    budget: int = 0
    #: the workload memcg's limit in MiB (``--memory``); 0 = the profile's per-vCPU size
    memory_mb: int = 0


@dataclass(frozen=True)
class LivepatchConfig:
    #: seconds of stress-ng with the live patch loaded during verification
    stress_seconds: int = 20
    #: seconds a transition may take before it counts as stalled
    transition_timeout: int = 60


@dataclass(frozen=True)
class BundleConfig:
    #: trust root of ``patchflow livepatch check``: an absolute path to a PEM
    #: certificate or a folder of them; "" = none (check then needs --trust or --insecure)
    trust: str = ""


@dataclass(frozen=True)
class WorkspaceConfig:
    lore: LoreConfig = field(default_factory=LoreConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    livepatch: LivepatchConfig = field(default_factory=LivepatchConfig)
    bundle: BundleConfig = field(default_factory=BundleConfig)


#: documented environment overrides: variable -> (section, key); see README "Configuration"
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "PATCHFLOW_MIRROR": ("lore", "midmask"),
    "PATCHFLOW_BENCH_PROFILE": ("bench", "profile"),
    "PATCHFLOW_BENCH_REPS": ("bench", "reps"),
    "PATCHFLOW_BENCH_VCPUS": ("bench", "vcpus"),
    "PATCHFLOW_BENCH_BUDGET": ("bench", "budget"),
    "PATCHFLOW_BOOT_PROFILE": ("bench", "boot_profile"),
    "PATCHFLOW_ACCEL": ("bench", "accel"),
    "PATCHFLOW_LIVEPATCH_STRESS": ("livepatch", "stress_seconds"),
}


def check_workspace_config(cfg: WorkspaceConfig, where: Path | str) -> WorkspaceConfig:
    def bad(key: str, msg: str) -> ConfigError:
        return ConfigError(where, key, msg)

    if cfg.lore.midmask and ("%s" not in cfg.lore.midmask
                             or not cfg.lore.midmask.startswith(("http://", "https://"))):
        raise bad("lore.midmask", "expected an http(s) URL mask containing %s")
    if "%s" not in cfg.lore.link or not cfg.lore.link.startswith("https://"):
        raise bad("lore.link", "expected an https URL mask containing %s")
    if cfg.lore.timeout <= 0:
        raise bad("lore.timeout", "expected a positive integer")
    for key in ("reps", "vcpus"):
        if not 0 <= getattr(cfg.bench, key) <= 512:
            raise bad(f"bench.{key}", "expected an integer from 0 (the profile's) to 512")
    for key in ("profile", "boot_profile"):
        try:
            check_name(getattr(cfg.bench, key), "profile")
        except ValueError as exc:
            raise bad(f"bench.{key}", str(exc)) from None
    if cfg.bench.accel not in ("auto", "kvm", "tcg"):
        raise bad("bench.accel", "expected auto, kvm or tcg")
    if not 0 <= cfg.bench.budget <= 24 * 60:
        raise bad("bench.budget", "expected 0 (none) to 1440 minutes")
    if not 0 <= cfg.bench.memory_mb <= 1 << 20:
        raise bad("bench.memory_mb", "expected 0 (the profile's) to 1048576 MiB")
    if not 0 <= cfg.livepatch.stress_seconds <= 3600:
        raise bad("livepatch.stress_seconds", "expected 0 to 3600 seconds")
    if not 1 <= cfg.livepatch.transition_timeout <= 3600:
        raise bad("livepatch.transition_timeout", "expected 1 to 3600 seconds")
    if cfg.bundle.trust and not Path(cfg.bundle.trust).is_absolute():
        raise bad("bundle.trust", "expected an absolute path to a PEM certificate or a folder "
                                  "of them")
    return cfg


def load_workspace_config(path: Path) -> WorkspaceConfig:
    if not path.exists():
        return WorkspaceConfig()
    return check_workspace_config(_load(WorkspaceConfig, _read_toml(path), path), path)


def with_env(cfg: WorkspaceConfig, environ: Mapping[str, str] | None = None) -> WorkspaceConfig:
    """*cfg* with the :data:`ENV_OVERRIDES` found in *environ* applied and validated."""
    env = os.environ if environ is None else environ
    for var, (section, key) in ENV_OVERRIDES.items():
        if var not in env:
            continue
        raw = env[var]
        part = getattr(cfg, section)
        want = type(getattr(part, key))
        if want is int:
            if not re.fullmatch(r"[0-9]{1,6}", raw.strip()):
                raise ConfigError(f"${var}", None, f"expected a whole number, got {raw!r}")
            value: Any = int(raw)
        else:
            value = raw
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(part, **{key: value})})
        try:
            check_workspace_config(cfg, f"${var}")
        except ConfigError as exc:
            raise ConfigError(f"${var}", None, exc.message) from None
    return cfg


# --------------------------------------------------------------------------
# reading files


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise NotFound(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(path, None, "is a directory, not a TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(path, None, f"cannot be read: {exc.strerror}") from None


def _load(cls: type[T], data: Mapping[str, Any], path: Path,
          extra: Mapping[str, Any] | None = None) -> T:
    try:
        return typed.load(cls, data, extra=extra)
    except typed.TypedError as exc:
        raise ConfigError(path, exc.key or None, exc.message) from None


def _checked(path: Path, key: str | None, value: str, check: Any) -> str:
    try:
        return str(check(value))
    except ValueError as exc:
        raise ConfigError(path, key, str(exc)) from None


# --------------------------------------------------------------------------
# finding config


class ConfigDir:
    """The folder holding ``series/`` and ``targets/`` (a patchflow checkout)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def series_dir(self) -> Path:
        return self.root / "series"

    @property
    def targets_dir(self) -> Path:
        return self.root / "targets"

    def series_names(self) -> list[str]:
        return sorted(p.stem for p in self.series_dir.glob("*.toml"))

    def target_names(self) -> list[str]:
        return sorted(p.stem for p in self.targets_dir.glob("*.toml"))

    def _file(self, what: str, name: str, folder: Path, known: list[str]) -> Path:
        try:
            check_name(name, what)
        except ValueError as exc:
            raise NotFound(str(exc)) from None
        path = folder / f"{name}.toml"
        if not path.exists():
            raise NotFound(f"unknown {what} {name!r}: no {path} (known: "
                           f"{', '.join(known) or 'none'})")
        return path

    def series(self, name: str) -> SeriesConfig:
        return load_series(self._file("series", name, self.series_dir, self.series_names()))

    def target(self, name: str) -> TargetConfig:
        return load_target(self._file("target", name, self.targets_dir, self.target_names()))

    def all_targets(self) -> list[TargetConfig]:
        return [self.target(n) for n in self.target_names()]

    def all_series(self) -> list[SeriesConfig]:
        return [self.series(n) for n in self.series_names()]

    def profile_dirs(self) -> list[Path]:
        return [self.targets_dir / "profiles", PROFILE_DIR]

    def profile(self, name: str) -> Profile:
        """``targets/profiles/NAME.toml`` in the config dir if present, else the packaged one."""
        try:
            check_name(name, "profile")
        except ValueError as exc:
            raise NotFound(str(exc)) from None
        for d in self.profile_dirs():
            if (d / f"{name}.toml").is_file():
                return load_profile(d / f"{name}.toml")
        known = sorted({p.stem for d in self.profile_dirs() if d.is_dir() for p in d.glob("*.toml")})
        raise NotFound(f"unknown benchmark profile {name!r} (known: {', '.join(known)})")
