"""Render messages from marketing's templates, safely, in the customer's language.

Templates live in ``templates/<occasion>/<language>.jinja`` and extend the shared
``templates/_layout.jinja``, filling the blocks ``subject``, ``text`` and ``html``; the
layout picks the part to render from the variable ``part`` and adds the signature and
the unsubscribe link, so no template can forget it.

They run in Jinja's immutable sandbox: no attribute access to Python internals, no
globals that do I/O, templates can only include files inside the templates folder,
and an undefined variable is an error naming file and line. The HTML part is
autoescaped and its CSS inlined (``css-inline``, with every stylesheet loading turned
off); the subject never carries CR, LF or another control character into a header.

The fallback chain for a language is: the customer's language, then the default
language, then ``en``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from types import TracebackType

import css_inline
import jinja2
from babel.dates import format_date
from babel.numbers import format_currency
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from retention.settings import LANGUAGES

__all__ = [
    "LAYOUT",
    "PARTS",
    "Draft",
    "Message",
    "Renderer",
    "TemplateProblem",
    "babel_locale",
    "clean_subject",
    "format_day",
    "format_money",
    "salutation",
]

#: The shared layout every message template extends.
LAYOUT = "_layout.jinja"
#: The parts of a message, in the order they are rendered; each is a block in a template.
PARTS = ("subject", "text", "html")

#: Babel locale per language, refined by country where the convention differs.
_LOCALES = {"en": "en_GB", "de": "de_DE", "nb": "nb_NO", "et": "et_EE"}
_COUNTRY_LOCALES = {
    ("en", "US"): "en_US",
    ("en", "IE"): "en_IE",
    ("de", "AT"): "de_AT",
    ("de", "CH"): "de_CH",
}

#: Anything that could end a header line or smuggle in another one.
_HEADER_BREAKS = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")

# Stylesheets are never fetched, neither remote nor local (css-inline reads local
# `<link href="/etc/...">` files unless told not to); @media rules stay in a <style>.
_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False, keep_link_tags=False, keep_at_rules=True)


class TemplateProblem(Exception):
    """A template cannot produce a message; says which file, which line and why."""

    def __init__(self, reason: str, file: str | None = None, line: int | None = None) -> None:
        self.reason, self.file, self.line = reason, file, line
        where = f"{file}:{line}: " if file and line else f"{file}: " if file else ""
        super().__init__(f"{where}{reason}")


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    html: str
    template_hash: str


@dataclass(frozen=True)
class Draft:
    """The parts of a message exactly as the template rendered them (for lint and preview)."""

    name: str  # template name relative to the templates folder, e.g. "birthday/de.jinja"
    language: str  # language of the template actually used (after the fallback chain)
    subject: str
    text: str
    html: str


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


def clean_subject(subject: str) -> str:
    """The subject as it may go into a header: control characters collapsed to one space."""
    return " ".join(_HEADER_BREAKS.sub(" ", subject).split())


class Renderer:
    """Renders one occasion's template for one customer."""

    def __init__(self, templates: Path, default_language: str = "en") -> None:
        self.templates = Path(templates)
        self.default_language = default_language
        folder = str(self.templates.resolve())
        self._environments = {
            False: _environment(folder, autoescape=False),
            True: _environment(folder, autoescape=True),
        }
        self.strings = _toml(folder, "_strings.toml", _mtime(self.templates / "_strings.toml"))
        missing = [lang for lang in LANGUAGES if lang not in self.strings]
        if missing:
            raise TemplateProblem(f"no strings for {', '.join(missing)}", "_strings.toml")
        categories = self.templates / "_categories.toml"
        self.categories = _toml(folder, categories.name, _mtime(categories)) if categories.is_file() else {}

    def environment(self, autoescape: bool) -> ImmutableSandboxedEnvironment:
        """The sandboxed environment for the text parts (False) or the HTML part (True)."""
        return self._environments[autoescape]

    def template_name(self, occasion: str, language: str) -> str:
        """The template for an occasion in a language, falling back to the default language, then en."""
        for candidate in (language, self.default_language, "en"):
            name = f"{occasion}/{candidate}.jinja"
            if (self.templates / name).is_file():
                return name
        raise TemplateProblem(f"no template for occasion {occasion!r} in {self.templates / occasion}")

    def render(self, occasion: str, language: str, context: dict) -> Message:
        """The message of an occasion in the customer's language (or its fallback)."""
        return self.render_template(self.template_name(occasion, language), context)

    def render_template(self, name: str, context: dict) -> Message:
        """One template file rendered into a message that is safe to send."""
        draft = self.draft(name, context)
        subject = clean_subject(draft.subject)
        if not subject:
            raise TemplateProblem("the subject is empty", name)
        try:
            html = _INLINER.inline(draft.html)
        except (ValueError, css_inline.InlineError) as exc:
            raise TemplateProblem(f"the HTML part's CSS cannot be inlined: {exc}", name) from exc
        return Message(
            subject=subject, text=draft.text.strip() + "\n", html=html, template_hash=self.template_hash(name)
        )

    def draft(self, name: str, context: dict) -> Draft:
        """The three parts exactly as rendered: no subject cleaning, no CSS inlining."""
        language = name.rpartition("/")[2].removesuffix(".jinja")
        full = self.full_context(language, context)
        parts = {part: self._render_part(name, part, full) for part in PARTS}
        return Draft(name=name, language=language, **parts)

    def full_context(self, language: str, context: dict) -> dict:
        """The caller's context plus what the renderer adds: language, strings, category_name."""
        full = {**context, "language": language, "strings": self._by_language(self.strings, language)}
        if "category" in context:
            names = self._by_language(self.categories, language) if self.categories else {}
            # A category marketing has not named yet still reads as something: its raw name.
            full["category_name"] = names.get(str(context["category"]), str(context["category"]))
        return full

    def render_block(self, name: str, block: str, context: dict, autoescape: bool) -> str:
        """One block of a template on its own (lint uses it to find parts that come out empty)."""
        language = name.rpartition("/")[2].removesuffix(".jinja")
        try:
            template = self.environment(autoescape).get_template(name)
            render = template.blocks.get(block)
            if render is None:
                return ""
            ctx = template.new_context(self.full_context(language, context))
            return "".join(render(ctx))
        except jinja2.TemplateError as exc:
            raise _problem(exc, name, self.templates) from exc

    def template_hash(self, name: str) -> str:
        """Content hash of a template, the layout and the word lists: tells which wording went out."""
        digest = hashlib.sha256()
        for part in (name, LAYOUT, "_strings.toml", "_categories.toml"):
            path = self.templates / part
            if path.is_file():
                digest.update(path.read_bytes())
        return digest.hexdigest()

    def _by_language(self, table: dict[str, dict[str, str]], language: str) -> dict[str, str]:
        for candidate in (language, self.default_language, "en"):
            if candidate in table:
                return table[candidate]
        return {}

    def _render_part(self, name: str, part: str, context: dict) -> str:
        try:
            return self.environment(part == "html").get_template(name).render(part=part, **context)
        except jinja2.TemplateError as exc:
            raise _problem(exc, name, self.templates) from exc


