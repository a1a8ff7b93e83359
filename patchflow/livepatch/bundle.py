"""Live-patch bundles for SRE rollout: what one holds, who vouches for it, and its check.

A bundle is a ``.tar.gz`` with one folder ``<name>/`` holding:

* ``<name>.ko``, the live-patch module, signed with the kernel's own
  ``scripts/sign-file`` when a key is given (the kernel checks that signature
  at load time against its own keyring);
* ``install.sh``, ``rollback.sh`` and ``README.md`` (jinja2 templates in
  ``templates/livepatch/``; every value in the scripts is validated here and
  shell-quoted there);
* ``manifest.json`` (:class:`BundleManifest`): what the module is (name,
  vermagic, kernel release, vmlinux build-id, series, replaced functions,
  toolchain, verification) and every other member with its sha256, size and
  mode;
* ``manifest.json.sig``: a detached CMS signature over ``manifest.json``.

Why CMS with an X.509 certificate (``openssl cms -sign -binary -outform DER
-nosmimecap``): it is what SREs already verify for kernel code.  The kernel's
module signatures (``scripts/sign-file``, ``CONFIG_MODULE_SIG``) are
PKCS#7/CMS SignedData made with an X.509 key pair, so the key and certificate
that sign the module (or the CA that issued them) sign the bundle too: no
second key format next to the kernel's, no new keyring, no new tool.
``openssl cms -verify`` is on every host that has OpenSSL, and the trust root
is what such hosts already handle: a PEM certificate, or a folder of them.
(OpenPGP or minisign would add a key type the kernel does not use; sigstore
needs a network service.)

:func:`check_bundle` says what it verified against which trust root, and
refuses (FAIL, exit 1, every reason listed) a bundle whose archive is not
exactly what :func:`build_bundle` writes (:func:`read_archive`), whose
signature does not verify against the trust root, whose members differ from
the manifest, whose module's own ``.modinfo`` disagrees with the manifest, or
that was built for another kernel (``uname -r`` and the build-id in
``/sys/kernel/notes``, or ``--kernel-release`` with ``--build-id``).  Without
a trust root it refuses to run (exit 2) unless told ``insecure``, and then
lists what it did not verify.  Only a bundle that passed is extracted, from
the bytes that were checked (:func:`extract_members`): never unpack one with
``tar``, which reads an archive differently from any checker
(tests/integration/test_bundle_trust.py::
``test_archive_gnu_tar_reads_past_a_corrupt_header``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from patchflow import typed
from patchflow.config import check_name
from patchflow.errors import NotFound, UserError
from patchflow.livepatch.elf import ElfObject
from patchflow.result import Details, StageResult, Status, measure
from patchflow.runner import run

SIG_MAGIC = b"~Module signature appended~\n"
#: include/linux/module_signature.h: algo, hash, id_type, signer_len, key_id_len, pad[3], be32 sig_len
_MODSIG = struct.Struct(">BBBBB3sI")
PKEY_ID_PKCS7 = 2
SCHEMA = "patchflow.bundle/2"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
SCRIPTS = ("install.sh", "rollback.sh")

#: limits of the strict reader: a bundle is a module and a few small files
MAX_ARCHIVE = 64 * 2**20  # compressed
MAX_MEMBER = 32 * 2**20
MAX_TOTAL = 64 * 2**20  # uncompressed, all members
MAX_MEMBERS = 16
MAX_MANIFEST = 2**20
MODES = (0o644, 0o755)

# values that reach install.sh/rollback.sh or a path: validated as well as shell-quoted
MEMBER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")
RELEASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$")  # "6.12.117", "6.1.0-28-amd64"
BUILD_ID_RE = re.compile(r"^(?:[0-9a-f]{2}){8,64}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
FUNCTION_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")  # "cmdline_proc_show", "f.isra.0"
VERMAGIC_RE = re.compile(r"^[ -~]{1,200}$")  # "6.12.117 SMP preempt mod_unload "


class Refused(Exception):
    """The bundle is not acceptable; becomes a FAIL result inside this module."""


@dataclass(frozen=True)
class Member:
    """One file of the bundle as the manifest lists it."""

    path: str
    sha256: str
    size: int
    mode: str  # octal, "0644" or "0755"


@dataclass(frozen=True)
class BundleFunction:
    name: str
    file: str = ""
    sympos: int = 0


@dataclass(frozen=True)
class BundleInfo:
    """What the build recorded about the live patch; goes into the manifest as it is."""

    kernel_release: str
    build_id: str
    series: str = ""
    version: int | None = None
    message_id: str = ""
    patch_sha256: str = ""
    functions: tuple[BundleFunction, ...] = ()
    backend: str = ""
    toolchain: dict[str, str] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BundleManifest:
    """``manifest.json``: the signed statement of what the bundle holds and is for."""

    schema: str
    name: str
    module: str
    vermagic: str
    module_signed: bool
    transition_timeout: int
    info: BundleInfo
    members: tuple[Member, ...]

    def member(self, path: str) -> Member | None:
        return next((m for m in self.members if m.path == path), None)


@dataclass(frozen=True)
class Signer:
    """The key and X.509 certificate (PEM) that sign a bundle."""

    key: Path
    cert: Path


@dataclass(frozen=True)
class BundleCheckDetails(Details):
    """What ``patchflow livepatch check`` found: every problem, what was verified against what."""

    kind: ClassVar[str] = "livepatch-check"
    bundle: str
    name: str
    problems: tuple[str, ...]
    verified: tuple[str, ...]
    not_verified: tuple[str, ...]
    notes: tuple[str, ...]
    trust: str = ""  # the trust root the signature was checked against
    signer: str = ""  # subject of the certificate that signed the manifest
    extracted: str = ""  # where the verified members were written
    manifest: str = ""  # the bundle's manifest.json as it was read


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------
# the module and the kernel


def split_signature(ko: bytes) -> tuple[bytes, bytes | None]:
    """(module bytes without signature, PKCS#7 DER signature or None)."""
    if not ko.endswith(SIG_MAGIC):
        return ko, None
    end = len(ko) - len(SIG_MAGIC)
    if end < _MODSIG.size:
        raise UserError("module signature trailer is truncated")
    info = ko[end - _MODSIG.size:end]
    _algo, _hash, id_type, _sl, _kl, _pad, sig_len = _MODSIG.unpack(info)
    if id_type != PKEY_ID_PKCS7:
        raise UserError("module signature is not PKCS#7")
    start = end - _MODSIG.size - sig_len
    if start <= 0:
        raise UserError("module signature is longer than the module")
    return ko[:start], ko[start:end - _MODSIG.size]


def modinfo(ko: bytes) -> dict[str, str]:
    """key=value pairs of the module's ``.modinfo`` section."""
    body, _sig = split_signature(ko)
    obj = ElfObject.parse(body, "module")
    out: dict[str, str] = {}
    for sec in obj.sections:
        if sec.name == ".modinfo":
            for item in sec.data.split(b"\0"):
                if b"=" in item:
                    k, v = item.decode("utf-8", "replace").split("=", 1)
                    out.setdefault(k, v)
    return out


def _notes_build_id(data: bytes) -> str | None:
    """The GNU build-id in a run of ELF notes (``.notes`` of vmlinux, /sys/kernel/notes)."""
    off = 0
    while off + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, off)
        name = data[off + 12:off + 12 + namesz]
        doff = off + 12 + ((namesz + 3) & ~3)
        desc = data[doff:doff + descsz]
        if ntype == 3 and name.rstrip(b"\0") == b"GNU":
            return desc.hex()
        off = doff + ((descsz + 3) & ~3)
    return None


