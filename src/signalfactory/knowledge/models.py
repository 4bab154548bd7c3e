"""Tables of the knowledge plane (SQLAlchemy Core, portable across SQLite and PostgreSQL).

The schema itself is created by the hand-written Alembic migrations in ``migrations/``; these
``Table`` objects only describe it for queries and must stay in step with the migrations.

Conventions:

* every timestamp is a :class:`UTCDateTime`: stored as UTC and always read back tz-aware UTC;
* mappings and lists live in plain ``JSON`` columns (plain ``JSON`` rather than ``JSONB`` on
  PostgreSQL so that key order survives the round trip);
* ``to_row``/``from_row`` convert between records and rows field by field, so every field of
  every record round-trips (``partition`` is stored as ``partition_values`` and
  ``QuarantineRecord.rows`` as ``row_count``);
* append-only tables (``transitions``, ``evidence``, ``lifecycle_events``, ``quarantine``),
  ``runs``, ``checkpoints`` and ``dead_letters`` have an autoincrement ``seq`` primary key that
  gives insertion order;
* the runtime tables (``checkpoints``, ``run_progress``, ``dead_letters``, ``run_leases``) come
  from migration ``0002``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Mapping
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from signalfactory.core.records import StageTiming

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that stores UTC and returns tz-aware UTC on every backend.

    SQLite keeps no offset, so values are converted to UTC before they are written and
    naive values read back are marked as UTC. Naive values given on write are taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else to_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else to_utc(value)


def to_utc(value: datetime) -> datetime:
    """The same instant as tz-aware UTC; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _seq() -> TypeEngine[int]:
    # SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
    return BigInteger().with_variant(Integer(), "sqlite")


metadata = MetaData()

