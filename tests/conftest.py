"""Shared fixtures: real databases (SQLite, and PostgreSQL when configured) and a real SMTP sink.

Set ``RETENTION_TEST_PG_URL`` to a PostgreSQL server URL (``.ci/run`` does) to run every
``warehouse_url`` test on PostgreSQL as well; each test then gets a database of its own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from retention.settings import Settings
from retention.smtp_sink import MailSink

PG_URL = os.environ.get("RETENTION_TEST_PG_URL")
SECRET = b"test-unsubscribe-secret-of-32-bytes-or-more"  # MIN_SECRET_BYTES: 32


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's RETENTION_* settings; they pass their own."""
    for name in list(os.environ):
        if name.startswith("RETENTION_") and name != "RETENTION_TEST_PG_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("RETENTION_UNSUBSCRIBE_SECRET", SECRET.decode())


def _fresh_pg_database() -> tuple[str, str]:
    name = f"rt_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'create database "{name}"'))
    admin.dispose()
    return name, make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def _drop_pg_database(name: str) -> None:
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'drop database if exists "{name}" with (force)'))
    admin.dispose()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database URL (skips when PostgreSQL is not configured)."""
    if not PG_URL:
        pytest.skip("RETENTION_TEST_PG_URL is not set")
    name, url = _fresh_pg_database()
    try:
        yield url
    finally:
        from retention.pipeline import warehouse_engine

        warehouse_engine.cache_clear()
        _drop_pg_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The warehouse under test: a SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
        from retention.pipeline import warehouse_engine

        warehouse_engine.cache_clear()
        return
    yield request.getfixturevalue("pg_database")


@pytest.fixture
def mail_sink(tmp_path: Path) -> Iterator[MailSink]:
    with MailSink(folder=tmp_path / "mail") as sink:
        yield sink


def shop_settings(home: Path, warehouse_url: str) -> Settings:
    """A Berlin shop whose source is the SQLite file ``shop.db`` in ``home`` (tests/shop.py)."""
    return Settings(
        home=home,
        warehouse_url=warehouse_url,
        source_url=f"sqlite:///{home / 'shop.db'}",
        time_zone="Europe/Berlin",
    )


@pytest.fixture
def settings(tmp_path: Path, warehouse_url: str) -> Settings:
    return shop_settings(tmp_path, warehouse_url)


@pytest.fixture
def shop(settings):
    """An empty hand-built shop (tests/shop.py) with one product, id 1; tests add the rest."""
    from tests.shop import Shop

    shop = Shop(settings.source)
    shop.product(1)
    return shop