def vmlinux_build_id(vmlinux: Path) -> str | None:
    obj = ElfObject.read(vmlinux, allow_exec=True)
    for sec in obj.sections:
        if sec.type == 7 and (bid := _notes_build_id(sec.data)):  # SHT_NOTE
            return bid
    return None


def running_kernel(notes: Path = Path("/sys/kernel/notes")) -> tuple[str, str | None]:
    """(``uname -r``, build-id from /sys/kernel/notes) of this host."""
    try:
        bid = _notes_build_id(notes.read_bytes())
    except OSError:
        bid = None
    return os.uname().release, bid


# --------------------------------------------------------------------------
# the manifest


def _check(ok: bool, what: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{what} {value!r} is not valid")


def check_module_file_name(name: str) -> str:
    """A live-patch module name: the kernel's rules (C identifier, at most 55) and patchflow's."""
    check_name(name, "module")
    return name


def check_info(info: BundleInfo) -> BundleInfo:
    """Refuse (ValueError) values that would reach a script, a path or a ref unvalidated."""
    _check(bool(RELEASE_RE.match(info.kernel_release)), "kernel release", info.kernel_release)
    _check(bool(BUILD_ID_RE.match(info.build_id)), "build-id", info.build_id)
    if info.series:
        check_name(info.series, "series")
    if info.patch_sha256:
        _check(bool(SHA256_RE.match(info.patch_sha256)), "patch sha256", info.patch_sha256)
    for f in info.functions:
        _check(bool(FUNCTION_RE.match(f.name)), "function name", f.name)
    if info.backend:
        check_name(info.backend, "backend")
    return info


def check_manifest(m: BundleManifest) -> list[str]:
    """Every reason *m* cannot be the manifest of a bundle :func:`build_bundle` made."""
    problems: list[str] = []
    if m.schema != SCHEMA:
        problems.append(f"manifest.json: schema {m.schema!r}, expected {SCHEMA!r}")
    try:
        check_module_file_name(m.name)
        check_info(m.info)
    except ValueError as exc:
        problems.append(f"manifest.json: {exc}")
    if m.module != f"{m.name}.ko":
        problems.append(f"manifest.json: module {m.module!r} is not {m.name}.ko")
    if not VERMAGIC_RE.match(m.vermagic) or m.vermagic.split(" ")[0] != m.info.kernel_release:
        problems.append(f"manifest.json: vermagic {m.vermagic!r} is not for kernel "
                        f"{m.info.kernel_release}")
    if not 1 <= m.transition_timeout <= 3600:
        problems.append("manifest.json: transition_timeout is not 1 to 3600 seconds")
    seen: set[str] = set()
    for mem in m.members:
        if not MEMBER_RE.match(mem.path) or mem.path in (MANIFEST, SIGNATURE):
            problems.append(f"manifest.json: member name {mem.path!r} is not allowed")
        if mem.path in seen:
            problems.append(f"manifest.json: member {mem.path!r} is listed twice")
        seen.add(mem.path)
        if not SHA256_RE.match(mem.sha256) or not 0 <= mem.size <= MAX_MEMBER \
                or mem.mode not in (f"{x:04o}" for x in MODES):
            problems.append(f"manifest.json: member {mem.path!r} has a malformed entry")
    for need in (m.module, *SCRIPTS):
        if need not in seen:
            problems.append(f"manifest.json: does not list {need}")
    return problems


def parse_manifest(raw: bytes) -> BundleManifest:
    """The manifest from its bytes, strictly; :class:`Refused` naming the key at fault."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(f"manifest.json is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Refused("manifest.json is not a JSON object")
    try:
        return typed.load(BundleManifest, data)
    except typed.TypedError as exc:
        raise Refused(f"manifest.json: {exc}") from None


def manifest_bytes(m: BundleManifest) -> bytes:
    return (json.dumps(typed.dump(m), indent=2, sort_keys=True) + "\n").encode()


# --------------------------------------------------------------------------
# writing


def render(template: str, **ctx: Any) -> str:
    from patchflow.templates import render as _render

    return _render("livepatch", template, **ctx)


def sign_manifest(data: bytes, signer: Signer) -> bytes:
    """A detached CMS signature (DER) over *data* with *signer*'s key; the certificate is in it."""
    with tempfile.TemporaryDirectory(prefix="pf-sign-") as d:
        src, sig = Path(d) / MANIFEST, Path(d) / SIGNATURE
        src.write_bytes(data)
        run(["openssl", "cms", "-sign", "-binary", "-outform", "DER", "-nosmimecap",
             "-md", "sha256", "-in", str(src), "-signer", str(signer.cert),
             "-inkey", str(signer.key), "-out", str(sig)], timeout=60)
        return sig.read_bytes()


def tar_bytes(files: Mapping[str, tuple[bytes, int]]) -> bytes:
    """The gzipped ustar archive of *files* (``"top/member": (data, mode)``), reproducibly."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for fname, (content, mode) in files.items():
            ti = tarfile.TarInfo(fname)
            ti.size = len(content)
            ti.mode = mode
            ti.mtime = 0  # reproducible bundles
            ti.uname = ti.gname = ""
            tar.addfile(ti, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


def build_bundle(ko: Path, info: BundleInfo | Mapping[str, Any], out: Path, *,
                 signer: Signer | None = None, transition_timeout: int = 60) -> Path:
    """Write the bundle *out*: module, scripts, README, manifest and (with *signer*) signature.

    *info* (a :class:`BundleInfo` or its JSON form) is validated before any
    of it reaches a template; the module's own ``.modinfo`` gives the name
    and vermagic, which must be for ``info.kernel_release``.
    """
    try:
        if not isinstance(info, BundleInfo):
            info = typed.load(BundleInfo, info)
        check_info(info)
    except ValueError as exc:  # TypedError too
        raise UserError(f"bundle of {ko.name}: {exc}") from None
    data = ko.read_bytes()
    try:
        mi = modinfo(data)
    except (UserError, ValueError, struct.error, IndexError) as exc:
        raise UserError(f"{ko}: not a kernel module ({exc})") from None
    name = mi.get("name", "")
    try:
        check_module_file_name(name)
    except ValueError as exc:
        raise UserError(f"{ko}: {exc}") from None
    vermagic = mi.get("vermagic", "")
    if not VERMAGIC_RE.match(vermagic) or vermagic.split(" ")[0] != info.kernel_release:
        raise UserError(f"{ko}: vermagic {vermagic!r} is not for kernel {info.kernel_release}")
    if mi.get("livepatch") != "Y":
        raise UserError(f"{ko}: not a live-patch module (no livepatch=Y in .modinfo)")
    if not 1 <= transition_timeout <= 3600:
        raise UserError("the transition timeout is 1 to 3600 seconds")
    _body, sig = split_signature(data)
    ctx = {"name": name, "ko": f"{name}.ko", "release": info.kernel_release,
           "build_id": info.build_id, "series": info.series or "-",
           "functions": [f.name for f in info.functions], "timeout": transition_timeout,
           "backend": info.backend or "-", "vermagic": vermagic, "module_sha256": sha256(data)}
    files: dict[str, tuple[bytes, int]] = {
        f"{name}.ko": (data, 0o644),
        "install.sh": (render("install.sh.j2", **ctx).encode(), 0o755),
        "rollback.sh": (render("rollback.sh.j2", **ctx).encode(), 0o755),
        "README.md": (render("README.md.j2", **ctx).encode(), 0o644),
    }
    manifest = BundleManifest(
        schema=SCHEMA, name=name, module=f"{name}.ko", vermagic=vermagic,
        module_signed=sig is not None, transition_timeout=transition_timeout, info=info,
        members=tuple(Member(k, sha256(v), len(v), f"{mode:04o}")
                      for k, (v, mode) in sorted(files.items())))
    mbytes = manifest_bytes(manifest)
    members = {MANIFEST: (mbytes, 0o644)}
    if signer is not None:
        members[SIGNATURE] = (sign_manifest(mbytes, signer), 0o644)
    members.update(sorted(files.items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(tar_bytes({f"{name}/{k}": v for k, v in members.items()}))
    os.replace(tmp, out)
    return out


def read_build_record(build_json: Path) -> Any:
    """The :class:`~patchflow.livepatch.results.LivepatchBuildDetails` of a passed build."""
    from patchflow.livepatch.results import LivepatchBuildDetails

    try:
        res = StageResult.from_json(json.loads(build_json.read_text()), str(build_json))
    except (OSError, ValueError) as exc:
        raise UserError(f"{build_json}: not a live-patch build record ({exc})") from None
    d = res.detail(LivepatchBuildDetails)
    if d is None or res.status not in (Status.PASS, Status.WARN) or not d.module:
        raise UserError(f"{build_json}: the build did not pass ({res.summary})")
    return d


def bundle_from_build(build_json: Path, output: Path, *, cache: Path,
                      verify_json: Path | None = None, signer: Signer | None = None,
                      revision: int | None = None, message_id: str = "",
                      series_msgids: dict[int, str] | None = None,
                      transition_timeout: int = 60) -> Path:
    """A rollout bundle from what ``patchflow livepatch build`` recorded in *build_json*.

    The module is copied and, with a *signer*, signed through the kernel's own
    ``scripts/sign-file``; the same key signs the manifest.  The manifest gets
    the kernel's identity from the base vmlinux, the toolchain and the
    verification result.
    """
    from patchflow.livepatch.generate import BuiltTree, tool_versions

    d = read_build_record(build_json)
    tree = BuiltTree(Path(d.source), Path(d.build_dir), Path(d.vmlinux) if d.vmlinux else None)
    ko_src = Path(d.module)
    try:
        bid = vmlinux_build_id(tree.vmlinux)
    except OSError as exc:
        raise UserError(f"{tree.vmlinux}: cannot be read ({exc.strerror})") from None
    if not bid:
        raise UserError(f"{tree.vmlinux} has no GNU build-id: a bundle without one could not "
                        "be checked against the running kernel")
    vpath = verify_json or ko_src.with_suffix(".verify.json")
    try:
        verification = json.loads(vpath.read_text()) if vpath.is_file() else {"status": "not run"}
    except (OSError, ValueError) as exc:
        raise UserError(f"{vpath}: not a verification record ({exc})") from None
    if not isinstance(verification, dict):
        raise UserError(f"{vpath}: not a verification record (not a JSON object)")
    msgids = series_msgids or {}
    if revision is None and msgids:
        revision = max(msgids)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=output.parent.absolute()
                                  if output.parent.exists() else None))
    try:
        ko = stage / ko_src.name
        shutil.copy2(ko_src, ko)
        if signer is not None:
            tool = ensure_sign_file(tree.source, tree.build, cache / "tools")
            sign_module(ko, sign_file=tool, key=signer.key, cert=signer.cert)
        info = {
            "series": d.series, "version": revision,
            "message_id": message_id or (msgids.get(revision, "") if revision else ""),
            "patch_sha256": d.patch_sha256, "kernel_release": tree.release() or d.release,
            "build_id": bid,
            "functions": [{"name": f.name, "file": f.file, "sympos": f.sympos}
                          for f in d.functions],
            "backend": d.backend, "toolchain": tool_versions(tree),
            "verification": verification,
        }
        return build_bundle(ko, info, output, signer=signer,
                            transition_timeout=transition_timeout)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def sign_module(ko: Path, *, sign_file: Path, key: Path, cert: Path, log: Path | None = None) -> None:
    """Append a signature with the kernel's ``scripts/sign-file`` (in place)."""
    run([str(sign_file), "sha256", str(key), str(cert), str(ko)], timeout=120, log=log)


def ensure_sign_file(source: Path, build: Path, cache: Path) -> Path:
    """The tree's ``scripts/sign-file``: the built one, else compiled from its source."""
    built = build / "scripts" / "sign-file"
    if built.is_file():
        return built
    src = source / "scripts" / "sign-file.c"
    if not src.is_file():
        raise NotFound(f"{src} not found")
    out = cache / "sign-file"
    if not out.is_file() or out.stat().st_mtime < src.stat().st_mtime:
        cache.mkdir(parents=True, exist_ok=True)
        run(["gcc", "-O2", "-o", str(out), str(src), "-lcrypto"], timeout=120)
    return out


# --------------------------------------------------------------------------
# the strict archive reader

_TYPES = {b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device",
          b"4": "a block device", b"5": "a directory", b"6": "a FIFO",
          b"7": "a contiguous file", b"x": "a pax header", b"g": "a pax global header",
          b"L": "a GNU long name", b"K": "a GNU long link name", b"S": "a GNU sparse file"}


@dataclass(frozen=True)
class Archive:
    """The members of a bundle as :func:`read_archive` found them."""

    top: str
    members: dict[str, tuple[bytes, int]]  # member -> (data, mode)


def _gunzip(blob: bytes) -> bytes:
    """One gzip member, nothing after it, at most :data:`MAX_TOTAL` + headers when inflated."""
    if blob[:2] != b"\x1f\x8b":
        raise Refused("not a gzip file")
    limit = MAX_TOTAL + (MAX_MEMBERS + 2) * 1024 + 20 * 512
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        raw = d.decompress(blob, limit + 1)
    except zlib.error as exc:
        raise Refused(f"corrupt gzip stream: {exc}") from None
    if len(raw) > limit:
        raise Refused(f"the archive inflates to more than {limit} bytes")
    if not d.eof:
        raise Refused("the gzip stream is truncated")
    if d.unused_data:
        raise Refused(f"{len(d.unused_data)} bytes after the gzip stream (a second archive?)")
    return raw


def _octal(field_: bytes, what: str, offset: int) -> int:
    text = field_.rstrip(b"\0 ").lstrip(b" ")
    if not re.fullmatch(rb"[0-7]{1,12}", text):
        raise Refused(f"header at offset {offset}: malformed {what} field")
    return int(text, 8)


def read_archive(path: Path) -> Archive:
    """Read a bundle exactly as :func:`build_bundle` writes it, or refuse it.

    Only regular files in ustar headers with valid checksums, each
    ``TOP/MEMBER`` with one plain member name, no duplicates, nothing but
    zeros after the end-of-archive blocks, within the size limits.  The
    whole archive is read: ``tarfile`` stops quietly at a corrupt header,
    where GNU tar skips it and extracts what follows
    (tests/integration/test_bundle_trust.py::test_archive_gnu_tar_reads_past_a_corrupt_header).
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise NotFound(f"bundle {path} not found") from None
    if not path.is_file():
        raise UserError(f"bundle {path} is not a file")
    if size > MAX_ARCHIVE:
        raise Refused(f"the archive is {size} bytes, more than {MAX_ARCHIVE}")
    raw = _gunzip(path.read_bytes())
    members: dict[str, tuple[bytes, int]] = {}
    tops: set[str] = set()
    total = 0
    off = 0
    while True:
        block = raw[off:off + 512]
        if len(block) < 512:
            raise Refused("the archive ends without its end-of-archive blocks")
        if block == b"\0" * 512:
            if raw[off + 512:off + 1024] != b"\0" * 512:
                raise Refused(f"a single zero block at offset {off}, then more data")
            if raw[off:].strip(b"\0"):
                raise Refused(f"data after the end of the archive (offset {off}): "
                              "GNU tar would extract what follows")
            break
        stored = _octal(block[148:156], "checksum", off)
        if stored != sum(block[:148]) + 8 * 32 + sum(block[156:]):
            raise Refused(f"header at offset {off}: bad checksum (corrupt or forged header)")
        if block[257:265] != b"ustar\x0000":
            raise Refused(f"header at offset {off}: not a POSIX ustar header")
        kind = block[156:157]
        name_b = block[:100].split(b"\0", 1)[0]
        prefix = block[345:500].split(b"\0", 1)[0]
        shown = (prefix + b"/" + name_b if prefix else name_b).decode("utf-8", "replace")
        if kind not in (b"0", b"\0"):
            raise Refused(f"member {shown!r} is {_TYPES.get(kind, f'of type {kind!r}')}: "
                          "a bundle holds regular files only")
        if prefix or block[157:257].strip(b"\0"):
            raise Refused(f"member {shown!r}: unexpected prefix or link name")
        parts = shown.split("/")
        if shown.startswith("/") or ".." in parts:
            raise Refused(f"member {shown!r} leaves the bundle's folder")
        if len(parts) != 2 or not all(MEMBER_RE.match(p) for p in parts):
            raise Refused(f"member {shown!r} is not TOP/NAME with plain names")
        mode = _octal(block[100:108], "mode", off)
        msize = _octal(block[124:136], "size", off)
        if mode & ~0o777:
            raise Refused(f"member {shown!r} has mode {mode:o} (setuid, setgid or sticky)")
        if msize > MAX_MEMBER:
            raise Refused(f"member {shown!r} is {msize} bytes, more than {MAX_MEMBER}")
        total += msize
        if total > MAX_TOTAL:
            raise Refused(f"the members add up to more than {MAX_TOTAL} bytes")
        data = raw[off + 512:off + 512 + msize]
        if len(data) != msize:
            raise Refused(f"member {shown!r} is truncated")
        top, member = parts
        tops.add(top)
        if len(tops) > 1:
            raise Refused(f"more than one top folder: {', '.join(sorted(tops))}")
        if member in members:
            raise Refused(f"member {shown!r} appears twice")
        members[member] = (data, mode)
        if len(members) > MAX_MEMBERS:
            raise Refused(f"more than {MAX_MEMBERS} members")
        off += 512 + (msize + 511) // 512 * 512
    if not members:
        raise Refused("the archive is empty")
    return Archive(tops.pop(), members)


def extract_members(archive: Archive, dest: Path) -> Path:
    """Write the checked members to ``DEST/TOP/`` (a new folder, 0700), never following links."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest / archive.top
    try:
        os.mkdir(root, 0o700)
    except FileExistsError:
        raise UserError(f"{root} already exists: extract into a fresh folder") from None
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for member, (data, mode) in archive.members.items():
            fd = os.open(member, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                         dir_fd=dfd)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fchmod(fh.fileno(), mode & 0o755)
                os.fsync(fh.fileno())
    finally:
        os.close(dfd)
    return root


# --------------------------------------------------------------------------
# trust


@dataclass(frozen=True)
class TrustRoot:
    """The certificates a manifest signature must chain to (any of them is an anchor)."""

    origin: Path
    pem: bytes


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----\r?\n?",
                       re.S)


