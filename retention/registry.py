"""The occasion registry: every occasion is declared once, and everything else reads it.

An occasion is three things: one SQL model (one row per candidate customer, with the details
a message may quote), one :class:`Occasion` declaration (name, kind of message, default
priority, the model's parameters, a post-filter, the template context and the lint samples),
and its templates, one per language. Settings (the default ``RETENTION_OCCASION_PRIORITY``),
detection (:mod:`retention.occasions`), rendering (:mod:`retention.contexts`), linting and
previews (:mod:`retention.samples`, :mod:`retention.lint`), the unsubscribe page's kinds and
the reports all take their list of occasions from here.

The eight shipped occasions are declared in :mod:`retention.builtin_occasions` (their models
in ``sql/occasions/``, their templates in ``templates/<occasion>/``). A shop adds its own
without touching the package: ``RETENTION_OCCASION_DIRS`` names folders (``os.pathsep``
between them) whose every sub-folder holding an ``occasion.py`` is one occasion::

    my_occasions/price_drop/occasion.py      OCCASION = Occasion(name="price_drop", ...)
    my_occasions/price_drop/occasion.sql     the model (the same macros as sql/occasions/)
    my_occasions/price_drop/en.jinja         its templates: en, de, nb, et
    ...

On Celery every worker must see the same folders (bake them into the image, or a shared
volume), like the DAGs folder. README, "Adding an occasion", is the recipe.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from retention.contexts import Lookups
    from retention.night import Night
    from retention.render import Formatter
    from retention.settings import Settings

__all__ = [
    "Detection",
    "Occasion",
    "OccasionError",
    "check",
    "problems",
    "night_window",
    "occasions",
    "occasion",
    "names",
    "default_priorities",
    "template_folder",
]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # occasions.occasion is String(32)

#: Declaration file and model file of an occasion in a folder of ``RETENTION_OCCASION_DIRS``.
DECLARATION, MODEL = "occasion.py", "occasion.sql"


class OccasionError(ValueError):
    """A declaration that cannot be used; the message names its file and what is wrong."""


@dataclass(frozen=True)
class Detection:
    """What an occasion's parameters and post-filter may read about the night being decided.

    ``targets``: every local date the night prepares (one per distinct zone offset, usually
    one or two). ``zones`` and ``target_of`` (per candidate customer: time zone, target
    date) are filled in before the post-filters run, not for the parameters.
    """

    conn: Connection
    night: Night
    settings: Settings
    targets: frozenset[dt.date]
    zones: Mapping[int, str] = field(default_factory=dict)
    target_of: Mapping[int, dt.date] = field(default_factory=dict)


ParamsFn = Callable[[Detection], "tuple[dict[str, Any], dict[str, Any]]"]
PostFilter = Callable[[list[dict], Detection], list[dict]]
ContextFn = Callable[[dict, "Lookups", "Formatter", dt.date], dict]
SamplesFn = Callable[["Formatter"], list[dict]]


def night_window(detection: Detection) -> tuple[dict, dict]:
    """The parameters every model gets: ``night`` and the night's UTC window (naive)."""
    night = detection.night
    return {
        "night": night.date,
        "window_start": night.window_start_naive,
        "window_end": night.window_end_naive,
    }, {}


