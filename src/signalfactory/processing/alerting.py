"""Alerts to the owning team about incidents: log, JSON webhook, Slack-compatible webhook (O6).

:func:`dispatch` turns each :class:`~signalfactory.processing.incidents.IncidentChange` into one
:class:`Alert` (owner team, dataset, signature, severity, quarantine location, suggested
remediation, blast radius, and the ``signalfactory explain`` command to run) and hands it to
every sink, recording one :class:`AlertDelivery` per sink. An incident event is announced once
per sink: OPENED and RESOLVED once, UPDATED only when the severity rose (once per level), and a
re-dispatch never re-sends what was delivered (a FAILED delivery is tried again).

A sink that cannot deliver never raises into the caller: the webhook sinks
(:mod:`signalfactory.processing.alert_sinks`) retry connection errors, 5xx and 429 with
exponential backoff, then give up and the delivery is recorded FAILED. Alerts carry no data
values: summaries and signatures pass through the PII patterns, and the log sink writes only
the alert's fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from signalfactory.core.observability import Severity
from signalfactory.core.records import _plain
from signalfactory.knowledge.store_incidents import AlertDelivery, AlertEvent, DeliveryStatus
from signalfactory.processing.alert_sinks import (
    SINK_TYPES,
    AlertDeliveryError,
    AlertSink,
    LogSink,
    SlackSink,
    WebhookSink,
    make_sink,
)
from signalfactory.processing.incidents import IncidentChange, redact

if TYPE_CHECKING:
    from signalfactory.knowledge.store import SqlStore
    from signalfactory.settings import Settings

__all__ = [
    "SINK_TYPES",
    "Alert",
    "AlertDeliveryError",
    "AlertSink",
    "LogSink",
    "SlackSink",
    "WebhookSink",
    "build_alert",
    "dispatch",
    "make_sink",
    "remediation_for",
    "sinks_from_settings",
]

log = structlog.get_logger("signalfactory.alerts")

_REMEDIATION: Mapping[str, str] = {
    "JOB_NOT_TRIGGERED": "The job never started for this partition: check the scheduler (a "
    "paused DAG, a missing trigger, a sensor still waiting on its upstream) and trigger the run.",
    "JOB_FAILED": "The run failed: read the failed run's error (signalfactory explain shows it), "
    "fix the cause, then re-run the partition.",
    "JOB_RUNNING_SLOW": "The run started but has not committed within its usual duration: check "
    "the cluster (queueing, skew, lost executors) and whether it is stuck; re-run if it is.",
    "PARTIAL_WRITE": "A write was committed but the partition watermark did not advance: check "
    "which layer or step did not finish, then re-run the partition (runs are idempotent).",
    "VOLUME_ANOMALY": "The row count is far from its baseline: check the upstream partition "
    "(missing or duplicated input, a changed filter) before re-running.",
    "MIN_ROWS": "Fewer rows than expected arrived; check the upstream partition.",
    "SCHEMA_BREAK": "The producer changed a column type; fix the producer or approve a schema "
    "change in the policy bundle, then re-run the partition.",
    "TYPE_MISMATCH": "Values do not have the declared type; fix the producer or the policy "
    "bundle's schema.constraints, then re-run.",
    "MISSING_FIELD": "A required column is missing; restore it upstream and re-run.",
    "FIELD_REMOVED": "A field disappeared; restore it upstream, or drop it from the contract "
    "after checking the consumers in the blast radius.",
    "FIELD_ADDED": "A new field appeared; declare it in schema.constraints if it is expected "
    "(or use mode: compatible).",
    "UNEXPECTED_FIELD": "A new column arrived under a strict schema; declare it in "
    "schema.constraints or switch to mode: compatible.",
    "FIELD_RETYPED": "A field changed type; fix the producer or approve the schema change in "
    "the policy bundle, then re-run.",
    "UNKNOWN_ENUM": "A value outside the allowed set arrived: add it to the policy bundle if it "
    "is legitimate, or fix the producer; then re-run the quarantined partition.",
    "LOW_COMPLIANCE": "The contract compliance rate fell below its target: inspect the "
    "quarantine table's _sf_reasons column for the failing rules and fix the source.",
    "NULL_RATE": "A field's null rate moved away from its baseline: check the upstream "
    "extract or join that fills it.",
    "INVALID_ROWS_ABOVE_THRESHOLD": "Too many rows failed their rules; inspect the quarantine "
    "table's _sf_reasons column and fix the source.",
    "PII_DETECTED": "Add a pii.detection rule (tokenize, mask or redact) for this pattern.",
}
_ALIASES = {
    "TYPE_CHANGED": "FIELD_RETYPED",
    "FIELD_TYPE_CHANGED": "FIELD_RETYPED",
    "NULL_RATE_HIGH": "NULL_RATE",
    "NULL_RATE_ANOMALY": "NULL_RATE",
    "COMPLIANCE_BELOW_TARGET": "LOW_COMPLIANCE",
}
DEFAULT_REMEDIATION = (
    "Inspect the evidence and the quarantine table (signalfactory explain shows both), fix the "
    "cause, then re-run the partition."
)


def remediation_for(signature: str) -> str:
    """The suggested remediation for a signature, by its kind (the part before the first ':')."""
    kind = signature.split(":", 1)[0].strip().upper()
    kind = _ALIASES.get(kind, kind)
    return _REMEDIATION.get(kind, DEFAULT_REMEDIATION)


@dataclass(frozen=True, slots=True)
class Alert:
    """What the owning team is told about one incident event (PRD FR-10 §4)."""

    incident_id: str
    event: AlertEvent
    owner_team: str | None
    dataset_urn: str
    kind: str
    signature: str
    severity: Severity
    summary: str
    remediation: str
    explain: str
    at: datetime
    opened_at: datetime
    partition: str | None = None
    run_id: str | None = None
    quarantine_table: str | None = None
    quarantine_location: str | None = None
    blast_radius: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}

    @property
    def title(self) -> str:
        verb = {"OPENED": "opened", "UPDATED": "escalated", "RESOLVED": "resolved"}[self.event]
        return f"[{self.severity}] Incident {verb}: {self.dataset_urn} {self.signature}"


def build_alert(store: SqlStore, change: IncidentChange) -> Alert:
    """The alert announcing ``change``; the quarantine location comes from the signal's
    details or else the latest quarantine record of the incident's run."""
    incident, details = change.incident, change.signal.details
    table = _text(details.get("quarantine_table"))
    location = _text(details.get("quarantine_location") or details.get("quarantine_path"))
    run_id = incident.run_id or change.signal.run_id
    if table is None and run_id is not None:
        records = [q for q in store.list_quarantine(incident.dataset_urn) if q.run_id == run_id]
        if records:
            latest = max(records, key=lambda q: q.created_at)
            table, location = latest.table_name, location or latest.path
    return Alert(
        incident_id=incident.incident_id,
        event=change.event,
        owner_team=incident.owner_team,
        dataset_urn=incident.dataset_urn,
        kind=str(incident.kind),
        signature=redact(incident.signature),
        severity=incident.severity,
        summary=redact(incident.summary),
        remediation=remediation_for(incident.signature),
        explain=f"signalfactory explain {incident.incident_id}",
        at=change.at,
        opened_at=incident.opened_at,
        partition=incident.partition,
        run_id=run_id,
        quarantine_table=table,
        quarantine_location=location,
        blast_radius=incident.blast_radius,
    )


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def sinks_from_settings(settings: Settings) -> list[AlertSink]:
    """The log sink always; a webhook and a Slack sink when their URLs are set."""
    sinks: list[AlertSink] = [LogSink()]
    if settings.alert_webhook_url:
        sinks.append(WebhookSink(settings.alert_webhook_url))
    if settings.alert_slack_webhook_url:
        sinks.append(SlackSink(settings.alert_slack_webhook_url))
    return sinks