def load_trust(path: Path) -> TrustRoot:
    """A PEM certificate file, or every ``*.pem``/``*.crt`` in a folder; UserError if none."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".pem", ".crt") and p.is_file())
    elif path.is_file():
        files = [path]
    else:
        raise NotFound(f"trust root {path} not found")
    certs: list[bytes] = []
    for f in files:
        try:
            certs += _PEM_CERT.findall(f.read_bytes())
        except OSError as exc:
            raise UserError(f"trust root {f}: cannot be read ({exc.strerror})") from None
    if not certs:
        raise UserError(f"trust root {path} holds no PEM certificate")
    for c in certs:
        if not run(["openssl", "x509", "-noout"], input=c.decode("ascii", "replace"),
                   timeout=30, check=False).ok:
            raise UserError(f"trust root {path} holds a certificate openssl cannot read")
    return TrustRoot(path, b"".join(c if c.endswith(b"\n") else c + b"\n" for c in certs))


def verify_manifest(manifest: bytes, signature: bytes, trust: TrustRoot) -> tuple[bool, str]:
    """(ok, signer subject or the reason) for a CMS signature over *manifest*.

    ``-no-CApath -no-CAstore``: the system's CA store must not vouch for a
    bundle (tests/integration/test_bundle_trust.py::test_the_system_ca_store_does_not_vouch);
    ``-partial_chain``: each certificate the user named is an anchor;
    ``-purpose any``: kernel signing certificates carry codeSigning, which the
    default S/MIME purpose check rejects.
    """
    with tempfile.TemporaryDirectory(prefix="pf-verify-") as d:
        m, s, ca, who = (Path(d) / n for n in ("m", "s", "ca.pem", "signer.pem"))
        m.write_bytes(manifest)
        s.write_bytes(signature)
        ca.write_bytes(trust.pem)
        res = run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(s),
                   "-content", str(m), "-CAfile", str(ca), "-no-CApath", "-no-CAstore",
                   "-partial_chain", "-purpose", "any", "-signer", str(who),
                   "-out", os.devnull], timeout=60, check=False)
        if not res.ok:
            lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
            return False, (lines[0] if lines else f"openssl exited {res.returncode}")
        sub = run(["openssl", "x509", "-in", str(who), "-noout", "-subject", "-nameopt",
                   "RFC2253"], timeout=30, check=False)
        subject = sub.stdout.strip().removeprefix("subject=") if sub.ok else "(unknown)"
    return True, subject


def verify_module_signature(ko: bytes, trust: TrustRoot) -> tuple[bool, str]:
    """Whether the module's appended (sign-file) signature was made by a trust-root key."""
    body, sig = split_signature(ko)
    if sig is None:
        return False, "the module is not signed"
    with tempfile.TemporaryDirectory(prefix="pf-modsig-") as d:
        (Path(d) / "m").write_bytes(body)
        (Path(d) / "s").write_bytes(sig)
        (Path(d) / "c").write_bytes(trust.pem)
        # sign-file leaves the certificate out (-nocerts): it must be one of the trust root's
        res = run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", f"{d}/s",
                   "-content", f"{d}/m", "-certfile", f"{d}/c", "-nointern", "-noverify",
                   "-out", os.devnull], timeout=60, check=False)
    return res.ok, ("made by a trust-root key" if res.ok else
                    (res.stderr.strip().splitlines() or ["does not verify"])[0])


