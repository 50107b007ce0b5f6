"""A real SMTP server on loopback that keeps every message it receives as an .eml file.

Used by ``make demo`` (as a background process: ``retention smtp-sink start|stop``)
and by the tests (in-process: :class:`MailSink`). It speaks real SMTP through
aiosmtpd; nothing is mocked.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

__all__ = ["MailSink", "Received", "start_background", "stop_background"]


@dataclass
class Received:
    """One message as the server got it."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class _Handler:
    folder: Path | None
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    async def handle_DATA(self, server: object, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = envelope.original_content or b""
        self.keep(Received(envelope.mail_from or "", list(envelope.rcpt_tos), raw))
        return "250 Message accepted for delivery"

    def keep(self, item: Received) -> None:
        """Store one message (and wake whoever waits for it)."""
        with self.arrived:
            self.received.append(item)
            index = len(self.received)
            self.arrived.notify_all()
        if self.folder is not None:
            self._save(index, item)

    def _save(self, index: int, item: Received) -> None:
        msg_id = item.message.get("Message-ID", "") or str(index)
        name = hashlib.sha256(msg_id.encode()).hexdigest()[:12]
        target = self.folder / f"{len(list(self.folder.glob('*.eml'))) + 1:05d}-{name}.eml"
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(item.raw)
        tmp.replace(target)


class MailSink:
    """An SMTP server on 127.0.0.1 in a background thread; a context manager.

    With ``logins`` (login -> password) the server requires AUTH (PLAIN or LOGIN, allowed
    without TLS on loopback) before MAIL, as a provider's submission port does.
    """

    def __init__(
        self, port: int = 0, folder: Path | None = None, logins: dict[str, str] | None = None
    ) -> None:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        self.handler = _Handler(folder)
        self.smtp_kwargs = _auth_kwargs(logins) if logins is not None else {}
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=port or _free_port(), **self.smtp_kwargs
        )

    @property
    def port(self) -> int:
        return self.controller.port

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until at least ``count`` messages arrived (condition variable, not polling)."""
        with self.handler.arrived:
            self.handler.arrived.wait_for(lambda: len(self.handler.received) >= count, timeout=timeout)
            return list(self.handler.received)

    def __enter__(self) -> MailSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def _auth_kwargs(logins: dict[str, str]) -> dict:
    """aiosmtpd's keyword arguments for a server that accepts exactly these logins."""

    def authenticate(server: object, session: Session, envelope: Envelope, mechanism: str, auth: object):
        ok = isinstance(auth, LoginPassword) and logins.get(auth.login.decode()) == auth.password.decode()
        return AuthResult(success=ok, handled=False)

    return {"authenticator": authenticate, "auth_required": True, "auth_require_tls": False}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(port: int, folder: Path) -> None:
    """Run until SIGTERM; prints ``ready`` once listening so that a parent can wait for it."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with MailSink(port, folder):
        print(f"ready {port}", flush=True)
        stop.wait()


def start_background(port: int, folder: Path, pid_file: Path) -> int:
    """Start the sink as a separate process and return once it accepts connections."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "retention.smtp_sink", str(port), str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("ready"):
        proc.kill()
        raise RuntimeError(f"SMTP sink did not start on 127.0.0.1:{port} (is the port taken?)")
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(str(proc.pid))
    return proc.pid


def _is_sink(pid: int) -> bool:
    """Whether ``pid`` still runs this module (Linux: its command line); elsewhere, trust the file."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not Path("/proc/self/cmdline").exists():
        return True
    try:
        return b"retention.smtp_sink" in cmdline.read_bytes()
    except OSError:  # no such process
        return False


def stop_background(pid_file: Path) -> bool:
    """Stop a sink started by :func:`start_background`; False if none was running."""
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    pid_file.unlink()
    if not _is_sink(pid):  # it died long ago and the pid now belongs to someone else
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]))
