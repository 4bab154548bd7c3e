"""Our runs in the lineage graph (LineageRecorder) and as OpenLineage events (emitter).

A real pipeline run with both hooks: the emitted NDJSON is checked structurally, then
re-ingested into a second store, which must hold the same graph as the recorder built.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from openlineage.client.transport.transport import Transport
from sqlalchemy import select

from factories import DAY1, URN, Project, orders, pipeline_doc
from signalfactory.api import SignalFactory
from signalfactory.knowledge import SqlStore, open_store
from signalfactory.knowledge import models_lineage as ml
from signalfactory.knowledge.lineage import dag_run, downstream, ingest_openlineage, upstream
from signalfactory.pipeline.openlineage_hook import LineageRecorder, OpenLineageEmitter
from signalfactory.pipeline.runner import RunOutcome
from signalfactory.production.spec import load_pipeline

UPSTREAM = "dataset:s3://lake:raw/orders"
OURS = f"dataset:signalfactory:{URN}"


def run_with(project: Project, sf: SignalFactory, *hooks: Any, dt: str = DAY1) -> RunOutcome:
    runner = sf.runner()
    runner.hooks.hooks.extend(hooks)
    return runner.run(load_pipeline(project.pipeline_yaml), {"dt": dt})


@pytest.fixture
def sf(project: Project) -> SignalFactory:
    project.write(pipeline={**pipeline_doc(), "upstream": [UPSTREAM]})
    project.partition(DAY1, orders(40, seed=3))
    return project.open()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def snapshot(store: SqlStore) -> dict[str, Any]:
    """The graph, without the bookkeeping columns that may differ (first/last seen, facets)."""
    picks = {
        "lineage_nodes": ("node_id", "kind", "namespace", "name"),
        "lineage_runs": (
            "run_id",
            "job_id",
            "state",
            "event_time",
            "started_at",
            "ended_at",
            "nominal_start",
            "partition_key",
            "parent_run_id",
            "error_message",
        ),
        "lineage_run_io": ("run_id", "dataset_id", "direction"),
        "lineage_edges": ("src_id", "dst_id", "last_run_id", "updated_at"),
        "lineage_dataset_edges": ("upstream", "downstream", "job_id", "last_run_id"),
        "lineage_run_events": ("event_key", "run_id", "event_type", "event_time"),
    }
    out: dict[str, Any] = {}
    with store._conn() as conn:
        for name, cols in picks.items():
            t = ml.metadata.tables[name]
            rows = conn.execute(select(*(t.c[c] for c in cols))).all()
            out[name] = sorted(tuple(r) for r in rows)
    return out


def test_our_run_is_recorded_emitted_and_round_trips(
    project: Project, sf: SignalFactory, tmp_path: Path
) -> None:
    target = tmp_path / "ol" / "events.ndjson"
    emitter = OpenLineageEmitter(f"file://{target}", store=sf.store)
    outcome = run_with(project, sf, LineageRecorder(sf.store), emitter)
    assert outcome.run.status == "SUCCEEDED"
    run_id = outcome.run.run_id

    # the recorder: upstream node, source file and our dataset, with the pipeline between
    hops = upstream(sf.store, URN)
    assert UPSTREAM in {h.node_id for h in hops}
    files = [h for h in hops if h.namespace == "file"]
    assert len(files) == 1
    assert files[0].name.endswith(".csv")
    assert {h.jobs for h in hops} == {("job:signalfactory:orders_daily",)}
    assert [h.node_id for h in downstream(sf.store, UPSTREAM)] == [OURS]
    (run,) = sf.store.lineage_runs(dataset_id=OURS, direction="out")
    assert (run.run_id, run.state, run.partition_key) == (run_id, "COMPLETE", f"dt={DAY1}")

    # the emitted events
    start, complete = lines(target)
    assert [start["eventType"], complete["eventType"]] == ["START", "COMPLETE"]
    for event in (start, complete):
        assert str(uuid.UUID(event["run"]["runId"])) == event["run"]["runId"]
        assert event["run"]["facets"]["signalfactory_run"]["run_id"] == run_id
        assert (event["job"]["namespace"], event["job"]["name"]) == (
            "signalfactory",
            "orders_daily",
        )
        assert {(i["namespace"], i["name"]) for i in event["inputs"]} >= {
            ("s3://lake", "raw/orders")
        }
        assert [o["name"] for o in event["outputs"]] == [URN]
    assert complete["run"]["facets"]["nominalTime"]["nominalStartTime"].startswith(DAY1)
    output = complete["outputs"][0]
    fields = [f["name"] for f in output["facets"]["schema"]["fields"]]
    assert fields[:3] == ["order_id", "customer_id", "order_total"]
    stats = output["outputFacets"]["outputStatistics"]
    assert stats["rowCount"] == outcome.run.rows_written == 40
    assert stats["size"] > 0
    assertions = output["facets"]["dataQualityAssertions"]["assertions"]
    assert len(assertions) == len(outcome.evidence)
    assert all(a["success"] for a in assertions)
    assert {a["severity"] for a in assertions} <= {"error", "warn"}
    assert output["facets"]["dataQualityMetrics"]["rowCount"] == 40
    cert = complete["run"]["facets"]["signalfactory_certification"]
    assert cert["status"] == "CERTIFIED"
    assert cert["certified_version"] == 0
    assert "_schemaURL" in cert
    assert "_producer" in cert

    # re-ingested elsewhere: the same graph, and no duplicate lifecycle events
    with open_store(f"sqlite:///{tmp_path / 'other.db'}") as other:
        text = target.read_text("utf-8").splitlines()
        report = ingest_openlineage(other, text, str(target))
        assert report.ok
        assert report.new_events == 2
        assert report.lifecycle_events == 0
        assert snapshot(other) == snapshot(sf.store)


def test_a_failed_run_emits_fail_with_the_error(
    project: Project, sf: SignalFactory, tmp_path: Path
) -> None:
    target = tmp_path / "fail.ndjson"
    emitter = OpenLineageEmitter(f"file://{target}", store=sf.store)
    outcome = run_with(project, sf, LineageRecorder(sf.store), emitter, dt="2030-01-01")
    assert outcome.run.status == "FAILED"
    events = lines(target)
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    message = events[-1]["run"]["facets"]["errorMessage"]["message"]
    assert message == outcome.run.error
    (run,) = sf.store.lineage_runs(dataset_id=OURS)
    assert run.state == "FAIL"
    assert run.error_message == outcome.run.error
    assert dag_run(sf.store, outcome.run.run_id) == []


class Broken(Transport):
    kind = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def emit(self, event: Any) -> None:
        self.calls += 1
        raise ConnectionError("collector down")


def test_emission_failures_never_break_the_run(project: Project, sf: SignalFactory) -> None:
    broken = Broken()
    emitter = OpenLineageEmitter("http://127.0.0.1:9", store=sf.store, transport=broken)
    outcome = run_with(project, sf, emitter)
    assert outcome.run.status == "SUCCEEDED"
    assert broken.calls == 2  # START and COMPLETE were both attempted
    assert emitter._failed_once


def test_dag_run_id_survives_emission_and_reingest(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from signalfactory.core.records import LifecycleEvent, LifecycleEventType

    at = datetime(2026, 2, 16, 2, 0, tzinfo=UTC)
    start = LifecycleEvent(
        LifecycleEventType.JOB_RUN_STARTED,
        "run_sdk_1",
        URN,
        {
            "pipeline": "orders_sdk",
            "dag_run_id": "scheduled__2026-02-15",
            "inputs": [UPSTREAM],
            "partition": {"dt": "2026-02-15"},
        },
        timestamp=at,
    )
    done = LifecycleEvent(
        LifecycleEventType.JOB_RUN_COMPLETED,
        "run_sdk_1",
        URN,
        {"pipeline": "orders_sdk", "rows_written": 7, "partition": {"dt": "2026-02-15"}},
        timestamp=at.replace(minute=9),
    )
    target = tmp_path / "sdk.ndjson"
    with open_store(f"sqlite:///{tmp_path / 'a.db'}") as live:
        recorder = LineageRecorder(live)
        emitter = OpenLineageEmitter(f"file://{target}")
        for event in (start, done):
            recorder.on_event(event)
            emitter.on_event(event)
        first = lines(target)[0]
        assert first["run"]["facets"]["parent"]["job"]["name"] == "orders_sdk"
        with open_store(f"sqlite:///{tmp_path / 'b.db'}") as other:
            assert ingest_openlineage(other, target.read_text().splitlines(), "sdk").ok
            for store in (live, other):
                (task,) = dag_run(store, "scheduled__2026-02-15")
                assert (task.run_id, task.state, task.job) == (
                    "run_sdk_1",
                    "COMPLETE",
                    "orders_sdk",
                )
            assert snapshot(other) == snapshot(live)


def _sdk_events() -> list[Any]:
    from datetime import UTC, datetime

    from signalfactory.core.records import LifecycleEvent, LifecycleEventType

    at = datetime(2026, 2, 16, 2, 0, tzinfo=UTC)
    payload = {"pipeline": "orders_sdk", "partition": {"dt": "2026-02-15"}}
    return [
        LifecycleEvent(LifecycleEventType.JOB_RUN_STARTED, "run_x", URN, payload, timestamp=at),
        LifecycleEvent(
            LifecycleEventType.JOB_RUN_FAILED,
            "run_x",
            URN,
            {**payload, "failure_reason": "boom"},
            timestamp=at.replace(minute=3),
        ),
    ]


def test_console_and_http_transports(capsys: pytest.CaptureFixture[str]) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[tuple[str, dict[str, Any]]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        http = OpenLineageEmitter(url)
        console = OpenLineageEmitter("console")
        for event in _sdk_events():
            http.on_event(event)
            console.on_event(event)
        http.close()
        console.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert [(path, doc["eventType"]) for path, doc in received] == [
        ("/api/v1/lineage", "START"),
        ("/api/v1/lineage", "FAIL"),
    ]
    assert received[1][1]["run"]["facets"]["errorMessage"]["message"] == "boom"
    printed = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [e["eventType"] for e in printed] == ["START", "FAIL"]


def test_an_unsupported_url_is_reported_not_raised() -> None:
    from signalfactory.core.errors import ConfigError
    from signalfactory.pipeline.openlineage_hook import make_transport

    with pytest.raises(ConfigError, match=r"file:///PATH\.ndjson"):
        make_transport("kafka://broker:9092")
    emitter = OpenLineageEmitter("kafka://broker:9092")
    for event in _sdk_events():
        emitter.on_event(event)  # nothing raised
    assert emitter.client is None
    assert emitter._failed_once


def test_failure_signatures_of_our_runs_join_the_graph(project: Project) -> None:
    """A run whose gates fail links its signatures to the run, so every run that hit the
    same failure can be found; a clean run links none."""
    bad = orders(40, seed=4).with_columns(
        pl.when(pl.int_range(pl.len()) < 3)
        .then(pl.lit("FLASH_SALE"))
        .otherwise(pl.col("order_type"))
        .alias("order_type")
    )
    project.partition(DAY1, bad)
    project.partition("2026-02-14", orders(40, seed=5, first_id=1000, day="2026-02-14"))
    sf = project.open()
    flagged = project.run(sf, DAY1).run  # 3 rows quarantined: DQ warns
    clean = project.run(sf, "2026-02-14").run
    runs = sf.store.lineage_runs_with_signature("UNKNOWN_ENUM:order_type:FLASH_SALE")
    assert [r.run_id for r in runs] == [flagged.run_id]
    linked = {row["signature_id"] for row in sf.store.lineage_signatures(flagged.run_id)}
    assert "signature:UNKNOWN_ENUM:order_type:FLASH_SALE" in linked
    assert sf.store.lineage_signatures(clean.run_id) == []


def test_openlineage_url_in_the_settings_turns_emission_on(
    project: Project, tmp_path: Path
) -> None:
    """SignalFactory emits only when OPENLINEAGE_URL (settings.openlineage_url) is set."""
    sink = tmp_path / "emitted.ndjson"
    project.partition(DAY1, orders(20, seed=6))
    quiet = project.open("quiet")
    project.run(quiet, DAY1)
    assert not sink.exists()
    loud = project.open("loud")
    loud.settings = loud.settings.model_copy(update={"openlineage_url": f"file://{sink}"})
    run = project.run(loud, DAY1).run
    events = lines(sink)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert {e["job"]["name"] for e in events} == {run.pipeline}
