"""A deterministic, realistic demo shop: the *source* database the pipeline extracts from.

:func:`generate` fills the tables of :mod:`retention.source` with customers in four
languages, a product catalogue with natural purchase sequences (lawn mower, then
chainsaw, then brush cutter) and accessories, and three years of orders up to the
night of ``as_of``. A product's category is its kind (``lawn_mowers``, ``chainsaws``,
``docking_stations``, ...), the level where the sequences live (issue #12); departments
(garden, computing, ...) only shape the simulation. A few new customers bought only a
main product on the days whose follow-ups night ``as_of`` sends (``_showcase_orders``),
so that the demo night has chainsaw and docking-station suggestions to show. A small
share of deliberately bad rows is planted, each breaking exactly one quality rule, and
recorded in the demo-only table ``_demo_defects`` so that tests can check that the
pipeline quarantines exactly those.

The catalogue (departments, kinds, brands, price ranges) is data, the package's
``demo_catalogue.toml`` (:func:`load_catalogue`); this module is the generator.

The same ``(customers, seed, as_of)`` always gives the same rows: every random draw
comes from generators seeded from ``seed`` (never the wall clock, never ``hash()``).
Everything is built as numpy column arrays and written in large batches, because the
demo must be able to produce about a million order lines in well under a minute.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import time
import tomllib
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from faker import Faker
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import Boolean, Column, Date, DateTime, Engine, MetaData, Numeric, Table, Text, create_engine
from sqlalchemy.engine import make_url

from retention.source import SOURCE_TABLES, metadata

__all__ = [
    "DEMO_AS_OF",
    "DEFECT_RULES",
    "DemoCatalogue",
    "DemoSummary",
    "demo_defects",
    "generate",
    "load_catalogue",
]

#: Default anchor of the demo: the night the demo data is made for. Never the wall clock.
DEMO_AS_OF = dt.date(2026, 11, 22)

#: The shop's own time zone; "the last local day" is a day in this zone.
SHOP_TIME_ZONE = "Europe/Berlin"

#: Every kind of planted defect, by the quality rule it breaks.
DEFECT_RULES = (
    "duplicate_key",
    "negative_quantity",
    "unknown_customer",
    "unknown_product",
    "malformed_email",
    "future_date",
    "missing_name",
    "name_too_long",
    "control_characters",
)

#: Demo-only bookkeeping: which planted rows are bad, and why. Not part of the shop's schema.
defects_metadata = MetaData()
demo_defects = Table(
    "_demo_defects",
    defects_metadata,
    Column("source_table", Text, nullable=False),
    Column("source_key", Text, nullable=False),
    Column("rule", Text, nullable=False),
)

# A table under construction: column name -> numpy array (object arrays for text).
Frame = dict[str, np.ndarray]

_DAY = 86_400
_WINDOW_DAYS = 1096  # three years of orders before as_of
_CHUNK = 100_000  # rows per executemany / COPY batch: big enough to be fast, small enough for memory


@dataclass
class DemoSummary:
    """What :func:`generate` wrote."""

    rows: dict[str, int]  # rows written per source table, planted defects included
    defects: dict[str, int]  # planted bad rows per rule name
    seconds: float


# --------------------------------------------------------------------------- places


@dataclass(frozen=True)
class _Place:
    language: str
    time_zone: str
    country: str
    faker_locale: str
    share: float


# Faker has no nb_NO; no_NO is its Norwegian (Bokmål) locale.
_PLACES = (
    _Place("en", "Europe/London", "GB", "en_GB", 0.24),
    _Place("en", "America/New_York", "US", "en_US", 0.15),
    _Place("en", "Europe/Dublin", "IE", "en_IE", 0.05),
    _Place("de", "Europe/Berlin", "DE", "de_DE", 0.21),
    _Place("de", "Europe/Vienna", "AT", "de_AT", 0.06),
    _Place("de", "Europe/Zurich", "CH", "de_CH", 0.04),
    _Place("nb", "Europe/Oslo", "NO", "no_NO", 0.13),
    _Place("et", "Europe/Tallinn", "EE", "et_EE", 0.12),
)
_PLACE_SHARES = np.array([p.share for p in _PLACES])
_LANGUAGES = ("en", "de", "nb", "et")
# Places of the forced first-time buyers of the last day: every language three times, every place once.
_FORCED_PLACES = (0, 3, 6, 7, 1, 4, 6, 7, 2, 5, 6, 7)
# Reserved example domains (RFC 2606), so that no demo address can ever reach a real person.
_DOMAINS = np.array(["example.com", "example.net", "example.org"], dtype=object)

# Local hour of day of orders: quiet nights, lunch bump, busy evenings.
_HOUR_WEIGHTS = np.array(
    [
        0.6,
        0.3,
        0.2,
        0.15,
        0.15,
        0.3,
        0.8,
        1.5,
        2.5,
        3.0,
        3.2,
        3.5,
        4.2,
        4.0,
        3.3,
        3.2,
        3.3,
        3.6,
        4.2,
        5.0,
        5.5,
        5.2,
        4.0,
        2.2,
    ]
)

# Customer behaviour segments and their shares.
_NEVER, _ONE_OFF, _OCCASIONAL, _LAPSED, _LOYAL = range(5)
_SEGMENT_SHARES = np.array([0.10, 0.25, 0.27, 0.18, 0.20])


# --------------------------------------------------------------------------- catalogue

#: The product catalogue (departments, kinds, brands, price ranges): data in the package, not code.
CATALOGUE_FILE = "demo_catalogue.toml"


class _Kind(BaseModel):
    """A kind of product (lawn mowers); ``category`` is the shop's category of its products."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    noun: str = Field(min_length=1)  # ends the product names: "Greenvale Plus 370 Lawn Mower"
    category: str = Field(pattern=r"^[a-z][a-z0-9_]*$")  # products.category
    low: float = Field(gt=0)  # price range in EUR, cheapest to dearest model
    high: float
    models: int = Field(1, ge=1)  # products of the kind (not for accessories: one per main model)

    @model_validator(mode="after")
    def _price_range(self) -> _Kind:
        if self.high <= self.low:
            raise ValueError(f"{self.noun}: the price range needs low < high, not {self.low} to {self.high}")
        return self


class _Category(BaseModel):
    """A department: product kinds that customers buy in sequence, with extras and accessories.

    Departments only shape the simulated purchases; the shop's ``category`` of a product is
    its kind (lawn_mowers, chainsaws, docking_stations, ...), the level at which purchase
    sequences live and the category rules can learn them (issue #12).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    brands: tuple[str, ...] = Field(min_length=1)
    sequence: tuple[_Kind, ...] = Field(min_length=1)  # the order in which customers tend to buy
    extras: tuple[_Kind, ...] = Field(min_length=1)  # everything else in the department
    accessories: tuple[_Kind, ...] = ()  # one made for every model of the sequence's first kind

    @model_validator(mode="after")
    def _accessories_have_no_models(self) -> _Category:
        counted = [kind.noun for kind in self.accessories if "models" in kind.model_fields_set]
        if counted:
            raise ValueError(
                f"{self.name}: accessories {counted} have no `models`: one of each is made for every "
                f"model of {self.sequence[0].noun}"
            )
        return self


class DemoCatalogue(BaseModel):
    """The demo shop's product catalogue, as read from ``retention/demo_catalogue.toml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tiers: tuple[str, ...] = Field(min_length=1)  # model names' tiers, cheapest first
    departments: tuple[_Category, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> DemoCatalogue:
        names = [department.name for department in self.departments]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"departments named more than once: {twice}")
        return self


