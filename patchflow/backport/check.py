"""Whether patches apply, without touching a worktree, and what a 3-way merge needs.

Why classify ourselves: ``git am`` applies at an offset without a word,
``git am -3`` merges drifted context silently, and GNU patch fuzzes by
default.  So every patch is first checked with a strict ``git apply --check
--verbose`` (full context: offsets are reported, fuzz is impossible).
:func:`check_series` does that for a whole series on a scratch index (``patchflow
backport --check``); :func:`ensure_preimages` writes the blobs a 3-way merge of
the series needs, so whether it can merge never depends on what the cache holds.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from patchflow import gitrepo
from patchflow.backport.patches import (
    CHECKING_RE,
    DIFF_RE,
    FAILED_RE,
    OFFSET_RE,
    ConflictSpot,
    Outcome,
    PatchInput,
    PatchResult,
    hunks,
    target_spots,
)


@dataclass(frozen=True)
class Known:
    """What the target already contains: patch-ids and upstream shas mentioned."""

    patch_ids: dict[str, str]
    repo: Path
    rev_range: str

    def present(self, p: PatchInput) -> str:
        if p.patch_id and p.patch_id in self.patch_ids:
            return f"same patch-id as {self.patch_ids[p.patch_id][:12]}"
        if p.upstream:
            found = gitrepo.grep_log(self.repo, self.rev_range, p.upstream)
            if found:
                return f"upstream commit {p.upstream[:12]} already in {found[0][:12]}"
        return ""


def known_in(repo: Path, base: str, limit: int = 500) -> Known:
    return Known(gitrepo.commit_patch_ids(repo, base, limit), repo, base)


def offsets_of(stderr: str, p: PatchInput) -> list[str]:
    hs = hunks(p.diff)
    out = []
    for m in OFFSET_RE.finditer(stderr):
        n = int(m.group(1))
        # git counts hunks per file; find which file was being checked
        before = stderr[: m.start()]
        files = CHECKING_RE.findall(before)
        path = files[-1] if files else "?"
        fhunks = [h for h in hs if h.path == path]
        fn = fhunks[n - 1].function if 0 < n <= len(fhunks) else ""
        out.append(f"{path}:{m.group(2)} ({int(m.group(3)):+d} lines)"
                   + (f" {fn}()" if fn else ""))
    return out


# index 512a31d7ae9e..3c1f0e2b9d4a 100644
INDEX_RE = re.compile(r"^index ([0-9a-f]{7,40})\.\.[0-9a-f]{7,40}", re.M)


def preimages(diff: str) -> dict[str, str]:
    """path -> abbreviated pre-image blob id, from the patch's index lines."""
    out: dict[str, str] = {}
    for part in re.split(r"^(?=diff --git )", diff, flags=re.M):
        m, i = DIFF_RE.match(part.split("\n", 1)[0]), INDEX_RE.search(part)
        if m and i:
            out[m.group(1)] = i.group(1)
    return out


def failed_spots(stderr: str, p: PatchInput, read: Callable[[str], str | None]
                  ) -> list[ConflictSpot]:
    """Target-side spots of the hunks ``git apply --check`` named as failing.

    ``read(path)`` gives the target's version of a file (the worktree's HEAD,
    or the ``--check`` index), so the spot is the same for a real run and a
    check, with or without a 3-way merge.
    """
    hs = hunks(p.diff)
    failed = {(path, int(line)) for path, line in FAILED_RE.findall(stderr)}
    chosen = [h for h in hs if (h.path, h.old_start) in failed] or hs
    texts: dict[str, list[str]] = {}
    spots: list[ConflictSpot] = []
    for h in chosen:
        if h.path not in texts:
            text = read(h.path)
            texts[h.path] = text.splitlines() if text is not None else []
        lines = texts[h.path]
        spots += target_spots(lines, [h]) if lines else [
            ConflictSpot(h.path, h.old_start, h.function, side="patch")]
    return spots


