"""Alerts: built from incident changes, sent to real HTTP receivers, recorded once per event."""

from __future__ import annotations

import json
import pickle
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from signalfactory.core.errors import ConfigError
from signalfactory.core.observability import Severity, Signal, SignalKind, SignalState
from signalfactory.core.records import QuarantineRecord, Stage
from signalfactory.knowledge import SqlStore, open_store
from signalfactory.knowledge.store_incidents import AlertEvent, DeliveryStatus
from signalfactory.processing.alerting import (
    DEFAULT_REMEDIATION,
    Alert,
    AlertDeliveryError,
    AlertSink,
    LogSink,
    SlackSink,
    WebhookSink,
    build_alert,
    dispatch,
    make_sink,
    remediation_for,
    sinks_from_settings,
)
from signalfactory.processing.incidents import IncidentChange, reconcile
from signalfactory.settings import Settings

T0 = datetime(2026, 2, 16, 7, 30, tzinfo=UTC)
URN = "ds://curated/orders_enriched"
RAW_EMAIL = "jane.doe@example.com"
SECRET_PATH = "/services/T000/B000/s3cr3tT0ken"


# a real HTTP receiver on 127.0.0.1


@dataclass
class Receiver:
    """Answers with ``script`` statuses in turn, then ``then`` for every later request."""

    script: list[int] = field(default_factory=list)
    then: int = 200
    bodies: list[Any] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def answer(self, path: str, content_type: str, body: bytes) -> int:
        with self.lock:
            self.paths.append(path)
            self.content_types.append(content_type)
            self.bodies.append(json.loads(body))
            return self.script.pop(0) if self.script else self.then


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            status = state.answer(
                self.path, self.headers.get("Content-Type", ""), self.rfile.read(length)
            )
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}{SECRET_PATH}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = open_store(f"sqlite:///{tmp_path / 'sf.db'}")
    try:
        yield opened
    finally:
        opened.close()


def _signal(
    signature: str = "JOB_NOT_TRIGGERED",
    *,
    at: datetime = T0,
    severity: Severity = Severity.CRITICAL,
    state: SignalState = SignalState.BREACH,
    details: dict[str, Any] | None = None,
    summary: str = "partition dt=2026-02-15 of orders was never started",
) -> Signal:
    return Signal(
        dataset_urn=URN,
        kind=SignalKind.FRESHNESS,
        state=state,
        signature=signature,
        severity=severity,
        evaluated_at=at,
        summary=summary,
        partition="dt=2026-02-15",
        run_id="run_20260215_abc123",
        details=details or {},
    )


def _changes(store: SqlStore, *signals: Signal, at: datetime = T0) -> list[IncidentChange]:
    return reconcile(
        store,
        signals,
        at,
        owner_of=lambda _urn: "data-platform",
        downstream=lambda _urn: ["ds://mart/revenue", "ds://mart/finance"],
    )


def _webhook(url: str, attempts: int = 5, **kw: Any) -> WebhookSink:
    return WebhookSink(url, attempts=attempts, backoff_s=0.001, max_backoff_s=0.005, **kw)


def _quarantine(store: SqlStore, run_id: str, table: str, minute: int) -> None:
    store.add_quarantine(
        QuarantineRecord(
            dataset_urn=URN,
            run_id=run_id,
            stage=Stage.GOLD,
            table_name=table,
            path=f"/lake/quarantine/{table}",
            rows=12,
            batch_level=True,
            reasons={"UNKNOWN_ENUM:order_type:FLASH_SALE": 12},
            partition={"dt": "2026-02-15"},
            created_at=T0 + timedelta(minutes=minute),
        )
    )


# webhook delivery


