"""Alerts to the owning team: what failed, where the data went, what to do (PRD FR-10 §4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from signalfactory.core.records import Evidence, GateResult
from signalfactory.enforcement.catalog import CERTIFICATION
from signalfactory.enforcement.policy import DatasetSpec, PolicyBundle

_REMEDIATION = {
    "SCHEMA_BREAK": "The producer changed a column type; fix the producer or approve a "
    "schema change in the policy bundle, then re-run the partition.",
    "MISSING_FIELD": "A required column is missing; restore it upstream and re-run.",
    "UNEXPECTED_FIELD": "A new column arrived under a strict schema; declare it in "
    "schema.constraints or switch to mode: compatible.",
    "INVALID_ROWS_ABOVE_THRESHOLD": "Too many rows failed their rules; inspect the "
    "quarantine table's _sf_reasons column and fix the source.",
    "PII_DETECTED": "Add a pii.detection rule (tokenize, mask or redact) for this pattern.",
    "MIN_ROWS": "Fewer rows than expected arrived; check the upstream partition.",
}


def remediation(signature: str) -> str:
    kind = signature.split(":", 1)[0]
    return _REMEDIATION.get(
        kind, "Inspect the quarantine table and the evidence, fix the cause, re-run."
    )


def build_alerts(
    dataset: DatasetSpec,
    policy: PolicyBundle,
    evidence: Sequence[Evidence],
    held_context: Mapping[str, Any],
    held: bool,
) -> list[dict[str, Any]]:
    """One alert per failed gate whose configured level alerts (G0 records only)."""
    alerts = []
    for ev in evidence:
        if ev.result is not GateResult.FAIL or ev.gate == CERTIFICATION:
            continue
        if not policy.gate_level(ev.gate, dataset.level).alerts():
            continue
        alerts.append(
            {
                "owner_team": dataset.owner_team,
                "dataset_urn": dataset.urn,
                "run_id": ev.run_id,
                "stage": str(ev.stage),
                "gate": ev.gate,
                "failure_signature": ev.failure_signature,
                "certified_view_status": held_context["certified_view_status"],
                "quarantine_table": held_context["quarantine_table"],
                "remediation": remediation(ev.failure_signature or ""),
                "severity": "CRITICAL" if held else "WARNING",
            }
        )
    return alerts
