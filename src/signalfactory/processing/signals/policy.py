"""The SLOs of ``dataset.yaml`` as the signal engines use them (PRD FR-2, FR-3, FR-8).

``slo.freshness`` (FR-2)::

    expected_update_by: "02:00 ET daily"   # HH:MM, a zone, then "daily"
    grace_period: "30m"                    # 45s, 30m, 1h, 1h30m, 0m
    partition_key: "dt"                    # optional

The zone is an abbreviation (ET, CT, MT, PT, AKT, HT, UTC, GMT; the EST/EDT-style forms name
the same zones) or an IANA name such as ``Europe/Berlin``; daylight saving time is honoured
through :mod:`zoneinfo`. With a daily partition key the partition for day D is due by
``expected_update_by`` on day D+1, local time of the zone. A local time that does not exist on
a spring-forward day (02:30 in New York on the second Sunday of March) is read with the offset
in force before the change, i.e. the instant the clocks jump; an ambiguous one (fall back)
is its first occurrence.

``slo.volume`` (FR-3)::

    min_rows_per_partition: 100000
    anomaly_threshold_pct: 40
    seasonality: day_of_week               # optional: baseline = same weekday, last N weeks
    seasonality_weeks: 4                   # optional

The raw dataset.yaml dict is read (``DatasetRecord.spec``), so every value is checked here and
a bad one raises :class:`ConfigError` naming the key, the value and the allowed form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from signalfactory.core.errors import ConfigError

__all__ = [
    "ZONE_ABBREVIATIONS",
    "FreshnessPolicy",
    "VolumePolicy",
    "freshness_policy",
    "parse_duration",
    "parse_expected_update_by",
    "volume_policy",
]

#: Zone abbreviations accepted in ``expected_update_by`` and the IANA zone each one means.
ZONE_ABBREVIATIONS: Mapping[str, str] = {
    "ET": "America/New_York",
    "EST": "America/New_York",
    "EDT": "America/New_York",
    "CT": "America/Chicago",
    "CST": "America/Chicago",
    "CDT": "America/Chicago",
    "MT": "America/Denver",
    "MST": "America/Denver",
    "MDT": "America/Denver",
    "PT": "America/Los_Angeles",
    "PST": "America/Los_Angeles",
    "PDT": "America/Los_Angeles",
    "AKT": "America/Anchorage",
    "HT": "Pacific/Honolulu",
    "UTC": "UTC",
    "GMT": "UTC",
    "Z": "UTC",
}

_EXPECTED_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s+(\S+)\s+(\S+)\s*$")
_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_EXPECTED_FORM = (
    "'HH:MM ZONE daily', e.g. '02:00 ET daily' or '06:30 Europe/Berlin daily' "
    f"(ZONE: {', '.join(sorted({'ET', 'CT', 'MT', 'PT', 'AKT', 'HT', 'UTC', 'GMT'}))} "
    "or an IANA zone name)"
)
_DURATION_FORM = "a duration such as '45s', '30m', '1h', '1h30m' or '0m'"


@dataclass(frozen=True, slots=True)
class FreshnessPolicy:
    """``slo.freshness`` parsed: when each daily update is due, in UTC."""

    local_time: time
    zone: ZoneInfo
    zone_label: str
    grace: timedelta
    partition_key: str | None
    expected_update_by: str
    grace_period: str

    def deadline(self, day: date) -> datetime:
        """When the update for ``day`` is due (UTC): ``local_time`` on day + 1, in the zone."""
        local = datetime.combine(day + timedelta(days=1), self.local_time, tzinfo=self.zone)
        # Round-trip through UTC so a non-existent local time (spring forward) is normalised.
        return local.astimezone(UTC)

    def local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.zone).date()

    def describe(self, instant: datetime) -> str:
        """``instant`` in the zone's local time, e.g. ``2026-02-16 02:00 EST``."""
        return instant.astimezone(self.zone).strftime("%Y-%m-%d %H:%M %Z")

    def partition_label(self, day: date) -> str:
        return f"{self.partition_key or 'day'}={day.isoformat()}"


@dataclass(frozen=True, slots=True)
class VolumePolicy:
    """``slo.volume`` parsed (FR-3); ``seasonality`` is ``None`` or ``"day_of_week"``."""

    anomaly_threshold_pct: float = 40.0
    min_rows_per_partition: int | None = None
    seasonality: str | None = None
    seasonality_weeks: int = 4


