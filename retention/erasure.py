"""Forget a person (GDPR article 17): every warehouse row about them, and keep them out.

:func:`forget` takes a customer id or an address, finds every identifier of the person (the
ids that share an address, the addresses an id had: in staging, in the outbox, in the
quarantine's raw rows) and, in one transaction, deletes every row that holds one of them:

* by customer id: :data:`BY_CUSTOMER_ID` (staging customers and orders, the marts, snapshots,
  recommendations, occasions, the outbox, changed customers, feedback answers and follow-ups);
* through another key: ``stg_order_items`` (the person's orders), ``delivery_attempts`` (the
  person's outbox messages), ``quarantine`` (raw rows naming the person's id, address or
  orders).

What stays is the tombstone: a salted hash of each identifier in ``erasures`` (no address, no
name, no id can be read back from it), and the address's entry in ``suppression``, which
every send checks. The extract (:class:`Tombstones`) skips shop rows of a forgotten person, so
that a later extract of the same person from the shop brings nothing back. The shop's own
database is the shop's: erasing there is not this pipeline's to do.

Tables that hold no person (rules, fits, aggregates, bookkeeping) are listed in
:data:`NO_PERSON`; ``tests/test_erasure.py`` fails when a table is in neither list.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, Table, delete, func, select

from retention import rule_counts, schema
from retention.db import insert_ignore
from retention.unsubscribe import email_hash

__all__ = [
    "BY_CUSTOMER_ID",
    "NO_PERSON",
    "THROUGH_OTHER_KEYS",
    "TOMBSTONES",
    "Erasure",
    "NotAPerson",
    "UnknownPerson",
    "Tombstones",
    "forget",
]

#: Tables whose rows belong to one customer, by their ``customer_id`` column.
BY_CUSTOMER_ID: tuple[Table, ...] = (
    schema.stg_customers,
    schema.stg_orders,
    schema.changed_customers,
    schema.customer_facts,
    schema.segment_snapshots,
    schema.recommendations,
    schema.occasions,
    schema.outbox,
    # Answers from the public app (retention.feedback): what the person said about their orders.
    schema.feedback,
    schema.feedback_followups,
    # What the product rules were counted from (retention.rule_counts): taken out of the counts
    # by forget() before these rows go.
    schema.rule_first_purchases,
    schema.rule_basket_items,
)
#: Tables that hold a person through another key (see the module docs).
THROUGH_OTHER_KEYS: tuple[Table, ...] = (schema.stg_order_items, schema.delivery_attempts, schema.quarantine)
#: What erasure keeps on purpose: hashes only.
TOMBSTONES: tuple[Table, ...] = (
    schema.erasures,
    schema.erasure_salt,
    schema.suppression,
    schema.unsubscribe_preferences,
)
#: Tables with no row about one person: products, rules, fits, aggregates, bookkeeping.
NO_PERSON: tuple[Table, ...] = (
    schema.stg_products,
    schema.run_log,
    schema.extract_watermark,
    schema.churn_fits,
    schema.churn_scores,
    schema.product_rules,
    schema.rule_pair_counts,  # counts of pairs, products and customers: no person in them
    schema.rule_item_counts,
    schema.rule_totals,
    schema.rule_product_categories,
    schema.rule_category_pairs,
    schema.rule_category_choices,
    schema.rule_category_buyers,
    schema.segment_report,
    schema.template_versions,  # message wording and the staff member who saved it, no customer
)

#: A customer or order id written as text, as loosely as a person would: "7", "07", "+7".
_ID_TEXT = re.compile(r"[+-]?[0-9]{1,19}")

#: Largest ``in (...)`` list sent at once.
_CHUNK = 1000


class NotAPerson(ValueError):
    """The argument is neither a customer id nor an address."""


class UnknownPerson(LookupError):
    """No row of the warehouse names this person, and they were never forgotten here."""


@dataclass
class Erasure:
    """What :func:`forget` did: rows removed per table, tombstones written; no personal data."""

    already_forgotten: bool = False
    removed: dict[str, int] = field(default_factory=dict)
    tombstones: int = 0
    erased_on: dt.date | None = None

    @property
    def rows(self) -> int:
        return sum(self.removed.values())

    def as_counts(self) -> dict:
        return {
            "already_forgotten": self.already_forgotten,
            "removed": dict(sorted(self.removed.items())),
            "rows": self.rows,
            "tombstones": self.tombstones,
            "erased_on": self.erased_on.isoformat() if self.erased_on else None,
        }

    def describe(self) -> str:
        """One line for the command line and the task log."""
        if self.already_forgotten:
            return f"nothing to forget: this person was forgotten on {self.erased_on}"
        tables = ", ".join(f"{name} {n}" for name, n in sorted(self.removed.items()) if n) or "none"
        return (
            f"forgotten: {self.rows} rows removed ({tables}); "
            f"{self.tombstones} hashed identifiers kept so that they stay out"
        )


# --- identifiers ----------------------------------------------------------------------------------


def normal_id(value: object) -> int | None:
    """A customer (or order) id as the warehouse holds it, from any raw source value; else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        # Looser than the extract ("07", " 7 " and "+7" are held back there as invalid_value): such a
        # row of a forgotten person is still theirs, and is skipped rather than quarantined.
        if _ID_TEXT.fullmatch(text):
            return int(text)
    return None


