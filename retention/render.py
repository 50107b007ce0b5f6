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

Templates are also bounded (:class:`RenderLimits`): a template file has a size limit,
every part of a rendered message has a size limit, and every message has a render
budget in time and memory. Two layers enforce them:

- in the sandbox, cheap soft guards refuse an operation before it allocates more than a
  message may hold (``*``, ``**``, ``%`` and ``+`` on strings, lists and numbers,
  printf and ``str.format`` widths, ``center``/``indent``/``replace``/``batch`` ...),
  the output is streamed and measured as it is produced, and a per-message timer
  (``SIGALRM``) interrupts template code that runs too long, with the file and line;
- :class:`RenderPool` renders in a separate worker process with an address-space limit,
  and kills it when a task overruns its budget or dies (a loop inside one C call, a
  crash): only a separate process can be stopped for sure.

A value printed with ``{{ }}`` must be plain data (text, a number, a date, a boolean);
a Python object (``{{ cycler }}``, a macro, ``{{ loop }}``) is an error, and no Python
repr with a memory address can reach a message.

The fallback chain for a language is: the customer's language, then the default
language, then ``en``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import multiprocessing
import os
import re
import resource
import signal
import threading
import tomllib
import types
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import cache, wraps
from pathlib import Path
from types import TracebackType

import css_inline
import jinja2
from babel.dates import format_date
from babel.numbers import format_currency
from jinja2 import filters as jinja_filters
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
    SecurityError,
)
from markupsafe import Markup
from pebble import ProcessExpired, ProcessPool

from retention.settings import LANGUAGES

