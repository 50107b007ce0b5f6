"""Render messages from marketing's templates, safely, in the customer's language.

Templates live in ``templates/<occasion>/<language>.jinja`` and extend the shared
``templates/_layout.jinja``. They run in Jinja's immutable sandbox: no attribute
access to Python internals, no file or network access, and an undefined variable
is an error. The HTML part is autoescaped; the subject can never carry CR or LF.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path

import jinja2
from babel.dates import format_date
from babel.numbers import format_currency
from jinja2.sandbox import ImmutableSandboxedEnvironment

from retention.settings import LANGUAGES

__all__ = ["Message", "Renderer", "TemplateProblem", "babel_locale", "salutation"]

#: Babel locale per language, refined by country where the convention differs.
_LOCALES = {"en": "en_GB", "de": "de_DE", "nb": "nb_NO", "et": "et_EE"}
_COUNTRY_LOCALES = {
    ("en", "US"): "en_US",
    ("en", "IE"): "en_IE",
    ("de", "AT"): "de_AT",
    ("de", "CH"): "de_CH",
}

_HEADER_BREAKS = re.compile(r"[\r\n\x00-\x1f\x7f]+")


class TemplateProblem(Exception):
    """A template cannot produce a message; says which file and why."""


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    html: str
    template_hash: str


def babel_locale(language: str, country: str | None = None) -> str:
    return _COUNTRY_LOCALES.get((language, (country or "").upper()), _LOCALES.get(language, "en_GB"))


def salutation(language: str, first_name: str, last_name: str | None) -> str:
    """The opening each language expects in a shop's email (German keeps the polite form)."""
    if language == "de":
        return f"Guten Tag {first_name} {last_name}".strip() if last_name else f"Guten Tag {first_name}"
    if language == "nb":
        return f"Hei {first_name}"
    if language == "et":
        return f"Tere, {first_name}"
    return f"Hi {first_name}"


def format_money(amount: Decimal | float, currency: str, language: str, country: str | None = None) -> str:
    return format_currency(Decimal(str(amount)), currency, locale=babel_locale(language, country))


def format_day(day: dt.date, language: str, country: str | None = None) -> str:
    return format_date(day, format="long", locale=babel_locale(language, country))


class Renderer:
    """Renders one occasion's template for one customer."""

    def __init__(self, templates: Path, default_language: str = "en") -> None:
        self.templates = templates
        self.default_language = default_language
        self._text = _environment(str(templates), autoescape=False)
        self._html = _environment(str(templates), autoescape=True)
        self.strings = _strings(str(templates))

    def template_name(self, occasion: str, language: str) -> str:
        """The template for an occasion in a language, falling back to the default language."""
        for candidate in (language, self.default_language, "en"):
            name = f"{occasion}/{candidate}.jinja"
            if (self.templates / name).is_file():
                return name
        raise TemplateProblem(f"no template for occasion {occasion!r} in {self.templates / occasion}")

    def render(self, occasion: str, language: str, context: dict) -> Message:
        name = self.template_name(occasion, language)
        language = name.split("/")[1].removesuffix(".jinja")
        context = {**context, "language": language, "strings": self.strings.get(language, self.strings["en"])}
        try:
            subject = self._text.get_template(name).render(part="subject", **context)
            text = self._text.get_template(name).render(part="text", **context)
            html = self._html.get_template(name).render(part="html", **context)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateProblem(f"{exc.filename or name}:{exc.lineno}: {exc.message}") from exc
        except jinja2.UndefinedError as exc:
            raise TemplateProblem(f"{name}: {exc.message}") from exc
        except jinja2.TemplateError as exc:
            raise TemplateProblem(f"{name}: {exc}") from exc
        subject = _HEADER_BREAKS.sub(" ", subject).strip()
        if not subject:
            raise TemplateProblem(f"{name}: the subject is empty")
        return Message(
            subject=subject, text=text.strip() + "\n", html=html, template_hash=self.template_hash(name)
        )

    def template_hash(self, name: str) -> str:
        """Content hash of a template and the layout it extends: tells which wording went out."""
        digest = hashlib.sha256()
        for part in (name, "_layout.jinja", "_strings.toml"):
            digest.update((self.templates / part).read_bytes())
        return digest.hexdigest()


@cache
def _environment(path: str, autoescape: bool) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(path),
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


@cache
def _strings(path: str) -> dict[str, dict[str, str]]:
    file = Path(path) / "_strings.toml"
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TemplateProblem(f"{file}: {exc}") from exc
    missing = [lang for lang in LANGUAGES if lang not in data]
    if missing:
        raise TemplateProblem(f"{file}: no strings for {', '.join(missing)}")
    return data
