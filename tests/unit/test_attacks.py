"""The bad-input and attack suite, fast half (issue 13).

One test per case: the attack runs against the real code path (the CLI as a
user runs it, or the library function the CLI calls) and the refusal or the
safe outcome is asserted.  Tampering a real signed bundle, the scripts in
QEMU and real signals to running commands are in
tests/integration/test_bundle_trust.py and tests/integration/test_signals.py.
The before/after table of every case is in the issue's closing note.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from patchflow.cli import cli
from patchflow.errors import UserError, WorkspaceError
from patchflow.result import StageResult, Status
from patchflow.runner import run

from ..attacklib import REPO_ROOT, one_line_error, patchflow

DATA = Path(__file__).resolve().parent.parent / "data"
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def _invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.output


# --------------------------------------------------------------------------
# templates: values reach install.sh/rollback.sh validated and quoted


@pytest.fixture
def fake_build(tmp_path: Path) -> dict[str, object]:
    """What `livepatch build` records, around a stand-in module and a vmlinux with a build-id."""
    ko = tmp_path / "lp_test.ko"
    run(["gcc", "-c", str(DATA / "livepatch" / "bundle" / "fake_module.c"), "-o", str(ko)])
    build = tmp_path / "build"
    (build / "include" / "config").mkdir(parents=True)
    (build / "include" / "config" / "kernel.release").write_text("6.12.117\n")
    src = tmp_path / "main.c"
    src.write_text("int main(void) { return 0; }\n")
    vmlinux = tmp_path / "vmlinux"
    run(["gcc", "-no-pie", "-Wl,--build-id=sha1", str(src), "-o", str(vmlinux)])
    details = {"kind": "livepatch-build", "backend": "native", "module": str(ko),
               "name": "lp_test", "series": "demo", "source": str(tmp_path),
               "build_dir": str(build), "vmlinux": str(vmlinux), "patch_sha256": "ab" * 32,
               "functions": [{"name": "cmdline_proc_show", "file": "fs/proc/cmdline.c",
                              "sympos": 0, "new_symbol": "cmdline_proc_show"}]}
    return {"stage": "livepatch-build", "status": "pass", "summary": "built",
            "details": details}


def _bundle_cli(tmp_path: Path, record: dict[str, object]) -> tuple[int, str]:
    bj = tmp_path / "build.json"
    bj.write_text(json.dumps(record))
    return _invoke("-w", str(tmp_path / "ws"), "livepatch", "bundle", str(bj), "-o",
                   str(tmp_path / "b.tar.gz"), "--unsigned")


@needs_gcc
def test_templates_series_name_with_a_newline(tmp_path: Path,
                                              fake_build: dict[str, object]) -> None:
    """Issue repro: a series name holding a newline made the generated install.sh run it."""
    marker = tmp_path / "PWNED"
    fake_build["details"]["series"] = f"demo\ntouch {marker} #"  # type: ignore[index]
    code, out = _bundle_cli(tmp_path, fake_build)
    assert code == 2 and "invalid series name" in out
    assert not (tmp_path / "b.tar.gz").exists() and not marker.exists()


@needs_gcc
@pytest.mark.parametrize(("key", "value", "why"), [
    ("functions", [{"name": "f$(id)", "file": "", "sympos": 0, "new_symbol": "f"}],
     "function name"),
    ("backend", "native;id", "invalid backend name"),
    ("patch_sha256", "$(id)", "patch sha256"),
])
def test_templates_hostile_build_record_values(tmp_path: Path, fake_build: dict[str, object],
                                               key: str, value: object, why: str) -> None:
    fake_build["details"][key] = value  # type: ignore[index]
    code, out = _bundle_cli(tmp_path, fake_build)
    assert code == 2 and why in out, out


@needs_gcc
@pytest.mark.parametrize(("field", "hostile"), [
    ("name", b"name=x;touch _X"),
    ("vermagic", b"vermagic=6.12.11'$(id)'"),
])
def test_templates_hostile_modinfo(tmp_path: Path, fake_build: dict[str, object], field: str,
                                   hostile: bytes) -> None:
    """The module's own .modinfo is data too: a hostile name or vermagic is refused."""
    ko = Path(str(fake_build["details"]["module"]))  # type: ignore[index]
    raw = ko.read_bytes()
    old = b"name=lp_test" if field == "name" else b"vermagic=6.12.117 SMP mod_unload "
    ko.write_bytes(raw.replace(old, hostile.ljust(len(old), b" ")[:len(old)]))
    code, out = _bundle_cli(tmp_path, fake_build)
    assert code == 2, out
    assert ("invalid module name" if field == "name" else "is not for kernel") in out


