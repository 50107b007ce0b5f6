"""Run the set-based SQL models in ``sql/`` inside the warehouse.

A model file is one ``select`` written as named CTEs, rendered with Jinja for the
few dialect macros of ``sql/macros.sql`` (never for values: parameters such as the
night are bound). :func:`materialize` replaces a slice of a target table with the
model's rows in one transaction, so that a re-run gives the same state.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path

import jinja2
from sqlalchemy import Connection, Table, text
from sqlalchemy.sql.elements import ColumnElement

from retention.resources import sql_folder

__all__ = ["SQL_DIR", "render", "select_model", "materialize", "bind_dates"]

#: The models ship inside the package (``retention._sql``, mapped from the repository's ``sql/``).
SQL_DIR = sql_folder()


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(SQL_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render(model: str, dialect: str, **flags: object) -> str:
    """The SQL text of ``model`` (e.g. ``"marts/customer_facts"``) for a dialect.

    A model may also be the path of a ``.sql`` file outside the package (an occasion added
    through ``RETENTION_OCCASION_DIRS``); it gets the same macros.
    """
    env = _environment()
    macros = env.get_template("macros.sql").make_module({"dialect": dialect, **flags})
    if model.endswith(".sql"):
        path = Path(model)
        template = env.from_string(path.read_text(encoding="utf-8"))
        template.filename = str(path)
    else:
        template = env.get_template(f"{model}.sql")
    return template.render(dialect=dialect, **flags, **{k: getattr(macros, k) for k in _macro_names(macros)})


def _macro_names(module: object) -> list[str]:
    return [name for name in dir(module) if not name.startswith("_") and callable(getattr(module, name))]


def bind_dates(conn: Connection, params: dict) -> dict:
    """Bind dates and times the way SQLAlchemy stores them, so text comparisons hold on SQLite."""
    if conn.dialect.name != "sqlite":
        return params
    out = {}
    for key, value in params.items():
        if isinstance(value, dt.datetime):
            value = value.strftime("%Y-%m-%d %H:%M:%S.%f")
        elif isinstance(value, dt.date):
            value = value.isoformat()
        out[key] = value
    return out


def select_model(conn: Connection, model: str, params: dict, **flags: object) -> list[dict]:
    """Run a model and return its rows (for small results such as occasions)."""
    sql = render(model, conn.dialect.name, **flags)
    return [dict(row) for row in conn.execute(text(sql), bind_dates(conn, params)).mappings()]


def materialize(
    conn: Connection,
    model: str,
    target: Table,
    params: dict,
    scope: ColumnElement[bool] | None = None,
    **flags: object,
) -> int:
    """Replace the ``scope`` rows of ``target`` (all rows when ``None``) with the model's rows.

    Returns the number of rows inserted. The caller's transaction makes the swap atomic.
    """
    sql = render(model, conn.dialect.name, **flags)
    columns = ", ".join(c.name for c in target.columns)
    delete = target.delete() if scope is None else target.delete().where(scope)
    conn.execute(delete)
    insert = f"insert into {target.name} ({columns}) select {columns} from ({sql}) as model"
    return conn.execute(text(insert), bind_dates(conn, params)).rowcount
