"""Parsing the freshness and volume SLOs of dataset.yaml, and their ConfigErrors."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest

from signalfactory.core.errors import ConfigError
from signalfactory.processing.signals.policy import (
    freshness_policy,
    parse_duration,
    volume_policy,
)


def _spec(**slo: Any) -> dict[str, Any]:
    return {"urn": "ds://curated/x", "slo": slo}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(minutes=90)),
        ("0m", timedelta(0)),
        (" 2H ", timedelta(hours=2)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text, "k") == expected


def test_the_prd_example_parses() -> None:
    policy = freshness_policy(
        _spec(
            freshness={
                "expected_update_by": "02:00 ET daily",
                "grace_period": "30m",
                "partition_key": "dt",
            }
        )
    )
    assert policy is not None
    assert (policy.local_time, str(policy.zone), policy.grace) == (
        time(2, 0),
        "America/New_York",
        timedelta(minutes=30),
    )
    assert policy.partition_key == "dt"
    # dt=2026-02-15 is due by 02:00 New York time on 2026-02-16 (EST, UTC-5).
    assert policy.deadline(date(2026, 2, 15)) == datetime(2026, 2, 16, 7, tzinfo=UTC)
    assert policy.describe(policy.deadline(date(2026, 2, 15))) == "2026-02-16 02:00 EST"


@pytest.mark.parametrize(
    ("expected", "day", "deadline_utc"),
    [
        ("02:00 ET daily", date(2026, 7, 1), datetime(2026, 7, 2, 6, tzinfo=UTC)),  # EDT
        ("02:00 ET daily", date(2026, 3, 7), datetime(2026, 3, 8, 7, tzinfo=UTC)),  # gap
        ("01:30 ET daily", date(2026, 10, 31), datetime(2026, 11, 1, 5, 30, tzinfo=UTC)),  # fold
        ("23:00 PT daily", date(2026, 1, 10), datetime(2026, 1, 12, 7, tzinfo=UTC)),
        ("06:30 Europe/Berlin daily", date(2026, 2, 15), datetime(2026, 2, 16, 5, 30, tzinfo=UTC)),
        ("06:30 Europe/Berlin daily", date(2026, 6, 15), datetime(2026, 6, 16, 4, 30, tzinfo=UTC)),
        ("00:00 UTC daily", date(2026, 2, 15), datetime(2026, 2, 16, 0, tzinfo=UTC)),
        ("9:05 GMT daily", date(2026, 2, 15), datetime(2026, 2, 16, 9, 5, tzinfo=UTC)),
        ("04:00 CT daily", date(2026, 2, 15), datetime(2026, 2, 16, 10, tzinfo=UTC)),
        ("04:00 MT daily", date(2026, 2, 15), datetime(2026, 2, 16, 11, tzinfo=UTC)),
    ],
)
def test_deadlines_honour_zones_and_daylight_saving(
    expected: str, day: date, deadline_utc: datetime
) -> None:
    policy = freshness_policy(_spec(freshness={"expected_update_by": expected}))
    assert policy is not None
    assert policy.deadline(day) == deadline_utc
    assert policy.grace == timedelta(0)
    assert policy.partition_key is None


def test_no_slo_means_no_policy() -> None:
    assert freshness_policy({"urn": "ds://a/b"}) is None
    assert volume_policy({"urn": "ds://a/b", "slo": {"freshness": None}}) is None


@pytest.mark.parametrize(
    ("freshness", "key", "fragment"),
    [
        ({"expected_update_by": "2am ET"}, "slo.freshness.expected_update_by", "'2am ET'"),
        ({"expected_update_by": "02:00 ET weekly"}, "expected_update_by", "cadence 'weekly'"),
        ({"expected_update_by": "25:00 ET daily"}, "expected_update_by", "not a time of day"),
        (
            {"expected_update_by": "02:00 Mars/Olympus daily"},
            "expected_update_by",
            "'Mars/Olympus' is not a known time zone",
        ),
        ({"expected_update_by": 200}, "expected_update_by", "200"),
        ({"grace_period": "30m"}, "expected_update_by", "is missing"),
        (
            {"expected_update_by": "02:00 ET daily", "grace_period": "half an hour"},
            "slo.freshness.grace_period",
            "'half an hour'",
        ),
        ({"expected_update_by": "02:00 ET daily", "grace_period": "30"}, "grace_period", "'30m'"),
        (
            {"expected_update_by": "02:00 ET daily", "grace_period": "1d"},
            "grace_period",
            "shorter than the daily cadence",
        ),
        (
            {"expected_update_by": "02:00 ET daily", "partition_key": "dt=x"},
            "slo.freshness.partition_key",
            "'dt=x'",
        ),
    ],
)
def test_bad_freshness_values_name_key_value_and_form(
    freshness: dict[str, Any], key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as err:
        freshness_policy(_spec(freshness=freshness))
    message = err.value.message
    assert key in message
    assert fragment in message
    assert "Allowed" in message


def test_volume_defaults_and_options() -> None:
    plain = volume_policy(_spec(volume={"min_rows_per_partition": 100000}))
    assert plain is not None
    assert (plain.anomaly_threshold_pct, plain.min_rows_per_partition, plain.seasonality) == (
        40.0,
        100000,
        None,
    )
    seasonal = volume_policy(_spec(volume={"seasonality": "day_of_week", "seasonality_weeks": 6}))
    assert seasonal is not None
    assert (seasonal.seasonality, seasonal.seasonality_weeks) == (
        "day_of_week",
        6,
    )


@pytest.mark.parametrize(
    ("volume", "key"),
    [
        ({"anomaly_threshold_pct": 0}, "anomaly_threshold_pct"),
        ({"anomaly_threshold_pct": "40%"}, "anomaly_threshold_pct"),
        ({"min_rows_per_partition": -1}, "min_rows_per_partition"),
        ({"min_rows_per_partition": 1.5}, "min_rows_per_partition"),
        ({"seasonality": "weekly"}, "slo.volume.seasonality"),
        ({"seasonality": "day_of_week", "seasonality_weeks": 1}, "seasonality_weeks"),
    ],
)
def test_bad_volume_values(volume: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key) as err:
        volume_policy(_spec(volume=volume))
    assert "Allowed" in err.value.message


def test_slo_sections_must_be_mappings() -> None:
    with pytest.raises(ConfigError, match=r"'slo\.freshness' holds '02:00 ET daily'"):
        freshness_policy(_spec(freshness="02:00 ET daily"))
    with pytest.raises(ConfigError, match="key 'slo' holds"):
        volume_policy({"slo": ["volume"]})
