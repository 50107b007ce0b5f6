"""`retention forget` leaves no trace of a person but the hashed tombstone, and keeps them out.

A customer with rows in every table (staging, facts, snapshots, recommendations, occasions, a
sent message and its delivery attempt, changed customers, and three quarantined raw rows: a
bad order, a bad order line, and a second customer row with the same address) is forgotten
by address; then every column of every table is searched for any of their ids, orders and
their address. The next night, with the person still in the shop (and a new order), brings
nothing of them back, and the extract counts what it skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest
from sqlalchemy import Integer, String, Text, func, select

from retention import erasure, schema
from retention.cli import main
from retention.feedback import record_answer, sign
from retention.mailer import SmtpConfig
from retention.night import night_for_date
from retention.pipeline import run_night, stage_deliver, warehouse_engine
from retention.settings import Settings
from retention.source import customers as shop_customers
from retention.unsubscribe import email_hash
from tests.airflow_env import BIN, airflow_env, run
from tests.conftest import SECRET
from tests.shop import Shop

EARLY = dt.datetime(2025, 3, 1, 10, 0)
LATER = dt.datetime(2025, 6, 1, 10, 0)
FIRST_DAY = dt.datetime(2026, 11, 19, 9, 30)  # inside night 2026-11-20 (Berlin)
NEXT_DAY = dt.datetime(2026, 11, 20, 9, 30)  # inside night 2026-11-21
EVENING = dt.datetime(2026, 11, 20, 15, 0)  # inside the Berlin send window of 2026-11-20

ADDRESS = "Forget.Me@Example.com"
SURNAME = "Quimbleworth"
PERSON_IDS = {7, 70}  # 70: a second shop account with the same address (held back: bad time zone)
PERSON_ORDERS = {700, 701, 702, 703}
PERSON_LINES = {7000, 7001, 7010, 7030}
OTHERS = {1, 2, 3, 5, 6}


@pytest.fixture
def settings(settings):
    # One customer behind a rule is enough: the person gets a recommendation in this tiny shop.
    return settings.with_overrides(rules_min_pairs=1)


@pytest.fixture
def shop(settings) -> Shop:
    return _shop(settings)


def _shop(settings) -> Shop:
    shop = Shop(settings.source)
    shop.product(10, price="249.00", cost="150.00")
    shop.product(11, price="39.00", cost="20.00")
    for customer in (1, 2, 3):  # others: 10 first, 11 later (sequence), and both together (basket)
        shop.customer(customer)
        shop.order(customer * 10, customer, EARLY)
        shop.item(customer * 100, customer * 10, 10, updated_at=EARLY)
        shop.order(customer * 10 + 1, customer, LATER)
        shop.item(customer * 100 + 1, customer * 10 + 1, 11, updated_at=LATER)
        shop.item(customer * 100 + 2, customer * 10 + 1, 10, updated_at=LATER)
    shop.product(12, price="19.00", cost="5.00")
    for customer in (5, 6):  # buyers of something else: 10 -> 11 has a lift above 1
        shop.customer(customer)
        shop.order(customer * 10, customer, EARLY)
        shop.item(customer * 100, customer * 10, 12, updated_at=EARLY)
    shop.plant("order_items", 199, order_id=10, product_id=10, quantity=-1)  # someone else's bad line
    shop.customer(7, email=ADDRESS, first_name="Ottoline", last_name=SURNAME)
    shop.order(701, 7, EARLY)
    shop.item(7010, 701, 10, updated_at=EARLY)
    shop.order(700, 7, FIRST_DAY)  # the order of the night: a thank-you
    shop.item(7000, 700, 10, updated_at=FIRST_DAY)
    shop.plant("order_items", 7001, order_id=700, product_id=10, quantity=-2)  # held back
    shop.plant("orders", 702, customer_id=7, status="lost-in-space")  # held back
    shop.plant("customers", 70, email=ADDRESS.lower(), last_name=SURNAME, time_zone="Mars/Base")
    return shop


def _engine(settings):
    return warehouse_engine(settings.warehouse)


def _count(settings, table, column, keys) -> int:
    with _engine(settings).connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(table.c[column].in_(keys))).scalar()


def _quarantine_naming_the_person(settings) -> list[dict]:
    q = schema.quarantine
    with _engine(settings).connect() as conn:
        rows = [json.loads(raw) for raw in conn.execute(select(q.c.raw)).scalars()]
    return [
        row
        for row in rows
        if row.get("customer_id") in PERSON_IDS
        or row.get("order_id") in PERSON_ORDERS
        or ADDRESS.lower() in str(row.get("email", "")).lower()
    ]


def _traces(settings) -> list[str]:
    """Every value in every column of every table that names the person: their ids, orders,
    order lines, address (in any text, case-insensitive), or name."""
    found = []
    with _engine(settings).connect() as conn:
        outbox_ids = set(
            conn.execute(
                select(schema.outbox.c.outbox_id).where(schema.outbox.c.customer_id.in_(PERSON_IDS))
            ).scalars()
        )
        for table in schema.metadata.sorted_tables:
            for column in table.columns:
                keys = {
                    "customer_id": PERSON_IDS,
                    "order_id": PERSON_ORDERS,
                    "order_item_id": PERSON_LINES,
                    "outbox_id": outbox_ids if table is not schema.outbox else set(),
                }.get(column.name)
                if keys and isinstance(column.type, Integer):
                    n = conn.execute(select(func.count()).where(column.in_(keys))).scalar()
                    found += [f"{table.name}.{column.name}"] * bool(n)
                elif isinstance(column.type, String | Text):
                    needle = func.lower(column)
                    n = conn.execute(
                        select(func.count()).where(
                            needle.contains(ADDRESS.lower()) | needle.contains(SURNAME.lower())
                        )
                    ).scalar()
                    found += [f"{table.name}.{column.name}"] * bool(n)
    return found


def test_every_table_is_erased_kept_on_purpose_or_holds_no_person() -> None:
    """A new table with a person in it must be added to retention.erasure (and erased there)."""
    by_id = {t.name for t in erasure.BY_CUSTOMER_ID}
    other = {t.name for t in erasure.THROUGH_OTHER_KEYS}
    kept = {t.name for t in erasure.TOMBSTONES}
    none = {t.name for t in erasure.NO_PERSON}
    tables = {t.name: t for t in schema.metadata.sorted_tables}
    assert set(tables) - (by_id | other | kept | none) == set(), "tables retention.erasure does not know"
    personal = {"customer_id", "email", "order_id", "order_item_id", "outbox_id", "raw"}
    for name, table in tables.items():
        if personal & set(table.columns.keys()):
            assert name in by_id | other | kept, f"{name} holds a person but is listed as holding none"
    for name in by_id:
        assert "customer_id" in tables[name].columns, name


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"forget.me@example.com",
        "a\udcff@example.com",
        "x@\udcff.de",
        float("nan"),
        float("inf"),
        2**70,
        -1,
        True,
        "",
        "7 ",
        "7.0",
        "  FORGET.ME@example.COM",
        "forget.me@exämple.com",
        "@",
        "\x00@x",
    ],
)
def test_the_extracts_tombstone_check_takes_any_raw_value(value) -> None:
    """The extract never stops on a value: checking one against the tombstones neither."""
    salt = "0" * 64
    tombstones = erasure.Tombstones(
        salt,
        frozenset({erasure._hash(salt, "customer_id", 7), erasure._hash(salt, "email", ADDRESS.lower())}),
    )
    expected = value in ("7 ", "  FORGET.ME@example.COM")
    row = {"customer_id": value, "email": value}
    assert tombstones.erased_row("customers", row) is expected
    assert tombstones.erased_row("orders", row) is (value == "7 ")
    assert tombstones.erased_row("products", row) is False


def _forget(settings, who: str, capsys) -> tuple[int, str, str]:
    """``retention forget WHO``: exit code, stdout, stderr (a SystemExit's message, as the shell shows it)."""
    try:
        code, reason = main(["forget", who, "--url", settings.warehouse]), ""
    except SystemExit as exc:  # a one-line reason: the interpreter prints it and exits 1
        code, reason = (1, f"{exc.code}\n") if isinstance(exc.code, str) else (exc.code, "")
    out = capsys.readouterr()
    return code, out.out, out.err + reason


@pytest.fixture
def night_one(settings, shop, mail_sink) -> dict:
    """Night 2026-11-20 run, its messages sent: the person is in every table."""
    run_night(settings, night_for_date("2026-11-20", settings.time_zone), "n1")
    sent = stage_deliver(settings, SmtpConfig(host="127.0.0.1", port=mail_sink.port), EVENING, secret=SECRET)
    assert sent["sent"] >= 1
    with _engine(settings).begin() as conn:  # the person answered a feedback request, unhappy
        record_answer(conn, SECRET, sign(SECRET, 7, 700), 1, f"{SURNAME} is unhappy", EVENING, 2)
    for table in erasure.BY_CUSTOMER_ID:
        assert _count(settings, table, "customer_id", {7}) > 0, table.name
    assert _count(settings, schema.stg_order_items, "order_id", PERSON_ORDERS) == 2
    box, attempts = schema.outbox, schema.delivery_attempts
    with _engine(settings).connect() as conn:
        tried = conn.execute(
            select(func.count())
            .select_from(attempts.join(box, attempts.c.outbox_id == box.c.outbox_id))
            .where(box.c.customer_id == 7)
        ).scalar()
    assert tried == 1
    assert len(_quarantine_naming_the_person(settings)) == 3
    assert _traces(settings) != []
    return {t.name: _count(settings, t, "customer_id", OTHERS) for t in erasure.BY_CUSTOMER_ID}


def _next_night_in_the_shop(shop: Shop) -> None:
    """The person is still in the shop, updated, with a new order; and a newcomer arrives."""
    with shop.engine.begin() as conn:
        conn.execute(
            shop_customers.update()
            .where(shop_customers.c.customer_id.in_(PERSON_IDS))
            .values(updated_at=NEXT_DAY)
        )
    shop.order(703, 7, NEXT_DAY)
    shop.item(7030, 703, 11, updated_at=NEXT_DAY)
    shop.customer(4, updated_at=NEXT_DAY)
    shop.order(40, 4, NEXT_DAY)
    shop.item(400, 40, 11, updated_at=NEXT_DAY)


def test_forget_by_address_leaves_nothing_but_the_tombstone(settings, night_one, capsys) -> None:
    code, out, err = _forget(settings, " forget.me@EXAMPLE.com ", capsys)

    assert code == 0, err
    assert err == "" and out.startswith("forgotten: ")
    assert _traces(settings) == []
    assert _quarantine_naming_the_person(settings) == []
    with _engine(settings).connect() as conn:
        kinds = dict(
            conn.execute(select(schema.erasures.c.kind, func.count()).group_by(schema.erasures.c.kind)).all()
        )
        suppressed = conn.execute(select(schema.suppression.c.email_hash, schema.suppression.c.reason)).all()
        quarantined = conn.execute(select(func.count()).select_from(schema.quarantine)).scalar()
    assert kinds == {"customer_id": 2, "email": 1}  # ids 7 and 70, one address: hashes only
    assert suppressed == [(email_hash(ADDRESS), "erased")]
    assert quarantined == 1  # someone else's bad order line stays
    assert {t.name: _count(settings, t, "customer_id", OTHERS) for t in erasure.BY_CUSTOMER_ID} == night_one


def test_forget_by_id_finds_the_other_account_with_the_same_address(settings, night_one, capsys) -> None:
    code, out, err = _forget(settings, "7", capsys)

    assert code == 0, err
    assert err == "" and out.startswith("forgotten: ")
    assert _traces(settings) == []
    assert _quarantine_naming_the_person(settings) == []


def test_the_next_night_brings_nothing_of_the_forgotten_back(settings, shop, night_one, capsys) -> None:
    assert _forget(settings, ADDRESS, capsys)[0] == 0
    _next_night_in_the_shop(shop)

    results = run_night(settings, night_for_date("2026-11-21", settings.time_zone), "n2")

    skipped = {"customers": 2, "orders": 1, "order_items": 1}
    assert results["extract"]["skipped_erased"] == skipped
    assert results["extract"]["rows"]["customers"] == 1  # the newcomer
    assert _traces(settings) == []
    assert _quarantine_naming_the_person(settings) == []
    assert _count(settings, schema.outbox, "customer_id", {4}) == 1  # the newcomer is thanked
    assert main(["report", "--json", "--url", settings.warehouse]) == 0
    assert json.loads(capsys.readouterr().out)["extract"]["skipped_erased"] == skipped


def test_a_full_refresh_skips_every_row_of_the_forgotten(settings, shop, night_one, capsys) -> None:
    assert _forget(settings, ADDRESS, capsys)[0] == 0
    _next_night_in_the_shop(shop)

    results = run_night(settings, night_for_date("2026-11-21", settings.time_zone), "n2", full_refresh=True)

    # Orders 700, 701, 702 (bad) and 703; lines 7000, 7001 (bad), 7010 and 7030.
    assert results["extract"]["skipped_erased"] == {"customers": 2, "orders": 4, "order_items": 4}
    assert _traces(settings) == []
    assert _quarantine_naming_the_person(settings) == []


def test_forgetting_twice_has_nothing_to_forget(settings, night_one, capsys) -> None:
    assert _forget(settings, ADDRESS, capsys)[0] == 0
    with _engine(settings).connect() as conn:
        tombstones = conn.execute(select(func.count()).select_from(schema.erasures)).scalar()

    for who in (ADDRESS, "7", "70"):
        code, out, _ = _forget(settings, who, capsys)
        assert code == 0
        assert out.startswith("nothing to forget: this person was forgotten on "), who
    with _engine(settings).connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.erasures)).scalar() == tombstones


