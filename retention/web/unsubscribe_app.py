"""The public unsubscribe endpoint: RFC 8058 one-click ``POST`` and a confirm page for people.

Every message carries ``List-Unsubscribe: <mailto:...>, <BASE/unsubscribe?token=T>`` and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (``retention.mailer``), where BASE is
``RETENTION_UNSUBSCRIBE_BASE_URL`` (default ``RETENTION_SHOP_URL``).

* ``POST /unsubscribe?token=T`` with the form body ``List-Unsubscribe=One-Click``: what a mail
  client (Gmail, Yahoo, Apple Mail) sends when the reader clicks "Unsubscribe"; the address
  goes on the suppression list at once. The confirm button of the page posts the same.
* ``GET /unsubscribe?token=T``: a small page in the customer's language with a confirm button,
  and the choice to stop only one kind of message (product suggestions, greetings, feedback
  requests, "we miss you" emails, thank-yous: ``retention.unsubscribe.MESSAGE_KINDS``) and keep
  the rest. A GET never unsubscribes: link scanners and mail prefetchers open every link.
* ``POST /unsubscribe?token=T`` with the form body ``kind=<kind>``: what that choice posts; the
  kind goes into ``unsubscribe_preferences`` and the next nights skip its occasions.

The same app serves the answers to the feedback message (``retention.feedback``; README,
"Feedback"), with tokens of their own (signed with the same secret, over another purpose):

* ``GET /feedback?token=T&rating=N``: one of the message's five rating links. The GET itself
  records nothing, for the reason above: link scanners and prefetchers (Outlook's Safe Links,
  Gmail's and corporate gateways' URL checks, chat unfurlers) open every link, and storing on
  GET would let them rate, five times, with the last fetch winning. The page holds the rating
  in a form and a small inline script (CSP nonce) posts it at once, so a person's one click
  records the rating; a fetcher runs no script and records nothing, and without scripts the
  person sees the rating with a "save" button. The residual risk is a scanner that runs pages in
  a full browser: it can record a rating; a person's later click changes it (last answer wins),
  and a follow-up it opened closes when the rating is raised. The comment form is on the page.
  Without ``rating`` (the message's comment link) the page offers the five ratings and the form.
* ``POST /feedback`` (form: ``token``, ``rating`` 1..5, optional ``comment`` up to
  ``retention.feedback.COMMENT_MAX_CHARS``): stores the answer; one row per order, so a second
  click changes the rating and never adds one. A low rating opens a follow-up for the shop.

Idempotent: a second click answers the same and changes nothing. A token that does not verify
(forged, altered, for an address or an order the warehouse no longer holds, or a token of the
other purpose) gets a 400 and changes nothing. Requests are rate-limited per client address.

Run it alone with ``uvicorn --factory retention.web.unsubscribe_app:create_unsubscribe_app`` (the path is then
``/unsubscribe``), or inside Airflow's api-server through ``plugins/retention_ui.py``
(mounted under ``/retention-public``). The README shows how a reverse proxy exposes these
paths (``/unsubscribe`` and ``/feedback``), and only these.
"""

from __future__ import annotations

import datetime as dt
import html
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse
from sqlalchemy import Engine, select
from starlette.concurrency import run_in_threadpool

from retention import feedback as fb
from retention import schema
from retention.db import engine_for
from retention.night import utcnow
from retention.settings import LANGUAGES, Settings
from retention.unsubscribe import (
    MESSAGE_KINDS,
    email_hash,
    record_preference,
    record_unsubscribe,
    secret_from_env,
    verify,
)

__all__ = [
    "RateLimiter",
    "Unsubscriber",
    "FeedbackPages",
    "create_unsubscribe_app",
    "lookup_token",
    "TEXTS",
    "KIND_TEXTS",
    "FEEDBACK_TEXTS",
]

ONE_CLICK = "List-Unsubscribe=One-Click"