def test_webhook_retries_503_twice_then_delivers_on_the_third_attempt(
    store: SqlStore, receiver: Receiver
) -> None:
    receiver.script = [503, 503]
    _quarantine(store, "run_20260215_abc123", "quarantine.orders_20260215_old", 1)
    _quarantine(store, "run_20260215_abc123", "quarantine.orders_20260215_run_abc123", 5)
    _quarantine(store, "run_other", "quarantine.orders_other", 9)
    changes = _changes(store, _signal())
    [delivery] = dispatch(store, changes, [_webhook(receiver.url)])
    assert delivery.status is DeliveryStatus.DELIVERED
    assert delivery.attempts == 3
    assert delivery.sink == "webhook"
    assert delivery.error is None
    assert store.list_deliveries(changes[0].incident.incident_id) == [delivery]
    assert len(receiver.bodies) == 3
    assert receiver.bodies[0] == receiver.bodies[2]
    assert receiver.paths == [SECRET_PATH] * 3
    assert receiver.content_types[0] == "application/json"
    body = receiver.bodies[-1]
    incident = changes[0].incident
    assert body["type"] == "io.signalfactory.alert.v1"
    assert body["incident_id"] == incident.incident_id
    assert body["event"] == "OPENED"
    assert body["owner_team"] == "data-platform"
    assert body["dataset_urn"] == URN
    assert body["signature"] == "JOB_NOT_TRIGGERED"
    assert body["severity"] == "CRITICAL"
    assert body["partition"] == "dt=2026-02-15"
    assert body["run_id"] == "run_20260215_abc123"
    # the latest quarantine record of the incident's run
    assert body["quarantine_table"] == "quarantine.orders_20260215_run_abc123"
    assert body["quarantine_location"] == "/lake/quarantine/quarantine.orders_20260215_run_abc123"
    assert "scheduler" in body["remediation"]
    assert body["blast_radius"] == ["ds://mart/revenue", "ds://mart/finance"]
    assert body["explain"] == f"signalfactory explain {incident.incident_id}"


def test_a_receiver_that_always_fails_gives_a_failed_delivery_not_an_exception(
    store: SqlStore, receiver: Receiver
) -> None:
    receiver.then = 500
    changes = _changes(store, _signal())
    [delivery] = dispatch(store, changes, [_webhook(receiver.url, attempts=4)])
    assert delivery.status is DeliveryStatus.FAILED
    assert delivery.attempts == 4
    assert len(receiver.bodies) == 4
    assert delivery.error is not None
    assert "HTTP 500" in delivery.error
    assert "s3cr3tT0ken" not in delivery.error  # webhook paths hold secrets
    assert store.list_deliveries(status="FAILED") == [delivery]
    # a FAILED delivery is tried again by the next dispatch; a DELIVERED one is not
    receiver.then = 200
    [retried] = dispatch(store, changes, [_webhook(receiver.url, attempts=4)])
    assert retried.status is DeliveryStatus.DELIVERED
    assert dispatch(store, changes, [_webhook(receiver.url, attempts=4)]) == []
    assert len(receiver.bodies) == 5


def test_a_4xx_answer_is_not_retried(store: SqlStore, receiver: Receiver) -> None:
    receiver.then = 404
    [delivery] = dispatch(store, _changes(store, _signal()), [_webhook(receiver.url)])
    assert delivery.status is DeliveryStatus.FAILED
    assert delivery.attempts == 1
    assert "HTTP 404" in (delivery.error or "")


def test_429_is_retried(store: SqlStore, receiver: Receiver) -> None:
    receiver.script = [429]
    [delivery] = dispatch(store, _changes(store, _signal()), [_webhook(receiver.url)])
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DELIVERED, 2)


def test_an_unreachable_receiver_is_retried_then_recorded_failed(store: SqlStore) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # nothing listens on ``port`` any more: every attempt is refused
    sink = _webhook(f"http://127.0.0.1:{port}/hook", attempts=3, timeout_s=2.0)
    [delivery] = dispatch(store, _changes(store, _signal()), [sink])
    assert delivery.status is DeliveryStatus.FAILED
    assert delivery.attempts == 3
    assert "ConnectError" in (delivery.error or "")


def test_a_sink_that_raises_anything_is_recorded_failed(store: SqlStore) -> None:
    class Broken:
        name = "broken"

        def send(self, alert: Alert) -> None:
            raise RuntimeError(f"boom {alert.summary}")

    sink: AlertSink = Broken()
    delivery, logged = dispatch(store, _changes(store, _signal()), [sink, LogSink()])
    assert delivery.status is DeliveryStatus.FAILED
    assert delivery.error == "RuntimeError"  # never the message: it may hold data values
    assert logged.status is DeliveryStatus.DELIVERED  # one broken sink does not stop the rest
    assert [d.sink for d in store.list_deliveries()] == ["broken", "log"]


