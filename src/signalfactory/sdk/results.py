"""What ``observe()`` hands back to the producer: one result per write and one per run.

Plain values only (no store handles), so a producer may log, return or pickle them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from signalfactory.core.records import CertificationStatus, Evidence, RunStatus


class WriteStatus(StrEnum):
    #: The layer's valid rows were committed (invalid rows, if any, went to quarantine).
    COMMITTED = "COMMITTED"
    #: A gate held the batch: nothing was committed to the layer, the rows are in quarantine.
    HELD = "HELD"
    #: Signal Factory could not work (store, bus or an internal error): nothing was written
    #: and nothing certified; the producer's job goes on.
    DEGRADED = "DEGRADED"
    #: The call itself was wrong (unknown layer, unsupported input type); nothing was done.
    REJECTED = "REJECTED"


@dataclass(frozen=True)
class WriteResult:
    """The outcome of one ``Observation.write``."""

    layer: str
    status: WriteStatus
    rows_in: int = 0
    rows_written: int = 0
    rows_quarantined: int = 0
    quarantine_table: str | None = None
    #: Delta commit versions by table: bronze/silver/gold/certified/quarantine.
    commit_versions: Mapping[str, int] = field(default_factory=dict)
    #: Set on gold writes only: whether the certified table advanced.
    certification_status: CertificationStatus | None = None
    certified_version: int | None = None
    evidence: tuple[Evidence, ...] = ()
    #: Why a write was degraded or rejected (an error type or a short message, never values).
    reason: str | None = None

    @property
    def certified(self) -> bool:
        return self.certification_status is CertificationStatus.CERTIFIED

    @property
    def degraded(self) -> bool:
        return self.status is WriteStatus.DEGRADED

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "status": str(self.status),
            "rows_in": self.rows_in,
            "rows_written": self.rows_written,
            "rows_quarantined": self.rows_quarantined,
            "quarantine_table": self.quarantine_table,
            "commit_versions": dict(self.commit_versions),
            "certification_status": (
                str(self.certification_status) if self.certification_status else None
            ),
            "certified_version": self.certified_version,
            "evidence": [
                {
                    "stage": str(e.stage),
                    "gate": e.gate,
                    "result": str(e.result),
                    "failure_signature": e.failure_signature,
                }
                for e in self.evidence
            ],
            "reason": self.reason,
        }


@dataclass
class ObservationResult:
    """The observed run as a whole; ``obs.result`` (final once the ``with`` block exits)."""

    dataset_urn: str
    run_id: str
    pipeline: str
    status: RunStatus | None = None
    certification_status: CertificationStatus = CertificationStatus.NOT_EVALUATED
    certified_version: int | None = None
    rows_written: int = 0
    rows_quarantined: int = 0
    quarantine_table: str | None = None
    writes: list[WriteResult] = field(default_factory=list)
    #: True when Signal Factory could not do its work for this run (see ``reason``).
    degraded: bool = False
    #: True when the kill switch (``SIGNALFACTORY_OBSERVE_DISABLED``) turned observe() off.
    disabled: bool = False
    reason: str | None = None

    @property
    def certified(self) -> bool:
        return self.certification_status is CertificationStatus.CERTIFIED

    @property
    def evidence(self) -> list[Evidence]:
        return [e for w in self.writes for e in w.evidence]

    def add(self, write: WriteResult) -> WriteResult:
        """Account for one more write of the run."""
        self.writes.append(write)
        self.rows_quarantined += write.rows_quarantined
        self.quarantine_table = write.quarantine_table or self.quarantine_table
        if write.certification_status is not None:
            self.certification_status = write.certification_status
            self.certified_version = write.certified_version
            self.rows_written = write.rows_written if write.certified else 0
        elif self.certification_status is CertificationStatus.NOT_EVALUATED:
            self.rows_written = write.rows_written
        return write