#: The page's words per language (the languages of ``templates/``).
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Unsubscribe",
        "question": "Do you want to stop receiving emails from {shop} at {email}?",
        "button": "Yes, unsubscribe me",
        "done": "Done: {email} will receive no more emails from {shop}.",
        "invalid": "This unsubscribe link is not valid: it was altered, or it is for an address we no "
        "longer hold. Please use the link from the email you received.",
        "only": "Or stop just one kind of email and keep getting the rest:",
        "only_button": "Stop only these emails",
        "already": "(already stopped)",
        "kind_done": "Done: {email} will no longer get “{kind}” from {shop}. Everything else arrives as before.",
    },
    "de": {
        "title": "Abmelden",
        "question": "Möchten Sie unter {email} keine E-Mails mehr von {shop} erhalten?",
        "button": "Ja, abmelden",
        "done": "Erledigt: {email} erhält keine E-Mails mehr von {shop}.",
        "invalid": "Dieser Abmeldelink ist ungültig: Er wurde verändert oder gehört zu einer Adresse, die "
        "wir nicht mehr führen. Bitte nutzen Sie den Link aus der erhaltenen E-Mail.",
        "only": "Oder bestellen Sie nur eine Art von E-Mails ab – alle anderen bekommen Sie weiterhin:",
        "only_button": "Nur diese E-Mails abbestellen",
        "already": "(bereits abbestellt)",
        "kind_done": "Erledigt: „{kind}“ schicken wir nicht mehr an {email}. Alle anderen E-Mails von {shop} "
        "erhalten Sie weiterhin.",
    },
    "nb": {
        "title": "Meld deg av",
        "question": "Vil du slutte å få e-post fra {shop} på {email}?",
        "button": "Ja, meld meg av",
        "done": "Ferdig: {email} får ikke flere e-poster fra {shop}.",
        "invalid": "Denne avmeldingslenken er ugyldig: den er endret, eller den gjelder en adresse vi ikke "
        "lenger har. Bruk lenken fra e-posten du fikk.",
        "only": "Eller stopp bare én type e-post og få resten som før:",
        "only_button": "Stopp bare disse e-postene",
        "already": "(allerede stoppet)",
        "kind_done": "Ferdig: {email} får ikke lenger «{kind}» fra {shop}. Alt annet kommer som før.",
    },
    "et": {
        "title": "Loobu kirjadest",
        "question": "Kas soovite, et {shop} ei saadaks enam kirju aadressile {email}?",
        "button": "Jah, loobun",
        "done": "Valmis: aadressile {email} ei saadeta enam kirju poelt {shop}.",
        "invalid": "See loobumislink ei kehti: seda on muudetud või see kuulub aadressile, mida meil enam "
        "ei ole. Palun kasutage saadud kirjas olevat linki.",
        "only": "Või loobuge ainult ühest kirjaliigist – kõik teised kirjad tulevad edasi:",
        "only_button": "Loobun ainult neist kirjadest",
        "already": "(juba loobutud)",
        "kind_done": "Valmis: {shop} ei saada aadressile {email} enam kirju „{kind}“. Kõik muud kirjad tulevad "
        "endiselt.",
    },
}

#: The kinds of message (``retention.unsubscribe.MESSAGE_KINDS``) as the page names them.
KIND_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "suggestions": "Product suggestions",
        "greetings": "Birthday and anniversary greetings",
        "feedback": "Requests to review your order",
        "win_back": "“We miss you” emails",
        "thank_you": "Thank-you emails after an order",
    },
    "de": {
        "suggestions": "Produktempfehlungen",
        "greetings": "Glückwünsche zum Geburtstag und zum Kundenjubiläum",
        "feedback": "Bitten um eine Bewertung Ihrer Bestellung",
        "win_back": "Erinnerungen, wenn Sie länger nicht bestellt haben",
        "thank_you": "Dankeschön-Mails nach einer Bestellung",
    },
    "nb": {
        "suggestions": "Produktforslag",
        "greetings": "Bursdags- og jubileumshilsener",
        "feedback": "Forespørsler om å vurdere bestillingen din",
        "win_back": "Påminnelser når du ikke har handlet på en stund",
        "thank_you": "Takkemeldinger etter en bestilling",
    },
    "et": {
        "suggestions": "Tootesoovitused",
        "greetings": "Sünnipäeva- ja aastapäevatervitused",
        "feedback": "Palved tellimust hinnata",
        "win_back": "Meeldetuletused, kui te pole mõnda aega ostnud",
        "thank_you": "Tänukirjad pärast tellimust",
    },
}

