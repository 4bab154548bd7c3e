"""Volume (O3, PRD FR-3): rows and bytes per serving-layer commit against a rolling baseline.

Every partition committed on the serving layer (``DatasetWriteCommitted`` with layer
``certified``, or no layer: ingested OpenLineage ``outputStatistics``, observe()) in the last
:data:`LOOKBACK` is judged by its latest commit, against the commits of *other* partitions in
the 7 days before it (latest commit per partition):

* **baseline rule**: a metric (``rows_written``, and ``bytes_written`` when both sides have it)
  is anomalous only when it is outside mean ± 2σ (sample standard deviation) **and** differs
  from the mean by more than ``anomaly_threshold_pct`` (default 40%). Both must agree: the
  σ band alone alarms on very steady series, the percentage alone on very noisy ones. At least
  :data:`MIN_SAMPLES` baseline commits are needed, otherwise only the floor below applies.
* **floor**: fewer rows than ``min_rows_per_partition`` is a breach whatever the baseline.
* **seasonality** (``seasonality: day_of_week``): the baseline is the same weekday (of the
  partition date, else of the commit) over the last ``seasonality_weeks`` weeks (default 4),
  so a quiet Sunday is compared with earlier Sundays.

The signature is always ``VOLUME_ANOMALY`` (stable, so incidents de-duplicate); severity is
CRITICAL for a drop (or a floor breach) and WARNING for a spike. A commit without a partition
key is judged only if it is the dataset's latest such commit (``partition`` is then ``None``).
A past anomalous partition stays in the baseline of later ones (it widens σ for a week).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from signalfactory.core.observability import Severity, Signal, SignalKind, SignalState
from signalfactory.core.records import LifecycleEvent, LifecycleEventType, iso
from signalfactory.processing.signals.context import EvaluationContext
from signalfactory.processing.signals.freshness import SERVING_LAYERS
from signalfactory.processing.signals.policy import VolumePolicy, volume_policy

__all__ = [
    "BASELINE_WINDOW",
    "LOOKBACK",
    "MIN_SAMPLES",
    "SIGMAS",
    "evaluate_volume",
    "judge_volume",
]

#: Partitions committed this far back are (re-)judged on every evaluation.
LOOKBACK = timedelta(days=7)
#: The rolling baseline: commits of other partitions in this window before the judged one.
BASELINE_WINDOW = timedelta(days=7)
#: Baselines with fewer commits than this judge nothing but ``min_rows_per_partition``.
MIN_SAMPLES = 3
#: Width of the σ band.
SIGMAS = 2.0
SIGNATURE = "VOLUME_ANOMALY"
_METRICS = ("rows_written", "bytes_written")


@dataclass(frozen=True, slots=True)
class _Commit:
    partition: str | None
    day: date
    at: datetime
    run_id: str
    values: Mapping[str, float]


def evaluate_volume(ctx: EvaluationContext) -> list[Signal]:
    """VOLUME signals for every dataset of ``ctx`` that declares ``slo.volume``."""
    out: list[Signal] = []
    for record in ctx.datasets:
        policy = volume_policy(record.spec)
        if policy is None:
            continue
        since = ctx.at - LOOKBACK - _span(policy) - timedelta(days=1)
        events = ctx.store.list_events_between(
            record.urn,
            since=since,
            until=ctx.at,
            event_types=[str(LifecycleEventType.DATASET_WRITE_COMMITTED)],
        )
        out.extend(judge_volume(record.urn, policy, events, ctx.at))
    return out


def judge_volume(
    urn: str, policy: VolumePolicy, events: Iterable[LifecycleEvent], at: datetime
) -> list[Signal]:
    """The volume signals of one dataset at ``at`` from its commit events (pure)."""
    commits = [c for e in events if (c := _commit(e, at)) is not None]
    signals: list[Signal] = []
    latest = _latest_per_partition(commits)
    unpartitioned = [c for c in commits if c.partition is None]
    judged = [c for c in latest.values() if c.at >= at - LOOKBACK]
    if unpartitioned and unpartitioned[-1].at >= at - LOOKBACK:
        judged.append(unpartitioned[-1])
    for commit in sorted(judged, key=lambda c: c.at):
        signals.append(_judge(urn, policy, commit, _baseline(policy, commit, commits), at))
    return signals


def _span(policy: VolumePolicy) -> timedelta:
    if policy.seasonality == "day_of_week":
        return timedelta(weeks=policy.seasonality_weeks, days=1)
    return BASELINE_WINDOW


def _commit(event: LifecycleEvent, at: datetime) -> _Commit | None:
    if str(event.event_type) != str(LifecycleEventType.DATASET_WRITE_COMMITTED):
        return None
    if event.timestamp > at or event.payload.get("layer") not in SERVING_LAYERS:
        return None
    values = {
        name: float(v)
        for name in _METRICS
        if isinstance(v := event.payload.get(name), int | float) and not isinstance(v, bool)
    }
    if not values:
        return None
    key = event.payload.get("partition_key")
    partition = str(key) if key else None
    return _Commit(
        partition, _day_of(partition, event.timestamp), event.timestamp, event.run_id, values
    )


def _day_of(partition: str | None, instant: datetime) -> date:
    for pair in (partition or "").split(","):
        _, _, value = pair.partition("=")
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            continue
    return instant.date()


def _latest_per_partition(commits: Sequence[_Commit]) -> dict[str, _Commit]:
    latest: dict[str, _Commit] = {}
    for c in commits:
        if c.partition is not None and (
            c.partition not in latest or c.at >= latest[c.partition].at
        ):
            latest[c.partition] = c
    return latest


def _baseline(policy: VolumePolicy, judged: _Commit, commits: Sequence[_Commit]) -> list[_Commit]:
    span = _span(policy)
    if judged.partition is not None:
        # Partitioned data: the previous partitions by their date (D-7 … D-1 for a daily key),
        # not by commit time, so a commit a few seconds later one day cannot drop a day.
        first = judged.day - timedelta(days=span.days)
        earlier = [
            c
            for c in commits
            if c.at < judged.at and c.partition != judged.partition and first <= c.day < judged.day
        ]
    else:
        start = judged.at - span
        earlier = [c for c in commits if start <= c.at < judged.at and c.partition is None]
    keyed = _latest_per_partition(earlier)
    chosen = list(keyed.values()) + [c for c in earlier if c.partition is None]
    if policy.seasonality == "day_of_week":
        chosen = [c for c in chosen if c.day.weekday() == judged.day.weekday()]
    return sorted(chosen, key=lambda c: c.at)


def _judge(
    urn: str, policy: VolumePolicy, commit: _Commit, baseline: Sequence[_Commit], at: datetime
) -> Signal:
    what = f"partition {commit.partition}" if commit.partition else "the latest commit"
    rows = commit.values.get("rows_written")
    details: dict[str, Any] = {
        "committed_at": iso(commit.at),
        "observed_rows": None if rows is None else int(rows),
        "observed_bytes": _int(commit.values.get("bytes_written")),
        "threshold_pct": policy.anomaly_threshold_pct,
        "sigmas": SIGMAS,
        "seasonality": policy.seasonality,
        "baseline_samples": len(baseline),
        "baseline_partitions": [c.partition for c in baseline],
        "min_rows_per_partition": policy.min_rows_per_partition,
    }
    findings: list[dict[str, Any]] = []
    for metric in _METRICS:
        observed = commit.values.get(metric)
        history = [c.values[metric] for c in baseline if metric in c.values]
        if observed is None or len(history) < MIN_SAMPLES:
            continue
        mean, std = _mean_std(history)
        deviation = (
            (observed - mean) / mean * 100 if mean > 0 else (0.0 if observed == 0 else 100.0)
        )
        outside_band = abs(observed - mean) > SIGMAS * std
        over_threshold = abs(deviation) > policy.anomaly_threshold_pct
        finding = {
            "metric": metric,
            "observed": observed,
            "baseline_mean": mean,
            "baseline_std": std,
            "deviation_pct": round(deviation, 2),
            "direction": "down" if observed < mean else "up",
            "outside_band": outside_band,
            "over_threshold": over_threshold,
        }
        details.setdefault("metrics", []).append(finding)
        if outside_band and over_threshold:
            findings.append(finding)
    floor = policy.min_rows_per_partition
    below_floor = floor is not None and rows is not None and rows < floor
    if not findings and not below_floor:
        summary = f"{what} of {urn} committed {_n(rows)} rows, within its baseline"
        if len(baseline) < MIN_SAMPLES:
            summary = (
                f"{what} of {urn} committed {_n(rows)} rows (baseline of {len(baseline)} "
                f"commits is too short to judge; {MIN_SAMPLES} needed)"
            )
        return _signal(urn, commit, at, SignalState.OK, "OK", Severity.INFO, summary, details)
    if findings:
        main = findings[0]
        details.update(
            rule="baseline",
            baseline_mean=main["baseline_mean"],
            baseline_std=main["baseline_std"],
            deviation_pct=main["deviation_pct"],
            direction=main["direction"],
        )
        unit = "rows" if main["metric"] == "rows_written" else "bytes"
        pct = abs(main["deviation_pct"])
        word = "below" if main["direction"] == "down" else "above"
        basis = "same-weekday" if policy.seasonality else "7-day"
        summary = (
            f"{what} of {urn} committed {_n(main['observed'])} {unit}, {pct:.0f}% {word} the "
            f"{basis} baseline of {_n(main['baseline_mean'])} ± {_n(main['baseline_std'])} "
            f"(mean ± σ of {len(baseline)} commits; threshold {policy.anomaly_threshold_pct:g}%)"
        )
        severity = Severity.CRITICAL if main["direction"] == "down" else Severity.WARNING
    else:
        summary = ""
        severity = Severity.CRITICAL
        details.update(rule="min_rows", direction="down")
    if below_floor:
        floor_text = (
            f"{what} of {urn} committed {_n(rows)} rows, below min_rows_per_partition {_n(floor)}"
        )
        summary = floor_text if not summary else f"{summary}; {floor_text.split(', ', 1)[1]}"
        details["below_min_rows"] = True
        severity = Severity.CRITICAL
    return _signal(urn, commit, at, SignalState.BREACH, SIGNATURE, severity, summary, details)


def _signal(
    urn: str,
    commit: _Commit,
    at: datetime,
    state: SignalState,
    signature: str,
    severity: Severity,
    summary: str,
    details: Mapping[str, Any],
) -> Signal:
    return Signal(
        dataset_urn=urn,
        kind=SignalKind.VOLUME,
        state=state,
        signature=signature,
        severity=severity,
        evaluated_at=at,
        summary=summary,
        partition=commit.partition,
        run_id=commit.run_id,
        details=details,
    )


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1)."""
    mean = math.fsum(values) / len(values)
    var = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _n(value: float | None) -> str:
    return "?" if value is None else f"{value:,.0f}"
