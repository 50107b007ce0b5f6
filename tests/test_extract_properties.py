"""Property-based: whatever the shop's database holds, the extract and the night complete and the counts balance.

Hypothesis generates source rows of every column type of ``retention.source`` with the
values a shop nobody validates can hold (text in numbers, REALs in ids, infinity, ints
beyond 2**63, too-long, NUL-bearing and non-UTF-8 text, garbage dates, booleans that
are not) and plants them with raw sqlite3 beside a small, normal shop. The extract, and
the whole night, run on the ``warehouse_url`` fixture (SQLite and PostgreSQL): no
exception, and per table rows read = loaded + quarantined, with the quarantine table
holding what the run log counted. One warehouse per test, emptied between examples
(creating a PostgreSQL database per example would be slow); examples are derandomised
so that every run checks the same cases.
"""

from __future__ import annotations

import datetime as dt
import string

import pytest
from email_validator import validate_email
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Boolean, Date, DateTime, Integer, Numeric, String, delete, func, select

from retention import quality, schema, source
from retention.night import night_for_date
from retention.pipeline import run_night, stage_extract, stage_migrate, warehouse_engine
from retention.report import quarantine_report
from tests.shop import DAY1, BadUtf8, Shop, schema_key

NIGHT = "2026-11-20"
_FIXED = hypothesis_settings(
    deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def _budget(warehouse_url: str, sqlite: int, postgresql: int) -> hypothesis_settings:
    """Fixed-seed examples: PostgreSQL's are slower, so it gets fewer."""
    return hypothesis_settings(_FIXED, max_examples=sqlite if warehouse_url.startswith("sqlite") else postgresql)


# --- hostile values per column type ---------------------------------------------------------------

_undecodable = st.binary(min_size=1, max_size=6).filter(lambda b: not _utf8(b)).map(BadUtf8)
_anything = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([2.0**63, 2.0**64, -(2.0**63) - 4096, 1e300]),  # what SQLite keeps of ints past 2**63
    st.text(max_size=12),
    st.binary(max_size=6),
    _undecodable,
)
_texts = st.text(
    alphabet=st.one_of(
        st.sampled_from("\x00\t\n\r\x07\x85\u2028\u2029\u202e\u2066\u200f\ufeffüß€😀 @.-_"),
        st.characters(codec="utf-8"),
    ),
    max_size=80,
)
_moments = st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2026, 11, 19, 22, 59))
_stamp_texts = st.one_of(
    _moments.map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S.%f")),
    _moments.map(lambda d: d.isoformat(timespec="seconds") + "+05:00"),
    st.sampled_from(["", "yesterday", "2026-02-30 10:00:00", "2026-11-19", "0000-00-00 00:00:00", "2026-11-19T25"]),
)


def _for_type(column) -> st.SearchStrategy:
    """Valid-looking and hostile values for one source column, by its declared type."""
    kind = column.type
    if isinstance(kind, Boolean):
        return st.one_of(st.sampled_from([0, 1, 2, -1, 0.5, "yes", "true", b"\x01"]), _anything)
    if isinstance(kind, Integer):
        return st.one_of(st.integers(1, 5), st.integers(2**31 - 2, 2**31 + 2), _anything)
    if isinstance(kind, Numeric):
        return st.one_of(
            st.floats(-1e13, 1e13),
            st.sampled_from([1e12, 999_999_999_999.99, 0.005, "NaN", "-Infinity", "12,50", "1e999"]),
            _anything,
        )
    if isinstance(kind, DateTime):
        return st.one_of(_stamp_texts, _anything)
    if isinstance(kind, Date):
        return st.one_of(
            st.dates(dt.date(1900, 1, 1), dt.date(2026, 11, 19)).map(dt.date.isoformat),
            st.sampled_from(["1999-02-29", "19800101", "the fifth of May"]),
            _anything,
        )
    if isinstance(kind, String):
        length = kind.length or 8
        return st.one_of(
            _texts,
            st.text(alphabet=string.ascii_uppercase, min_size=length - 1, max_size=length + 2),
            st.sampled_from(_KNOWN_GOOD.get(column.name, ["x"])),
            _anything,
        )
    raise AssertionError(f"no strategy for {column}")  # a new source column type: add it here


_KNOWN_GOOD = {
    "email": ["a@example.com", "user@[127.0.0.1]", "jürgen@example.com", "anna@münchen.de", "@x", "a@b"],
    "time_zone": ["Europe/Oslo", "Europe", "UTC", "Mars/Olympus", "../../etc/passwd"],
    "language": ["de", "nb", "et", "EN", "xx"],
    "status": ["placed", "cancelled", "PLACED", "returned"],
    "currency": ["EUR", "NOK", "€"],
    "country": ["DE", "NO", "d"],
}


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