datasets = Table(
    "datasets",
    metadata,
    Column("urn", String, primary_key=True),
    Column("owner_team", String, nullable=False),
    Column("tier", String, nullable=False),
    Column("spec", JSON, nullable=False),
    Column("policy", JSON, nullable=False),
    Column("source_files", JSON, nullable=False),
    Column("registered_at", UTCDateTime, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("seq", _seq(), primary_key=True, autoincrement=True),
    Column("run_id", String, nullable=False),
    Column("pipeline", String, nullable=False),
    Column("dataset_urn", String, nullable=False),
    Column("partition_values", JSON, nullable=False),
    Column("status", String, nullable=False),
    Column("idempotency_key", String, nullable=False),
    Column("engine", String, nullable=False),
    Column("chunk_size", BigInteger, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("certification_status", String, nullable=False),
    Column("certified_version", BigInteger, nullable=True),
    Column("rows_read", BigInteger, nullable=False),
    Column("rows_written", BigInteger, nullable=False),
    Column("rows_quarantined", BigInteger, nullable=False),
    Column("rows_dropped", BigInteger, nullable=False),
    Column("quarantine_table", String, nullable=True),
    Column("stages", JSON, nullable=False),
    Column("error", Text, nullable=True),
    Column("reconciliation", JSON, nullable=False),
    UniqueConstraint("run_id", name="uq_runs_run_id"),
    Index("ix_runs_dataset_urn", "dataset_urn"),
    Index("ix_runs_idempotency_key", "idempotency_key"),
    Index("ix_runs_started_at", "started_at"),
)

transitions = Table(
    "transitions",
    metadata,
    Column("seq", _seq(), primary_key=True, autoincrement=True),
    Column("subject", String, nullable=False),
    Column("from_status", String, nullable=True),
    Column("to_status", String, nullable=False),
    Column("actor", String, nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index("ix_transitions_subject", "subject"),
)

evidence = Table(
    "evidence",
    metadata,
    Column("seq", _seq(), primary_key=True, autoincrement=True),
    Column("evidence_id", String, nullable=False),
    Column("dataset_urn", String, nullable=False),
    Column("run_id", String, nullable=False),
    Column("stage", String, nullable=False),
    Column("gate", String, nullable=False),
    Column("result", String, nullable=False),
    Column("failure_signature", Text, nullable=True),
    Column("failure_signatures", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("context", JSON, nullable=False),
    Column("timestamp", UTCDateTime, nullable=False),
    UniqueConstraint("evidence_id", name="uq_evidence_evidence_id"),
    Index("ix_evidence_run_id", "run_id"),
    Index("ix_evidence_dataset_urn", "dataset_urn"),
)

lifecycle_events = Table(
    "lifecycle_events",
    metadata,
    Column("seq", _seq(), primary_key=True, autoincrement=True),
    Column("event_id", String, nullable=False),
    Column("event_type", String, nullable=False),
    Column("run_id", String, nullable=False),
    Column("dataset_urn", String, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("timestamp", UTCDateTime, nullable=False),
    UniqueConstraint("event_id", name="uq_lifecycle_events_event_id"),
    Index("ix_lifecycle_events_run_id", "run_id"),
    Index("ix_lifecycle_events_dataset_urn", "dataset_urn"),
)

certification = Table(
    "certification",
    metadata,
    Column("dataset_urn", String, primary_key=True),
    Column("certification_status", String, nullable=False),
    Column("certified_version", BigInteger, nullable=True),
    Column("last_certified_at", UTCDateTime, nullable=True),
    Column("last_run_id", String, nullable=True),
    Column("path", Text, nullable=False),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("seq", _seq(), primary_key=True, autoincrement=True),
    Column("quarantine_id", String, nullable=False),
    Column("dataset_urn", String, nullable=False),
    Column("run_id", String, nullable=False),
    Column("stage", String, nullable=False),
    Column("table_name", String, nullable=False),
    Column("path", Text, nullable=False),
    Column("row_count", BigInteger, nullable=False),
    Column("batch_level", Boolean, nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("partition_values", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("quarantine_id", name="uq_quarantine_quarantine_id"),
    Index("ix_quarantine_dataset_urn", "dataset_urn"),
    Index("ix_quarantine_run_id", "run_id"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("seq", _seq(), primary_key=True, autoincrement=True),
    Column("run_id", String, nullable=False),
    Column("chunk_index", BigInteger, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Its index also serves "WHERE run_id = ? ORDER BY chunk_index": no run_id index needed.
    UniqueConstraint("run_id", "chunk_index", name="uq_checkpoints_run_id_chunk_index"),
)

run_progress = Table(
    "run_progress",
    metadata,
    Column("run_id", String, primary_key=True),
    Column("chunks_done", BigInteger, nullable=False),
    Column("chunks_total", BigInteger, nullable=True),
    Column("rows_done", BigInteger, nullable=False),
    Column("rows_total", BigInteger, nullable=True),
    Column("bytes_done", BigInteger, nullable=False),
    Column("bytes_total", BigInteger, nullable=True),
    Column("rows_per_s", Double, nullable=False),
    Column("eta_s", Double, nullable=True),
    Column("rss_mb", Double, nullable=False),
    Column("cpu_pct", Double, nullable=False),
    Column("phase", String, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("seq", _seq(), primary_key=True, autoincrement=True),
    Column("dead_letter_id", String, nullable=False),
    Column("run_id", String, nullable=False),
    Column("dataset_urn", String, nullable=False),
    Column("chunk_index", BigInteger, nullable=False),
    Column("correlation_id", String, nullable=False),
    Column("error_type", String, nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", BigInteger, nullable=False),
    Column("payload_sample", JSON, nullable=False),
    Column("status", String, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("dead_letter_id", name="uq_dead_letters_dead_letter_id"),
    Index("ix_dead_letters_run_id", "run_id"),
    Index("ix_dead_letters_dataset_urn", "dataset_urn"),
    Index("ix_dead_letters_status", "status"),
)

run_leases = Table(
    "run_leases",
    metadata,
    Column("idempotency_key", String, primary_key=True),
    Column("run_id", String, nullable=False),
    Column("owner", String, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
)


# records <-> rows

_COLUMN_OF = {"partition": "partition_values", "rows": "row_count"}


def json_ready(value: Any) -> Any:
    """A JSON-ready copy: mappings become dicts, tuples lists, datetimes ISO-8601 UTC strings.

    Non-finite floats (NaN, ±inf) become ``None``: JSON has no spelling for them.
    """
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return to_utc(value).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _stage_dict(stage: StageTiming) -> dict[str, Any]:
    return {
        "name": stage.name,
        "started_at": json_ready(stage.started_at),
        "finished_at": json_ready(stage.finished_at),
        "rows_in": stage.rows_in,
        "rows_out": stage.rows_out,
    }


def _stage(data: Mapping[str, Any]) -> StageTiming:
    return StageTiming(
        name=data["name"],
        started_at=to_utc(datetime.fromisoformat(data["started_at"])),
        finished_at=to_utc(datetime.fromisoformat(data["finished_at"])),
        rows_in=int(data["rows_in"]),
        rows_out=int(data["rows_out"]),
    )


def to_row(record: DataclassInstance) -> dict[str, Any]:
    """Column values for one record: enums as their value, mappings and tuples as JSON."""
    row: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if f.name == "stages":
            value = [_stage_dict(s) for s in value]
        elif isinstance(value, StrEnum):
            value = str(value)
        elif isinstance(value, Mapping | tuple):
            value = json_ready(value)
        row[_COLUMN_OF.get(f.name, f.name)] = value
    return row


@functools.cache
def _hints(cls: type[DataclassInstance]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_row(cls: type[R], row: Mapping[Any, Any]) -> R:
    """The record of type ``cls`` stored in ``row`` (the inverse of :func:`to_row`)."""
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        value = row[_COLUMN_OF.get(f.name, f.name)]
        hint = hints[f.name]
        if f.name == "stages":
            value = tuple(_stage(s) for s in value)
        elif typing.get_origin(hint) is tuple:
            value = tuple(value)
        elif isinstance(hint, type) and issubclass(hint, StrEnum):
            value = hint(value)
        elif hint is bool:
            value = bool(value)
        values[f.name] = value
    return cls(**values)


# The observability tables live in their own modules on the same ``metadata`` (imported last so
# ``metadata`` exists when they load).
from signalfactory.knowledge import (  # noqa: E402
    models_baselines,
    models_bus,
    models_incidents,
    models_lineage,
    models_signals,
)

#: Every table name the metadata defines, observability modules included.
OBSERVABILITY_TABLES: frozenset[str] = (
    models_bus.TABLE_NAMES
    | models_signals.TABLE_NAMES
    | models_incidents.TABLE_NAMES
    | models_lineage.TABLE_NAMES
    | models_baselines.TABLE_NAMES
)
