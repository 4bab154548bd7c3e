"""Records of the processing plane: bus envelopes, signals, incidents and deployments.

Like :mod:`signalfactory.core.records` these are immutable values that map straight to store
rows and JSON. They import nothing above the core.

Vocabulary kept from the PRD: breach types ``JOB_NOT_TRIGGERED``, ``JOB_FAILED``,
``JOB_RUNNING_SLOW``, ``PARTIAL_WRITE`` (FR-2), ``VOLUME_ANOMALY`` (FR-3), drift signatures such
as ``UNKNOWN_ENUM:order_type:FLASH_SALE`` (FR-5).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from signalfactory.core.records import Evidence, LifecycleEvent, _plain, iso, new_id, utcnow

CLOUDEVENTS_SPECVERSION = "1.0"
EVIDENCE_EVENT_TYPE = "io.signalfactory.evidence.v1"
LIFECYCLE_EVENT_PREFIX = "io.signalfactory.lifecycle."  # + JobRunStarted, ... (FR-1 names)


class SignalKind(StrEnum):
    FRESHNESS = "FRESHNESS"
    VOLUME = "VOLUME"
    SCHEMA_DRIFT = "SCHEMA_DRIFT"
    CONTRACT_COMPLIANCE = "CONTRACT_COMPLIANCE"
    DATA_QUALITY = "DATA_QUALITY"
    ANOMALY = "ANOMALY"


class Severity(StrEnum):
    CRITICAL = "CRITICAL"
    WARNING = "WARNING"
    INFO = "INFO"


class SignalState(StrEnum):
    OK = "OK"
    BREACH = "BREACH"


class IncidentStatus(StrEnum):
    OPEN = "OPEN"
    RESOLVED = "RESOLVED"


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """A CloudEvents 1.0 envelope (structured JSON mode) carried by every evidence bus.

    ``id`` is the de-duplication key: the evidence id or lifecycle event id it wraps, so a
    redelivered or re-published record is recognised by every consumer.
    """

    id: str
    source: str
    type: str
    subject: str
    time: datetime
    data: Mapping[str, Any]
    specversion: str = CLOUDEVENTS_SPECVERSION
    datacontenttype: str = "application/json"

    def to_dict(self) -> dict[str, Any]:
        return {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": iso(self.time),
            "datacontenttype": self.datacontenttype,
            "data": _plain(dict(self.data)),
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> CloudEvent:
        missing = [k for k in ("id", "source", "type", "time", "data") if k not in doc]
        if missing:
            raise ValueError(f"not a CloudEvents envelope: missing {', '.join(missing)}")
        return cls(
            id=str(doc["id"]),
            source=str(doc["source"]),
            type=str(doc["type"]),
            subject=str(doc.get("subject", "")),
            time=datetime.fromisoformat(str(doc["time"]).replace("Z", "+00:00")),
            data=dict(doc["data"]),
            specversion=str(doc.get("specversion", CLOUDEVENTS_SPECVERSION)),
            datacontenttype=str(doc.get("datacontenttype", "application/json")),
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> CloudEvent:
        return cls.from_dict(json.loads(raw))

    @classmethod
    def of_evidence(cls, evidence: Evidence) -> CloudEvent:
        return cls(
            id=evidence.evidence_id,
            source=f"urn:signalfactory:run:{evidence.run_id}",
            type=EVIDENCE_EVENT_TYPE,
            subject=evidence.dataset_urn,
            time=evidence.timestamp,
            data=evidence.to_dict(),
        )

    @classmethod
    def of_lifecycle(cls, event: LifecycleEvent) -> CloudEvent:
        return cls(
            id=event.event_id,
            source=f"urn:signalfactory:run:{event.run_id}",
            type=f"{LIFECYCLE_EVENT_PREFIX}{event.event_type}",
            subject=event.dataset_urn,
            time=event.timestamp,
            data=event.to_dict(),
        )


@dataclass(frozen=True, slots=True)
class Signal:
    """One evaluation of one health signal for one dataset (and partition, when it has one).

    ``signature`` names the cause in the PRD's vocabulary: a breach type (``JOB_FAILED``,
    ``VOLUME_ANOMALY``), a drift signature (``UNKNOWN_ENUM:order_type:FLASH_SALE``), or, for
    a healthy evaluation, ``OK``. ``summary`` says it in plain words; ``details`` holds the
    figures behind it (observed, expected, baseline, deadline, ...).
    """

    dataset_urn: str
    kind: SignalKind
    state: SignalState
    signature: str
    severity: Severity
    evaluated_at: datetime
    summary: str
    partition: str | None = None
    run_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    signal_id: str = field(default_factory=lambda: new_id("sig"))

    @property
    def breached(self) -> bool:
        return self.state is SignalState.BREACH

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class Incident:
    """An open or resolved problem of one dataset with one cause (deduplicated on both).

    ``blast_radius`` lists the downstream datasets in the lineage graph when it was opened.
    """

    incident_id: str
    dataset_urn: str
    kind: SignalKind
    signature: str
    severity: Severity
    status: IncidentStatus
    opened_at: datetime
    updated_at: datetime
    summary: str
    signal_ids: tuple[str, ...] = ()
    partition: str | None = None
    run_id: str | None = None
    owner_team: str | None = None
    blast_radius: tuple[str, ...] = ()
    resolved_at: datetime | None = None

    @property
    def dedup_key(self) -> str:
        return f"{self.dataset_urn}|{self.kind}|{self.signature}"

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class Deployment:
    """A code deployment (``signalfactory deploy record``): a candidate cause for what follows."""

    deploy_ref: str
    pipeline: str
    recorded_at: datetime = field(default_factory=utcnow)
    actor: str = "cli"
    note: str | None = None
    deployment_id: str = field(default_factory=lambda: new_id("dep"))

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}