def load_catalogue(path: Path | None = None) -> DemoCatalogue:
    """The catalogue from ``path`` (by default the one in the package), checked.

    A malformed file raises :class:`ValueError` naming the file and the entry at fault
    (``departments.0.sequence.1.low``, say).
    """
    source = path or files("retention").joinpath(CATALOGUE_FILE)
    try:
        return DemoCatalogue.model_validate(tomllib.loads(source.read_text(encoding="utf-8")))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ValueError(f"demo catalogue {source}: {exc}") from None


@functools.cache
def _catalogue() -> DemoCatalogue:
    """The packaged catalogue, read once per process."""
    return load_catalogue()


@dataclass
class _Catalogue:
    """The products plus the lookup arrays that let orders pick products vectorised."""

    table: Frame
    category: np.ndarray  # department index per product row
    stage_pool: np.ndarray  # [category, stage, model] -> product row, padded
    stage_count: np.ndarray  # [category, stage]
    cat_pool: np.ndarray  # [category, k] -> extra (non-sequence) product row, padded
    cat_count: np.ndarray
    acc_pool: np.ndarray  # [product row, k] -> accessory product row, padded
    acc_count: np.ndarray
    weight: np.ndarray  # popularity, sums to 1


class _CatalogueBuilder:
    """Collects product rows one by one (a few hundred, so plain Python is fine)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.names: list[str] = []
        self.categories: list[int] = []  # department index
        self.kinds: list[str] = []  # the product's category in the shop
        self.accessory_for: list[int | None] = []
        self.prices: list[int] = []
        self.costs: list[int] = []
        self.weights: list[float] = []

    def add(
        self, name: str, category: int, kind: _Kind, position: float, weight: float, parent: int | None
    ) -> int:
        """Add one product; returns its row index (product_id - 1)."""
        euros = kind.low + (kind.high - kind.low) * position * self.rng.uniform(0.85, 1.0)
        price = max(int(round(euros)), 2) * 100 - 1  # shop prices end in .99
        margin = self.rng.uniform(0.20, 0.60)
        self.names.append(name)
        self.categories.append(category)
        self.kinds.append(kind.category)
        self.accessory_for.append(None if parent is None else parent + 1)
        self.prices.append(price)
        self.costs.append(int(round(price * (1 - margin))))
        self.weights.append(weight)
        return len(self.names) - 1

    def models(self, category: int, cat: _Category, kind: _Kind, weight: float) -> list[int]:
        """Add the models of one kind, cheapest first; returns their rows."""
        rows = []
        for i in range(kind.models):
            brand = cat.brands[int(self.rng.integers(len(cat.brands)))]
            tiers = _catalogue().tiers
            tier = tiers[min(i * len(tiers) // kind.models, len(tiers) - 1)]
            number = int(self.rng.integers(2, 99)) * 10
            position = (i + 0.5) / kind.models
            rows.append(
                self.add(f"{brand} {tier} {number} {kind.noun}", category, kind, position, weight, None)
            )
        return rows


def _build_catalogue(rng: np.random.Generator, clock: _Clock) -> _Catalogue:
    """Products of all categories with purchase sequences, extras and accessories."""
    builder = _CatalogueBuilder(rng)
    stages: list[list[list[int]]] = []
    members: list[list[int]] = []
    accessories: dict[int, list[int]] = {}
    for c, cat in enumerate(_catalogue().departments):
        # Weights per kind, spread over its models, so that big-ticket items do not dominate.
        cat_stages = [builder.models(c, cat, kind, 1.0 / kind.models) for kind in cat.sequence]
        extras = [row for kind in cat.extras for row in builder.models(c, cat, kind, 1.2 / kind.models)]
        for main in cat_stages[0]:
            accessories[main] = [
                builder.add(
                    f"{acc.noun} for {builder.names[main].removesuffix(' ' + cat.sequence[0].noun)}",
                    c,
                    acc,
                    float(rng.uniform(0.2, 0.9)),
                    0.5,
                    main,
                )
                for acc in cat.accessories
            ]
        stages.append(cat_stages)
        members.append(extras)
    return _assemble_catalogue(builder, stages, members, accessories, rng, clock)


def _padded(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    width = max(1, max((len(x) for x in lists), default=1))
    pool = np.zeros((len(lists), width), dtype=np.int64)
    for i, values in enumerate(lists):
        pool[i, : len(values)] = values
    return pool, np.array([len(x) for x in lists], dtype=np.int64)


def _assemble_catalogue(
    builder: _CatalogueBuilder,
    stages: list[list[list[int]]],
    members: list[list[int]],
    accessories: dict[int, list[int]],
    rng: np.random.Generator,
    clock: _Clock,
) -> _Catalogue:
    n = len(builder.names)
    n_stages = max(len(s) for s in stages)
    stage_pool = np.zeros((len(stages), n_stages, max(len(m) for s in stages for m in s)), dtype=np.int64)
    stage_count = np.zeros((len(stages), n_stages), dtype=np.int64)
    for c, cat_stages in enumerate(stages):
        for s, rows in enumerate(cat_stages):
            stage_pool[c, s, : len(rows)] = rows
            stage_count[c, s] = len(rows)
    cat_pool, cat_count = _padded(members)
    acc_pool, acc_count = _padded([accessories.get(row, []) for row in range(n)])
    # Popularity: the catalogue's shape times a random per-product appeal.
    weight = np.array(builder.weights) * rng.lognormal(0.0, 0.6, n)
    # All products exist before the first order; prices were last touched some time later.
    created = clock.window_start - rng.integers(30 * _DAY, 500 * _DAY, n)
    parent = np.array([-1 if p is None else p - 1 for p in builder.accessory_for], dtype=np.int64)
    is_accessory = parent >= 0
    created[is_accessory] = np.maximum(
        created[is_accessory], created[parent[is_accessory]] + _DAY
    )  # made for it
    updated = created + rng.integers(_DAY, clock.cutoff - 3600 - created)
    category = np.array(builder.categories, dtype=np.int64)
    departments = _catalogue().departments
    table: Frame = {
        "product_id": np.arange(1, n + 1, dtype=np.int64),
        "sku": np.array(
            [f"{departments[c].name[:3].upper()}-{i + 1:05d}" for i, c in enumerate(category)], dtype=object
        ),
        "name": np.array(builder.names, dtype=object),
        "category": np.array(builder.kinds, dtype=object),
        "accessory_for": np.array(builder.accessory_for, dtype=object),
        "price": np.array(builder.prices, dtype=np.int64),
        "cost": np.array(builder.costs, dtype=np.int64),
        "currency": np.full(n, "EUR", dtype=object),
        "created_at": created,
        "updated_at": updated,
    }
    return _Catalogue(
        table,
        category,
        stage_pool,
        stage_count,
        cat_pool,
        cat_count,
        acc_pool,
        acc_count,
        weight / weight.sum(),
    )


# --------------------------------------------------------------------------- clock


@dataclass(frozen=True)
class _Clock:
    """The demo's time frame, all instants as UTC epoch seconds."""

    as_of: dt.date
    start_day: dt.date  # first local day of the order window
    days: int  # local days in the window; the last one is as_of - 1
    window_start: int
    last_day_start: int  # (as_of - 1) 00:00 in the shop's time zone
    cutoff: int  # as_of 00:00 in the shop's time zone: every timestamp lies before it


def _epoch(day: dt.date, zone: ZoneInfo) -> int:
    return int(dt.datetime.combine(day, dt.time(), tzinfo=zone).timestamp())