def test_templates_every_value_is_quoted(tmp_path: Path) -> None:
    """Defence in depth: values that skipped validation still cannot become commands."""
    from patchflow.templates import render

    marker = tmp_path / "PWNED"
    evil = f"x'\n$(touch {marker})\n`touch {marker}`;touch {marker}"
    ctx = {k: evil for k in ("name", "ko", "release", "build_id", "module_sha256", "vermagic",
                             "series", "backend")}
    ctx.update(functions=[evil], timeout=5)
    for script in ("install.sh.j2", "rollback.sh.j2"):
        path = tmp_path / script.removesuffix(".j2")
        path.write_text(render("livepatch", script, **ctx))
        subprocess.run(["sh", str(path)], capture_output=True, cwd=tmp_path, timeout=60,
                       env={"PATH": os.environ["PATH"]})
        subprocess.run(["sh", "-n", str(path)], check=True)
    assert not marker.exists()


# --------------------------------------------------------------------------
# guest to host: result names from the console become file names


def _console(*items: tuple[str, bytes]) -> str:
    import base64

    from patchflow.boot.console import BEGIN, END

    lines = [BEGIN] + [json.dumps({"name": n, "b64": base64.b64encode(b).decode()})
                       for n, b in items] + [END]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", ["../../evil", "/tmp/evil", "a/b", "..", ".hidden",
                                  "x\nname", "a" * 65])
def test_guest_hostile_result_names_never_become_paths(tmp_path: Path, name: str) -> None:
    """Issue repro: `(keep / fname).write_bytes` wrote ../ and absolute names on the host."""
    from patchflow.boot.console import scan
    from patchflow.livepatch.verify import keep_guest_files

    got = scan(_console((name, b"owned"), ("ok", b"fine")))
    assert name not in got.results and got.results["ok"] == b"fine" and got.corrupt_lines == 1
    keep = tmp_path / "keep"
    keep_guest_files({name: b"owned", "ok": b"fine"}, keep)  # even if a caller skipped scan
    owned = [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == b"owned"]
    assert all(p.parent == keep and "/" not in name for p in owned), owned
    assert (keep / "ok").read_bytes() == b"fine"
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()


def test_guest_console_log_is_capped(tmp_path: Path) -> None:
    """A guest printing in a loop must not fill the host's disk (runner.run(log_limit=))."""
    from patchflow.boot.qemu import CONSOLE_LIMIT

    log = tmp_path / "console.log"
    run(["sh", "-c", "yes 'A kernel under test prints this line again and again' "
         "| head -c 3000000"], log=log, log_limit=100_000, capture=False)
    size = log.stat().st_size
    assert 100_000 < size < 101_000, size
    assert "[patchflow: log truncated at 100000 bytes]" in log.read_text()
    assert CONSOLE_LIMIT <= 64 * 2**20


# --------------------------------------------------------------------------
# the report: mail subjects and authors are data


def _doc() -> object:
    from patchflow.gate import records

    return records.load_results([DATA / "report" / "demo-6.12" / "results.json"])[0][1]


@pytest.mark.parametrize("field", ["subject", "author", "title"])
def test_report_script_in_mail_fields_is_escaped(field: str) -> None:
    """Issue repro: autoescape was off for report.html.j2, subjects rendered raw (stored XSS)."""
    from patchflow.report.render import render_html
    from patchflow.report.view import build_view

    doc = _doc()
    payload = '</script><script>alert("x")</script><img src=x onerror=alert(1)>'
    evil = dataclasses.replace(doc, series=dataclasses.replace(  # type: ignore[type-var]
        doc.series, **{field: payload}))  # type: ignore[attr-defined]
    html = render_html(build_view(evil))  # type: ignore[arg-type]
    assert '<script>alert("x")' not in html and "<img src=x" not in html


