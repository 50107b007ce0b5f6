"""The peers the benchmark measures our stages against, in the same run on the same rows.

* DuckDB: the RFM summary (recency, frequency, monetary per customer) and its quintiles over
  the warehouse's staging rows (orders and order lines), read through pandas (DuckDB's own
  sqlite and postgres scanners are extensions it downloads, which this machine cannot do).
* pymc-marketing: ``rfm_summary`` + ``rfm_segments`` on the same rows as a DataFrame, where it
  fits in memory; skipped, with the reason, when it is not installed or the shop is too big.
* jinja2: our renderer against plain jinja2 on the same templates and contexts.
* yagmail: one connection per message against the same loopback SMTP server.
* smtplib: the server's own ceiling, prebuilt messages sent over one connection per process,
  with no database and no building: what delivery could reach if our work cost nothing.

Each function returns a dict of measured numbers (seconds, rates) or ``{"skipped": reason}``.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, text

__all__ = ["duckdb_rfm", "pymc_rfm", "render_rates", "smtp_ceiling", "yagmail_rate", "PYMC_MAX_CUSTOMERS"]

#: pymc-marketing's rfm_summary took 1.7 GiB on 1M customers / 8.3M lines (issue 15): above
#: this size the DataFrame and its copies would pass the 1 GiB-per-stage budget several times.
PYMC_MAX_CUSTOMERS = 1_000_000

_LINES = """
select o.customer_id, o.ordered_at,
       i.quantity * i.unit_price - i.returned_quantity * i.unit_price as amount
from stg_orders o join stg_order_items i on i.order_id = o.order_id
where o.status = 'placed' and o.ordered_at < :end
"""

_DUCK_RFM = """
with per_customer as (
    select customer_id,
           date_diff('day', max(ordered_at), $end) as recency_days,
           count(distinct ordered_at) as frequency,
           sum(amount) as monetary
    from lines group by customer_id
),
final as (
    select *,
           ntile(5) over (order by recency_days desc) as r,
           ntile(5) over (order by frequency) as f,
           ntile(5) over (order by monetary) as m
    from per_customer
)
select count(*), sum(r + f + m) from final
"""


def _timed(func: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    result = func()
    return result, time.perf_counter() - started


def read_lines(warehouse: Engine, end: dt.datetime):
    """The placed order lines (customer, moment, amount net of returns) as a pandas DataFrame."""
    import pandas as pd

    with warehouse.connect() as conn:
        frame = pd.read_sql(text(_LINES), conn, params={"end": end})
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"])
    frame["amount"] = frame["amount"].astype("float64")
    return frame


def duckdb_rfm(lines, end: dt.datetime) -> dict:
    """RFM aggregate + quintiles in DuckDB over the lines already in memory (the read is timed apart)."""
    try:
        import duckdb
    except ImportError:
        return {"skipped": "duckdb is not installed (pip install -e '.[bench]')"}
    con = duckdb.connect()
    con.register("lines", lines)
    (customers, _), seconds = _timed(lambda: con.execute(_DUCK_RFM, {"end": end}).fetchone())
    con.close()
    return {"seconds": round(seconds, 3), "customers": int(customers), "lines": len(lines)}


def pymc_rfm(lines, end: dt.datetime, customers: int) -> dict:
    """pymc-marketing's ``rfm_summary`` + ``rfm_segments`` on the same DataFrame."""
    if customers > PYMC_MAX_CUSTOMERS:
        return {
            "skipped": f"{customers:,} customers > {PYMC_MAX_CUSTOMERS:,}: rfm_summary needs about 1.7 GiB "
            "per million customers on a DataFrame of every line"
        }
    try:
        from pymc_marketing.clv.utils import rfm_segments, rfm_summary
    except ImportError as exc:
        return {"skipped": f"pymc-marketing is not installed ({exc.name}); see pyproject's bench extra"}
    kwargs = {
        "customer_id_col": "customer_id",
        "datetime_col": "ordered_at",
        "monetary_value_col": "amount",
        "observation_period_end": end,
    }
    summary, summary_s = _timed(lambda: rfm_summary(lines, **kwargs))
    segments, segments_s = _timed(lambda: rfm_segments(lines, **kwargs))
    return {
        "seconds": round(summary_s + segments_s, 3),
        "rfm_summary_seconds": round(summary_s, 3),
        "rfm_segments_seconds": round(segments_s, 3),
        "customers": len(summary),
        "segments": len(segments),
    }


def _contexts(renderer, occasions: list[str], languages: list[str]) -> list[tuple[str, str, dict]]:
    from retention.samples import sample_contexts

    jobs = []
    for occasion in occasions:
        for language in languages:
            name = renderer.template_name(occasion, language)
            for context in sample_contexts(occasion, language):
                jobs.append((name, language, context))
    return jobs


def _rate(func: Callable[[int], object], n: int) -> dict:
    """Calls per second of ``func(i)`` for i in range(n), after one warm-up call."""
    func(0)  # warm: load and compile once
    started = time.perf_counter()
    for i in range(n):
        func(i)
    seconds = time.perf_counter() - started
    return {"messages": n, "seconds": round(seconds, 3), "per_second": round(n / seconds, 1)}


def _plain_jinja2(full: list[tuple[str, dict]], env_for: Callable[[], dict], inline) -> Callable[[int], None]:
    """Message ``i`` of ``full`` rendered by plain jinja2 (three parts), its HTML part passed to
    ``inline`` (or not, when it is None)."""
    from retention.render import PARTS

    def one(i: int) -> None:
        name, context = full[i % len(full)]
        envs = env_for()
        parts = {part: envs[part == "html"].get_template(name).render(part=part, **context) for part in PARTS}
        if inline is not None:
            inline(parts["html"])

    return one