def _make_clock(as_of: dt.date) -> _Clock:
    shop = ZoneInfo(SHOP_TIME_ZONE)
    start_day = as_of - dt.timedelta(days=_WINDOW_DAYS)
    return _Clock(
        as_of=as_of,
        start_day=start_day,
        days=_WINDOW_DAYS,
        window_start=_epoch(start_day, shop),
        last_day_start=_epoch(as_of - dt.timedelta(days=1), shop),
        cutoff=_epoch(as_of, shop),
    )


def _day_starts(clock: _Clock) -> np.ndarray:
    """UTC epoch of local midnight per place and window day, so local times convert exactly."""
    out = np.empty((len(_PLACES), clock.days + 1), dtype=np.int64)
    for p, place in enumerate(_PLACES):
        zone = ZoneInfo(place.time_zone)
        for d in range(clock.days + 1):
            out[p, d] = _epoch(clock.start_day + dt.timedelta(days=d), zone)
    return out


def _rng(seed: int, stream: int) -> np.random.Generator:
    """An independent generator per purpose, so that changing one part leaves the others alone."""
    return np.random.default_rng([seed, stream])


# --------------------------------------------------------------------------- people and their orders


@dataclass
class _People:
    """The good customers (by row index) and the good orders' customer and time."""

    place: np.ndarray
    segment: np.ndarray
    created: np.ndarray
    forced_new: np.ndarray  # bool: a new customer whose first order is on the last local day
    order_customer: np.ndarray  # row index into the customers
    order_time: np.ndarray  # epoch seconds
    order_forced_first: np.ndarray  # bool: that first order of a forced new customer
    showcase: np.ndarray  # bool: a new customer whose one order is a showcase order (below)
    order_showcase: np.ndarray  # department of a showcase order's main product; -1 for other orders


def _segment_params(rng: np.random.Generator, segment: np.ndarray, days: int) -> tuple[np.ndarray, ...]:
    """Per customer: first order day, end of activity, mean gap, gap regularity, order cap."""
    n = len(segment)
    t0 = rng.uniform(0, days, n)
    end = np.full(n, float(days))
    gap = rng.uniform(90, 300, n)
    shape = np.full(n, 1.5)
    cap = rng.integers(2, 7, n)
    cap[segment == _NEVER] = 0
    cap[segment == _ONE_OFF] = 1
    lapsed = segment == _LAPSED  # active for a while, silent for the last year or two
    end[lapsed] = days - rng.uniform(300, 720, lapsed.sum())
    t0[lapsed] = rng.uniform(0, 1, lapsed.sum()) * (end[lapsed] - 60)
    gap[lapsed] = rng.uniform(20, 70, lapsed.sum())
    shape[lapsed] = 3.0
    cap[lapsed] = rng.integers(3, 13, lapsed.sum())
    loyal = segment == _LOYAL  # early start, steady gaps until now
    t0[loyal] = rng.uniform(0, 250, loyal.sum())
    gap[loyal] = rng.uniform(55, 130, loyal.sum())
    shape[loyal] = 6.0
    cap[loyal] = 40
    return t0, end, gap, shape, cap


def _timelines(rng: np.random.Generator, segment: np.ndarray, days: int) -> tuple[np.ndarray, np.ndarray]:
    """Order days (float, local) per customer from gamma-distributed gaps; returns (customer, day)."""
    t0, end, gap, shape, cap = _segment_params(rng, segment, days)
    width = int(cap.max()) if len(cap) else 0
    gaps = rng.gamma(shape[:, None], (gap / shape)[:, None], size=(len(segment), width))
    gaps[:, 0] = 0.0
    t = t0[:, None] + np.cumsum(gaps, axis=1)
    keep = (t < end[:, None]) & (np.arange(width)[None, :] < cap[:, None])
    rows, cols = np.nonzero(keep)
    return rows, t[rows, cols]


