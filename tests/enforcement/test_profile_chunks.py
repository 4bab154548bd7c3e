"""A partition's profile merged from its chunks' summaries equals a profile of the whole."""

from __future__ import annotations

import random

import polars as pl
import pytest

from signalfactory.enforcement import profile_chunks
from signalfactory.enforcement.profile import Baseline, profile_frame
from signalfactory.enforcement.profile_chunks import chunk_profile, merge_chunk_profiles

DAY = "2026-02-15"


def frame(n: int, seed: int) -> pl.DataFrame:
    rng = random.Random(seed)
    return pl.DataFrame(
        {
            "id": list(range(n)),
            "amount": [
                None if rng.random() < 0.1 else rng.randrange(1, 10**6) / 100 for _ in range(n)
            ],
            "kind": [None if rng.random() < 0.05 else rng.choice("ABCD") for _ in range(n)],
            "code": [f"K{rng.randrange(2_000):04d}" for _ in range(n)],
            "email": [f"u{rng.randrange(5)}@example.com" for _ in range(n)],
            "dt": [DAY] * n,
        }
    )


def merged(df: pl.DataFrame, sizes: list[int]) -> Baseline:
    parts, start = [], 0
    for size in sizes:
        parts.append(chunk_profile(df.slice(start, size)))
        start += size
    assert start == df.height
    return merge_chunk_profiles(parts, source="t", dataset_urn="ds://t", partition={"dt": DAY})


def test_merged_chunks_give_the_whole_frames_exact_figures() -> None:
    df = frame(9_000, seed=3)
    whole = profile_frame(df, source="t", dataset_urn="ds://t", partition_columns=["dt"])
    mine = merged(df, [1_000, 4_321, 79, 3_600])
    assert mine.row_count == whole.row_count == 9_000
    assert mine.partitions == whole.partitions == {f"dt={DAY}": 9_000}
    assert mine.schema_fields == whole.schema_fields
    assert mine.schema_fingerprint == whole.schema_fingerprint
    for name, column in whole.columns.items():
        got = mine.columns[name]
        assert got.null_count == column.null_count, name
        assert got.distinct_count == column.distinct_count, name  # below KMV_SIZE: exact
        assert got.enum_values == column.enum_values, name
    # An e-mail column with five values gets no enum set: values shaped like PII never do.
    assert mine.columns["email"].enum_values is None
    assert mine.columns["kind"].enum_values == ("A", "B", "C", "D")
    assert mine.columns["kind"].exact
    num, ref = mine.columns["amount"].numeric, whole.columns["amount"].numeric
    assert num is not None
    assert ref is not None
    assert (num.min, num.max) == (ref.min, ref.max)
    assert num.mean == pytest.approx(ref.mean)
    assert num.std == pytest.approx(ref.std)
    for key in ("p01", "p25", "p50", "p75", "p99"):  # every 32nd row of each chunk
        assert abs(getattr(num, key) - getattr(ref, key)) <= 0.05 * (ref.max - ref.min)
    assert not mine.columns["amount"].exact


def test_many_distinct_values_are_estimated_and_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile_chunks, "KMV_SIZE", 256)
    df = frame(20_000, seed=4)
    mine = merged(df, [5_000] * 4)
    ids = mine.columns["id"]
    assert not ids.exact
    assert abs(ids.distinct_count - 20_000) <= 0.15 * 20_000  # k = 256: about 6% error
    assert mine.columns["kind"].distinct_count == 4  # few values: still exact
    assert mine.columns["kind"].exact


def test_no_chunks_is_an_empty_profile() -> None:
    empty = merge_chunk_profiles([], source="t", dataset_urn=None, partition={"dt": DAY})
    assert empty.row_count == 0
    assert empty.columns == {}