def ensure_preimages(repo: Path, patches: Sequence[PatchInput]) -> dict[str, str]:
    """Write every pre-image blob a 3-way merge of *patches* needs; the files it cannot.

    ``git am -3`` builds its merge base from the blob ids on the patches'
    ``index`` lines, so whether a patch 3-way merges used to depend on what
    the shared repository happened to hold (the series' base imported by an
    earlier run, or an earlier application of the same series).  Here the
    first pre-image of each file must be in the repository (the series'
    base); the later ones are made by applying the series to those blobs in
    a scratch index, as ``git am --3way`` and ``b4 shazam -H`` build fake
    ancestors.  Returns ``{path: reason}`` for the files a 3-way merge cannot
    use, so the result says so instead of silently falling back.
    """
    missing: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="patchflow-pre-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        have: set[str] = set()
        for p in patches:
            blobs = preimages(p.diff)
            usable = True
            for path, blob in blobs.items():
                if path in have or path in missing:
                    usable = usable and path not in missing
                    continue
                full = gitrepo.blob_sha(repo, blob)
                if full is None:
                    missing[path] = (f"pre-image blob {blob} of {path} (patch {p.idx}) is not in "
                                     "the repository: the series' base is not imported")
                    usable = False
                    continue
                gitrepo.index_add(repo, env, path, full)
                have.add(path)
            if usable and blobs and not gitrepo.git(
                    repo, "apply", "--cached", str(p.path), env=env, check=False).ok:
                for path in blobs:
                    missing.setdefault(path, f"patch {p.idx} does not apply to its own "
                                             f"pre-image of {path}")
    return missing


def check_series(repo: Path, base: str, patches: Sequence[PatchInput],
                 known: Known | None = None) -> list[PatchResult]:
    """Whether each patch applies on *base*, without any checkout.

    A temporary index (``read-tree``) is updated patch by patch with ``git
    apply --cached``, so patch N is checked on top of patches 1..N-1.
    """
    results: list[PatchResult] = []
    with tempfile.TemporaryDirectory(prefix="patchflow-check-") as tmp:
        index = Path(tmp) / "index"
        gitrepo.read_tree(repo, base, index)
        env = {"GIT_INDEX_FILE": str(index)}
        for p in patches:
            r = PatchResult(p.idx, p.subject, p.patch_id, Outcome.CLEAN, files=p.files)
            why = known.present(p) if known else ""
            strict = gitrepo.git(repo, *gitrepo.apply_check_argv(p.path, cached=True),
                                 env=env, check=False)
            if why:
                r.outcome, r.detail = Outcome.PRESENT, why
            elif strict.ok:
                r.offsets = offsets_of(strict.stderr + strict.stdout, p)
                r.outcome = Outcome.OFFSET if r.offsets else Outcome.CLEAN
                gitrepo.apply_cached(repo, p.path, index)
            elif gitrepo.git(repo, *gitrepo.apply_check_argv(p.path, cached=True, reverse=True),
                             env=env, check=False).ok:
                r.outcome, r.detail = Outcome.PRESENT, "content already in the tree"
            else:
                # located before the 3-way attempt, which leaves unmerged index entries
                r.spots = failed_spots(strict.stderr, p,
                                        lambda f: gitrepo.index_file(repo, index, f))
                merged = gitrepo.apply_cached(repo, p.path, index, three_way=True)
                if merged.ok:
                    r.outcome = Outcome.THREEWAY
                    results.append(r)
                    continue
                # a failed 3-way leaves unmerged entries: start from a clean index again
                gitrepo.read_tree(repo, _index_tree(repo, results, base, patches), index)
                fuzz = None if "with conflicts" in merged.stderr else fuzz_level(repo, p, env)
                if fuzz is not None:
                    r.outcome, r.detail = Outcome.FUZZ, f"applies only with -C{fuzz}"
                else:
                    r.outcome = Outcome.CONFLICT
            results.append(r)
    return results


def _index_tree(repo: Path, results: list[PatchResult], base: str,
                patches: Sequence[PatchInput]) -> str:
    # rebuild: base plus every patch so far that went into the index
    with tempfile.TemporaryDirectory(prefix="patchflow-check-") as tmp:
        index = Path(tmp) / "index"
        gitrepo.read_tree(repo, base, index)
        for r in results:
            if r.outcome in (Outcome.CLEAN, Outcome.OFFSET, Outcome.THREEWAY):
                gitrepo.apply_cached(repo, patches[r.idx - 1].path, index,
                                     three_way=r.outcome is Outcome.THREEWAY)
        return gitrepo.out(repo, "write-tree", env={"GIT_INDEX_FILE": str(index)})


def fuzz_level(where: Path, p: PatchInput, env: dict[str, str] | None) -> int | None:
    cached = env is not None
    for ctx in (2, 1):
        if gitrepo.git(where, *gitrepo.apply_check_argv(p.path, cached=cached, context=ctx),
                       env=env, check=False).ok:
            return ctx
    return None
