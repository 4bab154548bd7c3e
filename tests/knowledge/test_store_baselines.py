"""Baselines in the store: versioned per dataset, history kept, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from signalfactory.core.records import use_clock
from signalfactory.knowledge import SqlStore, open_store

URN = "ds://curated/orders_enriched"
OTHER = "ds://curated/payments"


def _put(store: SqlStore, urn: str, rows: int, run_id: str | None = None) -> int:
    doc = {"row_count": rows, "schema_fields": {"a": "INTEGER"}, "note": "Zürich ✓"}
    stored = store.put_baseline(
        urn,
        doc,
        schema_fingerprint=f"sha256:{rows}",
        row_count=rows,
        source="/lake/gold_certified/orders",
        run_id=run_id,
        changes={"new_enum_values": {"order_type": ["FLASH_SALE"]}} if run_id else None,
    )
    return stored.version


def test_versions_history_and_lookups(store: SqlStore) -> None:
    assert store.get_baseline(URN) is None
    assert store.list_baselines(URN) == []
    with use_clock(datetime(2026, 2, 14, 3, tzinfo=UTC)):
        assert _put(store, URN, 100) == 1
    with use_clock(datetime(2026, 2, 15, 3, tzinfo=UTC)):
        assert _put(store, URN, 250, run_id="run_b") == 2
    assert _put(store, OTHER, 7) == 1  # versions count per dataset

    latest = store.get_baseline(URN)
    assert latest is not None
    assert (latest.version, latest.row_count, latest.run_id) == (2, 250, "run_b")
    assert latest.document["note"] == "Zürich ✓"
    assert dict(latest.changes) == {"new_enum_values": {"order_type": ["FLASH_SALE"]}}
    assert latest.created_at.date().isoformat() == "2026-02-15"
    assert latest.created_at.tzinfo == UTC
    earlier = store.get_baseline(URN, at=datetime(2026, 2, 14, 12, tzinfo=UTC))
    assert earlier is not None
    assert earlier.version == 1
    assert earlier.changes == {}
    assert store.get_baseline(URN, at=datetime(2026, 2, 1, tzinfo=UTC)) is None
    assert [b.version for b in store.list_baselines(URN)] == [1, 2]
    assert store.find_baseline_of_run("run_b") == latest
    assert store.find_baseline_of_run("run_x") is None


def test_concurrent_writers_get_distinct_versions(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            versions = list(pool.map(lambda i: _put(stores[i % 4], URN, i), range(12)))
        assert sorted(versions) == list(range(1, 13))
        assert [b.version for b in stores[0].list_baselines(URN)] == list(range(1, 13))
    finally:
        for s in stores:
            s.close()