def test_report_script_in_a_stage_summary_is_escaped() -> None:
    """Stage summaries carry guest console text (an oops line) into the report."""
    from patchflow.gate import records
    from patchflow.report.render import render_html
    from patchflow.report.view import build_view

    doc = _doc()
    evil = dataclasses.replace(doc, entries=(*doc.entries, records.Entry(  # type: ignore[attr-defined,type-var]
        StageResult("boot", Status.FAIL, "BUG: <script>bad()</script>", 1, "t"))))
    assert "<script>bad()" not in render_html(build_view(evil))  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# option injection from target TOML


def _config_dir(tmp_path: Path, target: str) -> Path:
    cfg = tmp_path / "cfg"
    (cfg / "targets").mkdir(parents=True)
    (cfg / "series").mkdir()
    (cfg / "targets" / "frag.config").write_text("CONFIG_LIVEPATCH=y\n")
    (cfg / "targets" / "evil.toml").write_text(target)
    return cfg


TARGET = """arch = "x86_64"
base_config = {base_config}
kconfig = {kconfig}
[git]
remote = {remote}
branch = {branch}
"""


@pytest.mark.parametrize(("key", "value", "why"), [
    ("remote", '"--upload-pack=touch {m};"', "not a git remote"),
    ("remote", '"ext::sh -c touch% {m}"', "not a git remote"),
    ("base_config", '"--eval=$(shell touch {m})"', "not a kernel config target"),
    ("branch", '"--force"', "not a valid branch name"),
    ("branch", '"x;touch {m}"', "not a valid branch name"),
    ("kconfig", '["/etc/passwd"]', "is outside"),
    ("kconfig", '["../../../etc/passwd"]', "is outside"),
])
def test_toml_option_injection(tmp_path: Path, key: str, value: str, why: str) -> None:
    """Issue repro: remote = "--upload-pack=touch X;" ran a command through git ls-remote."""
    marker = tmp_path / "PWNED"
    vals = {"remote": '"https://example.invalid/linux.git"', "branch": '"linux-6.12.y"',
            "base_config": '"tinyconfig"', "kconfig": '["frag.config"]'}
    vals[key] = value.format(m=marker)
    cfg = _config_dir(tmp_path, TARGET.format(**vals))
    proc = patchflow("-C", str(cfg), "-w", str(tmp_path / "ws"), "tree", "prepare", "evil")
    assert proc.returncode == 2
    line = one_line_error(proc.stderr, "evil.toml", why)
    assert (key if key != "kconfig" else "kconfig[0]") in line
    assert not marker.exists()


def test_toml_kconfig_symlink_out_of_the_config_dir(tmp_path: Path) -> None:
    cfg = _config_dir(tmp_path, TARGET.format(
        remote='"https://example.invalid/l.git"', branch='"b"', base_config='"tinyconfig"',
        kconfig='["link.config"]'))
    (cfg / "targets" / "link.config").symlink_to("/etc/passwd")
    proc = patchflow("-C", str(cfg), "-w", str(tmp_path / "ws"), "tree", "prepare", "evil")
    assert proc.returncode == 2
    one_line_error(proc.stderr, "kconfig[0]", "is outside")


def test_toml_remote_after_double_dash_in_git_argv(tmp_path: Path) -> None:
    """Even a value that skipped validation reaches git as an operand, never an option."""
    from patchflow import gitrepo
    from patchflow.errors import NotFound

    marker = tmp_path / "PWNED"
    with pytest.raises(NotFound):
        gitrepo.ls_remote_heads(f"--upload-pack=touch {marker};", "main")
    repo = tmp_path / "r.git"
    run(["git", "init", "-q", "--bare", str(repo)])
    with pytest.raises(NotFound):
        gitrepo.fetch_branch(repo, f"--upload-pack=touch {marker};", "main", "refs/x")
    assert not marker.exists()


def test_toml_bundle_trust_must_be_absolute(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "config.toml").write_text('[bundle]\ntrust = "certs/ca.pem"\n')
    proc = patchflow("-w", str(ws), "livepatch", "check", str(tmp_path / "b.tar.gz"))
    assert proc.returncode == 2
    one_line_error(proc.stderr, "config.toml: bundle.trust", "absolute path")


# --------------------------------------------------------------------------
# patch paths from a mailed patch


