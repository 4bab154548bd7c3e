"""Engines: order, bounded look-ahead, errors; and sequential ≡ threads on a whole run."""

from __future__ import annotations

import functools
import operator
import os
import random
import threading
from collections.abc import Iterator
from typing import Any

import polars as pl
import pytest

from factories import (
    DAY1,
    Project,
    certified_path,
    orders,
    pipeline_doc,
    quarantine,
    read_table,
    set_rows,
)
from signalfactory.core.errors import ConfigError
from signalfactory.pipeline.runner import RunOutcome
from signalfactory.production.engines import (
    SequentialEngine,
    ThreadEngine,
    create_engine,
    worker_environ,
)


@pytest.mark.parametrize("name", ["sequential", "threads", "THREADS"])
def test_map_keeps_input_order(name: str) -> None:
    engine = create_engine(name, 4)
    rng = random.Random(3)
    delays = [rng.random() / 1000 for _ in range(200)]
    seen_threads: set[str] = set()

    def work(i: int) -> int:
        threading.Event().wait(delays[i])  # scramble completion order
        seen_threads.add(threading.current_thread().name)
        return i * i

    try:
        assert list(engine.map(work, range(200))) == [i * i for i in range(200)]
    finally:
        engine.close()
    if name == "sequential":
        assert seen_threads == {threading.current_thread().name}
    else:
        assert all(t.startswith("sf-chunk") for t in seen_threads)


def test_threads_read_ahead_is_bounded() -> None:
    """At most 2 × max_workers chunks are in flight: memory follows workers, not input."""
    pulled = 0
    in_flight_when_yielded: list[int] = []

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(100):
            pulled += 1
            yield i

    engine = ThreadEngine(max_workers=3)
    try:
        for i, _ in enumerate(engine.map(lambda x: x, items())):
            in_flight_when_yielded.append(pulled - i)
    finally:
        engine.close()
    assert max(in_flight_when_yielded) <= 2 * 3


@pytest.mark.parametrize("engine", [SequentialEngine(), ThreadEngine(2)])
def test_a_worker_error_reaches_the_caller(engine: Any) -> None:
    def work(i: int) -> int:
        if i == 7:
            raise ValueError("chunk 7 broke")
        return i

    with pytest.raises(ValueError, match="chunk 7 broke"):
        list(engine.map(work, range(50)))
    engine.close()
    engine.close()  # closing twice is harmless


def test_unknown_engine_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sequential, threads"):
        create_engine("spark")


def _run(project: Project, home: str, engine: str) -> RunOutcome:
    sf = project.open(home)
    outcome = project.run(sf, engine=engine)
    assert outcome.run.engine == engine
    return outcome


def test_sequential_and_threads_give_the_same_run(project: Project) -> None:
    rng = random.Random(42)
    df = orders(6500, seed=42)  # seven chunks of 1,000 rows
    dup_targets = rng.sample(range(1000, 6500), 25)
    for pos in dup_targets:  # each repeats an id from an earlier position, often another chunk
        df = set_rows(df, [pos], order_id=int(df["order_id"][rng.randrange(pos)]))
    df = set_rows(df, rng.sample(range(6500), 40), order_total=-1.0)
    df = set_rows(df, rng.sample(range(6500), 15), order_type="FLASH_SALE")
    project.partition(DAY1, df)
    project.write(pipeline=pipeline_doc(chunk_size=1000))

    seq = _run(project, "home_seq", "sequential")
    thr = _run(project, "home_thr", "threads")

    sf_seq, sf_thr = project.opened
    a = read_table(certified_path(sf_seq)).sort("order_id")
    b = read_table(certified_path(sf_thr)).sort("order_id")
    assert a.height > 6000
    assert a.equals(b)
    qa = quarantine(sf_seq, seq).drop("_sf_source_file", strict=False).sort("_sf_row")
    qb = quarantine(sf_thr, thr).drop("_sf_source_file", strict=False).sort("_sf_row")
    assert qa.equals(qb)
    # The first occurrence of an id wins in both: exactly the repeats are quarantined.
    dups = qa.filter(pl.col("_sf_reasons").str.contains("DUPLICATE_KEY"))
    expected = df.with_row_index("pos").filter(~pl.col("order_id").is_first_distinct())
    assert sorted(dups["_sf_row"]) == expected["pos"].cast(pl.Int64).to_list()

    def comparable(outcome: RunOutcome) -> dict[tuple[str, str], tuple[Any, ...]]:
        return {
            (str(e.stage), e.gate): (
                e.result,
                e.failure_signature,
                e.failure_signatures,
                dict(e.metrics),
                e.context.get("disposition"),
            )
            for e in outcome.evidence
        }

    assert comparable(seq) == comparable(thr)
    for field in ("rows_read", "rows_written", "rows_quarantined", "rows_dropped"):
        assert getattr(seq.run, field) == getattr(thr.run, field), field


@pytest.mark.slow
@pytest.mark.parametrize("name", ["processes", "dask", "ray"])
def test_worker_processes_size_polars_to_their_share_of_the_cores(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers on this machine get cores // 2 polars threads each (at least one), not
    every core each; the driver's own pool and environment are left as they were."""
    monkeypatch.delenv("POLARS_MAX_THREADS", raising=False)
    expected = max(1, (os.cpu_count() or 1) // 2)
    assert worker_environ(2) == {"POLARS_MAX_THREADS": str(expected)}
    driver_threads = pl.thread_pool_size()
    engine = create_engine(name, 2)
    # Library callables only: a Ray worker cannot import this test module.
    probes: list[Any] = [pl.thread_pool_size, functools.partial(os.getenv, "POLARS_MAX_THREADS")]
    try:
        seen = list(engine.map(operator.call, probes * 4))
    finally:
        engine.close()
    assert set(seen[0::2]) == {expected}
    assert set(seen[1::2]) == {str(expected)}
    assert "POLARS_MAX_THREADS" not in os.environ
    assert pl.thread_pool_size() == driver_threads


def test_an_explicit_polars_thread_limit_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLARS_MAX_THREADS", "3")
    assert worker_environ(2) == {}