# once per incident event


def test_each_incident_event_is_announced_once_per_sink(
    store: SqlStore, receiver: Receiver
) -> None:
    sinks: list[AlertSink] = [_webhook(receiver.url), LogSink()]
    opened = _changes(store, _signal(severity=Severity.WARNING))
    assert [(d.event, d.sink) for d in dispatch(store, opened, sinks)] == [
        (AlertEvent.OPENED, "webhook"),
        (AlertEvent.OPENED, "log"),
    ]
    assert dispatch(store, opened, sinks) == []  # a re-dispatch sends nothing
    # the same cause again at the same severity: updated, not announced
    same = _changes(store, _signal(at=T0 + timedelta(hours=1), severity=Severity.WARNING))
    assert [c.event for c in same] == [AlertEvent.UPDATED]
    assert dispatch(store, same, sinks) == []
    # escalated to CRITICAL: announced once
    worse = _changes(store, _signal(at=T0 + timedelta(hours=2)))
    assert [d.event for d in dispatch(store, worse, sinks)] == [AlertEvent.UPDATED] * 2
    assert dispatch(store, worse, sinks) == []
    healthy = _signal("OK", at=T0 + timedelta(hours=3), state=SignalState.OK)
    resolved = _changes(store, healthy)
    deliveries = dispatch(store, resolved, sinks)
    assert [(d.event, d.severity) for d in deliveries] == [
        (AlertEvent.RESOLVED, Severity.CRITICAL)
    ] * 2
    assert [b["event"] for b in receiver.bodies] == ["OPENED", "UPDATED", "RESOLVED"]
    assert receiver.bodies[1]["severity"] == "CRITICAL"


# what an alert says


def test_quarantine_location_from_the_signal_details_wins(store: SqlStore) -> None:
    _quarantine(store, "run_20260215_abc123", "quarantine.from_store", 1)
    details = {
        "quarantine_table": "quarantine.orders_20260215_run_abc123",
        "quarantine_location": "s3://lake/quarantine/orders/run_abc123",
    }
    [change] = _changes(store, _signal("SCHEMA_BREAK:order_total:DECIMAL→STRING", details=details))
    alert = build_alert(store, change)
    assert alert.quarantine_table == "quarantine.orders_20260215_run_abc123"
    assert alert.quarantine_location == "s3://lake/quarantine/orders/run_abc123"
    assert "producer changed a column type" in alert.remediation


def test_no_quarantine_known_leaves_it_empty(store: SqlStore) -> None:
    [change] = _changes(store, _signal("VOLUME_ANOMALY"))
    alert = build_alert(store, change)
    assert (alert.quarantine_table, alert.quarantine_location) == (None, None)
    assert "upstream partition" in alert.remediation


@pytest.mark.parametrize(
    ("signature", "phrase"),
    [
        ("JOB_NOT_TRIGGERED", "trigger the run"),
        ("JOB_FAILED", "failed run's error"),
        ("JOB_RUNNING_SLOW", "usual duration"),
        ("PARTIAL_WRITE", "watermark"),
        ("VOLUME_ANOMALY", "check the upstream partition"),
        ("UNKNOWN_ENUM:order_type:FLASH_SALE", "outside the allowed set"),
        ("FIELD_ADDED:coupon_code", "new field"),
        ("FIELD_REMOVED:coupon_code", "disappeared"),
        ("TYPE_CHANGED:order_total", "changed type"),
        ("LOW_COMPLIANCE", "compliance rate"),
        ("NULL_RATE:customer_id", "null rate"),
        ("job_failed", "failed run's error"),
    ],
)
def test_remediation_by_signature_kind(signature: str, phrase: str) -> None:
    assert phrase in remediation_for(signature)


def test_unknown_signatures_get_the_default_remediation() -> None:
    assert remediation_for("SOMETHING_NEW:x") == DEFAULT_REMEDIATION
    assert remediation_for("") == DEFAULT_REMEDIATION