#: A page that leaks nothing: no referrer (the token is in the URL), no scripts, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class RateLimiter:
    """At most ``limit`` requests per ``window`` seconds for each client address (fixed window).

    Written by hand: one process needs only a counter per address, and the libraries for it
    (slowapi, limits) would be a new dependency for twenty lines. Behind a reverse proxy the
    client address is the proxy's unless the server honours ``X-Forwarded-For`` (uvicorn's
    ``--proxy-headers --forwarded-allow-ips``, ``airflow api-server --proxy-headers``); the proxy
    itself can also limit (the README's nginx example does).
    ``clock`` is injectable for tests.
    """

    def __init__(self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._counts: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> tuple[bool, int]:
        """Whether ``client`` may make one more request now, and the seconds until its window resets."""
        now = self.clock()
        with self._lock:
            if len(self._counts) > 10_000:  # forget finished windows, so the table stays small
                self._counts = {k: v for k, v in self._counts.items() if now - v[0] < self.window}
            start, count = self._counts.get(client, (now, 0))
            if now - start >= self.window:
                start, count = now, 0
            self._counts[client] = (start, count + 1)
            return count < self.limit, max(1, int(start + self.window - now + 0.999))


@dataclass(frozen=True)
class Recipient:
    """Who a genuine token was issued for."""

    customer_id: int
    email: str
    language: str


def lookup_token(engine: Engine, secret: bytes, token: str, default_language: str) -> Recipient | None:
    """The recipient a token was issued for, or ``None`` if it does not verify.

    A token names a customer and signs (customer, address). The address is the customer's
    current one or one a message was sent to (the outbox keeps it; both are read by the
    customer id, through the staging key and the outbox key's leading column).
    """
    customer, _, _ = (token or "").partition(".")
    if not customer.isascii() or not customer.isdigit() or len(customer) > 19:
        return None
    customer_id = int(customer)
    if customer_id > 2**63 - 1:
        return None
    c, box = schema.stg_customers, schema.outbox
    with engine.connect() as conn:
        current = conn.execute(select(c.c.email, c.c.language).where(c.c.customer_id == customer_id)).first()
        candidates = [current.email] if current else []
        candidates += [
            row.email
            for row in conn.execute(select(box.c.email).where(box.c.customer_id == customer_id).distinct())
        ]
        language = current.language if current else None
        if language is None:
            language = conn.execute(
                select(box.c.language).where(box.c.customer_id == customer_id).limit(1)
            ).scalar()
    for email in dict.fromkeys(candidates):
        if verify(secret, token, email) == customer_id:
            lang = language if language in LANGUAGES else default_language
            return Recipient(customer_id, email, lang)
    return None


def _is_suppressed(engine: Engine, email: str) -> bool:
    s = schema.suppression
    with engine.connect() as conn:
        return (
            conn.execute(select(s.c.email_hash).where(s.c.email_hash == email_hash(email))).first()
            is not None
        )


def _stopped_kinds(engine: Engine, email: str) -> set[str]:
    p = schema.unsubscribe_preferences
    with engine.connect() as conn:
        return set(conn.execute(select(p.c.kind).where(p.c.email_hash == email_hash(email))).scalars())


def _page(language: str, title: str, body: str, status: int = 200) -> HTMLResponse:
    doc = f"""<!doctype html>
<html lang="{language}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{html.escape(title)}</title>
<style>
 body {{ font-family: system-ui, sans-serif; background: #f4f4f6; margin: 0; padding: 3rem 1rem; }}
 main {{ max-width: 32rem; margin: auto; background: #fff; border-radius: 8px; padding: 2rem;
        box-shadow: 0 1px 3px rgba(0,0,0,.15); }}
 button {{ font-size: 1rem; padding: .6rem 1.2rem; border: 0; border-radius: 4px; background: #1f5fa8;
          color: #fff; cursor: pointer; }}
 button.secondary {{ background: #fff; color: #1f5fa8; border: 1px solid #1f5fa8; }}
 #kinds {{ margin-top: 2rem; border-top: 1px solid #e1e4e8; padding-top: 1rem; }}
 #kinds label {{ display: block; margin: .4rem 0; }} #kinds .muted {{ color: #6e7781; }}
</style></head>
<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>
"""
    return HTMLResponse(doc, status_code=status, headers=SECURITY_HEADERS)


class Unsubscriber:
    """What the endpoints do, apart from HTTP: look a token up, render a page, suppress."""

    def __init__(self, settings: Settings, secret: Callable[[], bytes], engine: Engine) -> None:
        self.settings, self.secret, self.engine = settings, secret, engine

    def texts(self, language: str) -> dict[str, str]:
        return TEXTS.get(language) or TEXTS[self.settings.default_language]

    def fmt(self, text: str, email: str = "") -> str:
        return html.escape(text.format(shop=self.settings.shop_name, email=email))

    def invalid(self) -> HTMLResponse:
        language = self.settings.default_language
        words = self.texts(language)
        return _page(
            language, words["title"], f"<p id='invalid'>{self.fmt(words['invalid'])}</p>", status=400
        )

    def recipient(self, token: str, key: bytes | None = None) -> Recipient | None:
        return lookup_token(self.engine, key or self.secret(), token, self.settings.default_language)

    def confirm_page(self, token: str) -> HTMLResponse:
        recipient = self.recipient(token)
        if recipient is None:
            return self.invalid()
        words = self.texts(recipient.language)
        body = (
            f"<p>{self.fmt(words['question'], recipient.email)}</p>"
            f"<form method='post'><input type='hidden' name='List-Unsubscribe' value='One-Click'>"
            f"<button type='submit' id='confirm'>{self.fmt(words['button'])}</button></form>"
            f"{self.kinds_form(recipient)}"
        )
        return _page(recipient.language, words["title"], body)

    def kind_names(self, language: str) -> dict[str, str]:
        return KIND_TEXTS.get(language) or KIND_TEXTS[self.settings.default_language]

    def kinds_form(self, recipient: Recipient) -> str:
        """The choice to stop one kind of message; kinds already stopped are shown, not offered."""
        words, names = self.texts(recipient.language), self.kind_names(recipient.language)
        stopped = _stopped_kinds(self.engine, recipient.email)
        choices = []
        for kind in MESSAGE_KINDS:
            name = html.escape(names[kind])
            if kind in stopped:
                choices.append(
                    f"<label class='muted'><input type='radio' disabled> {name} {self.fmt(words['already'])}</label>"
                )
            else:
                choices.append(
                    f"<label><input type='radio' name='kind' value='{kind}' id='kind-{kind}' required> {name}</label>"
                )
        button = ""
        if len(stopped) < len(MESSAGE_KINDS):
            button = f"<button type='submit' id='stop-kind' class='secondary'>{self.fmt(words['only_button'])}</button>"
        return f"<form method='post' id='kinds'><p>{self.fmt(words['only'])}</p>{''.join(choices)}{button}</form>"

    def stop_kind(self, token: str, kind: str) -> HTMLResponse:
        """Stop one kind of message for the token's address (idempotent); the others go on."""
        key = self.secret()
        recipient = self.recipient(token, key)
        if recipient is None:
            return self.invalid()
        if kind not in MESSAGE_KINDS:
            return PlainTextResponse(
                f"unknown kind of message {kind[:40]!r}; one of: {', '.join(MESSAGE_KINDS)}",
                status_code=400,
                headers=SECURITY_HEADERS,
            )
        if kind not in _stopped_kinds(self.engine, recipient.email):
            today = dt.datetime.now(self.settings.zone).date()  # an audit date, as for unsubscribe()
            with self.engine.begin() as conn:
                record_preference(conn, token, recipient.email, key, kind, today)
        words = self.texts(recipient.language)
        name = self.kind_names(recipient.language)[kind]
        done = html.escape(
            words["kind_done"].format(shop=self.settings.shop_name, email=recipient.email, kind=name)
        )
        return _page(recipient.language, words["title"], f"<p id='done'>{done}</p>")

    def unsubscribe(self, token: str) -> HTMLResponse:
        key = self.secret()
        recipient = self.recipient(token, key)
        if recipient is None:
            return self.invalid()
        if not _is_suppressed(self.engine, recipient.email):
            # The web request is not a nightly task: the shop's calendar date of the click is
            # recorded as the suppression's date (an audit field; nothing schedules by it).
            today = dt.datetime.now(self.settings.zone).date()
            with self.engine.begin() as conn:
                record_unsubscribe(conn, token, recipient.email, key, today)
        words = self.texts(recipient.language)
        done = self.fmt(words["done"], recipient.email)
        return _page(recipient.language, words["title"], f"<p id='done'>{done}</p>")


# --- feedback (retention.feedback) ------------------------------------------------------------------

#: The feedback pages' words per language. {order}: the order number, {rating}: 1..5, {max}: the
#: longest comment. German says "Sie", Norwegian and Estonian the informal "du"/"sina", as the
#: messages do (templates/README.md).
FEEDBACK_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "How was your order?",
        "question": "How happy are you with order no. {order}?",
        "your_rating": "Your rating of order no. {order}: {rating} of 5",
        "save": "Save my rating",
        "saving": "Saving your rating…",
        "saved": "Thank you! Your rating of {rating} of 5 is saved.",
        "comment": "Anything you'd like to tell us? (optional, up to {max} characters)",
        "send": "Send",
        "thanks": "Thank you for your feedback – it really helps us.",
        "sorry": "We're sorry your order wasn't what it should have been. Our team will look into it.",
        "change": "Changed your mind? Pick another rating or add a few words:",
        "empty": "Please choose a rating or write a few words.",
        "too_long": "Your comment is a little too long: please keep it to {max} characters.",
        "invalid": "This feedback link is not valid: it was altered, or it is for an order we no longer hold. "
        "Please use the link from the email you received.",
        "low": "poor",
        "high": "excellent",
    },
    "de": {
        "title": "Wie war Ihre Bestellung?",
        "question": "Wie zufrieden sind Sie mit Ihrer Bestellung Nr. {order}?",
        "your_rating": "Ihre Bewertung der Bestellung Nr. {order}: {rating} von 5",
        "save": "Bewertung speichern",
        "saving": "Ihre Bewertung wird gespeichert …",
        "saved": "Vielen Dank! Ihre Bewertung ({rating} von 5) ist gespeichert.",
        "comment": "Möchten Sie uns noch etwas mitteilen? (freiwillig, bis zu {max} Zeichen)",
        "send": "Absenden",
        "thanks": "Vielen Dank für Ihre Rückmeldung – sie hilft uns wirklich weiter.",
        "sorry": "Es tut uns leid, dass bei Ihrer Bestellung nicht alles so war, wie es sein sollte. "
        "Wir kümmern uns darum.",
        "change": "Sie möchten Ihre Bewertung ändern? Wählen Sie einfach neu oder schreiben Sie uns ein paar Worte:",
        "empty": "Bitte wählen Sie eine Bewertung oder schreiben Sie uns ein paar Worte.",
        "too_long": "Ihr Kommentar ist etwas zu lang: Bitte fassen Sie sich in höchstens {max} Zeichen.",
        "invalid": "Dieser Link zur Bewertung ist ungültig: Er wurde verändert oder gehört zu einer Bestellung, die "
        "wir nicht mehr führen. Bitte nutzen Sie den Link aus der erhaltenen E-Mail.",
        "low": "schlecht",
        "high": "ausgezeichnet",
    },
    "nb": {
        "title": "Hvordan var bestillingen?",
        "question": "Hvor fornøyd er du med bestillingen din (ordrenr. {order})?",
        "your_rating": "Din vurdering av ordrenr. {order}: {rating} av 5",
        "save": "Lagre vurderingen",
        "saving": "Lagrer vurderingen din …",
        "saved": "Tusen takk! Vurderingen din ({rating} av 5) er lagret.",
        "comment": "Er det noe du vil fortelle oss? (valgfritt, opptil {max} tegn)",
        "send": "Send",
        "thanks": "Tusen takk for tilbakemeldingen – den hjelper oss virkelig.",
        "sorry": "Så leit at bestillingen ikke ble som den skulle. Vi ser på saken.",
        "change": "Ombestemt deg? Velg en annen vurdering eller skriv noen ord:",
        "empty": "Velg en vurdering eller skriv noen ord.",
        "too_long": "Kommentaren er litt for lang: hold deg til {max} tegn.",
        "invalid": "Denne lenken er ugyldig: den er endret, eller den gjelder en bestilling vi ikke lenger har. "
        "Bruk lenken fra e-posten du fikk.",
        "low": "dårlig",
        "high": "utmerket",
    },
    "et": {
        "title": "Kuidas tellimusega läks?",
        "question": "Kui rahul oled tellimusega nr {order}?",
        "your_rating": "Sinu hinnang tellimusele nr {order}: {rating} / 5",
        "save": "Salvesta hinnang",
        "saving": "Salvestame sinu hinnangut …",
        "saved": "Suur aitäh! Sinu hinnang ({rating} / 5) on salvestatud.",
        "comment": "Kas soovid veel midagi öelda? (vabatahtlik, kuni {max} tähemärki)",
        "send": "Saada",
        "thanks": "Suur aitäh tagasiside eest – see aitab meid väga.",
        "sorry": "Meil on väga kahju, et tellimusega ei läinud kõik nii, nagu pidi. Tegeleme sellega.",
        "change": "Mõtlesid ümber? Vali uus hinnang või kirjuta paar sõna:",
        "empty": "Palun vali hinnang või kirjuta paar sõna.",
        "too_long": "Kommentaar on pisut liiga pikk: palun mahu {max} tähemärgi sisse.",
        "invalid": "See link ei kehti: seda on muudetud või see kuulub tellimusele, mida meil enam ei ole. "
        "Palun kasutage saadud kirjas olevat linki.",
        "low": "halb",
        "high": "suurepärane",
    },
}