def parse_duration(value: Any, key: str) -> timedelta:
    """``"30m"``, ``"1h30m"``, ``"45s"``, ``"2d"`` as a :class:`timedelta` (``key`` for errors)."""
    text = str(value).strip().lower() if isinstance(value, str | int) else None
    match = _DURATION_RE.match(text) if text else None
    if text is None or match is None or not any(match.groups()):
        raise ConfigError(
            f"dataset.yaml: key '{key}' holds {value!r}, which is not a duration. "
            f"Allowed: {_DURATION_FORM}."
        )
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def parse_expected_update_by(
    value: Any, key: str = "slo.freshness.expected_update_by"
) -> tuple[time, ZoneInfo, str]:
    """``"02:00 ET daily"`` as (local time, zone, zone as written)."""
    match = _EXPECTED_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(f"dataset.yaml: key '{key}' holds {value!r}. Allowed: {_EXPECTED_FORM}.")
    hour, minute, zone_text, cadence = match.groups()
    if cadence.lower() != "daily":
        raise ConfigError(
            f"dataset.yaml: key '{key}' holds {value!r}: cadence {cadence!r} is not supported. "
            f"Allowed: {_EXPECTED_FORM}."
        )
    if int(hour) > 23 or int(minute) > 59:
        raise ConfigError(
            f"dataset.yaml: key '{key}' holds {value!r}: {hour}:{minute} is not a time of day "
            f"(00:00 to 23:59). Allowed: {_EXPECTED_FORM}."
        )
    name = ZONE_ABBREVIATIONS.get(zone_text.upper(), zone_text)
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"dataset.yaml: key '{key}' holds {value!r}: {zone_text!r} is not a known time "
            f"zone. Allowed: {_EXPECTED_FORM}."
        ) from None
    return time(int(hour), int(minute)), zone, zone_text


def freshness_policy(spec: Mapping[str, Any]) -> FreshnessPolicy | None:
    """The freshness SLO of a parsed dataset.yaml, or ``None`` when it declares none."""
    raw = _section(spec, "freshness")
    if raw is None:
        return None
    expected = raw.get("expected_update_by")
    if expected is None:
        raise ConfigError(
            "dataset.yaml: key 'slo.freshness.expected_update_by' is missing. "
            f"Allowed: {_EXPECTED_FORM}."
        )
    local_time, zone, label = parse_expected_update_by(expected)
    grace_text = raw.get("grace_period", "0m")
    grace = parse_duration(grace_text, "slo.freshness.grace_period")
    if grace >= timedelta(days=1):
        raise ConfigError(
            f"dataset.yaml: key 'slo.freshness.grace_period' holds {grace_text!r}: a grace "
            "period must be shorter than the daily cadence. Allowed: a duration under 24h, "
            "e.g. '30m'."
        )
    key = raw.get("partition_key")
    if key is not None and (not isinstance(key, str) or not re.fullmatch(r"\w+", key)):
        raise ConfigError(
            f"dataset.yaml: key 'slo.freshness.partition_key' holds {key!r}. Allowed: a "
            "partition column name such as 'dt'."
        )
    return FreshnessPolicy(
        local_time=local_time,
        zone=zone,
        zone_label=label,
        grace=grace,
        partition_key=key,
        expected_update_by=str(expected),
        grace_period=str(grace_text),
    )


def volume_policy(spec: Mapping[str, Any]) -> VolumePolicy | None:
    """The volume SLO of a parsed dataset.yaml, or ``None`` when it declares none."""
    raw = _section(spec, "volume")
    if raw is None:
        return None
    threshold = raw.get("anomaly_threshold_pct", 40)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        threshold = None
    if threshold is None or not 0 < threshold <= 100:
        raise ConfigError(
            "dataset.yaml: key 'slo.volume.anomaly_threshold_pct' holds "
            f"{raw.get('anomaly_threshold_pct')!r}. Allowed: a number above 0 and at most "
            "100 (percent), e.g. 40."
        )
    min_rows = raw.get("min_rows_per_partition")
    if min_rows is not None and (
        isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 0
    ):
        raise ConfigError(
            f"dataset.yaml: key 'slo.volume.min_rows_per_partition' holds {min_rows!r}. "
            "Allowed: a whole number of rows, 0 or more, e.g. 100000."
        )
    seasonality = raw.get("seasonality")
    if seasonality is not None and seasonality != "day_of_week":
        raise ConfigError(
            f"dataset.yaml: key 'slo.volume.seasonality' holds {seasonality!r}. Allowed: "
            "'day_of_week' (baseline = the same weekday in earlier weeks) or no key at all."
        )
    weeks = raw.get("seasonality_weeks", 4)
    if isinstance(weeks, bool) or not isinstance(weeks, int) or not 2 <= weeks <= 52:
        raise ConfigError(
            f"dataset.yaml: key 'slo.volume.seasonality_weeks' holds {weeks!r}. Allowed: a "
            "whole number of weeks from 2 to 52 (default 4)."
        )
    return VolumePolicy(
        anomaly_threshold_pct=float(threshold),
        min_rows_per_partition=min_rows,
        seasonality=seasonality,
        seasonality_weeks=weeks,
    )


def _section(spec: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    slo = spec.get("slo")
    if slo is None:
        return None
    if not isinstance(slo, Mapping):
        raise ConfigError(
            f"dataset.yaml: key 'slo' holds {slo!r}. Allowed: a mapping with 'freshness' "
            "and/or 'volume'."
        )
    section = slo.get(name)
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise ConfigError(
            f"dataset.yaml: key 'slo.{name}' holds {section!r}. Allowed: a mapping of "
            f"{name} settings (see the PRD's dataset.yaml example)."
        )
    return section
