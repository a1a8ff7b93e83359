"""Live-patch bundles for SRE rollout, and their check before install.

A bundle is a ``.tar.gz`` with one folder ``<name>/`` holding the module,
``manifest.json``, generated ``install.sh``/``rollback.sh`` and ``README.md``
(jinja2 templates in ``templates/livepatch/``) and ``SHA256SUMS`` over all
of them.  The module may carry a signature appended by the kernel's
``scripts/sign-file``.

:func:`check_bundle` refuses (FAIL) a bundle whose files do not match
``SHA256SUMS``, that has files ``SHA256SUMS`` does not list, whose signature
does not verify against the given certificate, or that was built for another
kernel release or build-id.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from patchflow.errors import NotFound, UserError
from patchflow.livepatch.elf import ElfError, ElfObject
from patchflow.result import Details, StageResult, Status, measure
from patchflow.runner import run

SIG_MAGIC = b"~Module signature appended~\n"
#: include/linux/module_signature.h: algo, hash, id_type, signer_len, key_id_len, pad[3], be32 sig_len
_MODSIG = struct.Struct(">BBBBB3sI")
PKEY_ID_PKCS7 = 2
FORMAT = 1


@dataclass(frozen=True)
class BundleCheckDetails(Details):
    """What ``patchflow livepatch check`` found: every problem, and what was verified."""

    kind: ClassVar[str] = "livepatch-check"
    bundle: str
    name: str
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    manifest: str  # the bundle's manifest.json as it was read


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_signature(ko: bytes) -> tuple[bytes, bytes | None]:
    """(module bytes without signature, PKCS#7 DER signature or None)."""
    if not ko.endswith(SIG_MAGIC):
        return ko, None
    end = len(ko) - len(SIG_MAGIC)
    info = ko[end - _MODSIG.size:end]
    _algo, _hash, id_type, _sl, _kl, _pad, sig_len = _MODSIG.unpack(info)
    if id_type != PKEY_ID_PKCS7:
        raise UserError("module signature is not PKCS#7")
    start = end - _MODSIG.size - sig_len
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


def running_kernel() -> tuple[str, str | None]:
    """(``uname -r``, build-id from /sys/kernel/notes) of this host."""
    notes = Path("/sys/kernel/notes")
    bid = _notes_build_id(notes.read_bytes()) if notes.is_file() else None
    return os.uname().release, bid


def render(template: str, **ctx: Any) -> str:
    from patchflow.templates import render as _render

    return _render("livepatch", template, **ctx)


def build_bundle(ko: Path, manifest: dict[str, Any], out: Path, *, transition_timeout: int = 60) -> Path:
    """Write the bundle tarball *out*; *manifest* gets the module's checksum and vermagic."""
    data = ko.read_bytes()
    info = modinfo(data)
    name = info.get("name") or ko.stem
    body, sig = split_signature(data)
    manifest = dict(manifest)
    manifest.update({
        "format": FORMAT,
        "module": ko.name,
        "name": name,
        "vermagic": info.get("vermagic", ""),
        "module_sha256": sha256(data),
        "signed": sig is not None,
    })
    ctx = {"name": name, "ko": ko.name, "release": manifest.get("kernel_release", ""),
           "build_id": manifest.get("build_id") or "", "series": manifest.get("series", ""),
           "functions": [f["name"] for f in manifest.get("functions", [])],
           "timeout": transition_timeout, "backend": manifest.get("backend", "")}
    files: dict[str, bytes] = {
        ko.name: data,
        "manifest.json": (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(),
        "install.sh": render("install.sh.j2", **ctx).encode(),
        "rollback.sh": render("rollback.sh.j2", **ctx).encode(),
        "README.md": render("README.md.j2", **ctx).encode(),
    }
    sums = "".join(f"{sha256(v)}  {k}\n" for k, v in sorted(files.items()))
    files["SHA256SUMS"] = sums.encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for fname, content in sorted(files.items()):
            ti = tarfile.TarInfo(f"{name}/{fname}")
            ti.size = len(content)
            ti.mode = 0o755 if fname.endswith(".sh") else 0o644
            ti.mtime = 0  # reproducible bundles
            tar.addfile(ti, io.BytesIO(content))
    os.replace(tmp, out)
    return out


def bundle_from_build(build_json: Path, output: Path, *, cache: Path,
                      verify_json: Path | None = None, sign_key: Path | None = None,
                      sign_cert: Path | None = None, revision: int | None = None,
                      message_id: str = "", series_msgids: dict[int, str] | None = None
                      ) -> Path:
    """A rollout bundle from what ``patchflow livepatch build`` recorded in *build_json*.

    The module is copied (and signed with *sign_key*/*sign_cert* through the
    kernel's own ``scripts/sign-file``), the manifest gets the kernel's
    identity from the base vmlinux, the toolchain and the verification result.
    """
    import shutil

    from patchflow.livepatch.generate import BuiltTree, tool_versions
    from patchflow.livepatch.results import LivepatchBuildDetails

    try:
        res = StageResult.from_json(json.loads(build_json.read_text()), str(build_json))
    except (OSError, ValueError) as exc:
        raise UserError(f"{build_json}: not a live-patch build record ({exc})") from None
    d = res.detail(LivepatchBuildDetails)
    if d is None or res.status not in (Status.PASS, Status.WARN) or not d.module:
        raise UserError(f"{build_json}: the build did not pass ({res.summary})")
    if bool(sign_key) != bool(sign_cert):
        raise UserError("--sign-key and --sign-cert go together")
    tree = BuiltTree(Path(d.source), Path(d.build_dir), Path(d.vmlinux) if d.vmlinux else None)
    ko_src = Path(d.module)
    stage = output.with_suffix(".staging")
    stage.mkdir(parents=True, exist_ok=True)
    try:
        ko = stage / ko_src.name
        shutil.copy2(ko_src, ko)
        if sign_key and sign_cert:
            tool = ensure_sign_file(tree.source, tree.build, cache / "tools")
            sign_module(ko, sign_file=tool, key=sign_key, cert=sign_cert)
        vpath = verify_json or ko_src.with_suffix(".verify.json")
        verification = json.loads(vpath.read_text()) if vpath.is_file() else {"status": "not run"}
        msgids = series_msgids or {}
        if revision is None and msgids:
            revision = max(msgids)
        manifest = {
            "series": d.series, "version": revision,
            "message_id": message_id or (msgids.get(revision, "") if revision else ""),
            "patch_sha256": d.patch_sha256, "kernel_release": tree.release() or d.release,
            "build_id": vmlinux_build_id(tree.vmlinux),
            "functions": [{"name": f.name, "file": f.file, "sympos": f.sympos}
                          for f in d.functions],
            "backend": d.backend, "toolchain": tool_versions(tree),
            "verification": verification,
        }
        return build_bundle(ko, manifest, output)
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


def _read_bundle(path: Path) -> tuple[str, dict[str, bytes]]:
    if not path.is_file():
        raise NotFound(f"bundle {path} not found")
    files: dict[str, bytes] = {}
    top: set[str] = set()
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar.getmembers():
                if not m.isfile():
                    continue
                parts = Path(m.name).parts
                if len(parts) != 2 or ".." in parts or m.name.startswith("/"):
                    raise UserError(f"{path}: unexpected member {m.name!r}")
                top.add(parts[0])
                f = tar.extractfile(m)
                assert f is not None
                files[parts[1]] = f.read()
    except tarfile.TarError as exc:
        raise UserError(f"{path}: not a readable bundle: {exc}") from exc
    if len(top) != 1:
        raise UserError(f"{path}: a bundle has exactly one top folder")
    return top.pop(), files


def verify_signature(ko: bytes, cert: Path) -> tuple[bool, str]:
    body, sig = split_signature(ko)
    if sig is None:
        return False, "the module is not signed"
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "m").write_bytes(body)
        (Path(d) / "s").write_bytes(sig)
        res = run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", f"{d}/s",
                   "-content", f"{d}/m", "-certfile", str(cert), "-nointern", "-noverify",
                   "-out", os.devnull], timeout=60, check=False)
    return res.ok, (res.stderr.strip().splitlines() or ["verified"])[-1]


