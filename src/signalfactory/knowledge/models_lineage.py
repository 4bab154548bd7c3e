"""Tables of the lineage graph (OpenLineage runs, datasets, jobs, edges) (migration 0006).

Defined on the shared :data:`signalfactory.knowledge.models.metadata`; imported at the end of
``models.py`` so the metadata always holds every table.

Node ids use Marquez's form: ``dataset:NAMESPACE:NAME``, ``job:NAMESPACE:NAME`` and, for
failure signatures, ``signature:SIGNATURE``. Our own datasets live in the namespace
``settings.openlineage_namespace`` (``signalfactory``) with their URN as the name.

* ``lineage_nodes``: every dataset, job and failure-signature node;
* ``lineage_runs``: one row per run (the merged state of all its events);
* ``lineage_run_events``: one row per ingested event (the idempotency key of the ingest);
* ``lineage_run_io``: the datasets each run read (``in``) and wrote (``out``);
* ``lineage_edges``: dataset→job (input) and job→dataset (output) with the last run;
* ``lineage_dataset_edges``: the materialised dataset→dataset adjacency (through a job) that
  the recursive traversal walks;
* ``lineage_column_edges``: column lineage (output field ← input field);
* ``lineage_run_signatures``: failure signatures linked to runs.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Index, String, Table, Text

from signalfactory.knowledge.models import UTCDateTime, metadata

lineage_nodes = Table(
    "lineage_nodes",
    metadata,
    Column("node_id", String, primary_key=True),
    Column("kind", String, nullable=False),
    Column("namespace", String, nullable=False),
    Column("name", String, nullable=False),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Index("ix_lineage_nodes_name", "name"),
)

lineage_runs = Table(
    "lineage_runs",
    metadata,
    Column("run_id", String, primary_key=True),
    Column("job_id", String, nullable=False),
    Column("state", String, nullable=False),
    Column("event_time", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("nominal_start", UTCDateTime, nullable=True),
    Column("partition_key", String, nullable=True),
    Column("parent_run_id", String, nullable=True),
    Column("parent_job_id", String, nullable=True),
    Column("error_message", Text, nullable=True),
    Column("producer", String, nullable=False),
    Column("facets", JSON, nullable=False),
    Index("ix_lineage_runs_job_id", "job_id"),
    Index("ix_lineage_runs_parent_run_id", "parent_run_id"),
)

lineage_run_events = Table(
    "lineage_run_events",
    metadata,
    Column("event_key", String, primary_key=True),
    Column("run_id", String, nullable=False),
    Column("event_type", String, nullable=False),
    Column("event_time", UTCDateTime, nullable=False),
    Column("source", String, nullable=False),
    Index("ix_lineage_run_events_run_id", "run_id"),
)

lineage_run_io = Table(
    "lineage_run_io",
    metadata,
    Column("run_id", String, primary_key=True),
    Column("dataset_id", String, primary_key=True),
    Column("direction", String, primary_key=True),
    Column("stats", JSON, nullable=False),
    Index("ix_lineage_run_io_dataset_id", "dataset_id"),
)

lineage_edges = Table(
    "lineage_edges",
    metadata,
    Column("src_id", String, primary_key=True),
    Column("dst_id", String, primary_key=True),
    Column("last_run_id", String, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_lineage_edges_dst_id", "dst_id"),
)

lineage_dataset_edges = Table(
    "lineage_dataset_edges",
    metadata,
    Column("upstream", String, primary_key=True),
    Column("downstream", String, primary_key=True),
    Column("job_id", String, primary_key=True),
    Column("last_run_id", String, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_lineage_dataset_edges_downstream", "downstream"),
)

lineage_column_edges = Table(
    "lineage_column_edges",
    metadata,
    Column("dataset_id", String, primary_key=True),
    Column("field", String, primary_key=True),
    Column("input_dataset_id", String, primary_key=True),
    Column("input_field", String, primary_key=True),
    Column("transformation", Text, nullable=False),
    Column("last_run_id", String, nullable=False),
    Index("ix_lineage_column_edges_input_dataset_id", "input_dataset_id"),
)

lineage_run_signatures = Table(
    "lineage_run_signatures",
    metadata,
    Column("run_id", String, primary_key=True),
    Column("signature_id", String, primary_key=True),
    Column("dataset_id", String, nullable=True),
    Column("source", String, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index("ix_lineage_run_signatures_signature_id", "signature_id"),
)

#: The names of the tables this module defines (the store conformance test checks them all).
TABLE_NAMES: frozenset[str] = frozenset(
    {
        "lineage_nodes",
        "lineage_runs",
        "lineage_run_events",
        "lineage_run_io",
        "lineage_edges",
        "lineage_dataset_edges",
        "lineage_column_edges",
        "lineage_run_signatures",
    }
)