@dataclass(frozen=True)
class Occasion:
    """One occasion, declared once.

    - ``name``: the occasion's id (``[a-z][a-z0-9_]*``), its templates' folder name.
    - ``kind``: the kind of message it is on the unsubscribe page, one of
      :data:`retention.unsubscribe.MESSAGE_KINDS` (a customer can stop each kind alone).
    - ``priority``: its default place in ``RETENTION_OCCASION_PRIORITY`` (lower goes first;
      the shipped ones use 10..80).
    - ``context(item, lookups, fmt, occasion_date)``: the occasion's own template variables,
      from the occasion's details (``item``, the model's columns) and what
      :func:`retention.contexts.gather` fetched (``lookups``: orders by ``order_id``,
      products by ``product_id``...), formatted with ``fmt`` in the customer's locale.
    - ``samples(fmt)``: those variables for the lint and the preview, first the sample
      and then variants that take the templates' other branches.
    - ``params(detection)``: the model's bound parameters and Jinja flags; the default gives
      the night and its window.
    - ``post_filter(rows, detection)``: what the model's rows must also pass (in Python: the
      customer's own zone, earlier nights' decisions); ``None``: all rows are candidates.
    - ``model``: the SQL model, ``occasions/occ_<name>`` in the package's ``sql/`` or a path
      to a ``.sql`` file; ``None``: that default, or ``occasion.sql`` beside an extension's
      declaration.
    - ``needs``: extra lookups its context reads (``"last_orders"``: each customer's last order).
    - ``forecast_note``, ``forecast_exact``: how far tomorrow's forecast of it can be trusted
      (:mod:`retention.forecast`), shown by ``retention forecast`` and the Tomorrow tab.
    - ``folder``: an extension's folder (its model and templates); set by the loader.
    """

    name: str
    kind: str
    priority: int
    context: ContextFn
    samples: SamplesFn
    params: ParamsFn = night_window
    post_filter: PostFilter | None = None
    model: str | None = None
    needs: frozenset[str] = frozenset()
    folder: Path | None = None
    description: str = ""
    forecast_note: str = "an estimate from the data known now (what arrives before the night is not in yet)"
    forecast_exact: bool = False

    @property
    def model_name(self) -> str:
        """What :func:`retention.sqlmodels.render` takes: a model name, or a ``.sql`` file's path."""
        if self.model:
            return self.model
        if self.folder is not None:
            return str(self.folder / MODEL)
        return f"occasions/occ_{self.name}"


def _check(found: Occasion, where: str) -> None:
    from retention.unsubscribe import MESSAGE_KINDS

    if not isinstance(found, Occasion):
        raise OccasionError(
            f"{where}: OCCASION must be a retention.registry.Occasion, not {type(found).__name__}"
        )
    if not _NAME.match(found.name or ""):
        raise OccasionError(f"{where}: occasion name {found.name!r} must match [a-z][a-z0-9_]* (at most 32 characters)")
    if found.kind not in MESSAGE_KINDS:
        raise OccasionError(
            f"{where}: occasion {found.name!r} has kind {found.kind!r}; one of: {', '.join(MESSAGE_KINDS)}"
        )
    if isinstance(found.priority, bool) or not isinstance(found.priority, int):
        raise OccasionError(f"{where}: occasion {found.name!r} needs an integer priority")
    for attribute in ("context", "samples", "params"):
        if not callable(getattr(found, attribute)):
            raise OccasionError(f"{where}: occasion {found.name!r}: {attribute} must be a function")
    if found.post_filter is not None and not callable(found.post_filter):
        raise OccasionError(f"{where}: occasion {found.name!r}: post_filter must be a function or None")
    unknown = set(found.needs) - {"last_orders"}
    if unknown:
        raise OccasionError(f"{where}: occasion {found.name!r} needs unknown lookups {sorted(unknown)}")


