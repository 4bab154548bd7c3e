"""Tables of incidents, alert deliveries and deployments (migration 0005).

Defined on the shared :data:`signalfactory.knowledge.models.metadata`; imported at the end of
``models.py`` so the metadata always holds every table.

* ``incidents``: every field of :class:`~signalfactory.core.observability.Incident`
  (``partition`` stored as ``partition_values``, like every record), plus ``dedup_key``
  (dataset|kind|signature, indexed) and ``open_key``: the dedup key while the incident is
  OPEN and NULL once resolved. Its unique constraint makes "at most one open incident per
  dataset and cause" a fact of the schema, even with two evaluators racing (NULLs never clash).
* ``alert_deliveries``: one row per attempt to hand one incident event to one sink.
* ``deployments``: ``signalfactory deploy record`` events, candidate causes for RCA.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, String, Table, Text, UniqueConstraint

from signalfactory.knowledge.models import UTCDateTime, _seq, metadata

incidents = Table(
    "incidents",
    metadata,
    Column("incident_id", String, primary_key=True),
    Column("dedup_key", Text, nullable=False),
    Column("open_key", Text, nullable=True),
    Column("dataset_urn", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("signature", Text, nullable=False),
    Column("severity", String, nullable=False),
    Column("status", String, nullable=False),
    Column("opened_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("summary", Text, nullable=False),
    Column("signal_ids", JSON, nullable=False),
    Column("partition_values", String, nullable=True),
    Column("run_id", String, nullable=True),
    Column("owner_team", String, nullable=True),
    Column("blast_radius", JSON, nullable=False),
    Column("resolved_at", UTCDateTime, nullable=True),
    UniqueConstraint("open_key", name="uq_incidents_open_key"),
    Index("ix_incidents_dedup_key", "dedup_key"),
    Index("ix_incidents_status", "status"),
    Index("ix_incidents_dataset_urn", "dataset_urn"),
)

alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("seq", _seq(), primary_key=True, autoincrement=True),
    Column("delivery_id", String, nullable=False),
    Column("incident_id", String, nullable=False),
    Column("sink", String, nullable=False),
    Column("event", String, nullable=False),
    Column("severity", String, nullable=False),
    Column("status", String, nullable=False),
    Column("attempts", BigInteger, nullable=False),
    Column("error", Text, nullable=True),
    Column("at", UTCDateTime, nullable=False),
    UniqueConstraint("delivery_id", name="uq_alert_deliveries_delivery_id"),
    Index("ix_alert_deliveries_incident_id", "incident_id"),
)

deployments = Table(
    "deployments",
    metadata,
    Column("deployment_id", String, primary_key=True),
    Column("deploy_ref", String, nullable=False),
    Column("pipeline", String, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("actor", String, nullable=False),
    Column("note", Text, nullable=True),
    Index("ix_deployments_pipeline", "pipeline"),
    Index("ix_deployments_recorded_at", "recorded_at"),
)

#: The names of the tables this module defines (the store conformance test checks them all).
TABLE_NAMES: frozenset[str] = frozenset({"incidents", "alert_deliveries", "deployments"})