PATCH = """diff --git a/mm/f.c b/mm/f.c
--- a/mm/f.c
+++ b/mm/f.c
@@ -1 +1 @@
-old
+new
"""


@pytest.mark.parametrize(("old", "new"), [
    ("mm/f.c", "../../outside/f.c"),
    ("mm/f.c", "/etc/f.c"),
    ("rename from mm/f.c", "rename from ../../outside/f.c"),
])
def test_patch_paths_outside_the_tree(tmp_path: Path, old: str, new: str) -> None:
    """Issue repro: overlay_tree copied source/<path> to overlay/<path> before git apply
    checked it, so ../../ in a mailed patch read and wrote outside the tree."""
    from patchflow.livepatch.generate import overlay_tree

    # src/../../outside is read, overlay/../../outside (b/outside) would be written
    source, overlay = tmp_path / "a" / "src", tmp_path / "b" / "c" / "overlay"
    (source / "mm").mkdir(parents=True)
    (source / "mm" / "f.c").write_text("old\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.c").write_text("secret\n")
    text = PATCH.replace(old, new) if "rename" not in old else PATCH.replace(
        "--- a/mm/f.c", "similarity index 90%\nrename from ../../outside/f.c\n"
        "rename to mm/g.c\n--- a/mm/f.c")
    with pytest.raises(WorkspaceError, match="leaves the tree|absolute"):
        overlay_tree(text, source, overlay)
    assert not overlay.exists() and not (tmp_path / "b" / "outside").exists()
    assert (outside / "f.c").read_text() == "secret\n"


# --------------------------------------------------------------------------
# names that become paths or refs


@pytest.mark.parametrize("name", ["../x", "a/b", "a b", "a\nb", "-rf", ".."])
def test_names_fetch_name(tmp_path: Path, name: str) -> None:
    """Issue repro: `series fetch --name ../x` was accepted (an mbox folder outside)."""
    proc = patchflow("-w", str(tmp_path / "ws"), "series", "fetch", "x@example.invalid",
                     "--name", name, "--mirror", "http://127.0.0.1:9/%s")
    assert proc.returncode == 2
    one_line_error(proc.stderr, "invalid series name")
    assert not (tmp_path / "x").exists() and not (tmp_path / "ws" / "mbox").exists()


@pytest.mark.parametrize(("args", "why"), [
    (["livepatch", "build", "../../X", "-t", "linux-6.12.y"], "invalid series name"),
    (["livepatch", "build", "ok", "-t", "linux-6.12.y", "--name", "../x"],
     "invalid module name"),
    (["livepatch", "build", "ok", "-t", "linux-6.12.y", "--name", "lp.x-y"],
     "a C identifier"),
    (["gate", "../x"], "invalid series name"),
    (["gate", "batch-tlb-flush-demo", "-t", "../x", "--dry-run"], "invalid target name"),
    (["tree", "prepare", "../../x"], "invalid target name"),
    (["bench", "batch-tlb-flush-demo", "-t", "linux-6.12.y", "--profile", "../x"],
     "invalid profile name"),
])
def test_names_every_command(tmp_path: Path, args: list[str], why: str) -> None:
    proc = patchflow("-w", str(tmp_path / "ws"), *args)
    assert proc.returncode == 2
    one_line_error(proc.stderr, why)


# --------------------------------------------------------------------------
# the environment


def test_environment_inherited_git_variables(tmp_path: Path) -> None:
    """Issue repro: inherited GIT_DIR/GIT_WORK_TREE/GIT_INDEX_FILE overrode -C, so patchflow's
    git commands hit the caller's repository."""
    victim = tmp_path / "victim"
    victim.mkdir()
    run(["git", "init", "-q", str(victim)])
    (victim / "f").write_text("mine\n")
    run(["git", "-C", str(victim), "add", "f"])
    run(["git", "-C", str(victim), "commit", "-q", "-m", "victim"])
    before = run(["git", "-C", str(victim), "rev-parse", "HEAD"]).stdout
    tree = tmp_path / "tree"
    (tree / "mm").mkdir(parents=True)
    (tree / "mm" / "f.c").write_text("old\n")
    patch = tmp_path / "p.diff"
    patch.write_text(PATCH)
    code = ("import os, sys; from pathlib import Path; from patchflow import gitrepo\n"
            "gitrepo.apply_to_directory(Path(sys.argv[1]), Path(sys.argv[2]))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GIT_DIR": str(victim / ".git"),
           "GIT_WORK_TREE": str(victim), "GIT_INDEX_FILE": str(victim / ".git" / "index")}
    subprocess.run([sys.executable, "-c", code, str(tree), str(patch)], env=env, check=True)
    assert (tree / "mm" / "f.c").read_text() == "new\n"
    assert run(["git", "-C", str(victim), "rev-parse", "HEAD"]).stdout == before
    assert run(["git", "-C", str(victim), "status", "--porcelain"]).stdout == ""


