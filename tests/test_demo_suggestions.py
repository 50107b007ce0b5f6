"""Issue #12's "Done when" on the demo shop of `make demo` (2,000 customers, seed 42): the night's
mail, as the SMTP sink received it, suggests a chainsaw to a recent lawn-mower buyer and a
docking station to a laptop buyer, each message naming the product it follows.

The demo's categories are product kinds (lawn_mowers, chainsaws, docking_stations, ...), so
the category rules learn lawn mowers -> chainsaws; the demo plants a few new customers who
bought a main product 15 and 4 days before the night (retention/demo.py, `_showcase_orders`),
whose follow-ups this night sends.
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import select

from retention import schema
from retention.demo import DEMO_AS_OF, generate
from retention.mailer import SmtpConfig
from retention.night import night_for_date
from retention.pipeline import run_night, stage_deliver, warehouse_engine
from tests.conftest import SECRET

# As scripts/demo.sh: 15:00 UTC on the night's date is inside every demo customer's send window.
AFTERNOON = dt.datetime.combine(DEMO_AS_OF, dt.time(15, 0))


def _suggestions(settings) -> dict[str, dict]:
    """Recipient address -> the occasion, suggested and triggering product (name, category)."""
    occ, out, products = schema.occasions, schema.outbox, schema.stg_products
    with warehouse_engine(settings.warehouse).connect() as conn:
        catalogue = {
            r.product_id: (r.name, r.category)
            for r in conn.execute(select(products.c.product_id, products.c.name, products.c.category))
        }
        rows = conn.execute(
            select(out.c.email, occ.c.occasion, occ.c.details)
            .join(
                occ,
                (occ.c.customer_id == out.c.customer_id)
                & (occ.c.occasion == out.c.occasion)
                & (occ.c.occasion_date == out.c.occasion_date),
            )
            .where(out.c.occasion.in_(("next_purchase", "accessory")), out.c.night == DEMO_AS_OF)
        ).all()
    found = {}
    for email, occasion, details in rows:
        detail = json.loads(details)
        found[email] = {
            "occasion": occasion,
            "product": catalogue[int(detail["product_id"])],
            "because": catalogue[int(detail["because_product_id"])],
        }
    return found


def _text(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def test_demo_night_mails_chainsaws_to_mower_buyers_and_docks_to_laptop_buyers(settings, mail_sink) -> None:
    generate(settings.source, 2_000, 42)  # the shop `make demo` makes
    run_night(settings, night_for_date(DEMO_AS_OF, settings.time_zone), "demo")
    smtp = SmtpConfig(host="127.0.0.1", port=mail_sink.port)
    sent = stage_deliver(settings, smtp, AFTERNOON, secret=SECRET)["sent"]
    received = mail_sink.wait_for(sent)
    assert sent > 0 and len(received) == sent
    suggestions = _suggestions(settings)
    cases: dict[tuple[str, str, str], list[str]] = {}
    for mail in received:
        (recipient,) = mail.rcpt_tos
        s = suggestions.get(recipient)
        if s is None:
            continue
        (product, product_category), (because, because_category) = s["product"], s["because"]
        body = _text(mail.message)
        # every suggestion message names the product it follows and the one it suggests
        assert because in body and product in body, (s, body)
        cases.setdefault((s["occasion"], because_category, product_category), []).append(because)
    assert cases.get(("next_purchase", "lawn_mowers", "chainsaws")), sorted(cases)
    assert cases.get(("accessory", "laptops", "docking_stations")), sorted(cases)
    # an accessory is only ever suggested for the main product it goes with, never the reverse
    assert not any(occasion == "accessory" and product == "laptops" for occasion, _, product in cases), (
        sorted(cases)
    )