# dispatch


def _announced(change: IncidentChange) -> bool:
    return change.event is not AlertEvent.UPDATED or change.escalated


def dispatch(
    store: SqlStore, changes: Sequence[IncidentChange], sinks: Sequence[AlertSink]
) -> list[AlertDelivery]:
    """Send one alert per announced change to every sink; the deliveries recorded, in order.

    Never raises because a sink failed: the failure is recorded as a FAILED delivery.
    """
    recorded: list[AlertDelivery] = []
    for change in changes:
        if not _announced(change):
            continue
        incident = change.incident
        done = {
            (d.event, d.severity, d.sink)
            for d in store.list_deliveries(incident.incident_id, status=DeliveryStatus.DELIVERED)
        }
        pending = [s for s in sinks if (change.event, incident.severity, s.name) not in done]
        if not pending:
            continue
        alert = build_alert(store, change)
        for sink in pending:
            delivery = _deliver(sink, alert, change)
            store.record_delivery(delivery)
            recorded.append(delivery)
    return recorded


def _deliver(sink: AlertSink, alert: Alert, change: IncidentChange) -> AlertDelivery:
    try:
        attempts = sink.send(alert) or 1
    except Exception as exc:  # a sink must never break the evaluation loop
        attempts = exc.attempts if isinstance(exc, AlertDeliveryError) else 1
        error = exc.message if isinstance(exc, AlertDeliveryError) else type(exc).__name__
        log.warning(
            "alert_delivery_failed",
            sink=sink.name,
            incident_id=alert.incident_id,
            alert_event=str(alert.event),
            attempts=attempts,
            error=error,
        )
        return AlertDelivery(
            alert.incident_id,
            sink.name,
            alert.event,
            alert.severity,
            DeliveryStatus.FAILED,
            attempts,
            error=error,
            at=change.at,
        )
    return AlertDelivery(
        alert.incident_id,
        sink.name,
        alert.event,
        alert.severity,
        DeliveryStatus.DELIVERED,
        attempts,
        at=change.at,
    )
