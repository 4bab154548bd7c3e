"""Checkpoints, progress, dead letters and run leases of the MetadataStore, on both backends."""

from __future__ import annotations

import multiprocessing
import queue
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.pool import NullPool

from knowledge.test_store_conformance import HEAD
from signalfactory.core.errors import ConfigError, NotFoundError, Terminal
from signalfactory.core.protocols import MetadataStore
from signalfactory.core.records import (
    Checkpoint,
    DeadLetter,
    DeadLetterStatus,
    Evidence,
    GateResult,
    RunLease,
    RunProgress,
    RunRecord,
    RunStatus,
    Stage,
    Transition,
    utcnow,
)
from signalfactory.knowledge import SqlStore, open_store
from signalfactory.knowledge import models as m
from signalfactory.knowledge.store import MIGRATIONS_DIR

IST = timezone(timedelta(hours=5, minutes=30))
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
URN = "urn:sf:dataset:payments.transactions"
RUNTIME_TABLES = {"checkpoints", "run_progress", "dead_letters", "run_leases"}


def _progress(run_id: str = "run_1", **kw: Any) -> RunProgress:
    fields: dict[str, Any] = {
        "run_id": run_id,
        "chunks_done": 3,
        "chunks_total": 10,
        "rows_done": 150_000,
        "rows_total": None,
        "bytes_done": 3 * 2**30,
        "bytes_total": 10 * 2**30,
        "rows_per_s": 48_211.375,
        "eta_s": 12.5,
        "rss_mb": 812.25,
        "cpu_pct": 397.1,
        "phase": "silver",
        "updated_at": T0.astimezone(IST),
    }
    fields.update(kw)
    return RunProgress(**fields)


def _letter(letter_id: str, run_id: str = "run_1", **kw: Any) -> DeadLetter:
    fields: dict[str, Any] = {
        "dead_letter_id": letter_id,
        "run_id": run_id,
        "dataset_urn": URN,
        "chunk_index": 7,
        "correlation_id": f"corr-{letter_id}",
        "error_type": "ArrowInvalid",
        "error": "Could not convert 'x' with type str: tried to convert to double\nline 2",
        "attempts": 3,
        "payload_sample": {"rows": [{"amount": "x", "note": "Zürich ✓"}], "offset": 350_000},
        "created_at": T0.astimezone(IST),
        "updated_at": T0 + timedelta(seconds=1),
    }
    fields.update(kw)
    return DeadLetter(**fields)


