"""The SMTP side of delivery: the session (owned by yagmail), the message, the reply.

What goes out, and how a reply is judged, lives here; *when* and *whether* a message
goes out (claims, leases, retries, consent) lives in :mod:`retention.delivery`.

Why yagmail only owns the session: ``yagmail.SMTP`` knows how to connect with SSL or
STARTTLS and log in from the connection's fields, so the Airflow connection
``smtp_default`` maps onto it directly. Its own message builder, however, merges the
text and the HTML into one part of its choosing and invents its own Message-ID, and its
``send``/``_attempt_send`` silently sleeps and retries on a dropped connection, which
would defeat the exactly-once bookkeeping. So the message is a stdlib
:class:`~email.message.EmailMessage` (text and HTML alternatives, a Message-ID derived
from the outbox key, RFC 8058 headers), and it goes through the session's ``smtplib``
object command by command (MAIL, RCPT, DATA, the content, the final ".") so that the
server's exact reply to each step is known and recorded, and so that a failure is known to
lie before or after the end of DATA (see :func:`_transmit`).

Logins: yagmail takes ``user`` as an address and appends ``@gmail.com`` to one without an
``@`` (``yagmail.headers.make_addr_alias_user``), which breaks SendGrid's ``apikey`` and
most relay logins. Passed as a one-entry dict ``{login: login}`` (yagmail's "address with
alias" form) the login is used exactly as given; yagmail still owns connect, TLS and AUTH.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.policy
import functools
import json
import logging
import os
import re
import select
import smtplib
import socket
from dataclasses import dataclass
from email import headerregistry
from email.message import EmailMessage
from email.utils import parseaddr
from urllib.parse import parse_qs, quote, unquote, urlparse

import yagmail

from retention.night import as_utc
from retention.unsubscribe import sign

__all__ = [
    "HARD_BOUNCE_CODES",
    "Reply",
    "SmtpConfig",
    "SmtpConfigError",
    "SmtpLoginRefused",
    "SmtpSession",
    "SmtpUnavailable",
    "Unsubscribe",
    "build_message",
    "unsubscribe_links",
]

log = logging.getLogger(__name__)

#: Permanent replies that say the mailbox does not exist (or may not be used): never write again.
HARD_BOUNCE_CODES = frozenset({550, 551, 553})

#: The stages of one message's SMTP conversation, as recorded on its reply. ``DATA`` is the
#: DATA command and the content up to (not including) the final "." line; ``DATA-END`` is
#: from the final "." on: a failure there leaves the message's fate unknown.
STAGES = ("CONNECT", "MAIL", "RCPT", "DATA", "DATA-END", "BUILD")
END_OF_DATA = "DATA-END"


class SmtpConfigError(ValueError):
    """The SMTP settings cannot work (e.g. a login without a password); names where they came from."""


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to talk SMTP; the password never appears in ``repr``."""

    host: str
    port: int
    login: str | None = None
    password: str | None = None
    ssl: bool = False
    starttls: bool = False
    timeout: float = 30.0
    #: Where these settings came from (a connection id or a variable), for error messages.
    source: str = "the SMTP settings"

    def __post_init__(self) -> None:
        # Refused here, before any message is claimed: yagmail would otherwise ask the keyring
        # or prompt on a terminal for the password, and an unattended run would hang or fail late.
        if self.login and not self.password:
            raise SmtpConfigError(
                f"{self.source}: SMTP login {self.login!r} has no password; set the password "
                f"(or remove the login to send without authentication)"
            )

    def __repr__(self) -> str:
        return (
            f"SmtpConfig(host={self.host!r}, port={self.port}, login={self.login!r}, ssl={self.ssl}, "
            f"starttls={self.starttls}, source={self.source!r})"
        )

    @property
    def where(self) -> str:
        """``host:port (source)``: what an error message names."""
        return f"{self.host}:{self.port} ({self.source})"

    @classmethod
    def from_url(cls, url: str, timeout: float = 30.0, source: str = "RETENTION_SMTP_URL") -> SmtpConfig:
        """``smtp://user:pass@host:port?ssl=true&starttls=true`` (the Airflow connection URI form)."""
        parsed = urlparse(url)
        if parsed.scheme not in ("smtp", "smtps") or not parsed.hostname:
            raise SmtpConfigError(
                f"{source}: SMTP URL must look like smtp://user:password@host:port (password hidden)"
            )
        query = {k: v[-1].lower() for k, v in parse_qs(parsed.query).items()}
        ssl = parsed.scheme == "smtps" or query.get("ssl") in ("1", "true", "yes")
        return cls(
            host=parsed.hostname,
            port=parsed.port or (465 if ssl else 25),
            login=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            ssl=ssl,
            starttls=query.get("starttls") in ("1", "true", "yes"),
            timeout=timeout,
            source=source,
        )

    @classmethod
    def from_fields(
        cls,
        host: str,
        port: int | None,
        login: str | None,
        password: str | None,
        extra: dict,
        timeout: float = 30.0,
        source: str = "the Airflow SMTP connection",
    ) -> SmtpConfig:
        """From an Airflow ``smtp`` connection's fields, with the SMTP provider's extras.

        As in Airflow's SMTP provider, SSL is on unless ``disable_ssl``; STARTTLS is used
        without SSL unless ``disable_tls``. String booleans ("false") are understood.
        """
        ssl = not _flag(extra.get("disable_ssl"))
        starttls = not ssl and not _flag(extra.get("disable_tls"))
        return cls(
            host=host,
            port=int(port or (465 if ssl else 25)),
            login=login or None,
            password=password or None,
            ssl=ssl,
            starttls=starttls,
            timeout=float(extra.get("timeout", timeout)),
            source=source,
        )

    @classmethod
    def from_environment(cls, explicit: str | None, conn_id: str, timeout: float) -> SmtpConfig:
        """Outside Airflow: ``RETENTION_SMTP_URL``, else ``AIRFLOW_CONN_<ID>`` (URI or JSON), else loopback:8025."""
        variable = f"AIRFLOW_CONN_{conn_id.upper()}"
        value = explicit or os.environ.get(variable) or "smtp://127.0.0.1:8025"
        if explicit:
            source = "RETENTION_SMTP_URL"
        elif os.environ.get(variable):
            source = f"connection {conn_id!r} ({variable})"
        else:
            source = "the default loopback SMTP server"
        if value.lstrip().startswith("{"):
            fields = json.loads(value)
            extra = fields.get("extra") or {}
            extra = json.loads(extra) if isinstance(extra, str) else extra
            return cls.from_fields(
                fields.get("host", "127.0.0.1"),
                fields.get("port"),
                fields.get("login"),
                fields.get("password"),
                extra,
                timeout,
                source,
            )
        return cls.from_url(value, timeout, source)


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _client(config: SmtpConfig) -> yagmail.SMTP:
    """A yagmail session object (not yet connected) for the configured server."""
    return yagmail.SMTP(
        # {login: login}: yagmail's address-with-alias form, taken verbatim; a plain string
        # without "@" would become "login@gmail.com" (see the module docstring).
        user={config.login: config.login} if config.login else "",
        password=config.password,
        host=config.host,
        port=config.port,
        smtp_ssl=config.ssl,
        smtp_starttls=config.starttls,
        smtp_skip_login=not config.login,
        soft_email_validation=False,
        timeout=config.timeout,
    )