def test_environment_git_dir_does_not_override_dash_c(tmp_path: Path) -> None:
    """`git -C REPO` with GIT_DIR inherited reads the other repository: not through run_git."""
    mine, other = tmp_path / "mine", tmp_path / "other"
    for r in (mine, other):
        run(["git", "init", "-q", str(r)])
        (r / "f").write_text(r.name)
        run(["git", "-C", str(r), "add", "f"])
        run(["git", "-C", str(r), "commit", "-q", "-m", r.name])
    code = ("import sys; from pathlib import Path; from patchflow import gitrepo\n"
            "print(gitrepo.out(Path(sys.argv[1]), 'log', '-1', '--format=%s'))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GIT_DIR": str(other / ".git"),
           "GIT_WORK_TREE": str(other), "GIT_INDEX_FILE": str(other / ".git" / "index")}
    got = subprocess.run([sys.executable, "-c", code, str(mine)], env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    assert got == "mine"


# --------------------------------------------------------------------------
# signals: the runner kills the child's whole process group


def test_signals_interrupt_kills_the_group(tmp_path: Path) -> None:
    """SIGINT (KeyboardInterrupt) while run() waits: every process of the child's group dies."""
    pids = tmp_path / "pids"
    cmd = f"sleep 600 & echo $! > {pids}; sleep 600"

    def interrupt() -> None:
        while not pids.exists() or not pids.read_text().strip():
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run(["sh", "-c", cmd], timeout=60)  # a lost interrupt is a failure, not a hang
    assert time.monotonic() - start < 30
    grandchild = int(pids.read_text())
    time.sleep(0.2)
    stat = Path(f"/proc/{grandchild}/stat")
    assert not stat.exists() or stat.read_text().split(") ")[1].startswith("Z")


# --------------------------------------------------------------------------
# bad input: one line naming the thing at fault, exit 2, never a traceback


def _ws_with_state(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    assert patchflow("-w", str(ws), "series", "list").returncode == 0
    db = sqlite3.connect(ws / "state.db")
    with db:
        db.execute("INSERT INTO series (name, title, created) VALUES ('s', 't', 0)")
        db.execute("INSERT INTO runs (id, command, started) VALUES ('r', 'gate', 0)")
    db.close()  # the last connection checkpoints the WAL and removes -wal/-shm
    assert sorted(p.name for p in ws.iterdir()) == ["state.db"]
    return ws


@pytest.mark.parametrize("page", ["sqlite_autoindex_series_1", "series", "versions",
                                  "sqlite_autoindex_backports_1"])
def test_corrupt_state_page(tmp_path: Path, page: str) -> None:
    """Issue repro: a corrupted page gave a traceback (an index page) or silently lost rows."""
    ws = _ws_with_state(tmp_path)
    db = sqlite3.connect(ws / "state.db")
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (page,)).fetchone()[0]
    db.close()
    raw = bytearray((ws / "state.db").read_bytes())
    raw[(root - 1) * 4096:root * 4096] = b"\xde\xad" * 2048
    (ws / "state.db").write_bytes(bytes(raw))
    for args in (["series", "list"], ["status"], ["series", "show", "s"]):
        proc = patchflow("-w", str(ws), *args)
        assert proc.returncode == 2, (args, proc.stdout)
        one_line_error(proc.stderr, "state.db", "corrupt" if "autoindex" in page else "")


@pytest.mark.parametrize("value", ["two", "2.5", ""])
def test_state_schema_version_not_a_number(tmp_path: Path, value: str) -> None:
    ws = _ws_with_state(tmp_path)
    db = sqlite3.connect(ws / "state.db")
    with db:
        db.execute("UPDATE meta SET value=? WHERE key='schema'", (value,))
    db.close()
    proc = patchflow("-w", str(ws), "series", "list")
    assert proc.returncode == 2
    one_line_error(proc.stderr, "schema version", "not a number")


def test_state_file_that_is_not_a_database(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "state.db").write_bytes(os.urandom(8192))
    proc = patchflow("-w", str(ws), "status")
    assert proc.returncode == 2
    one_line_error(proc.stderr, "state.db")


@pytest.mark.parametrize("kind", ["binary", "directory", "not-utf8", "wrong-type"])
def test_bad_toml(tmp_path: Path, kind: str) -> None:
    cfg = tmp_path / "cfg"
    (cfg / "targets").mkdir(parents=True)
    (cfg / "series").mkdir()
    path = cfg / "series" / "evil.toml"
    if kind == "binary":
        path.write_bytes(b"\x7fELF\x02\x01\x01\0" + os.urandom(256))
    elif kind == "directory":
        path.mkdir()
    elif kind == "not-utf8":
        path.write_bytes(b'title = "\xff\xfe"\n')
    else:
        path.write_text('title = 3\nupstream_base = "v6.12"\ntargets = []\nversions = {}\n')
    proc = patchflow("-C", str(cfg), "-w", str(tmp_path / "ws"), "gate", "evil", "--dry-run")
    assert proc.returncode == 2
    one_line_error(proc.stderr, "evil.toml")


@pytest.mark.parametrize("edit", ["missing-verdict", "verdict-string", "results-dict",
                                  "status-unknown", "duration-string", "not-json"])
def test_bad_results_json(tmp_path: Path, edit: str) -> None:
    doc = json.loads((DATA / "report" / "demo-6.12" / "results.json").read_text())
    if edit == "missing-verdict":
        del doc["verdict"]
    elif edit == "verdict-string":
        doc["verdict"] = "pass"
    elif edit == "results-dict":
        doc["results"] = {"a": 1}
    elif edit == "status-unknown":
        doc["results"][0]["status"] = "great"
    elif edit == "duration-string":
        doc["results"][0]["duration"] = "long"
    path = tmp_path / "results.json"
    path.write_text("{" if edit == "not-json" else json.dumps(doc))
    proc = patchflow("-w", str(tmp_path / "ws"), "report", str(path), "--out",
                     str(tmp_path / "out"))
    assert proc.returncode == 2
    one_line_error(proc.stderr, "results.json")


@pytest.mark.parametrize("doc", ["{}", "[]", '"x"', "null", '{"stage": 1}'])
def test_bundle_on_a_record_that_is_not_one(tmp_path: Path, doc: str) -> None:
    """Issue repro: `livepatch bundle` on {} crashed (KeyError)."""
    bj = tmp_path / "build.json"
    bj.write_text(doc)
    proc = patchflow("-w", str(tmp_path / "ws"), "livepatch", "bundle", str(bj), "-o",
                     str(tmp_path / "b.tar.gz"), "--unsigned")
    assert proc.returncode == 2
    one_line_error(proc.stderr, "not a live-patch build record")


def test_check_without_options_on_a_missing_bundle(tmp_path: Path) -> None:
    proc = patchflow("-w", str(tmp_path / "ws"), "livepatch", "check", str(tmp_path / "no"),
                     "--insecure", "--kernel-release", "6.12.117", "--build-id", "ab" * 20)
    assert proc.returncode == 2
    one_line_error(proc.stderr, "not found")


def _without_dac(*args: str) -> list[str]:
    """Run as this user without CAP_DAC_OVERRIDE: as root, mode bits then apply."""
    if os.geteuid() == 0 and shutil.which("setpriv"):
        return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--",
                *args]
    return list(args)


