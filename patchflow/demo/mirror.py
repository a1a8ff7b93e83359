"""A local lore: public-inbox serving mail threads over loopback.

lore.kernel.org runs public-inbox; so does this module, on 127.0.0.1, for the
offline demo and the integration tests.  It owns the inbox layout, message
injection with ``public-inbox-mda`` and the ``public-inbox-httpd`` process.
b4 is pointed at it through its ``b4.midmask`` setting (see
:func:`patchflow.series.b4_env`).
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import mailbox
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from patchflow import gitrepo, runner
from patchflow.errors import InfraError, UserError

DEFAULT_LIST = "linux-mm@kvack.org"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def split_mbox(path: Path) -> list[bytes]:
    """The raw messages of an mbox file, in order."""
    box = mailbox.mbox(str(path), create=False)
    try:
        return [box.get_bytes(key) for key in box.iterkeys()]
    finally:
        box.close()


class LocalLore:
    """One public-inbox (v2) named *name* under *root*, served on loopback."""

    def __init__(self, root: Path, name: str = "linux-mm", address: str = DEFAULT_LIST) -> None:
        self.root = root
        self.name = name
        self.address = address
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def inbox_dir(self) -> Path:
        return self.root / "inbox" / self.name

    @property
    def pi_config(self) -> Path:
        return self.root / "pi-config"

    @property
    def env(self) -> dict[str, str]:
        # PI_CONFIG keeps public-inbox away from the real ~/.public-inbox
        return {"PI_CONFIG": str(self.pi_config), "PI_DIR": str(self.root / "pi-dir")}

    @property
    def url(self) -> str:
        if self.port is None:
            raise InfraError("local lore mirror is not running")
        return f"http://127.0.0.1:{self.port}/{self.name}"

    @property
    def midmask(self) -> str:
        return self.url + "/%s"

    def init(self) -> None:
        if (self.inbox_dir / "inbox.lock").exists() or (self.inbox_dir / "all.git").exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        runner.run(["public-inbox-init", "-V2", "-L", "full", self.name, self.inbox_dir,
                    f"http://127.0.0.1/{self.name}", self.address], env=self.env, timeout=120)
        # there is no spamc on these machines; public-inbox-mda would reject everything
        gitrepo.config_file_set(self.pi_config, "publicinboxmda.spamcheck", "none")

    def copy_to(self, root: Path) -> LocalLore:
        """A second, independent mirror with the same messages (cheap for tests)."""
        import shutil

        shutil.copytree(self.root, root, symlinks=True,
                        ignore=shutil.ignore_patterns("httpd.log"))
        other = LocalLore(root, self.name, self.address)
        gitrepo.config_file_set(other.pi_config, f"publicinbox.{self.name}.inboxdir",
                                str(other.inbox_dir))
        return other

    def inject(self, raw: bytes) -> None:
        """Deliver one message as the list would (idempotent: duplicates are dropped)."""
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        if self.address not in (msg.get("To", "") + msg.get("Cc", "")):
            if msg.get("To"):
                msg.replace_header("To", f"{msg['To']}, {self.address}")
            else:
                msg["To"] = self.address
        text = msg.as_bytes()
        if not text.startswith(b"From "):
            text = b"From mboxrd@z Thu Jan  1 00:00:00 1970\n" + text
        res = runner.run(["public-inbox-mda", "--no-precheck"], input=text.decode("utf-8", "replace"),
                         env={**self.env, "ORIGINAL_RECIPIENT": self.address}, timeout=120,
                         check=False)
        # exit 0: delivered; public-inbox-mda also exits 0 for a duplicate message-id
        if res.returncode != 0:
            raise InfraError(f"public-inbox-mda refused a message "
                             f"{msg.get('Message-Id', '?')}: {res.tail.strip()}")

    def inject_mbox(self, path: Path) -> int:
        if not path.is_file():
            raise UserError(f"no such mbox: {path}")
        msgs = split_mbox(path)
        for raw in msgs:
            self.inject(raw)
        return len(msgs)

    def start(self, port: int | None = None, timeout: float = 30.0) -> str:
        """Start public-inbox-httpd on a free loopback port; returns the inbox URL."""
        if self._proc is not None:
            return self.url
        exe = runner.which("public-inbox-httpd")
        for _attempt in range(5):
            self.port = port or free_port()
            log = open(self.root / "httpd.log", "ab")  # noqa: SIM115
            # the one long-lived service patchflow starts itself; runner.run is for
            # commands that finish, so this Popen is deliberate (argv list, no shell)
            self._proc = subprocess.Popen(  # noqa: S603
                [exe, "-l", f"http://127.0.0.1:{self.port}"],
                env={**os.environ, **self.env}, stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                try:
                    with urllib.request.urlopen(self.url + "/", timeout=2):  # noqa: S310
                        return self.url
                except urllib.error.HTTPError:
                    return self.url  # it answers: good enough
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    time.sleep(0.2)
            self.stop()
            if port:
                break
        raise InfraError(f"public-inbox-httpd did not start; see {self.root / 'httpd.log'}")

    def stop(self) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGTERM)
            self._proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc = None

    def __enter__(self) -> LocalLore:
        self.init()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
