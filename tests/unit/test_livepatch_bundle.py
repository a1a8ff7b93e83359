"""Bundles: contents, golden scripts, and ``check`` refusing tampered or foreign bundles."""

from __future__ import annotations

import io
import json
import shutil
import struct
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from patchflow.livepatch.bundle import (
    SIG_MAGIC,
    build_bundle,
    check_bundle,
    modinfo,
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


def manifest() -> dict[str, object]:
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
    info = struct.pack(">BBBBB3sI", 0, 0, 2, 0, 0, b"\0\0\0", len(raw))
    ko.write_bytes(ko.read_bytes() + raw + info + SIG_MAGIC)


def make_key(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    run(["openssl", "req", "-new", "-nodes", "-utf8", "-sha256", "-days", "1", "-batch", "-x509",
         "-subj", f"/CN={name}", "-newkey", "rsa:2048", "-outform", "PEM", "-out", str(cert),
         "-keyout", str(key)])
    return key, cert


def rewrite(bundle: Path, out: Path, change: dict[str, bytes]) -> Path:
    """Copy *bundle* replacing some member contents (a tampering attacker)."""
    with tarfile.open(bundle) as src, tarfile.open(out, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()  # type: ignore[union-attr]
            base = m.name.split("/", 1)[1]
            data = change.get(base, data)
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
        for base, data in change.items():
            if base not in [m.name.split("/", 1)[1] for m in src.getmembers()]:
                ti = tarfile.TarInfo(f"lp_test/{base}")
                ti.size = len(data)
                dst.addfile(ti, io.BytesIO(data))
    return out


def test_bundle_contents_and_golden_scripts(ko: Path, tmp_path: Path) -> None:
    out = build_bundle(ko, manifest(), tmp_path / "b.tar.gz")
    with tarfile.open(out) as tar:
        names = sorted(tar.getnames())
        files = {n.split("/", 1)[1]: tar.extractfile(n).read() for n in names}  # type: ignore[union-attr]
    assert names == [f"lp_test/{n}" for n in
                     ("README.md", "SHA256SUMS", "install.sh", "lp_test.ko", "manifest.json",
                      "rollback.sh")]
    m = json.loads(files["manifest.json"])
    assert m["vermagic"] == "6.12.117 SMP mod_unload " and m["name"] == "lp_test"
    assert m["signed"] is False and m["kernel_release"] == RELEASE
    for name in ("install.sh", "rollback.sh", "README.md"):
        assert files[name].decode() == (DATA / "golden" / name).read_text(), name


def test_check_accepts_intact_bundle(ko: Path, tmp_path: Path) -> None:
    out = build_bundle(ko, manifest(), tmp_path / "b.tar.gz")
    res = check_bundle(out, kernel_release=RELEASE, build_id=BUILD_ID)
    assert res.status is Status.PASS, res.summary


@pytest.mark.parametrize("member", ["lp_test.ko", "install.sh", "manifest.json"])
def test_check_refuses_tampered_member(ko: Path, tmp_path: Path, member: str) -> None:
    out = build_bundle(ko, manifest(), tmp_path / "b.tar.gz")
    bad = rewrite(out, tmp_path / "bad.tar.gz", {member: b"evil\n"})
    res = check_bundle(bad, kernel_release=RELEASE, build_id=BUILD_ID)
    assert res.status is Status.FAIL
    assert f"{member} does not match its SHA256SUMS checksum" in res.summary


def test_check_refuses_extra_file_and_rewritten_sums(ko: Path, tmp_path: Path) -> None:
    out = build_bundle(ko, manifest(), tmp_path / "b.tar.gz")
    bad = rewrite(out, tmp_path / "bad.tar.gz", {"payload.sh": b"rm -rf /\n"})
    res = check_bundle(bad, kernel_release=RELEASE, build_id=BUILD_ID)
    assert res.status is Status.FAIL and "payload.sh is not listed" in res.summary


@pytest.mark.parametrize(("release", "build_id", "why"), [
    ("6.12.115", BUILD_ID, "built for kernel 6.12.117, this kernel is 6.12.115"),
    (RELEASE, "f" * 40, "built for vmlinux build-id"),
])
def test_check_refuses_other_kernel(ko: Path, tmp_path: Path, release: str, build_id: str,
                                    why: str) -> None:
    out = build_bundle(ko, manifest(), tmp_path / "b.tar.gz")
    res = check_bundle(out, kernel_release=release, build_id=build_id)
    assert res.status is Status.FAIL and why in res.summary


def test_signature_verified_and_forged_one_refused(ko: Path, tmp_path: Path) -> None:
    key, cert = make_key(tmp_path, "good")
    _key2, cert2 = make_key(tmp_path, "other")
    sign_like_sign_file(ko, key, cert)
    body, sig = split_signature(ko.read_bytes())
    assert sig is not None and modinfo(ko.read_bytes())["name"] == "lp_test"
    out = build_bundle(ko, manifest(), tmp_path / "b.tar.gz")
    ok = check_bundle(out, kernel_release=RELEASE, build_id=BUILD_ID, cert=cert)
    assert ok.status is Status.PASS and "signature verified" in ok.summary
    wrong = check_bundle(out, kernel_release=RELEASE, build_id=BUILD_ID, cert=cert2)
    assert wrong.status is Status.FAIL and "signature check failed" in wrong.summary


def test_cli_check_exit_codes(ko: Path, tmp_path: Path) -> None:
    from patchflow.cli import cli

    out = build_bundle(ko, manifest(), tmp_path / "b.tar.gz")
    runner = CliRunner()
    good = runner.invoke(cli, ["livepatch", "check", str(out), "--kernel-release", RELEASE,
                               "--build-id", BUILD_ID])
    assert good.exit_code == 0, good.output
    bad = runner.invoke(cli, ["livepatch", "check", str(out), "--kernel-release", "6.1.192",
                              "--build-id", BUILD_ID])
    assert bad.exit_code == 1 and "built for kernel 6.12.117" in bad.output


def test_cli_help_lists_subcommands() -> None:
    from patchflow.cli import cli

    res = CliRunner().invoke(cli, ["livepatch", "--help"])
    assert res.exit_code == 0
    for sub in ("analyze", "build", "bundle", "check", "verify"):
        assert sub in res.output
