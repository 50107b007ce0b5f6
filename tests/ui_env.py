"""For the UI tests: a warehouse from real nights, and real servers on loopback ports.

* :func:`demo_warehouse`: a demo shop of 300 customers, two nights through the ``retention``
  command line, and a delivery into a real SMTP sink that keeps every message as an .eml file;
* :class:`ServerProcess`: a server (uvicorn, or Airflow's api-server) in a subprocess, ready when
  it says so on its output (read line by line; no sleeping);
* :func:`airflow_ui_env`: the environment of an api-server with the repo's plugins and two
  simple-auth-manager users whose passwords the test knows.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, select

from retention import schema
from retention.smtp_sink import MailSink
from tests.airflow_env import BIN, ROOT, airflow_env, run

NIGHTS = ("2026-11-21", "2026-11-22")  # the demo shop's data ends on 2026-11-21 (Berlin)
SECRET = "ui-test-unsubscribe-secret-0123456789abcdef"
USERS = {"admin": ("admin", "admin-pw-for-tests"), "viewer": ("viewer", "viewer-pw-for-tests")}
PUBLIC_PREFIX = "/retention-public"  # plugins/retention_ui.py


#: Debian's Chromium (scripts/install-browser.sh); Playwright never downloads a browser here.
CHROMIUM = Path(os.environ.get("RETENTION_TEST_CHROMIUM", "/usr/bin/chromium"))


@contextmanager
def chromium():  # noqa: ANN201 (a playwright Browser; playwright is imported only by browser tests)
    """Headless Chromium driven by Playwright, for the browser tests' module-scoped fixtures."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run scripts/install-browser.sh (as root)"
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's own sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def retention_env(home: Path, warehouse_url: str, **extra: str) -> dict[str, str]:
    """The environment of a ``retention`` command on this test's warehouse."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RETENTION_"))}
    env.update(
        RETENTION_HOME=str(home),
        RETENTION_WAREHOUSE_URL=warehouse_url,
        RETENTION_SOURCE_URL=f"sqlite:///{home / 'shop.db'}",
        RETENTION_UNSUBSCRIBE_SECRET=SECRET,
        PYTHONWARNINGS="ignore",
        **extra,
    )
    return env


def demo_warehouse(home: Path, warehouse_url: str, unsubscribe_base: str) -> Path:
    """Two nights of the demo shop and their delivery; returns the folder of received .eml files.

    The messages' unsubscribe links point at ``unsubscribe_base`` (the server under test).
    """
    env = retention_env(home, warehouse_url, RETENTION_UNSUBSCRIBE_BASE_URL=unsubscribe_base)
    cli = [sys.executable, "-m", "retention.cli"]
    run([*cli, "demo-data", "--customers", "300", "--seed", "7"], env)
    for night in NIGHTS:
        run([*cli, "nightly", "--date", night], env)
    mail = home / "mail"
    with MailSink(folder=mail) as sink:
        env["RETENTION_SMTP_URL"] = f"smtp://127.0.0.1:{sink.port}"
        run([*cli, "send", "--until", f"{NIGHTS[-1]}T15:00:00"], env)
    return mail


def unsubscribe_links(mail: Path) -> list[tuple[str, str]]:
    """(recipient, https link of ``List-Unsubscribe``) of every received message, in file order."""
    out = []
    for path in sorted(mail.glob("*.eml")):
        msg = message_from_bytes(path.read_bytes(), policy=policy.default)
        links = re.findall(r"<([^>]+)>", str(msg["List-Unsubscribe"]))
        out.append((str(msg["To"]), next(link for link in links if link.startswith("http"))))
    return out


class ServerProcess:
    """A server in a subprocess; ``start`` returns once a line of its output matches ``ready``."""

    def __init__(self, args: list[str], env: dict[str, str], ready: str, log: Path) -> None:
        self.args, self.env, self.ready, self.log = args, env, re.compile(ready), log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 300) -> ServerProcess:  # generous: CI's two cores may be busy
        # A session of its own: the api-server forks uvicorn workers, and stop() ends them all.
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        with selectors.DefaultSelector() as sel, self.log.open("w") as log:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(timeout=deadline - time.monotonic()):
                    break
                line = self.proc.stdout.readline().decode(errors="replace")
                if not line:  # the process ended
                    break
                log.write(line)
                lines.append(line)
                if self.ready.search(line):
                    self._drain()
                    return self
        self.stop()
        raise AssertionError(f"{' '.join(self.args)} did not become ready:\n{''.join(lines[-40:])}")

    def _drain(self) -> None:
        """Keep reading the output into the log so that the server never blocks on a full pipe."""
        import threading

        def pump() -> None:
            with self.log.open("a") as log:
                for raw in iter(self.proc.stdout.readline, b""):
                    log.write(raw.decode(errors="replace"))

        threading.Thread(target=pump, daemon=True).start()

    def stop(self) -> None:
        """End the server and every process it started (its process group), then reap it."""
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                continue
        # Workers may outlive the leader by a moment: the group gets SIGKILL once it is gone.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        # Once only: a later killpg of this (reaped, reusable) pid could hit another process.
        self.proc = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def public_app(home: Path, warehouse_url: str, port: int, **settings: str) -> ServerProcess:
    """The public app (unsubscribe and feedback) alone under uvicorn on a loopback port, as a
    deployment may run it; not started yet (``with`` it, or call ``start()``)."""
    args = [sys.executable, "-m", "uvicorn", "--factory", "retention.web.unsubscribe_app:create_unsubscribe_app"]
    args += ["--host", "127.0.0.1", "--port", str(port)]
    env = retention_env(home, warehouse_url, **settings)
    return ServerProcess(args, env, r"Uvicorn running on", home / "uvicorn.log")


def airflow_ui_env(home: Path, warehouse_url: str) -> dict[str, str]:
    """An api-server's environment: the repo's plugins, two users with known passwords."""
    env = airflow_env(home, warehouse_url=warehouse_url, source_url=f"sqlite:///{home / 'shop.db'}")
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps(dict(USERS.values())))
    env.update(
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,viewer:viewer",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
        RETENTION_UNSUBSCRIBE_SECRET=SECRET,
        # The simple auth manager grants every custom view to every user: this restricts saving.
        RETENTION_TEMPLATE_EDITORS="role:admin",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",  # uvicorn's "running on" line says it is ready
    )
    return env


def start_api_server(home: Path, warehouse_url: str, port: int) -> ServerProcess:
    """``airflow db migrate``, then ``airflow api-server`` on 127.0.0.1:port with the plugins."""
    env = airflow_ui_env(home, warehouse_url)
    run([str(BIN / "airflow"), "db", "migrate"], env)
    args = [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port)]
    return ServerProcess(args, env, r"Uvicorn running on", home / "api-server.log").start()


@dataclass
class AirflowUI:
    """A running api-server with the plugins, on a warehouse of two demo nights."""

    base: str
    engine: Engine
    links: list[tuple[str, str]]  # (recipient, unsubscribe link) of every received message
    mail: Path

    def token(self, user: str = "viewer") -> str:
        """A JWT for ``user`` from the api-server's own login endpoint."""
        login, password = USERS[user]
        reply = httpx.post(f"{self.base}/auth/token", json={"username": login, "password": password})
        assert reply.status_code in (200, 201), reply.text
        return reply.json()["access_token"]

    def suppressed(self) -> set[str]:
        s = schema.suppression
        with self.engine.connect() as conn:
            return set(conn.execute(select(s.c.email_hash)).scalars())


@contextmanager
def running_airflow_ui(home: Path) -> Iterator[AirflowUI]:
    """Two demo nights delivered with links to this server, then the api-server on a free port."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"sqlite:///{home / 'warehouse.db'}"
    mail = demo_warehouse(home, url, f"{base}{PUBLIC_PREFIX}")
    server = start_api_server(home, url, port)
    engine = create_engine(url)
    try:
        yield AirflowUI(base, engine, unsubscribe_links(mail), mail)
    finally:
        server.stop()
        engine.dispose()
