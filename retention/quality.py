"""Data-quality rules for rows coming from the shop database.

The shop's database is somebody else's system: with a SQLite source any column can
hold any storage class (text in an integer column, a float in an id, infinity in a
price, bytes that are not UTF-8 in a name). So every row goes through two steps, and
each either passes or raises a :class:`Violation` with a rule and a readable reason
naming the column and the (truncated) value; nothing here raises anything else:

1. :func:`prepare_row` turns each raw source value into the type of its warehouse
   column and proves that it fits there (range of the integer, digits of the
   ``Numeric``, length of the ``String``, text PostgreSQL can store). The limits are
   read from the staging tables in :mod:`retention.schema`, so that what passes here
   always loads, on SQLite and on PostgreSQL.
2. :func:`check_row` applies the business rules to the typed row.

Each rule has a stable name (the ``rule`` column of the quarantine, the keys of the
report). Reference rules (``unknown_customer`` ...) and ``duplicate_key`` are applied
by the extract, which sees more than one row.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from sqlalchemy import BigInteger, Boolean, Column, Date, DateTime, Integer, Numeric, String

from retention import schema
from retention.night import as_naive_utc
from retention.source import UndecodableText

__all__ = [
    "RULES",
    "Violation",
    "prepare_row",
    "check_row",
    "MAX_NAME_LENGTH",
    "ORDER_STATUSES",
]

MAX_NAME_LENGTH = 200
ORDER_STATUSES = frozenset({"placed", "cancelled"})

#: Every rule the extract can apply, with what it means (documented in the README).
RULES = {
    "missing_value": "a required column is empty",
    "invalid_value": "a value is of the wrong type for its column (text in a number, a fraction in an id, "
    "binary data in a text, a boolean that is not 0 or 1) or is not a date or time",
    "non_finite_number": "a number is NaN or infinite",
    "number_out_of_range": "a number does not fit its warehouse column (ids: 64-bit integers, quantities: "
    "32-bit, money: below 10^12 with cents), or an order line's value does not",
    "text_too_long": "a text is longer than its warehouse column (country 2, currency 3, sku 32, ...)",
    "invalid_text": "a text holds a NUL character or bytes that are not UTF-8, or a name holds a Unicode "
    "line/paragraph separator or a bidi control",
    "malformed_email": "the email address is not valid (checked with email-validator; address literals "
    "such as user@[127.0.0.1] and quoted mailbox names are refused)",
    "unsupported_email": "the mailbox name (before the @) is not ASCII: sending needs SMTPUTF8, which the "
    "mailer does not use (internationalised domains are fine: they load in their ASCII form)",
    "missing_name": "the (first) name is empty",
    "name_too_long": f"a name is longer than {MAX_NAME_LENGTH} characters",
    "control_characters": "a name contains control characters (tab, CR, LF, ...)",
    "invalid_time_zone": "the time zone is not an IANA name such as Europe/Oslo",
    "negative_quantity": "an order line's quantity is zero or below",
    "negative_price": "a price or cost is below zero",
    "invalid_return": "more items returned than ordered",
    "invalid_status": f"the order status is not one of {', '.join(sorted(ORDER_STATUSES))}",
    "future_date": "the order date lies after the end of the night's window",
    "duplicate_key": "the same id appears more than once; the newest copy was kept",
    "unknown_customer": "the order's customer is not in the warehouse",
    "unknown_product": "the order line's product is not in the warehouse",
    "unknown_order": "the order line's order is not in the warehouse",
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Characters that break a line or reorder the text around them where a name is shown
# (a subject, a greeting): line and paragraph separators and Unicode's Bidi_Control set.
_LAYOUT = re.compile("[\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class Violation(Exception):
    """A row breaks a rule; ``str()`` is the readable reason."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.rule = rule
        self.detail = detail


def _shown(value: object, width: int = 40) -> str:
    """A value for a reason: its repr, cut to ``width`` characters."""
    if isinstance(value, str | bytes):
        value = value[: width + 1]
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than Python converts to text
        return f"<a {type(value).__name__} too long to show>"
    return text if len(text) <= width else text[: width - 3] + "..."


# --- step 1: raw source values to warehouse types ------------------------------------------------

Converter = Callable[[str, object], object]


