"""Freshness (O2, PRD FR-2): is each daily partition on the serving layer by its deadline?

For every dataset with ``slo.freshness`` and every daily partition due in the last
:data:`LOOKBACK` (so a missed partition stays in breach until it is written), the engine looks
for a commit on the serving layer: ``DatasetWriteCommitted`` with ``layer == "certified"``, or
with no layer at all (external writers: observe() without layers, ingested OpenLineage). When
there is none after deadline + grace it classifies the miss from the run history (PRD table):

* ``JOB_NOT_TRIGGERED`` (CRITICAL): no ``JobRunStarted`` for the partition;
* ``JOB_FAILED`` (CRITICAL): the latest attempt ended with ``JobRunFailed``;
* ``PARTIAL_WRITE`` (CRITICAL): the latest attempt completed (typically after committing
  bronze/silver/gold with certification held) but the serving watermark did not advance; also
  when layers were committed without any ``JobRunStarted`` (writers that emit commits only);
* ``JOB_RUNNING_SLOW`` (WARNING): the latest attempt is still running (intermediate layers
  committed or not; a run that died without ``JobRunFailed`` stays here). It is also raised
  *before* the deadline as soon as a run has been going longer than :data:`SLOW_FACTOR`
  (1.25) times the p95 of the dataset's past run durations (start to ``JobRunCompleted``, at
  least :data:`MIN_DURATIONS` of them in the last 30 days) without committing (the factor
  spares the ~5% of normal runs that exceed their own p95).

Late but within grace is not a breach: a partition is missing only when ``at > deadline +
grace``. A partition committed before it is due yields OK (ending an early slow warning); ones
due before registration (or the first event read, if earlier) or after ``at`` are not judged.

Which partition an event belongs to: its ``partition`` payload (``{"dt": "2026-02-15"}``), or
the ``partition_key`` of a commit (``"dt=2026-02-15"``), or the partition of its run's
``JobRunStarted``; an event without any (OpenLineage runs without partition facets) belongs to
the day whose deadline is nearest to its timestamp. Without ``partition_key`` the dataset is
judged as a whole: only the latest due day, satisfied by a serving commit of that day or later.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from signalfactory.core.observability import Severity, Signal, SignalKind, SignalState
from signalfactory.core.records import LifecycleEvent, LifecycleEventType, iso
from signalfactory.processing.signals.context import EvaluationContext
from signalfactory.processing.signals.policy import FreshnessPolicy, freshness_policy

__all__ = [
    "DURATION_HISTORY",
    "LOOKBACK",
    "MIN_DURATIONS",
    "SERVING_LAYERS",
    "SLOW_FACTOR",
    "evaluate_freshness",
    "judge_freshness",
]

#: How far back due partitions are re-judged on every evaluation.
LOOKBACK = timedelta(days=7)
#: How far back completed runs feed the p95 duration.
DURATION_HISTORY = timedelta(days=30)
#: Fewer past durations than this: no early JOB_RUNNING_SLOW (only once the deadline passed).
MIN_DURATIONS = 5
#: A run is slow once it has gone this many times the p95 of past durations without a commit.
#: At exactly 1.0, about 5% of perfectly normal runs would warn (that is what a p95 means).
SLOW_FACTOR = 1.25
#: Layers whose commit makes a partition fresh; ``None``: a commit that names no layer.
SERVING_LAYERS: frozenset[str | None] = frozenset({"certified", None})

_STARTED = str(LifecycleEventType.JOB_RUN_STARTED)
_FAILED = str(LifecycleEventType.JOB_RUN_FAILED)
_COMPLETED = str(LifecycleEventType.JOB_RUN_COMPLETED)
_COMMITTED = str(LifecycleEventType.DATASET_WRITE_COMMITTED)


@dataclass
class _Attempt:
    run_id: str
    started_at: datetime
    failed_at: datetime | None = None
    failure_reason: str | None = None
    completed_at: datetime | None = None


@dataclass
class _Day:
    attempts: list[_Attempt] = field(default_factory=list)
    serving: list[LifecycleEvent] = field(default_factory=list)
    other_layers: list[str] = field(default_factory=list)


def evaluate_freshness(ctx: EvaluationContext) -> list[Signal]:
    """FRESHNESS signals for every dataset of ``ctx`` that declares ``slo.freshness``."""
    out: list[Signal] = []
    for record in ctx.datasets:
        policy = freshness_policy(record.spec)
        if policy is None:
            continue
        since = ctx.at - LOOKBACK - DURATION_HISTORY - timedelta(days=2)
        events = ctx.store.list_events_between(record.urn, since=since, until=ctx.at)
        # Re-registering resets registered_at: history older than that still counts.
        start = min([record.registered_at, *(e.timestamp for e in events[:1])])
        out.extend(judge_freshness(record.urn, policy, events, ctx.at, not_before=start))
    return out


def judge_freshness(
    urn: str,
    policy: FreshnessPolicy,
    events: Iterable[LifecycleEvent],
    at: datetime,
    *,
    not_before: datetime | None = None,
) -> list[Signal]:
    """The freshness signals of one dataset at ``at`` from its lifecycle events (pure)."""
    seen = [e for e in events if e.timestamp <= at]
    # Only recent events can concern the partitions judged (runs are read a few days back).
    recent_from = at - LOOKBACK - timedelta(days=3)
    days = _by_day(policy, [e for e in seen if e.timestamp >= recent_from])
    durations = _durations(seen, at)
    p95 = _p95(durations) if len(durations) >= MIN_DURATIONS else None
    served = sorted(d for d, day in days.items() if day.serving)
    watermark = served[-1] if served else None
    newest_due = policy.local_date(at - policy.grace) - timedelta(days=1)
    while policy.deadline(newest_due) + policy.grace >= at:
        newest_due -= timedelta(days=1)
    if policy.partition_key is None:
        candidates = [newest_due]
    else:
        oldest = policy.local_date(at - LOOKBACK) - timedelta(days=2)
        candidates = [oldest + timedelta(days=i) for i in range((newest_due - oldest).days + 1)]
    judge = _Judge(urn, policy, at, p95, watermark)
    signals: list[Signal] = []
    for day in candidates:
        due = policy.deadline(day) + policy.grace
        if due < at - LOOKBACK or (not_before is not None and policy.deadline(day) <= not_before):
            continue
        if policy.partition_key is None:
            later = [e for d, v in days.items() if d >= day for e in v.serving]
            info = _Day(days[day].attempts, later, days[day].other_layers)
        else:
            info = days.get(day, _Day())
        signals.append(judge.due(day, info))
    for day in sorted(d for d in days if d > newest_due):
        pending = judge.pending(day, days[day])
        if pending is not None and policy.partition_key is not None:
            signals.append(pending)
        elif pending and pending.breached and not any(s.breached for s in signals):
            signals = [pending]  # judged as a whole: one signal, the most pressing
    return signals


class _Judge:
    """Builds the signal of one day, due or pending, with the figures behind it."""

    def __init__(self, urn: str, policy: FreshnessPolicy, at: datetime, p95: float | None,
                 watermark: date | None) -> None:  # fmt: skip
        self.urn, self.policy, self.at, self.p95 = urn, policy, at, p95
        self.watermark = None if watermark is None else policy.partition_label(watermark)

    def _what(self, day: date) -> str:
        if self.policy.partition_key is None:
            return f"the daily update of {self.urn} for {day.isoformat()}"
        return f"partition {self.policy.partition_label(day)} of {self.urn}"

    def _due_text(self, day: date) -> str:
        grace = f" (+{self.policy.grace_period} grace)" if self.policy.grace else ""
        return f"was due by {self.policy.describe(self.policy.deadline(day))}{grace}"

    def _signal(
        self,
        day: date,
        signature: str,
        severity: Severity,
        summary: str,
        run_id: str | None,
        **details: Any,
    ) -> Signal:
        deadline = self.policy.deadline(day)
        base: dict[str, Any] = {
            "deadline": iso(deadline),
            "deadline_local": self.policy.describe(deadline),
            "expected_update_by": self.policy.expected_update_by,
            "grace_period": self.policy.grace_period,
            "grace_s": self.policy.grace.total_seconds(),
            "watermark": self.watermark,
            "p95_duration_s": self.p95,
        }
        ok = signature == "OK"
        return Signal(
            dataset_urn=self.urn,
            kind=SignalKind.FRESHNESS,
            state=SignalState.OK if ok else SignalState.BREACH,
            signature=signature,
            severity=severity,
            evaluated_at=self.at,
            summary=summary,
            partition=self.policy.partition_key and self.policy.partition_label(day),
            run_id=run_id,
            details={**base, **details},
        )

    def _ok(self, day: date, info: _Day) -> Signal:
        commit = info.serving[0]
        deadline = self.policy.deadline(day)
        late = max(timedelta(0), commit.timestamp - deadline)
        when = self.policy.describe(commit.timestamp)
        summary = f"{self._what(day)} was committed at {when}"
        summary += f", {_span(late)} late but within grace" if late else ", on time"
        return self._signal(
            day,
            "OK",
            Severity.INFO,
            summary,
            commit.run_id,
            committed_at=iso(commit.timestamp),
            late_by_s=late.total_seconds(),
            attempts=len(info.attempts),
        )

    def due(self, day: date, info: _Day) -> Signal:
        if info.serving:
            return self._ok(day, info)
        head = f"{self._what(day)} {self._due_text(day)}"
        n = len(info.attempts)
        if not info.attempts:
            if info.other_layers:
                layers = ", ".join(sorted(set(info.other_layers)))
                return self._signal(
                    day,
                    "PARTIAL_WRITE",
                    Severity.CRITICAL,
                    f"{head}: {layers} committed but the serving layer did not advance "
                    f"(watermark {self.watermark or 'none'})",
                    None,
                    layers_committed=sorted(set(info.other_layers)),
                    attempts=0,
                )
            return self._signal(
                day,
                "JOB_NOT_TRIGGERED",
                Severity.CRITICAL,
                f"{head} and no run started",
                None,
                attempts=0,
            )
        last = info.attempts[-1]
        if last.failed_at is not None:
            reason = f": {last.failure_reason}" if last.failure_reason else ""
            return self._signal(
                day,
                "JOB_FAILED",
                Severity.CRITICAL,
                f"{head}; run {last.run_id} started at {self.policy.describe(last.started_at)} "
                f"and failed at {self.policy.describe(last.failed_at)}{reason}",
                last.run_id,
                started_at=iso(last.started_at),
                failed_at=iso(last.failed_at),
                failure_reason=last.failure_reason,
                attempts=n,
            )
        if last.completed_at is not None:
            written = sorted(set(info.other_layers))
            wrote = f"committed {', '.join(written)}" if written else "completed"
            return self._signal(
                day,
                "PARTIAL_WRITE",
                Severity.CRITICAL,
                f"{head}; run {last.run_id} {wrote} but the serving layer did not advance "
                f"(watermark {self.watermark or 'none'})",
                last.run_id,
                started_at=iso(last.started_at),
                completed_at=None if last.completed_at is None else iso(last.completed_at),
                layers_committed=written,
                attempts=n,
            )
        return self._slow(day, last, n, f"{head}; ")

    def _slow(self, day: date, last: _Attempt, attempts: int, head: str) -> Signal:
        elapsed = self.at - last.started_at
        norm = "" if self.p95 is None else f" (p95 of past runs: {_span(self.p95)})"
        return self._signal(
            day,
            "JOB_RUNNING_SLOW",
            Severity.WARNING,
            f"{head}run {last.run_id} started at {self.policy.describe(last.started_at)} has "
            f"been running for {_span(elapsed)}{norm} and has not committed",
            last.run_id,
            started_at=iso(last.started_at),
            elapsed_s=elapsed.total_seconds(),
            attempts=attempts,
        )

    def pending(self, day: date, info: _Day) -> Signal | None:
        """A partition not yet due: OK once committed, JOB_RUNNING_SLOW past the p95."""
        if info.serving:
            return self._ok(day, info)
        last = info.attempts[-1] if info.attempts else None
        if last is None or self.p95 is None or last.failed_at or last.completed_at:
            return None
        if (self.at - last.started_at).total_seconds() <= self.p95 * SLOW_FACTOR:
            return None
        head = f"{self._what(day)} (due by {self.policy.describe(self.policy.deadline(day))}): "
        return self._slow(day, last, len(info.attempts), head)


def _by_day(policy: FreshnessPolicy, events: Sequence[LifecycleEvent]) -> dict[date, _Day]:
    days: dict[date, _Day] = defaultdict(_Day)
    run_day: dict[str, date] = {}
    attempts: dict[str, _Attempt] = {}
    for e in events:
        own = _own_day(policy, e.payload)
        kind = str(e.event_type)
        if kind == _STARTED:
            day = own or run_day.get(e.run_id) or _nearest_day(policy, e.timestamp)
            run_day[e.run_id] = day
            attempt = _Attempt(e.run_id, e.timestamp)
            attempts[e.run_id] = attempt
            days[day].attempts.append(attempt)
            continue
        day = own or run_day.get(e.run_id) or _nearest_day(policy, e.timestamp)
        if kind == _COMMITTED:
            layer = e.payload.get("layer")
            if layer in SERVING_LAYERS:
                days[day].serving.append(e)
            else:
                days[day].other_layers.append(str(layer))
            continue
        found = attempts.get(e.run_id)
        if found is None:
            continue
        if kind == _FAILED:
            found.failed_at = e.timestamp
            reason = e.payload.get("failure_reason")
            found.failure_reason = None if reason is None else str(reason)[:300]
        elif kind == _COMPLETED:
            found.completed_at = e.timestamp
    for info in days.values():
        info.attempts.sort(key=lambda a: a.started_at)
    return days


def _own_day(policy: FreshnessPolicy, payload: Mapping[str, Any]) -> date | None:
    key = policy.partition_key
    if key is None:
        return None
    value: Any = None
    partition = payload.get("partition")
    if isinstance(partition, Mapping):
        value = partition.get(key)
    text = payload.get("partition_key")
    if value is None and isinstance(text, str):
        for pair in text.split(","):
            name, sep, found = pair.partition("=")
            if sep and name.strip() == key:
                value = found
                break
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        return None


def _nearest_day(policy: FreshnessPolicy, instant: datetime) -> date:
    local = policy.local_date(instant)
    options = [local - timedelta(days=k) for k in (0, 1, 2)]
    return min(options, key=lambda d: abs((instant - policy.deadline(d)).total_seconds()))


def _durations(events: Sequence[LifecycleEvent], at: datetime) -> list[float]:
    starts: dict[str, datetime] = {}
    out: list[float] = []
    for e in events:
        if e.timestamp < at - DURATION_HISTORY:
            continue
        kind = str(e.event_type)
        if kind == _STARTED:
            starts.setdefault(e.run_id, e.timestamp)
        elif kind == _COMPLETED:
            given = e.payload.get("duration")
            if isinstance(given, int | float) and not isinstance(given, bool) and given >= 0:
                out.append(float(given))
            elif e.run_id in starts:
                out.append((e.timestamp - starts[e.run_id]).total_seconds())
    return out


def _p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _span(value: timedelta | float) -> str:
    seconds = int(value.total_seconds() if isinstance(value, timedelta) else value)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m" if minutes else f"{secs}s"
