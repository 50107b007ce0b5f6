"""An unhappy SMTP server for the delivery tests: real sockets on 127.0.0.1, chosen faults.

:class:`FaultySink` is :class:`retention.smtp_sink.MailSink` (aiosmtpd in a thread,
accepted messages kept in order, ``wait_for`` on a condition variable) whose handler can
be told, per recipient, to:

* answer a code (``421``, ``451``, ``550``, ...) at ``RCPT`` or at the end of ``DATA``;
* ``RCPT-DROP``: close the connection instead of answering RCPT;
* ``DATA-DROP``: close the connection instead of answering the DATA command;
* ``drop`` the connection in the middle of DATA: after the 354 and the first line of
  content, the server closes the transport without a reply and keeps nothing (whether the
  client notices before it sends the final "." depends on timing: a real server's drop
  does too);
* ``STORE-DROP``: take the whole message up to the final ".", keep it, then close the
  connection without replying (the client cannot know that the message arrived);
* ``STORE-HANG``: keep the whole message and never reply, until the client gives up
  (its timeout) and closes the connection;
* be ``down``: :meth:`FaultySink.down` stops listening, :meth:`FaultySink.up` listens again
  on the same port;
* be slow: with ``reply_delay`` seconds, every accepted message is kept at once and its
  ``250`` written that much later (a provider that scans content before it answers), so a
  test can catch a message in the middle of its sending.

A fault applies ``times`` times (default: for ever) and then the recipient is served
normally, which is how a test plays "the server recovered". Every SMTP command the server
answers for a recipient is logged in :attr:`FaultySink.events`, and :attr:`FaultySink.sessions`
counts connections (to check that a batch reuses one session).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from retention.smtp_sink import MailSink, Received, _Handler

__all__ = ["Fault", "FaultySink"]


@dataclass
class Fault:
    """What the server does to one recipient: ``reply`` a code at ``stage``, or ``drop`` in DATA."""

    stage: str  # RCPT, RCPT-DROP, DATA, DATA-DROP, DROP, STORE-DROP or STORE-HANG
    code: int = 0
    times: int | None = None  # None: every time

    def use(self) -> bool:
        """True while the fault still applies; counts one use."""
        if self.times is None:
            return True
        if self.times <= 0:
            return False
        self.times -= 1
        return True


@dataclass
class _FaultHandler(_Handler):
    faults: dict[str, Fault] = field(default_factory=dict)
    events: list[tuple[str, str]] = field(default_factory=list)  # (recipient, what happened)
    reply_delay: float = 0.0  # seconds between keeping a message and answering 250

    def _fault(self, address: str, stage: str) -> Fault | None:
        with self.lock:
            fault = self.faults.get(address.lower())
            if fault is None or fault.stage != stage or not fault.use():
                return None
            return fault

    def _note(self, address: str, what: str) -> None:
        with self.lock:
            self.events.append((address.lower(), what))

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self._fault(address, "RCPT-DROP"):
            self._note(address, "RCPT-DROP")
            server.transport.abort()  # at once: the "250" below is never written
            return "250 OK"
        fault = self._fault(address, "RCPT")
        if fault:
            self._note(address, f"RCPT {fault.code}")
            return f"{fault.code} {_TEXT.get(fault.code, 'refused by test')}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        for address in envelope.rcpt_tos:
            fault = self._fault(address, "DATA")
            if fault:
                self._note(address, f"DATA {fault.code}")
                return f"{fault.code} {_TEXT.get(fault.code, 'refused by test')}"
        for address in envelope.rcpt_tos:
            self._note(address, "DATA 250")
        reply = await super().handle_DATA(server, session, envelope)
        if self.reply_delay:
            await asyncio.sleep(self.reply_delay)  # the slow provider itself, not a test waiting
        return reply


_TEXT = {
    421: "4.3.2 Service shutting down, closing transmission channel",
    451: "4.7.1 Greylisted, please try again later",
    452: "4.2.2 Mailbox full",
    550: "5.1.1 No such user here",
    551: "5.1.6 User not local",
    552: "5.2.2 Message too large",
    553: "5.1.3 Mailbox name not allowed",
    554: "5.7.1 Rejected as spam",
}


class _FaultySMTP(SMTP):
    """aiosmtpd's server, plus the one fault no handler hook can play: a drop inside DATA."""

    def __init__(self, handler: _FaultHandler, sessions: Counter, **kwargs: object) -> None:
        super().__init__(handler, **kwargs)
        self._faults = handler
        self._sessions = sessions

    def connection_made(self, transport) -> None:  # noqa: ANN001 - asyncio's signature
        self._sessions["opened"] += 1
        super().connection_made(transport)

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's command name
        rcpts = list(self.envelope.rcpt_tos) if self.envelope else []
        refused = next((a for a in rcpts if self._faults._fault(a, "DATA-DROP")), None)
        if refused is not None:
            self._faults._note(refused, "DATA-DROP")
            self.transport.close()  # no 354: the client knows that nothing was taken
            return
        for stage in ("STORE-DROP", "STORE-HANG"):
            stored = next((a for a in rcpts if self._faults._fault(a, stage)), None)
            if stored is not None:
                await self._store_without_reply(stored, stage)
                return
        dropped = next((a for a in rcpts if self._faults._fault(a, "DROP")), None)
        if dropped is None:
            await super().smtp_DATA(arg)
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        await self._reader.readuntil(b"\r\n")  # the first line of the content has arrived
        self._faults._note(dropped, "DROP")
        self.transport.close()  # no reply, nothing kept: the client cannot know more

    async def _store_without_reply(self, address: str, stage: str) -> None:
        """Read the message to its final ".", keep it, and never answer."""
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        raw = await self._reader.readuntil(b"\r\n.\r\n")
        content = re.sub(rb"(?m)^\.\.", b".", raw[:-3])  # undo the dot-stuffing
        self._faults.keep(Received(self.envelope.mail_from or "", list(self.envelope.rcpt_tos), content))
        self._faults._note(address, stage)
        if stage == "STORE-HANG":
            await self._reader.read()  # until the client times out and closes its end
        self.transport.close()


