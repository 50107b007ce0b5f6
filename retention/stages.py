"""The nightly chain, declared once: ``retention_nightly`` and :func:`retention.pipeline.run_night`
are both built from :data:`NIGHT_STAGES`.

A light module on purpose: the DAG file imports it when Airflow parses DAGs, so it names each
stage's function and its final errors as ``module:attribute`` strings, imported only when a
stage runs.
"""

from __future__ import annotations

import datetime as dt
import importlib
from dataclasses import dataclass
from typing import Any

__all__ = ["Stage", "NIGHT_STAGES", "stage"]


def _resolve(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Stage:
    """One stage: what ``run_night`` calls and what the DAG makes a task of.

    ``inlets`` and ``outlets`` name the data the stage reads and writes (the DAG maps them to
    Airflow assets; ``source`` is the shop's database). ``refreshes``: the function takes
    ``full_refresh``; ``signs``: it takes the unsubscribe signing ``secret``. ``final``: errors
    no retry can mend (the task then fails for good at once).
    """

    name: str  # in the run log
    task_id: str  # in the DAG
    function: str  # module:function taking (settings, night, run_id, ...)
    group: str  # the DAG's task group: load, model, messages
    timeout: dt.timedelta  # the task's execution_timeout: far above a normal night at 1M customers
    inlets: tuple[str, ...] = ()
    outlets: tuple[str, ...] = ()
    refreshes: bool = False
    signs: bool = False
    final: tuple[str, ...] = ()  # module:exception

    def final_errors(self) -> tuple[type[Exception], ...]:
        return tuple(_resolve(path) for path in self.final)

    def __call__(
        self,
        settings: Any,
        night: Any,
        run_id: str,
        *,
        full_refresh: bool = False,
        secret: bytes | None = None,
    ) -> dict:
        options: dict = {}
        if self.refreshes:
            options["full_refresh"] = full_refresh
        if self.signs:
            options["secret"] = secret
        return _resolve(self.function)(settings, night, run_id, **options)


_HOUR = dt.timedelta(hours=1)
_PIPELINE = "retention.pipeline"

#: The nightly chain in order (after ``migrate``, which every run does first).
NIGHT_STAGES: tuple[Stage, ...] = (
    Stage(
        "extract",
        "extract",
        f"{_PIPELINE}:stage_extract",
        "load",
        3 * _HOUR,
        inlets=("source",),
        outlets=("staging", "quarantine"),
        refreshes=True,
    ),
    Stage(
        "quality",
        "quality",
        f"{_PIPELINE}:stage_quality",
        "load",
        _HOUR / 4,
        inlets=("staging", "quarantine"),
        final=(f"{_PIPELINE}:QualityError",),  # the same rows fail again: alert now, not later
    ),
    Stage(
        "facts",
        "customer_facts",
        f"{_PIPELINE}:stage_facts",
        "model",
        2 * _HOUR,
        inlets=("staging",),
        outlets=("customer_facts",),
        refreshes=True,
    ),
    Stage(
        "segments",
        "segments",
        f"{_PIPELINE}:stage_segments",
        "model",
        2 * _HOUR,
        inlets=("customer_facts",),
        outlets=("segments",),
    ),
    Stage(
        "recommendations",
        "recommendations",
        f"{_PIPELINE}:stage_recommendations",
        "model",
        2 * _HOUR,
        inlets=("staging", "customer_facts"),
        outlets=("recommendations",),
        refreshes=True,
    ),
    Stage(
        "occasions",
        "occasions",
        f"{_PIPELINE}:stage_occasions",
        "messages",
        _HOUR,
        inlets=("staging", "customer_facts", "segments", "recommendations"),
        outlets=("occasions",),
    ),
    Stage(
        "render",
        "render",
        f"{_PIPELINE}:stage_render",
        "messages",
        3 * _HOUR,
        inlets=("occasions", "staging"),
        outlets=("outbox",),
        signs=True,
    ),
)


def stage(name: str) -> Stage:
    """The stage called ``name`` (run-log name or task id)."""
    for candidate in NIGHT_STAGES:
        if name in (candidate.name, candidate.task_id):
            return candidate
    raise KeyError(f"no stage {name!r}: the stages are {', '.join(s.name for s in NIGHT_STAGES)}")
