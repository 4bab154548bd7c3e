"""validate_files: global uniqueness across chunks equals a single-frame computation."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import polars as pl
import pytest

from signalfactory.core.errors import ConfigError
from signalfactory.enforcement.policy import PolicyBundle
from signalfactory.pipeline.uniqueness import UniqueTracker
from signalfactory.pipeline.validate import validate_files

POLICY = PolicyBundle.model_validate(
    {
        "schema": {
            "constraints": [
                {"field": "id", "type": "INTEGER"},
                {"field": "key", "type": "STRING"},
                {"field": "amount", "type": "DOUBLE"},
            ]
        },
        "contract_lite": {"invariants": ["amount >= 0"]},
        "dq": [{"check": "unique", "column": "id"}, {"check": "unique", "column": "key"}],
    }
)


def random_frame(rng: random.Random, n: int) -> pl.DataFrame:
    pool = max(10, n // rng.choice([2, 3, 10]))  # small pools force repeats across chunks
    return pl.DataFrame(
        {
            "id": [None if rng.random() < 0.05 else rng.randrange(-pool, pool) for _ in range(n)],
            "key": [None if rng.random() < 0.05 else f"k{rng.randrange(pool)}" for _ in range(n)],
            "amount": [rng.uniform(-1, 100) for _ in range(n)],
        },
        schema={"id": pl.Int64, "key": pl.String, "amount": pl.Float64},
    )


def expected_duplicates(df: pl.DataFrame, column: str) -> list[int]:
    """Row numbers of every non-null repeat, the first occurrence winning."""
    flagged = df.with_row_index("row").filter(
        pl.col(column).is_not_null() & ~pl.col(column).is_first_distinct()
    )
    return flagged["row"].cast(pl.Int64).to_list()


@pytest.mark.parametrize("seed", range(8))
def test_uniqueness_across_chunks_matches_a_single_frame(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    frames = [random_frame(rng, rng.randint(1200, 3500)) for _ in range(rng.randint(1, 3))]
    files = []
    for i, frame in enumerate(frames):
        path = tmp_path / f"part{i}.parquet"
        frame.write_parquet(path, row_group_size=rng.choice([500, 1000, 4096]))
        files.append(path)
    whole = pl.concat(frames)
    invalid: list[pl.DataFrame] = []
    lock = threading.Lock()

    def sink(_index: int, _valid: pl.DataFrame, bad: pl.DataFrame) -> None:
        with lock:
            invalid.append(bad)

    summary = validate_files(
        files,
        POLICY,
        chunk_size=rng.choice([1000, 1234, 2000]),
        engine=rng.choice(["sequential", "threads"]),
        max_workers=rng.choice([2, 4]),
        sink=sink,
    )

    bad = pl.concat([f.select("_sf_row", "_sf_reasons") for f in invalid if f.height])
    for column in ("id", "key"):
        flagged = bad.filter(pl.col("_sf_reasons").str.contains(f"DUPLICATE_KEY:{column}"))
        assert sorted(flagged["_sf_row"]) == expected_duplicates(whole, column), column
        assert summary.failures().get(f"DUPLICATE_KEY:{column}", 0) == flagged.height
    negative = whole.with_row_index("row").filter(pl.col("amount") < 0)["row"].cast(pl.Int64)
    assert set(negative).issubset(set(bad["_sf_row"]))
    assert summary.rows == whole.height
    assert summary.valid_rows + summary.invalid_rows == whole.height
    assert summary.invalid_rows == bad.height


def test_tracker_first_occurrence_wins_within_and_across_chunks() -> None:
    tracker = UniqueTracker("id")
    first = tracker.check(pl.Series([1, 2, 2, None, None, 3]))
    second = tracker.check(pl.Series([3, 4, 1, None, 4]))
    assert first.to_list() == [False, False, True, False, False, False]
    assert second.to_list() == [True, False, True, False, True]
    # Nulls must not push keys through float64: -1 and -7 stay distinct, as do big ids.
    nullable = UniqueTracker("id")
    big = 2**62
    assert nullable.check(pl.Series([-1, None, -7, big])).to_list() == [False] * 4
    assert nullable.check(pl.Series([-7, big + 1, None, big])).to_list() == [
        True,
        False,
        False,
        True,
    ]
    strings = UniqueTracker("key")
    assert strings.check(pl.Series(["a", "b"])).to_list() == [False, False]
    assert strings.check(pl.Series(["b", "c", "a"])).to_list() == [True, False, True]


@pytest.mark.parametrize("chunk_size", [999, 1_000_001])
def test_chunk_size_outside_the_range_is_rejected(tmp_path: Path, chunk_size: int) -> None:
    path = tmp_path / "part.parquet"
    random_frame(random.Random(1), 10).write_parquet(path)
    with pytest.raises(ConfigError, match="1,000 to 1,000,000"):
        validate_files([path], POLICY, chunk_size=chunk_size)
