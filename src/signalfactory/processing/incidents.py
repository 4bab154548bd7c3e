"""Signals become incidents: opened, updated, resolved, deduplicated per dataset and cause (O6).

:func:`reconcile` folds one batch of signals (one evaluation) into the incidents of the store:

* a BREACH signal opens an incident keyed ``(dataset_urn, kind, signature)`` unless one is
  OPEN with that key; then that one is UPDATED: the signal id appended, the severity raised
  when the signal's is higher, ``updated_at``/``partition``/``run_id``/``summary`` taken from
  the newest breach;
* an OPEN incident is RESOLVED by an OK signal of the same dataset and kind (and, where the
  incident has a partition, for that partition or a later one of the same keys: engines judge
  the latest partition) evaluated at or after the incident's latest breach, unless the same
  batch also holds a breach with the incident's key;
* ``blast_radius`` is ``downstream(dataset_urn)`` when the incident opens, ``owner_team`` is
  ``owner_of(dataset_urn)``.

Incident times come from the signals (``opened_at``, ``updated_at`` = the latest breach's
``evaluated_at``, ``resolved_at``), so a replayed history gives the same incidents. ``at`` (the
instant of the reconciliation) is stamped on the returned changes. Reconciling the same signals
again changes nothing: a breach whose signal id an incident of its key already holds is
skipped, and a resolved incident stays resolved.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from signalfactory.core.errors import Terminal
from signalfactory.core.observability import (
    Incident,
    IncidentStatus,
    Severity,
    Signal,
    SignalKind,
)
from signalfactory.core.records import iso, new_id
from signalfactory.enforcement.pii import PII_PATTERNS
from signalfactory.knowledge.store_incidents import AlertEvent

if TYPE_CHECKING:
    from signalfactory.knowledge.store import SqlStore

__all__ = [
    "SEVERITY_RANK",
    "Downstream",
    "IncidentChange",
    "OwnerOf",
    "dedup_key",
    "reconcile",
    "redact",
]

log = structlog.get_logger("signalfactory.incidents")

#: Severities from least to most severe: an incident's severity only ever goes up.
SEVERITY_RANK: dict[Severity, int] = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}

_PII = [re.compile(p) for p in PII_PATTERNS.values()]

OwnerOf = Callable[[str], str | None]
Downstream = Callable[[str], list[str]]


@dataclass(frozen=True, slots=True)
class IncidentChange:
    """What one reconciliation did to one incident; what :func:`alerting.dispatch` announces.

    ``incident`` is the incident after the change; ``signal`` the signal that caused it;
    ``previous_severity`` the severity before an UPDATED (``None`` otherwise).
    """

    event: AlertEvent
    incident: Incident
    signal: Signal
    at: datetime
    previous_severity: Severity | None = None

    @property
    def escalated(self) -> bool:
        """Whether an UPDATED raised the incident's severity."""
        if self.previous_severity is None:
            return False
        return SEVERITY_RANK[self.incident.severity] > SEVERITY_RANK[self.previous_severity]

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": str(self.event),
            "incident": self.incident.to_dict(),
            "signal_id": self.signal.signal_id,
            "at": iso(self.at),
            "previous_severity": None
            if self.previous_severity is None
            else str(self.previous_severity),
        }


def dedup_key(dataset_urn: str, kind: SignalKind | str, signature: str) -> str:
    """The key incidents are deduplicated on; the same as ``Incident.dedup_key``."""
    return f"{dataset_urn}|{kind}|{signature}"


def _key_of(signal: Signal) -> str:
    return dedup_key(signal.dataset_urn, signal.kind, signal.signature)


def redact(text: str) -> str:
    """``text`` with anything shaped like PII (e-mail, phone, SSN, card, IP) replaced."""
    for pattern in _PII:
        text = pattern.sub("<redacted>", text)
    return text


def _summary(signal: Signal) -> str:
    if signal.summary.strip():
        return redact(signal.summary.strip())
    where = f" partition {signal.partition}" if signal.partition else ""
    return f"{signal.dataset_urn}{where}: {signal.kind} breach {signal.signature}"


def _higher(a: Severity, b: Severity) -> Severity:
    return a if SEVERITY_RANK[a] >= SEVERITY_RANK[b] else b


def reconcile(
    store: SqlStore,
    signals: Iterable[Signal],
    at: datetime,
    *,
    owner_of: OwnerOf,
    downstream: Downstream,
) -> list[IncidentChange]:
    """Fold one batch of ``signals`` into the store's incidents; the changes, in order made."""
    batch = list(signals)
    breaches = sorted((s for s in batch if s.breached), key=lambda s: s.evaluated_at)
    oks = sorted((s for s in batch if not s.breached), key=lambda s: s.evaluated_at)
    changes: list[IncidentChange] = []
    for signal in breaches:
        change = _apply_breach(store, signal, at, owner_of=owner_of, downstream=downstream)
        if change is not None:
            changes.append(change)
    breached_keys = {_key_of(s) for s in breaches}
    for signal in oks:
        changes.extend(_apply_ok(store, signal, at, breached_keys))
    return changes