__all__ = [
    "LAYOUT",
    "PARTS",
    "Draft",
    "Message",
    "RenderLimits",
    "RenderPool",
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


log = logging.getLogger(__name__)


class TemplateProblem(Exception):
    """A template cannot produce a message; says which file, which line and why."""

    def __init__(self, reason: str, file: str | None = None, line: int | None = None) -> None:
        self.reason, self.file, self.line = reason, file, line
        where = f"{file}:{line}: " if file and line else f"{file}: " if file else ""
        super().__init__(f"{where}{reason}")

    def __reduce__(self):  # keep file and line across the worker process boundary
        return (TemplateProblem, (self.reason, self.file, self.line))


@dataclass(frozen=True)
class RenderLimits:
    """The bounds of one template and one message (settings ``RETENTION_TEMPLATE_MAX_BYTES`` ...)."""

    template_max_bytes: int = 64 * 1024  # one template file (also the layout and anything included)
    message_max_bytes: int = 256 * 1024  # one rendered part: subject, text or HTML (UTF-8)
    timeout_seconds: float = 2.0  # render budget of one message, all its parts
    memory_mb: int = 512  # address space a render worker may add to what it started with

    @classmethod
    def from_settings(cls, settings) -> RenderLimits:
        return cls(
            template_max_bytes=settings.template_max_bytes,
            message_max_bytes=settings.message_max_bytes,
            timeout_seconds=settings.render_timeout_seconds,
            memory_mb=settings.render_memory_mb,
        )

    def describe_budget(self) -> str:
        return f"the render budget of {self.timeout_seconds:g} s per message"


class _LimitExceeded(jinja2.TemplateRuntimeError):
    """A template asked for more than a message may hold (raised inside template code: file and line)."""


class _BudgetExceeded(Exception):
    """The per-message timer fired while template code ran."""


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


class Formatter:
    """Values as one customer reads them (their language, country and zone): what the outbox's
    contexts and the linter's samples both format with."""

    def __init__(
        self,
        language: str,
        country: str | None,
        shop_url: str,
        currency: str = "EUR",
        time_zone: str | None = None,
    ) -> None:
        self.language, self.country, self.shop_url = language, country, shop_url
        self.currency, self.zone = currency, time_zone

    def day(self, day: dt.date) -> str:
        return format_day(day, self.language, self.country)

    def money(self, amount: object, currency: str | None = None) -> str:
        return format_money(Decimal(str(amount)), currency or self.currency, self.language, self.country)

    def product(self, product: dict) -> dict:
        slug = product.get("sku") or product["product_id"]
        return {
            "name": product["name"],
            "price": self.money(product["price"], product.get("currency")),
            "url": f"{self.shop_url}/p/{slug}",
        }

    def order(self, order: dict) -> dict:
        """An order's id, local date (in the customer's zone) and total."""
        from retention.night import local_date

        return {
            "id": order["order_id"],
            "date": self.day(local_date(order["ordered_at"], self.zone or "UTC")),
            "total": self.money(order["total"], order["currency"]),
        }


#: The variants a template may have: ``<language>.jinja`` is ``a``; ``<language>.b.jinja`` is ``b``.
VARIANTS = ("a", "b")


def template_language(name: str) -> str:
    """The language of a template file: ``de`` for ``birthday/de.jinja`` and ``birthday/de.b.jinja``."""
    return name.rpartition("/")[2].removesuffix(".jinja").split(".")[0]


def variant_of(customer_id: int, occasion: str, salt: str) -> str:
    """A customer's variant of an occasion's wording: stable (a salted hash), half and half, and
    independent of the holdout (whose hash does not include the occasion)."""
    digest = hashlib.sha256(f"{salt}:variant:{occasion}:{customer_id}".encode()).digest()
    return VARIANTS[digest[0] % 2]


def clean_subject(subject: str) -> str:
    """The subject as it may go into a header: control characters collapsed to one space."""
    return " ".join(_HEADER_BREAKS.sub(" ", subject).split())


class Renderer:
    """Renders one occasion's template for one customer."""

    def __init__(
        self, templates: Path, default_language: str = "en", limits: RenderLimits | None = None
    ) -> None:
        self.templates = Path(templates)
        self.default_language = default_language
        self.limits = limits or RenderLimits()
        self._pinned: tuple[str, dict] | None = None  # render_many's template, looked up once
        folder = str(self.templates.resolve())
        self._environments = {
            False: _environment(folder, False, self.limits),
            True: _environment(folder, True, self.limits),
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

    def variant_name(self, name: str, variant: str) -> str | None:
        """The file of ``variant`` of template ``name`` (``thank_you/en.jinja``, ``b`` ->
        ``thank_you/en.b.jinja``), or None when that variant does not exist; ``a`` is ``name``."""
        if variant == "a":
            return name
        candidate = f"{name.removesuffix('.jinja')}.{variant}.jinja"
        return candidate if (self.templates / candidate).is_file() else None

    def render(self, occasion: str, language: str, context: dict) -> Message:
        """The message of an occasion in the customer's language (or its fallback)."""
        return self.render_template(self.template_name(occasion, language), context)

    def render_many(self, name: str, contexts: list[dict]) -> list[Message]:
        """Every context rendered with one template, as :meth:`render_template` renders each.

        A batch is one instant: the template's two compiled forms and its content hash are
        looked up once for it, not per message (each lookup stats the files to see edits).
        """
        try:
            pinned = {flag: self.environment(flag).get_template(name) for flag in (False, True)}
        except Exception:  # noqa: BLE001 - the first render reports it, with its file and line
            pinned = {}
        digest = self.template_hash(name)
        self._pinned = (name, pinned)
        try:
            return [self.render_template(name, context, digest) for context in contexts]
        finally:
            self._pinned = None

    def render_template(self, name: str, context: dict, template_hash: str | None = None) -> Message:
        """One template file rendered into a message that is safe to send, within the budget."""
        with _budget(self.limits, name, self.templates):
            draft = self._draft(name, context)
            subject = clean_subject(draft.subject)
            if not subject:
                raise TemplateProblem("the subject is empty", name)
            try:
                html = _INLINER.inline(draft.html)
            except (ValueError, css_inline.InlineError) as exc:
                raise TemplateProblem(f"the HTML part's CSS cannot be inlined: {exc}", name) from exc
            self._check_size(name, "HTML part after CSS inlining", html)
        return Message(
            subject=subject,
            text=draft.text.strip() + "\n",
            html=html,
            template_hash=template_hash or self.template_hash(name),
        )

    def draft(self, name: str, context: dict) -> Draft:
        """The three parts exactly as rendered: no subject cleaning, no CSS inlining."""
        with _budget(self.limits, name, self.templates):
            return self._draft(name, context)

    def _draft(self, name: str, context: dict) -> Draft:
        language = template_language(name)
        full = self.full_context(language, context)
        parts = {part: self._render_part(name, part, full) for part in PARTS}
        for part, value in parts.items():
            _check_internals(value, name, part, context)
        return Draft(name=name, language=language, **parts)

    def _check_size(self, name: str, what: str, value: str) -> None:
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > self.limits.message_max_bytes:
            raise TemplateProblem(
                f"the {what} is {size} bytes, over the limit of {self.limits.message_max_bytes} bytes "
                "(RETENTION_MESSAGE_MAX_BYTES)",
                name,
            )

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
        language = template_language(name)
        try:
            template = self.environment(autoescape).get_template(name)
            render = template.blocks.get(block)
            if render is None:
                return ""
            ctx = template.new_context(self.full_context(language, context))
            with _budget(self.limits, name, self.templates):
                return self._collect(render(ctx), name, block)
        except TemplateProblem:
            raise
        except Exception as exc:  # any failure of template code is the template's problem
            raise _problem(exc, name, self.templates) from exc

    def template_hash(self, name: str) -> str:
        """Content hash of a template, the layout and the word lists: tells which wording went out."""
        paths = [self.templates / part for part in (name, LAYOUT, "_strings.toml", "_categories.toml")]
        return _content_hash(tuple(str(p) for p in paths), tuple(_mtime(p) for p in paths))

    def _by_language(self, table: dict[str, dict[str, str]], language: str) -> dict[str, str]:
        for candidate in (language, self.default_language, "en"):
            if candidate in table:
                return table[candidate]
        return {}

    def _render_part(self, name: str, part: str, context: dict) -> str:
        """One part, streamed: stopped as soon as it passes the size limit."""
        try:
            pinned = self._pinned[1].get(part == "html") if self._pinned and self._pinned[0] == name else None
            template = pinned or self.environment(part == "html").get_template(name)
            return self._collect(template.generate(part=part, **context), name, part)
        except TemplateProblem:
            raise
        except Exception as exc:  # any failure of template code is the template's problem
            raise _problem(exc, name, self.templates) from exc

    def _collect(self, chunks: Iterator[str], name: str, part: str) -> str:
        limit, size, out = self.limits.message_max_bytes, 0, []
        for chunk in chunks:
            size += len(chunk)  # characters: a lower bound of the UTF-8 size, checked exactly later
            if size > limit:
                raise TemplateProblem(
                    f"the {part} part grows over the limit of {limit} bytes (RETENTION_MESSAGE_MAX_BYTES)",
                    name,
                )
            out.append(chunk)
        text = "".join(out)
        self._check_size(name, f"{part} part", text)
        return text


def _problem(exc: BaseException, name: str, folder: Path) -> TemplateProblem:
    """Any failure of template code as a TemplateProblem naming the template file and line."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return TemplateProblem(f"syntax error: {exc.message}", exc.name or name, exc.lineno)
    file, line = _template_frame(exc.__traceback__, folder)
    file = file or name
    if isinstance(exc, _TemplateTooLarge):
        return TemplateProblem(exc.message or str(exc), exc.name or file, None)
    if isinstance(exc, _LimitExceeded):
        return TemplateProblem(f"unbounded: {exc.message}", file, line)
    if isinstance(exc, _BudgetExceeded):
        return TemplateProblem(f"exceeded {exc.args[0]}", file, line)
    if isinstance(exc, RecursionError):
        return TemplateProblem("recursion too deep (a macro or include that calls itself?)", file, line)
    if isinstance(exc, MemoryError):
        return TemplateProblem("ran out of memory (over the render memory budget)", file, line)
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


class _TemplateTooLarge(jinja2.TemplateNotFound):
    """A template file over the size limit: refused before it is parsed."""


class _FolderLoader(jinja2.FileSystemLoader):
    """A file loader that refuses anything resolving outside its folder (e.g. through a symlink).

    ``FileSystemLoader`` already rejects ``..`` and treats ``/etc/passwd`` as a name inside the
    folder; resolving the real path closes the remaining door, symbolic links. A file over the
    size limit is refused too: parsing and compiling cost grows with it.
    """

    def __init__(self, path: str, max_bytes: int) -> None:
        super().__init__(path)
        self.max_bytes = max_bytes

    def get_source(self, environment: jinja2.Environment, template: str):
        source, filename, uptodate = super().get_source(environment, template)
        roots = [Path(p).resolve() for p in self.searchpath]
        if filename is None or not any(Path(filename).resolve().is_relative_to(r) for r in roots):
            raise jinja2.TemplateNotFound(template)
        size = len(source.encode("utf-8"))
        if size > self.max_bytes:
            raise _TemplateTooLarge(
                template,
                f"the file is {size} bytes, over the limit of {self.max_bytes} bytes "
                "(RETENTION_TEMPLATE_MAX_BYTES)",
            )
        return source, filename, uptodate


# --------------------------------------------------------------------------- soft guards

#: Largest integer a template may compute, in bits (about 1,200 decimal digits).
MAX_INT_BITS = 4096
#: Values a template may print with {{ }}: plain data (Markup is a str, datetime a date).
_PLAIN = (str, int, float, Decimal, dt.date, type(None))
#: A repr that shows a memory address or a Python class (also HTML-escaped).
_INTERNALS = re.compile(r"\bat 0x[0-9a-fA-F]{4,}|(?:<|&lt;)class (?:'|&#39;|&#x27;)")
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_SPEC = re.compile(r"^(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?")


def _refuse(what: str) -> None:
    raise _LimitExceeded(what)


def _check_length(n: int, limit: int, what: str) -> None:
    if n > limit:
        _refuse(f"{what} would make {n} characters or items, more than a message may hold ({limit})")


def _check_width(width: object, limit: int, what: str) -> None:
    if isinstance(width, int) and width > limit:
        _refuse(f"{what} asks for a width of {width}, more than a message may hold ({limit})")


def _check_printf(fmt: str, args: object, limit: int) -> None:
    """Widths and precisions of a printf-style format (``'%999999999s' | format(1)``)."""
    for match in _PRINTF.finditer(fmt):
        for number in match.groups():
            if number == "*":
                values = args if isinstance(args, tuple) else (args,)
                for value in values:
                    _check_width(value, limit, "a '*' width in a % format")
            elif number:
                _check_width(int(number), limit, f"the format {match.group()!r}")


def _sized(value: object) -> bool:
    return isinstance(value, (str, list, tuple))


def _bounded_binop(operator: str, left: object, right: object, limit: int) -> None:
    """Refuse ``*``, ``**``, ``%``, ``+`` whose result would not fit a message (before computing it)."""
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "*":
        if _sized(left) and isinstance(right, int):
            _check_length(len(left) * right, limit, "'*'")
        elif _sized(right) and isinstance(left, int):
            _check_length(len(right) * left, limit, "'*'")
        elif ints and left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            _refuse(f"'*' makes a number of more than {MAX_INT_BITS} bits")
    elif operator == "**" and ints and right > 0 and abs(left) > 1:
        if right > MAX_INT_BITS or right * (abs(left).bit_length() - 1) > MAX_INT_BITS:
            _refuse(f"{left} ** {right} makes a number of more than {MAX_INT_BITS} bits")
    elif operator == "%" and isinstance(left, str):
        _check_printf(left, right, limit)
    elif operator == "+" and _sized(left) and _sized(right):
        _check_length(len(left) + len(right), limit, "'+'")


def _check_replace(s: object, old: object, new: object, limit: int) -> None:
    if isinstance(s, str) and isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        count = len(s) + 1 if not old else s.count(old)
        _check_length(len(s) + count * (len(new) - len(old)), limit, "replace")


def _check_method(method: object, args: tuple, kwargs: dict, limit: int) -> None:
    """str methods whose arguments set the size of their result (``'x'.center(10**9)``)."""
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, str) or not isinstance(method, types.BuiltinMethodType):
        return
    name = method.__name__
    if name in ("center", "ljust", "rjust", "zfill"):
        _check_width(args[0] if args else kwargs.get("width"), limit, f"str.{name}")
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            _check_length(len(owner) + owner.count("\t") * size, limit, "str.expandtabs")
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1], limit)


class _BoundedFormatter:
    """``str.format`` with widths and precisions bounded (``"{:>999999999}".format(1)``)."""

    limit = 0

    def format_field(self, value: object, format_spec: str) -> object:
        match = _FORMAT_SPEC.match(format_spec)
        for number in match.groups() if match else ():
            if number:
                _check_width(int(number), self.limit, f"the format spec {format_spec!r}")
        return super().format_field(value, format_spec)


def _bounded_filters(limit: int) -> dict[str, Callable]:
    """Jinja's filters whose arguments set the size of their result, with that size checked first."""
    originals = jinja_filters.FILTERS

    def guard(name: str, check: Callable[..., None]) -> Callable:
        original = originals[name]

        @wraps(original)
        def bounded(*args, **kwargs):
            check(*args, **kwargs)
            return original(*args, **kwargs)

        return bounded

    def center(value=None, width=80, *_, **__):
        _check_width(width, limit, "center")

    def indent(s="", width=4, *_, **__):
        lines = str(s).count("\n") + 1
        pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        _check_length(len(str(s)) + lines * pad, limit, "indent")

    def format_(value="", *args, **kwargs):
        _check_printf(str(value), tuple(args) or tuple(kwargs.values()), limit)

    def replace(eval_ctx=None, s="", old="", new="", *_, **__):
        _check_replace(str(s), str(old), str(new), limit)

    def batch(value=None, linecount=1, *_, **__):
        _check_width(linecount, limit, "batch")

    checks = {"center": center, "indent": indent, "format": format_, "replace": replace, "batch": batch}
    return {name: guard(name, check) for name, check in checks.items()}


def _plain_only(value: object) -> object:
    """The environment's finalize: only plain data may be printed, never a Python object."""
    if isinstance(value, (_PLAIN, jinja2.Undefined)):
        return value
    raise SecurityError(
        f"{{{{ }}}} prints a {type(value).__name__}: only text, numbers, dates and booleans "
        "may go into a message"
    )


def _check_internals(value: str, name: str, part: str, context: dict) -> None:
    """A last net: no repr with a memory address (or a Python class) in a rendered part.

    ``{{ cycler | string }}`` or ``{{ "%s" | format(loop) }}`` turn an object into text before
    finalize sees it. A match that is part of the customer's own data is not the template's doing.
    """
    if "at 0x" not in value and "class " not in value:
        return  # what every match holds (a fast path: most parts are plain text)
    match = _INTERNALS.search(value)
    if match is None or _in_data(match.group(), context):
        return
    line = value.count("\n", 0, match.start()) + 1
    raise TemplateProblem(
        f"a Python object's repr reached the {part} part (in its line {line}: {match.group()!r}); "
        "print plain values only",
        name,
    )


def _in_data(text: str, value: object) -> bool:
    if isinstance(value, str):
        return text in value
    if isinstance(value, dict):
        return any(_in_data(text, v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_in_data(text, v) for v in value)
    return False


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with the soft guards of :class:`RenderLimits` built in."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *args, limits: RenderLimits, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limit = limits.message_max_bytes
        self.filters.update(_bounded_filters(self.limit))

    def call_binop(self, context, operator, left, right):
        _bounded_binop(operator, left, right, self.limit)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's signature)
        _check_method(__obj, args, kwargs, __self.limit)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value):
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        f_self, is_map = value.__self__, value.__name__ == "format_map"
        base = SandboxedEscapeFormatter if isinstance(f_self, Markup) else SandboxedFormatter
        formatter = type("Bounded" + base.__name__, (_BoundedFormatter, base), {"limit": self.limit})
        kwargs = {"escape": f_self.escape} if isinstance(f_self, Markup) else {}
        vformat = formatter(self, **kwargs).vformat

        @wraps(wrapper)
        def bounded(*args, **kw):
            if is_map:
                if kw or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kw = (), args[0]
            return type(f_self)(vformat(f_self, args, kw))

        return bounded


@cache
def _environment(path: str, autoescape: bool, limits: RenderLimits) -> ImmutableSandboxedEnvironment:
    env = _BoundedSandbox(
        loader=_FolderLoader(path, limits.template_max_bytes),
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        finalize=_plain_only,
        limits=limits,
    )
    # Only pure helpers: the sandbox's capped range() and Jinja's small data helpers; nothing
    # that reads a file, the clock or the network (lipsum is harmless but useless in a message).
    allowed = ("range", "dict", "namespace", "cycler", "joiner")
    kept = {key: env.globals[key] for key in allowed}
    env.globals.clear()
    env.globals.update(kept)
    return env


# --------------------------------------------------------------------------- the time budget


@contextmanager
def _budget(limits: RenderLimits, name: str, folder: Path) -> Iterator[None]:
    """Interrupt template code that runs longer than the per-message budget.

    A timer signal interrupts Python code anywhere, also a loop that prints nothing, and
    the traceback still points at the template line. It only works in the main thread;
    elsewhere (and for a loop inside one C call) the worker's hard timeout stops it.
    Nested calls (draft inside render_template) keep the outer timer.
    """
    usable = (
        limits.timeout_seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )
    if not usable:
        yield
        return
    armed = True

    def alarm(signum, frame):
        if armed:
            raise _BudgetExceeded(limits.describe_budget())

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, limits.timeout_seconds)
    try:
        yield
    except _BudgetExceeded as exc:
        raise _problem(exc, name, folder) from None
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- the worker process

#: Messages per task sent to the render worker: large enough to amortise the round trip,
#: small enough that a task's hard timeout (budget x messages) stays short.
CHUNK = 100
#: Extra seconds for a task's hard timeout: a fresh worker imports and compiles first.
_GRACE_SECONDS = 5.0
_RENDERERS: dict[tuple, Renderer] = {}


def _worker_init(memory_mb: int) -> None:
    """Limit the worker's address space to what it has now plus the memory budget."""
    if memory_mb <= 0:
        return
    with open("/proc/self/statm") as statm:
        current = int(statm.read().split()[0]) * resource.getpagesize()
    limit = current + memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _worker_renderer(templates: str, default_language: str, limits: RenderLimits) -> Renderer:
    key = (templates, default_language, limits)
    if key not in _RENDERERS:
        _RENDERERS[key] = Renderer(Path(templates), default_language, limits)
    return _RENDERERS[key]


def _render_chunk(
    templates: str, default_language: str, limits: RenderLimits, name: str, contexts: list[dict]
) -> list[Message] | TemplateProblem:
    """Worker side: render one chunk of one template; the first problem ends the chunk."""
    try:
        renderer = _worker_renderer(templates, default_language, limits)
        return renderer.render_many(name, contexts)
    except TemplateProblem as problem:
        return problem
    except Exception as exc:  # MemoryError, RecursionError outside template code, ...
        return _problem(exc, name, Path(templates))


def _allow_children() -> bool | None:
    """Let this process start the render worker even if multiprocessing calls it daemonic.

    A Celery worker runs tasks in daemonic pool processes, and Airflow forks the task from
    one, so multiprocessing refuses ("daemonic processes are not allowed to have children").
    The rule protects children from being orphaned when a daemon is killed at exit; the
    render worker is ours, stopped in :meth:`RenderPool.close` and bounded by its own
    timeouts. There is no public switch: the flag lives in ``_config``. Returns the value to
    restore (``None``: nothing was changed).
    """
    config = multiprocessing.current_process()._config  # noqa: SLF001 - see above
    if not config.get("daemon"):
        return None
    config["daemon"] = False
    return True


def _restore_daemon_flag(previous: bool | None) -> None:
    if previous is not None:
        multiprocessing.current_process()._config["daemon"] = previous  # noqa: SLF001


class RenderPool:
    """Render in a worker process that can be killed: the hard bounds of a template.

    The worker is forked from the caller, limits its own address space to ``memory_mb``
    more than it starts with,
    and each task has a hard timeout of the per-message budget times its messages. A task
    that overruns it, or a worker that dies, becomes a :class:`TemplateProblem` for that
    template only; pebble replaces the worker for the next task.
    """

    def __init__(
        self,
        templates: Path,
        default_language: str = "en",
        limits: RenderLimits | None = None,
        grace_seconds: float = _GRACE_SECONDS,
    ) -> None:
        self.templates = str(Path(templates).resolve())
        self.default_language = default_language
        self.limits = limits or RenderLimits()
        self.grace_seconds = grace_seconds
        # fork, not forkserver or spawn: those re-import the caller's __main__ module in the
        # worker, which not every entry point guards; the forked worker touches none of the
        # caller's connections and leaves through os._exit, so nothing of the caller is closed.
        context = multiprocessing.get_context("fork")
        self._pool = ProcessPool(
            max_workers=1, initializer=_worker_init, initargs=(self.limits.memory_mb,), context=context
        )
        self._daemon_flag = _allow_children()

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.stop()
        self._pool.join()
        _restore_daemon_flag(self._daemon_flag)

    def hard_timeout(self, renders: int) -> float:
        return self.grace_seconds + self.limits.timeout_seconds * max(renders, 1) * 1.5

    def run(self, function: Callable, args: tuple, renders: int, name: str):
        """``function(*args)`` in the worker; a timeout or a dead worker raises TemplateProblem."""
        future = self._pool.schedule(function, args=args, timeout=self.hard_timeout(renders))
        return self.result(future, name)

    def submit(self, function: Callable, args: tuple, renders: int):
        return self._pool.schedule(function, args=args, timeout=self.hard_timeout(renders))

    def result(self, future, name: str):
        try:
            return future.result()
        except FutureTimeout:
            raise TemplateProblem(
                f"exceeded {self.limits.describe_budget()}: the rendering process was stopped", name
            ) from None
        except ProcessExpired as exc:
            raise TemplateProblem(
                f"the rendering process died ({_death(exc.exitcode)}), e.g. out of memory "
                f"(budget {self.limits.memory_mb} MiB) or a crash",
                name,
            ) from None
        except CancelledError:
            raise TemplateProblem("not rendered: an earlier part of the same template failed", name) from None

    def render(self, name: str, contexts: list[dict]) -> list[Message]:
        """Every context rendered with one template; the first problem is raised for all of them.

        The first message goes alone (a broken template is found after one budget, not a
        chunk's), then the rest in chunks that are all queued at once.
        """
        if not contexts:
            return []
        args = (self.templates, self.default_language, self.limits, name)
        messages: list[Message] = []
        first = self.run(_render_chunk, (*args, contexts[:1]), 1, name)
        if isinstance(first, TemplateProblem):
            raise first
        messages += first
        rest = contexts[1:]
        futures = [
            self.submit(_render_chunk, (*args, rest[i : i + CHUNK]), len(rest[i : i + CHUNK]))
            for i in range(0, len(rest), CHUNK)
        ]
        try:
            for future in futures:
                result = self.result(future, name)
                if isinstance(result, TemplateProblem):
                    raise result
                messages += result
        finally:
            for future in futures:
                future.cancel()
        return messages


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.is_file() else 0.0


@cache
def _content_hash(paths: tuple[str, ...], mtimes: tuple[float, ...]) -> str:
    """SHA-256 over the files that exist; cached per modification times (read once, not per message)."""
    digest = hashlib.sha256()
    for path, mtime in zip(paths, mtimes, strict=True):
        if mtime:
            digest.update(Path(path).read_bytes())
    return digest.hexdigest()


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