def _integer(low: int, high: int, bits: int) -> Converter:
    def convert(column: str, value: object) -> int:
        if type(value) is not int:
            value = _whole_number(column, value, high)
        if low <= value <= high:
            return value
        raise Violation("number_out_of_range", f"{column} {_shown(value)} does not fit a {bits}-bit integer")

    return convert


def _whole_number(column: str, value: object, high: int) -> int | float | Decimal:
    """An integer column's value that is not a plain int: a whole float or Decimal, or a violation.

    A value too large for the column comes back as it is, for the caller's range check
    (turning ``Decimal('1E+999999999')`` into an int would take forever).
    """
    if not isinstance(value, float | Decimal) or isinstance(value, bool):
        raise Violation("invalid_value", f"{column} {_shown(value)} is not an integer")
    if not (math.isfinite(value) if isinstance(value, float) else value.is_finite()):
        raise Violation("non_finite_number", f"{column} is {_shown(value)}, not a finite number")
    if abs(value) > high:
        return value
    if value != int(value):
        raise Violation("invalid_value", f"{column} {_shown(value)} is not a whole number")
    return int(value)


def _money(precision: int, scale: int) -> Converter:
    limit = Decimal(10) ** (precision - scale)
    quantum = Decimal(1).scaleb(-scale)

    as_text, float_limit = f"%.{scale}f", float(limit) - 1.0  # minus 1: "%.2f" may round up to it

    def convert(column: str, value: object) -> Decimal:
        if type(value) is float and -float_limit < value < float_limit:  # NaN and infinity compare False
            return Decimal(as_text % value)  # cents as SQLAlchemy's own Numeric processor makes them
        number = _decimal(column, value)
        if abs(number) < limit:
            # Sub-cent digits round as in any Numeric(p, 2) column; only then is the size final.
            number = number.quantize(quantum, rounding=ROUND_HALF_EVEN)
            if abs(number) < limit:
                return number
        raise Violation(
            "number_out_of_range",
            f"{column} {_shown(value)} does not fit Numeric({precision}, {scale}) (at most {limit - quantum})",
        )

    return convert


def _decimal(column: str, value: object) -> Decimal:
    if type(value) is float:
        if not math.isfinite(value):
            raise Violation("non_finite_number", f"{column} is {_shown(value)}, not a finite number")
        return Decimal(repr(value))  # the shortest decimal that is this float: 19.99, not 19.989999...
    if type(value) is int:
        return Decimal(value)
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except (InvalidOperation, ValueError):
            raise Violation("invalid_value", f"{column} {_shown(value)} is not a number") from None
    else:
        raise Violation("invalid_value", f"{column} {_shown(value)} is not a number")
    if not number.is_finite():
        raise Violation("non_finite_number", f"{column} is {_shown(value)}, not a finite number")
    return number


def _text(length: int | None) -> Converter:
    def convert(column: str, value: object) -> str:
        if type(value) is not str:
            _not_text(column, value)
        if "\x00" in value:
            raise Violation("invalid_text", f"{column} {_shown(value)} contains a NUL character")
        if length is not None and len(value) > length:
            raise Violation(
                "text_too_long",
                f"{column} {_shown(value)} is {len(value)} characters long (the column holds {length})",
            )
        return value

    return convert


def _not_text(column: str, value: object) -> None:
    if isinstance(value, UndecodableText):
        raise Violation("invalid_text", f"{column} {_shown(bytes(value))} is not UTF-8 text")
    if isinstance(value, bytes | bytearray | memoryview):
        raise Violation("invalid_value", f"{column} holds binary data {_shown(bytes(value))}, not text")
    raise Violation("invalid_value", f"{column} {_shown(value)} is not text")


def _datetime(column: str, value: object) -> dt.datetime:
    """Naive UTC, the shop's format; an aware value (a PostgreSQL ``timestamptz``) is moved to UTC."""
    if type(value) is str:
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            raise Violation("invalid_value", f"{column} {_shown(value)} is not a date and time") from None
    elif isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime.combine(value, dt.time())
    else:
        raise Violation("invalid_value", f"{column} {_shown(value)} is not a date and time")
    if moment.tzinfo is not None:
        try:
            moment = as_naive_utc(moment)
        except (OverflowError, ValueError):
            raise Violation("invalid_value", f"{column} {_shown(value)} is out of range in UTC") from None
    return moment


