"""Contract-compliance and field-level DQ signals (O5) from real pipeline runs."""

from __future__ import annotations

from factories import DAY1, DAY2, DAY3, Project, day_offset, orders, set_rows
from processing.pipelines import context, run_rolling
from signalfactory.api import SignalFactory
from signalfactory.core.observability import Severity, Signal, SignalKind, SignalState
from signalfactory.processing.signals.compliance import LOW_COMPLIANCE, evaluate_compliance

DAY4 = day_offset(DAY3, 1)
DAYS = (DAY1, DAY2, DAY3, DAY4)


def signals(project: Project, sf: SignalFactory) -> dict[tuple[SignalKind, str], Signal]:
    found = evaluate_compliance(context(sf))
    keyed = {(s.kind, s.signature): s for s in found}
    assert len(keyed) == len(found)
    return keyed


OK_BOTH = {(SignalKind.CONTRACT_COMPLIANCE, "OK"), (SignalKind.DATA_QUALITY, "OK")}


def test_compliance_below_the_threshold_is_critical(project: Project) -> None:
    for i, day in enumerate(DAYS):
        df = orders(1000, seed=i + 1, first_id=100_000 * (i + 1), day=day)
        if day == DAY4:
            df = set_rows(df, range(100, 180), order_total=-1.0)  # 80 rows break an invariant
        project.partition(day, df)
    sf = project.open()
    for day in DAYS[:3]:
        project.run(sf, day)
        found = signals(project, sf)
        assert set(found) == OK_BOTH, f"false positive after {day}"
        assert found[(SignalKind.CONTRACT_COMPLIANCE, "OK")].details["compliance_rate"] == 1.0
        # The non-nullable fields are judged even when none of their values was null; with
        # the baseline roller on, every field of the certified partition is judged too.
        dq = found[(SignalKind.DATA_QUALITY, "OK")].details["null_rates"]
        assert {"customer_id", "order_id", "order_total"} <= set(dq)
        assert set(dq.values()) == {0.0}
    run = project.run(sf, DAY4).run
    found = signals(project, sf)
    assert set(found) == {(SignalKind.CONTRACT_COMPLIANCE, LOW_COMPLIANCE),
                          (SignalKind.DATA_QUALITY, "OK")}  # fmt: skip
    low = found[(SignalKind.CONTRACT_COMPLIANCE, LOW_COMPLIANCE)]
    assert low.state is SignalState.BREACH
    assert low.severity is Severity.CRITICAL
    assert low.details["compliance_rate"] == 0.92
    assert low.details["rows_failed"] == 80
    assert low.details["stage"] == "silver"
    assert low.details["rule"] == "threshold"
    assert low.run_id == run.run_id
    assert low.partition == f"dt={DAY4}"
    assert "92.0%" in low.summary
    assert "INVARIANT:order_total > 0" in low.summary


def test_a_drop_below_the_recent_mean_by_two_sigma_warns(project: Project) -> None:
    bad = {DAY1: 5, DAY2: 10, DAY3: 5, DAY4: 30}  # 99.5%, 99%, 99.5%, then 97% (> 95%)
    for i, (day, n) in enumerate(bad.items()):
        df = orders(1000, seed=i + 1, first_id=100_000 * (i + 1), day=day)
        project.partition(day, set_rows(df, range(n), order_total=-1.0))
    sf = project.open()
    for day in DAYS[:3]:
        project.run(sf, day)
        assert (SignalKind.CONTRACT_COMPLIANCE, "OK") in signals(project, sf), day
    project.run(sf, DAY4)
    low = signals(project, sf)[(SignalKind.CONTRACT_COMPLIANCE, LOW_COMPLIANCE)]
    assert low.severity is Severity.WARNING
    assert low.details["rule"] == "deviation"
    assert low.details["window_runs"] == 3
    assert abs(low.details["window_mean"] - (0.995 + 0.99 + 0.995) / 3) < 1e-9


def test_nulls_in_a_required_field_raise_its_null_rate(project: Project) -> None:
    for i, day in enumerate(DAYS):
        df = orders(1000, seed=i + 1, first_id=100_000 * (i + 1), day=day)
        if day == DAY4:
            df = set_rows(df, range(0, 1000, 12), customer_id=None)  # 84 rows
        project.partition(day, df)
    sf = project.open()
    for day in DAYS[:3]:
        project.run(sf, day)
        assert set(signals(project, sf)) == OK_BOTH, day
    project.run(sf, DAY4)
    found = signals(project, sf)
    nulls = found[(SignalKind.DATA_QUALITY, "NULL_RATE:customer_id")]
    assert nulls.severity is Severity.WARNING
    assert nulls.details["null_rate"] == 84 / 1000
    assert nulls.details["expected"] == 0.0
    assert (SignalKind.CONTRACT_COMPLIANCE, LOW_COMPLIANCE) in found
    assert not any(k for k in found if k[1] == "NULL_RATE:order_id")


def test_nulls_in_a_nullable_field_are_seen_in_the_certified_partition(project: Project) -> None:
    for i, day in enumerate(DAYS):
        df = orders(1000, seed=i + 1, first_id=100_000 * (i + 1), day=day)
        if day == DAY4:
            df = set_rows(df, range(300), country=None)
        project.partition(day, df)
    sf = project.open()
    for day in DAYS[:3]:
        run_rolling(project, sf, day)
        assert set(signals(project, sf)) == OK_BOTH, day
    run_rolling(project, sf, DAY4)
    found = signals(project, sf)
    assert set(found) == {(SignalKind.CONTRACT_COMPLIANCE, "OK"),
                          (SignalKind.DATA_QUALITY, "NULL_RATE:country")}  # fmt: skip
    nulls = found[(SignalKind.DATA_QUALITY, "NULL_RATE:country")]
    assert nulls.details["null_rate"] == 0.3
    assert nulls.details["source"] == "certified partition"
    assert "country" in nulls.summary
    assert "30.0%" in nulls.summary
