"""Profiling (E2): baseline.json figures checked against figures computed independently."""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from signalfactory.core.errors import ConfigError, NotFoundError
from signalfactory.enforcement.profile import (
    Baseline,
    changes,
    profile_frame,
    profile_table,
    roll_forward,
)
from signalfactory.enforcement.schema import fingerprint

DAYS = ("2026-02-13", "2026-02-14", "2026-02-15")
KINDS = ("STANDARD", "EXPRESS", "PICKUP", "RETURN")


def rows(seed: int, n: int, day: str, *, kinds: tuple[str, ...] = KINDS) -> dict[str, list[Any]]:
    rng = random.Random(seed)
    return {
        "id": [seed * 100_000 + i for i in range(n)],
        "amount": [
            None if rng.random() < 0.1 else rng.randrange(1, 100_000) / 100 for _ in range(n)
        ],
        "kind": [None if rng.random() < 0.05 else rng.choice(kinds) for _ in range(n)],
        "code": [f"K{rng.randrange(10**6):06d}" for _ in range(n)],
        "dt": [day] * n,
    }


def frame(data: dict[str, list[Any]]) -> pl.DataFrame:
    return pl.DataFrame(data, schema={"id": pl.Int64, "amount": pl.Float64, "kind": pl.String,
                                      "code": pl.String, "dt": pl.String})  # fmt: skip


def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), written out."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@pytest.fixture
def table(tmp_path: Path) -> tuple[str, dict[str, list[Any]]]:
    parts = [rows(i + 1, 700 + 150 * i, day) for i, day in enumerate(DAYS)]
    data = {k: [v for p in parts for v in p[k]] for k in parts[0]}
    path = str(tmp_path / "orders")
    frame(data).write_delta(path, delta_write_options={"partition_by": ["dt"]})
    return path, data


def test_profile_of_a_delta_table_has_exact_figures(
    table: tuple[str, dict[str, list[Any]]],
) -> None:
    path, data = table
    n = len(data["id"])
    b = profile_table(path, dataset_urn="ds://t/orders")
    assert b.row_count == n
    assert b.partition_columns == ("dt",)
    assert b.partitions == {f"dt={d}": c for d, c in sorted(Counter(data["dt"]).items())}
    assert set(b.columns) == {"id", "amount", "kind", "code"}  # the partition column is a key
    for name in ("id", "amount", "kind", "code"):
        present = [v for v in data[name] if v is not None]
        col = b.columns[name]
        assert col.null_count == n - len(present), name
        assert col.null_rate == pytest.approx((n - len(present)) / n)
        assert col.distinct_count == len(set(present)), name
    assert b.columns["kind"].enum_values == tuple(sorted(KINDS))
    assert b.columns["code"].enum_values is None  # ~2,000 distinct values: no enum
    assert b.columns["id"].enum_values is None
    amounts = [v for v in data["amount"] if v is not None]
    stats = b.columns["amount"].numeric
    assert stats is not None
    assert stats.min == min(amounts)
    assert stats.max == max(amounts)
    assert stats.mean == pytest.approx(statistics.fmean(amounts))
    assert stats.std == pytest.approx(statistics.pstdev(amounts))
    for key, q in (("p01", 0.01), ("p25", 0.25), ("p50", 0.5), ("p75", 0.75), ("p99", 0.99)):
        assert getattr(stats, key) == pytest.approx(quantile(amounts, q)), key
    assert b.columns["kind"].numeric is None
    assert b.schema_fields == {
        "id": "INTEGER", "amount": "DOUBLE", "kind": "STRING", "code": "STRING", "dt": "STRING"
    }  # fmt: skip
    assert b.schema_fingerprint == fingerprint(b.schema_fields)


def test_baseline_json_round_trips(table: tuple[str, dict[str, list[Any]]], tmp_path: Path) -> None:
    b = profile_table(table[0])
    out = b.write(tmp_path / "b" / "baseline.json")
    assert Baseline.read(out) == b
    assert Baseline.from_document(b.document()) == b


def test_one_partition_is_profiled_alone(table: tuple[str, dict[str, list[Any]]]) -> None:
    path, data = table
    b = profile_table(path, partition={"dt": DAYS[1]})
    assert b.partitions == {f"dt={DAYS[1]}": data["dt"].count(DAYS[1])}
    assert b.row_count == data["dt"].count(DAYS[1])