def _count(store: SqlStore, table: Any) -> int:
    engine = create_engine(store.url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    finally:
        engine.dispose()


def test_store_has_every_protocol_method(store: SqlStore) -> None:
    as_protocol: MetadataStore = store
    wanted = {name for name in dir(MetadataStore) if not name.startswith("_")}
    assert {name for name in wanted if not hasattr(as_protocol, name)} == set()


# checkpoints


def test_checkpoints_round_trip_in_chunk_order(store: SqlStore) -> None:
    assert store.list_checkpoints("run_1") == []
    payload = {"rows_out": 49_998, "gates": {"G3": {"FAIL": 2}}, "files": ["part-2.parquet"]}
    made = [
        Checkpoint("run_1", 2, payload, created_at=T0.astimezone(IST)),
        Checkpoint("run_1", 0, {"rows_out": 50_000, "note": "DECIMAL→STRING"}, created_at=T0),
        Checkpoint("run_2", 0, {}),
        Checkpoint("run_1", 1, {"rows_out": 1}),
    ]
    for checkpoint in made:
        store.add_checkpoint(checkpoint)
    got = store.list_checkpoints("run_1")
    assert got == [made[1], made[3], made[0]]
    assert [c.to_dict() for c in got] == [c.to_dict() for c in (made[1], made[3], made[0])]
    assert got[2].created_at.tzinfo == UTC
    assert list(got[2].payload) == ["rows_out", "gates", "files"]  # key order survives
    assert store.list_checkpoints("run_2") == [made[2]]
    assert store.list_checkpoints("run_unknown") == []


def test_a_chunk_is_checkpointed_once(store: SqlStore) -> None:
    first = Checkpoint("run_1", 4, {"rows_out": 10})
    store.add_checkpoint(first)
    with pytest.raises(Terminal, match=r"chunk 4 of run 'run_1'"):
        store.add_checkpoint(Checkpoint("run_1", 4, {"rows_out": 11}))
    store.add_checkpoint(Checkpoint("run_2", 4, {}))  # the same chunk of another run is fine
    assert store.list_checkpoints("run_1") == [first]


# progress


def test_progress_round_trip_and_overwrite(store: SqlStore) -> None:
    assert store.get_progress("run_1") is None
    first = _progress()
    store.put_progress(first)
    got = store.get_progress("run_1")
    assert got == first
    assert got is not None
    assert got.updated_at.tzinfo == UTC
    assert got.percent == 30.0
    assert got.to_dict() == first.to_dict()

    later = _progress(
        chunks_done=10,
        chunks_total=None,
        rows_total=500_000,
        bytes_total=None,
        eta_s=None,
        phase="done",
        updated_at=T0 + timedelta(seconds=0.5),
    )
    store.put_progress(later)
    store.put_progress(other := _progress("run_2", rows_done=0, rows_total=0, bytes_total=0))
    assert store.get_progress("run_1") == later
    assert store.get_progress("run_2") == other
    assert store.get_progress("run_2").percent is None  # type: ignore[union-attr]
    assert _count(store, m.run_progress) == 2


def test_progress_with_non_finite_figures_is_stored(store: SqlStore) -> None:
    inf, nan = float("inf"), float("nan")
    store.put_progress(_progress(rows_per_s=inf, eta_s=inf, rss_mb=nan, cpu_pct=-inf))
    got = store.get_progress("run_1")
    assert got == _progress(rows_per_s=0.0, eta_s=None, rss_mb=0.0, cpu_pct=0.0)


def test_progress_is_visible_to_another_store(store: SqlStore) -> None:
    with SqlStore(store.url) as reader:
        for n in range(20):
            store.put_progress(_progress(chunks_done=n))
            assert reader.get_progress("run_1") == _progress(chunks_done=n)


# dead letters


def test_dead_letters_round_trip_order_and_filters(store: SqlStore) -> None:
    letters = [
        _letter("dl_c"),
        _letter("dl_a", run_id="run_2", dataset_urn="urn:other", chunk_index=0),
        _letter("dl_b", status=DeadLetterStatus.DISCARDED, attempts=1),
        _letter("dl_d", run_id="run_2", payload_sample={}),
    ]
    for letter in letters:
        store.add_dead_letter(letter)
    got = store.get_dead_letter("dl_c")
    assert got == letters[0]
    assert got is not None
    assert got.created_at.tzinfo == UTC
    assert got.updated_at.tzinfo == UTC
    assert got.to_dict() == letters[0].to_dict()
    assert store.get_dead_letter("dl_missing") is None

    assert store.list_dead_letters() == letters
    assert store.list_dead_letters(run_id="run_2") == [letters[1], letters[3]]
    assert store.list_dead_letters(dataset_urn=URN) == [letters[0], letters[2], letters[3]]
    assert store.list_dead_letters(status=DeadLetterStatus.OPEN) == [
        letters[0],
        letters[1],
        letters[3],
    ]
    assert store.list_dead_letters(
        run_id="run_2", dataset_urn=URN, status=DeadLetterStatus.OPEN
    ) == [letters[3]]
    assert store.list_dead_letters(status=DeadLetterStatus.REPLAYED) == []


def test_dead_letter_ids_are_unique(store: SqlStore) -> None:
    store.add_dead_letter(first := _letter("dl_1"))
    with pytest.raises(Terminal, match="dl_1"):
        store.add_dead_letter(_letter("dl_1", attempts=9))
    assert store.list_dead_letters() == [first]


def test_dead_letter_status_changes(store: SqlStore) -> None:
    store.add_dead_letter(first := _letter("dl_1"))
    store.add_dead_letter(second := _letter("dl_2"))
    before = utcnow()
    store.set_dead_letter_status("dl_1", DeadLetterStatus.REPLAYED)
    got = store.get_dead_letter("dl_1")
    assert got is not None
    assert got.status is DeadLetterStatus.REPLAYED
    assert got.updated_at >= before
    assert got.updated_at.tzinfo == UTC
    assert replace(got, status=first.status, updated_at=first.updated_at) == first
    assert store.get_dead_letter("dl_2") == second
    assert store.list_dead_letters(status=DeadLetterStatus.OPEN) == [second]
    assert store.list_dead_letters(status=DeadLetterStatus.REPLAYED) == [got]

    store.set_dead_letter_status("dl_1", DeadLetterStatus.DISCARDED)
    assert store.list_dead_letters(status=DeadLetterStatus.DISCARDED) == [
        store.get_dead_letter("dl_1")
    ]


def test_dead_letter_status_errors(store: SqlStore) -> None:
    with pytest.raises(NotFoundError, match="dl_ghost"):
        store.set_dead_letter_status("dl_ghost", DeadLetterStatus.REPLAYED)
    store.add_dead_letter(first := _letter("dl_1"))
    with pytest.raises(ConfigError, match="OPEN, REPLAYED, DISCARDED"):
        store.set_dead_letter_status("dl_1", "RETRIED")  # type: ignore[arg-type]
    assert store.get_dead_letter("dl_1") == first


# run leases


def test_first_acquire_wins_and_others_get_it_back(store: SqlStore) -> None:
    mine = RunLease("key-1", "run_a", "host-1:101", heartbeat_at=utcnow().astimezone(IST))
    assert store.acquire_lease(mine, stale_after_s=60) == mine
    theirs = RunLease("key-1", "run_b", "host-2:202")
    held = store.acquire_lease(theirs, stale_after_s=60)
    assert held == mine
    assert held.heartbeat_at.tzinfo == UTC
    assert held.to_dict() == mine.to_dict()
    # the same run asking again is told it holds the lease; another key is independent
    assert store.acquire_lease(replace(mine, owner="x"), stale_after_s=60).run_id == "run_a"
    other = RunLease("key-2", "run_b", "host-2:202")
    assert store.acquire_lease(other, stale_after_s=60) == other
    assert _count(store, m.run_leases) == 2


def test_stale_lease_is_taken_over(store: SqlStore) -> None:
    dead = RunLease("key-1", "run_dead", "host-1:1", heartbeat_at=T0)
    assert store.acquire_lease(dead, stale_after_s=60) == dead
    fresh = RunLease("key-1", "run_new", "host-2:2")
    assert store.acquire_lease(fresh, stale_after_s=60) == fresh
    late = RunLease("key-1", "run_late", "host-3:3")
    assert store.acquire_lease(late, stale_after_s=60) == fresh
    # the old holder's heartbeat and release no longer touch the lease
    store.heartbeat_lease("key-1", "run_dead")
    store.release_lease("key-1", "run_dead")
    assert store.acquire_lease(late, stale_after_s=60) == fresh


def test_heartbeat_prevents_takeover(store: SqlStore) -> None:
    old = utcnow() - timedelta(seconds=30)
    holder = RunLease("key-1", "run_a", "host-1:1", heartbeat_at=old)
    other = RunLease("key-2", "run_a", "host-1:1", heartbeat_at=old)
    store.acquire_lease(holder, stale_after_s=20)
    store.acquire_lease(other, stale_after_s=20)
    before = utcnow()
    store.heartbeat_lease("key-1", "run_a")
    store.heartbeat_lease("key-2", "run_b")  # not the holder: no effect

    held = store.acquire_lease(RunLease("key-1", "run_b", "host-2:2"), stale_after_s=20)
    assert (held.run_id, held.owner) == ("run_a", "host-1:1")
    assert held.heartbeat_at >= before
    taker = RunLease("key-2", "run_b", "host-2:2")
    assert store.acquire_lease(taker, stale_after_s=20) == taker


def test_release_lets_a_new_owner_in(store: SqlStore) -> None:
    store.release_lease("key-1", "run_a")  # nothing to release: no error
    first = RunLease("key-1", "run_a", "host-1:1")
    second = RunLease("key-1", "run_b", "host-2:2")
    store.acquire_lease(first, stale_after_s=60)
    store.release_lease("key-1", "run_b")  # not the holder: no effect
    assert store.acquire_lease(second, stale_after_s=60) == first
    store.release_lease("key-1", "run_a")
    assert _count(store, m.run_leases) == 0
    assert store.acquire_lease(second, stale_after_s=60) == second


@pytest.mark.parametrize("stale_after_s", [0, -1.0, float("nan"), float("inf")])
def test_acquire_lease_needs_a_positive_stale_window(store: SqlStore, stale_after_s: float) -> None:
    with pytest.raises(ConfigError, match="stale_after_s"):
        store.acquire_lease(RunLease("key-1", "run_a", "me"), stale_after_s=stale_after_s)
    assert _count(store, m.run_leases) == 0


PROCESSES = 4
KEYS = [f"fresh-{n}" for n in range(6)] + [f"stale-{n}" for n in range(6)]


def _race_for_leases(url: str, run_id: str, barrier: Any, results: Any) -> None:
    """Child process: open a store, then for each key race the others for its lease."""
    holders: list[str] = []
    with SqlStore(url) as store:
        store.get_progress("warm-up")  # connect before the race starts
        for key in KEYS:
            barrier.wait(timeout=120)
            lease = RunLease(key, run_id, f"owner-of-{run_id}")
            holders.append(store.acquire_lease(lease, stale_after_s=60).run_id)
    results.put((run_id, holders))


@pytest.mark.slow
def test_processes_racing_for_a_lease_have_exactly_one_winner(store: SqlStore) -> None:
    # fresh-*: nobody holds the key, the race is for the insert; stale-*: a dead run holds
    # it, the race is for the takeover.
    for key in KEYS:
        if key.startswith("stale-"):
            store.acquire_lease(RunLease(key, "run_dead", "gone", T0), stale_after_s=60)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_race_for_leases, args=(store.url, f"run_{i}", barrier, results))
        for i in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    try:
        seen = dict(results.get(timeout=300) for _ in procs)
    except queue.Empty:
        seen = {}
    for proc in procs:
        proc.join(timeout=60)
    assert [proc.exitcode for proc in procs] == [0] * PROCESSES
    assert len(seen) == PROCESSES

    for n, key in enumerate(KEYS):
        winners = [run_id for run_id, holders in seen.items() if holders[n] == run_id]
        assert len(winners) == 1, f"{key}: winners {winners}"
        assert {holders[n] for holders in seen.values()} == set(winners)
        held = store.acquire_lease(RunLease(key, "run_check", "me"), stale_after_s=60)
        assert (held.run_id, held.owner) == (winners[0], f"owner-of-{winners[0]}")


