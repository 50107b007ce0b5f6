"""The demo shop's product catalogue is data (``retention/demo_catalogue.toml``, issue #16):
it loads, ships in the wheel, names every category in every language, and the products the
generator makes from it are consistent (accessories for existing main products, prices
above costs). A broken file is refused with a message naming the entry at fault.
"""

from __future__ import annotations

import fnmatch
import sqlite3
import tomllib
from pathlib import Path

import pytest

from retention.demo import CATALOGUE_FILE, DemoCatalogue, generate, load_catalogue
from retention.resources import templates_folder
from retention.settings import LANGUAGES
from tests.airflow_env import ROOT

CATALOGUE = ROOT / "retention" / CATALOGUE_FILE


@pytest.fixture(scope="module")
def catalogue() -> DemoCatalogue:
    return load_catalogue()


def _kinds(catalogue: DemoCatalogue) -> list:
    return [
        kind
        for department in catalogue.departments
        for kind in (*department.sequence, *department.extras, *department.accessories)
    ]


def test_the_packaged_catalogue_is_the_repository_file(catalogue: DemoCatalogue) -> None:
    assert catalogue == load_catalogue(CATALOGUE)
    assert len(catalogue.departments) >= 2 and len(catalogue.tiers) >= 2
    names = [d.name for d in catalogue.departments]
    assert "garden" in names and "computing" in names


def test_the_wheel_ships_the_catalogue() -> None:
    """pyproject's package data of ``retention`` matches the file (test_packaging builds the wheel)."""
    with (ROOT / "pyproject.toml").open("rb") as handle:
        patterns = tomllib.load(handle)["tool"]["setuptools"]["package-data"]["retention"]
    assert any(fnmatch.fnmatch(CATALOGUE_FILE, pattern) for pattern in patterns), patterns


def test_every_category_is_one_kind_and_named_in_every_language(catalogue: DemoCatalogue) -> None:
    categories = [kind.category for kind in _kinds(catalogue)]
    assert sorted({c for c in categories if categories.count(c) > 1}) == []
    with (templates_folder() / "_categories.toml").open("rb") as handle:
        named = tomllib.load(handle)
    wanted = categories + [department.name for department in catalogue.departments]
    unnamed = {language: [c for c in wanted if c not in named.get(language, {})] for language in LANGUAGES}
    assert unnamed == {language: [] for language in LANGUAGES}


def test_generated_products_follow_the_catalogue(catalogue: DemoCatalogue, tmp_path: Path) -> None:
    shop = tmp_path / "shop.db"
    generate(f"sqlite:///{shop}", 50, 3)
    with sqlite3.connect(shop) as conn:
        rows = conn.execute(
            "select product_id, name, category, accessory_for, price, cost from products "
            # The first row of each product: the planted duplicates (older copies) come after.
            "where rowid in (select min(rowid) from products group by product_id)"
        ).fetchall()
    products = {row[0]: row for row in rows}
    assert len(products) == len(rows)
    expected = sum(
        sum(kind.models for kind in (*d.sequence, *d.extras)) + len(d.accessories) * d.sequence[0].models
        for d in catalogue.departments
    )
    assert len(products) == expected
    assert {row[2] for row in rows} == {kind.category for kind in _kinds(catalogue)}
    accessories = {
        accessory.category: (accessory, department.sequence[0])
        for department in catalogue.departments
        for accessory in department.accessories
    }
    for product_id, name, category, parent, price, cost in rows:
        assert price > cost > 0, f"product {product_id} {name!r}: price {price}, cost {cost}"
        if category not in accessories:
            assert parent is None, f"product {product_id} {name!r} is no accessory but is for {parent}"
            continue
        accessory, main = accessories[category]
        assert parent in products, f"product {product_id} {name!r} is for {parent}, which does not exist"
        _, main_name, main_category, *_ = products[parent]
        assert main_category == main.category, f"product {product_id} {name!r} is for {main_name!r}"
        assert name == f"{accessory.noun} for {main_name.removesuffix(' ' + main.noun)}"


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    text = CATALOGUE.read_text(encoding="utf-8")
    assert text.count(old) >= 1, old
    path = tmp_path / CATALOGUE_FILE
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("low = 199, high = 899", "low = 999, high = 899", ["departments.0.sequence.0", "low < high"]),
        ("low = 149, high = 649, models = 5", "low = 149, high = 649, modles = 5", ["modles", "extra"]),
        (
            '{ noun = "Replacement Blade", category = "mower_blades", low = 19, high = 45 }',
            '{ noun = "Replacement Blade", category = "mower_blades", low = 19, high = 45, models = 2 }',
            ["departments.0", "Replacement Blade", "Lawn Mower"],
        ),
        ('name = "computing"', 'name = "garden"', ["more than once", "garden"]),
        ('category = "chainsaws"', 'category = "Chain saws"', ["departments.0.sequence.1.category"]),
        ('brands = ["Greenvale", "Hortex", "Fieldmaster"]', "brands = []", ["departments.0.brands"]),
        ("tiers = [", "tiers = [[", ["Unclosed array", "line "]),
    ],
)
def test_a_broken_catalogue_is_refused_naming_the_entry(tmp_path: Path, old: str, new: str, says) -> None:
    path = _broken(tmp_path, old, new)
    with pytest.raises(ValueError) as caught:
        load_catalogue(path)
    message = str(caught.value)
    assert str(path) in message
    assert [part for part in says if part.lower() not in message.lower()] == [], message