@st.composite
def _hostile_row(draw, table: str) -> tuple[str, object, dict]:
    """One row of ``table``: a good row with a few columns replaced by hostile values."""
    columns = [c for c in source.metadata.tables[table].columns if c.name != schema_key(table)]
    key_column = source.metadata.tables[table].c[schema_key(table)]
    if draw(st.integers(0, 3)):  # mostly a valid id, so that the row's other values are judged too
        key = draw(st.one_of(st.integers(1, 40), st.integers(2**40, 2**63 - 1)))
    else:
        key = draw(_for_type(key_column).filter(lambda v: v is not None))
    replaced = draw(st.lists(st.sampled_from(columns), min_size=1, max_size=2, unique_by=lambda c: c.name))
    values = {c.name: draw(_for_type(c)) for c in replaced}
    for c in replaced:  # the source declares these NOT NULL; SQLite refuses a NULL there
        if values[c.name] is None and not c.nullable:
            values[c.name] = "x"
    if values.get("updated_at") in (None, ""):
        values["updated_at"] = DAY1
    return table, key, values


_shops = st.lists(
    st.tuples(
        st.one_of(*(_hostile_row(t) for t in source.SOURCE_TABLES)),
        st.integers(1, 3),  # identical copies planted
    ),
    min_size=1,
    max_size=12,
)


# --- the shop and the checks ----------------------------------------------------------------------


def _normal_shop(url: str) -> Shop:
    """A small, healthy shop around the hostile rows: repeat buyers, so that the night has work."""
    shop = Shop(url)
    shop.product(10, updated_at=DAY1)
    shop.product(11, updated_at=DAY1)
    for cid in range(1, 7):
        shop.customer(cid, updated_at=DAY1, birthday=dt.date(1980, 11, 20))
        for n, days in enumerate((400, 200, 30 + cid, 1)):
            order_id = 100 * cid + n
            ordered = DAY1 - dt.timedelta(days=days)
            shop.order(order_id, cid, ordered, updated_at=DAY1)
            shop.item(order_id, order_id, 10 + n % 2, updated_at=DAY1)
    return shop


def _empty_warehouse(settings) -> None:
    with warehouse_engine(settings.warehouse).begin() as conn:
        for table in reversed(schema.metadata.sorted_tables):
            conn.execute(delete(table))


def _plant(settings, rows) -> None:
    shop = _normal_shop(settings.source)
    for (table, key, values), copies in rows:
        for _ in range(copies):
            shop.plant(table, key, **values)
    shop.engine.dispose()


def _assert_balanced(settings, counts: dict) -> None:
    q = schema.quarantine
    with warehouse_engine(settings.warehouse).connect() as conn:
        stored = dict(conn.execute(select(q.c.source_table, func.count()).group_by(q.c.source_table)).all())
    for table in source.SOURCE_TABLES:
        bad = sum(counts["quarantined_by_table"].get(table, {}).values())
        assert counts["read"][table] == counts["rows"][table] + bad, table
        assert stored.get(table, 0) == bad, table
    assert set(counts["quarantined"]) <= set(quality.RULES)


@pytest.fixture
def warehouse(settings, warehouse_url):
    stage_migrate(settings)
    return settings.with_overrides(quarantine_max_share=1.0)


def test_the_extract_never_raises_and_its_counts_balance(warehouse, warehouse_url) -> None:
    night = night_for_date(NIGHT, warehouse.time_zone)

    @_budget(warehouse_url, sqlite=40, postgresql=15)
    @given(rows=_shops)
    def check(rows) -> None:
        _empty_warehouse(warehouse)
        _plant(warehouse, rows)
        counts = stage_extract(warehouse, night, "p1")
        _assert_balanced(warehouse, counts)
        again = stage_extract(warehouse, night, "p2")  # a re-run of the night
        assert again["quarantined_by_table"] == counts["quarantined_by_table"]
        _assert_balanced(warehouse, again)

    check()


def test_the_whole_night_completes_and_the_quarantine_agrees_with_the_run_log(warehouse, warehouse_url) -> None:
    night = night_for_date(NIGHT, warehouse.time_zone)

    @_budget(warehouse_url, sqlite=10, postgresql=5)
    @given(rows=_shops)
    def check(rows) -> None:
        _empty_warehouse(warehouse)
        _plant(warehouse, rows)
        results = run_night(warehouse, night, "p1")
        counts = results["extract"]
        _assert_balanced(warehouse, counts)
        listed = quarantine_report(warehouse_engine(warehouse.warehouse), include_resolved=True)
        assert listed["total"] == sum(counts["quarantined"].values())
        assert listed["by_rule"] == counts["quarantined"]
        assert "render" in results

    check()


_LOCAL = st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,70}", fullmatch=True)
_LABEL = st.one_of(
    st.sampled_from(["ab--cd", "xn--zz", "xn--mnchen-3ya", "EXAMPLE", "-a", "a-", "9"]),
    st.from_regex(r"[A-Za-z0-9-]{1,64}", fullmatch=True),
)
_TLD = st.one_of(st.sampled_from(["com", "de", "test", "invalid", "onion", "arpa", "local", "x"]), _LABEL)


@hypothesis_settings(_FIXED, max_examples=300)
@given(local=_LOCAL, labels=st.lists(_LABEL, min_size=0, max_size=5), tld=_TLD)
def test_the_fast_email_check_accepts_only_what_email_validator_accepts_unchanged(local, labels, tld) -> None:
    address = f"{local}@{'.'.join([*labels, tld])}"
    if quality.plain_email(address):
        checked = validate_email(address, check_deliverability=False, allow_smtputf8=True)
        assert checked.ascii_email.split("@")[0] == local
        assert checked.ascii_email.lower() == address.lower()
