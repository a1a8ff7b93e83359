"""Bundles: contents, golden scripts, the signed manifest, and ``check`` on a good bundle.

The attacks (tampering, hostile archives, another kernel, hostile template
values) are in tests/unit/test_attacks.py and, against a real module,
tests/integration/test_bundle_trust.py.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from patchflow.livepatch.bundle import (
    SIG_MAGIC,
    Signer,
    build_bundle,
    check_bundle,
    modinfo,
    read_archive,
    split_signature,
)
from patchflow.result import Status
from patchflow.runner import run

DATA = Path(__file__).parent.parent / "data" / "livepatch" / "bundle"
RELEASE = "6.12.117"
BUILD_ID = "0123456789abcdef0123456789abcdef01234567"
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("openssl") is None,
                                reason="needs gcc and openssl")


@pytest.fixture
def ko(tmp_path: Path) -> Path:
    out = tmp_path / "lp_test.ko"
    run(["gcc", "-c", str(DATA / "fake_module.c"), "-o", str(out)])
    return out


def info() -> dict[str, object]:
    return {"series": "demo", "version": 2, "message_id": "20250101.demo@example.com",
            "patch_sha256": "ab" * 32, "kernel_release": RELEASE, "build_id": BUILD_ID,
            "functions": [{"name": "cmdline_proc_show", "sympos": 0}], "backend": "native",
            "toolchain": {"compiler": "gcc (Debian 12.2.0-14) 12.2.0"}, "verification": {}}


def sign_like_sign_file(ko: Path, key: Path, cert: Path) -> None:
    """Append a PKCS#7 signature in sign-file's format (scripts/sign-file.c), via openssl."""
    sig = ko.with_suffix(".p7s")
    run(["openssl", "cms", "-sign", "-binary", "-noattr", "-nocerts", "-md", "sha256",
         "-outform", "DER", "-in", str(ko), "-signer", str(cert), "-inkey", str(key),
         "-out", str(sig)])
    raw = sig.read_bytes()
    trailer = struct.pack(">BBBBB3sI", 0, 0, 2, 0, 0, b"\0\0\0", len(raw))
    ko.write_bytes(ko.read_bytes() + raw + trailer + SIG_MAGIC)


def make_key(where: Path, name: str) -> Signer:
    key, cert = where / f"{name}.key", where / f"{name}.pem"
    run(["openssl", "req", "-new", "-nodes", "-utf8", "-sha256", "-days", "1", "-batch", "-x509",
         "-subj", f"/CN={name}", "-newkey", "rsa:2048", "-outform", "PEM", "-out", str(cert),
         "-keyout", str(key)])
    return Signer(key, cert)


def test_bundle_contents_and_golden_scripts(ko: Path, tmp_path: Path) -> None:
    out = build_bundle(ko, info(), tmp_path / "b.tar.gz")
    with tarfile.open(out) as tar:
        names = tar.getnames()
        files = {n.split("/", 1)[1]: tar.extractfile(n).read() for n in names}  # type: ignore[union-attr]
    assert names == [f"lp_test/{n}" for n in
                     ("manifest.json", "README.md", "install.sh", "lp_test.ko", "rollback.sh")]
    m = json.loads(files["manifest.json"])
    assert m["schema"] == "patchflow.bundle/2"
    assert m["vermagic"] == "6.12.117 SMP mod_unload " and m["name"] == "lp_test"
    assert m["module_signed"] is False and m["info"]["kernel_release"] == RELEASE
    assert [(x["path"], x["mode"], x["size"]) for x in m["members"]] == [
        (n, "0755" if n.endswith(".sh") else "0644", len(files[n]))
        for n in ("README.md", "install.sh", "lp_test.ko", "rollback.sh")]
    for name in ("install.sh", "rollback.sh", "README.md"):
        assert files[name].decode() == (DATA / "golden" / name).read_text(), name


def test_generated_scripts_are_valid_posix_sh(ko: Path, tmp_path: Path) -> None:
    out = build_bundle(ko, info(), tmp_path / "b.tar.gz")
    members = read_archive(out).members
    for script in ("install.sh", "rollback.sh"):
        (tmp_path / script).write_bytes(members[script][0])
        for sh in ("dash", "busybox"):
            if shutil.which(sh):
                argv = [sh, "sh", "-n"] if sh == "busybox" else [sh, "-n"]
                subprocess.run([*argv, str(tmp_path / script)], check=True)


def test_bundles_are_reproducible(ko: Path, tmp_path: Path) -> None:
    a = build_bundle(ko, info(), tmp_path / "a.tar.gz").read_bytes()
    assert build_bundle(ko, info(), tmp_path / "b.tar.gz").read_bytes() == a


