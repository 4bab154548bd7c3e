"""Detection quality of the freshness and volume engines on generated histories.

Every seeded incident must be detected with the right breach type at the first evaluation
after deadline + grace (JOB_RUNNING_SLOW: after the p95 of past durations), nothing else may
breach (zero false positives over 60 clean days, late-but-in-grace days included), and time
zones and the DST change in America/New_York must be honoured.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from signalfactory.core.observability import Severity, Signal, SignalKind, SignalState
from signalfactory.knowledge import SqlStore, open_store
from signalfactory.processing.signals.evaluate import evaluate_all, record_signals
from signalfactory.processing.signals.freshness import SLOW_FACTOR

from .histories import (
    JOB_FAILED,
    LOW_ROWS,
    NOT_TRIGGERED,
    PARTIAL_WRITE,
    RUNNING_SLOW,
    STRONG_WEEK,
    VOLUME_DROP,
    History,
    HistorySpec,
    Replay,
    SeededIncident,
    generate,
    grid,
    p95,
    write,
)

STEP = timedelta(minutes=10)
# Grid points are 3 minutes off the hour so no evaluation lands exactly on a deadline.
ORIGIN = datetime(2026, 1, 1, 0, 3, tzinfo=UTC)

ORDERS = HistorySpec(
    urn="ds://curated/orders",
    start=date(2026, 2, 1),
    days=45,
    incidents={
        date(2026, 2, 10): NOT_TRIGGERED,
        date(2026, 2, 15): JOB_FAILED,
        date(2026, 2, 18): RUNNING_SLOW,
        date(2026, 2, 24): PARTIAL_WRITE,
        date(2026, 3, 4): VOLUME_DROP,
        date(2026, 3, 9): NOT_TRIGGERED,  # the week clocks went forward (2026-03-08)
    },
    late_in_grace=frozenset({date(2026, 2, 5), date(2026, 2, 20), date(2026, 3, 7)}),
    seed=11,
)
SEASONAL = HistorySpec(
    urn="ds://web/sessions_seasonal",
    start=date(2026, 1, 5),
    days=60,
    expected_update_by="06:30 Europe/Berlin daily",
    zone="Europe/Berlin",
    local_deadline=datetime(2026, 1, 1, 6, 30).time(),
    grace=timedelta(hours=1),
    grace_text="1h",
    week=STRONG_WEEK,
    noise=0.04,
    late_in_grace=frozenset({date(2026, 1, 20), date(2026, 2, 11)}),
    volume={"anomaly_threshold_pct": 40, "seasonality": "day_of_week"},
    seed=23,
)
# The same strongly seasonal series judged without seasonality.
PLAIN = replace(SEASONAL, urn="ds://web/sessions_plain", volume={})
REFUNDS = HistorySpec(
    urn="ds://curated/refunds",
    start=date(2026, 2, 1),
    days=21,
    expected_update_by="23:00 PT daily",
    zone="America/Los_Angeles",
    local_deadline=datetime(2026, 1, 1, 23, 0).time(),
    grace=timedelta(minutes=45),
    grace_text="45m",
    incidents={date(2026, 2, 17): LOW_ROWS},
    volume={"min_rows_per_partition": 50_000, "anomaly_threshold_pct": 90},
    low_rows=40_000,
    seed=5,
)


@pytest.fixture(scope="module")
def histories() -> dict[str, History]:
    return {h.spec.urn: h for h in map(generate, (ORDERS, SEASONAL, PLAIN, REFUNDS))}


@pytest.fixture(scope="module")
def store(
    tmp_path_factory: pytest.TempPathFactory, histories: dict[str, History]
) -> Iterator[SqlStore]:
    path: Path = tmp_path_factory.mktemp("signals") / "sf.db"
    opened = open_store(f"sqlite:///{path}")
    try:
        for history in histories.values():
            write(opened, history)
        yield opened
    finally:
        opened.close()


def _on_grid(start: datetime, stop: datetime) -> list[datetime]:
    first = ORIGIN + STEP * -(-(start - ORIGIN) // STEP)
    return grid(first, stop, STEP)


def _of(signals: list[Signal], kind: SignalKind, partition: str) -> Signal | None:
    found = [s for s in signals if s.kind is kind and s.partition == partition]
    assert len(found) <= 1, found
    return found[0] if found else None


def _first_breach(
    replay: Replay, kind: SignalKind, partition: str, start: datetime, stop: datetime
) -> tuple[datetime, Signal]:
    for at in _on_grid(start, stop):
        signal = _of(replay.signals(at), kind, partition)
        if signal is not None and signal.breached:
            return at, signal
    raise AssertionError(f"no {kind} breach of {partition} between {start} and {stop}")


@pytest.mark.parametrize(
    ("day", "signature"),
    [
        (date(2026, 2, 10), "JOB_NOT_TRIGGERED"),
        (date(2026, 2, 15), "JOB_FAILED"),
        (date(2026, 2, 24), "PARTIAL_WRITE"),
        (date(2026, 3, 9), "JOB_NOT_TRIGGERED"),
    ],
)
def test_seeded_miss_detected_at_first_evaluation_after_deadline_plus_grace(
    histories: dict[str, History], day: date, signature: str
) -> None:
    history = histories[ORDERS.urn]
    seeded = next(i for i in history.incidents if i.day == day)
    due = seeded.deadline + ORDERS.grace
    at, signal = _first_breach(
        Replay(history),
        SignalKind.FRESHNESS,
        seeded.partition,
        due - timedelta(hours=4),
        due + timedelta(hours=2),
    )
    assert due < at <= due + STEP
    assert signal.signature == signature
    assert signal.severity is Severity.CRITICAL
    assert signal.run_id == seeded.run_id
    assert f"partition dt={day}" in signal.summary
    assert ORDERS.urn in signal.summary
    assert signal.details["deadline"] == seeded.deadline.isoformat().replace("+00:00", "Z")


def test_running_slow_detected_once_past_the_p95_margin_before_the_deadline(
    histories: dict[str, History],
) -> None:
    history = histories[ORDERS.urn]
    seeded = history.incident(RUNNING_SLOW)
    assert seeded.started_at is not None
    past = [
        d
        for end, d in history.completed
        if seeded.started_at - timedelta(days=30) <= end < seeded.started_at
    ]
    threshold = seeded.started_at + timedelta(seconds=p95(past) * SLOW_FACTOR)
    at, signal = _first_breach(
        Replay(history),
        SignalKind.FRESHNESS,
        seeded.partition,
        seeded.started_at,
        seeded.deadline + timedelta(hours=3),
    )
    assert threshold < at <= threshold + STEP
    assert at < seeded.deadline  # early warning, before the data is even due
    assert (signal.signature, signal.severity) == ("JOB_RUNNING_SLOW", Severity.WARNING)
    assert signal.run_id == seeded.run_id
    # Still running past deadline + grace: still JOB_RUNNING_SLOW; OK once it commits.
    replay = Replay(history)
    later = _of(
        replay.signals(seeded.deadline + ORDERS.grace + STEP),
        SignalKind.FRESHNESS,
        seeded.partition,
    )
    assert later is not None
    assert later.signature == "JOB_RUNNING_SLOW"
    done = history.certified_at[seeded.day] + timedelta(minutes=1)
    healed = _of(replay.signals(done), SignalKind.FRESHNESS, seeded.partition)
    assert healed is not None
    assert healed.state is SignalState.OK


def test_volume_drop_detected_at_the_first_evaluation_after_its_commit(
    histories: dict[str, History],
) -> None:
    history = histories[ORDERS.urn]
    seeded = history.incident(VOLUME_DROP)
    assert seeded.committed_at is not None
    replay = Replay(history)
    before = _of(
        replay.signals(seeded.committed_at - timedelta(seconds=1)),
        SignalKind.VOLUME,
        seeded.partition,
    )
    assert before is None
    at, signal = _first_breach(
        replay,
        SignalKind.VOLUME,
        seeded.partition,
        seeded.committed_at,
        seeded.committed_at + timedelta(hours=1),
    )
    assert seeded.committed_at < at <= seeded.committed_at + STEP
    assert (signal.signature, signal.severity) == ("VOLUME_ANOMALY", Severity.CRITICAL)
    assert signal.details["direction"] == "down"
    assert signal.details["deviation_pct"] < -40
    assert signal.details["rule"] == "baseline"
    assert "below the 7-day baseline" in signal.summary


def test_min_rows_breach_regardless_of_the_baseline(histories: dict[str, History]) -> None:
    history = histories[REFUNDS.urn]
    seeded = history.incident(LOW_ROWS)
    assert seeded.committed_at is not None
    signal = _of(
        Replay(history).signals(seeded.committed_at + STEP), SignalKind.VOLUME, seeded.partition
    )
    assert signal is not None
    assert signal.breached
    assert signal.details["rule"] == "min_rows"
    assert signal.details["below_min_rows"]
    assert signal.details["observed_rows"] == 40_000
    assert signal.severity is Severity.CRITICAL
    assert "below min_rows_per_partition 50,000" in signal.summary


def _instants(history: History, step: timedelta) -> list[datetime]:
    """Every instant at which a signal can change, plus a regular grid.

    Signals change only when an event arrives (just after it), when a partition falls due
    (just after deadline + grace) or when a running job passes its p95; a breach then lasts
    until the next event, so the instants just before each event see it too.
    """
    spec = history.spec
    tick = timedelta(microseconds=1)
    points = {t for e in history.events for t in (e.timestamp - tick, e.timestamp + tick)}
    for i in range(spec.days + 1):
        points.add(history.deadline(spec.start + timedelta(days=i)) + spec.grace + tick)
    start = history.deadline(spec.start) - timedelta(hours=6)
    stop = history.deadline(spec.start + timedelta(days=spec.days - 1)) + timedelta(hours=6)
    points.update(grid(start, stop, step))
    return sorted(p for p in points if start <= p <= stop)


def _breaches(history: History, step: timedelta) -> set[tuple[str, str | None]]:
    replay = Replay(history)
    found: set[tuple[str, str | None]] = set()
    for at in _instants(history, step):
        found |= {(s.signature, s.partition) for s in replay.signals(at) if s.breached}
    return found


def test_only_the_seeded_incidents_breach_over_the_whole_history(
    histories: dict[str, History],
) -> None:
    history = histories[ORDERS.urn]
    expected = {
        (i.kind.replace(VOLUME_DROP, "VOLUME_ANOMALY"), i.partition) for i in history.incidents
    }
    assert _breaches(history, timedelta(hours=2)) == expected


def test_zero_false_positives_over_60_clean_days_with_seasonality(
    histories: dict[str, History],
) -> None:
    history = histories[SEASONAL.urn]
    assert history.incidents == []
    assert len(history.certified_at) == 60
    assert _breaches(history, timedelta(hours=2)) == set()


def test_without_seasonality_the_strongly_seasonal_series_false_alarms(
    histories: dict[str, History],
) -> None:
    found = _breaches(histories[PLAIN.urn], timedelta(hours=6))
    assert found  # quiet weekend days look like drops against a plain 7-day baseline
    weekdays = {date.fromisoformat(p.removeprefix("dt=")).weekday() for _, p in found if p}
    assert {sig for sig, _ in found} == {"VOLUME_ANOMALY"}
    assert 6 in weekdays
    assert weekdays <= {5, 6}


def test_late_but_within_grace_is_never_flagged(histories: dict[str, History]) -> None:
    for spec in (ORDERS, SEASONAL):
        history = histories[spec.urn]
        replay = Replay(history)
        for day in spec.late_in_grace:
            deadline = history.deadline(day)
            committed = history.certified_at[day]
            assert deadline < committed <= deadline + spec.grace  # really late, in grace
            for at in _on_grid(deadline - timedelta(hours=2), deadline + timedelta(hours=3)):
                signal = _of(replay.signals(at), SignalKind.FRESHNESS, f"dt={day}")
                assert signal is None or not signal.breached, (at, signal)
            ok = _of(
                replay.signals(deadline + spec.grace + STEP), SignalKind.FRESHNESS, f"dt={day}"
            )
            assert ok is not None
            assert ok.details["late_by_s"] > 0
            assert "late but within grace" in ok.summary


def test_deadlines_follow_the_zone_and_its_dst_change(histories: dict[str, History]) -> None:
    replay = Replay(histories[ORDERS.urn])
    # 02:00 in New York is 07:00 UTC in winter and 06:00 UTC once clocks went forward on
    # 2026-03-08; on that morning 02:00 does not exist and the deadline is the jump (07:00Z).
    cases = {
        datetime(2026, 2, 20, 12, tzinfo=UTC): {"dt=2026-02-14": "2026-02-15T07:00:00Z"},
        datetime(2026, 3, 12, 12, tzinfo=UTC): {
            "dt=2026-03-06": "2026-03-07T07:00:00Z",
            "dt=2026-03-07": "2026-03-08T07:00:00Z",
            "dt=2026-03-08": "2026-03-09T06:00:00Z",
            "dt=2026-03-09": "2026-03-10T06:00:00Z",
        },
    }
    for at, expected in cases.items():
        signals = replay.signals(at)
        for partition, deadline in expected.items():
            signal = _of(signals, SignalKind.FRESHNESS, partition)
            assert signal is not None
            assert signal.details["deadline"] == deadline
    missed = _of(signals, SignalKind.FRESHNESS, "dt=2026-03-09")
    assert missed is not None
    assert "2026-03-10 02:00 EDT (+30m grace)" in missed.summary
    berlin = Replay(histories[SEASONAL.urn]).signals(datetime(2026, 2, 20, 12, tzinfo=UTC))
    signal = _of(berlin, SignalKind.FRESHNESS, "dt=2026-02-15")
    assert signal is not None
    assert signal.details["deadline"] == "2026-02-16T05:30:00Z"


def test_end_to_end_through_the_store(store: SqlStore, histories: dict[str, History]) -> None:
    seeded: SeededIncident = histories[ORDERS.urn].incident(JOB_FAILED)
    due = seeded.deadline + ORDERS.grace
    before = evaluate_all(store, due - timedelta(minutes=1), datasets=[ORDERS.urn])
    after = evaluate_all(store, due + timedelta(minutes=1), datasets=[ORDERS.urn])
    assert _of(before, SignalKind.FRESHNESS, seeded.partition) is None
    failed = _of(after, SignalKind.FRESHNESS, seeded.partition)
    assert failed is not None
    assert failed.signature == "JOB_FAILED"
    assert "ConnectionError: s3 503" in failed.summary
    # The store-backed evaluation agrees with the pure replay at the same instant.
    replayed = Replay(histories[ORDERS.urn]).signals(due + timedelta(minutes=1))

    def key(s: Signal) -> tuple[str, str, str | None, str]:
        return (s.dataset_urn, str(s.kind), s.partition, s.signature)

    assert sorted(map(key, after)) == sorted(map(key, replayed))
    stored = record_signals(store, after)
    assert failed in stored
    assert store.latest_signal(ORDERS.urn, SignalKind.FRESHNESS, seeded.partition) == failed
