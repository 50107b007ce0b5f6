"""The render worker starts inside a daemonic process, as Celery's prefork pool runs Airflow tasks.

Found by the Celery topology test (tests/test_celery_topology.py): the nightly render failed
there with "daemonic processes are not allowed to have children". This reproduces the
condition without Celery: a daemonic multiprocessing child renders a message.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from retention.render import RenderPool
from retention.samples import sample_context

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _render_in_child(queue) -> None:
    try:
        with RenderPool(TEMPLATES) as pool:
            [message] = pool.render("birthday/en.jinja", [sample_context("birthday", "en")])
        queue.put(("ok", message.subject, multiprocessing.current_process().daemon))
    except BaseException as exc:  # reported to the test, whatever it is
        queue.put(("error", f"{type(exc).__name__}: {exc}", None))


def test_a_daemonic_process_can_render() -> None:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_render_in_child, args=(queue,), daemon=True)
    child.start()
    outcome, detail, daemon_after = queue.get(timeout=120)
    child.join(timeout=60)
    assert (outcome, child.exitcode) == ("ok", 0), detail
    assert detail.startswith("Happy birthday")
    assert daemon_after is True, "the daemon flag is restored when the pool closes"
