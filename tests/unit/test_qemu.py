"""Unit tests of patchflow.boot.qemu: argv, init template (golden file), cpio writer, verdicts."""

from __future__ import annotations

import gzip
import json
import stat
from pathlib import Path

import pytest

from patchflow.boot import initramfs, qemu
from patchflow.result import Status

ROOT = Path(__file__).resolve().parent.parent / "data"
CONSOLE = ROOT / "console"
GOLDEN = ROOT / "console" / "golden"


def test_qemu_argv_tcg() -> None:
    argv = qemu.qemu_argv(Path("/k/bzImage"), Path("/i.cpio.gz"), accel="tcg", mem_mb=1024, smp=2)
    assert argv == [
        "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg,thread=multi", "-m", "1024",
        "-smp", "2", "-nodefaults", "-no-user-config", "-nic", "none", "-display", "none",
        "-serial", "stdio", "-kernel", "/k/bzImage", "-initrd", "/i.cpio.gz", "-append",
        "console=ttyS0 panic=-1 quiet oops=panic softlockup_panic=1", "-no-reboot",
        "-sandbox", "on"]
    # no network for the code under test, and seccomp for QEMU itself where it has it
    assert "-sandbox" not in qemu.qemu_argv(Path("/k"), Path("/i"), sandbox=False)


def test_qemu_argv_kvm_has_no_cpu_host() -> None:
    argv = qemu.qemu_argv(Path("/k"), Path("/i"), accel="kvm")
    assert argv[argv.index("-accel") + 1] == "kvm"
    assert "-cpu" not in argv


def test_render_init_golden() -> None:
    text = initramfs.render_init([("probe", "pf_run uname uname -a")], modules=["/lib/modules/lp.ko"])
    assert text == (GOLDEN / "init-probe-module.sh").read_text()


def test_render_init_rejects_hostile_names() -> None:
    with pytest.raises(ValueError):
        initramfs.render_init([('x"; rm -rf /', "true")])


def test_parse_ldd() -> None:
    out = ("\tlinux-vdso.so.1 (0x00007ffd1d9f6000)\n"
           "\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f7db89c0000)\n"
           "\t/lib64/ld-linux-x86-64.so.2 (0x00007f7db9bf8000)\n")
    assert initramfs.parse_ldd(out) == ["/lib/x86_64-linux-gnu/libm.so.6", "/lib64/ld-linux-x86-64.so.2"]


def _read_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """A minimal newc reader, independent of the writer, for the round trip."""
    out: dict[str, tuple[int, bytes, tuple[int, int]]] = {}
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        body_start = (name_start + namesize + 3) & ~3
        body = data[body_start:body_start + size]
        pos = (body_start + size + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body, (rmaj, rmin))


def test_cpio_round_trip_with_parents_and_nodes() -> None:
    entries = [initramfs.Entry("/usr/bin/tool", stat.S_IFREG | 0o755, b"abc"),
               initramfs.Entry("/bin/sh", stat.S_IFLNK | 0o777, target="busybox"),
               initramfs.Entry("/dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))]
    got = _read_newc(initramfs.write_cpio(entries))
    assert got["usr/bin/tool"][1] == b"abc"
    assert stat.S_ISDIR(got["usr"][0]) and stat.S_ISDIR(got["usr/bin"][0])
    assert got["bin/sh"][1] == b"busybox" and stat.S_ISLNK(got["bin/sh"][0])
    assert got["dev/console"][2] == (5, 1) and stat.S_ISCHR(got["dev/console"][0])
    # parents come before children (the kernel's unpacker needs them first)
    names = list(got)
    assert names.index("usr") < names.index("usr/bin") < names.index("usr/bin/tool")


def test_initramfs_is_cached_by_content(tmp_path: Path) -> None:
    ko = tmp_path / "lp.ko"
    ko.write_bytes(b"\x7fELF fake module")
    spec = initramfs.GuestSpec(snippets=(("x", "true"),), files=((ko, "/lib/modules/lp.ko"),),
                          modules=("/lib/modules/lp.ko",))
    a = initramfs.initramfs(tmp_path / "cache", spec)
    b = initramfs.initramfs(tmp_path / "cache", spec)
    assert a == b
    other = initramfs.initramfs(tmp_path / "cache", initramfs.GuestSpec(snippets=(("x", "false"),)))
    assert other != a
    files = _read_newc(gzip.decompress(a.read_bytes()))
    assert files["lib/modules/lp.ko"][1] == b"\x7fELF fake module"
    assert b"insmod /lib/modules/lp.ko" in files["init"][1]


def test_initramfs_compression_choices(tmp_path: Path) -> None:
    gz = initramfs.initramfs(tmp_path / "cache", initramfs.GuestSpec())
    raw = initramfs.initramfs(tmp_path / "cache", initramfs.GuestSpec(compression="none"))
    fast = initramfs.initramfs(tmp_path / "cache", initramfs.GuestSpec(compression="gzip-fast"))
    assert len({gz, raw, fast}) == 3 and raw.suffix == ".cpio"
    # the same archive either way: only how it is stored differs
    assert gzip.decompress(gz.read_bytes()) == raw.read_bytes() == gzip.decompress(
        fast.read_bytes())


def test_qemu_argv_cpu_model() -> None:
    argv = qemu.qemu_argv(Path("/k"), Path("/i"), cpu="max")
    assert argv[argv.index("-cpu") + 1] == "max"
    assert "-cpu" not in qemu.qemu_argv(Path("/k"), Path("/i"))


EXPECTED = json.loads((CONSOLE / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_judge_console_corpus(name: str) -> None:
    want = EXPECTED[name]
    res, _ = qemu.judge((CONSOLE / name).read_text(), timed_out=want.get("timed_out", False),
                        returncode=None if want.get("timed_out") else 0, timeout=25,
                        log=CONSOLE / name)
    assert res.status is Status(want["status"])
    d = res.detail(qemu.BootRunDetails)
    assert d is not None and d.outcome == want["kind"]
    if res.status is Status.FAIL and want["kinds"]:
        assert "line" in res.summary  # the excerpt is in the message


def test_judge_qemu_that_did_not_start() -> None:
    text = "$ qemu-system-x86_64 ...\nqemu-system-x86_64: -accel kvm: failed to initialize kvm\n"
    res, _ = qemu.judge(text, timed_out=False, returncode=1, timeout=10, log=Path("c.log"))
    d = res.detail(qemu.BootRunDetails)
    assert res.status is Status.ERROR and d is not None and d.outcome == "qemu"


def test_choose_accel_forced_and_without_kvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert qemu.choose_accel(tmp_path, Path("/k"), force="tcg").accel == "tcg"
    monkeypatch.setattr("os.access", lambda *_: False)
    choice = qemu.choose_accel(tmp_path, Path("/k"))
    assert choice.accel == "tcg" and "no usable /dev/kvm" in choice.reason