def _local_times(
    rng: np.random.Generator, place: np.ndarray, day: np.ndarray, starts: np.ndarray
) -> np.ndarray:
    """UTC epoch seconds of orders on the given local days, at realistic local hours."""
    hour = rng.choice(24, len(day), p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    return starts[place, day] + hour * 3600 + rng.integers(0, 3600, len(day))


def _forced_counts(n: int) -> tuple[int, int]:
    """Last-day orders (busy: at least ~1.5 % of customers) and how many are first orders of new customers."""
    busy = max(40, round(0.015 * n))
    first = max(len(_FORCED_PLACES), round(0.004 * n))
    return busy, first


#: Nights after an order that its follow-ups go out (the defaults of RETENTION_NEXT_PURCHASE_DELAY_DAYS
#: and RETENTION_ACCESSORY_DELAY_DAYS): the night as_of looks back to orders of these shop-local days.
_SHOWCASE_DELAYS = (14, 3)


def _showcase_count(n: int) -> int:
    """New customers per department and showcase day: 3 from 1,500 customers, so that a few
    reach a message (holdout, an A/B class and a rule all have to agree); none in a tiny shop,
    whose few customers stay ordinary."""
    if n < 500:
        return 0
    return max(min(3, n // 500), round(n / 5000))


def _showcase_orders(seed: int, n: int, clock: _Clock) -> tuple[np.ndarray, np.ndarray]:
    """(department, epoch time) of the showcase orders.

    So that the demo night has suggestions of the issue's kind to show (issue #12: "a chainsaw
    for recent lawn-mower buyers, a docking station for laptop buyers"), a few new customers
    of every department bought only its main product (a lawn mower, a laptop, ...) on the
    shop-local day whose follow-ups night as_of sends: 15 days before as_of (next purchase,
    14 nights later) and 4 days before (accessory, 3 nights later). In a shop of 2,000
    customers such buyers are otherwise rare on one given day. Their times come from a
    random stream of their own.
    """
    rng = _rng(seed, 7)
    k = _showcase_count(n)
    departments = len(_catalogue().departments)
    department = np.tile(np.repeat(np.arange(departments), k), len(_SHOWCASE_DELAYS))
    shop = ZoneInfo(SHOP_TIME_ZONE)
    day_start = np.repeat(
        [_epoch(clock.as_of - dt.timedelta(days=delay + 1), shop) for delay in _SHOWCASE_DELAYS],
        departments * k,
    )
    times = day_start + rng.integers(8 * 3600, 20 * 3600, len(department))
    return department, times


def _build_people(seed: int, n: int, clock: _Clock) -> _People:
    """Places, segments and order times of all good customers."""
    rng = _rng(seed, 2)
    busy, n_forced = _forced_counts(n)
    showcase_department, showcase_times = _showcase_orders(seed, n, clock)
    n_showcase = len(showcase_department)
    place = rng.choice(len(_PLACES), n, p=_PLACE_SHARES)
    place[n - n_forced : n - n_forced + len(_FORCED_PLACES)] = _FORCED_PLACES
    segment = rng.choice(len(_SEGMENT_SHARES), n, p=_SEGMENT_SHARES)
    segment[n - n_forced - n_showcase :] = _ONE_OFF
    regular = n - n_forced - n_showcase
    cust, day_f = _timelines(rng, segment[:regular], clock.days)
    times = _local_times(rng, place[cust], day_f.astype(np.int64), _day_starts(clock))
    inside = times < clock.cutoff - 3600  # the evening of the last day in New York is past the cutoff
    cust, times = cust[inside], times[inside]
    # Existing buyers who come back on the last local day, so the demo night is busy.
    buyers = np.unique(cust[np.isin(segment[cust], (_LOYAL, _OCCASIONAL))])  # not the lapsed ones
    back = rng.choice(buyers, min(busy - n_forced, len(buyers)), replace=False)
    forced = np.arange(n - n_forced, n)
    late = clock.last_day_start + 6 * 3600
    extra_times = rng.integers(late, clock.cutoff - 3600, len(back) + n_forced)
    order_customer = np.concatenate([cust, back, np.arange(regular, n - n_forced), forced])
    order_time = np.concatenate([times, extra_times[: len(back)], showcase_times, extra_times[len(back) :]])
    forced_first = np.zeros(len(order_customer), dtype=bool)
    forced_first[len(order_customer) - n_forced :] = True
    order_showcase = np.full(len(order_customer), -1, dtype=np.int64)
    order_showcase[len(cust) + len(back) : len(order_customer) - n_forced] = showcase_department
    forced_new = np.zeros(n, dtype=bool)
    forced_new[n - n_forced :] = True
    showcase = np.zeros(n, dtype=bool)
    showcase[regular : n - n_forced] = True
    created = _created(rng, n, clock, order_customer, order_time, forced_new)
    return _People(
        place,
        segment,
        created,
        forced_new,
        order_customer,
        order_time,
        forced_first,
        showcase,
        order_showcase,
    )


def _created(
    rng: np.random.Generator,
    n: int,
    clock: _Clock,
    cust: np.ndarray,
    times: np.ndarray,
    forced_new: np.ndarray,
) -> np.ndarray:
    """Account creation: before the first order (often right at checkout); anywhere for non-buyers."""
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, cust, times)
    at_checkout = rng.random(n) < 0.35
    lead = np.where(
        at_checkout, rng.integers(120, 3600, n), rng.exponential(120 * _DAY, n).astype(np.int64) + 3600
    )
    lead[forced_new] = rng.integers(120, 5 * 3600, forced_new.sum())  # signed up on the day itself
    never = rng.integers(clock.window_start - 365 * _DAY, clock.cutoff - 2 * 3600, n)
    return np.where(first == np.iinfo(np.int64).max, never, first - lead)


# --------------------------------------------------------------------------- customers


@dataclass
class _NamePool:
    first: np.ndarray
    last: np.ndarray
    first_slug: np.ndarray
    last_slug: np.ndarray


_TRANSLIT = str.maketrans(
    {"ß": "ss", "ø": "o", "Ø": "o", "æ": "ae", "Æ": "ae", "ð": "d", "þ": "th", "ł": "l"}
)


def _slug(name: str) -> str:
    """ASCII letters of a name for an email local part (Jürgen -> jurgen, Søren -> soren)."""
    ascii_name = unicodedata.normalize("NFKD", name.translate(_TRANSLIT)).encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_name.lower() if ch.isalnum())


def _unique(values: list[str]) -> np.ndarray:
    return np.array(list(dict.fromkeys(values)), dtype=object)


def _name_pools(seed: int) -> list[_NamePool]:
    """Realistic names per place from Faker, drawn once into pools that numpy can index."""
    pools = []
    for p, place in enumerate(_PLACES):
        fake = Faker(place.faker_locale)
        fake.seed_instance(seed * 1000 + p)
        first = _unique([fake.first_name() for _ in range(1500)])
        last = _unique([fake.last_name() for _ in range(1500)])
        first_slug = np.array([_slug(x) or "customer" for x in first], dtype=object)
        last_slug = np.array([_slug(x) or "shop" for x in last], dtype=object)
        pools.append(_NamePool(first, last, first_slug, last_slug))
    return pools


def _names(rng: np.random.Generator, place: np.ndarray, pools: list[_NamePool]) -> tuple[np.ndarray, ...]:
    """First and last names (and their email slugs) for customers at the given places."""
    n = len(place)
    out = [np.empty(n, dtype=object) for _ in range(4)]
    for p, pool in enumerate(pools):
        at = np.nonzero(place == p)[0]
        fi = rng.integers(0, len(pool.first), len(at))
        li = rng.integers(0, len(pool.last), len(at))
        out[0][at], out[1][at] = pool.first[fi], pool.last[li]
        out[2][at], out[3][at] = pool.first_slug[fi], pool.last_slug[li]
    return tuple(out)


def _emails(rng: np.random.Generator, ids: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Valid, unique addresses: the customer id in the local part makes them unique."""
    style = rng.integers(0, 4, len(ids)).tolist()
    domain = _DOMAINS[rng.integers(0, len(_DOMAINS), len(ids))].tolist()
    out = []
    for i, s, f, n, d in zip(ids.tolist(), style, first.tolist(), last.tolist(), domain, strict=True):
        local = (f"{f}.{n}", f"{f[0]}.{n}", f"{f}_{n}", f"{n}.{f}")[s]
        out.append(f"{local}{i}@{d}")
    return np.array(out, dtype=object)


def _birthdays(rng: np.random.Generator, n: int, as_of: dt.date) -> np.ndarray:
    """Ages 18-85 (NaT for the ~10 % unknown) and a handful born on 29 February."""
    years = np.clip(rng.normal(45, 15, n), 18.05, 85.9)
    days = np.datetime64(as_of, "D") - np.round(years * 365.2425).astype("timedelta64[D]")
    days[rng.random(n) < 0.10] = np.datetime64("NaT")
    leap_years = [
        y for y in range(as_of.year - 80, as_of.year - 19) if y % 4 == 0 and (y % 100 or y % 400 == 0)
    ]
    k = max(3, round(0.0003 * n))
    at = rng.choice(n, k, replace=False)
    days[at] = [
        np.datetime64(dt.date(leap_years[int(j)], 2, 29), "D") for j in rng.integers(0, len(leap_years), k)
    ]
    return days


def _birthday_today(
    rng: np.random.Generator, birthdays: np.ndarray, place: np.ndarray, consent: np.ndarray, as_of: dt.date
) -> None:
    """Make a few customers (every language, with consent) have their birthday on as_of."""
    years = [y for y in range(as_of.year - 70, as_of.year - 20) if _valid_date(y, as_of.month, as_of.day)]
    language = np.array([_PLACES[p].language for p in place])
    chosen = [
        int(rng.choice(np.nonzero(language == lang)[0])) for lang in _LANGUAGES if (language == lang).any()
    ]
    extra = rng.choice(len(place), max(0, max(4, len(place) // 400) - len(chosen)), replace=False)
    for row in [*chosen, *extra.tolist()]:
        year = years[int(rng.integers(0, len(years)))]
        birthdays[row] = np.datetime64(dt.date(year, as_of.month, as_of.day), "D")
        consent[row] = True


def _valid_date(year: int, month: int, day: int) -> bool:
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


def _build_customers(
    seed: int, people: _People, clock: _Clock, pools: list[_NamePool]
) -> tuple[Frame, np.ndarray]:
    """The good customers' rows, ids ordered by sign-up; returns the frame and id per customer row."""
    rng = _rng(seed, 3)
    n = len(people.place)
    ids = np.empty(n, dtype=np.int64)
    ids[np.argsort(people.created, kind="stable")] = np.arange(1, n + 1)
    first, last, first_slug, last_slug = _names(rng, people.place, pools)
    consent = (rng.random(n) < 0.85) | people.forced_new | people.showcase
    birthdays = _birthdays(rng, n, clock.as_of)
    _birthday_today(rng, birthdays, people.place, consent, clock.as_of)
    created = people.created
    # Most profiles are touched right after sign-up; some much later (new address, consent change).
    updated = created + rng.integers(60, 3600, n)
    # (Not the showcase customers: their order's night must find them, or the order would be
    # held back as unknown_customer.)
    later = (rng.random(n) < 0.35) & ~people.showcase
    updated[later] = (
        created[later]
        + 60
        + (rng.random(later.sum()) * (clock.cutoff - 61 - created[later])).astype(np.int64)
    )
    frame: Frame = {
        "customer_id": ids,
        "email": _emails(rng, ids, first_slug, last_slug),
        "first_name": first,
        "last_name": last,
        "language": np.array([_PLACES[p].language for p in people.place], dtype=object),
        "time_zone": np.array([_PLACES[p].time_zone for p in people.place], dtype=object),
        "country": np.array([_PLACES[p].country for p in people.place], dtype=object),
        "birthday": birthdays,
        "marketing_consent": consent,
        "created_at": created,
        "updated_at": np.minimum(updated, clock.cutoff - 1),
    }
    order = np.argsort(ids, kind="stable")
    return {k: v[order] for k, v in frame.items()}, ids


# --------------------------------------------------------------------------- orders and items


@dataclass
class _Orders:
    table: Frame
    customer_row: np.ndarray  # customer row index per order
    rank: np.ndarray  # 0 for a customer's first order, 1 for the second ...
    showcase: np.ndarray  # department of a showcase order's main product, else -1


def _build_orders(seed: int, people: _People, customer_ids: np.ndarray, clock: _Clock) -> _Orders:
    """Good orders, ids in time order; status and first updated_at (returns come later)."""
    rng = _rng(seed, 4)
    order = np.lexsort((people.order_customer, people.order_time))
    cust = people.order_customer[order]
    ordered = people.order_time[order]
    n = len(order)
    by_customer = np.lexsort((ordered, cust))
    rank = np.empty(n, dtype=np.int64)
    sorted_cust = cust[by_customer]
    group_start = np.maximum.accumulate(
        np.where(np.r_[True, sorted_cust[1:] != sorted_cust[:-1]], np.arange(n), 0)
    )
    rank[by_customer] = np.arange(n) - group_start
    showcase = people.order_showcase[order]
    cancelled = (rng.random(n) < 0.03) & ~people.order_forced_first[order] & (showcase < 0)
    updated = ordered + rng.integers(120, 2700, n)
    updated[cancelled] = ordered[cancelled] + rng.integers(600, 2 * _DAY, cancelled.sum())
    table: Frame = {
        "order_id": np.arange(1, n + 1, dtype=np.int64),
        "customer_id": customer_ids[cust],
        "ordered_at": ordered,
        "status": np.where(cancelled, "cancelled", "placed").astype(object),
        "currency": np.full(n, "EUR", dtype=object),
        "updated_at": np.minimum(updated, clock.cutoff - 1),
    }
    return _Orders(table, cust, rank, showcase)


def _earlier_per_customer(orders: _Orders, flag: np.ndarray) -> np.ndarray:
    """Per order: how many of the same customer's earlier orders have ``flag`` set."""
    by_customer = np.lexsort((orders.rank, orders.customer_row))
    flags = flag[by_customer].astype(np.int64)
    before = np.cumsum(flags) - flags
    customers = orders.customer_row[by_customer]
    start = np.r_[True, customers[1:] != customers[:-1]]
    group_start = np.maximum.accumulate(np.where(start, np.arange(len(flags)), 0))
    out = np.empty(len(flags), dtype=np.int64)
    out[by_customer] = before - before[group_start]
    return out


def _lead_products(
    rng: np.random.Generator, orders: _Orders, favourite: np.ndarray, cat: _Catalogue
) -> np.ndarray:
    """The main product of each order: mostly the next step of the customer's favourite sequence.

    An order takes the next step (lawn mower, then chainsaw, then brush cutter) with
    probability 0.7 while steps remain: the step is the number of the customer's earlier
    orders that took one, so a customer who skipped it once takes it on a later order.
    """
    n = len(orders.rank)
    showcase = orders.showcase >= 0  # the main product of its department (a first order: stage 0)
    fav = np.where(showcase, orders.showcase, favourite[orders.customer_row])
    draw = rng.random(n)
    steps = cat.stage_pool.shape[1]
    taken_before = _earlier_per_customer(orders, draw < 0.7)
    follows = ((draw < 0.7) & (taken_before < steps)) | showcase
    stage = np.minimum(taken_before, steps - 1)
    count = cat.stage_count[fav, stage]
    in_sequence = cat.stage_pool[fav, stage, (rng.random(n) * count).astype(np.int64)]
    # Otherwise customers mostly stay with the things they like (the category's extras).
    favourite_extra = cat.cat_pool[fav, (rng.random(n) * cat.cat_count[fav]).astype(np.int64)]
    anything = rng.choice(len(cat.weight), n, p=cat.weight)
    return np.where(follows, in_sequence, np.where(draw < 0.85, favourite_extra, anything))


def _extra_products(rng: np.random.Generator, lead: np.ndarray, cat: _Catalogue) -> np.ndarray:
    """Further lines: an accessory of the main product, an extra from its category, or anything."""
    n = len(lead)
    acc_count = cat.acc_count[lead]
    # The first accessory listed is bought most often (weights 1, 1/2, 1/4, ...: a laptop's
    # docking station before its cable and bag): index floor(-log2(1 - u (1 - 2^-count))).
    share = rng.random(n) * (1.0 - np.exp2(-np.maximum(acc_count, 1)))
    accessory = cat.acc_pool[
        lead, np.minimum(np.floor(-np.log2(1.0 - share)), np.maximum(acc_count - 1, 0)).astype(np.int64)
    ]
    category = cat.category[lead]
    same = cat.cat_pool[category, (rng.random(n) * cat.cat_count[category]).astype(np.int64)]
    anything = rng.choice(len(cat.weight), n, p=cat.weight)
    draw = rng.random(n)
    out = np.where(draw < 0.5, same, anything)
    return np.where((acc_count > 0) & (draw < 0.6), accessory, out)


def _order_lines(
    rng: np.random.Generator, orders: _Orders, cat: _Catalogue, n_customers: int
) -> tuple[np.ndarray, np.ndarray]:
    """(order row, product row) per line, at most one line per product and order."""
    favourite = rng.choice(len(_catalogue().departments), n_customers)
    lead = _lead_products(rng, orders, favourite, cat)
    lines = 1 + np.minimum(rng.poisson(1.65, len(lead)), 5)
    lines[orders.showcase >= 0] = 1  # the main product alone: its accessories are still to suggest
    order_row = np.repeat(np.arange(len(lead)), lines)
    first = np.r_[True, order_row[1:] != order_row[:-1]]
    product = np.where(first, lead[order_row], _extra_products(rng, lead[order_row], cat))
    # Drop repeated products within an order (keeps the first line, preserves order).
    key = order_row * len(cat.weight) + product
    _, keep = np.unique(key, return_index=True)
    keep.sort()
    return order_row[keep], product[keep]


def _build_items(seed: int, orders: _Orders, cat: _Catalogue, n_customers: int, clock: _Clock) -> Frame:
    """Order lines with quantities, prices (sometimes discounted) and returns; updates orders' updated_at."""
    rng = _rng(seed, 5)
    order_row, product = _order_lines(rng, orders, cat, n_customers)
    n = len(order_row)
    price = cat.table["price"][product]
    cheap = price < 6000
    quantity = 1 + np.where(cheap, rng.choice(3, n, p=[0.8, 0.14, 0.06]), rng.choice(2, n, p=[0.97, 0.03]))
    discounted = rng.random(n) < 0.07
    factor = rng.choice(np.array([0.9, 0.85, 0.8, 0.75, 0.7]), n)
    unit_price = np.where(discounted, np.round(price * factor).astype(np.int64), price)
    returned = _returns(rng, orders, order_row, quantity, clock)
    return {
        "order_item_id": np.arange(1, n + 1, dtype=np.int64),
        "order_id": orders.table["order_id"][order_row],
        "product_id": cat.table["product_id"][product],
        "quantity": quantity,
        "unit_price": unit_price,
        "unit_cost": cat.table["cost"][product],
        "returned_quantity": returned,
        "updated_at": orders.table["updated_at"][order_row],
    }


def _returns(
    rng: np.random.Generator, orders: _Orders, order_row: np.ndarray, quantity: np.ndarray, clock: _Clock
) -> np.ndarray:
    """Returned quantities (~5 % of lines of placed orders); a return bumps its order's updated_at."""
    n = len(order_row)
    ordered = orders.table["ordered_at"][order_row]
    at = ordered + rng.integers(2 * _DAY, 35 * _DAY, n)
    # Showcase orders keep their one line: a returned laptop would trigger no accessory message.
    placed = (orders.table["status"][order_row] == "placed") & (orders.showcase[order_row] < 0)
    is_return = (rng.random(n) < 0.05) & placed & (at < clock.cutoff - 60)
    returned = np.where(is_return, 1 + (rng.random(n) * quantity).astype(np.int64), 0)
    np.maximum.at(orders.table["updated_at"], order_row[is_return], at[is_return])
    return returned


# --------------------------------------------------------------------------- planted defects


@dataclass
class _Shop:
    """All tables plus the defect records, while defects are being planted."""

    tables: dict[str, Frame]
    records: list[tuple[str, str, str]]
    good_orders: int
    good_items: int


def _per_rule(rows: int, rate: float) -> int:
    """How many bad rows of one kind: a small share, but at least one even for tiny shops."""
    return max(1, round(rows * rate))


#: Most bad customer rows a night of a tiny shop gets, as a share of the rows the quality gate
#: judges it by (RETENTION_QUARANTINE_MIN_ROWS, 100): below the default gate of 5 %, with room.
_TINY_SHOP_DEFECT_SHARE = 0.03


def _append(shop: _Shop, table: str, rows: Frame, rule: str) -> None:
    """Append planted rows and record them under ``rule`` by their id (the table's first column)."""
    _append_clean(shop, table, rows)
    _record(shop, table, rows[next(iter(rows))], rule)


def _record(shop: _Shop, table: str, keys: np.ndarray, rule: str) -> None:
    shop.records.extend((table, str(key), rule) for key in keys.tolist())


def _take(frame: Frame, rows: np.ndarray) -> Frame:
    return {k: v[rows].copy() for k, v in frame.items()}


def _last_day_share(times: np.ndarray, clock: _Clock) -> float:
    """The share of good rows (by their time) that fall on the last local day."""
    return float(np.mean(times >= clock.last_day_start)) if len(times) else 0.0


def _defect_times(rng: np.random.Generator, k: int, clock: _Clock, last_share: float) -> np.ndarray:
    """Creation times of new bad rows, as dense on every day as the table's good rows.

    ``last_share`` is the share of the good rows on the last local day (a busy one): the
    same share of the bad rows lands there, rounded at random (so a small shop sometimes
    meets one, sometimes none). A fixed quota instead (it was 1 %, at least one per rule)
    made the last night's share of bad rows several times the history's, and on a small
    shop close to the quality gate: a real shop's nights have about the same defect rate.
    """
    times = rng.integers(clock.window_start, clock.last_day_start, k)
    expected = k * last_share
    late = min(k, int(expected) + int(rng.random() < expected - int(expected)))
    times[:late] = rng.integers(clock.last_day_start, clock.cutoff - 2 * 3600, late)
    return times


def _bad_customers(
    rng: np.random.Generator, shop: _Shop, pools: list[_NamePool], clock: _Clock, k: int
) -> dict[str, Frame]:
    """Clean-looking new customers (no orders) that the caller then breaks in one way each."""
    out = {}
    next_id = int(shop.tables["customers"]["customer_id"].max()) + 1
    for rule in ("malformed_email", "missing_name", "name_too_long", "control_characters"):
        place = rng.choice(len(_PLACES), k, p=_PLACE_SHARES)
        first, last, first_slug, last_slug = _names(rng, place, pools)
        ids = np.arange(next_id, next_id + k, dtype=np.int64)
        next_id += k
        created = _defect_times(rng, k, clock, _last_day_share(shop.tables["customers"]["created_at"], clock))
        out[rule] = {
            "customer_id": ids,
            "email": _emails(rng, ids, first_slug, last_slug),
            "first_name": first,
            "last_name": last,
            "language": np.array([_PLACES[p].language for p in place], dtype=object),
            "time_zone": np.array([_PLACES[p].time_zone for p in place], dtype=object),
            "country": np.array([_PLACES[p].country for p in place], dtype=object),
            "birthday": np.full(k, np.datetime64("NaT"), dtype="datetime64[D]"),
            "marketing_consent": rng.random(k) < 0.85,
            "created_at": created,
            "updated_at": created + rng.integers(60, 3600, k),
        }
    return out


_BAD_EMAILS = (
    "{f}.{l}.example.com",
    "@nohost",
    "{f} {l}@example.com",
    "",
    "{f}.{l}@",
    "{f}@@example.org",
    "{f}.{l}@localhost",
)
_CONTROL_CHARS = ("\x07", "\r\n", "\x1b", "\x08", "\t", "\x0c", "\x7f")


def _break_customers(rows: dict[str, Frame]) -> None:
    """Each planted customer breaks exactly one rule; emails stay valid unless that is the rule."""
    bad = rows["malformed_email"]
    for i, (f, n) in enumerate(zip(bad["first_name"].tolist(), bad["last_name"].tolist(), strict=True)):
        bad["email"][i] = _BAD_EMAILS[i % len(_BAD_EMAILS)].format(
            f=_slug(f) or "anna", l=_slug(n) or "smith"
        )
    missing = rows["missing_name"]["first_name"]
    missing[:] = ["" if i % 2 else None for i in range(len(missing))]
    long_rows = rows["name_too_long"]
    for i in range(len(long_rows["first_name"])):
        column = "last_name" if i % 2 else "first_name"
        name = long_rows[column][i]
        long_rows[column][i] = "-".join([name] * (201 // (len(name) + 1) + 2))
    control = rows["control_characters"]
    for i in range(len(control["first_name"])):
        column = "first_name" if i % 2 else "last_name"
        value = control[column][i]
        control[column][i] = value[:2] + _CONTROL_CHARS[i % len(_CONTROL_CHARS)] + value[2:]


def _duplicate_customers(rng: np.random.Generator, shop: _Shop, pools: list[_NamePool], k: int) -> Frame:
    """Older copies of existing customers: another last name (before marriage) and another address."""
    customers = shop.tables["customers"]
    rows = np.sort(rng.choice(len(customers["customer_id"]), k, replace=False))
    dup = _take(customers, rows)
    place = np.array(
        [_PLACES.index(next(p for p in _PLACES if p.time_zone == tz)) for tz in dup["time_zone"]]
    )
    _, last, first_slug, last_slug = _names(rng, place, pools)
    dup["last_name"] = last
    dup["email"] = _emails(rng, dup["customer_id"], first_slug, last_slug)
    dup["marketing_consent"] = ~dup["marketing_consent"]
    dup["updated_at"] = dup["created_at"]  # the original's updated_at is at least a minute later
    return dup


def _plant_customer_defects(
    rng: np.random.Generator, shop: _Shop, pools: list[_NamePool], clock: _Clock
) -> None:
    customers = len(shop.tables["customers"]["customer_id"])
    k = _per_rule(customers, 0.0012)
    dup = _duplicate_customers(rng, shop, pools, k)
    bad = _bad_customers(rng, shop, pools, clock, k)
    _break_customers(bad)
    kinds = {"duplicate_key": dup, **bad}
    # A tiny shop would otherwise start with one bad row of every kind, a share of bad rows no
    # real shop has, and fail its first night's quality gate: it gets a few kinds, by the seed.
    budget = max(1, int(_TINY_SHOP_DEFECT_SHARE * max(customers, 100))) // k
    if budget < len(kinds):
        chosen = set(rng.permutation(sorted(kinds))[:budget].tolist())
        kinds = {rule: rows for rule, rows in kinds.items() if rule in chosen}
    for rule, rows in kinds.items():
        _append(shop, "customers", rows, rule)


def _plant_order_defects(rng: np.random.Generator, shop: _Shop, cat: _Catalogue, clock: _Clock) -> None:
    orders = shop.tables["orders"]
    k = _per_rule(shop.good_orders, 0.002)
    settled = np.nonzero(
        orders["updated_at"][: shop.good_orders] - orders["ordered_at"][: shop.good_orders] >= 120
    )[0]
    dup = _take(orders, np.sort(rng.choice(settled, k, replace=False)))
    dup["ordered_at"] = dup["ordered_at"] + 30  # the shop corrected the time later
    dup["updated_at"] = dup["ordered_at"] + 30  # older than the original's (at least +120 s)
    dup["status"][:] = "placed"
    _append(shop, "orders", dup, "duplicate_key")
    unknown = _unknown_customer_orders(rng, shop, clock, k)
    _append(shop, "orders", unknown, "unknown_customer")
    # Their lines are fine in themselves; the pipeline drops them with their order.
    _add_items(rng, shop, cat, unknown["order_id"], unknown["updated_at"], np.ones(k, dtype=np.int64))
    _append(shop, "orders", _future_orders(rng, shop, clock, k), "future_date")


def _new_orders(
    rng: np.random.Generator, shop: _Shop, customer_ids: np.ndarray, ordered: np.ndarray
) -> Frame:
    k = len(customer_ids)
    first_id = int(shop.tables["orders"]["order_id"].max()) + 1
    return {
        "order_id": np.arange(first_id, first_id + k, dtype=np.int64),
        "customer_id": customer_ids,
        "ordered_at": ordered,
        "status": np.full(k, "placed", dtype=object),
        "currency": np.full(k, "EUR", dtype=object),
        "updated_at": ordered + rng.integers(120, 2700, k),
    }


def _good_orders_last_day(shop: _Shop, clock: _Clock) -> float:
    return _last_day_share(shop.tables["orders"]["updated_at"][: shop.good_orders], clock)


def _unknown_customer_orders(rng: np.random.Generator, shop: _Shop, clock: _Clock, k: int) -> Frame:
    """Orders of customers that exist nowhere (ids beyond every planted customer too)."""
    beyond = int(shop.tables["customers"]["customer_id"].max()) + 1000
    customer_ids = beyond + 7 * np.arange(k, dtype=np.int64)
    return _new_orders(
        rng, shop, customer_ids, _defect_times(rng, k, clock, _good_orders_last_day(shop, clock))
    )


def _future_orders(rng: np.random.Generator, shop: _Shop, clock: _Clock, k: int) -> Frame:
    """Orders of real customers dated years after as_of, though written in the past (a typo'd year)."""
    good = shop.tables["orders"]["customer_id"][: shop.good_orders]
    rows = _new_orders(
        rng, shop, rng.choice(good, k), _defect_times(rng, k, clock, _good_orders_last_day(shop, clock))
    )
    rows["updated_at"] = rows["ordered_at"] + rng.integers(120, 2700, k)
    rows["ordered_at"] = clock.cutoff + rng.integers(365 * _DAY, 6 * 365 * _DAY, k)
    return rows


def _add_items(
    rng: np.random.Generator,
    shop: _Shop,
    cat: _Catalogue,
    order_ids: np.ndarray,
    updated: np.ndarray,
    quantity: np.ndarray,
) -> Frame:
    """Append lines of popular products to the given orders (same updated_at as the order); returns them."""
    items = shop.tables["order_items"]
    k = len(order_ids)
    product = rng.choice(len(cat.weight), k, p=cat.weight)
    first_id = int(items["order_item_id"].max()) + 1
    rows: Frame = {
        "order_item_id": np.arange(first_id, first_id + k, dtype=np.int64),
        "order_id": order_ids,
        "product_id": cat.table["product_id"][product],
        "quantity": quantity,
        "unit_price": cat.table["price"][product],
        "unit_cost": cat.table["cost"][product],
        "returned_quantity": np.zeros(k, dtype=np.int64),
        "updated_at": updated,
    }
    _append_clean(shop, "order_items", rows)
    return rows


def _append_clean(shop: _Shop, table: str, rows: Frame) -> None:
    frame = shop.tables[table]
    for column in frame:
        frame[column] = np.concatenate([frame[column], rows[column].astype(frame[column].dtype)])


def _plant_item_defects(rng: np.random.Generator, shop: _Shop, cat: _Catalogue) -> None:
    items, orders = shop.tables["order_items"], shop.tables["orders"]
    k = _per_rule(shop.good_items, 0.002)
    dup = _take(items, np.sort(rng.choice(shop.good_items, k, replace=False)))
    position = np.searchsorted(orders["order_id"][: shop.good_orders], dup["order_id"])
    dup["quantity"] = dup["quantity"] + 1
    dup["updated_at"] = orders["ordered_at"][position] + 60  # the original's is at least +120 s
    _append(shop, "order_items", dup, "duplicate_key")
    targets = np.sort(rng.choice(shop.good_orders, 2 * k, replace=False))
    order_ids, updated = orders["order_id"][targets], orders["updated_at"][targets]
    negative = _add_items(rng, shop, cat, order_ids[:k], updated[:k], -rng.integers(0, 4, k))
    _record(shop, "order_items", negative["order_item_id"], "negative_quantity")
    unknown = _add_items(rng, shop, cat, order_ids[k:], updated[k:], np.ones(k, dtype=np.int64))
    # A product id beyond the catalogue: the line points at a product that exists nowhere.
    shop.tables["order_items"]["product_id"][-k:] = (
        int(cat.table["product_id"].max()) + 100 + 3 * np.arange(k)
    )
    _record(shop, "order_items", unknown["order_item_id"], "unknown_product")


def _plant_defects(
    seed: int, tables: dict[str, Frame], cat: _Catalogue, pools: list[_NamePool], clock: _Clock
) -> _Shop:
    """Append the planted bad rows to the tables; returns them with the defect records."""
    rng = _rng(seed, 6)
    shop = _Shop(tables, [], len(tables["orders"]["order_id"]), len(tables["order_items"]["order_item_id"]))
    products = tables["products"]
    dup = _take(products, np.sort(rng.choice(len(products["product_id"]), 3, replace=False)))
    dup["price"] = np.round(dup["price"] * 1.1).astype(np.int64)  # last year's price
    dup["updated_at"] = dup["created_at"]  # the original's is at least a day later
    _append(shop, "products", dup, "duplicate_key")
    _plant_customer_defects(rng, shop, pools, clock)
    _plant_order_defects(rng, shop, cat, clock)
    _plant_item_defects(rng, shop, cat)
    return shop


# --------------------------------------------------------------------------- writing


def _kind(column: Column) -> str:
    for sql_type, kind in ((DateTime, "ts"), (Date, "date"), (Boolean, "bool"), (Numeric, "money")):
        if isinstance(column.type, sql_type):
            return kind
    return "plain"


def _ts_text(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds as SQLAlchemy's SQLite DATETIME text, 'YYYY-MM-DD HH:MM:SS.000000', vectorised."""
    text = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s").astype("<U19")
    codes = text.view(np.uint32).reshape(len(text), 19)
    out = np.empty((len(text), 26), dtype=np.uint32)
    out[:, :19] = codes
    out[:, 10] = ord(" ")
    out[:, 19:] = np.frombuffer(".000000".encode("utf-32-le"), dtype=np.uint32)
    return out.view("<U26").ravel()


def _python_values(kind: str, values: np.ndarray) -> list[Any]:
    """A column slice as DBAPI values in SQLite's storage format (also valid text for COPY)."""
    if kind == "ts":
        return _ts_text(values).tolist()
    if kind == "date":
        return [None if s == "NaT" else s for s in np.datetime_as_string(values, unit="D").tolist()]
    if kind == "money":
        return (values / 100).tolist()
    return values.tolist()


def _chunks(n: int) -> Iterator[slice]:
    for start in range(0, n, _CHUNK):
        yield slice(start, min(start + _CHUNK, n))


def _insert_sqlite(cursor: Any, table: Table, frame: Frame) -> None:
    names = [c.name for c in table.columns]
    sql = f'INSERT INTO "{table.name}" ({", ".join(names)}) VALUES ({", ".join("?" * len(names))})'
    kinds = [_kind(c) for c in table.columns]
    for part in _chunks(len(frame[names[0]])):
        columns = [_python_values(kind, frame[name][part]) for name, kind in zip(names, kinds, strict=True)]
        cursor.executemany(sql, zip(*columns, strict=True))


def _copy_text(value: Any) -> str:
    """One value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return str(value)


def _copy_postgres(cursor: Any, table: Table, frame: Frame) -> None:
    names = [c.name for c in table.columns]
    kinds = [_kind(c) for c in table.columns]
    sql = f'COPY "{table.name}" ({", ".join(names)}) FROM STDIN'
    for part in _chunks(len(frame[names[0]])):
        columns = []
        for name, kind in zip(names, kinds, strict=True):
            values = _python_values(kind, frame[name][part])
            text_like = kind == "plain" and frame[name].dtype == object
            columns.append(
                [_copy_text(v) for v in values]
                if text_like or kind in ("date", "bool")
                else [str(v) for v in values]
            )
        buffer = io.StringIO("".join("\t".join(row) + "\n" for row in zip(*columns, strict=True)))
        cursor.copy_expert(sql, buffer)


def _insert_generic(table: Table, frame: Frame, engine: Engine) -> None:
    """Any other database: SQLAlchemy inserts with Python values (slower, but portable)."""
    names = [c.name for c in table.columns]
    kinds = [_kind(c) for c in table.columns]
    convert = {
        "ts": lambda v: v.astype("datetime64[s]").astype(object).tolist(),
        "date": lambda v: [
            None if x is None else dt.date.fromisoformat(x) for x in _python_values("date", v)
        ],
        "money": lambda v: [Decimal(int(x)) / 100 for x in v.tolist()],
    }
    with engine.begin() as conn:
        for part in _chunks(len(frame[names[0]])):
            columns = [
                convert.get(kind, lambda v: v.tolist())(frame[name][part])
                for name, kind in zip(names, kinds, strict=True)
            ]
            conn.execute(
                table.insert(), [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
            )


@contextmanager
def _fast_sqlite(raw: Any) -> Iterator[None]:
    """Skip fsyncs during the bulk load: the demo can simply be generated again if it fails."""
    cursor = raw.cursor()
    cursor.execute("PRAGMA synchronous")
    previous = cursor.fetchone()[0]
    cursor.execute("PRAGMA synchronous=OFF")
    try:
        yield
    finally:
        cursor.execute(f"PRAGMA synchronous={int(previous)}")


def _reset_schema(engine: Engine) -> None:
    """Drop and create the source tables (and the defect table), so that re-runs start empty."""
    defects_metadata.drop_all(engine)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    defects_metadata.create_all(engine)


def _tables(shop: _Shop) -> list[tuple[Table, Frame]]:
    records = np.array(shop.records, dtype=object).reshape(-1, 3)
    defect_frame = {"source_table": records[:, 0], "source_key": records[:, 1], "rule": records[:, 2]}
    return [(metadata.tables[name], shop.tables[name]) for name in SOURCE_TABLES] + [
        (demo_defects, defect_frame)
    ]


def _write(engine: Engine, shop: _Shop, say: Callable[[str], None]) -> None:
    """Bulk-load every table in one transaction with the fastest path the database offers."""
    _reset_schema(engine)
    if engine.dialect.name not in ("sqlite", "postgresql") or engine.dialect.driver not in (
        "pysqlite",
        "psycopg2",
    ):
        for table, frame in _tables(shop):
            _insert_generic(table, frame, engine)
            say(f"{table.name}: {len(next(iter(frame.values()))):,} rows")
        return
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        sqlite = engine.dialect.name == "sqlite"
        with _fast_sqlite(raw) if sqlite else _nothing():
            for table, frame in _tables(shop):
                (_insert_sqlite if sqlite else _copy_postgres)(cursor, table, frame)
                say(f"{table.name}: {len(next(iter(frame.values()))):,} rows")
            raw.commit()
    finally:
        raw.close()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# --------------------------------------------------------------------------- entry point


def _engine(url: str) -> Engine:
    """An engine for the shop; a SQLite file's folder is created if missing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return create_engine(url)


def _build(seed: int, customers: int, clock: _Clock, say: Callable[[str], None]) -> _Shop:
    """All tables in memory, planted defects included."""
    catalogue = _build_catalogue(_rng(seed, 1), clock)
    pools = _name_pools(seed)
    people = _build_people(seed, customers, clock)
    customer_frame, customer_ids = _build_customers(seed, people, clock, pools)
    say(f"built {customers:,} customers and {len(catalogue.weight)} products")
    orders = _build_orders(seed, people, customer_ids, clock)
    items = _build_items(seed, orders, catalogue, customers, clock)
    say(f"built {len(orders.rank):,} orders and {len(items['order_item_id']):,} order lines")
    tables = {
        "customers": customer_frame,
        "products": catalogue.table,
        "orders": orders.table,
        "order_items": items,
    }
    return _plant_defects(seed, tables, catalogue, pools, clock)


def generate(
    url: str,
    customers: int,
    seed: int,
    as_of: dt.date = DEMO_AS_OF,
    *,
    progress: Callable[[str], None] | None = None,
) -> DemoSummary:
    """Fill the source database at ``url`` with a demo shop of ``customers`` good customers.

    Existing source tables (and ``_demo_defects``) are dropped and created again, so the
    same ``(customers, seed, as_of)`` always leaves identical rows. All timestamps are
    naive UTC and lie before ``as_of`` 00:00 in Europe/Berlin; the local day before is
    busy, with first orders of new customers in every language. Planted bad rows are
    listed in ``_demo_defects`` and counted in the returned summary.
    """
    if customers < 50:
        raise ValueError("the demo shop needs at least 50 customers")
    if seed < 0:
        raise ValueError("seed must not be negative")
    started = time.perf_counter()
    say = progress or (lambda _message: None)
    shop = _build(seed, customers, _make_clock(as_of), say)
    engine = _engine(url)
    try:
        _write(engine, shop, say)
    finally:
        engine.dispose()
    defects = {rule: 0 for rule in DEFECT_RULES}
    for _table, _key, rule in shop.records:
        defects[rule] += 1
    rows = {name: len(next(iter(shop.tables[name].values()))) for name in SOURCE_TABLES}
    return DemoSummary(rows=rows, defects=defects, seconds=time.perf_counter() - started)
