"""Tables of the evidence bus: the embedded event log and consumer offsets (migration 0003).

Defined on the shared :data:`signalfactory.knowledge.models.metadata`; imported at the end of
``models.py`` so the metadata always holds every table.

* ``bus_events``: the append-only log of CloudEvents envelopes; ``seq`` gives the order and
  ``event_id`` is unique, so publishing the same envelope twice stores it once.
* ``bus_offsets``: per consumer group, the highest ``seq`` already handed out.
* ``bus_leases``: deliveries handed out and not yet acknowledged, per group; a lease whose
  ``leased_until`` has passed is handed out again (at-least-once).
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, String, Table, UniqueConstraint

from signalfactory.knowledge.models import UTCDateTime, _seq, metadata

bus_events = Table(
    "bus_events",
    metadata,
    Column("seq", _seq(), primary_key=True, autoincrement=True),
    Column("event_id", String, nullable=False),
    Column("type", String, nullable=False),
    Column("subject", String, nullable=False),
    Column("time", UTCDateTime, nullable=False),
    Column("envelope", JSON, nullable=False),
    Column("published_at", UTCDateTime, nullable=False),
    UniqueConstraint("event_id", name="uq_bus_events_event_id"),
    # Never reuse a seq, even after trimming the newest rows: offsets compare against it.
    sqlite_autoincrement=True,
)

bus_offsets = Table(
    "bus_offsets",
    metadata,
    Column("group_name", String, primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

bus_leases = Table(
    "bus_leases",
    metadata,
    Column("group_name", String, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("consumer", String, nullable=False),
    Column("attempt", BigInteger, nullable=False),
    Column("leased_until", UTCDateTime, nullable=False),
    Index("ix_bus_leases_group_name_leased_until", "group_name", "leased_until"),
)

#: The names of the tables this module defines (the store conformance test checks them all).
TABLE_NAMES: frozenset[str] = frozenset({"bus_events", "bus_offsets", "bus_leases"})
