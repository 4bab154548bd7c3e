"""One MetadataStore conformance suite, run against SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from signalfactory.core.errors import ConfigError, NotFoundError, StoreError, Terminal
from signalfactory.core.protocols import MetadataStore
from signalfactory.core.records import (
    CertificationState,
    CertificationStatus,
    DatasetRecord,
    Evidence,
    GateResult,
    LifecycleEvent,
    LifecycleEventType,
    QuarantineRecord,
    RunRecord,
    RunStatus,
    Stage,
    StageTiming,
    Transition,
)
from signalfactory.knowledge import SqlStore, open_store
from signalfactory.knowledge import models as m

IST = timezone(timedelta(hours=5, minutes=30))
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
URN = "urn:sf:dataset:payments.transactions"
HEAD = "0007"
TABLES = {
    "datasets",
    "runs",
    "transitions",
    "evidence",
    "lifecycle_events",
    "certification",
    "quarantine",
    "checkpoints",
    "run_progress",
    "dead_letters",
    "run_leases",
} | m.OBSERVABILITY_TABLES


# helpers


def _run(run_id: str, *, started_at: datetime = T0, key: str = "key-1", **kw: object) -> RunRecord:
    fields: dict[str, object] = {
        "run_id": run_id,
        "pipeline": "payments",
        "dataset_urn": URN,
        "partition": {"ds": "2025-03-01", "region": "eu"},
        "status": RunStatus.RUNNING,
        "idempotency_key": key,
        "engine": "process",
        "chunk_size": 50_000,
        "started_at": started_at,
    }
    fields.update(kw)
    return RunRecord(**fields)  # type: ignore[arg-type]


def _evidence(run_id: str = "run_1", gate: str = "G3_CONTRACT", **kw: object) -> Evidence:
    fields: dict[str, object] = {
        "dataset_urn": URN,
        "run_id": run_id,
        "stage": Stage.SILVER,
        "gate": gate,
        "result": GateResult.FAIL,
        "failure_signature": "TYPE_DRIFT:amount:DECIMAL→STRING",
        "metrics": {"rows": 10, "null_rate": 0.25, "columns": {"amount": {"drift": ["a", 1]}}},
        "timestamp": T0,
        "failure_signatures": ("TYPE_DRIFT:amount:DECIMAL→STRING", "NULLS:customer_id"),
        "context": {"quarantine_table": "q_payments", "certified_view_status": "HELD"},
    }
    fields.update(kw)
    return Evidence(**fields)  # type: ignore[arg-type]


# schema and migrations


def test_store_satisfies_protocol(store: SqlStore) -> None:
    as_protocol: MetadataStore = store
    assert as_protocol.url == store.url


def test_migrate_creates_tables_and_is_idempotent(store: SqlStore) -> None:
    store.create_run(_run("run_1"))
    store.migrate()
    store.migrate()
    engine = create_engine(store.url, poolclass=NullPool)
    try:
        names = set(inspect(engine).get_table_names())
        assert names >= TABLES
        with engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM signalfactory_alembic_version"))
            assert [row[0] for row in version] == [HEAD]
            indexes = {ix["name"] for ix in inspect(conn).get_indexes("runs")}
            assert {"ix_runs_dataset_urn", "ix_runs_idempotency_key"} <= indexes
            assert "ix_evidence_run_id" in {
                ix["name"] for ix in inspect(conn).get_indexes("evidence")
            }
            assert {"ix_dead_letters_run_id", "ix_dead_letters_status"} <= {
                ix["name"] for ix in inspect(conn).get_indexes("dead_letters")
            }
    finally:
        engine.dispose()
    assert store.get_run("run_1") == _run("run_1")


def test_models_match_the_migrations(store: SqlStore) -> None:
    assert set(m.metadata.tables) == TABLES  # so the comparison covers every table
    engine = create_engine(store.url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            opts = {"version_table": "signalfactory_alembic_version"}
            context = MigrationContext.configure(conn, opts=opts)
            assert compare_metadata(context, m.metadata) == []
    finally:
        engine.dispose()


# datasets


def test_dataset_round_trip_and_upsert(store: SqlStore) -> None:
    assert store.get_dataset(URN) is None
    record = DatasetRecord(
        urn=URN,
        owner_team="payments-data",
        tier="gold",
        spec={"columns": [{"name": "amount", "type": "DECIMAL(18,2)"}], "note": "Zürich ✓"},
        policy={"gates": {"G3": {"max_null_rate": 0.01}}},
        source_files={"dataset.yaml": "/repo/payments/dataset.yaml"},
        registered_at=datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=IST),
    )
    store.put_dataset(record)
    got = store.get_dataset(URN)
    assert got == record
    assert got is not None
    assert got.registered_at.tzinfo == UTC
    assert list(got.spec) == ["columns", "note"]  # key order survives

    updated = replace(record, tier="silver", policy={"gates": {}})
    store.put_dataset(updated)
    other = replace(record, urn="urn:sf:dataset:a.first")
    store.put_dataset(other)
    assert store.list_datasets() == [other, updated]


# runs


def test_run_round_trip_with_every_field(store: SqlStore) -> None:
    stages = (
        StageTiming("bronze", T0, T0 + timedelta(seconds=1.5), rows_in=10, rows_out=9),
        StageTiming("silver", T0.astimezone(IST), T0 + timedelta(seconds=3), 9, 8),
    )
    record = _run(
        "run_full",
        started_at=T0.astimezone(IST),
        status=RunStatus.SUCCEEDED,
        finished_at=T0 + timedelta(minutes=5),
        certification_status=CertificationStatus.HELD_AT_PREVIOUS,
        certified_version=7,
        rows_read=10,
        rows_written=8,
        rows_quarantined=1,
        rows_dropped=1,
        quarantine_table="payments_q_run_full",
        stages=stages,
        error="TYPE_DRIFT: amount DECIMAL→STRING",
        reconciliation={"balanced": False, "detail": {"in": 10, "out": [8, 1, 1]}},
    )
    store.create_run(record)
    got = store.get_run("run_full")
    assert got == record
    assert got is not None
    assert got.started_at.tzinfo == UTC
    assert got.stages[1].started_at.tzinfo == UTC
    assert got.to_dict() == record.to_dict()
    assert store.get_run("run_missing") is None


def test_naive_datetimes_are_taken_as_utc(store: SqlStore) -> None:
    store.create_run(_run("run_naive", started_at=datetime(2025, 3, 1, 12, 0)))
    got = store.get_run("run_naive")
    assert got is not None
    assert got.started_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_update_run_replaces_the_row(store: SqlStore) -> None:
    store.create_run(_run("run_1"))
    done = _run(
        "run_1",
        status=RunStatus.FAILED,
        finished_at=T0 + timedelta(seconds=30),
        error="boom",
        reconciliation={"ok": False},
    )
    store.update_run(done)
    assert store.get_run("run_1") == done
    assert store.list_runs() == [done]


def test_update_run_of_unknown_run_raises_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFoundError, match="run_ghost"):
        store.update_run(_run("run_ghost"))
    assert store.get_run("run_ghost") is None


def test_create_run_twice_is_refused(store: SqlStore) -> None:
    store.create_run(_run("run_1"))
    with pytest.raises(Terminal, match="run_1"):
        store.create_run(_run("run_1", status=RunStatus.FAILED))
    assert store.get_run("run_1") == _run("run_1")


def test_list_runs_newest_first_with_filter_and_limit(store: SqlStore) -> None:
    old = _run("run_old", started_at=T0)
    new = _run("run_new", started_at=T0 + timedelta(hours=1))
    mid = _run("run_mid", started_at=(T0 + timedelta(minutes=30)).astimezone(IST))
    elsewhere = _run("run_x", started_at=T0 + timedelta(hours=2), dataset_urn="urn:other")
    for record in (old, new, mid, elsewhere):
        store.create_run(record)
    assert store.list_runs() == [elsewhere, new, mid, old]
    assert store.list_runs(dataset_urn=URN) == [new, mid, old]
    assert store.list_runs(dataset_urn=URN, limit=2) == [new, mid]
    assert store.list_runs(dataset_urn="urn:none") == []
    with pytest.raises(ConfigError):
        store.list_runs(limit=0)


def test_find_runs_by_key_newest_first(store: SqlStore) -> None:
    first = _run("run_a", key="k-1", started_at=T0)
    second = _run("run_b", key="k-1", started_at=T0 + timedelta(seconds=1))
    store.create_run(first)
    store.create_run(second)
    store.create_run(_run("run_c", key="k-2"))
    assert store.find_runs_by_key("k-1") == [second, first]
    assert store.find_runs_by_key("k-unknown") == []


# audit trail, evidence, events (append-only)


def test_transitions_keep_insertion_order(store: SqlStore) -> None:
    at = T0 + timedelta(hours=1)
    trail = [
        Transition("run_1", None, "PENDING", "signalfactory", "created", at=at),
        Transition("run_1", "PENDING", "RUNNING", "signalfactory", "started", at=T0),
        Transition(URN, "NOT_EVALUATED", "CERTIFIED", "alice@example.com", "v1→v2", at=at),
        Transition("run_1", "RUNNING", "FAILED", "signalfactory", "G3 failed", at=at),
    ]
    for entry in trail:
        store.append_transition(entry)
    assert store.list_transitions() == trail
    assert store.list_transitions(subject="run_1") == [trail[0], trail[1], trail[3]]
    assert store.list_transitions(subject="nobody") == []


def test_evidence_round_trip_every_field(store: SqlStore) -> None:
    item = _evidence(timestamp=T0.astimezone(IST))
    store.add_evidence(item)
    [got] = store.list_evidence()
    assert got == item
    assert got.failure_signatures == ("TYPE_DRIFT:amount:DECIMAL→STRING", "NULLS:customer_id")
    assert got.timestamp.tzinfo == UTC
    assert got.to_dict() == item.to_dict()


def test_evidence_order_and_filters(store: SqlStore) -> None:
    items = [
        _evidence("run_1", "G1_RESOLUTION", result=GateResult.PASS, failure_signature=None),
        _evidence("run_2", "G2_SCHEMA", dataset_urn="urn:other", timestamp=T0 - timedelta(1)),
        _evidence("run_1", "G3_CONTRACT", stage=Stage.GOLD, result=GateResult.WARN),
        _evidence("run_2", "G4_VOLUME"),
    ]
    for item in items:
        store.add_evidence(item)
    assert store.list_evidence() == items
    assert store.list_evidence(run_id="run_1") == [items[0], items[2]]
    assert store.list_evidence(dataset_urn=URN) == [items[0], items[2], items[3]]
    assert store.list_evidence(run_id="run_2", dataset_urn=URN) == [items[3]]


def test_evidence_is_append_only(store: SqlStore) -> None:
    first = _evidence()
    twin = _evidence()  # identical content, its own evidence_id
    assert first.evidence_id != twin.evidence_id
    store.add_evidence(first)
    store.add_evidence(twin)
    assert store.list_evidence() == [first, twin]
    with pytest.raises(Terminal, match=first.evidence_id):
        store.add_evidence(replace(first, result=GateResult.PASS))
    assert store.list_evidence() == [first, twin]
    for kind in ("evidence", "event", "transition"):
        mutators = [
            name
            for name in dir(store)
            if kind in name and name.startswith(("update", "delete", "remove", "put", "set"))
        ]
        assert mutators == [], f"{kind} must be append-only, found {mutators}"


def test_events_round_trip_order_and_filters(store: SqlStore) -> None:
    events = [
        LifecycleEvent(LifecycleEventType.JOB_RUN_STARTED, "run_1", URN, {"engine": "process"}),
        LifecycleEvent(
            LifecycleEventType.DATASET_WRITE_COMMITTED,
            "run_1",
            URN,
            {"version": 3, "files": ["part-0.parquet"], "note": "DECIMAL→STRING"},
            timestamp=T0.astimezone(IST),
        ),
        LifecycleEvent(LifecycleEventType.JOB_RUN_FAILED, "run_2", "urn:other", {}),
        LifecycleEvent(LifecycleEventType.JOB_RUN_COMPLETED, "run_1", URN, {"rows": 8}),
    ]
    for item in events:
        store.add_event(item)
    assert store.list_events() == events
    assert store.list_events(run_id="run_1") == [events[0], events[1], events[3]]
    assert store.list_events(dataset_urn="urn:other") == [events[2]]
    assert store.list_events(event_type="DatasetWriteCommitted") == [events[1]]
    assert store.list_events(run_id="run_1", event_type=LifecycleEventType.JOB_RUN_COMPLETED) == [
        events[3]
    ]


# certification and quarantine


def test_certification_single_row_per_dataset(store: SqlStore) -> None:
    assert store.get_certification(URN) is None
    first = CertificationState(URN, CertificationStatus.NOT_EVALUATED, None, None, None, "/lake/p")
    store.put_certification(first)
    assert store.get_certification(URN) == first
    held = CertificationState(
        URN, CertificationStatus.CERTIFIED, 4, T0.astimezone(IST), "run_9", "/lake/p"
    )
    store.put_certification(held)
    got = store.get_certification(URN)
    assert got == held
    assert got is not None
    assert got.last_certified_at is not None
    assert got.last_certified_at.tzinfo == UTC
    engine = create_engine(store.url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(m.certification)).scalar_one()
    finally:
        engine.dispose()
    assert count == 1


def test_quarantine_round_trip_order_and_filter(store: SqlStore) -> None:
    records = [
        QuarantineRecord(
            URN,
            "run_1",
            Stage.SILVER,
            "payments_q_run_1",
            "/lake/quarantine/payments_q_run_1",
            rows=3,
            batch_level=False,
            reasons={"TYPE_DRIFT:amount:DECIMAL→STRING": 2, "NULLS:id": 1},
            partition={"ds": "2025-03-01"},
            created_at=T0.astimezone(IST),
        ),
        QuarantineRecord(
            "urn:other", "run_2", Stage.BRONZE, "o_q", "/lake/q/o", 100, True, {"G2": 100}, {}
        ),
        QuarantineRecord(URN, "run_3", Stage.GOLD, "p_q3", "/lake/q/p3", 0, True, {}, {}),
    ]
    for record in records:
        store.add_quarantine(record)
    assert store.list_quarantine() == records
    assert store.list_quarantine(dataset_urn=URN) == [records[0], records[2]]
    assert store.list_quarantine()[1].batch_level is True


def test_non_finite_metrics_are_stored_as_null(store: SqlStore) -> None:
    store.add_evidence(_evidence(metrics={"ratio": float("nan"), "max": float("inf"), "n": 1}))
    [got] = store.list_evidence()
    assert got.metrics == {"ratio": None, "max": None, "n": 1}


# lifecycle and sharing


def test_open_store_twice_and_closed_store(store_url: str) -> None:
    with open_store(store_url) as first:
        first.create_run(_run("run_1"))
    with open_store(store_url) as second:
        assert second.get_run("run_1") == _run("run_1")
    with pytest.raises(StoreError, match="closed"):
        second.list_runs()
    second.close()  # closing twice is harmless


def test_sqlite_file_is_created_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "sf.db"
    with open_store(f"sqlite:///{path}") as store:
        store.create_run(_run("run_1"))
        engine = create_engine(store.url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                mode = conn.execute(text("PRAGMA journal_mode")).scalar_one()
        finally:
            engine.dispose()
    assert path.is_file()
    assert mode == "wal"


def test_two_stores_share_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with open_store(url) as a, open_store(url) as b:
        a.create_run(_run("run_1"))
        assert b.get_run("run_1") == _run("run_1")
        b.add_evidence(item := _evidence())
        assert a.list_evidence() == [item]
        done = _run("run_1", status=RunStatus.SUCCEEDED)
        b.update_run(done)
        assert a.get_run("run_1") == done


def test_two_processes_write_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'shared.db'}"  # the processes race to migrate it
    code = (
        "import sys\n"
        "from signalfactory.knowledge import open_store\n"
        "from signalfactory.core.records import Transition\n"
        "with open_store(sys.argv[1]) as s:\n"
        "    for i in range(50):\n"
        "        s.append_transition(Transition(sys.argv[2], None, str(i), 'proc', 'load'))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, url, f"p{n}"]) for n in range(3)]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0, 0]
    with open_store(url) as store:
        for n in range(3):
            assert [t.to_status for t in store.list_transitions(f"p{n}")] == [
                str(i) for i in range(50)
            ]


@pytest.mark.postgres
def test_plain_postgresql_url_uses_psycopg(postgres_url: str) -> None:
    plain = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    with open_store(plain) as store:
        assert store.url.startswith("postgresql+psycopg://")
        store.create_run(_run("run_1"))
        assert store.get_run("run_1") == _run("run_1")


# errors


def test_unreachable_server_raises_store_error_without_password() -> None:
    url = "postgresql+psycopg://postgres:secretpw@127.0.0.1:1/x"
    with pytest.raises(StoreError) as caught:
        open_store(url)
    message = str(caught.value)
    assert "secretpw" not in message
    assert "postgresql+psycopg://postgres:***@127.0.0.1:1/x" in message
    assert "SIGNALFACTORY_DATABASE_URL" in message
    assert "start the database server" in message
    with SqlStore(url) as unopened:
        assert "secretpw" not in repr(unopened)
        assert "secretpw" not in unopened.display_url


def test_invalid_url_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="not a valid SQLAlchemy URL"):
        SqlStore("not a url")
    with pytest.raises(ConfigError, match="nosuchdb"):
        SqlStore("nosuchdb://host/db")