def _date(column: str, value: object) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise Violation("invalid_value", f"{column} {_shown(value)} is not a date")


def _boolean(column: str, value: object) -> bool:
    if value is True or value is False:
        return value
    if type(value) is int and value in (0, 1):
        return value == 1
    raise Violation("invalid_value", f"{column} {_shown(value)} is not a boolean (0 or 1)")


#: Text columns whose value the extract replaces when it is not one it knows (an unknown
#: language becomes the default one), so that no length limit applies to what the source holds.
_NORMALISED = frozenset({"language"})


def _converter_for(column: Column) -> Converter:
    kind = column.type
    if isinstance(kind, BigInteger):
        return _integer(-(2**63), 2**63 - 1, 64)
    if isinstance(kind, Integer):
        return _integer(-(2**31), 2**31 - 1, 32)
    if isinstance(kind, Numeric):
        return _money(kind.precision, kind.scale)
    if isinstance(kind, Boolean):
        return _boolean
    if isinstance(kind, DateTime):
        return _datetime
    if isinstance(kind, Date):
        return _date
    if isinstance(kind, String):
        return _text(None if column.name in _NORMALISED else kind.length)
    raise TypeError(f"no quality conversion for {column} of type {kind!r}")  # a schema change to handle


#: Per staging table: (column, the type a good value usually has, its limit, converter). Plain
#: ints in range and short NUL-free strs are checked inline, the commonest case, because a
#: function call per value is most of the cost of a million-row extract.
_Spec = tuple[str, type | None, int, Converter]


def _spec(column: Column) -> _Spec:
    kind, convert = column.type, _converter_for(column)
    if isinstance(kind, Integer):
        return column.name, int, 2**63 - 1 if isinstance(kind, BigInteger) else 2**31 - 1, convert
    if isinstance(kind, String) and column.name not in _NORMALISED:
        return column.name, str, kind.length or 2**63, convert
    return column.name, None, 0, convert


_SPECS: dict[str, tuple[_Spec, ...]] = {
    name: tuple(_spec(c) for c in table.columns if c.name not in ("loaded_night", "arrived_night"))
    for name, table in schema.STAGING.items()
}


def prepare_row(table: str, raw: dict) -> dict:
    """The row with every value in its warehouse column's type; raises :class:`Violation`.

    Empty values (``None``) stay empty: whether a column is required is a rule of step 2.
    """
    row = {}
    for column, usual, limit, convert in _SPECS[table]:
        value = raw.get(column)
        if value is None:
            row[column] = None
        elif type(value) is usual and (
            -limit - 1 <= value <= limit if usual is int else len(value) <= limit and "\x00" not in value
        ):
            row[column] = value
        else:
            row[column] = convert(column, value)
    return row


# --- step 2: business rules on typed rows --------------------------------------------------------


def _require(row: dict, *columns: str) -> None:
    for column in columns:
        if row.get(column) is None:
            raise Violation("missing_value", f"{column} is empty")


def _name(row: dict, column: str) -> None:
    value = row.get(column)
    if value is None:
        return
    if _CONTROL.search(value):
        raise Violation("control_characters", f"{column} {_shown(value)} contains control characters")
    if _LAYOUT.search(value):
        raise Violation(
            "invalid_text",
            f"{column} {_shown(value)} contains a Unicode line/paragraph separator or bidi control",
        )
    if len(value) > MAX_NAME_LENGTH:
        raise Violation(
            "name_too_long", f"{column} is {len(value)} characters long (at most {MAX_NAME_LENGTH})"
        )


# A plain ASCII address that email-validator accepts as it is, checked without it: the
# validator takes ~45 us an address, most of a customer row's cost. The conditions are a
# strict subset of the validator's (tests/test_extract_properties.py checks that they agree):
# dot-atom mailbox, letters-digits-hyphens labels with no "--" (Punycode goes the long way),
# a top-level domain of letters, the RFC lengths, and no special-use domain.
_PLAIN_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})\Z"
)
_SPECIAL_USE = tuple(SPECIAL_USE_DOMAIN_NAMES)