def render_rates(templates, count: int = 2000) -> dict:
    """Complete messages per second: our sandboxed renderer (subject, text, HTML with inlined CSS)
    against plain jinja2 compiling the template for every message, and plain jinja2 with the
    compiled template cached, both also inlining the CSS (same templates, same contexts). The
    cached figure is also split into its two libraries: jinja2 alone and css-inline alone."""
    import css_inline
    import jinja2

    from retention.render import Renderer
    from retention.settings import LANGUAGES

    renderer = Renderer(templates)
    occasions = sorted(p.name for p in templates.iterdir() if p.is_dir() and not p.name.startswith("_"))
    jobs = _contexts(renderer, occasions, list(LANGUAGES))
    sources = {name: (templates / name).read_text() for name in {job[0] for job in jobs} | {"_layout.jinja"}}
    full = [(name, renderer.full_context(language, context)) for name, language, context in jobs]
    inline = css_inline.CSSInliner().inline

    by_name: dict[str, list[dict]] = {}
    for name, _language, context in jobs:
        by_name.setdefault(name, []).append(context)
    per_template = max(1, count // len(by_name))

    def ours() -> int:
        """As a render worker renders: a chunk of messages of one template at a time."""
        for name, contexts in by_name.items():
            renderer.render_many(name, [contexts[i % len(contexts)] for i in range(per_template)])
        return per_template * len(by_name)

    def fresh() -> dict:
        return {
            flag: jinja2.Environment(loader=jinja2.DictLoader(sources), autoescape=flag, cache_size=0)
            for flag in (False, True)
        }

    cached_envs = {
        flag: jinja2.Environment(loader=jinja2.DictLoader(sources), autoescape=flag) for flag in (False, True)
    }
    ours()  # warm: load and compile once
    started = time.perf_counter()
    n = ours()
    seconds = time.perf_counter() - started
    htmls = [cached_envs[True].get_template(name).render(part="html", **context) for name, context in full]
    return {
        "ours": {"messages": n, "seconds": round(seconds, 3), "per_second": round(n / seconds, 1)},
        "jinja2_compile_per_message": _rate(_plain_jinja2(full, fresh, inline), max(50, count // 20)),
        "jinja2_cached": _rate(_plain_jinja2(full, lambda: cached_envs, inline), count),
        # The cached figure split into its libraries: their own floor, before any guard of ours.
        "jinja2_cached_without_inlining": _rate(_plain_jinja2(full, lambda: cached_envs, None), count),
        "css_inline_alone": _rate(lambda i: inline(htmls[i % len(htmls)]), count),
        "templates": len({job[0] for job in jobs}),
    }


def yagmail_rate(host: str, port: int, messages: list[tuple[str, str, str, str]]) -> dict:
    """yagmail opening a new connection for every message (subject, text, html, to)."""
    try:
        import yagmail
    except ImportError:
        return {"skipped": "yagmail is not installed"}
    started = time.perf_counter()
    for subject, text_part, html, to in messages:
        client = yagmail.SMTP(
            user={"bench@example.com": "bench@example.com"},
            host=host,
            port=port,
            smtp_ssl=False,
            smtp_starttls=False,
            smtp_skip_login=True,
            soft_email_validation=False,
        )
        client.send(to=to, subject=subject, contents=[text_part, html])
        client.close()
    seconds = time.perf_counter() - started
    return {
        "messages": len(messages),
        "seconds": round(seconds, 3),
        "per_second": round(len(messages) / seconds, 1),
    }


def _blast(host: str, port: int, messages: list[tuple[str, bytes]]) -> float:
    """Seconds to send ``messages`` (recipient, bytes) over one smtplib connection."""
    import smtplib

    with smtplib.SMTP(host, port) as smtp:
        smtp.ehlo()
        started = time.perf_counter()
        for recipient, data in messages:
            smtp.sendmail("bench@example.com", [recipient], data)
        return time.perf_counter() - started


def _cpu_seconds(pid: int | None) -> float | None:
    """User and system CPU seconds of process ``pid`` so far (Linux ``/proc``), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (OSError, TypeError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def smtp_ceiling(
    host: str, port: int, messages: list[tuple[str, bytes]], processes: int = 2, server_pid: int | None = None
) -> dict:
    """Messages per second the loopback server takes from plain smtplib: the messages built
    beforehand, one connection, no bookkeeping; then the same from ``processes`` processes at
    once (each its share), as the delivery lanes send. The ceiling for our delivery rates. With
    ``server_pid``, also the server's own CPU time per message over the one connection."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    before = _cpu_seconds(server_pid)
    one = _blast(host, port, messages)
    after = _cpu_seconds(server_pid)
    shares = [messages[i::processes] for i in range(processes)]
    with ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn")) as pool:
        pool.submit(int).result()  # the workers are up before the clock starts, as the lanes' are
        started = time.perf_counter()
        list(pool.map(_blast, [host] * processes, [port] * processes, shares))
        parallel = time.perf_counter() - started
    return {
        "messages": len(messages),
        "one_connection_per_second": round(len(messages) / one, 1),
        "processes": processes,
        "parallel_per_second": round(len(messages) / parallel, 1),
        "server_cpu_ms_per_message": (
            round((after - before) / len(messages) * 1000, 3)
            if before is not None and after is not None
            else None
        ),
    }