def _pf(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(_without_dac(sys.executable, "-m", "patchflow", *args),
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("where", ["read-only-parent", "under-a-file"])
def test_unwritable_workspace(tmp_path: Path, where: str) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    if where == "read-only-parent":
        ws = parent / "ws"
        parent.chmod(0o555)
    else:
        (parent / "file").write_text("")
        ws = parent / "file" / "ws"
    try:
        for args in (["series", "list"], ["gate", "batch-tlb-flush-demo", "--dry-run"]):
            proc = _pf("-w", str(ws), *args)
            assert proc.returncode == 2
            one_line_error(proc.stderr, str(ws))
    finally:
        parent.chmod(0o755)


def test_read_only_workspace_still_reads(tmp_path: Path) -> None:
    """Reads (series list, status, report of an existing results.json) work in a workspace
    nobody may write; a command that writes says so in one line."""
    ws = _ws_with_state(tmp_path)
    (ws / "runs" / "r").mkdir(parents=True)
    shutil.copy(DATA / "report" / "demo-6.12" / "results.json", ws / "runs" / "r")
    for p in [ws, *ws.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        listed = _pf("-w", str(ws), "series", "list")
        assert listed.returncode == 0, listed.stderr
        assert "s " in listed.stdout or "\ns" in listed.stdout
        assert _pf("-w", str(ws), "status").returncode == 0
        rep = _pf("-w", str(ws), "report", str(ws / "runs" / "r" / "results.json"), "--out",
                  str(tmp_path / "out"))
        assert rep.returncode == 0, rep.stderr
        assert (tmp_path / "out" / "report.html").is_file()
        write = _pf("-w", str(ws), "livepatch", "build", "x", "-t", "linux-6.12.y")
        assert write.returncode == 2
        one_line_error(write.stderr, "read-only")
        assert sorted(p.name for p in ws.iterdir()) == ["runs", "state.db"]
    finally:
        for p in [ws, *ws.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.mark.parametrize(("args", "code"), [
    (["series", "fetch", "../x"], 2), (["livepatch", "check", "/nonexistent"], 2),
    (["report", "--verdict", "RESULTS"], 1), (["serise", "list"], 2),
])
def test_python_m_and_the_script_agree(tmp_path: Path, args: list[str], code: int) -> None:
    """Issue repro: `python -m patchflow report --verdict` on a failed run exited 0 where the
    script exited 1.  Both share cli.main now: same code, same line."""
    from patchflow.gate.records import Entry, ResultsDoc, SeriesBlock, Verdict, write_records

    doc = ResultsDoc("r1", "0", SeriesBlock("s", revision=1), ("t",), ("boot",),
                     "2026-12-01T00:00:00Z", "2026-12-01T00:01:00Z", "patchflow gate s",
                     Verdict(1, "fail"), (Entry(StageResult("boot", Status.FAIL, "x", 1.0, "t")),))
    write_records(tmp_path / "r", doc)
    results = tmp_path / "r" / "results.json"
    argv = [str(results) if a == "RESULTS" else a for a in args]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    mod = subprocess.run([sys.executable, "-m", "patchflow", "-w", str(tmp_path / "ws"), *argv],
                         capture_output=True, text=True, env=env)
    # what the console-script wrapper pip writes does: sys.exit(main())
    script = subprocess.run([sys.executable, "-c",
                             "import sys; from patchflow.cli import main; sys.exit(main())",
                             "-w", str(tmp_path / "ws"), *argv], capture_output=True, text=True,
                            env=env)
    assert mod.returncode == script.returncode == code, (mod.stderr, script.stderr)
    assert mod.stderr == script.stderr
    assert "Traceback" not in mod.stderr


def test_user_errors_from_the_library_reach_the_cli_as_one_line() -> None:
    """A ValueError from a validator must never escape as a traceback."""
    from patchflow.config import user_name

    with pytest.raises(UserError):
        user_name("../x", "series")


# --------------------------------------------------------------------------
# QEMU


def test_qemu_has_no_network_a_sandbox_and_a_console_cap(tmp_path: Path) -> None:
    from patchflow.boot import qemu

    argv = qemu.qemu_argv(tmp_path / "bzImage", tmp_path / "initrd")
    assert argv[argv.index("-nic") + 1] == "none"
    assert "-nodefaults" in argv and "-no-user-config" in argv
    assert argv[argv.index("-sandbox") + 1] == "on"
    assert "-sandbox" not in qemu.qemu_argv(tmp_path / "b", tmp_path / "i", sandbox=False)
    if shutil.which(qemu.QEMU):
        assert qemu.has_sandbox()  # Debian's QEMU is built with seccomp
    assert qemu.CONSOLE_LIMIT == 64 * 2**20