def _no_delay(smtp: smtplib.SMTP | None) -> None:
    """Send each SMTP line at once (TCP_NODELAY). The end of DATA is written apart from the content
    on purpose (see :func:`_transmit`); with Nagle's algorithm on, that small last write waits for
    the server's delayed ACK of the content, about 40 ms a message on Linux: 20 messages a second
    instead of hundreds (measured by ``make bench``, issue #15)."""
    sock = getattr(smtp, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class SmtpUnavailable(ConnectionError):
    """The SMTP server cannot be reached at all (down, refused, TLS or login failure)."""


class SmtpLoginRefused(SmtpUnavailable):
    """The server refused the login or password: retrying will not help until someone fixes them."""


@dataclass(frozen=True)
class Reply:
    """What the server said to one message; ``code`` is None when the connection dropped."""

    code: int | None
    text: str
    stage: str  # one of STAGES: where the conversation was when this was said (or it dropped)

    @property
    def accepted(self) -> bool:
        return self.code is not None and 200 <= self.code < 300

    @property
    def in_doubt(self) -> bool:
        """No reply after the end of DATA was sent: the server may have stored the message."""
        return self.code is None and self.stage == END_OF_DATA

    @property
    def transient(self) -> bool:
        """Worth another try later: a 4xx reply, or no reply at all (the connection dropped)."""
        return self.code is None or 400 <= self.code < 500

    @property
    def hard_bounce(self) -> bool:
        return self.code in HARD_BOUNCE_CODES

    @property
    def session_lost(self) -> bool:
        """After these the server has closed (or will close) the connection: reconnect."""
        return self.code is None or self.code == 421

    def __str__(self) -> str:
        code = "---" if self.code is None else str(self.code)
        return f"{code} {self.text} [{self.stage}]"[:1000]


class SmtpSession:
    """One SMTP session for a batch of messages, reopened after the server drops it.

    ``open()`` raises :class:`SmtpUnavailable` when no session can be had; the caller
    then stops before claiming another message. ``send()`` never raises for what the
    server says or for a dropped connection: it returns the :class:`Reply`.
    """

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._client: yagmail.SMTP | None = None
        self.opened = 0  # sessions opened so far (tests check the reuse)

    @property
    def is_open(self) -> bool:
        return self._client is not None

    def open(self) -> None:
        if self._client is not None:
            return
        client = _client(self.config)
        try:
            client.login()  # connect, SSL or STARTTLS, and login unless the connection has none
        except smtplib.SMTPAuthenticationError as exc:
            client.close()
            raise SmtpLoginRefused(
                f"SMTP server {self.config.where} refused login {self.config.login!r}: "
                f"{exc.smtp_code} {_text(exc.smtp_error)}"
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            client.is_closed = True  # nothing to QUIT; keeps yagmail's __del__ quiet
            raise SmtpUnavailable(f"cannot open an SMTP session with {self.config!r}: {exc}") from exc
        _no_delay(client.smtp)
        self._client = client
        self.opened += 1

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # A session that is already gone needs no QUIT.
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.close()

    def send(self, msg: EmailMessage) -> Reply:
        """MAIL, RCPT and DATA for one message; the reply that decided its fate."""
        self.open()
        assert self._client is not None
        at = _Stage()
        try:
            reply = _transmit(self._client.smtp, msg, at)
        except smtplib.SMTPServerDisconnected as exc:
            reply = Reply(None, f"connection dropped: {exc or 'closed by the server'}", at.stage)
        except smtplib.SMTPResponseException as exc:
            reply = Reply(exc.smtp_code, _text(exc.smtp_error), at.stage)
        except OSError as exc:
            reply = Reply(None, f"connection dropped: {type(exc).__name__}: {exc}", at.stage)
        except (smtplib.SMTPNotSupportedError, UnicodeError) as exc:
            # An address this server cannot carry (non-ASCII without SMTPUTF8): no command with it
            # went out, so nothing can have been stored; a permanent failure, not a bounce.
            reply = Reply(554, f"address not supported by this server: {exc}", at.stage)
            self.close()
        if reply.session_lost:
            self.close()
        return reply

    def __enter__(self) -> SmtpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass
class _Stage:
    """Where a conversation is; read after an exception to record where it failed."""

    stage: str = "CONNECT"


def _transmit(smtp: smtplib.SMTP, msg: EmailMessage, at: _Stage) -> Reply:
    """One transaction, like ``smtplib.sendmail`` but keeping the reply to each step.

    DATA is done by hand rather than with ``smtplib.SMTP.data``, which sends the content,
    the final "." and reads the reply in one call: after a dropped connection or a timeout
    in there, nobody could tell whether the server had seen the end of the message. Here
    ``at.stage`` becomes ``DATA-END`` just before the final "." line goes out, so a failure
    before it is safe to retry (the server discards an unfinished message), and one after it
    is in doubt: the server may have stored the message without our hearing its reply.
    """
    at.stage = "CONNECT"
    smtp.ehlo_or_helo_if_needed()
    sender = parseaddr(msg["From"])[1]
    recipient = parseaddr(msg["To"])[1]
    data = msg.as_bytes()  # MAIL_POLICY: CRLF line endings, as SMTP wants
    options = ["BODY=8BITMIME"] if not data.isascii() and smtp.has_extn("8bitmime") else []
    if not (sender + recipient).isascii() and smtp.has_extn("smtputf8"):
        options.append("SMTPUTF8")
    at.stage = "MAIL"
    code, text = smtp.mail(sender, options)
    if code != 250:
        return _refused(smtp, code, text, "MAIL")
    at.stage = "RCPT"
    code, text = smtp.rcpt(recipient)
    if code not in (250, 251):
        return _refused(smtp, code, text, "RCPT")
    at.stage = "DATA"
    smtp.putcmd("data")
    code, text = smtp.getreply()
    if code != 354:
        return _refused(smtp, code, text, "DATA")
    content = re.sub(rb"(?m)^\.", b"..", data)  # dot-stuffing (RFC 5321 4.5.2)
    smtp.send(content if content.endswith(b"\r\n") else content + b"\r\n")
    if _peer_closed(smtp.sock):
        # The server hung up before it could have seen the end: it discarded the message.
        smtp.close()
        return Reply(None, "connection dropped: closed by the server during DATA", "DATA")
    at.stage = END_OF_DATA  # from here on, the server may have the whole message
    smtp.send(b".\r\n")
    code, text = smtp.getreply()
    return Reply(code, _text(text), END_OF_DATA)


def _peer_closed(sock: socket.socket | None) -> bool:
    """True if the server has already closed the connection (EOF or reset waiting to be read).

    A small message fits in the socket buffers, so writing it succeeds even when the server
    has gone; without this look, such a drop would only show when reading the reply to the
    final ".", where it is in doubt. Peeked on a duplicate of the raw descriptor, so that it
    works under TLS too and consumes nothing. Any doubt answers False (then DATA-END decides).
    """
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        with socket.socket(fileno=os.dup(sock.fileno())) as raw:
            return raw.recv(1, socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)) == b""
    except (BlockingIOError, InterruptedError, ValueError):
        return False
    except OSError:  # ECONNRESET and the like: the server is gone
        return True


def _refused(smtp: smtplib.SMTP, code: int, text: bytes, stage: str) -> Reply:
    if code != 421:
        # End the failed transaction so that the session serves the next message; after a
        # 421 the server closes the session anyway.
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.rset()
    return Reply(code, _text(text), stage)


class _MailPolicy(email.policy.EmailPolicy):
    """SMTP's policy, except that URI-list headers are folded between URIs, never encoded.

    The email package folds a header longer than 78 characters, and a single "word" that is
    still too long (our signed https link is) becomes an RFC 2047 encoded-word, which no
    mail client would recognise as a List-Unsubscribe URI (RFC 2369 wants them verbatim).
    """

    _URI_LISTS = frozenset({"list-unsubscribe"})

    def _uri_list(self, name: str, value: str) -> str:
        # The value passed header_store_parse, which refuses CR and LF; ASCII is required here.
        value.encode("ascii")
        return f"{name}: {value.replace(', ', ',' + self.linesep + ' ')}{self.linesep}"

    def fold(self, name: str, value: str) -> str:
        if name.lower() in self._URI_LISTS:
            return self._uri_list(name, str(value))
        return super().fold(name, value)

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() in self._URI_LISTS:
            return self._uri_list(name, str(value)).encode("ascii")
        return super().fold_binary(name, value)


class _HeaderClasses(headerregistry.HeaderRegistry):
    """The email package's header registry, each header's class made once.

    ``HeaderRegistry`` builds a new class with ``type()`` for every header it parses, which was
    a tenth of the time to build a message (issue 15); the classes hold no state, so one per
    header name serves every message.
    """

    @functools.cache  # noqa: B019 - one registry for the life of the process (MAIL_POLICY)
    def __getitem__(self, name: str) -> type:
        return super().__getitem__(name)


#: The policy of every message we build: SMTP line endings, unsubscribe URIs verbatim.
MAIL_POLICY = _MailPolicy(linesep="\r\n", header_factory=_HeaderClasses())


@dataclass(frozen=True)
class Unsubscribe:
    """Where a recipient unsubscribes: a mailto address and the shop's one-click URL."""

    mailto: str  # unsubscribe@example.com
    url: str  # https://shop.example.com/unsubscribe

    @classmethod
    def for_shop(cls, sender: str, shop_url: str, mailto: str | None = None) -> Unsubscribe:
        domain = parseaddr(sender)[1].rpartition("@")[2] or "example.com"
        return cls(mailto or f"unsubscribe@{domain}", f"{shop_url.rstrip('/')}/unsubscribe")


def unsubscribe_links(
    where: Unsubscribe, secret: bytes, customer_id: int, email_address: str
) -> tuple[str, str]:
    """The signed per-recipient mailto and https links (the token proves who asked)."""
    token = sign(secret, customer_id, email_address)
    return f"mailto:{where.mailto}?subject={quote('unsubscribe ' + token)}", f"{where.url}?token={token}"


def build_message(
    row: dict, sender: str, unsubscribe_mailto: str, unsubscribe_url: str, date: dt.datetime | None = None
) -> EmailMessage:
    """The MIME message for one outbox row: text and HTML alternatives, RFC 8058 headers.

    The Message-ID is the outbox row's, derived from the outbox key, so any resend of the
    same message carries the same id and a receiver (or a test) can spot a duplicate.
    The default policy refuses CR or LF in a header value (``ValueError``).
    """
    msg = EmailMessage(policy=MAIL_POLICY)
    msg["From"] = sender
    msg["To"] = row["email"]
    msg["Subject"] = row["subject"]
    msg["Message-ID"] = row["message_id"]
    msg["Date"] = as_utc(date or row["send_at"])  # a datetime: no round trip through text
    msg["List-Unsubscribe"] = f"<{unsubscribe_mailto}>, <{unsubscribe_url}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["X-Retention-Occasion"] = row["occasion"]
    msg.set_content(row["text_body"])
    msg.add_alternative(row["html_body"], subtype="html")
    return msg
