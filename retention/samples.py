"""Sample customers and complete template contexts, for linting and previewing templates.

Every occasion's context follows the contract in ``templates/README.md`` (its own variables
come from its declaration, :mod:`retention.registry`): the values are
formatted as the real caller formats them (:func:`retention.render.format_money`,
:func:`retention.render.format_day`, in the customer's locale), so a preview looks like
the real message. The dates are fixed (around the demo shop's 2026-11-22), never today's,
so that previews and golden files do not change from one day to the next.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from retention import registry
from retention.registry import Occasion
from retention.render import Formatter, salutation

__all__ = [
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
    occasions: Mapping[str, Occasion] | None = None,
) -> dict:
    """A complete, realistic context for one occasion in one language.

    ``customer`` (a dict as made by :func:`customer_context`) replaces the sample customer
    of the language; occasion-specific values are then formatted in that customer's locale.
    """
    return sample_contexts(occasion, language, shop_name, shop_url, customer, occasions)[0]


def sample_contexts(
    occasion: str,
    language: str,
    shop_name: str = "Nordlicht Shop",
    shop_url: str = "https://shop.example.com",
    customer: dict | None = None,
    occasions: Mapping[str, Occasion] | None = None,
) -> list[dict]:
    """The sample context first, then variants that take a template's other branches.

    Linting renders all of them, so that "1 year" and "3 years", one product and three,
    and a recommendation with and without a share are all checked. The occasion's own
    variables come from its declaration (``Occasion.samples``); ``occasions`` defaults to
    the registry of the environment.
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
    known = registry.occasions() if occasions is None else occasions
    if occasion not in known:
        raise ValueError(f"no sample context for occasion {occasion!r}; known: {', '.join(known)}")
    return [{**common, **fields} for fields in known[occasion].samples(fmt)]
