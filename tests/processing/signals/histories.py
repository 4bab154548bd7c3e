"""Realistic daily run histories, written straight into a real store as lifecycle events.

A :class:`HistorySpec` describes one daily-partitioned dataset: its ``dataset.yaml`` SLOs, a
weekly volume shape, noise, run timing with jitter, late-but-in-grace days and seeded
incidents. :func:`generate` turns it into ``LifecycleEvent`` values with synthetic timestamps
(exactly what our runner emits: JobRunStarted, one DatasetWriteCommitted per layer bronze →
silver → gold → certified, JobRunCompleted) plus a ``DatasetRecord``, and remembers the ground
truth (each seeded incident, each run's duration) for the assertions. Every value comes from a
seeded ``random.Random``.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from signalfactory.core.observability import Signal
from signalfactory.core.records import DatasetRecord, LifecycleEvent, LifecycleEventType
from signalfactory.knowledge.store import SqlStore
from signalfactory.processing.signals.freshness import judge_freshness
from signalfactory.processing.signals.policy import (
    FreshnessPolicy,
    VolumePolicy,
    freshness_policy,
    volume_policy,
)
from signalfactory.processing.signals.volume import judge_volume

STARTED = LifecycleEventType.JOB_RUN_STARTED
FAILED = LifecycleEventType.JOB_RUN_FAILED
COMPLETED = LifecycleEventType.JOB_RUN_COMPLETED
COMMITTED = LifecycleEventType.DATASET_WRITE_COMMITTED
LAYERS = ("bronze", "silver", "gold", "certified")

# Incident kinds a history can seed on a day.
NOT_TRIGGERED = "JOB_NOT_TRIGGERED"
JOB_FAILED = "JOB_FAILED"
RUNNING_SLOW = "JOB_RUNNING_SLOW"
PARTIAL_WRITE = "PARTIAL_WRITE"
VOLUME_DROP = "VOLUME_DROP"  # rows x (1 - drop_pct/100), still committed on time
LOW_ROWS = "LOW_ROWS"  # rows set to low_rows, still committed on time

#: Weekday factors (Monday first): a quiet weekend, and a strongly seasonal shape.
MILD_WEEK = (1.0, 1.02, 1.0, 0.98, 1.05, 0.8, 0.75)
STRONG_WEEK = (1.0, 1.0, 1.05, 1.0, 1.1, 0.45, 0.2)


@dataclass(frozen=True)
class HistorySpec:
    urn: str
    start: date  # first partition
    days: int
    expected_update_by: str = "02:00 ET daily"
    zone: str = "America/New_York"  # the IANA zone the expected time is in (generator side)
    local_deadline: time = time(2, 0)
    grace: timedelta = timedelta(minutes=30)
    grace_text: str = "30m"
    base_rows: int = 100_000
    week: Sequence[float] = MILD_WEEK
    noise: float = 0.05  # relative σ of the daily volume
    run_lead: timedelta = timedelta(minutes=90)  # runs start this long before the deadline
    start_jitter_min: float = 10.0
    duration_min: float = 20.0
    duration_jitter: float = 0.12
    late_in_grace: frozenset[date] = frozenset()
    incidents: Mapping[date, str] = field(default_factory=dict)
    drop_pct: float = 55.0
    low_rows: int = 30_000
    volume: Mapping[str, Any] | None = None
    seed: int = 7


@dataclass(frozen=True)
class SeededIncident:
    kind: str
    day: date
    partition: str
    deadline: datetime  # UTC
    run_id: str | None
    started_at: datetime | None = None
    committed_at: datetime | None = None


@dataclass
class History:
    spec: HistorySpec
    record: DatasetRecord
    events: list[LifecycleEvent]
    incidents: list[SeededIncident]
    #: Duration (seconds) and completion instant of every completed run, in order.
    completed: list[tuple[datetime, float]]
    #: Day -> instant the certified layer was committed (days that committed).
    certified_at: dict[date, datetime]

    def deadline(self, day: date) -> datetime:
        local = datetime.combine(day + timedelta(days=1), self.spec.local_deadline)
        return local.replace(tzinfo=ZoneInfo(self.spec.zone)).astimezone(UTC)

    def incident(self, kind: str) -> SeededIncident:
        return next(i for i in self.incidents if i.kind == kind)


def dataset_yaml(spec: HistorySpec) -> dict[str, Any]:
    slo: dict[str, Any] = {
        "freshness": {
            "expected_update_by": spec.expected_update_by,
            "grace_period": spec.grace_text,
            "partition_key": "dt",
        }
    }
    slo["volume"] = dict(spec.volume or {"anomaly_threshold_pct": 40})
    name = spec.urn.rsplit("/", 1)[-1]
    return {
        "urn": spec.urn,
        "owner_team": "data-platform",
        "tier": "TIER_1",
        "storage": {k: f"s3://lake/{k}/{name}/" for k in ("bronze", "silver", "gold")},
        "slo": slo,
    }


def generate(spec: HistorySpec) -> History:
    rng = random.Random(spec.seed)
    zone = ZoneInfo(spec.zone)
    events: list[LifecycleEvent] = []
    incidents: list[SeededIncident] = []
    completed: list[tuple[datetime, float]] = []
    certified_at: dict[date, datetime] = {}
    first_deadline = None
    for i in range(spec.days):
        day = spec.start + timedelta(days=i)
        local = datetime.combine(day + timedelta(days=1), spec.local_deadline, tzinfo=zone)
        deadline = local.astimezone(UTC)
        first_deadline = first_deadline or deadline
        run_id = f"run_{spec.urn.rsplit('/', 1)[-1]}_{day:%Y%m%d}"
        partition = {"dt": day.isoformat()}
        kind = spec.incidents.get(day)
        duration = timedelta(
            minutes=spec.duration_min * max(0.5, rng.gauss(1.0, spec.duration_jitter))
        )
        start = (
            deadline - spec.run_lead + timedelta(minutes=rng.uniform(-1, 1) * spec.start_jitter_min)
        )
        if day in spec.late_in_grace:
            # Starts late; the certified commit lands after the deadline but inside the grace.
            start = deadline + spec.grace * 0.6 - duration
        factor = spec.week[day.weekday()] * max(0.1, rng.gauss(1.0, spec.noise))
        rows = int(spec.base_rows * factor)
        if kind == VOLUME_DROP:
            rows = int(rows * (1 - spec.drop_pct / 100))
        elif kind == LOW_ROWS:
            rows = spec.low_rows
        if kind == NOT_TRIGGERED:
            incidents.append(SeededIncident(kind, day, f"dt={day}", deadline, None))
            continue

        def ev(kind_: LifecycleEventType, at: datetime, **payload: Any) -> None:
            events.append(
                LifecycleEvent(kind_, run_id, spec.urn, payload, timestamp=at)  # noqa: B023
            )

        ev(STARTED, start, partition=partition, producer_urn="urn:sf:pipeline:p", pipeline="p")
        if kind == JOB_FAILED:
            failed_at = start + duration / 3
            ev(FAILED, failed_at, partition=partition, failure_reason="ConnectionError: s3 503")
            incidents.append(SeededIncident(kind, day, f"dt={day}", deadline, run_id, start))
            continue
        if kind == RUNNING_SLOW:
            # Still running 3 hours later; eventually commits.
            duration = timedelta(hours=3) + spec.grace + spec.run_lead
        written = [
            layer for layer in LAYERS if not (kind == PARTIAL_WRITE and layer == "certified")
        ]
        for n, layer in enumerate(written, start=1):
            at = start + duration * (0.2 + 0.2 * n)  # certified at 0.9 of the duration
            ev(
                COMMITTED,
                at,
                layer=layer,
                partition_key=f"dt={day}",
                rows_written=rows,
                bytes_written=rows * 212 + rng.randint(0, 4000),
                commit_version=i,
                files_added=4,
            )
            if layer == "certified":
                certified_at[day] = at
        end = start + duration
        ev(
            COMPLETED,
            end,
            partition=partition,
            duration=duration.total_seconds(),
            rows_read=rows,
            rows_written=rows if kind != PARTIAL_WRITE else 0,
        )
        completed.append((end, duration.total_seconds()))
        if kind is not None:
            incidents.append(
                SeededIncident(
                    kind, day, f"dt={day}", deadline, run_id, start, certified_at.get(day)
                )
            )
    assert first_deadline is not None
    record = DatasetRecord(
        urn=spec.urn,
        owner_team="data-platform",
        tier="TIER_1",
        spec=dataset_yaml(spec),
        policy={},
        source_files={"dataset.yaml": f"{spec.urn.rsplit('/', 1)[-1]}/dataset.yaml"},
        registered_at=first_deadline - timedelta(hours=12),
    )
    events.sort(key=lambda e: e.timestamp)
    return History(spec, record, events, incidents, completed, certified_at)


def write(store: SqlStore, history: History) -> None:
    """Register the dataset and append its events to the store."""
    store.put_dataset(history.record)
    for event in history.events:
        store.add_event(event)


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile (the definition the freshness engine documents)."""
    ordered = sorted(values)
    rank = -(-95 * len(ordered) // 100)  # ceil(0.95 n)
    return ordered[max(0, rank - 1)]


class Replay:
    """Evaluates the pure engines at any instant over a history's events (no store reads)."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.events = sorted(history.events, key=lambda e: e.timestamp)
        self.times = [e.timestamp for e in self.events]
        fresh, volume = freshness_policy(history.record.spec), volume_policy(history.record.spec)
        assert fresh is not None
        assert volume is not None
        self.freshness: FreshnessPolicy = fresh
        self.volume: VolumePolicy = volume

    def upto(self, at: datetime, span: timedelta = timedelta(days=40)) -> list[LifecycleEvent]:
        lo = bisect.bisect_left(self.times, at - span)
        hi = bisect.bisect_right(self.times, at)
        return self.events[lo:hi]

    def signals(self, at: datetime) -> list[Signal]:
        events = self.upto(at)
        urn = self.history.spec.urn
        out = judge_freshness(
            urn, self.freshness, events, at, not_before=self.history.record.registered_at
        )
        return out + judge_volume(urn, self.volume, events, at)


def grid(start: datetime, stop: datetime, step: timedelta) -> list[datetime]:
    out, t = [], start
    while t <= stop:
        out.append(t)
        t += step
    return out
