"""Immutable domain records. Each maps straight to a store row and to JSON."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

#: The clock every record reads. ``use_clock`` swaps it (demo histories, backfills, tests);
#: a ContextVar so concurrent callers never see each other's simulated time.
_CLOCK: ContextVar[Callable[[], datetime] | None] = ContextVar("signalfactory_clock", default=None)


def utcnow() -> datetime:
    """Now, in UTC, from the clock in effect (the wall clock unless ``use_clock`` set one)."""
    clock = _CLOCK.get()
    return datetime.now(UTC) if clock is None else clock()


@contextmanager
def use_clock(start: datetime) -> Iterator[None]:
    """Within the block ``utcnow()`` starts at ``start`` and advances with the wall clock.

    Used to replay a history of daily runs (the demo, backfill tests) with realistic event
    times; nothing else about a run changes.
    """
    if start.tzinfo is None:
        raise ValueError("use_clock needs a timezone-aware start time")
    offset = start - datetime.now(UTC)
    token = _CLOCK.set(lambda: datetime.now(UTC) + offset)
    try:
        yield
    finally:
        _CLOCK.reset(token)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Stage(StrEnum):
    BRONZE = "bronze"
    SILVER = "silver"
    GOLD = "gold"


class GateResult(StrEnum):
    PASS = "PASS"  # noqa: S105 - not a password
    FAIL = "FAIL"
    WARN = "WARN"


class RunStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    #: Over its time limit: checkpoints kept, re-running the key resumes it.
    TIMED_OUT = "TIMED_OUT"


class CertificationStatus(StrEnum):
    CERTIFIED = "CERTIFIED"
    HELD_AT_PREVIOUS = "HELD_AT_PREVIOUS"
    NOT_EVALUATED = "NOT_EVALUATED"


class LifecycleEventType(StrEnum):
    JOB_RUN_STARTED = "JobRunStarted"
    JOB_RUN_COMPLETED = "JobRunCompleted"
    JOB_RUN_FAILED = "JobRunFailed"
    DATASET_WRITE_COMMITTED = "DatasetWriteCommitted"


def _plain(value: Any) -> Any:
    """Turn enums, datetimes and tuples into JSON-ready values."""
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Evidence:
    """One immutable gate outcome for one run (PRD §13, FR-10).

    ``context`` holds gate-specific top-level fields of the payload, e.g. ``dataset_urn`` for
    G1_RESOLUTION or ``quarantine_table``/``certified_view_status`` for a held run.
    """

    dataset_urn: str
    run_id: str
    stage: Stage
    gate: str
    result: GateResult
    failure_signature: str | None
    metrics: Mapping[str, Any]
    timestamp: datetime
    failure_signatures: tuple[str, ...] = ()
    context: Mapping[str, Any] = field(default_factory=dict)
    evidence_id: str = field(default_factory=lambda: new_id("ev"))

    def to_dict(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "evidence_id": self.evidence_id,
            "dataset_urn": self.dataset_urn,
            "run_id": self.run_id,
            "stage": str(self.stage),
            "gate": self.gate,
            "result": str(self.result),
            "failure_signature": self.failure_signature,
            "failure_signatures": list(self.failure_signatures),
        }
        payload.update(_plain(dict(self.context)))
        payload["metrics"] = _plain(dict(self.metrics))
        payload["timestamp"] = iso(self.timestamp)
        return payload


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """JobRunStarted / JobRunCompleted / JobRunFailed / DatasetWriteCommitted (PRD FR-1)."""

    event_type: LifecycleEventType
    run_id: str
    dataset_urn: str
    payload: Mapping[str, Any]
    timestamp: datetime = field(default_factory=utcnow)
    event_id: str = field(default_factory=lambda: new_id("evt"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": str(self.event_type),
            "run_id": self.run_id,
            "dataset_urn": self.dataset_urn,
            "timestamp": iso(self.timestamp),
            **_plain(dict(self.payload)),
        }


@dataclass(frozen=True, slots=True)
class StageTiming:
    name: str
    started_at: datetime
    finished_at: datetime
    rows_in: int = 0
    rows_out: int = 0

    @property
    def duration_s(self) -> float:
        return round((self.finished_at - self.started_at).total_seconds(), 6)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_s": self.duration_s,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
        }


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A pipeline run as the ledger keeps it."""

    run_id: str
    pipeline: str
    dataset_urn: str
    partition: Mapping[str, str]
    status: RunStatus
    idempotency_key: str
    engine: str
    chunk_size: int
    started_at: datetime
    finished_at: datetime | None = None
    certification_status: CertificationStatus = CertificationStatus.NOT_EVALUATED
    certified_version: int | None = None
    rows_read: int = 0
    rows_written: int = 0
    rows_quarantined: int = 0
    rows_dropped: int = 0
    quarantine_table: str | None = None
    stages: tuple[StageTiming, ...] = ()
    error: str | None = None
    reconciliation: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = [s.to_dict() for s in self.stages]
        return {k: _plain(v) for k, v in data.items()}