# --------------------------------------------------------------------------
# the check


def host_identity(kernel_release: str | None, build_id: str | None,
                  notes: Path = Path("/sys/kernel/notes")) -> tuple[str, str]:
    """The kernel to check against: both given, or this host's; never the release alone."""
    if (kernel_release is None) != (build_id is None):
        raise UserError("--kernel-release and --build-id go together: the build-id check is "
                        "never skipped")
    if kernel_release is not None and build_id is not None:
        if not RELEASE_RE.match(kernel_release):
            raise UserError(f"--kernel-release {kernel_release!r} is not a kernel release")
        if not BUILD_ID_RE.match(build_id.lower()):
            raise UserError(f"--build-id {build_id!r} is not a hex build-id")
        return kernel_release, build_id.lower()
    rel, bid = running_kernel(notes)
    if bid is None:
        raise UserError(f"cannot read this kernel's build-id from {notes}; give "
                        "--kernel-release and --build-id of the host the bundle is for")
    return rel, bid


def check_bundle(path: Path, *, trust: Path | None = None, insecure: bool = False,
                 kernel_release: str | None = None, build_id: str | None = None,
                 extract: Path | None = None) -> StageResult:
    """Verify *path* against the trust root and a kernel; refuse (FAIL) with every reason.

    PASS: everything verified; WARN: passed with *insecure*, the signature
    unverified (listed in ``not_verified``).  *extract*: after a pass, write
    the checked bytes to ``EXTRACT/<name>/``.
    """
    if trust is None and not insecure:
        raise UserError("no trust root: give --trust CERT|DIR or set [bundle] trust in the "
                        "workspace config.toml (--insecure checks without one and says what "
                        "it did not verify)")
    root = load_trust(trust) if trust is not None else None
    release, host_bid = host_identity(kernel_release, build_id)
    with measure() as sw:
        problems: list[str] = []
        verified: list[str] = []
        not_verified: list[str] = []
        notes: list[str] = []
        signer = ""
        archive: Archive | None = None
        manifest: BundleManifest | None = None
        raw_manifest = b""
        try:
            archive = read_archive(path)
            verified.append(f"the archive: {len(archive.members)} regular files in one folder "
                            f"{archive.top}/, nothing else")
            raw_manifest = archive.members.get(MANIFEST, (b"", 0))[0]
            if MANIFEST not in archive.members:
                raise Refused("manifest.json is missing")
            if len(raw_manifest) > MAX_MANIFEST:
                raise Refused("manifest.json is larger than 1 MiB")
            sig = archive.members.get(SIGNATURE)
            if root is None:
                not_verified.append("the signature over manifest.json: no trust root (--insecure);"
                                    " anyone could have written this bundle")
            elif sig is None:
                raise Refused("manifest.json.sig is missing: the bundle is not signed")
            else:
                ok, who = verify_manifest(raw_manifest, sig[0], root)
                if not ok:
                    raise Refused(f"the signature over manifest.json does not verify against "
                                  f"the trust root {root.origin}: {who}")
                signer = who
                verified.append(f"the signature over manifest.json: signed by {who}, which "
                                f"chains to the trust root {root.origin}")
            manifest = parse_manifest(raw_manifest)
            problems += check_manifest(manifest)
        except Refused as exc:
            problems.append(str(exc))
        if archive is not None and manifest is not None:
            problems += _check_members(archive, manifest, verified)
            problems += _check_module(archive, manifest, release, host_bid, verified,
                                      not_verified, notes, root)
        extracted = ""
        if not problems and archive is not None and extract is not None:
            extracted = str(extract_members(archive, extract))
    name = manifest.name if manifest is not None else (archive.top if archive else "")
    details = BundleCheckDetails(str(path), name, tuple(problems), tuple(verified),
                                 tuple(not_verified), tuple(notes),
                                 str(root.origin) if root else "", signer, extracted,
                                 raw_manifest.decode("utf-8", "replace"))
    if problems:
        return StageResult("livepatch-check", Status.FAIL,
                           f"refused {path.name}: " + "; ".join(problems), sw.elapsed,
                           details=details)
    summary = (f"{path.name}: {name} for kernel {release} (build-id {host_bid[:12]}...) verified"
               + (f" against {root.origin}" if root else ""))
    if not_verified:
        return StageResult("livepatch-check", Status.WARN,
                           summary + "; NOT verified: " + "; ".join(not_verified), sw.elapsed,
                           details=details)
    return StageResult("livepatch-check", Status.PASS, summary, sw.elapsed, details=details)