def test_roll_forward_merges_a_certified_partition(tmp_path: Path) -> None:
    first = frame({k: rows(1, 800, DAYS[0])[k] + rows(2, 900, DAYS[1])[k] for k in rows(1, 1, "x")})
    third = frame(rows(3, 1000, DAYS[2], kinds=(*KINDS, "FLASH_SALE")))
    base = profile_frame(first, source="t", partition_columns=["dt"])
    part = profile_frame(third, source="t", partition_columns=["dt"])
    whole = profile_frame(pl.concat([first, third]), source="t", partition_columns=["dt"])

    rolled = roll_forward(base, part)

    assert rolled.partitions == whole.partitions
    assert rolled.row_count == whole.row_count == 2700
    for name, col in whole.columns.items():
        got = rolled.columns[name]
        assert (got.null_count, got.rows) == (col.null_count, col.rows), name
    assert rolled.columns["kind"].enum_values == tuple(sorted((*KINDS, "FLASH_SALE")))
    assert rolled.columns["kind"].distinct_count == 5
    got, want = rolled.columns["amount"].numeric, whole.columns["amount"].numeric
    assert got is not None
    assert want is not None
    assert (got.min, got.max) == (want.min, want.max)
    assert got.mean == pytest.approx(want.mean)
    assert got.std == pytest.approx(want.std)
    assert not rolled.columns["amount"].exact  # quantiles are estimates after a merge
    assert changes(base, part)["new_enum_values"] == {"kind": ["FLASH_SALE"]}

    # The same partition certified again replaces its row count; nothing counts twice.
    again = roll_forward(rolled, part)
    assert again.row_count == rolled.row_count
    assert again.columns["amount"].null_count == rolled.columns["amount"].null_count
    assert changes(rolled, part)["new_enum_values"] == {}


def test_schema_changes_are_listed_and_the_schema_updates() -> None:
    base = profile_frame(frame(rows(1, 300, DAYS[0])), source="t", partition_columns=["dt"])
    newer = (
        frame(rows(2, 300, DAYS[1]))
        .drop("code")
        .with_columns(pl.col("id").cast(pl.String), pl.lit(True).alias("flag"))
    )
    part = profile_frame(newer, source="t", partition_columns=["dt"])
    diff = changes(base, part)
    assert diff["added_fields"] == ["flag"]
    assert diff["removed_fields"] == ["code"]
    assert diff["retyped_fields"] == {"id": ["INTEGER", "STRING"]}
    rolled = roll_forward(base, part)
    assert rolled.schema_fields["id"] == "STRING"
    assert rolled.schema_fields["flag"] == "BOOLEAN"
    assert rolled.schema_fingerprint == fingerprint(rolled.schema_fields)


def test_pii_shaped_values_never_become_an_enum_set() -> None:
    df = pl.DataFrame({"contact": ["a@example.com", "b@example.com"] * 20, "tier": ["x", "y"] * 20})
    b = profile_frame(df, source="t")
    assert b.columns["contact"].enum_values is None
    assert b.columns["contact"].distinct_count == 2
    assert b.columns["tier"].enum_values == ("x", "y")


def test_files_profile_too(tmp_path: Path) -> None:
    df = frame(rows(5, 400, DAYS[0]))
    df.write_parquet(tmp_path / "o.parquet")
    df.write_csv(tmp_path / "o.csv")
    p = profile_table(tmp_path / "o.parquet")
    c = profile_table(tmp_path / "o.csv")
    assert p.row_count == c.row_count == 400
    assert p.partitions == {}
    assert p.columns["kind"].null_count == c.columns["kind"].null_count == df["kind"].null_count()
    assert c.columns["id"].type == "INTEGER"


def test_errors_name_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"nope.*does not exist.*Delta table folder"):
        profile_table(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError, match=r"plain.*not a Delta table"):
        profile_table(tmp_path / "plain")
    (tmp_path / "x.xlsx").write_text("x")
    with pytest.raises(ConfigError, match=r"unknown file type '.xlsx'"):
        profile_table(tmp_path / "x.xlsx")
    with pytest.raises(ConfigError, match="partition column"):
        profile_frame(pl.DataFrame({"a": [1]}), source="t", partition_columns=["dt"])
