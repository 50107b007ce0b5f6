"""Data-quality rules for rows coming from the shop database.

Each rule has a stable name (the ``rule`` column of the quarantine, the keys of the
report) and produces a readable reason that names the offending value. Row rules
look at one row; reference rules (``unknown_customer`` ...) and ``duplicate_key``
are applied by the extract, which sees more than one row.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["RULES", "Violation", "check_row", "MAX_NAME_LENGTH", "ORDER_STATUSES"]

MAX_NAME_LENGTH = 200
ORDER_STATUSES = frozenset({"placed", "cancelled"})

#: Every rule the extract can apply, with what it means (documented in the README).
RULES = {
    "missing_value": "a required column is empty",
    "malformed_email": "the email address is not of the form name@domain.tld",
    "missing_name": "the (first) name is empty",
    "name_too_long": f"a name is longer than {MAX_NAME_LENGTH} characters",
    "control_characters": "a text value contains control characters (tab, CR, LF, NUL, ...)",
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

_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Violation(Exception):
    """A row breaks a rule; ``str()`` is the readable reason."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.rule = rule
        self.detail = detail


def _require(row: dict, *columns: str) -> None:
    for column in columns:
        if row.get(column) is None:
            raise Violation("missing_value", f"{column} is empty")


def _text(row: dict, column: str) -> None:
    value = row.get(column)
    if value is None:
        return
    if _CONTROL.search(value):
        raise Violation("control_characters", f"{column} {value[:40]!r} contains control characters")
    if len(value) > MAX_NAME_LENGTH:
        raise Violation(
            "name_too_long", f"{column} is {len(value)} characters long (at most {MAX_NAME_LENGTH})"
        )


def _customer(row: dict, _window_end: dt.datetime) -> None:
    _require(row, "created_at")
    email = row.get("email") or ""
    if _CONTROL.search(email) or len(email) > 254 or not _EMAIL.match(email):
        raise Violation("malformed_email", f"email {email[:60]!r} is not an address")
    if not (row.get("first_name") or "").strip():
        raise Violation("missing_name", "first_name is empty")
    _text(row, "first_name")
    _text(row, "last_name")
    zone = row.get("time_zone")
    if zone:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise Violation("invalid_time_zone", f"time_zone {zone!r} is not an IANA time zone") from exc


def _product(row: dict, _window_end: dt.datetime) -> None:
    _require(row, "price", "cost", "category", "created_at")
    if not (row.get("name") or "").strip():
        raise Violation("missing_name", "name is empty")
    _text(row, "name")
    for column in ("price", "cost"):
        if Decimal(row[column]) < 0:
            raise Violation("negative_price", f"{column} is {row[column]}")


def _order(row: dict, window_end: dt.datetime) -> None:
    _require(row, "customer_id", "ordered_at", "status")
    if row["status"] not in ORDER_STATUSES:
        raise Violation("invalid_status", f"status {row['status']!r} is not one of {sorted(ORDER_STATUSES)}")
    if row["ordered_at"] >= window_end:
        raise Violation(
            "future_date",
            f"ordered_at {row['ordered_at']:%Y-%m-%d %H:%M} is after {window_end:%Y-%m-%d %H:%M} UTC",
        )


def _order_item(row: dict, _window_end: dt.datetime) -> None:
    _require(row, "order_id", "product_id", "quantity", "unit_price", "unit_cost")
    if row["quantity"] < 1:
        raise Violation("negative_quantity", f"quantity is {row['quantity']}")
    for column in ("unit_price", "unit_cost"):
        if Decimal(row[column]) < 0:
            raise Violation("negative_price", f"{column} is {row[column]}")
    returned = row.get("returned_quantity") or 0
    if returned < 0 or returned > row["quantity"]:
        raise Violation("invalid_return", f"returned_quantity {returned} of quantity {row['quantity']}")


_ROW_RULES: dict[str, Callable[[dict, dt.datetime], None]] = {
    "customers": _customer,
    "products": _product,
    "orders": _order,
    "order_items": _order_item,
}


def check_row(table: str, row: dict, window_end: dt.datetime) -> Violation | None:
    """The first rule the row breaks, or ``None`` for a good row.

    ``window_end`` is the end of the night's window as naive UTC (the shop's format).
    """
    try:
        _ROW_RULES[table](row, window_end)
    except Violation as violation:
        return violation
    return None