def _load_folder(folder: Path) -> Occasion:
    """The occasion declared in ``folder/occasion.py`` (its model beside it)."""
    declaration = folder / DECLARATION
    spec = importlib.util.spec_from_file_location(f"retention_occasion_{folder.name}", declaration)
    if spec is None or spec.loader is None:
        raise OccasionError(f"{declaration}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # a declaration is user code: name the file, whatever broke
        raise OccasionError(f"{declaration}: {type(error).__name__}: {error}") from error
    found = getattr(module, "OCCASION", None)
    if found is None:
        raise OccasionError(f"{declaration}: defines no OCCASION")
    _check(found, str(declaration))
    found = replace(found, folder=folder.resolve())
    if found.model is None and not (folder / MODEL).is_file():
        raise OccasionError(f"{declaration}: occasion {found.name!r} has no model {folder / MODEL}")
    return found


@functools.cache
def _registry(dirs: tuple[str, ...]) -> tuple[dict[str, Occasion], dict[str, str]]:
    """The occasions, in default priority order, and the declarations that cannot be used
    (their file, and why): a broken declaration leaves out its own occasion, never the others."""
    from retention.builtin_occasions import BUILTINS

    found: dict[str, Occasion] = {}
    where: dict[str, str] = {}
    problems: dict[str, str] = {}
    for declared in BUILTINS:
        _check(declared, "retention.builtin_occasions")
        found[declared.name], where[declared.name] = declared, "retention.builtin_occasions"
    for entry in dirs:
        root = Path(entry).expanduser()
        if not root.is_dir():
            problems[str(root)] = "RETENTION_OCCASION_DIRS names it, but it is not a folder"
            continue
        for folder in sorted(p for p in root.iterdir() if (p / DECLARATION).is_file()):
            try:
                declared = _load_folder(folder)
                if declared.name in found:
                    raise OccasionError(
                        f"{folder / DECLARATION}: occasion {declared.name!r} is already declared in "
                        f"{where[declared.name]}"
                    )
            except OccasionError as error:
                problems[str(folder / DECLARATION)] = str(error)
                log.error("occasion left out: %s", error)
                continue
            found[declared.name], where[declared.name] = declared, str(folder / DECLARATION)
    return dict(sorted(found.items(), key=lambda item: (item[1].priority, item[0]))), problems


def _dirs(settings: Settings | None) -> tuple[str, ...]:
    value = os.environ.get("RETENTION_OCCASION_DIRS", "") if settings is None else settings.occasion_dirs
    return tuple(part.strip() for part in value.split(os.pathsep) if part.strip())


def occasions(settings: Settings | None = None) -> dict[str, Occasion]:
    """Every occasion, shipped and from ``RETENTION_OCCASION_DIRS``, in default priority order.

    ``settings`` None: the folders of the environment (what the DAGs and the CLI use).
    """
    return _registry(_dirs(settings))[0]


def problems(settings: Settings | None = None) -> dict[str, str]:
    """Declarations in ``RETENTION_OCCASION_DIRS`` that cannot be used: file -> why (their
    occasions are left out; the occasions stage records this and ``retention report`` shows it)."""
    return dict(_registry(_dirs(settings))[1])


def check(settings: Settings | None = None) -> dict[str, Occasion]:
    """:func:`occasions`, raising :class:`OccasionError` for the first declaration that cannot be used."""
    for reason in problems(settings).values():
        raise OccasionError(reason)
    return occasions(settings)


def occasion(name: str, settings: Settings | None = None) -> Occasion:
    """One occasion by name (``KeyError`` naming the known ones)."""
    found = occasions(settings)
    if name not in found:
        raise KeyError(f"unknown occasion {name!r}; known: {', '.join(found)}")
    return found[name]


def names(settings: Settings | None = None) -> tuple[str, ...]:
    """Every occasion's name, in default priority order."""
    return tuple(occasions(settings))


def template_folder(name: str, settings: Settings) -> Path:
    """The folder of an occasion's shipped templates: ``templates/<name>/``, or an added
    occasion's own folder."""
    found = occasions(settings).get(name)
    if found is not None and found.folder is not None:
        return found.folder
    return settings.templates_path / name


def default_priorities(settings: Settings | None = None) -> tuple[str, ...]:
    """``RETENTION_OCCASION_PRIORITY``'s default: every occasion, by declared priority."""
    return names(settings)


def __getattr__(attribute: str) -> tuple[str, ...]:
    # OCCASIONS: the shipped occasions' names, in their priority order. Computed on first use,
    # because the declarations import the renderer, which imports the settings.
    if attribute == "OCCASIONS":
        return tuple(_registry(())[0])
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