def normal_email(value: object) -> str | None:
    """An address as compared here: trimmed, lower case, an internationalised domain in IDNA form."""
    if not isinstance(value, str) or "@" not in value:
        return None
    try:
        value.encode()
    except UnicodeEncodeError:  # lone surrogates: never a stored address, and not hashable as UTF-8
        return None
    address = value.strip().lower()
    if address.isascii():
        return address
    local, _, domain = address.rpartition("@")
    try:
        # The extract stores such a domain in its IDNA form (quality._email): compare the same way.
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address


def _hash(salt: str, kind: str, value: object) -> str:
    return hmac.new(salt.encode(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def _salt(conn: Connection, create: bool) -> str | None:
    """This warehouse's erasure salt; the first erasure makes it (random, 32 bytes)."""
    table = schema.erasure_salt
    salt = conn.execute(select(table.c.salt).where(table.c.salt_id == 1)).scalar()
    if salt is None and create:
        insert_ignore(conn, table, [{"salt_id": 1, "salt": secrets.token_hex(32)}], ("salt_id",))
        salt = conn.execute(select(table.c.salt).where(table.c.salt_id == 1)).scalar()
    return salt


@dataclass(frozen=True)
class Tombstones:
    """The forgotten, as the extract checks them: salted hashes of ids and addresses."""

    salt: str | None = None
    hashes: frozenset[str] = frozenset()

    @classmethod
    def load(cls, warehouse: Engine | Connection) -> Tombstones:
        """Every tombstone (a few per forgotten person: held in memory)."""
        if isinstance(warehouse, Engine):
            with warehouse.connect() as conn:
                return cls.load(conn)
        salt = _salt(warehouse, create=False)
        if salt is None:
            return cls()
        hashes = warehouse.execute(select(schema.erasures.c.identity_hash)).scalars()
        return cls(salt, frozenset(hashes))

    def __bool__(self) -> bool:
        return bool(self.hashes)

    def customer(self, value: object) -> bool:
        """Whether a raw customer id is a forgotten person's."""
        customer_id = normal_id(value) if self.hashes else None
        return customer_id is not None and _hash(self.salt, "customer_id", customer_id) in self.hashes

    def email(self, value: object) -> bool:
        """Whether a raw address is a forgotten person's."""
        address = normal_email(value) if self.hashes else None
        return address is not None and _hash(self.salt, "email", address) in self.hashes

    def erased_row(self, table: str, raw: dict) -> bool:
        """Whether a raw source row of ``table`` belongs to a forgotten person."""
        if not self.hashes:
            return False
        if table == "customers":
            return self.customer(raw.get("customer_id")) or self.email(raw.get("email"))
        if table == "orders":
            return self.customer(raw.get("customer_id"))
        return False

    def erased_orders(self, source_orders: Table, conn: Connection, order_ids: Iterable[object]) -> set:
        """Of these raw order ids, those whose order in the shop belongs to a forgotten person."""
        ids = sorted({i for i in map(normal_id, order_ids) if i is not None})
        if not self.hashes or not ids:
            return set()
        found = set()
        for start in range(0, len(ids), _CHUNK):
            query = select(source_orders.c.order_id, source_orders.c.customer_id).where(
                source_orders.c.order_id.in_(ids[start : start + _CHUNK])
            )
            found |= {normal_id(o) for o, c in conn.execute(query) if self.customer(c)}
        return found


# --- forgetting -----------------------------------------------------------------------------------


@dataclass
class _Person:
    customer_ids: set[int] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    order_ids: set[int] = field(default_factory=set)
    outbox_ids: set[int] = field(default_factory=set)
    quarantine_ids: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.customer_ids or self.quarantine_ids)


def _parse(who: str) -> tuple[str, object]:
    text = (who or "").strip()
    if normal_id(text) is not None and text.isdigit():
        return "customer_id", int(text)
    address = normal_email(text)
    if address:
        return "email", address
    raise NotAPerson(f"{who!r} is neither a customer id (digits) nor an email address")


def _chunks(values: Iterable) -> Iterator[list]:
    values = sorted(values)
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _ids_with_emails(conn: Connection, emails: set[str]) -> set[int]:
    found: set[int] = set()
    for table in (schema.stg_customers, schema.outbox):
        for part in _chunks(emails):
            query = select(table.c.customer_id).where(func.lower(func.trim(table.c.email)).in_(part))
            found |= set(conn.execute(query).scalars())
    return found


def _emails_of(conn: Connection, customer_ids: set[int]) -> set[str]:
    found: set[str] = set()
    for table in (schema.stg_customers, schema.outbox):
        for part in _chunks(customer_ids):
            query = select(table.c.email).where(table.c.customer_id.in_(part)).distinct()
            found |= {normal_email(e) for e in conn.execute(query).scalars()} - {None}
    return found


def _quarantined(conn: Connection, tables: tuple[str, ...]) -> Iterator[tuple[int, str, dict]]:
    """(id, table, raw row) of the quarantine's rows of ``tables``, streamed."""
    q = schema.quarantine
    query = select(q.c.quarantine_id, q.c.source_table, q.c.raw).where(q.c.source_table.in_(tables))
    # Options on the statement, not the connection: the deletes that follow must not be streamed.
    for quarantine_id, table, raw in conn.execute(query.execution_options(yield_per=_CHUNK)):
        try:
            row = json.loads(raw)
        except ValueError:
            continue
        if isinstance(row, dict):
            yield quarantine_id, table, row


def _in_quarantine(conn: Connection, person: _Person) -> None:
    """Add the quarantine's rows of the person (and what they name) to ``person``.

    A raw row is the person's when it names one of their ids or addresses, or (orders, order
    lines) one of their orders. Customers and orders first, so that their order ids are known
    when the order lines are read.
    """
    for quarantine_id, table, row in _quarantined(conn, ("customers", "orders")):
        customer_id, address = normal_id(row.get("customer_id")), normal_email(row.get("email"))
        order_id = normal_id(row.get("order_id"))
        if (
            customer_id in person.customer_ids
            or (address is not None and address in person.emails)
            or (table == "orders" and order_id in person.order_ids)
        ):
            person.quarantine_ids.add(quarantine_id)
            if customer_id is not None:
                person.customer_ids.add(customer_id)
            if address is not None and table == "customers":
                person.emails.add(address)
            if table == "orders" and order_id is not None:
                person.order_ids.add(order_id)
    for quarantine_id, _, row in _quarantined(conn, ("order_items",)):
        if normal_id(row.get("order_id")) in person.order_ids:
            person.quarantine_ids.add(quarantine_id)


def _close(conn: Connection, person: _Person) -> None:
    """Ids that share an address are the same person; so are the addresses an id had."""
    while True:
        emails = person.emails | _emails_of(conn, person.customer_ids)
        ids = person.customer_ids | _ids_with_emails(conn, emails)
        if (emails, ids) == (person.emails, person.customer_ids):
            return
        person.emails, person.customer_ids = emails, ids


def _find(conn: Connection, kind: str, value: object) -> _Person:
    """Every identifier and row key of the person named by ``kind``/``value``."""
    person = _Person()
    (person.customer_ids if kind == "customer_id" else person.emails).add(value)
    while True:  # the quarantine can name more ids and addresses: until nothing new turns up
        known = (set(person.customer_ids), set(person.emails))
        _close(conn, person)
        orders = schema.stg_orders
        for part in _chunks(person.customer_ids):
            query = select(orders.c.order_id).where(orders.c.customer_id.in_(part))
            person.order_ids |= set(conn.execute(query).scalars())
        _in_quarantine(conn, person)
        if known == (person.customer_ids, person.emails):
            break
    box = schema.outbox
    for part in _chunks(person.customer_ids):
        person.outbox_ids |= set(
            conn.execute(select(box.c.outbox_id).where(box.c.customer_id.in_(part))).scalars()
        )
    if not person.quarantine_ids and not any(_exists(conn, i) for i in person.customer_ids):
        person.customer_ids = set()  # nothing holds them (or they were forgotten already)
    return person


def _exists(conn: Connection, customer_id: int) -> bool:
    return any(
        conn.execute(select(table.c.customer_id).where(table.c.customer_id == customer_id).limit(1)).first()
        for table in BY_CUSTOMER_ID
    )


def _delete(conn: Connection, table: Table, column: str, keys: set) -> int:
    removed = 0
    for part in _chunks(keys):
        removed += conn.execute(delete(table).where(table.c[column].in_(part))).rowcount
    return removed


def _already_forgotten(conn: Connection, kind: str, value: object) -> dt.date | None:
    salt = _salt(conn, create=False)
    if salt is None:
        return None
    table = schema.erasures
    return conn.execute(
        select(table.c.erased_on).where(table.c.identity_hash == _hash(salt, kind, value))
    ).scalar()


def forget(warehouse: Engine, who: str, erased_on: dt.date) -> Erasure:
    """Erase the person named by ``who`` (a customer id or an address); see the module docs.

    ``erased_on`` is the day of the request, kept with the tombstone (audit). Idempotent: a
    person forgotten before gives ``already_forgotten``. Raises :class:`NotAPerson` for an
    argument that is neither, :class:`UnknownPerson` when nothing names the person.
    """
    kind, value = _parse(who)
    with warehouse.begin() as conn:
        person = _find(conn, kind, value)
        if not person:
            earlier = _already_forgotten(conn, kind, value)
            if earlier is None:
                raise UnknownPerson(
                    f"no customer {'with id ' + str(value) if kind == 'customer_id' else 'with this address'} "
                    "in the warehouse, and none was forgotten here: nothing to do"
                )
            return Erasure(already_forgotten=True, erased_on=earlier)
        # The person's purchases leave the rules' counts (and then their rows go, below).
        rule_counts.forget(conn, sorted(person.customer_ids))
        removed = {
            "delivery_attempts": _delete(conn, schema.delivery_attempts, "outbox_id", person.outbox_ids),
            "stg_order_items": _delete(conn, schema.stg_order_items, "order_id", person.order_ids),
            "quarantine": _delete(conn, schema.quarantine, "quarantine_id", person.quarantine_ids),
        }
        for table in BY_CUSTOMER_ID:
            removed[table.name] = _delete(conn, table, "customer_id", person.customer_ids)
        salt = _salt(conn, create=True)
        identities = [("customer_id", i) for i in person.customer_ids] + [("email", e) for e in person.emails]
        tombstones = [
            {"identity_hash": _hash(salt, k, v), "kind": k, "erased_on": erased_on} for k, v in identities
        ]
        insert_ignore(conn, schema.erasures, tombstones, ("identity_hash",))
        # The suppression list is what every send checks (by the address's plain hash, as for an
        # unsubscribe or a bounce): a message already handed to a sender cannot reach them either.
        suppressed = [
            {"email_hash": email_hash(e), "reason": "erased", "night": erased_on} for e in person.emails
        ]
        insert_ignore(conn, schema.suppression, suppressed, ("email_hash",))
    return Erasure(removed=removed, tombstones=len(tombstones), erased_on=erased_on)