def test_check_verifies_the_signature_against_the_trust_root(ko: Path, tmp_path: Path) -> None:
    good = make_key(tmp_path, "good")
    out = build_bundle(ko, info(), tmp_path / "b.tar.gz", signer=good)
    res = check_bundle(out, trust=good.cert, kernel_release=RELEASE, build_id=BUILD_ID)
    assert res.status is Status.PASS, res.summary
    d = res.details
    assert d is not None and d.signer == "CN=good" and d.trust == str(good.cert)  # type: ignore[attr-defined]
    verified = " | ".join(d.verified)  # type: ignore[attr-defined]
    assert "signed by CN=good, which chains to the trust root" in verified
    assert "every member's sha256, size and mode" in verified
    assert f"build-id {BUILD_ID}" in verified


def test_a_trust_root_folder_and_a_ca(ko: Path, tmp_path: Path) -> None:
    """The signer need not be in the trust root itself: a CA that issued it is enough."""
    ca = make_key(tmp_path, "ca")
    leaf_key, csr, leaf = tmp_path / "leaf.key", tmp_path / "leaf.csr", tmp_path / "leaf.pem"
    run(["openssl", "req", "-new", "-nodes", "-batch", "-subj", "/CN=leaf", "-newkey",
         "rsa:2048", "-keyout", str(leaf_key), "-out", str(csr)])
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
         "-CAcreateserial", "-days", "1", "-out", str(leaf)])
    out = build_bundle(ko, info(), tmp_path / "b.tar.gz", signer=Signer(leaf_key, leaf))
    roots = tmp_path / "roots"
    roots.mkdir()
    shutil.copy(ca.cert, roots / "ca.crt")
    res = check_bundle(out, trust=roots, kernel_release=RELEASE, build_id=BUILD_ID)
    assert res.status is Status.PASS, res.summary


def test_module_signature_is_reported(ko: Path, tmp_path: Path) -> None:
    good = make_key(tmp_path, "good")
    sign_like_sign_file(ko, good.key, good.cert)
    body, sig = split_signature(ko.read_bytes())
    assert sig is not None and modinfo(ko.read_bytes())["name"] == "lp_test"
    out = build_bundle(ko, info(), tmp_path / "b.tar.gz", signer=good)
    res = check_bundle(out, trust=good.cert, kernel_release=RELEASE, build_id=BUILD_ID)
    assert res.status is Status.PASS, res.summary
    assert "module signature: made by a trust-root key" in res.details.notes  # type: ignore[union-attr]


def test_extract_writes_what_was_checked(ko: Path, tmp_path: Path) -> None:
    good = make_key(tmp_path, "good")
    out = build_bundle(ko, info(), tmp_path / "b.tar.gz", signer=good)
    res = check_bundle(out, trust=good.cert, kernel_release=RELEASE, build_id=BUILD_ID,
                       extract=tmp_path / "x")
    assert res.status is Status.PASS
    root = tmp_path / "x" / "lp_test"
    assert sorted(p.name for p in root.iterdir()) == sorted(read_archive(out).members)
    assert (root / "install.sh").stat().st_mode & 0o777 == 0o755
    assert (root / "lp_test.ko").stat().st_mode & 0o777 == 0o644
    assert root.stat().st_mode & 0o777 == 0o700


def test_cli_bundle_help_and_check_exit_codes(ko: Path, tmp_path: Path) -> None:
    from patchflow.cli import cli

    runner = CliRunner()
    helptext = runner.invoke(cli, ["livepatch", "bundle", "--help"]).output
    assert "detached CMS signature over manifest.json" in helptext
    assert "scripts/sign-file" in helptext and "--sign-cert" in helptext
    good = make_key(tmp_path, "good")
    out = build_bundle(ko, info(), tmp_path / "b.tar.gz", signer=good)
    ok = runner.invoke(cli, ["livepatch", "check", str(out), "--trust", str(good.cert),
                             "--kernel-release", RELEASE, "--build-id", BUILD_ID])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(cli, ["livepatch", "check", str(out), "--trust", str(good.cert),
                              "--kernel-release", "6.1.192", "--build-id", BUILD_ID])
    assert bad.exit_code == 1 and "built for kernel 6.12.117" in bad.output


def test_cli_help_lists_subcommands() -> None:
    from patchflow.cli import cli

    res = CliRunner().invoke(cli, ["livepatch", "--help"])
    assert res.exit_code == 0
    for sub in ("analyze", "build", "bundle", "check", "verify"):
        assert sub in res.output