@dataclass(frozen=True, slots=True)
class Transition:
    """One append-only entry of the audit trail: who moved what, when and why."""

    subject: str
    from_status: str | None
    to_status: str
    actor: str
    reason: str
    at: datetime = field(default_factory=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class CertificationState:
    """Where a dataset's certified table stands (PRD FR-9)."""

    dataset_urn: str
    certification_status: CertificationStatus
    certified_version: int | None
    last_certified_at: datetime | None
    last_run_id: str | None
    path: str

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    """Rows of one run diverted to a quarantine Delta table (PRD FR-10)."""

    dataset_urn: str
    run_id: str
    stage: Stage
    table_name: str
    path: str
    rows: int
    batch_level: bool
    reasons: Mapping[str, int]
    partition: Mapping[str, str]
    created_at: datetime = field(default_factory=utcnow)
    quarantine_id: str = field(default_factory=lambda: new_id("qr"))

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    """A registered dataset: its dataset.yaml and approved policy bundle, as parsed."""

    urn: str
    owner_team: str
    tier: str
    spec: Mapping[str, Any]
    policy: Mapping[str, Any]
    source_files: Mapping[str, str]
    registered_at: datetime = field(default_factory=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}


class DeadLetterStatus(StrEnum):
    OPEN = "OPEN"
    REPLAYED = "REPLAYED"
    DISCARDED = "DISCARDED"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One completed chunk of a run: enough to skip it on resume (B7).

    ``payload`` holds the chunk's counts, gate tallies and staged file names as JSON.
    """

    run_id: str
    chunk_index: int
    payload: Mapping[str, Any]
    created_at: datetime = field(default_factory=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A chunk or record that kept failing (B8): sample, correlation id, error, attempts."""

    dead_letter_id: str
    run_id: str
    dataset_urn: str
    chunk_index: int
    correlation_id: str
    error_type: str
    error: str
    attempts: int
    payload_sample: Mapping[str, Any]
    status: DeadLetterStatus = DeadLetterStatus.OPEN
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class RunProgress:
    """Live figures of a running run (B9), persisted so another process can read them."""

    run_id: str
    chunks_done: int
    chunks_total: int | None
    rows_done: int
    rows_total: int | None
    bytes_done: int
    bytes_total: int | None
    rows_per_s: float
    eta_s: float | None
    rss_mb: float
    cpu_pct: float
    phase: str
    updated_at: datetime = field(default_factory=utcnow)

    @property
    def percent(self) -> float | None:
        if self.bytes_total:
            return round(100.0 * self.bytes_done / self.bytes_total, 1)
        if self.rows_total:
            return round(100.0 * self.rows_done / self.rows_total, 1)
        return None

    def to_dict(self) -> dict[str, Any]:
        data = {k: _plain(v) for k, v in asdict(self).items()}
        data["percent"] = self.percent
        return data


@dataclass(frozen=True, slots=True)
class RunLease:
    """Who is executing the run of an idempotency key right now (one winner per key)."""

    idempotency_key: str
    run_id: str
    owner: str
    heartbeat_at: datetime = field(default_factory=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}
