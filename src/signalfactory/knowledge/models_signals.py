"""Tables of signal evaluations (migration 0004).

Defined on the shared :data:`signalfactory.knowledge.models.metadata`; imported at the end of
``models.py`` so the metadata always holds every table.

* ``signals``: stored :class:`~signalfactory.core.observability.Signal` values (breaches and
  state changes, see ``processing/signals/evaluate.py``); ``Signal.partition`` is stored as
  ``partition_values`` like every other record's partition.
* an index on ``lifecycle_events (dataset_urn, event_type, timestamp)`` for the engines'
  time-window reads of run history (the table itself comes from migration 0001).
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Index, String, Table, Text, UniqueConstraint

from signalfactory.knowledge.models import UTCDateTime, _seq, lifecycle_events, metadata

signals = Table(
    "signals",
    metadata,
    Column("seq", _seq(), primary_key=True, autoincrement=True),
    Column("signal_id", String, nullable=False),
    Column("dataset_urn", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("state", String, nullable=False),
    Column("signature", Text, nullable=False),
    Column("severity", String, nullable=False),
    Column("evaluated_at", UTCDateTime, nullable=False),
    Column("summary", Text, nullable=False),
    Column("partition_values", String, nullable=True),
    Column("run_id", String, nullable=True),
    Column("details", JSON, nullable=False),
    UniqueConstraint("signal_id", name="uq_signals_signal_id"),
    Index("ix_signals_dataset_urn_kind_evaluated_at", "dataset_urn", "kind", "evaluated_at"),
    Index("ix_signals_evaluated_at", "evaluated_at"),
)

#: Run history by dataset, event type and time (engines read windows of it).
ix_lifecycle_events_dataset_type_time = Index(
    "ix_lifecycle_events_dataset_urn_event_type_timestamp",
    lifecycle_events.c.dataset_urn,
    lifecycle_events.c.event_type,
    lifecycle_events.c.timestamp,
)

#: The names of the tables this module defines (the store conformance test checks them all).
TABLE_NAMES: frozenset[str] = frozenset({"signals"})
