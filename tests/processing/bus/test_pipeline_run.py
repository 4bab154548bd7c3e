"""A real pipeline run with BusPublisher hooked in: every record of the run is on the bus once."""

from __future__ import annotations

from factories import DAY1, Project, orders
from signalfactory.pipeline.hooks import RunHook, StoreRecorder
from signalfactory.pipeline.runner import PipelineRunner
from signalfactory.processing.bus import BusPublisher, StoreBus
from signalfactory.production.spec import load_pipeline


def test_every_evidence_and_lifecycle_event_of_a_run_is_published_once(project: Project) -> None:
    project.partition(DAY1, orders(300, seed=4))
    sf = project.open()
    hook = BusPublisher.open("store", store=sf.store, spool_dir=sf.settings.spool_dir)
    hooks: list[RunHook] = [StoreRecorder(sf.store), hook]
    runner = PipelineRunner(
        sf.store,
        sf.settings.lake_root,
        sf.settings.home / "staging",
        pii_key=sf._pii_key,
        hooks=hooks,
    )
    outcome = runner.run(load_pipeline(project.pipeline_yaml, {}), {"dt": DAY1})
    run_id = outcome.run.run_id
    evidence = sf.store.list_evidence(run_id=run_id)
    events = sf.store.list_events(run_id=run_id)
    assert evidence
    assert events
    bus = StoreBus(sf.store)
    got = []
    while batch := bus.consume("rca", "c", max_count=100):
        got += [d.event for d in batch]
        for d in batch:
            bus.ack("rca", d)
    assert sorted(e.id for e in got) == sorted(
        [e.evidence_id for e in evidence] + [e.event_id for e in events]
    )
    by_id = {e.id: e for e in got}
    for record in evidence:
        assert by_id[record.evidence_id].data == record.to_dict()
    types = {e.type.rsplit(".", 1)[-1] for e in got}
    assert {"JobRunStarted", "JobRunCompleted", "DatasetWriteCommitted"} <= types
    assert not sf.settings.spool_dir.exists() or not list(sf.settings.spool_dir.iterdir())
    hook.close()
