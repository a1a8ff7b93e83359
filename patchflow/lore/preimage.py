"""Pre-images rebuilt from the patches themselves, for a series whose base is not here.

``git am --3way`` and ``b4 shazam -H`` build a fake ancestor from the blob ids
on the patches' ``index`` lines, which works only when those blobs exist.
Where they do not, :func:`reconstruct` rebuilds each file's pre-image from
what the patches show of it: every context and removed line of every hunk,
at its line number, replayed patch after patch so that a later patch's
context may come from the base or from an earlier patch.  Lines no patch
shows are unknown and become filler that no hunk can match; the line just
above a hunk gets the hunk's function heading, so that git finds the same
``@@ ... @@ func()`` heading the patch had.  A patch whose context
contradicts what an earlier one left, a binary patch, or an end of file two
hunks disagree on makes the pre-image impossible: :class:`Unreconstructable`
names the patch and the file (tests/unit/test_preimage.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from patchflow.errors import SeriesError

#: a filler line: starts with a space, so no default funcname pattern picks it as a heading
FILLER = " ~ patchflow: line {n} is not shown by any patch"


class Unreconstructable(SeriesError):
    """The patches do not determine a pre-image the series applies to."""


@dataclass
class _File:
    """One file as the patches so far have made it: base slots (int) or added text (str)."""

    slots: list[int | str] = field(default_factory=list)
    next_base: int = 0
    open_end: bool = True
    exists_in_base: bool = True

    def get(self, k: int) -> int | str:
        while k >= len(self.slots) and self.open_end:
            self.slots.append(self.next_base)
            self.next_base += 1
        if k >= len(self.slots):
            raise IndexError(k)
        return self.slots[k]


@dataclass
class Preimage:
    """What the base must hold: per path, known lines by 0-based number, its length."""

    known: dict[str, dict[int, str]] = field(default_factory=dict)
    length: dict[str, int] = field(default_factory=dict)
    no_eol: set[str] = field(default_factory=set)
    headings: dict[str, dict[int, str]] = field(default_factory=dict)

    def text(self, path: str) -> str:
        known, heads = self.known.get(path, {}), self.headings.get(path, {})
        lines = [known.get(i, heads.get(i, FILLER.format(n=i + 1)))
                 for i in range(self.length.get(path, 0))]
        out = "".join(ln + "\n" for ln in lines)
        return out[:-1] if path in self.no_eol and out else out


def _strip(path: str) -> str:
    return path.split("/", 1)[1] if "/" in path else path


@dataclass
class _Builder:
    pre: Preimage = field(default_factory=Preimage)
    files: dict[str, _File] = field(default_factory=dict)
    #: current path -> the base path its content started from
    origin: dict[str, str] = field(default_factory=dict)
    #: base path -> the file that started from it (kept when a patch renames or deletes it)
    base: dict[str, _File] = field(default_factory=dict)

    def file(self, path: str) -> _File:
        if path not in self.files:
            if path in self.base:
                raise Unreconstructable(f"{path}: patched again after the series deleted or "
                                        "renamed it; the pre-image cannot be reconstructed")
            self.files[path] = self.base[path] = _File()
            self.origin[path] = path
        return self.files[path]

    def learn(self, path: str, slot: int | str, text: str, where: str) -> None:
        if isinstance(slot, str):
            if slot != text:
                raise Unreconstructable(f"{where}: its context does not match what the patches "
                                        "before it left; the pre-image cannot be reconstructed")
            return
        known = self.pre.known.setdefault(self.origin[path], {})
        if known.setdefault(slot, text) != text:
            raise Unreconstructable(f"{where}: two patches disagree on line {slot + 1} of the "
                                    "base; the pre-image cannot be reconstructed")


def _hunk(b: _Builder, path: str, f: _File, hunk: object, delta: int, where: str) -> int:
    """Replay one hunk on *f*; returns the new line-count delta of this file in this patch."""
    lines = list(hunk)  # type: ignore[call-overload]
    src_start = int(hunk.source_start)  # type: ignore[attr-defined]
    src_len = int(hunk.source_length)  # type: ignore[attr-defined]
    pos = (src_start if src_len == 0 else src_start - 1) + delta
    new: list[int | str] = []
    k = pos
    old_no_eol = False
    for i, ln in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else None
        eol_missing = nxt is not None and nxt.line_type == "\\"
        text = ln.value[:-1] if ln.value.endswith("\n") else ln.value
        if ln.line_type in (" ", "-"):
            try:
                slot = f.get(k)
            except IndexError:
                raise Unreconstructable(f"{where}: a hunk reaches past the end the file has "
                                        "there; the pre-image cannot be reconstructed") from None
            b.learn(path, slot, text, where)
            if ln.line_type == " ":
                new.append(slot)
            k += 1
            old_no_eol |= eol_missing
        elif ln.line_type == "+":
            new.append(text)
    trailing = 0
    for ln in reversed([x for x in lines if x.line_type != "\\"]):
        if ln.line_type != " ":
            break
        trailing += 1
    if trailing == 0 or old_no_eol:
        # git apply anchors a hunk without trailing context at the end of the file
        _end_at(f, k, where)
        if old_no_eol and isinstance(f.slots[k - 1], int):
            b.pre.no_eol.add(b.origin[path])
    heading = str(getattr(hunk, "section_header", "") or "")
    if heading and pos > 0:
        above = f.get(pos - 1)
        if isinstance(above, int):
            b.pre.headings.setdefault(b.origin[path], {}).setdefault(above, heading)
    f.slots[pos:k] = new
    return delta + len(new) - (k - pos)


def _end_at(f: _File, k: int, where: str) -> None:
    if f.open_end:
        while len(f.slots) < k:
            f.get(len(f.slots))
        f.open_end = False
    if len(f.slots) != k:
        raise Unreconstructable(f"{where}: hunks disagree on where the file ends; the "
                                "pre-image cannot be reconstructed")


def _file_diff(b: _Builder, pf: object, where: str) -> None:
    src, dst = _strip(pf.source_file), _strip(pf.target_file)  # type: ignore[attr-defined]
    if getattr(pf, "is_binary_file", False):
        raise Unreconstructable(f"{where}: binary patch of {dst}: its pre-image cannot be "
                                "reconstructed from the patch")
    at = f"{where} ({dst if src == '/dev/null' or not src else src})"
    if pf.is_added_file:  # type: ignore[attr-defined]
        f = _File(open_end=False, exists_in_base=False)
        b.files[dst], b.origin[dst] = f, dst
        b.pre.known.setdefault(dst, {})
    else:
        f = b.file(src)
    delta = 0
    for hunk in pf:  # type: ignore[attr-defined]
        delta = _hunk(b, src if not pf.is_added_file else dst, f, hunk,  # type: ignore[attr-defined]
                      delta, at)
    if pf.is_removed_file:  # type: ignore[attr-defined]
        del b.files[src]
    elif src != dst and not pf.is_added_file:  # type: ignore[attr-defined]
        b.files[dst] = b.files.pop(src)
        b.origin[dst] = b.origin.pop(src)


def reconstruct(patches: Sequence[tuple[str, str]]) -> Preimage:
    """The base pre-images for *patches*, ``[(where, diff), ...]`` in series order.

    Files a patch creates are not part of the base; the result's ``length``
    has every base file's line count (as far as the patches show it).
    """
    from unidiff.patch import PatchSet

    b = _Builder()
    for where, diff in patches:
        for pf in PatchSet(diff):
            _file_diff(b, pf, where)
    for path, f in b.base.items():
        known = b.pre.known.get(path, {})
        b.pre.length[path] = max([f.next_base, *[i + 1 for i in known]])
    return b.pre