def test_slack_payload_has_text_header_fields_remediation_and_explain(
    store: SqlStore, receiver: Receiver
) -> None:
    sink = SlackSink(receiver.url, attempts=1)
    [change] = _changes(store, _signal("UNKNOWN_ENUM:order_type:FLASH_SALE"))
    [delivery] = dispatch(store, [change], [sink])
    assert (delivery.sink, delivery.status) == ("slack", DeliveryStatus.DELIVERED)
    [payload] = receiver.bodies
    iid = change.incident.incident_id
    assert payload["text"].startswith("[CRITICAL] Incident opened:")
    assert "(owner data-platform)" in payload["text"]
    header, summary, facts, remedy, blast, context = payload["blocks"]
    assert header["type"] == "header"
    assert header["text"]["type"] == "plain_text"
    assert "UNKNOWN_ENUM:order_type:FLASH_SALE" in header["text"]["text"]
    assert len(header["text"]["text"]) <= 150
    assert summary["text"]["text"] == change.incident.summary
    labels = [f["text"].split("\n")[0] for f in facts["fields"]]
    assert labels == ["*Owner*", "*Dataset*", "*Signature*", "*Severity*", "*Partition*", "*Run*"]
    assert facts["fields"][0]["text"] == "*Owner*\ndata-platform"
    assert "outside the allowed set" in remedy["text"]["text"]
    assert "`ds://mart/revenue`" in blast["text"]["text"]
    assert context["type"] == "context"
    assert f"signalfactory explain {iid}" in context["elements"][0]["text"]


# no data values in logs


def test_log_output_holds_no_raw_pii_or_data_values(store: SqlStore) -> None:
    signal = _signal(
        "UNKNOWN_ENUM:order_type:FLASH_SALE",
        summary=f"a row of {RAW_EMAIL} had a new order_type",
        details={"sample": {"email": RAW_EMAIL, "order_total": "1234.56"}},
    )
    with capture_logs() as logs:
        changes = _changes(store, signal)
        dispatch(store, changes, [LogSink()])
    [alert_line] = [entry for entry in logs if entry["event"] == "incident_alert"]
    assert alert_line["alert_event"] == "OPENED"
    assert alert_line["signature"] == "UNKNOWN_ENUM:order_type:FLASH_SALE"
    assert alert_line["owner_team"] == "data-platform"
    assert "<redacted>" in alert_line["summary"]
    text = json.dumps(logs, default=str)
    assert RAW_EMAIL not in text
    assert "1234.56" not in text
    # the same through the JSON renderer a CLI run configures
    render = structlog.processors.JSONRenderer()
    lines = [str(render(None, "warning", dict(entry))) for entry in logs]
    assert any("incident_alert" in line for line in lines)
    assert not any(RAW_EMAIL in line for line in lines)


# configuration


def test_sinks_from_settings(tmp_path: Path) -> None:
    bare = Settings(home=tmp_path, alert_webhook_url=None, alert_slack_webhook_url=None)
    assert [s.name for s in sinks_from_settings(bare)] == ["log"]
    full = Settings(
        home=tmp_path,
        alert_webhook_url="https://hooks.example.com/alerts",
        alert_slack_webhook_url="https://hooks.slack.com/services/T/B/secret",
    )
    sinks = sinks_from_settings(full)
    assert [s.name for s in sinks] == ["log", "webhook", "slack"]
    assert isinstance(sinks[2], SlackSink)
    assert "secret" not in repr(sinks[2])


def test_make_sink_and_bad_configuration() -> None:
    assert isinstance(make_sink("log"), LogSink)
    webhook = make_sink("webhook", url="http://127.0.0.1:9/x", attempts=2)
    assert isinstance(webhook, WebhookSink)
    assert webhook.attempts == 2
    with pytest.raises(ConfigError, match="log, webhook, slack"):
        make_sink("pagerduty")
    with pytest.raises(ConfigError, match="http"):
        WebhookSink("ftp://example.com/hook")
    with pytest.raises(ConfigError, match="attempts"):
        WebhookSink("https://example.com/hook", attempts=0)


def test_delivery_errors_pickle_with_their_attempts() -> None:
    clone = pickle.loads(pickle.dumps(AlertDeliveryError("gave up", 4)))
    assert (type(clone), clone.message, clone.attempts) == (AlertDeliveryError, "gave up", 4)
