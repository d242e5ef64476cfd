"""Tables. Every datetime is stored as UTC; SQLite hands them back naive, `as_utc` fixes that."""

from __future__ import annotations

from datetime import datetime, UTC
from typing import Any, cast, overload

from sqlalchemy import JSON, BigInteger, DateTime, Index, Integer, Table, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

JSONType = JSON().with_variant(JSONB(), "postgresql")
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...


@overload
def as_utc(value: None) -> None: ...


def as_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    """A stored moment as ISO 8601 in UTC (SQLite hands them back naive), for JSON answers."""
    return as_utc(value).isoformat() if value is not None else None


def table_of(model: type[SQLModel]) -> Table:
    """A model's Core table, for set-based statements (SQLModel sets `__table__` at runtime only)."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


def _ts(**kw: Any) -> Any:
    return Field(sa_type=DateTime(timezone=True), **kw)


def _json(**kw: Any) -> Any:
    return Field(sa_type=JSONType, **kw)


class Person(SQLModel, table=True):
    __tablename__ = "people"

    id: str = Field(primary_key=True, max_length=36)
    traits: dict = _json(default_factory=dict)
    timezone: str | None = Field(default=None, max_length=64)
    email_unsubscribed: bool = False
    suppressed: bool = False
    sms_consent: bool = False
    created_at: datetime = _ts()
    identified_at: datetime = _ts()
    updated_at: datetime = _ts()


class Identifier(SQLModel, table=True):
    """`user_id`, `email`, `phone` or `anonymous_id` of a person; a value belongs to one person."""

    __tablename__ = "identifiers"
    __table_args__ = (UniqueConstraint("kind", "value", name="uq_identifiers_kind_value"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    person_id: str = Field(index=True, max_length=36)
    kind: str = Field(max_length=16)
    value: str = Field(max_length=512)
    created_at: datetime = _ts()


class Event(SQLModel, table=True):
    """One message a front door accepted. On PostgreSQL the table is partitioned by month on
    `timestamp` (store/partitions.py, migration 0014): its primary key there is (id, timestamp) and a
    message id is unique through `event_message_ids` (store/message_ids.py), not through this table."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_anonymous_id_timestamp", "anonymous_id", "timestamp"),
        Index("ix_events_person_id_timestamp", "person_id", "timestamp"),
        Index("ix_events_name_timestamp", "name", "timestamp"),
        Index(
            "ix_events_unowned_user_id",
            "user_id",
            postgresql_where=text("person_id IS NULL"),
            sqlite_where=text("person_id IS NULL"),
        ),
        Index(
            "ix_events_unowned_anonymous_id",
            "anonymous_id",
            "timestamp",
            postgresql_where=text("person_id IS NULL"),
            sqlite_where=text("person_id IS NULL"),
        ),
        # The copies and cancellations of one order (report roll-up triggers, order de-duplication).
        Index(
            "ix_events_order_id",
            "order_id",
            postgresql_where=text("order_id IS NOT NULL"),
            sqlite_where=text("order_id IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    message_id: str = Field(max_length=255, unique=True)
    type: str = Field(max_length=16)
    name: str = Field(max_length=255)
    original_name: str = Field(max_length=255)
    anonymous_id: str | None = Field(default=None, max_length=255)
    user_id: str | None = Field(default=None, max_length=255)
    person_id: str | None = Field(default=None, max_length=36)
    properties: dict = _json(default_factory=dict)
    context: dict = _json(default_factory=dict)
    timestamp: datetime = _ts()
    received_at: datetime = _ts()
    source: str = Field(default="client", max_length=16)
    cart_id: str | None = Field(default=None, max_length=255, index=True)
    order_id: str | None = Field(default=None, max_length=255)
    missing_properties: list = _json(default_factory=list)
    duplicate_of: str | None = Field(default=None, max_length=255)  # the other copy (client vs server)
    # What ingest corrected or refused in this event, for the tracking report: `timestamp_clamped`
    # (the client's future timestamp), `foreign_links` (properties whose host is not the shop's).
    flags: dict | None = _json(default=None)


class Rejected(SQLModel, table=True):
    """Quarantine: input we could not accept, kept with the reason so nobody has to guess."""

    __tablename__ = "rejected"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    received_at: datetime = _ts(index=True)
    api: str = Field(max_length=16)
    endpoint: str = Field(max_length=255)
    message_id: str | None = Field(default=None, max_length=255)
    reason: str = Field(sa_type=Text)
    payload: str = Field(sa_type=Text)


class IdentityConflict(SQLModel, table=True):
    """An identify that named someone else's identity, kept for a person to decide (nothing is merged):
    `shared_device` — a second person identified from a device whose anonymous id already belongs to
    someone (`anonymous_id`); `identifiers` — one identify named two known people (userId of one,
    email of the other), `identifiers` says which kind named whom."""

    __tablename__ = "identity_conflicts"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    kind: str = Field(default="shared_device", max_length=16, sa_column_kwargs={"server_default": "shared_device"})
    anonymous_id: str | None = Field(default=None, max_length=255, index=True)
    owner_person_id: str = Field(max_length=36, index=True)  # indexed: a person's timeline, merges, deletes
    claimant_person_id: str = Field(max_length=36, index=True)
    identifiers: dict | None = _json(default=None)  # {"user_id": person_id, "email": other_person_id}
    message_id: str | None = Field(default=None, max_length=255)  # the identify that named them
    created_at: datetime = _ts()


class Message(SQLModel, table=True):
    """A message a journey decided to send; written before delivery, keyed by `{workflow_id}:{step}`."""

    __tablename__ = "messages"

    id: str = Field(primary_key=True, max_length=36)
    person_id: str = Field(index=True, max_length=36)
    workflow_id: str = Field(max_length=255)
    journey: str = Field(max_length=32)
    step: int
    template: str = Field(max_length=255)
    channel: str = Field(max_length=16)
    recipient: str = Field(max_length=512)
    subject: str = Field(default="", sa_type=Text)
    body: str = Field(default="", sa_type=Text)
    items: list = _json(default_factory=list)
    html: str = Field(default="", sa_type=Text)  # the HTML part of an email ("" for SMS)
    unsubscribe_url: str | None = Field(default=None, sa_type=Text)  # signed link, also in List-Unsubscribe
    status: str = Field(default="pending", max_length=16)  # pending | sending | sent | failed | skipped
    reason: str | None = Field(default=None, sa_type=Text)  # why it failed, or the last transient error
    attempts: int = 0  # delivery attempts (a transient failure is retried by the activity retry policy)
    idempotency_key: str = Field(max_length=300, unique=True)
    cart_id: str | None = Field(default=None, max_length=255)
    created_at: datetime = _ts(index=True)
    sent_at: datetime | None = _ts(default=None)
    # The delivery lease: while `sending`, the attempt holding `lease_owner` delivers and no other
    # attempt may until `lease_until` (one delivery deadline, on the workers' wall clocks) has passed.
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = _ts(default=None)
    variant: str | None = Field(default=None, max_length=64)  # the experiment variant sent (journeys/experiments.py)


class Product(SQLModel, table=True):
    """The catalog: one row per product variant (`variant` is "" for a product without variants).

    Fed cheaply from `Product Viewed` / `Added to Cart` properties (source `event`) and owned by the
    shop through `PUT /admin/catalog` (source `admin`): events fill gaps in admin rows but never
    overwrite them, and never change stock. Out-of-stock variants are never recommended."""

    __tablename__ = "products"
    __table_args__ = (Index("ix_products_category_in_stock", "category", "in_stock"),)

    sku: str = Field(primary_key=True, max_length=255)
    variant: str = Field(default="", primary_key=True, max_length=255)
    name: str | None = Field(default=None, max_length=512)
    category: str | None = Field(default=None, max_length=255)
    price: float | None = None
    currency: str | None = Field(default=None, max_length=3)
    image_url: str | None = Field(default=None, sa_type=Text)
    url: str | None = Field(default=None, sa_type=Text)
    in_stock: bool = True
    bestseller_rank: int | None = None  # 1 = best; welcome emails fall back to these
    # Orders of the last 90 days that listed it: the bestseller order after the admin's rank,
    # refreshed every few minutes by the worker (activities/store_activities.refresh_recent_orders).
    recent_orders: int = 0
    source: str = Field(default="event", max_length=16)  # event | admin
    last_seen_at: datetime | None = _ts(default=None)  # newest event that described it
    updated_at: datetime = _ts()


OUTBOX_PENDING = "dispatched_at IS NULL AND dead_at IS NULL"


class OutboxRow(SQLModel, table=True):
    """A signal for a person's hub, written in the ingest transaction and delivered to Temporal
    by the dispatcher — so an accepted identify is never lost while Temporal is down."""

    __tablename__ = "outbox"
    __table_args__ = (
        # The claim reads only rows still to deliver; pruning only delivered ones.
        Index(
            "ix_outbox_claimable",
            "available_at",
            postgresql_where=text(OUTBOX_PENDING),
            sqlite_where=text(OUTBOX_PENDING),
        ),
        Index(
            "ix_outbox_dispatched_at",
            "dispatched_at",
            postgresql_where=text("dispatched_at IS NOT NULL"),
            sqlite_where=text("dispatched_at IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    kind: str = Field(max_length=16)  # identified | activity | purchased | merged | absorbed | erased
    person_id: str = Field(max_length=36, index=True)
    payload: dict = _json(default_factory=dict)
    dedupe_key: str | None = Field(default=None, max_length=300, unique=True)
    created_at: datetime = _ts()
    available_at: datetime = _ts()
    claimed_until: datetime | None = _ts(default=None)
    dispatched_at: datetime | None = _ts(default=None)
    claim_owner: str | None = Field(default=None, max_length=36)  # the dispatcher pass holding the lease
    attempts: int = 0  # failed deliveries of this row (a Temporal outage does not count)
    last_error: str | None = Field(default=None, sa_type=Text)
    dead_at: datetime | None = _ts(default=None)  # dead-lettered after OUTBOX_MAX_ATTEMPTS failures


class Suppression(SQLModel, table=True):
    """An email or phone we must never message again (unsubscribed or suppressed), kept as a
    peppered hash so it outlives the person's deletion without keeping the address itself."""

    __tablename__ = "suppressions"

    digest: str = Field(primary_key=True, max_length=64)  # hex HMAC-SHA256 of "kind:normalised value"
    kind: str = Field(max_length=16)  # email | phone
    reason: str = Field(max_length=32)  # unsubscribed | suppressed | no sms consent
    created_at: datetime = _ts()


class JourneyRun(SQLModel, table=True):
    """One journey a hub started for a person; `cart_recovery_key` makes one cart recovery per cart,
    `product_id` one catalogue journey per person, product and window."""

    __tablename__ = "journey_runs"

    workflow_id: str = Field(primary_key=True, max_length=255)
    person_id: str = Field(index=True, max_length=36)
    route: str = Field(max_length=32)
    status: str = Field(default="running", max_length=16)
    reason: str = Field(default="", sa_type=Text)
    cart_id: str | None = Field(default=None, max_length=255)
    cart_value: float | None = None
    cart_recovery_key: str | None = Field(default=None, max_length=255, unique=True)
    started_at: datetime = _ts()
    ended_at: datetime | None = _ts(default=None)
    product_id: str | None = Field(default=None, max_length=255)  # a catalogue journey's product


class JourneyLog(SQLModel, table=True):
    """Every decision, send, wait, skip and exit of a journey, with its reason."""

    __tablename__ = "journey_log"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    person_id: str = Field(index=True, max_length=36)
    workflow_id: str = Field(max_length=255, index=True)
    journey: str = Field(max_length=32)
    step: int | None = None
    kind: str = Field(max_length=16)  # decision | waiting | sent | failed | exit | conversion
    reason: str = Field(default="", sa_type=Text)
    at: datetime = _ts()
    until: datetime | None = _ts(default=None)
    message_id: str | None = Field(default=None, max_length=36)
    # What makes a retried write the same line (the activity run + id, or the message + outcome);
    # None for lines written once by construction.
    note_key: str | None = Field(default=None, max_length=400, unique=True)


SHOPIFY_PENDING = "status = 'pending'"


class ShopifyWebhook(SQLModel, table=True):
    """A verified Shopify webhook: its id (`X-Shopify-Webhook-Id`, the same on Shopify's retries) is
    the dedupe key, written with the raw body in one transaction before the webhook is applied, so an
    accepted call is never lost. The body is cleared once applied (it names people); a failed apply
    stays `pending` for the retry sweep, with the error."""

    __tablename__ = "shopify_webhooks"
    __table_args__ = (
        Index(
            "ix_shopify_webhooks_pending",
            "received_at",
            postgresql_where=text(SHOPIFY_PENDING),
            sqlite_where=text(SHOPIFY_PENDING),
        ),
    )

    webhook_id: str = Field(primary_key=True, max_length=255)
    topic: str = Field(max_length=64)
    shop_domain: str = Field(max_length=255)
    received_at: datetime = _ts()
    body: str | None = Field(default=None, sa_type=Text)
    status: str = Field(default="pending", max_length=16)  # pending | applied | ignored | unusable
    attempts: int = 0
    outcome: str | None = Field(default=None, sa_type=Text)  # what it did, or the last error
    person_id: str | None = Field(default=None, max_length=36)
    applied_at: datetime | None = _ts(default=None)


class ShopifyVariant(SQLModel, table=True):
    """Which catalogue variant a Shopify inventory item is, and its units per location:
    `inventory_levels/update` names only the inventory item and one location."""

    __tablename__ = "shopify_variants"

    inventory_item_id: str = Field(primary_key=True, max_length=64)
    product_id: str | None = Field(default=None, max_length=64)
    variant_id: str | None = Field(default=None, max_length=64)
    tracked: bool = True  # Shopify counts its units (inventory_management "shopify")
    sell_when_out: bool = False  # inventory_policy "continue"
    levels: dict = _json(default_factory=dict)  # location id → available units
    updated_at: datetime = _ts()


class ShopifyImportCheckpoint(SQLModel, table=True):
    """Where `breadcrumb shopify import` got to, per shop and resource: an interrupted import resumes
    after the last page it applied; a finished one starts over next time (it is idempotent)."""

    __tablename__ = "shopify_import_checkpoints"

    shop: str = Field(primary_key=True, max_length=255)
    resource: str = Field(primary_key=True, max_length=32)  # customers | orders | products
    search: str = Field(default="", max_length=255)  # the query filter the cursor belongs to
    cursor: str | None = Field(default=None, sa_type=Text)  # after the last applied page; None: from the start
    imported: int = 0  # nodes applied by this pass so far
    started_at: datetime = _ts()
    updated_at: datetime = _ts()
    finished_at: datetime | None = _ts(default=None)


class Backtest(SQLModel, table=True):
    """A backtest the API started (`POST /admin/backtest`): its outcome, written by the worker that
    ran it on the backtest task queue, so every API process can answer for it. Progress while it
    runs is the workflow's query (`simulation/backtest_job.py`)."""

    __tablename__ = "backtests"

    id: str = Field(primary_key=True, max_length=32)
    status: str = Field(default="queued", max_length=16)  # queued (for Temporal) | running | done | failed
    created_at: datetime = _ts()
    job: dict = _json(default_factory=dict)  # what to simulate (simulation.backtest_job.BacktestJob)
    finished_at: datetime | None = _ts(default=None)
    total: int | None = None  # simulations, when finished
    result: dict | None = _json(default=None)
    error: str | None = Field(default=None, sa_type=Text)


SEGMENT_CURRENT = "left_at IS NULL"


class SegmentMembership(SQLModel, table=True):
    """One stay of a person in a segment (`[segments.NAME]`): entered at `entered_at`, left at
    `left_at` (None while still in it). Rows are never rewritten but to close them, so a person's
    entries and exits stay readable as a timeline."""

    __tablename__ = "segment_memberships"
    __table_args__ = (
        # At most one open stay per person and segment; also the index of a segment's current members.
        Index(
            "ix_segment_memberships_current",
            "segment",
            "person_id",
            unique=True,
            postgresql_where=text(SEGMENT_CURRENT),
            sqlite_where=text(SEGMENT_CURRENT),
        ),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    segment: str = Field(max_length=255)
    person_id: str = Field(index=True, max_length=36)
    entered_at: datetime = _ts()
    left_at: datetime | None = _ts(default=None)


class ReportDirty(SQLModel, table=True):
    """A person or never-identified device whose report roll-ups are stale. Written by database
    triggers in the writer's own transaction (insert-only, so concurrent writers never wait on each
    other); the refresh deletes exactly the marks it read (store/reports/rollup_refresh.py)."""

    __tablename__ = "report_dirty"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    kind: str = Field(max_length=8)  # person | device
    key: str = Field(max_length=255)


# The grain of the report roll-ups: a figure on a day for a journey step, and the neighbouring days
# that make distinct counts exact over any range of whole days (docs/reports.md).
ROLLUP_KEY = ("figure", "day", "journey", "step", "variant", "outcome", "reason", "prev_day", "end_day", "after_day")


class _RollupRow(SQLModel):
    figure: str = Field(max_length=32)
    day: str = Field(default="", max_length=10)
    journey: str = Field(default="", max_length=32)
    step: int = 0
    variant: str = Field(default="", max_length=64)
    outcome: str = Field(default="", max_length=16)
    reason: str = Field(default="", max_length=80)
    prev_day: str = Field(default="", max_length=10)
    end_day: str = Field(default="", max_length=10)
    after_day: str = Field(default="", max_length=10)
    count: int = 0
    hits: int = 0
    cart_hits: int = 0
    prior: int = 0
    revenue: float = 0.0


class ReportContribution(_RollupRow, table=True):
    """One person's (or device's) share of the roll-ups, kept so a refresh can take it back out."""

    __tablename__ = "report_contributions"
    __table_args__ = (
        Index("ix_report_contributions_owner", "owner_kind", "owner"),
        Index("ix_report_contributions_figure_day", "figure", "day"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    owner_kind: str = Field(max_length=8)
    owner: str = Field(max_length=255)
    at: datetime | None = _ts(default=None)  # the cohort's identify moment (exact open-window test)


class ReportRollup(_RollupRow, table=True):
    """The sum of every contribution with the same key: what the journey report reads."""

    __tablename__ = "report_rollups"
    __table_args__ = (UniqueConstraint(*ROLLUP_KEY, name="uq_report_rollups_key"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)


class ReportRollupState(SQLModel, table=True):
    """The settings the roll-ups were built with; other settings are answered by the exact queries."""

    __tablename__ = "report_rollup_state"

    id: int = Field(default=1, primary_key=True)
    attribution_window_seconds: float
    conversion_days: int
    built_at: datetime = _ts()


class ExperimentDecision(SQLModel, table=True):
    """An experiment's auto-winner decision: from `decided_at` on, every send of the step goes to
    `winner`. `figures` are the per-variant figures the decision was made on, as the report shows them."""

    __tablename__ = "experiment_decisions"

    journey: str = Field(primary_key=True, max_length=32)
    step: int = Field(primary_key=True)
    winner: str = Field(max_length=64)
    figures: list = _json(default_factory=list)
    decided_at: datetime = _ts()


class PersonMerge(SQLModel, table=True):
    """Two people found to be one (an alias or a Customer.io merge): `absorbed_person_id` was moved
    onto `person_id` at `at`. The only trace a merge leaves, so a person's timeline can say when and
    why their history grew; it follows later merges and goes with the person's deletion."""

    __tablename__ = "person_merges"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    person_id: str = Field(index=True, max_length=36)
    absorbed_person_id: str = Field(max_length=36)
    at: datetime = _ts()