def plain_email(address: str) -> bool:
    """Whether ``address`` is certainly valid as it is, by the fast path above."""
    match = _PLAIN_EMAIL.match(address)
    if match is None or len(address) > 254 or address.index("@") > 64:
        return False
    domain = match.group(1).lower()
    if len(domain) > 253 or "--" in domain:
        return False
    return not any(domain == d or domain.endswith("." + d) for d in _SPECIAL_USE)


def _email(value: str | None) -> str:
    """The address to store: as given (trimmed), with an internationalised domain in its IDNA form."""
    address = (value or "").strip()
    if not address or _CONTROL.search(value):
        raise Violation("malformed_email", f"email {_shown(value, 60)} is not an address")
    if plain_email(address):
        return address
    try:
        checked = validate_email(
            address,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
        )
    except EmailNotValidError as exc:
        raise Violation("malformed_email", f"email {_shown(address, 60)} is not an address: {exc}") from None
    if checked.ascii_email is None:
        raise Violation(
            "unsupported_email",
            f"email {_shown(address, 60)} has a mailbox name that is not ASCII (it needs SMTPUTF8)",
        )
    return address if address.isascii() else checked.ascii_email


def _customer(row: dict, _window_end: dt.datetime) -> None:
    _require(row, "created_at")
    row["email"] = _email(row.get("email"))
    if not (row.get("first_name") or "").strip():
        raise Violation("missing_name", "first_name is empty")
    _name(row, "first_name")
    _name(row, "last_name")
    zone = row.get("time_zone")
    if zone:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise Violation("invalid_time_zone", f"time_zone {_shown(zone)} is not an IANA time zone") from None


def _product(row: dict, _window_end: dt.datetime) -> None:
    _require(row, "price", "cost", "category", "created_at")
    if not (row.get("name") or "").strip():
        raise Violation("missing_name", "name is empty")
    _name(row, "name")
    _name(row, "category")
    for column in ("price", "cost"):
        if row[column] < 0:
            raise Violation("negative_price", f"{column} is {row[column]}")


def _order(row: dict, window_end: dt.datetime) -> None:
    _require(row, "customer_id", "ordered_at", "status")
    if row["status"] not in ORDER_STATUSES:
        raise Violation(
            "invalid_status", f"status {_shown(row['status'])} is not one of {sorted(ORDER_STATUSES)}"
        )
    if row["ordered_at"] >= window_end:
        raise Violation(
            "future_date",
            f"ordered_at {row['ordered_at']:%Y-%m-%d %H:%M} is after {window_end:%Y-%m-%d %H:%M} UTC",
        )


#: An order line's value (quantity times price or cost) must fit the warehouse's money columns too.
_LINE_LIMIT = Decimal(10) ** (schema.Money.precision - schema.Money.scale)


def _order_item(row: dict, _window_end: dt.datetime) -> None:
    _require(row, "order_id", "product_id", "quantity", "unit_price", "unit_cost")
    quantity = row["quantity"]
    if quantity < 1:
        raise Violation("negative_quantity", f"quantity is {quantity}")
    for column in ("unit_price", "unit_cost"):
        if row[column] < 0:
            raise Violation("negative_price", f"{column} is {row[column]}")
        if quantity * row[column] >= _LINE_LIMIT:
            raise Violation(
                "number_out_of_range",
                f"quantity {quantity} x {column} {row[column]} does not fit the warehouse's money columns",
            )
    returned = row.get("returned_quantity") or 0
    if returned < 0 or returned > quantity:
        raise Violation("invalid_return", f"returned_quantity {returned} of quantity {quantity}")


_ROW_RULES: dict[str, Callable[[dict, dt.datetime], None]] = {
    "customers": _customer,
    "products": _product,
    "orders": _order,
    "order_items": _order_item,
}


def check_row(table: str, row: dict, window_end: dt.datetime) -> Violation | None:
    """The first rule the typed row (see :func:`prepare_row`) breaks, or ``None`` for a good row.

    ``window_end`` is the end of the night's window as naive UTC (the shop's format). A
    rule may normalise a value in place (the email's IDNA form).
    """
    try:
        _ROW_RULES[table](row, window_end)
    except Violation as violation:
        return violation
    return None