#: Largest request body ``POST /feedback`` reads (a comment is at most 2000 characters).
FEEDBACK_MAX_BODY = 64 * 1024

#: Posts the rating of a one-click link at once (see the module docs): the form stays as the
#: fallback when scripts do not run, or when the post fails.
_RATE_SCRIPT = """
const form = document.getElementById("rate");
if (form) {
  const status = document.getElementById("status");
  status.textContent = form.dataset.saving;
  fetch(form.action, {method: "POST", body: new URLSearchParams(new FormData(form)), credentials: "omit"})
    .then((reply) => {
      if (!reply.ok) throw new Error(String(reply.status));
      form.hidden = true;
      status.textContent = form.dataset.saved;
      status.dataset.saved = form.querySelector("input[name=rating]").value;
    })
    .catch(() => { status.textContent = ""; });
}
"""


class FeedbackPages:
    """What ``/feedback`` does, apart from HTTP: check a token, render a page, store an answer."""

    def __init__(self, settings: Settings, secret: Callable[[], bytes], engine: Engine) -> None:
        self.settings, self.secret, self.engine = settings, secret, engine

    def words(self, language: str) -> dict[str, str]:
        return FEEDBACK_TEXTS.get(language) or FEEDBACK_TEXTS[self.settings.default_language]

    def _language(self, customer_id: int) -> str:
        c, box = schema.stg_customers, schema.outbox
        with self.engine.connect() as conn:
            language = conn.execute(select(c.c.language).where(c.c.customer_id == customer_id)).scalar()
            if language is None:
                language = conn.execute(
                    select(box.c.language).where(box.c.customer_id == customer_id).limit(1)
                ).scalar()
        return language if language in LANGUAGES else self.settings.default_language

    def _say(self, words: dict[str, str], key: str, **values: object) -> str:
        return html.escape(words[key].format(max=fb.COMMENT_MAX_CHARS, **values))

    def invalid(self, status: int = 400) -> HTMLResponse:
        language = self.settings.default_language
        words = self.words(language)
        return _page(
            language, words["title"], f"<p id='invalid'>{self._say(words, 'invalid')}</p>", status=status
        )

    def _genuine(self, token: str) -> tuple[int, int] | None:
        """The (customer, order) of a genuine token whose order the warehouse still holds."""
        ids = fb.verify(self.secret(), token)
        if ids is None:
            return None
        o = schema.stg_orders
        with self.engine.connect() as conn:
            held = conn.execute(
                select(o.c.order_id).where(o.c.order_id == ids[1], o.c.customer_id == ids[0])
            ).first()
        return ids if held else None

    def _comment_form(
        self, token: str, words: dict[str, str], rating: int | None, comment: str | None
    ) -> str:
        choices = "".join(
            f"<label class='r'><input type='radio' name='rating' value='{n}' id='rating-{n}'"
            f"{' checked' if n == rating else ''}> {n}</label>"
            for n in fb.RATINGS
        )
        scale = (
            f"<p class='scale'><span>1 = {self._say(words, 'low')}</span> "
            f"<span>5 = {self._say(words, 'high')}</span></p>"
        )
        return (
            f"<form method='post' action='feedback' id='comment-form'>"
            f"<input type='hidden' name='token' value='{html.escape(token)}'>"
            f"<fieldset id='ratings'>{choices}{scale}</fieldset>"
            f"<label for='comment'>{self._say(words, 'comment')}</label>"
            f"<textarea name='comment' id='comment' rows='5' maxlength='{fb.COMMENT_MAX_CHARS}'>"
            f"{html.escape(comment or '')}</textarea>"
            f"<button type='submit' id='send'>{self._say(words, 'send')}</button></form>"
        )

    def page(self, token: str, rating_text: str) -> HTMLResponse:
        """The page of a rating link (or of the comment link, without a rating): records nothing."""
        ids = self._genuine(token)
        if ids is None:
            return self.invalid()
        customer_id, order_id = ids
        language = self._language(customer_id)
        words = self.words(language)
        with self.engine.connect() as conn:
            stored = fb.current_answer(conn, customer_id, order_id)
        rating = fb.parse_rating(rating_text)
        shown = rating if rating is not None else (stored.rating if stored else None)
        body, nonce = "", None
        if rating is not None:
            nonce = secrets.token_urlsafe(16)
            body += (
                f"<form method='post' action='feedback' id='rate' "
                f"data-saving='{self._say(words, 'saving')}' "
                f"data-saved='{self._say(words, 'saved', rating=rating)}'>"
                f"<input type='hidden' name='token' value='{html.escape(token)}'>"
                f"<input type='hidden' name='rating' value='{rating}'>"
                f"<p class='stars' aria-hidden='true'>{'★' * rating}{'☆' * (5 - rating)}</p>"
                f"<p>{self._say(words, 'your_rating', order=order_id, rating=rating)}</p>"
                f"<button type='submit' id='save-rating'>{self._say(words, 'save')}</button></form>"
                f"<p id='status' role='status'></p>"
                f"<p class='change'>{self._say(words, 'change')}</p>"
            )
        else:
            body += f"<p>{self._say(words, 'question', order=order_id)}</p>"
        body += self._comment_form(token, words, shown, stored.comment if stored else None)
        if nonce:
            body += f"<script nonce='{nonce}'>{_RATE_SCRIPT}</script>"
        return _feedback_page(language, words["title"], body, nonce=nonce)

    def _refused(
        self,
        token: str,
        words: dict[str, str],
        language: str,
        why: str,
        rating: int | None,
        comment: str | None,
    ) -> HTMLResponse:
        """A 400 page that says what to change, with the form as it was sent (the comment cut to size)."""
        form = self._comment_form(token, words, rating, comment[: fb.COMMENT_MAX_CHARS] if comment else None)
        return _feedback_page(
            language, words["title"], f"<p id='error'>{self._say(words, why)}</p>{form}", 400
        )

    def answer(self, token: str, rating_text: str, comment: str | None) -> HTMLResponse:
        """Store an answer (``POST /feedback``) and thank; a 400 page for anything not storable."""
        key = self.secret()
        ids = fb.verify(key, token)
        if ids is None:
            return self.invalid()
        language = self._language(ids[0])
        words = self.words(language)
        rating = fb.parse_rating(rating_text) if rating_text else None
        if rating_text and rating is None:
            return self._refused(token, words, language, "empty", None, comment)
        try:
            text = fb.clean_comment(comment)
        except fb.InvalidAnswer:
            return self._refused(token, words, language, "too_long", rating, comment)
        try:
            with self.engine.begin() as conn:
                # The request's moment is the answer's (an audit time, as for an unsubscribe).
                stored = fb.record_answer(
                    conn,
                    key,
                    token,
                    rating,
                    None if comment is None else (text or ""),
                    utcnow(),
                    self.settings.feedback_low_rating,
                )
        except fb.UnknownOrder:
            return self.invalid()
        except fb.InvalidAnswer:
            return self._refused(token, words, language, "empty", rating, comment)
        body = f"<p id='thanks'>{self._say(words, 'thanks')}</p>"
        if stored.rating is not None:
            body += f"<p id='stored'>{self._say(words, 'your_rating', order=stored.order_id, rating=stored.rating)}</p>"
        if stored.rating is not None and stored.rating <= self.settings.feedback_low_rating:
            body += f"<p id='sorry'>{self._say(words, 'sorry')}</p>"
        body += f"<p class='change'>{self._say(words, 'change')}</p>"
        body += self._comment_form(token, words, stored.rating, stored.comment)
        return _feedback_page(language, words["title"], body)


