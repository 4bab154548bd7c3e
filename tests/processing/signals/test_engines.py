"""Edge cases of the freshness and volume engines on hand-built event sequences.

The producers differ: our runner (layers, partitions), observe() and ingested OpenLineage runs
(no layer, sometimes no partition, only rowCount/size). Timestamps are synthetic.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from signalfactory.core.observability import Severity, Signal, SignalState
from signalfactory.core.records import LifecycleEvent, LifecycleEventType
from signalfactory.processing.signals.freshness import judge_freshness
from signalfactory.processing.signals.policy import freshness_policy, volume_policy
from signalfactory.processing.signals.volume import judge_volume

URN = "ds://raw/payments"
START, FAIL, DONE, COMMIT = (
    LifecycleEventType.JOB_RUN_STARTED,
    LifecycleEventType.JOB_RUN_FAILED,
    LifecycleEventType.JOB_RUN_COMPLETED,
    LifecycleEventType.DATASET_WRITE_COMMITTED,
)
# dt=2026-02-15 is due by 2026-02-16 02:00 EST = 07:00 UTC, grace 30m.
DUE = datetime(2026, 2, 16, 7, 30, tzinfo=UTC)


def _policy(partition_key: str | None = "dt") -> Any:
    fresh: dict[str, Any] = {"expected_update_by": "02:00 ET daily", "grace_period": "30m"}
    if partition_key:
        fresh["partition_key"] = partition_key
    return freshness_policy({"slo": {"freshness": fresh}})


def _ev(kind: LifecycleEventType, run: str, at: datetime, **payload: Any) -> LifecycleEvent:
    return LifecycleEvent(kind, run, URN, payload, timestamp=at)


def _judge(events: list[LifecycleEvent], at: datetime, key: str | None = "dt") -> list[Signal]:
    return judge_freshness(
        URN, _policy(key), events, at, not_before=datetime(2026, 2, 15, 12, tzinfo=UTC)
    )


def _one(signals: list[Signal], partition: str | None) -> Signal:
    found = [s for s in signals if s.partition == partition]
    assert len(found) == 1, signals
    return found[0]


def test_openlineage_style_events_without_layer_or_partition() -> None:
    # An ingested OL run: START/COMPLETE with no partition facet, one commit without a layer.
    t0 = datetime(2026, 2, 16, 5, 40, tzinfo=UTC)  # 00:40 EST on the 16th -> dt=2026-02-15
    events = [
        _ev(START, "ol-1", t0),
        _ev(COMMIT, "ol-1", t0 + timedelta(minutes=20), rows_written=10),
        _ev(DONE, "ol-1", t0 + timedelta(minutes=21)),
    ]
    ok = _one(_judge(events, DUE + timedelta(minutes=1)), "dt=2026-02-15")
    assert ok.state is SignalState.OK
    assert ok.run_id == "ol-1"
    assert "on time" in ok.summary


def test_an_earlier_failure_followed_by_a_running_retry_is_not_job_failed() -> None:
    t0 = datetime(2026, 2, 16, 5, 0, tzinfo=UTC)
    part = {"partition": {"dt": "2026-02-15"}}
    events = [
        _ev(START, "a1", t0, **part),
        _ev(FAIL, "a1", t0 + timedelta(minutes=5), failure_reason="OOM", **part),
        _ev(START, "a2", DUE - timedelta(minutes=5), **part),
    ]
    signal = _one(_judge(events, DUE + timedelta(minutes=1)), "dt=2026-02-15")
    assert (signal.signature, signal.severity, signal.run_id) == (
        "JOB_RUNNING_SLOW",
        Severity.WARNING,
        "a2",
    )
    assert signal.details["attempts"] == 2
    # Seen before the retry started, the same partition is JOB_FAILED with the reason.
    failed = _one(_judge(events[:2], DUE + timedelta(minutes=1)), "dt=2026-02-15")
    assert failed.signature == "JOB_FAILED"
    assert "OOM" in failed.summary


def test_layers_committed_without_any_run_event_are_a_partial_write() -> None:
    events = [
        _ev(COMMIT, "x", DUE - timedelta(hours=1), layer="gold", partition_key="dt=2026-02-15")
    ]
    signal = _one(_judge(events, DUE + timedelta(seconds=1)), "dt=2026-02-15")
    assert signal.signature == "PARTIAL_WRITE"
    assert signal.details["layers_committed"] == ["gold"]


def test_events_after_the_evaluation_instant_are_ignored() -> None:
    commit = _ev(
        COMMIT, "r", DUE + timedelta(hours=2), layer="certified", partition_key="dt=2026-02-15"
    )
    signal = _one(_judge([commit], DUE + timedelta(hours=1)), "dt=2026-02-15")
    assert signal.signature == "JOB_NOT_TRIGGERED"
    healed = _one(_judge([commit], DUE + timedelta(hours=3)), "dt=2026-02-15")
    assert healed.state is SignalState.OK
    assert healed.details["late_by_s"] == 9000.0


def test_partitions_due_before_registration_are_not_judged() -> None:
    # Registered at noon on the 15th: dt=2026-02-14 (due 02:00 EST on the 15th) is not judged.
    signals = _judge([], DUE + timedelta(days=1, minutes=1))
    assert {s.partition for s in signals} == {"dt=2026-02-15", "dt=2026-02-16"}
    assert {s.signature for s in signals} == {"JOB_NOT_TRIGGERED"}


def test_a_missed_partition_stays_in_breach_for_the_lookback_then_ages_out() -> None:
    six_days = _judge([], DUE + timedelta(days=6, hours=23))
    assert _one(six_days, "dt=2026-02-15").signature == "JOB_NOT_TRIGGERED"
    eight_days = _judge([], DUE + timedelta(days=8))
    assert all(s.partition != "dt=2026-02-15" for s in eight_days)


def test_judged_as_a_whole_there_is_one_signal_at_a_time() -> None:
    runs = []
    for day in range(8):  # eight ordinary 20-minute runs, 00:40 EST each morning
        t = datetime(2026, 2, 16, 5, 40, tzinfo=UTC) + timedelta(days=day)
        runs += [
            _ev(START, f"r{day}", t),
            _ev(COMMIT, f"r{day}", t + timedelta(minutes=19), rows_written=5),
            _ev(DONE, f"r{day}", t + timedelta(minutes=20)),
        ]
    stuck = datetime(2026, 2, 24, 5, 40, tzinfo=UTC)
    runs.append(_ev(START, "stuck", stuck))
    # Before the stuck run's deadline: yesterday's update is fine, the stuck run is slow.
    slow = _judge(runs, stuck + timedelta(hours=1), key=None)
    assert [(s.signature, s.run_id) for s in slow] == [("JOB_RUNNING_SLOW", "stuck")]
    fine = _judge(runs[:-1], stuck + timedelta(hours=1), key=None)
    assert [(s.signature, s.run_id) for s in fine] == [("OK", "r7")]


def test_without_partition_key_the_dataset_is_judged_as_a_whole() -> None:
    late = _ev(COMMIT, "r", DUE + timedelta(hours=3), layer="certified")
    missed = _judge([], DUE + timedelta(minutes=1), key=None)
    assert [(s.partition, s.signature) for s in missed] == [(None, "JOB_NOT_TRIGGERED")]
    assert "the daily update of ds://raw/payments for 2026-02-15" in missed[0].summary
    healed = _judge([late], DUE + timedelta(hours=4), key=None)
    assert [(s.partition, s.state) for s in healed] == [(None, SignalState.OK)]


# volume


def _commits(
    rows: list[int],
    *,
    layer: str | None = "certified",
    bytes_only: bool = False,
    start: date = date(2026, 2, 1),
) -> list[LifecycleEvent]:
    out = []
    for i, n in enumerate(rows):
        day = start + timedelta(days=i)
        at = datetime(day.year, day.month, day.day, 6, tzinfo=UTC) + timedelta(days=1)
        payload: dict[str, Any] = {"partition_key": f"dt={day}", "bytes_written": n * 100}
        if layer:
            payload["layer"] = layer
        if not bytes_only:
            payload["rows_written"] = n
        out.append(_ev(COMMIT, f"r{i}", at, **payload))
    return out


def _volume(events: list[LifecycleEvent], **slo: Any) -> list[Signal]:
    policy = volume_policy({"slo": {"volume": slo}})
    assert policy is not None
    return judge_volume(URN, policy, events, events[-1].timestamp + timedelta(minutes=1))


def test_a_spike_is_a_warning_and_a_drop_is_critical() -> None:
    steady = [1000, 1010, 990, 1005, 995, 1000, 1002]
    spike = _one(_volume(_commits([*steady, 1600])), "dt=2026-02-08")
    assert (spike.signature, spike.severity, spike.details["direction"]) == (
        "VOLUME_ANOMALY",
        Severity.WARNING,
        "up",
    )
    drop = _one(_volume(_commits([*steady, 500])), "dt=2026-02-08")
    assert (drop.severity, drop.details["direction"]) == (Severity.CRITICAL, "down")
    assert drop.details["baseline_samples"] == 7


def test_both_rules_must_agree() -> None:
    # 30% below a steady baseline: far outside 2 sigma, but under the 40% threshold.
    steady = [1000, 1010, 990, 1005, 995, 1000, 1002]
    assert not _one(_volume(_commits([*steady, 700])), "dt=2026-02-08").breached
    # 50% below a wildly noisy baseline: over the threshold, but inside 2 sigma.
    noisy = [1000, 300, 1900, 400, 1700, 500, 1600]
    assert not _one(_volume(_commits([*noisy, 480])), "dt=2026-02-08").breached


def test_openlineage_commits_with_only_a_size_are_judged_on_bytes() -> None:
    signals = _volume(_commits([1000] * 7 + [400], layer=None, bytes_only=True))
    signal = _one(signals, "dt=2026-02-08")
    assert signal.breached
    assert signal.details["observed_rows"] is None
    assert signal.details["observed_bytes"] == 40_000
    assert "bytes" in signal.summary


def test_short_history_judges_only_the_floor() -> None:
    short = _one(_volume(_commits([1000, 10])), "dt=2026-02-02")
    assert short.state is SignalState.OK
    assert "too short" in short.summary
    floor = _one(_volume(_commits([1000, 10]), min_rows_per_partition=100), "dt=2026-02-02")
    assert floor.breached
    assert floor.details["rule"] == "min_rows"


def test_only_serving_layer_commits_count_and_rewrites_supersede() -> None:
    events = _commits([1000] * 7 + [300])
    events += _commits([300], layer="gold", start=date(2026, 2, 9))  # not the serving layer
    # judged at 2026-02-10 06:01: the 7-day lookback holds dt=2026-02-03 .. dt=2026-02-08
    assert {s.partition for s in _volume(events)} == {f"dt=2026-02-0{i}" for i in range(3, 9)}
    rewrite = _ev(
        COMMIT,
        "fix",
        events[-1].timestamp + timedelta(hours=1),
        layer="certified",
        partition_key="dt=2026-02-08",
        rows_written=990,
    )
    fixed = _one(_volume([*events, rewrite]), "dt=2026-02-08")
    assert fixed.state is SignalState.OK
    assert fixed.run_id == "fix"


def test_the_baseline_holds_the_seven_previous_partitions_whatever_the_commit_second() -> None:
    """Daily commits drift by seconds; the baseline is chosen by partition date, so the one
    seven days back is kept even when today's commit came a little later in the day."""
    steady = [1000, 1010, 990, 1005, 995, 1000, 1002, 1000, 500]
    events = _commits(steady)
    today = events[-1]
    events[-1] = _ev(COMMIT, "r8", today.timestamp + timedelta(seconds=3), **today.payload)
    drop = _one(_volume(events), "dt=2026-02-09")
    assert drop.breached
    assert drop.details["baseline_samples"] == 7
