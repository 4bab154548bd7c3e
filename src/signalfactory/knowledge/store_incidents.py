"""The incidents part of ``SqlStore``: incidents, alert deliveries and deployments.

Like :mod:`signalfactory.knowledge.store_runtime`, it relies on the plumbing of ``SqlStore``
(``_conn``, ``_insert``, ``_upsert``, ``_select``) and is not meant to be used on its own.

At most one incident per dedup key (dataset|kind|signature) is OPEN at any time: the schema
enforces it (``incidents.open_key`` is unique, NULL once resolved), so a second open incident
for the same cause is refused with a ``Terminal`` error naming the one already open.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import update
from sqlalchemy.sql import ColumnElement

from signalfactory.core.errors import ConfigError, NotFoundError
from signalfactory.core.observability import Deployment, Incident, IncidentStatus, Severity
from signalfactory.core.records import _plain, new_id, utcnow
from signalfactory.knowledge import models as m
from signalfactory.knowledge import models_incidents as mi
from signalfactory.knowledge.plumbing import StorePlumbing

__all__ = ["AlertDelivery", "AlertEvent", "DeliveryStatus", "IncidentsStoreMixin"]


class AlertEvent(StrEnum):
    """What happened to an incident: what an alert announces."""

    OPENED = "OPENED"
    UPDATED = "UPDATED"
    RESOLVED = "RESOLVED"


class DeliveryStatus(StrEnum):
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class AlertDelivery:
    """One hand-over of one incident event to one alert sink, and how it went.

    ``severity`` is the incident's severity announced: an escalation (UPDATED to a higher
    severity) is a new event; ``attempts`` counts the sink's tries (retries included).
    """

    incident_id: str
    sink: str
    event: AlertEvent
    severity: Severity
    status: DeliveryStatus
    attempts: int
    error: str | None = None
    at: datetime = field(default_factory=utcnow)
    delivery_id: str = field(default_factory=lambda: new_id("dlv"))

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}


class IncidentsStoreMixin(StorePlumbing):
    """Methods of ``SqlStore`` for incidents, alert deliveries and deployments."""

    # incidents

    def add_incident(self, incident: Incident) -> None:
        """Record a new incident; refused (``Terminal``) if one with its key is already open."""
        what = f"incident {incident.incident_id!r} ({incident.dedup_key})"
        fix = (
            "an incident id is recorded once and only one incident per dataset, kind and "
            "signature may be open: update the open one (find_open_incident) instead"
        )
        self._insert(mi.incidents, _incident_row(incident), what, fix)

    def update_incident(self, incident: Incident) -> None:
        """Overwrite the stored incident of ``incident.incident_id`` with ``incident``."""
        t = mi.incidents
        row = _incident_row(incident)
        del row["incident_id"]
        stmt = update(t).where(t.c.incident_id == incident.incident_id).values(**row)
        with self._conn(write=True) as conn:
            found = conn.execute(stmt).rowcount
        if not found:
            raise NotFoundError(
                f"cannot update incident {incident.incident_id!r}: no such incident in the "
                f"metadata store at {self.display_url}; add_incident records new ones"
            )

    def get_incident(self, incident_id: str) -> Incident | None:
        t = mi.incidents
        rows = self._select(t, t.c.incident_id == incident_id)
        return m.from_row(Incident, rows[0]) if rows else None

    def list_incidents(
        self,
        status: IncidentStatus | str | None = None,
        dataset_urn: str | None = None,
        *,
        dedup_key: str | None = None,
        limit: int = 0,
    ) -> list[Incident]:
        """Incidents, newest opened first, filtered by every argument that is not ``None``."""
        t = mi.incidents
        pairs = (
            (t.c.status, None if status is None else str(_incident_status(status))),
            (t.c.dataset_urn, dataset_urn),
            (t.c.dedup_key, dedup_key),
        )
        where = [column == value for column, value in pairs if value is not None]
        order = (t.c.opened_at.desc(), t.c.incident_id.desc())
        rows = self._select(t, *where, order_by=order, limit=limit)
        return [m.from_row(Incident, r) for r in rows]

    def find_open_incident(self, dedup_key: str) -> Incident | None:
        """The OPEN incident of ``dedup_key`` (dataset|kind|signature), if there is one."""
        t = mi.incidents
        rows = self._select(t, t.c.open_key == dedup_key)
        return m.from_row(Incident, rows[0]) if rows else None

    # alert deliveries

    def record_delivery(self, delivery: AlertDelivery) -> None:
        what = f"alert delivery {delivery.delivery_id!r}"
        self._insert(mi.alert_deliveries, m.to_row(delivery), what)

    def list_deliveries(
        self,
        incident_id: str | None = None,
        sink: str | None = None,
        status: DeliveryStatus | str | None = None,
    ) -> list[AlertDelivery]:
        """Deliveries in the order they were recorded, filtered by every non-``None`` argument."""
        t = mi.alert_deliveries
        pairs = (
            (t.c.incident_id, incident_id),
            (t.c.sink, sink),
            (t.c.status, None if status is None else str(_delivery_status(status))),
        )
        where = [column == value for column, value in pairs if value is not None]
        return [m.from_row(AlertDelivery, r) for r in self._select(t, *where)]

    # deployments

    def add_deployment(self, deployment: Deployment) -> None:
        what = f"deployment {deployment.deployment_id!r} of {deployment.deploy_ref!r}"
        self._insert(mi.deployments, m.to_row(deployment), what)

    def list_deployments(
        self,
        pipeline: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Deployment]:
        """Deployments oldest first; ``since``/``until`` bound ``recorded_at`` (inclusive)."""
        t = mi.deployments
        where: list[ColumnElement[bool]] = []
        if pipeline is not None:
            where.append(t.c.pipeline == pipeline)
        if since is not None:
            where.append(t.c.recorded_at >= m.to_utc(since))
        if until is not None:
            where.append(t.c.recorded_at <= m.to_utc(until))
        order = (t.c.recorded_at, t.c.deployment_id)
        return [m.from_row(Deployment, r) for r in self._select(t, *where, order_by=order)]


def _incident_row(incident: Incident) -> dict[str, Any]:
    row = m.to_row(incident)
    row["dedup_key"] = incident.dedup_key
    row["open_key"] = incident.dedup_key if incident.status is IncidentStatus.OPEN else None
    return row


def _incident_status(status: IncidentStatus | str) -> IncidentStatus:
    try:
        return IncidentStatus(str(status).upper())
    except ValueError:
        allowed = ", ".join(s.value for s in IncidentStatus)
        raise ConfigError(
            f"unknown incident status {status!r}; expected one of {allowed}"
        ) from None


def _delivery_status(status: DeliveryStatus | str) -> DeliveryStatus:
    try:
        return DeliveryStatus(str(status).upper())
    except ValueError:
        allowed = ", ".join(s.value for s in DeliveryStatus)
        raise ConfigError(
            f"unknown delivery status {status!r}; expected one of {allowed}"
        ) from None