_FEEDBACK_STYLE = """<style>
 .stars { font-size: 2rem; color: #d4a72c; margin: 0; letter-spacing: .2rem; }
 #ratings { border: 0; padding: 0; margin: 1rem 0; } #ratings label.r { margin-right: 1rem; font-size: 1.1rem; }
 .scale { color: #6e7781; font-size: .85rem; margin: .3rem 0 0; } .scale span { margin-right: 1rem; }
 textarea { width: 100%; box-sizing: border-box; margin: .4rem 0 1rem; font: inherit; }
 #status { color: #1a7f37; font-weight: 600; } #error { color: #cf222e; } .change { font-weight: 600; margin-top: 1.5rem; }
</style>"""


def _feedback_page(
    language: str, title: str, body: str, status: int = 200, nonce: str | None = None
) -> HTMLResponse:
    """A feedback page: the unsubscribe page's frame, plus the one inline script its nonce allows."""
    response = _page(language, title, _FEEDBACK_STYLE + body, status=status)
    if nonce:
        # Only this response's own script may run, and it may only post back here.
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'"
        )
    return response


def create_unsubscribe_app(
    settings: Settings | None = None,
    secret: Callable[[], bytes] = secret_from_env,
    engine: Engine | None = None,
    limiter: RateLimiter | None = None,
) -> FastAPI:
    """The unsubscribe app. ``secret`` is called per request (a rotated secret needs no restart)."""
    settings = settings or Settings()
    engine = engine or engine_for(settings.warehouse)
    service = Unsubscriber(settings, secret, engine)
    answers = FeedbackPages(settings, secret, engine)
    limiter = limiter or RateLimiter(settings.unsubscribe_rate_per_minute)
    app = FastAPI(title="Retention unsubscribe", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def rate_limit(request: Request, call_next):  # noqa: ANN001, ANN202 (Starlette's signature)
        client = request.client.host if request.client else "unknown"
        allowed, retry_after = limiter.allow(client)
        if not allowed:
            return PlainTextResponse(
                "Too many requests; try again later.",
                status_code=429,
                headers={"Retry-After": str(retry_after)},
            )
        return await call_next(request)

    @app.get("/unsubscribe", response_class=HTMLResponse)
    def confirm_page(token: str = "") -> HTMLResponse:
        return service.confirm_page(token)

    @app.post("/unsubscribe", response_class=HTMLResponse)
    async def one_click(request: Request, token: str = "") -> HTMLResponse:
        form = await request.form()
        token = token or str(form.get("token") or "")
        if "List-Unsubscribe" not in form and "kind" in form:  # the page's "only this kind" choice
            return await run_in_threadpool(service.stop_kind, token, str(form.get("kind")))
        if form.get("List-Unsubscribe") != "One-Click":
            return PlainTextResponse(
                f"a one-click unsubscribe POST needs the body {ONE_CLICK} (RFC 8058), "
                "or kind=<kind> to stop one kind of message",
                status_code=400,
            )
        return await run_in_threadpool(service.unsubscribe, token)

    _feedback_routes(app, answers)

    @app.get("/healthz", response_class=PlainTextResponse)
    def health() -> str:
        return "ok"

    return app


def _feedback_routes(app: FastAPI, answers: FeedbackPages) -> None:
    """``GET /feedback`` (a page that records nothing) and ``POST /feedback`` (the answer)."""

    @app.get("/feedback", response_class=HTMLResponse)
    def feedback_page(token: str = "", rating: str = "") -> HTMLResponse:
        return answers.page(token, rating)

    @app.post("/feedback", response_class=HTMLResponse)
    async def feedback_answer(request: Request) -> HTMLResponse:
        length = request.headers.get("content-length") or "0"
        if not length.isdigit() or int(length) > FEEDBACK_MAX_BODY:
            return PlainTextResponse("request body too large", status_code=413, headers=SECURITY_HEADERS)
        form = await request.form()
        comment = form.get("comment")
        return await run_in_threadpool(
            answers.answer,
            str(form.get("token") or request.query_params.get("token") or ""),
            str(form.get("rating") or ""),
            None if comment is None else str(comment),
        )