def _check_members(archive: Archive, m: BundleManifest, verified: list[str]) -> list[str]:
    problems: list[str] = []
    listed = {mem.path: mem for mem in m.members}
    for member in archive.members:
        if member not in listed and member not in (MANIFEST, SIGNATURE):
            problems.append(f"{member} is not listed in manifest.json")
    for mem in m.members:
        got = archive.members.get(mem.path)
        if got is None:
            problems.append(f"{mem.path} is listed in manifest.json but missing")
            continue
        data, mode = got
        if len(data) != mem.size or sha256(data) != mem.sha256:
            problems.append(f"{mem.path} does not match its manifest.json sha256 (tampered?)")
        if f"{mode:04o}" != mem.mode:
            problems.append(f"{mem.path} has mode {mode:04o}, manifest.json says {mem.mode}")
    if not problems:
        verified.append(f"every member's sha256, size and mode: {len(m.members)} listed in "
                        "manifest.json")
    return problems


def _check_module(archive: Archive, m: BundleManifest, release: str, host_bid: str,
                  verified: list[str], not_verified: list[str], notes: list[str],
                  root: TrustRoot | None) -> list[str]:
    problems: list[str] = []
    ko = archive.members.get(m.module, (b"", 0))[0]
    try:
        mi = modinfo(ko)
        signed = split_signature(ko)[1] is not None
    except (UserError, ValueError, struct.error, IndexError) as exc:
        return [f"{m.module} is not a valid kernel module ({exc})"]
    if signed != m.module_signed:
        problems.append(f"the module is {'' if signed else 'not '}signed, manifest.json says "
                        f"module_signed = {str(m.module_signed).lower()}")
    if mi.get("name") != m.name:
        problems.append(f"the module's .modinfo names {mi.get('name')!r}, manifest.json "
                        f"{m.name!r}")
    if mi.get("livepatch") != "Y":
        problems.append("the module is not a live patch (no livepatch=Y in .modinfo)")
    if mi.get("vermagic") != m.vermagic:
        problems.append(f"the module's vermagic {mi.get('vermagic')!r} differs from "
                        f"manifest.json's {m.vermagic!r}")
    mod_release = (mi.get("vermagic") or "").split(" ")[0]
    if mod_release != release:
        problems.append(f"the module's vermagic is for kernel {mod_release}, this kernel is "
                        f"{release}")
    if m.info.kernel_release != release:
        problems.append(f"built for kernel {m.info.kernel_release}, this kernel is {release}")
    if m.info.build_id != host_bid:
        problems.append(f"built for vmlinux build-id {m.info.build_id}, this kernel's is "
                        f"{host_bid}")
    if not problems:
        verified.append(f"the module's .modinfo (name {m.name}, livepatch=Y, vermagic "
                        f"{m.vermagic.strip()!r}) and this kernel: release {release}, "
                        f"build-id {host_bid}")
    if not m.module_signed:
        notes.append("the module is not signed: a kernel that enforces module signatures "
                     "will not load it")
    elif root is not None:
        try:
            ok, why = verify_module_signature(ko, root)
        except UserError as exc:
            ok, why = False, str(exc)
        notes.append(f"module signature: {why}" + ("" if ok else
                     " (the kernel checks it against its own keyring at load)"))
    else:
        not_verified.append("the module's own signature (no trust root)")
    return problems
