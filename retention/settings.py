"""One typed settings object, read once and passed down.

Every setting comes from an environment variable with the ``RETENTION_`` prefix
(``RETENTION_WAREHOUSE_URL``, ``RETENTION_SEND_WINDOW_START``, ...). With none set,
everything runs on the embedded default: SQLite files under ``RETENTION_HOME``
(default ``./var``) and an SMTP sink on loopback.

Secrets (the SMTP password, the unsubscribe signing key) are never settings with a
default: they come from an Airflow connection inside Airflow, or from the
environment outside it (``AIRFLOW_CONN_SMTP_DEFAULT`` is understood in both).
"""

from __future__ import annotations

import datetime as dt
from functools import cached_property
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "LANGUAGES"]

#: Languages with templates; a customer's language outside this set falls back to the default.
LANGUAGES = ("en", "de", "nb", "et")

class Settings(BaseSettings):
    """Every knob of the pipeline, with the embedded defaults."""

    model_config = SettingsConfigDict(env_prefix="RETENTION_", extra="ignore", frozen=True)

    home: Path = Field(Path("var"), description="Folder for the embedded SQLite files and the mail sink.")
    warehouse_url: str | None = Field(None, description="SQLAlchemy URL of the warehouse.")
    source_url: str | None = Field(None, description="SQLAlchemy URL of the shop database to extract from.")

    time_zone: str = Field("Europe/Berlin", description="The shop's own time zone; defines the night.")
    default_language: str = Field("en", description="Language for customers whose language has no templates.")
    currency: str = Field("EUR", description="Currency of prices in the shop database.")

    send_window_start: dt.time = Field(dt.time(9, 0), description="Earliest local hour to send.")
    send_window_end: dt.time = Field(dt.time(18, 0), description="Latest local hour to send.")
    messages_ready_by: dt.time = Field(
        dt.time(6, 0),
        description="Shop-local time by which a night's messages are in the outbox and being sent; customers "
        "whose send window can open before it get, from night D, their next local date's messages.",
    )

    chunk_size: int = Field(5000, ge=100, description="Rows per chunk when streaming the extract.")
    quarantine_max_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Fail the extract when a table's share of bad rows in a night exceeds this.",
    )
    quarantine_min_rows: int = Field(
        100,
        ge=1,
        description="A night with fewer rows in a table is judged as if it had this many (small nights).",
    )

    # --- segments (README, "Segments") ---
    abc_a_share: float = Field(
        0.80, gt=0, lt=1, description="Share of trailing-year revenue made by A customers."
    )
    abc_b_share: float = Field(
        0.15, gt=0, lt=1, description="Share of trailing-year revenue made by B customers."
    )
    exploration_max_orders: int = Field(
        2, ge=1, description="Up to this many orders a customer is exploring."
    )
    commitment_min_orders: int = Field(5, ge=2, description="Orders needed, all time, for commitment.")
    commitment_min_days: int = Field(
        365, ge=0, description="Days between first and last order needed for commitment."
    )
    commitment_min_orders_12m: int = Field(
        2, ge=1, description="Orders in the trailing year needed for commitment."
    )
    dissolution_factor: float = Field(
        3.0, gt=1, description="Silent for this many times the usual gap: dissolution."
    )
    dissolution_min_days: int = Field(90, ge=1, description="Never dissolution before this many silent days.")
    default_gap_days: float = Field(
        120, gt=0, description="Usual gap assumed for customers with one order day."
    )
    service_cost_per_order: float = Field(
        5.0, ge=0, description="Cost of serving one order (picking, support)."
    )
    message_cost: float = Field(
        0.01,
        ge=0,
        description="Cost of sending one message, in the shop's currency (what retention earns: the return "
        "on this cost).",
    )
    variant_min_sample: int = Field(
        300,
        ge=2,
        description="Customers each wording variant needs (30 days after the occasion) before the report "
        "names a winner.",
    )
    churn_monthly_discount: float = Field(
        0.01, ge=0, lt=1, description="Monthly discount rate of the 12-month CLV."
    )
    snapshot_days: int = Field(
        40,
        ge=2,
        description="Keep daily segment snapshots this many nights; first-of-month ones are kept for good.",
    )

    # --- recommendations (README, "Recommendations") ---
    rules_min_pairs: int = Field(
        3, ge=1, description="A product rule needs at least this many customers (or baskets) behind it."
    )
    rules_min_confidence: float = Field(
        0.05, ge=0, le=1, description="A product rule needs at least this confidence."
    )
    recommendations_top_n: int = Field(3, ge=1, description="Recommendations kept per customer and kind.")
    recommendations_full_weekday: int = Field(
        6,
        ge=-1,
        le=6,
        description="Weekday (0 Monday .. 6 Sunday) of the full rebuild of every customer's recommendations; -1 never.",
    )

    # --- occasions (README, "Occasions") ---
    occasion_priority: str = Field(
        "",
        description="Occasions from most to least important; one message a day per customer, the first wins. "
        "Empty: every occasion, in the order their declarations give (thank_you, birthday, anniversary, "
        "win_back, feedback, next_purchase, accessory, new_stock, then added ones by their priority); a list "
        "names the occasions that run and their order.",
    )
    occasion_dirs: str = Field(
        "",
        description="Folders (os.pathsep between them) of added occasions: each sub-folder with an occasion.py "
        "declaration, its occasion.sql model and its templates is one occasion (README, 'Adding an occasion'). "
        "Every worker must see the same folders.",
    )
    thank_every_order_for_a: bool = Field(
        True, description="Thank A customers after every order, not only the first."
    )
    thank_you_max_age_days: int = Field(
        3,
        ge=0,
        description="A first order that reaches the warehouse more than this many nights late is not thanked "
        "(recorded as skipped, with the reason), and an order that late gets no follow-ups (next purchase, "
        "accessory); one up to this late gets them counted from the night it arrived.",
    )
    weekly_cap: int = Field(2, ge=1, description="At most this many messages per customer in any 7 nights.")
    next_purchase_delay_days: int = Field(
        14, ge=0, description="Days after an order before suggesting the next product."
    )
    accessory_delay_days: int = Field(
        3, ge=0, description="Days after an order before suggesting an accessory."
    )
    recommendation_period_days: int = Field(
        30,
        ge=1,
        description="At most one next-purchase (and one accessory) message per customer in this many days.",
    )
    offer_classes: str = Field(
        "A,B",
        description="ABC classes that get product suggestions (next_purchase, accessory); C gets the basics.",
    )
    feedback_delay_days: int = Field(10, ge=1, description="Days after an order before asking for feedback.")
    holdout_share: float = Field(
        0.05, ge=0, lt=1, description="Share of customers who get no messages (control group)."
    )
    holdout_salt: str = Field(
        "retention-holdout-v1", description="Salt of the holdout hash; changing it reshuffles."
    )

    # --- delivery (docs/delivery.md) ---
    delivery_batch_size: int = Field(
        200, ge=1, description="Messages per batch (one SMTP session)."
    )
    delivery_batches: int = Field(
        4, ge=1, description="Batches sent in parallel at most (lanes; each sends its batches in turn)."
    )
    delivery_rate_per_second: float = Field(
        20.0, ge=0, description="Global send rate of all batches together; 0 = unlimited."
    )
    delivery_run_cap: int = Field(
        5000, ge=1, description="Most messages one delivery run sends, in as many batches as that takes."
    )
    delivery_max_attempts: int = Field(
        5, ge=1, description="SMTP attempts before a 4xx, or a drop before the end of DATA, is final."
    )
    delivery_backoff_seconds: float = Field(
        300, ge=0, description="Wait after the first transient failure; doubles each time."
    )
    delivery_backoff_max_seconds: float = Field(21600, ge=0, description="Upper limit of the backoff.")
    delivery_lease_seconds: float = Field(
        600, gt=0, description="Claim lease of a message being sent; well above the SMTP timeout."
    )
    delivery_unknown_policy: Literal["hold", "resend"] = Field(
        "hold",
        description="A message whose fate is unknown (sender died mid-SMTP, or no reply after the end of "
        "DATA): hold it as unknown, or resend it.",
    )
    delivery_max_delay_days: int = Field(
        1,
        ge=0,
        description="A message missing its window moves to the next day's, at most this many days late; then it expires.",
    )
    delivery_dry_run: bool = Field(
        False, description="Render and log what would be sent; send and mark nothing."
    )
    unsubscribe_mailto: str | None = Field(
        None, description="Address of the mailto unsubscribe link (default unsubscribe@<sender domain>)."
    )
    unsubscribe_base_url: str | None = Field(
        None,
        description="Public base URL under which the unsubscribe endpoint is served; links in messages "
        "are <this>/unsubscribe?token=... (default: RETENTION_SHOP_URL).",
    )
    unsubscribe_rate_per_minute: int = Field(
        30, ge=1, description="Requests per minute one client address may make to the unsubscribe endpoint."
    )
    # --- feedback (README, "Feedback"; retention.feedback) ---
    feedback_low_rating: int = Field(
        2,
        ge=1,
        le=4,
        description="Ratings (1..5) at or below this are low: a follow-up for the shop, and suggestions held back.",
    )
    feedback_hold_days: int = Field(
        30,
        ge=0,
        description="After a low rating, no product suggestions to that customer for this many nights; 0 = none held.",
    )
    service_address: str | None = Field(
        None,
        description="Address that low-rating follow-ups are mailed to (`retention feedback mail-followups`); "
        "unset: follow-ups are only shown on the Retention page.",
    )

    sender: str = Field("Retention Demo Shop <shop@example.com>", description="From address of messages.")
    shop_name: str = Field("Nordlicht Shop", description="Shop name as it appears in messages.")
    shop_url: str = Field("https://shop.example.com", description="Base URL for links in messages.")
    templates_dir: Path | None = Field(
        None, description="Folder of message templates (default: the templates shipped in the package)."
    )
    templates_frozen: bool = Field(
        False,
        description="Templates are baked into the image: the Retention page cannot save edits (it offers "
        "the edited file for download) and renders ignore versions saved in the warehouse.",
    )
    template_editors: str = Field(
        "",
        description="Who may save templates on the Retention page, besides the auth manager's permission "
        "(PUT on the custom view 'Retention Templates'): comma-separated Airflow user names and "
        "role:<name> entries. Empty: whoever the auth manager allows.",
    )
    template_max_bytes: int = Field(
        65536, ge=1024, description="Largest template file (also the layout and anything included), in bytes."
    )
    message_max_bytes: int = Field(
        262144,
        ge=4096,
        description="Largest rendered part of a message (subject, text or HTML after CSS inlining), in bytes.",
    )
    render_timeout_seconds: float = Field(
        2.0, gt=0, description="Render budget of one message (all its parts), in seconds."
    )
    render_memory_mb: int = Field(
        512, ge=0, description="Memory the render worker may use beyond its start, in MiB; 0 turns it off."
    )

    smtp_conn_id: str = Field("smtp_default", description="Airflow connection with the SMTP server.")
    smtp_url: str | None = Field(
        None,
        description="SMTP server outside Airflow, as smtp://user:pass@host:port (?ssl=true / ?starttls=true).",
    )
    smtp_timeout: float = Field(30.0, gt=0, description="Seconds before an SMTP conversation gives up.")
    alert_email: str | None = Field(
        None,
        description="Data-engineering address mailed (through smtp_default) when an Airflow task fails "
        "for good; unset: only a log line.",
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"RETENTION_TIME_ZONE={value!r} is not an IANA time zone (e.g. Europe/Berlin)"
            ) from exc
        return value

    @field_validator("default_language")
    @classmethod
    def _known_language(cls, value: str) -> str:
        if value not in LANGUAGES:
            raise ValueError(f"RETENTION_DEFAULT_LANGUAGE={value!r}: choose one of {', '.join(LANGUAGES)}")
        return value

    @property
    def priorities(self) -> tuple[str, ...]:
        """The occasions that run, most important first (``RETENTION_OCCASION_PRIORITY``)."""
        listed = tuple(name.strip() for name in self.occasion_priority.split(",") if name.strip())
        if listed:
            return listed
        from retention.registry import default_priorities  # the declarations import these settings

        return default_priorities(self)

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def warehouse(self) -> str:
        """The warehouse URL, defaulting to a SQLite file in the home folder."""
        return self.warehouse_url or f"sqlite:///{self.home_dir / 'warehouse.db'}"

    @property
    def source(self) -> str:
        """The shop database URL, defaulting to the demo shop's SQLite file."""
        return self.source_url or f"sqlite:///{self.home_dir / 'shop.db'}"

    @property
    def templates_path(self) -> Path:
        if self.templates_dir:
            return self.templates_dir.expanduser().resolve()
        from retention.resources import templates_folder

        return templates_folder()

    @property
    def unsubscribe_base(self) -> str:
        """Base URL of the public unsubscribe endpoint, without a trailing slash."""
        return (self.unsubscribe_base_url or self.shop_url).rstrip("/")

    @property
    def unsubscribe_url(self) -> str:
        """The one-click unsubscribe URL that messages link to (before ``?token=``)."""
        return f"{self.unsubscribe_base}/unsubscribe"

    @property
    def mail_dir(self) -> Path:
        """Where the embedded SMTP sink stores the .eml files it receives."""
        return self.home_dir / "mail"

    def with_overrides(self, **values: object) -> Settings:
        """A copy with some fields replaced (the CLI's ``--url`` and the tests use it)."""
        data = self.model_dump()
        data.update({k: v for k, v in values.items() if v is not None})
        return Settings(**data)
