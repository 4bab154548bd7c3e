"""Seeded generation of the benchmark ``orders`` table, cached under ``.bench/``.

Seven columns: ``id`` (int64, increasing), ``customer_id`` (string), ``total`` (float64),
``order_type`` (string enum), ``email`` (string), ``ts`` (timestamp, µs, UTC), ``country``
(string). A fixed share of rows (3 % by default) is bad, and each bad row breaks exactly one
check, spread evenly over six kinds, so the expected outcome of every check is known exactly:

============  =====================================================================
kind          what the row carries
============  =====================================================================
null          ``customer_id`` is null (not-null)
duplicate     ``id`` repeats the id of an earlier *good* row (unique; first one wins)
pattern       ``email`` is ``not-an-email`` (regex)
range         ``total`` is negative (range 0..100000)
enum          ``order_type`` is ``FLASH_SALE`` (accepted values)
length        ``country`` is ``USA`` (string length 2..2)
============  =====================================================================

Duplicates point at a uniformly drawn earlier good row, so almost all of them repeat a key
from an *earlier chunk*: only global (cross-chunk) uniqueness finds them. Because the
targets are good rows, a tool that flags *every* occurrence of a duplicated key (Great
Expectations' ``expect_column_values_to_be_unique``) flags exactly ``bad + distinct_targets``
rows; the manifest records both numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks import BENCH_DIR

#: Bump when the generated data changes, so stale cached files are not reused.
DATAGEN_VERSION = 1
DEFAULT_SEED = 20_260_101
BAD_SHARE = 0.03
ROW_GROUP_SIZE = 1_000_000
KINDS = ("null", "duplicate", "pattern", "range", "enum", "length")
ORDER_TYPES = ("STANDARD", "EXPRESS", "PICKUP")
COUNTRIES = ("US", "CA", "GB", "DE", "FR", "NL")
DOMAINS = ("example.com", "mail.example.org", "shop.example.net")
EMAIL_RE = r"^[^@\s]+@[^@\s]+\.[a-z]+$"
MIN_ROWS = 10_000
#: Rows that are never bad, so every duplicate has an earlier good row to repeat.
_CLEAN_HEAD = 100
_CHUNK_FOR_STATS = 1_000_000


@dataclass(frozen=True)
class Manifest:
    """What was injected, read back by the benchmark to check every contender's counts."""

    rows: int
    seed: int
    version: int
    bad_rows: int
    by_kind: dict[str, int]
    #: Distinct good rows whose id is repeated by a duplicate row.
    duplicate_targets: int
    #: Duplicates whose first occurrence lies in an earlier 1M-row chunk.
    cross_chunk_duplicates: int
    row_group_size: int
    file_bytes: int
    generate_seconds: float

    @property
    def valid_first_wins(self) -> int:
        return self.rows - self.bad_rows

    @property
    def invalid_first_wins(self) -> int:
        return self.bad_rows

    @property
    def invalid_all_occurrences(self) -> int:
        """Invalid rows when every occurrence of a duplicated key is flagged."""
        return self.bad_rows + self.duplicate_targets


def dataset_path(rows: int, seed: int = DEFAULT_SEED, directory: Path = BENCH_DIR) -> Path:
    return directory / f"orders-{rows}-s{seed}-v{DATAGEN_VERSION}.parquet"


def _manifest_path(path: Path) -> Path:
    return path.with_suffix(".json")


def load_manifest(path: Path) -> Manifest:
    return Manifest(**json.loads(_manifest_path(path).read_text()))