class _FaultyController(Controller):
    def __init__(self, handler: _FaultHandler, sessions: Counter, **kwargs: object) -> None:
        self._sessions = sessions
        super().__init__(handler, **kwargs)

    def factory(self) -> SMTP:
        return _FaultySMTP(self.handler, self._sessions, **self.SMTP_kwargs)


class FaultySink(MailSink):
    """A :class:`MailSink` that can be unhappy on purpose; a context manager.

    ``logins`` (login -> password): the server requires AUTH, as :class:`MailSink`.
    """

    def __init__(self, port: int = 0, logins: dict[str, str] | None = None, reply_delay: float = 0.0) -> None:
        super().__init__(port, logins=logins)
        self.handler = _FaultHandler(None, reply_delay=reply_delay)
        self._sessions: Counter = Counter()
        self.controller = self._controller(self.controller.port)
        self._running = False

    def _controller(self, port: int) -> _FaultyController:
        return _FaultyController(
            self.handler, self._sessions, hostname="127.0.0.1", port=port, **self.smtp_kwargs
        )

    def fail(self, address: str, stage: str, code: int = 0, times: int | None = None) -> None:
        """From now on, answer ``code`` at ``stage`` (RCPT, DATA) for ``address``, or DROP in DATA,
        or keep the message and then drop (STORE-DROP) or never answer (STORE-HANG)."""
        assert stage in ("RCPT", "RCPT-DROP", "DATA", "DATA-DROP", "DROP", "STORE-DROP", "STORE-HANG"), stage
        with self.handler.lock:
            self.handler.faults[address.lower()] = Fault(stage, code, times)

    def heal(self, address: str | None = None) -> None:
        """Serve ``address`` (or everyone) normally again."""
        with self.handler.lock:
            if address is None:
                self.handler.faults.clear()
            else:
                self.handler.faults.pop(address.lower(), None)

    @property
    def sessions(self) -> int:
        """Client sessions so far (aiosmtpd's own probe at each start is not one)."""
        with self.handler.lock:
            return self._sessions["opened"] - self._sessions["probes"]

    def _start(self) -> None:
        self.controller.start()  # connects once itself, to see that the server is up
        self._running = True
        with self.handler.lock:
            self._sessions["probes"] += 1

    @property
    def events(self) -> list[tuple[str, str]]:
        with self.handler.lock:
            return list(self.handler.events)

    def by_message_id(self) -> Counter:
        """How many times each Message-ID arrived."""
        return Counter(item.message["Message-ID"] for item in self.received)

    def down(self) -> None:
        """Stop listening: connections are refused until :meth:`up`."""
        if self._running:
            self.controller.stop()
            self._running = False

    def up(self) -> None:
        if not self._running:
            # A stopped aiosmtpd controller cannot start again: a fresh one, same port.
            self.controller = self._controller(self.controller.port)
            self._start()

    def __enter__(self) -> FaultySink:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