def check_bundle(path: Path, *, kernel_release: str | None = None, build_id: str | None = None,
                 cert: Path | None = None) -> StageResult:
    """Refuse tampered bundles and bundles for another kernel (FAIL, with every reason)."""
    with measure() as sw:
        top, files = _read_bundle(path)
        problems: list[str] = []
        notes: list[str] = []
        sums = files.get("SHA256SUMS")
        if sums is None:
            problems.append("SHA256SUMS is missing")
            listed: dict[str, str] = {}
        else:
            listed = {}
            for line in sums.decode("utf-8", "replace").splitlines():
                # "<64 hex>  manifest.json"
                m = re.match(r"^([0-9a-f]{64})  (\S+)$", line)
                if not m:
                    problems.append(f"SHA256SUMS: malformed line {line!r}")
                    continue
                listed[m.group(2)] = m.group(1)
        for fname, digest in listed.items():
            if fname not in files:
                problems.append(f"{fname} is listed in SHA256SUMS but missing")
            elif sha256(files[fname]) != digest:
                problems.append(f"{fname} does not match its SHA256SUMS checksum (tampered?)")
        for fname in files:
            if fname != "SHA256SUMS" and fname not in listed:
                problems.append(f"{fname} is not listed in SHA256SUMS")
        try:
            manifest = json.loads(files.get("manifest.json", b"{}"))
        except json.JSONDecodeError:
            manifest = {}
            problems.append("manifest.json is not valid JSON")
        ko_name = manifest.get("module", "")
        ko = files.get(ko_name)
        if ko is None:
            problems.append(f"the module {ko_name or '(unnamed)'} is missing")
        elif manifest.get("module_sha256") != sha256(ko):
            problems.append("the module does not match manifest.json's module_sha256")
        if kernel_release is None and build_id is None:
            kernel_release, build_id = running_kernel()
        want_rel, want_bid = manifest.get("kernel_release"), manifest.get("build_id")
        if kernel_release is not None and want_rel != kernel_release:
            problems.append(f"built for kernel {want_rel}, this kernel is {kernel_release}")
        if build_id is not None and want_bid and want_bid != build_id:
            problems.append(f"built for vmlinux build-id {want_bid}, this kernel's is {build_id}")
        if ko is not None and manifest.get("vermagic"):
            try:
                if modinfo(ko).get("vermagic") != manifest.get("vermagic"):
                    problems.append("the module's vermagic differs from manifest.json")
            except (ElfError, struct.error, UserError):
                problems.append("the module is not a valid kernel module")
        if cert is not None and ko is not None:
            ok, msg = verify_signature(ko, cert)
            if ok:
                notes.append("signature verified")
            else:
                problems.append(f"signature check failed: {msg}")
        elif manifest.get("signed"):
            notes.append("signed, but no --cert given to verify the signature")
    details = BundleCheckDetails(str(path), top, tuple(problems), tuple(notes),
                                 json.dumps(manifest, sort_keys=True) if isinstance(
                                     manifest, dict) else "")
    if problems:
        return StageResult("livepatch-check", Status.FAIL,
                           f"refused {path.name}: " + "; ".join(problems), sw.elapsed,
                           details=details)
    return StageResult("livepatch-check", Status.PASS,
                       f"{path.name} is intact and matches kernel {kernel_release}"
                       + (f" ({'; '.join(notes)})" if notes else ""), sw.elapsed, details=details)
