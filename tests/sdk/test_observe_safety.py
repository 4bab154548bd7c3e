"""Producer safety: observe() never raises into the job, and its kill switch does nothing."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from factories import DAY1, URN, Project, certified_path, orders, tree_digest
from signalfactory.api import SignalFactory
from signalfactory.core.errors import NotFoundError
from signalfactory.core.records import (
    CertificationStatus,
    Evidence,
    LifecycleEvent,
    RunRecord,
    RunStatus,
)
from signalfactory.pipeline.runner import PipelineRunner
from signalfactory.processing.bus.spool import SpoolingPublisher
from signalfactory.processing.bus.store_bus import StoreBus
from signalfactory.sdk import MemorySpool, WriteStatus, observe
from signalfactory.settings import Settings

from .conftest import lake_files

CLOSED_POSTGRES = "postgresql+psycopg://u@127.0.0.1:1/x"


def _unreachable(tmp_path: Path, how: str) -> Settings:
    if how == "closed-port":
        return Settings(home=tmp_path / "home", database_url=CLOSED_POSTGRES)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the home folder should be", encoding="utf-8")
    return Settings(home=blocker / "home")  # neither the home nor its SQLite file can exist


@pytest.mark.parametrize("how", ["closed-port", "unwritable-sqlite"])
def test_an_unreachable_store_degrades_without_raising(
    tmp_path: Path, how: str, logs: list[dict[str, Any]]
) -> None:
    spool = MemorySpool()
    settings = _unreachable(tmp_path, how)
    with observe(URN, "job_1", partition={"dt": DAY1}, settings=settings, spool=spool) as obs:
        first = obs.write(orders(20, seed=1), layer="bronze")
        second = obs.write(orders(20, seed=1), layer="gold")

    for result in (first, second):
        assert result is not None
        assert result.status is WriteStatus.DEGRADED
        assert result.degraded
        assert not result.certified
        assert result.evidence == ()
    assert obs.result.degraded
    assert obs.result.certification_status is CertificationStatus.NOT_EVALUATED
    assert lake_files(settings.home) == []
    assert [str(e.event_type) for e in spool.events] == ["JobRunStarted", "JobRunCompleted"]
    assert spool.events[0].payload["partition"] == {"dt": DAY1}
    warnings = [e for e in logs if e["event"] == "observe_degraded"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"


def test_a_producer_error_in_a_degraded_run_still_propagates_and_is_spooled(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path / "home", database_url=CLOSED_POSTGRES)
    with pytest.raises(KeyError, match="missing"), observe(URN, settings=settings) as obs:
        raise KeyError("missing")
    kinds = [str(e.event_type) for e in obs.unsent_events]
    assert kinds == ["JobRunStarted", "JobRunFailed"]
    assert obs.unsent_events[1].payload["failure_reason"] == "KeyError: 'missing'"


def test_a_degraded_run_is_spooled_to_disk_and_delivered_later(tmp_path: Path) -> None:
    """Without a spool argument, the events of a degraded run go to the bus spool under
    home/spool; once a store is reachable, flushing delivers each exactly once."""
    settings = Settings(home=tmp_path / "home", database_url=CLOSED_POSTGRES)
    with observe(URN, "job_2", partition={"dt": DAY1}, settings=settings) as obs:
        obs.write(orders(10, seed=2), layer="gold")
    sent = [e.event_id for e in obs.unsent_events]
    assert len(sent) == 2
    assert list(settings.spool_dir.iterdir()), "nothing was spooled to disk"
    with SignalFactory(home=tmp_path / "later") as sf:
        bus = StoreBus(sf.store)
        publisher = SpoolingPublisher(bus, settings.spool_dir)
        assert publisher.flush() == 2
        assert publisher.flush() == 0
        got = bus.consume("rca", "c1", max_count=10)
        assert [d.event.id for d in got] == sent
        assert got[0].event.type == "io.signalfactory.lifecycle.JobRunStarted"


class _BusDown:
    """A run hook whose bus is unreachable: every publish fails."""

    def on_event(self, event: LifecycleEvent) -> None:
        raise ConnectionError("bus unreachable")

    def on_evidence(self, evidence: Evidence) -> None:
        raise ConnectionError("bus unreachable")

    def on_alert(self, alert: Mapping[str, Any]) -> None:
        return None

    def on_run_end(self, run: RunRecord) -> None:
        return None


def test_a_bus_that_is_down_degrades_the_run_and_certifies_nothing(
    registered: SignalFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = SignalFactory.runner

    def with_bus(self: SignalFactory) -> PipelineRunner:
        runner = original(self)
        runner.hooks.hooks.append(_BusDown())
        return runner

    monkeypatch.setattr(SignalFactory, "runner", with_bus)
    with observe(URN, "job_bus", partition={"dt": DAY1}, settings=registered.settings) as obs:
        result = obs.write(orders(30, seed=2), layer="gold")
    assert result is not None
    assert result.status is WriteStatus.DEGRADED
    assert not Path(certified_path(registered)).exists()
    assert [str(e.event_type) for e in obs.unsent_events] == ["JobRunStarted", "JobRunCompleted"]
    run = registered.store.get_run("job_bus")
    assert run is not None
    assert run.status is RunStatus.SUCCEEDED
    assert run.certification_status is CertificationStatus.NOT_EVALUATED
    assert run.error is not None
    assert "degraded" in run.error


def test_the_kill_switch_writes_nothing_and_emits_nothing(
    registered: SignalFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGNALFACTORY_OBSERVE_DISABLED", "1")
    settings = Settings(home=registered.settings.home, pii_key=registered.settings.pii_key)
    before = lake_files(settings.home)
    with observe(URN, "killed", partition={"dt": DAY1}, settings=settings) as obs:
        assert obs.write(orders(10, seed=3), layer="gold") is None
    assert obs.result.disabled
    assert lake_files(settings.home) == before
    assert registered.store.list_runs() == []
    assert registered.store.list_events(run_id="killed") == []
    assert obs.unsent_events == []


def test_an_unregistered_dataset_is_logged_and_ignored(
    registered: SignalFactory, logs: list[dict[str, Any]]
) -> None:
    other = "ds://curated/never_registered"
    with observe(other, "job_x", settings=registered.settings) as obs:
        assert obs.write(orders(5, seed=1), layer="gold") is None
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["observe_unknown_dataset"]
    assert registered.store.list_runs() == []
    assert not obs.result.degraded


def test_strict_mode_raises_on_an_unregistered_dataset(registered: SignalFactory) -> None:
    with (
        pytest.raises(NotFoundError, match="never_registered is not registered"),
        observe("ds://curated/never_registered", settings=registered.settings, strict=True),
    ):
        pass


def test_a_wrong_layer_or_input_is_rejected_not_raised(project: Project) -> None:
    sf = project.open()
    before = tree_digest(sf.settings.home / "lake") if (sf.settings.home / "lake").exists() else []
    with observe(URN, settings=sf.settings) as obs:
        wrong_layer = obs.write(orders(5, seed=1), layer="platinum")
        wrong_input = obs.write([{"order_id": 1}], layer="gold")
    assert wrong_layer is not None
    assert wrong_layer.status is WriteStatus.REJECTED
    assert wrong_input is not None
    assert wrong_input.status is WriteStatus.REJECTED
    after = tree_digest(sf.settings.home / "lake") if (sf.settings.home / "lake").exists() else []
    assert after == before
    run = sf.store.get_run(obs.run_id)
    assert run is not None
    assert run.status is RunStatus.SUCCEEDED
