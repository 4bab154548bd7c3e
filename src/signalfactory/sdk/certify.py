"""After a write's commits: evidence, the certification decision, events and alerts.

The gold half follows ``PipelineRunner._finalize``/``_certify`` step for step (same evidence
context, same CERTIFICATION evidence, same certification state and audit entry), so an
observed run and a pipeline run leave the same records for the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from signalfactory.core.records import (
    CertificationState,
    CertificationStatus,
    Evidence,
    GateResult,
    LifecycleEvent,
    LifecycleEventType,
    Stage,
    utcnow,
)
from signalfactory.enforcement.catalog import CERTIFICATION
from signalfactory.enforcement.outcomes import Decision
from signalfactory.pipeline.alerts import build_alerts
from signalfactory.pipeline.publish import Published, record_certification
from signalfactory.sdk.stages import Target

ACTOR = "signalfactory.sdk"


@dataclass(frozen=True)
class Finalized:
    evidence: list[Evidence]
    alerts: list[dict[str, Any]]
    certification_status: CertificationStatus | None
    certified_version: int | None


def _certify(
    target: Target,
    previous: CertificationState | None,
    status: CertificationStatus,
    version: int | None,
    certified_at: datetime | None,
    held: bool,
) -> None:
    """Record where the certified view stands, exactly as a pipeline run does."""
    record_certification(
        target.store,
        target.run,
        target.paths.certified,
        previous,
        status,
        version,
        certified_at,
        held=held,
        actor=ACTOR,
    )


def finalize_write(
    target: Target,
    layer: str,
    decisions: list[Decision],
    prior_holds: list[Decision],
    published: Published,
    previous: CertificationState | None,
) -> Finalized:
    """Emit the write's evidence, decide certification on gold, announce each commit."""
    started = utcnow()
    holding = [d for d in (*prior_holds, *decisions) if d.holds]
    held = bool(holding)
    gold = layer == "gold"
    status = CertificationStatus.HELD_AT_PREVIOUS if held else CertificationStatus.CERTIFIED
    previous_version = previous.certified_version if previous else None
    certified = published.commits.get("certified")
    version = certified.version if certified else previous_version
    held_context: dict[str, Any] = {
        "quarantine_table": published.quarantine_table,
        "quarantine_path": published.quarantine_path,
    }
    if gold or held:
        held_context["certified_view_status"] = str(status)
        held_context["previous_certified_version"] = (
            f"v{previous_version}" if previous_version is not None else None
        )
    evidence = [
        replace(d.evidence, context={**d.evidence.context, **held_context})
        if d.holds or (d.evidence.result is not GateResult.PASS and published.quarantine_table)
        else d.evidence
        for d in decisions
    ]
    if gold:
        evidence.append(
            Evidence(
                dataset_urn=target.dataset.urn,
                run_id=target.run.run_id,
                stage=Stage.GOLD,
                gate=CERTIFICATION,
                result=GateResult.FAIL if held else GateResult.PASS,
                failure_signature=holding[0].evidence.failure_signature if holding else None,
                failure_signatures=tuple(d.evidence.failure_signature or "" for d in holding),
                metrics={
                    "rows_certified": published.rows_certified,
                    "certified_version": version,
                },
                timestamp=started,
                context={
                    **held_context,
                    "disposition": str(status),
                    "certified_version": version,
                },
            )
        )
    for ev in evidence:
        target.hooks.evidence(ev)
    if gold:
        _certify(target, previous, status, version, started if certified else None, held)
    for name, done in published.commits.items():
        if name == "quarantine":
            continue  # the dataset was not written: freshness must not count it
        target.hooks.event(
            LifecycleEvent(
                LifecycleEventType.DATASET_WRITE_COMMITTED,
                target.run.run_id,
                target.dataset.urn,
                {
                    "layer": name,
                    "table_path": done.path,
                    "commit_version": done.version,
                    "rows_written": done.rows,
                    "bytes_written": done.bytes_written,
                    "files_added": done.files_added,
                    "partition_key": ",".join(f"{k}={v}" for k, v in target.partition.items()),
                },
            )
        )
    alerts = build_alerts(target.dataset, target.policy, evidence, held_context, held)
    for alert in alerts:
        target.hooks.alert(alert)
    return Finalized(
        evidence=evidence,
        alerts=alerts,
        certification_status=status if gold else None,
        certified_version=version if gold else None,
    )