def _problem(exc: jinja2.TemplateError, name: str, folder: Path) -> TemplateProblem:
    """A Jinja error as a TemplateProblem naming the template file and line it happened in."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return TemplateProblem(f"syntax error: {exc.message}", exc.name or name, exc.lineno)
    file, line = _template_frame(exc.__traceback__, folder)
    file = file or name
    if isinstance(exc, SecurityError):
        return TemplateProblem(f"not allowed in the sandbox: {exc.message}", file, line)
    if isinstance(exc, jinja2.UndefinedError):
        return TemplateProblem(f"undefined variable: {exc.message}", file, line)
    if isinstance(exc, jinja2.TemplateNotFound):
        return TemplateProblem(
            f"template not found: {exc.name!r} (only files inside the templates folder can be included)",
            file,
            line,
        )
    return TemplateProblem(f"{type(exc).__name__}: {exc}", file, line)


def _template_frame(tb: TracebackType | None, folder: Path) -> tuple[str | None, int | None]:
    """The innermost traceback frame that runs template code (Jinja maps those to template lines)."""
    root = str(folder.resolve()) + os.sep
    found: tuple[str | None, int | None] = (None, None)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(root):
            found = (filename.removeprefix(root).replace(os.sep, "/"), tb.tb_lineno)
        tb = tb.tb_next
    return found


class _FolderLoader(jinja2.FileSystemLoader):
    """A file loader that refuses anything resolving outside its folder (e.g. through a symlink).

    ``FileSystemLoader`` already rejects ``..`` and treats ``/etc/passwd`` as a name inside the
    folder; resolving the real path closes the remaining door, symbolic links.
    """

    def get_source(self, environment: jinja2.Environment, template: str):
        source, filename, uptodate = super().get_source(environment, template)
        roots = [Path(p).resolve() for p in self.searchpath]
        if filename is None or not any(Path(filename).resolve().is_relative_to(r) for r in roots):
            raise jinja2.TemplateNotFound(template)
        return source, filename, uptodate


@cache
def _environment(path: str, autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=_FolderLoader(path),
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    # Only pure helpers: the sandbox's capped range() and Jinja's small data helpers; nothing
    # that reads a file, the clock or the network (lipsum is harmless but useless in a message).
    allowed = ("range", "dict", "namespace", "cycler", "joiner")
    kept = {key: env.globals[key] for key in allowed}
    env.globals.clear()
    env.globals.update(kept)
    return env


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.is_file() else 0.0


@cache
def _toml(folder: str, filename: str, mtime: float) -> dict[str, dict[str, str]]:
    """A word list per language; cached per modification time so that edits show up."""
    file = Path(folder) / filename
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TemplateProblem(str(exc), filename) from exc
    bad = [key for key, value in data.items() if not isinstance(value, dict)]
    if bad:
        raise TemplateProblem(f"expected one [language] table per language, found {', '.join(bad)}", filename)
    return data