# migrations


def test_migrating_a_0001_database_to_head_keeps_its_rows(store_url: str) -> None:
    run = RunRecord(
        run_id="run_1",
        pipeline="payments",
        dataset_urn=URN,
        partition={"ds": "2025-03-01"},
        status=RunStatus.SUCCEEDED,
        idempotency_key="key-1",
        engine="process",
        chunk_size=50_000,
        started_at=T0,
    )
    evidence = Evidence(URN, "run_1", Stage.SILVER, "G3", GateResult.PASS, None, {"n": 1}, T0)
    transition = Transition("run_1", None, "PENDING", "signalfactory", "created", at=T0)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.attributes["url"] = store_url
    with SqlStore(store_url) as old:  # creates the SQLite file's folder
        command.upgrade(cfg, "0001")
        old.create_run(run)
        old.add_evidence(evidence)
        old.append_transition(transition)

    def state() -> tuple[set[str], list[str]]:
        engine = create_engine(store_url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                version = "SELECT version_num FROM signalfactory_alembic_version"
                found = [row[0] for row in conn.execute(text(version))]
                return set(inspect(conn).get_table_names()), found
        finally:
            engine.dispose()

    tables, version = state()
    assert version == ["0001"]
    assert not tables & RUNTIME_TABLES

    with open_store(store_url) as store:
        tables, version = state()
        assert version == [HEAD]
        assert tables >= RUNTIME_TABLES
        assert store.get_run("run_1") == run
        assert store.list_evidence() == [evidence]
        assert store.list_transitions() == [transition]
        store.add_checkpoint(checkpoint := Checkpoint("run_1", 0, {"rows_out": 1}))
        assert store.list_checkpoints("run_1") == [checkpoint]

    command.downgrade(cfg, "0001")  # and back: only the runtime tables go
    tables, version = state()
    assert version == ["0001"]
    assert not tables & RUNTIME_TABLES
    with SqlStore(store_url) as old:
        assert old.get_run("run_1") == run
