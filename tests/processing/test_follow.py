"""``follow``: evidence on the bus re-evaluates its dataset at once; the rest waits its turn."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from processing.signals.histories import HistorySpec, generate, write
from signalfactory.core.observability import EVIDENCE_EVENT_TYPE, CloudEvent
from signalfactory.knowledge import SqlStore, open_store
from signalfactory.processing.bus import StoreBus
from signalfactory.processing.follow import WATCH_GROUP, follow
from signalfactory.processing.service import EvaluationReport

URN = "ds://curated/followed"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    with open_store(f"sqlite:///{tmp_path / 'sf.db'}") as store:
        write(store, generate(HistorySpec(urn=URN, start=date(2026, 2, 1), days=10)))
        yield store


def _envelope(subject: str, n: int) -> CloudEvent:
    return CloudEvent(
        id=f"ev-{subject}-{n}",
        source="urn:signalfactory:run:test",
        type=EVIDENCE_EVENT_TYPE,
        subject=subject,
        time=datetime(2026, 2, 11, 8, tzinfo=UTC),
        data={"gate": "G3_SCHEMA", "result": "PASS"},
    )


def test_evidence_triggers_a_scoped_evaluation_and_is_acked_after_it(store: SqlStore) -> None:
    bus = StoreBus(store)
    reports: list[EvaluationReport] = []
    stream = follow(store, bus, interval_s=3600, stop=lambda: len(reports) >= 2)
    reports.append(next(stream))  # the first pass judges every dataset
    assert reports[0].scope is None
    assert {s.dataset_urn for s in reports[0].signals} == {URN}
    bus.publish(_envelope("ds://not/registered", 1))  # acked, but nothing to evaluate
    bus.publish(_envelope(URN, 2))
    reports.append(next(stream))
    assert reports[1].scope == (URN,)
    assert {s.dataset_urn for s in reports[1].signals} == {URN}
    assert list(stream) == []  # stop() ends the stream
    # Both deliveries were acknowledged: the group has nothing left, nothing to redeliver.
    assert bus.consume(WATCH_GROUP, "other", max_count=10) == []


def test_without_events_the_next_full_pass_comes_at_the_interval(store: SqlStore) -> None:
    bus = StoreBus(store)
    ticks = iter([0.0, 0.0, 5.0, 31.0, 31.0])
    reports: list[EvaluationReport] = []
    stream = follow(
        store, bus, interval_s=30, clock=lambda: next(ticks), stop=lambda: len(reports) >= 2
    )
    reports.extend(stream)
    assert [r.scope for r in reports] == [None, None]