def _apply_breach(
    store: SqlStore,
    signal: Signal,
    at: datetime,
    *,
    owner_of: OwnerOf,
    downstream: Downstream,
) -> IncidentChange | None:
    key = _key_of(signal)
    if any(signal.signal_id in i.signal_ids for i in store.list_incidents(dedup_key=key)):
        return None  # already reconciled
    current = store.find_open_incident(key)
    if current is None:
        opened = _open(store, signal, at, owner_of=owner_of, downstream=downstream)
        if opened is not None:
            return opened
        # another reconciler opened it between our read and our insert: update that one
        current = store.find_open_incident(key)
        if current is None:
            raise Terminal(
                f"cannot open or find the open incident of {key!r} in the metadata store at "
                f"{store.display_url}; retry the evaluation"
            )
    newest = signal.evaluated_at >= current.updated_at
    updated = replace(
        current,
        severity=_higher(current.severity, signal.severity),
        signal_ids=(*current.signal_ids, signal.signal_id),
        updated_at=max(current.updated_at, signal.evaluated_at),
        partition=(signal.partition or current.partition) if newest else current.partition,
        run_id=(signal.run_id or current.run_id) if newest else current.run_id,
        summary=_summary(signal) if newest else current.summary,
    )
    store.update_incident(updated)
    return IncidentChange(AlertEvent.UPDATED, updated, signal, at, current.severity)


def _open(
    store: SqlStore,
    signal: Signal,
    at: datetime,
    *,
    owner_of: OwnerOf,
    downstream: Downstream,
) -> IncidentChange | None:
    """Open an incident for ``signal``; ``None`` if one of its key was opened meanwhile."""
    incident = Incident(
        incident_id=new_id("inc"),
        dataset_urn=signal.dataset_urn,
        kind=signal.kind,
        signature=signal.signature,
        severity=signal.severity,
        status=IncidentStatus.OPEN,
        opened_at=signal.evaluated_at,
        updated_at=signal.evaluated_at,
        summary=_summary(signal),
        signal_ids=(signal.signal_id,),
        partition=signal.partition,
        run_id=signal.run_id,
        owner_team=owner_of(signal.dataset_urn),
        blast_radius=_blast_radius(signal.dataset_urn, downstream),
    )
    try:
        store.add_incident(incident)
    except Terminal:
        if store.find_open_incident(incident.dedup_key) is None:
            raise  # refused for another reason
        return None
    log.info(
        "incident_opened",
        incident_id=incident.incident_id,
        dataset_urn=incident.dataset_urn,
        kind=str(incident.kind),
        severity=str(incident.severity),
    )
    return IncidentChange(AlertEvent.OPENED, incident, signal, at)


def _blast_radius(urn: str, downstream: Downstream) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for node in downstream(urn):
        if node != urn:
            seen.setdefault(node, None)
    return tuple(seen)


def _apply_ok(
    store: SqlStore, signal: Signal, at: datetime, breached_keys: set[str]
) -> list[IncidentChange]:
    changes = []
    for incident in store.list_incidents(IncidentStatus.OPEN, signal.dataset_urn):
        if not _resolves(signal, incident, breached_keys):
            continue
        resolved = replace(
            incident,
            status=IncidentStatus.RESOLVED,
            resolved_at=signal.evaluated_at,
            updated_at=signal.evaluated_at,
        )
        store.update_incident(resolved)
        log.info(
            "incident_resolved",
            incident_id=resolved.incident_id,
            dataset_urn=resolved.dataset_urn,
            kind=str(resolved.kind),
        )
        changes.append(IncidentChange(AlertEvent.RESOLVED, resolved, signal, at))
    return changes


def _resolves(signal: Signal, incident: Incident, breached_keys: set[str]) -> bool:
    if incident.kind != signal.kind or incident.dedup_key in breached_keys:
        return False
    if incident.partition is not None and not _same_or_newer(signal.partition, incident.partition):
        return False
    return signal.evaluated_at >= incident.updated_at


def _same_or_newer(candidate: str | None, partition: str) -> bool:
    """Whether ``candidate`` is ``partition`` or a later partition of the same keys.

    Engines judge the latest partition, so a healthy later partition ends an incident of an
    earlier one (``dt=2026-02-16`` after ``dt=2026-02-15``); values compare as numbers when
    both are digits, else as text (ISO dates sort in time order). Unrelated partitions
    (other keys, or none) never resolve a partition's incident.
    """
    if candidate is None:
        return False
    if candidate == partition:
        return True
    mine, theirs = _parts(candidate), _parts(partition)
    if mine is None or theirs is None or [k for k, _ in mine] != [k for k, _ in theirs]:
        return False
    return [_sortable(v) for _, v in mine] > [_sortable(v) for _, v in theirs]


def _parts(label: str) -> list[tuple[str, str]] | None:
    pairs = []
    for piece in label.replace(",", "/").split("/"):
        key, sep, value = piece.strip().partition("=")
        if not sep or not key:
            return None
        pairs.append((key, value))
    return pairs


def _sortable(value: str) -> tuple[int, int, str]:
    return (0, int(value), "") if value.isdigit() else (1, 0, value)