def test_an_unknown_person_is_a_clear_failure(settings, night_one, capsys) -> None:
    code, out, err = _forget(settings, "nobody@example.com", capsys)
    assert code == 1 and out == ""
    assert err.strip() == (
        "retention forget: no customer with this address in the warehouse, and none was forgotten here: "
        "nothing to do"
    )
    code, _, err = _forget(settings, "99999", capsys)
    assert code == 1 and "no customer with id 99999" in err
    code, _, err = _forget(settings, SURNAME, capsys)
    assert code == 1 and "neither a customer id" in err
    assert _traces(settings) != []  # nobody was touched


@pytest.mark.airflow
def test_the_erasure_dag_forgets_through_airflow(tmp_path, capsys) -> None:
    """The manual DAG, run by Airflow itself, with the person as its param (SQLite warehouse)."""
    warehouse = f"sqlite:///{tmp_path / 'warehouse.db'}"
    settings = Settings(
        home=tmp_path,
        warehouse_url=warehouse,
        source_url=f"sqlite:///{tmp_path / 'shop.db'}",
        rules_min_pairs=1,
    )
    _shop(settings)
    run_night(settings, night_for_date("2026-11-20", settings.time_zone), "n1")
    assert _traces(settings) != []
    env = airflow_env(tmp_path, warehouse_url=warehouse, source_url=settings.source)
    run([str(BIN / "airflow"), "db", "migrate"], env)

    run(
        [str(BIN / "airflow"), "dags", "test", "retention_erasure", "-c", json.dumps({"person": ADDRESS})],
        env,
    )

    assert _traces(settings) == []
    with _engine(settings).connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.erasures)).scalar() == 3
    unknown = subprocess.run(
        [str(BIN / "airflow"), "dags", "test", "retention_erasure", "-c", json.dumps({"person": "404"})],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert unknown.returncode != 0  # failed for good at once: AirflowFailException, no retry
    assert "no customer with id 404" in unknown.stdout + unknown.stderr
