"""Deterministic root-cause analysis (PRD FR-6, O8): ``signalfactory explain INCIDENT_ID``.

The walk is the PRD's chain, each step backed by records in the store:

    Incident → Signal → FailureSignature → Run → DAGRun → Upstream Dataset

1. the incident and the latest breach signal behind it;
2. the failure signature and the evidence that carries it (gate, run, quarantine table);
3. the run of the dataset for the partition concerned — or the fact that none started;
4. the DAG run that run belongs to (``dag_run_id``) and its failed task runs;
5. the upstream datasets in the lineage graph, nearest first: for each, whether the same
   partition was written, how many rows it had against its own recent commits, and which job
   failed writing it. The deepest upstream dataset with a problem is the root cause;
6. deployments (``signalfactory deploy record``) of the pipeline in the days before the first
   breach: candidate causes for drift and failures that follow them.

Nothing here is heuristic or learned: the same store gives the same explanation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from signalfactory.consumption import rca_facts as facts
from signalfactory.consumption.rca_facts import Step, when
from signalfactory.consumption.rca_upstream import walk_upstream
from signalfactory.core.errors import NotFoundError
from signalfactory.core.observability import Incident, Signal, SignalKind
from signalfactory.core.records import LifecycleEvent, RunRecord, RunStatus
from signalfactory.knowledge.store import SqlStore

__all__ = ["Explanation", "Step", "explain"]

#: How far back deployments are candidate causes.
DEPLOY_WINDOW = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class Explanation:
    incident_id: str
    dataset_urn: str
    conclusion: str
    chain: tuple[Step, ...]
    root_cause: Step | None
    candidate_causes: tuple[Step, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "dataset_urn": self.dataset_urn,
            "conclusion": self.conclusion,
            "root_cause": self.root_cause.to_dict() if self.root_cause else None,
            "chain": [s.to_dict() for s in self.chain],
            "candidate_causes": [s.to_dict() for s in self.candidate_causes],
        }


def _incident_step(inc: Incident) -> Step:
    return Step(
        "incident",
        inc.incident_id,
        f"{inc.status.lower()} {inc.severity} incident on {inc.dataset_urn}: "
        f"{inc.kind} {inc.signature}" + (f" for {inc.partition}" if inc.partition else ""),
        inc.opened_at,
        {"status": str(inc.status), "signal_ids": list(inc.signal_ids)},
    )


def _signal_step(sig: Signal) -> Step:
    return Step("signal", sig.signal_id, sig.summary, sig.evaluated_at, dict(sig.details))


def _run_step(run: RunRecord) -> Step:
    state = str(run.status)
    if run.status is RunStatus.SUCCEEDED:  # then it was CERTIFIED or HELD_AT_PREVIOUS
        state = f"{state}, {run.certification_status}"
    text = (
        f"run {run.run_id} of pipeline {run.pipeline} for "
        f"{facts.partition_text(run.partition)} started {when(run.started_at)}: {state}"
    )
    if run.error:
        text += f" — {run.error}"
    return Step(
        "run",
        run.run_id,
        text,
        run.started_at,
        {
            "rows_read": run.rows_read,
            "rows_written": run.rows_written,
            "rows_quarantined": run.rows_quarantined,
            "quarantine_table": run.quarantine_table,
        },
    )


def _external_run_step(started: LifecycleEvent | None, failed: LifecycleEvent | None) -> Step:
    event = failed or started
    assert event is not None
    job = str(event.payload.get("job_name") or event.payload.get("pipeline") or event.run_id)
    if failed is not None:
        reason = str(failed.payload.get("failure_reason") or "no reason given")
        text = f"job {job} (run {failed.run_id}) failed at {when(failed.timestamp)}: {reason}"
    else:
        text = f"job {job} (run {event.run_id}) started at {when(event.timestamp)}"
    return Step("run", event.run_id, text, event.timestamp, dict(event.payload))


def _conclusion(
    inc: Incident,
    root: Step | None,
    failed_run: Step | None,
    signature: Step | None,
    sig: Signal | None,
    candidates: Sequence[Step],
    written_upstream: Sequence[str] = (),
) -> str:
    what = {
        SignalKind.FRESHNESS: "is late",
        SignalKind.VOLUME: "has an abnormal volume",
        SignalKind.SCHEMA_DRIFT: "drifted",
        SignalKind.CONTRACT_COMPLIANCE: "is failing its contract",
        SignalKind.DATA_QUALITY: "has a data-quality problem",
    }.get(inc.kind, "is unhealthy")
    where = f" ({inc.partition})" if inc.partition else ""
    head = f"{inc.dataset_urn}{where} {what} ({inc.signature})"
    if root is not None:
        text = f"{head} because {root.text}"
    elif inc.signature == "JOB_NOT_TRIGGERED":
        text = f"{head} because its job was never triggered: no run started for the partition"
        if written_upstream:
            text += f" although its upstream {', '.join(written_upstream)} had been written"
        text += " — check the scheduler"
    elif failed_run is not None:
        text = f"{head} because {failed_run.text}"
    elif signature is not None:
        text = f"{head}: {signature.text}"
    elif sig is not None:
        text = f"{head}: {sig.summary}"
    else:
        text = head
    if candidates and root is None:
        text += f"; candidate cause: {candidates[0].text}"
    return text.rstrip(".") + "."


def _deploys_may_explain(inc: Incident) -> bool:
    """Drift and failures can follow a deployment; lateness of an untriggered job or a volume
    change is explained by the scheduler and upstream data instead."""
    if inc.kind is SignalKind.FRESHNESS:
        return inc.signature in ("JOB_FAILED", "PARTIAL_WRITE", "JOB_RUNNING_SLOW")
    return inc.kind is not SignalKind.VOLUME


def explain(store: SqlStore, incident_id: str) -> Explanation:
    """Walk incident → signal → failure signature → run → DAG run → upstream dataset."""
    inc = store.get_incident(incident_id)
    if inc is None:
        raise NotFoundError(
            f"no incident {incident_id!r}; list them with `signalfactory incidents` "
            "(incidents are opened by `signalfactory signals evaluate` or `watch`)"
        )
    chain: list[Step] = [_incident_step(inc)]
    sig = facts.latest_breach(store, inc)
    at = sig.evaluated_at if sig is not None else inc.updated_at
    partition = inc.partition or (sig.partition if sig else None)
    if sig is not None:
        chain.append(_signal_step(sig))
    signature = facts.signature_step(store, inc, sig)
    if signature is not None:
        chain.append(signature)
    run = facts.run_for(store, inc.dataset_urn, sig.run_id if sig else inc.run_id, partition)
    run_step: Step | None = None
    failed_run: Step | None = None
    dag_run_id: str | None = None
    if run is not None:
        run_step = _run_step(run)
        failed_run = run_step if run.error else None
        dag_run_id = facts.dag_run_of(store, run.run_id)
    else:
        started, failed = facts.external_run(store, inc.dataset_urn, partition, at)
        event = failed or started
        if event is not None:
            run_step = _external_run_step(started, failed)
            failed_run = run_step if failed is not None else None
            dag_run_id = str(event.payload.get("dag_run_id") or "") or None
        elif partition is not None:
            run_step = Step(
                "run",
                f"{inc.dataset_urn}:{partition}",
                f"no run of {inc.dataset_urn} started for {partition} by {when(at)}",
                at,
                {"partition": partition},
            )
    if run_step is not None:
        chain.append(run_step)
    if dag_run_id:
        chain.append(facts.dag_run_step(store, dag_run_id))
    upstream_steps, root = walk_upstream(store, inc.dataset_urn, partition, at)
    chain.extend(upstream_steps)
    candidates: list[Step] = []
    if _deploys_may_explain(inc):
        # Deployments before the first breach are candidate causes for what followed them.
        candidates = facts.deployment_steps(
            store, inc, run, inc.opened_at - DEPLOY_WINDOW, inc.opened_at
        )
    chain.extend(candidates)
    return Explanation(
        inc.incident_id,
        inc.dataset_urn,
        _conclusion(
            inc,
            root,
            failed_run,
            signature,
            sig,
            candidates,
            [s.node for s in chain if s.kind == "upstream_dataset" and "rows" in s.evidence],
        ),
        tuple(chain),
        root,
        tuple(candidates),
    )
