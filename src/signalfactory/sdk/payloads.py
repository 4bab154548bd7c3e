"""The run record and lifecycle-event payloads of an observed run.

Payloads follow the conventions engines rely on (``processing/signals/context.py``) and the
keys the runner adds (``partition``, ``pipeline``), whether they reach the store through the
run hooks or wait in the spool of a degraded run.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from typing import Any

from signalfactory.core.records import RunRecord, RunStatus, utcnow
from signalfactory.pipeline.streaming import scrub
from signalfactory.sdk.results import ObservationResult


def job_name(urn: str) -> str:
    """``ds://curated/orders_enriched`` → ``orders_enriched`` (the default job name)."""
    return urn.rstrip("/").rsplit("/", 1)[-1] or "job"


def safe_name(run_id: str) -> str:
    """A producer's run id as one folder name (Airflow ids hold ``:`` and ``+``; ``/`` too)."""
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", run_id)


def failure_reason(exc: BaseException) -> str:
    """``Type: first line`` of the producer's error, PII-shaped text hidden (as the runner)."""
    lines = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return scrub(lines[0][:500] if lines else type(exc).__name__)


def started(
    *,
    producer_urn: str,
    code_ref: str | None,
    partition: dict[str, str],
    pipeline: str,
    job_name: str,
    dag_run_id: str | None,
    attempt: int,
) -> dict[str, Any]:
    return {
        "producer_urn": producer_urn,
        "scheduled_time": None,
        "code_ref": code_ref,
        "partition": dict(partition),
        "pipeline": pipeline,
        "job_name": job_name,
        "dag_run_id": dag_run_id,
        "observed": True,
        "attempt": attempt,
    }


def completed(
    *,
    started_at: datetime,
    rows_read: int,
    rows_written: int,
    partition: dict[str, str],
    pipeline: str,
    writes: int,
) -> dict[str, Any]:
    return {
        "duration": (utcnow() - started_at).total_seconds(),
        "rows_read": rows_read,
        "rows_written": rows_written,
        "partition": dict(partition),
        "pipeline": pipeline,
        "resource_summary": {"engine": "sdk", "writes": writes},
    }


def failed(
    *, exc: BaseException, retry_count: int, partition: dict[str, str], pipeline: str
) -> dict[str, Any]:
    return {
        "failure_reason": failure_reason(exc),
        "retry_count": retry_count,
        "stack_trace": type(exc).__name__,
        "partition": dict(partition),
        "pipeline": pipeline,
    }


def finished_run(
    run: RunRecord,
    result: ObservationResult,
    *,
    rows_read: int,
    exc: BaseException | None,
    degraded: str | None,
) -> RunRecord:
    """The ledger row of the ended run: SUCCEEDED unless the producer's block raised."""
    error = None
    if exc is not None:
        error = failure_reason(exc)
    elif degraded:
        error = f"observe() degraded ({degraded}); nothing certified"
    return replace(
        run,
        status=RunStatus.FAILED if exc is not None else RunStatus.SUCCEEDED,
        finished_at=utcnow(),
        certification_status=result.certification_status,
        certified_version=result.certified_version,
        rows_read=rows_read,
        rows_written=result.rows_written,
        rows_quarantined=result.rows_quarantined,
        quarantine_table=result.quarantine_table,
        error=error,
        reconciliation={"writes": [w.to_dict() for w in result.writes]},
    )