def build_frame(rows: int, seed: int) -> tuple[pl.DataFrame, dict[str, int], int, int]:
    """The table, injected counts per kind, distinct duplicate targets, cross-chunk dups."""
    if rows < MIN_ROWS:
        raise ValueError(f"rows must be at least {MIN_ROWS:,}")
    rng = np.random.default_rng(seed)
    n_bad = round(rows * BAD_SHARE)
    per_kind = np.full(len(KINDS), n_bad // len(KINDS))
    per_kind[: n_bad % len(KINDS)] += 1
    bad_idx = np.sort(rng.choice(np.arange(_CLEAN_HEAD, rows), size=n_bad, replace=False))
    kind_of_bad = np.repeat(np.arange(len(KINDS)), per_kind)
    rng.shuffle(kind_of_bad)
    kind = np.full(rows, -1, dtype=np.int8)
    kind[bad_idx] = kind_of_bad

    ids = np.arange(1_000_000, 1_000_000 + rows, dtype=np.int64)
    dup_rows = np.flatnonzero(kind == KINDS.index("duplicate"))
    good_rows = np.flatnonzero(kind < 0)
    # For each duplicate row, a uniformly drawn good row before it.
    good_before = np.searchsorted(good_rows, dup_rows)
    targets = good_rows[(rng.random(dup_rows.size) * good_before).astype(np.int64)]
    assert (targets < dup_rows).all()
    ids[dup_rows] = ids[targets]
    cross_chunk = int(np.count_nonzero(targets // _CHUNK_FOR_STATS != dup_rows // _CHUNK_FOR_STATS))

    def mask(name: str) -> pl.Expr:
        return pl.col("kind") == KINDS.index(name)

    start = pl.datetime(2026, 1, 1, time_zone="UTC")
    frame = (
        pl.DataFrame(
            {
                "id": ids,
                "kind": kind,
                "cust_n": rng.integers(0, 1_000_000, rows),
                "total": np.round(rng.uniform(1.0, 500.0, rows), 2),
                "type_n": rng.integers(0, len(ORDER_TYPES), rows).astype(np.uint8),
                "user_n": rng.integers(0, 10_000_000, rows),
                "domain_n": rng.integers(0, len(DOMAINS), rows).astype(np.uint8),
                "sec_n": np.sort(rng.integers(0, 90 * 86_400, rows)),
                "country_n": rng.integers(0, len(COUNTRIES), rows).astype(np.uint8),
            }
        )
        .lazy()
        .select(
            "id",
            pl.when(mask("null"))
            .then(None)
            .otherwise(pl.format("C{}", pl.col("cust_n").cast(pl.String).str.zfill(7)))
            .alias("customer_id"),
            pl.when(mask("range")).then(-pl.col("total")).otherwise("total").alias("total"),
            pl.when(mask("enum"))
            .then(pl.lit("FLASH_SALE"))
            .otherwise(
                pl.col("type_n").replace_strict(range(3), ORDER_TYPES, return_dtype=pl.String)
            )
            .alias("order_type"),
            pl.when(mask("pattern"))
            .then(pl.lit("not-an-email"))
            .otherwise(
                pl.format(
                    "user{}@{}",
                    "user_n",
                    pl.col("domain_n").replace_strict(range(3), DOMAINS, return_dtype=pl.String),
                )
            )
            .alias("email"),
            (start + pl.duration(seconds=pl.col("sec_n"), time_unit="us")).alias("ts"),
            pl.when(mask("length"))
            .then(pl.lit("USA"))
            .otherwise(
                pl.col("country_n").replace_strict(
                    range(len(COUNTRIES)), COUNTRIES, return_dtype=pl.String
                )
            )
            .alias("country"),
        )
        .collect()
    )
    by_kind = {k: int(n) for k, n in zip(KINDS, per_kind, strict=True)}
    return frame, by_kind, int(np.unique(targets).size), cross_chunk


def ensure_dataset(
    rows: int, seed: int = DEFAULT_SEED, directory: Path = BENCH_DIR, *, quiet: bool = False
) -> tuple[Path, Manifest]:
    """The cached Parquet file for ``rows``/``seed`` and its manifest, generating them once."""
    path = dataset_path(rows, seed, directory)
    if path.exists() and _manifest_path(path).exists():
        return path, load_manifest(path)
    directory.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"generating {rows:,} orders (seed {seed}) into {path} …", flush=True)
    started = time.perf_counter()
    frame, by_kind, targets, cross = build_frame(rows, seed)
    tmp = path.with_suffix(".parquet.tmp")
    frame.write_parquet(tmp, row_group_size=ROW_GROUP_SIZE, statistics=True)
    os.replace(tmp, path)
    manifest = Manifest(
        rows=rows,
        seed=seed,
        version=DATAGEN_VERSION,
        bad_rows=sum(by_kind.values()),
        by_kind=by_kind,
        duplicate_targets=targets,
        cross_chunk_duplicates=cross,
        row_group_size=ROW_GROUP_SIZE,
        file_bytes=path.stat().st_size,
        generate_seconds=round(time.perf_counter() - started, 2),
    )
    _manifest_path(path).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return path, manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the benchmark orders table.")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    path, manifest = ensure_dataset(args.rows, args.seed)
    print(path)
    print(json.dumps(asdict(manifest), indent=2))


if __name__ == "__main__":
    main()
