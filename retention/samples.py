"""Sample customers and complete template contexts, for linting and previewing templates.

Every occasion's context follows the contract in ``templates/README.md``: the values are
formatted as the real caller formats them (:func:`retention.render.format_money`,
:func:`retention.render.format_day`, in the customer's locale), so a preview looks like
the real message. The dates are fixed (around the demo shop's 2026-11-22), never today's,
so that previews and golden files do not change from one day to the next.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from retention.render import Formatter, salutation
from retention.settings import OCCASIONS

__all__ = [
    "OCCASIONS",
    "SAMPLE_CUSTOMERS",
    "SAMPLE_DATE",
    "SampleCustomer",
    "customer_context",
    "sample_context",
    "sample_contexts",
]


#: The occasion date of every sample message.
SAMPLE_DATE = dt.date(2026, 11, 23)
_CURRENCY = "EUR"


@dataclass(frozen=True)
class SampleCustomer:
    first_name: str
    last_name: str
    language: str
    country: str


#: One customer per language, with names as common in that country.
SAMPLE_CUSTOMERS = {
    "en": SampleCustomer("Oliver", "Smith", "en", "GB"),
    "de": SampleCustomer("Jörg", "Müller", "de", "DE"),
    "nb": SampleCustomer("Ingrid", "Hansen", "nb", "NO"),
    "et": SampleCustomer("Kadri", "Tamm", "et", "EE"),
}


def customer_context(first_name: str, last_name: str | None, language: str, country: str | None) -> dict:
    """The ``customer`` variable of a template, as the outbox builds it."""
    return {
        "first_name": first_name,
        "last_name": last_name or "",
        "salutation": salutation(language, first_name, last_name),
        "language": language,
        "country": country or "",
    }


def sample_context(
    occasion: str,
    language: str,
    shop_name: str = "Nordlicht Shop",
    shop_url: str = "https://shop.example.com",
    customer: dict | None = None,
) -> dict:
    """A complete, realistic context for one occasion in one language.

    ``customer`` (a dict as made by :func:`customer_context`) replaces the sample customer
    of the language; occasion-specific values are then formatted in that customer's locale.
    """
    return sample_contexts(occasion, language, shop_name, shop_url, customer)[0]


def sample_contexts(
    occasion: str,
    language: str,
    shop_name: str = "Nordlicht Shop",
    shop_url: str = "https://shop.example.com",
    customer: dict | None = None,
) -> list[dict]:
    """The sample context first, then variants that take a template's other branches.

    Linting renders all of them, so that "1 year" and "3 years", one product and three,
    and a recommendation with and without a share are all checked.
    """
    if customer is None:
        sample = SAMPLE_CUSTOMERS.get(language, SAMPLE_CUSTOMERS["en"])
        customer = customer_context(sample.first_name, sample.last_name, language, sample.country)
    fmt = Formatter(customer["language"] or language, customer.get("country") or None, shop_url, _CURRENCY)
    common = {
        "customer": customer,
        "shop": {"name": shop_name, "url": shop_url},
        # A placeholder token: a preview never carries a real, working unsubscribe token.
        "unsubscribe_url": f"{shop_url}/unsubscribe?token=SAMPLE-TOKEN-{language.upper()}",
        "occasion": occasion,
        "occasion_date": fmt.day(SAMPLE_DATE),
        "language": language,
    }
    variants = _OCCASION_FIELDS.get(occasion)
    if variants is None:
        raise ValueError(f"no sample context for occasion {occasion!r}; known: {', '.join(OCCASIONS)}")
    return [{**common, **fields} for fields in variants(fmt)]


def _product(fmt: Formatter, sku: str, name: str, price: str) -> dict:
    return fmt.product({"sku": sku, "name": name, "price": price})


# Product names as the demo shop writes them (brand, tier, model, kind).
_ESPRESSO = ("KIT-00041", "Caffora Plus 2 Espresso Machine", "649.00")
_GRINDER = ("KIT-00047", "Caffora Compact 1 Coffee Grinder", "179.00")
_LAPTOP = ("COM-00012", "Voltra Pro 4 Laptop", "1499.00")
_DOCK = ("COM-00031", "Kestrel Classic 1 Docking Station", "149.00")
_MOWER = ("GAR-00003", "Greenvale Plus 470 Lawn Mower", "599.00")
_CHAINSAW = ("GAR-00008", "Hortex Compact 260 Chainsaw", "299.00")
_BIKE = ("CYC-00101", "Velomark Pro 870 City Bike", "1299.00")
_LOCK = ("CYC-00115", "Ridgeway Classic 40 Bike Lock", "39.00")
_NEW_GARDEN = (
    ("GAR-00118", "Greenvale Eco 2 Hedge Trimmer", "129.00"),
    ("GAR-00121", "Hortex Sport 1 Garden Hose 25 m", "39.90"),
    ("GAR-00124", "Fieldmaster Classic 3 Pruning Shears", "24.50"),
)


def _thank_you(fmt: Formatter) -> list[dict]:
    order = {
        "id": 100482,
        "date": fmt.day(dt.date(2026, 11, 20)),
        "total": fmt.money("249.90"),
        "first": True,
    }
    # A customers are thanked for later orders too; the wording then leaves out "first".
    later = {
        "id": 100517,
        "date": fmt.day(dt.date(2026, 11, 21)),
        "total": fmt.money("1299.00"),
        "first": False,
    }
    return [{"order": order}, {"order": later}]


def _birthday(fmt: Formatter) -> list[dict]:
    return [{}]


def _anniversary(fmt: Formatter) -> list[dict]:
    return [
        {"years": 3, "first_order": {"date": fmt.day(dt.date(2023, 11, 23))}},
        {"years": 1, "first_order": {"date": fmt.day(dt.date(2025, 11, 23))}},
    ]


def _win_back(fmt: Formatter) -> list[dict]:
    return [
        {"last_order": {"date": fmt.day(dt.date(2026, 5, 14))}, "months": 6},
        {"last_order": {"date": fmt.day(dt.date(2026, 10, 19))}, "months": 1},
    ]


def _feedback(fmt: Formatter) -> list[dict]:
    return [
        {
            "order": {"id": 100482, "date": fmt.day(dt.date(2026, 11, 13))},
            "feedback_url": f"{fmt.shop_url}/feedback?order=100482",
        }
    ]


def _next_purchase(fmt: Formatter) -> list[dict]:
    fields = {"product": _product(fmt, *_GRINDER), "because": {"name": _ESPRESSO[1]}}
    garden = {"product": _product(fmt, *_CHAINSAW), "because": {"name": _MOWER[1]}}
    return [
        {**fields, "share": 38, "similar": False},
        # Without a known share (no rule, or a weak one) templates leave the number out.
        {**fields, "share": 0, "similar": False},
        # A category-level rule: 29 % of lawn-mower buyers chose a chainsaw next.
        {**garden, "share": 29, "similar": True},
    ]


def _accessory(fmt: Formatter) -> list[dict]:
    fields = {"product": _product(fmt, *_DOCK), "because": {"name": _LAPTOP[1]}}
    return [
        {**fields, "share": 64, "made_for": True},
        # Made for it, but new: never bought together yet, so no share to quote.
        {**fields, "share": 0, "made_for": True},
        # A basket rule, no catalogue relation: a bike lock with a city bike.
        {"product": _product(fmt, *_LOCK), "because": {"name": _BIKE[1]}, "share": 23, "made_for": False},
    ]


def _new_stock(fmt: Formatter) -> list[dict]:
    products = [_product(fmt, *p) for p in _NEW_GARDEN]
    return [
        {"category": "garden", "products": products},
        {"category": "garden", "products": products[:1]},
        # A category with no translation yet: templates show its raw name.
        {"category": "gadgets", "products": products[:2]},
    ]


_OCCASION_FIELDS = {
    "thank_you": _thank_you,
    "birthday": _birthday,
    "anniversary": _anniversary,
    "win_back": _win_back,
    "feedback": _feedback,
    "next_purchase": _next_purchase,
    "accessory": _accessory,
    "new_stock": _new_stock,
}
