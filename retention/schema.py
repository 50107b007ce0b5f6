"""The warehouse schema: the current model that the migrations build.

Tables are SQLAlchemy Core objects so that the same definitions serve SQLite and
PostgreSQL. Changes go through a new Alembic migration in ``retention/migrations``;
``tests/test_migrations.py`` checks that the migrations produce exactly this model.

Naming follows the layers of DESIGN.md: ``stg_`` staging copies of the shop's
tables, marts (``customer_facts``), ``occasions``, ``outbox``; plus the bookkeeping
tables ``quarantine``, ``run_log``, ``extract_watermark`` and ``changed_customers``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

__all__ = ["metadata", "STAGING", "STAGING_KEYS"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: A price, a cost, one order line's value: what the extract lets in (``quality.prepare_row``).
Money = Numeric(14, 2)

#: Sums of many order lines (a customer's revenue, margin, CLV): room for ten thousand order
#: lines of the largest value ``Money`` admits. SQLite enforces no precision, so it keeps the
#: declared type it had and needs no table rebuild.
Total = Numeric(18, 2).with_variant(Numeric(14, 2), "sqlite")

#: The shop's ids (customers, products, orders, order lines) are integers up to 2**63 - 1:
#: BIGINT on PostgreSQL. SQLite's INTEGER is 64-bit already, and an ``INTEGER PRIMARY KEY``
#: must stay exactly that to remain the rowid. Also used for sums of quantities.
Id = BigInteger().with_variant(Integer, "sqlite")

# --- staging: cleaned copies of the shop's tables, one row per source key ------------------------

stg_customers = Table(
    "stg_customers",
    metadata,
    Column("customer_id", Id, primary_key=True, autoincrement=False),
    Column("email", Text, nullable=False),
    Column("first_name", Text, nullable=False),
    Column("last_name", Text),
    Column("language", String(8), nullable=False),
    Column("time_zone", String(64), nullable=False),
    Column("country", String(2)),
    Column("birthday", Date),
    Column("marketing_consent", Boolean, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("loaded_night", Date, nullable=False),
)
# The Retention page finds a customer by address, in any case: ``lower(email) = lower(:q)`` (migration 0007).
Index("ix_stg_customers_email_lower", func.lower(stg_customers.c.email))

stg_products = Table(
    "stg_products",
    metadata,
    Column("product_id", Id, primary_key=True, autoincrement=False),
    Column("sku", String(32)),
    Column("name", Text, nullable=False),
    Column("category", String(64), nullable=False),
    Column("accessory_for", Id),
    Column("price", Money, nullable=False),
    Column("cost", Money, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("loaded_night", Date, nullable=False),
)

stg_orders = Table(
    "stg_orders",
    metadata,
    Column("order_id", Id, primary_key=True, autoincrement=False),
    Column("customer_id", Id, nullable=False, index=True),
    Column("ordered_at", DateTime, nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("loaded_night", Date, nullable=False),
    # The night whose extract first saw the order (never updated): order follow-ups count from it.
    Column("arrived_night", Date),
)

stg_order_items = Table(
    "stg_order_items",
    metadata,
    Column("order_item_id", Id, primary_key=True, autoincrement=False),
    Column("order_id", Id, nullable=False, index=True),
    Column("product_id", Id, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", Money, nullable=False),
    Column("unit_cost", Money, nullable=False),
    Column("returned_quantity", Integer, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("loaded_night", Date, nullable=False),
)

#: Staging table and its key column, per source table, in extract order.
STAGING = {
    "customers": stg_customers,
    "products": stg_products,
    "orders": stg_orders,
    "order_items": stg_order_items,
}
STAGING_KEYS = {
    "customers": "customer_id",
    "products": "product_id",
    "orders": "order_id",
    "order_items": "order_item_id",
}

# --- bookkeeping ---------------------------------------------------------------------------------

quarantine = Table(
    "quarantine",
    metadata,
    Column("quarantine_id", Integer, primary_key=True),
    Column("source_table", String(64), nullable=False),
    Column("source_key", String(64), nullable=False),
    Column("rule", String(64), nullable=False, index=True),
    Column("detail", Text, nullable=False),
    Column("row_hash", String(64), nullable=False),
    Column("raw", Text, nullable=False),  # the source row as JSON
    Column("night", Date, nullable=False),
    Column("run_id", String(250), nullable=False),
    # Set when a row held back for a missing parent loaded later, once the parent arrived.
    Column("resolved_night", Date),
    # Identical copies of a bad row in one night's read are numbered 1, 2, ...: each is a row
    # here, so the quarantine holds as many rows as the run log counted; a re-run of the
    # night reads the same copies and adds nothing.
    Column("occurrence", Integer, nullable=False, server_default="1"),
    UniqueConstraint(
        "night", "source_table", "source_key", "rule", "row_hash", "occurrence", name="uq_quarantine_copy"
    ),
)

run_log = Table(
    "run_log",
    metadata,
    Column("run_log_id", Integer, primary_key=True),
    Column("run_id", String(250), nullable=False),
    Column("night", Date, nullable=False, index=True),
    Column("stage", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # ok, failed
    Column("counts", Text, nullable=False),  # JSON object
    Column("message", Text),
    # Audit timestamps of the process, not business time: nothing reads them to decide anything.
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
)

extract_watermark = Table(
    "extract_watermark",
    metadata,
    Column("source_table", String(64), primary_key=True),
    Column("watermark", DateTime, nullable=False),  # UTC; rows updated before it are loaded
    Column("night", Date, nullable=False),
)

changed_customers = Table(
    "changed_customers",
    metadata,
    Column("night", Date, primary_key=True),
    Column("customer_id", Id, primary_key=True, autoincrement=False),
)

# --- marts ---------------------------------------------------------------------------------------

customer_facts = Table(
    "customer_facts",
    metadata,
    Column("customer_id", Id, primary_key=True, autoincrement=False),
    Column("first_order_at", DateTime),
    Column("last_order_at", DateTime),
    Column("first_order_id", Id),
    Column("orders", Integer, nullable=False),  # placed orders; cancelled ones excluded
    Column("order_days", Integer, nullable=False),  # distinct local days with an order (BG/NBD counts these)
    Column("cancelled_orders", Integer, nullable=False),
    Column("items", Id, nullable=False),
    Column("returned_items", Id, nullable=False),
    Column("revenue", Total, nullable=False),  # net of returns
    Column("returns_value", Total, nullable=False),
    Column("margin", Total, nullable=False),  # (price - cost) of kept items
    Column("avg_order_value", Total),
    # Gamma-Gamma's monetary value (issue #12): kept revenue of the order days after the first
    # / (order_days - 1); NULL with one order day (migration 0005)
    Column("repeat_avg_order_value", Total),
    Column("usual_gap_days", Numeric(10, 2)),  # mean days between distinct order days
    Column("preferred_category", String(64)),  # by revenue, ties by name
    Column("orders_12m", Integer, nullable=False),  # trailing year before the night
    Column("revenue_12m", Total, nullable=False),
    Column("margin_12m", Total, nullable=False),
    Column("night", Date, nullable=False),  # the night that last recomputed this row
)

# One row per customer per night: the segment state as of that night (see README, "Segments").
segment_snapshots = Table(
    "segment_snapshots",
    metadata,
    Column("night", Date, primary_key=True),
    Column("customer_id", Id, primary_key=True, autoincrement=False),
    Column("recency_days", Integer),  # days since the last order; null for never-bought
    Column("tenure_days", Integer),  # days since the first order
    Column("frequency", Integer, nullable=False),  # placed orders, all time
    Column("monetary", Total, nullable=False),  # revenue net of returns, all time
    Column("r_score", Integer),
    Column("f_score", Integer),
    Column("m_score", Integer),
    Column("rfm_segment", String(32), nullable=False),
    Column("abc_class", String(1), nullable=False),
    Column("lifecycle_phase", String(16), nullable=False),
    Column("p_alive", Numeric(6, 4)),
    Column("expected_purchases_90d", Numeric(10, 4)),
    Column("expected_order_value", Total),
    Column("clv_12m", Total),
    Column("service_cost_12m", Total, nullable=False),
    Column("profit_12m", Total, nullable=False),  # margin_12m - service cost
    Column("unprofitable", Boolean, nullable=False),
    Index("ix_segment_snapshots_customer", "customer_id", "night"),
)

churn_fits = Table(
    "churn_fits",
    metadata,
    Column("night", Date, primary_key=True),
    Column("model", String(32), primary_key=True),  # bg_nbd, gamma_gamma
    Column("params", Text, nullable=False),  # JSON
    Column("customers", Integer, nullable=False),
    Column("log_likelihood", Numeric(20, 4)),
    Column("seconds", Numeric(10, 3)),
)

# Churn figures per distinct (repeat order days, recency, age) triple, in days; rebuilt each night.
churn_scores = Table(
    "churn_scores",
    metadata,
    Column("frequency", Integer, primary_key=True, autoincrement=False),
    Column("recency", Integer, primary_key=True, autoincrement=False),
    Column("age", Integer, primary_key=True, autoincrement=False),
    Column("customers", Integer, nullable=False),
    # NULL: the figure could not be computed tonight (the reason is in the segments stage's counts).
    Column("p_alive", Numeric(6, 4)),
    Column("expected_purchases_90d", Numeric(10, 4)),
    Column("discounted_purchases_12m", Numeric(10, 4)),
)

# Rules learnt from all customers' histories; rebuilt by each night.
product_rules = Table(
    "product_rules",
    metadata,
    Column("rule_id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),  # next_purchase (sequence), accessory (basket)
    Column("antecedent_product_id", Id, nullable=False),
    Column("consequent_product_id", Id, nullable=False),
    Column("support", Numeric(10, 6), nullable=False),
    Column("confidence", Numeric(10, 6), nullable=False),
    Column("lift", Numeric(12, 4), nullable=False),
    Column("pairs", Integer, nullable=False),  # customers (sequences) or baskets (accessories) with both
    Column("night", Date, nullable=False),
    UniqueConstraint("kind", "antecedent_product_id", "consequent_product_id", name="uq_product_rules_pair"),
)

# What the rules are counted from (issue #15), kept between nights so that a night counts only
# its changed customers' pairs (retention/rule_counts.py): per customer the first purchase of
# each product, per basket (placed order) its kept products; the pair, product and total counts
# they add up to. Rebuilt from staging with every full rebuild of the recommendations.
rule_first_purchases = Table(
    "rule_first_purchases",
    metadata,
    Column("customer_id", Id, primary_key=True, autoincrement=False),
    Column("product_id", Id, primary_key=True, autoincrement=False),
    Column("first_at", DateTime, nullable=False),
    Index("ix_rule_first_purchases_product", "product_id"),  # the buyers of a re-categorised product
)

rule_basket_items = Table(
    "rule_basket_items",
    metadata,
    Column("order_id", Id, primary_key=True, autoincrement=False),
    Column("product_id", Id, primary_key=True, autoincrement=False),
    Column("customer_id", Id, nullable=False),
    Index("ix_rule_basket_items_customer", "customer_id"),
)

rule_pair_counts = Table(
    "rule_pair_counts",
    metadata,
    Column("kind", String(16), primary_key=True),  # next_purchase (customers), accessory (baskets)
    Column("antecedent_product_id", Id, primary_key=True, autoincrement=False),
    Column("consequent_product_id", Id, primary_key=True, autoincrement=False),
    Column("pairs", Integer, nullable=False),
)

rule_item_counts = Table(
    "rule_item_counts",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("product_id", Id, primary_key=True, autoincrement=False),
    Column("holders", Integer, nullable=False),  # buyers (next_purchase) or baskets (accessory) with it
)

rule_totals = Table(
    "rule_totals",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("total", Integer, nullable=False),  # customers with a purchase, or baskets
)

# The category rules' counts (kind next_category): per pair of categories the customers who first
# bought in one and later in the other, which products those customers chose first in the later
# one, the buyers per category, and each product's category as counted (to see re-categorisations).
rule_product_categories = Table(
    "rule_product_categories",
    metadata,
    Column("product_id", Id, primary_key=True, autoincrement=False),
    Column("category", String(64), nullable=False),
)

rule_category_pairs = Table(
    "rule_category_pairs",
    metadata,
    Column("antecedent_category", String(64), primary_key=True),
    Column("consequent_category", String(64), primary_key=True),
    Column("pairs", Integer, nullable=False),
)

rule_category_choices = Table(
    "rule_category_choices",
    metadata,
    Column("antecedent_category", String(64), primary_key=True),
    Column("consequent_category", String(64), primary_key=True),
    Column("product_id", Id, primary_key=True, autoincrement=False),
    Column("choosers", Integer, nullable=False),
)

rule_category_buyers = Table(
    "rule_category_buyers",
    metadata,
    Column("category", String(64), primary_key=True),
    Column("buyers", Integer, nullable=False),
)

recommendations = Table(
    "recommendations",
    metadata,
    Column("customer_id", Id, primary_key=True, autoincrement=False),
    Column("kind", String(16), primary_key=True),  # next_purchase, accessory
    Column("rank", Integer, primary_key=True, autoincrement=False),  # 1 = best
    Column("product_id", Id, nullable=False),
    Column("because_product_id", Id, nullable=False),
    Column("score", Numeric(12, 6), nullable=False),
    Column("explanation", Text, nullable=False),
    Column("night", Date, nullable=False),
)

segment_report = Table(
    "segment_report",
    metadata,
    Column("night", Date, primary_key=True),
    Column(
        "dimension", String(32), primary_key=True
    ),  # rfm_segment, abc_class, lifecycle_phase, transition, abc_comparison
    Column("value", String(64), primary_key=True),
    Column("customers", Integer, nullable=False),
    Column(
        "metric", Numeric(24, 4).with_variant(Numeric(14, 4), "sqlite")
    ),  # see Total  # dimension-specific figure (e.g. orders per customer)
)

# --- occasions and messages ----------------------------------------------------------------------

occasions = Table(
    "occasions",
    metadata,
    Column("occasion_id", Integer, primary_key=True),
    Column("customer_id", Id, nullable=False),
    Column("occasion", String(32), nullable=False),
    Column("occasion_date", Date, nullable=False),  # the customer's local date
    Column("night", Date, nullable=False, index=True),
    Column("language", String(8), nullable=False),
    Column("details", Text, nullable=False),  # JSON: what the template may quote
    Column("status", String(16), nullable=False),  # selected, skipped, holdout
    Column("reason", Text),
    UniqueConstraint("customer_id", "occasion", "occasion_date", name="uq_occasions_key"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("outbox_id", Integer, primary_key=True),
    Column("customer_id", Id, nullable=False),
    Column("occasion", String(32), nullable=False),
    Column("occasion_date", Date, nullable=False),
    Column("night", Date, nullable=False, index=True),
    Column("email", Text, nullable=False),
    Column("language", String(8), nullable=False),
    Column("subject", Text, nullable=False),
    Column("text_body", Text, nullable=False),
    Column("html_body", Text, nullable=False),
    Column("template_hash", String(64), nullable=False),
    # The saved version (``template_versions``) the message was rendered from; NULL: the shipped file.
    Column("template_version_id", Integer),
    # The wording's variant ("a", "b": ``<language>.b.jinja``) when the template has variants; else NULL.
    Column("variant", String(8)),
    Column("message_id", String(250), nullable=False),
    Column("send_at", DateTime, nullable=False),  # UTC: the send window opens, local to the customer
    Column("send_before", DateTime, nullable=False),  # UTC: the send window closes
    Column(
        "time_zone", String(64), nullable=False
    ),  # the customer's, to move a missed window to the next day
    Column(
        "status", String(16), nullable=False
    ),  # queued, sending, sent, failed, unknown, cancelled, expired
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime),  # UTC; set after a transient failure (4xx, dropped connection)
    Column("lease_owner", String(128)),
    Column("lease_expires_at", DateTime),
    Column("sent_at", DateTime),
    Column("smtp_reply", Text),
    UniqueConstraint("customer_id", "occasion", "occasion_date", name="uq_outbox_key"),
    Index("ix_outbox_status_send_at", "status", "send_at"),
)
# The Retention page's search by an address the customer no longer has (migration 0007).
Index("ix_outbox_email_lower", func.lower(outbox.c.email))

# Templates saved from the Retention page's editor (``retention.template_store``): every save is
# a new row, never an update, so the history can be shown and restored. The newest row of an
# (occasion, language) is the wording every render uses, on whichever machine it runs; without
# one, the shipped file in ``templates/`` is used.
template_versions = Table(
    "template_versions",
    metadata,
    Column("version_id", Integer, primary_key=True),
    Column("occasion", String(32), nullable=False),
    Column("language", String(8), nullable=False),
    Column("source", Text, nullable=False),
    Column("sha256", String(64), nullable=False),  # of the source, UTF-8
    Column("saved_by", String(250), nullable=False),  # the Airflow user, or "cli:<login>"
    Column("saved_at", DateTime, nullable=False),  # UTC
    Column("note", Text),  # e.g. "restored version 3", "reset to the shipped file"
    Index("ix_template_versions_pair", "occasion", "language", "version_id"),
)

# Every delivery attempt with the server's reply, as it happened.
delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("attempt_id", Integer, primary_key=True),
    Column("outbox_id", Integer, nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("lease_owner", String(128), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
    Column("outcome", String(16)),  # sent, retry, failed, cancelled; null while in flight
    Column("reply_code", Integer),
    Column("reply", Text),
)

suppression = Table(
    "suppression",
    metadata,
    # sha256 of the lower-cased address: a suppression outlives the erasure of the person.
    Column("email_hash", String(64), primary_key=True),
    Column("reason", String(64), nullable=False),
    Column("night", Date),
)

# The kinds of message an address stopped on the unsubscribe page while keeping the others
# (``retention.unsubscribe.MESSAGE_KINDS``; detection skips their occasions). Keyed like
# ``suppression``, by the address's hash, so that a preference outlives the erasure of the person.
unsubscribe_preferences = Table(
    "unsubscribe_preferences",
    metadata,
    Column("email_hash", String(64), primary_key=True),
    Column("kind", String(16), primary_key=True),  # suggestions, greetings, feedback, win_back, thank_you
    Column("night", Date, nullable=False),  # the shop's calendar date of the click (audit)
)

# --- erasure (GDPR art. 17, ``retention.erasure``) -------------------------------------------------

# A forgotten person's tombstone: one row per identifier (customer id, address), as a salted hash
# that cannot be read back; the extract skips shop rows that match one. Nothing else is kept.
erasures = Table(
    "erasures",
    metadata,
    # HMAC-SHA256 of "<kind>:<normalised value>" keyed with this warehouse's erasure salt.
    Column("identity_hash", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # customer_id, email
    Column("erased_on", Date, nullable=False),  # the day of the request (audit)
)

# The salt of the tombstones' hashes: random, made by the first erasure, never changed (a new
# salt would let the forgotten back in). One row.
erasure_salt = Table(
    "erasure_salt",
    metadata,
    Column("salt_id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("salt", String(64), nullable=False),
)

# --- feedback (issue #17; ``retention.feedback``) -------------------------------------------------

# A customer's answer to the feedback message of one order: a rating 1..5 and/or a comment, from
# the public app's signed links. One row per (customer, order): a second click changes the
# rating, never adds a row. ``answered_at`` is when the current rating was given (it moves when
# the rating changes; suggestions are held back from it), ``updated_at`` the last change of
# either. Both are the moment of the web request, naive UTC (audit, as for an unsubscribe).
feedback = Table(
    "feedback",
    metadata,
    Column("customer_id", Id, primary_key=True, autoincrement=False),
    Column("order_id", Id, primary_key=True, autoincrement=False),
    Column("rating", Integer),  # 1..5; NULL: a comment without a rating
    Column("comment", Text),  # as typed (at most retention.feedback.COMMENT_MAX_CHARS), escaped when shown
    Column("answered_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    # The Retention page's weekly chart and held_back() read answers by time.
    Index("ix_feedback_answered_at", "answered_at"),
    Index("ix_feedback_updated_at", "updated_at"),
)

# What a low rating asks the shop to do: one row per answered order whose rating was ever at or
# below RETENTION_FEEDBACK_LOW_RATING. ``mailed_at`` stays NULL until ``mail_followups`` has
# told the service address (so the public request never waits for SMTP, and a crash loses
# nothing); ``status`` is open, or closed once the customer raised the rating above the bar.
feedback_followups = Table(
    "feedback_followups",
    metadata,
    Column("followup_id", Integer, primary_key=True),
    Column("customer_id", Id, nullable=False),
    Column("order_id", Id, nullable=False),
    Column("rating", Integer, nullable=False),
    Column("comment", Text),
    Column("created_at", DateTime, nullable=False),
    Column("mailed_at", DateTime),
    Column("status", String(8), nullable=False),  # open, closed
    UniqueConstraint("customer_id", "order_id", name="uq_feedback_followups_answer"),
    Index("ix_feedback_followups_status", "status", "created_at"),
)
