"""What every signal engine receives, and the shape of an engine.

An engine is a plain function ``(EvaluationContext) -> list[Signal]``. It reads history from the
store as of ``ctx.at`` (never the wall clock), so tests and backfills evaluate any instant
without waiting. It returns one signal per dataset (and partition, where the policy has one)
it could judge: BREACH signals for problems and OK signals when healthy, so incidents can be
resolved.

Inputs engines rely on (lifecycle events, whoever produced them: our runner, the observe() SDK,
or ingested OpenLineage events):

* ``JobRunStarted``   payload: ``partition`` {key: value}, ``producer_urn``, ``code_ref``,
  optional ``job_name``, ``dag_run_id``, ``scheduled_time``;
* ``JobRunFailed``    payload: ``failure_reason``, ``retry_count``, ``partition``;
* ``JobRunCompleted`` payload: ``duration``, ``rows_read``, ``rows_written``, ``partition``;
* ``DatasetWriteCommitted`` payload: ``layer`` (bronze/silver/gold/certified, or absent for
  external writers), ``commit_version``, ``rows_written``, ``bytes_written``, ``files_added``,
  ``partition_key`` ("dt=2026-02-15").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from signalfactory.core.observability import Signal
from signalfactory.core.records import DatasetRecord

if TYPE_CHECKING:
    from signalfactory.knowledge.store import SqlStore


@dataclass(frozen=True, slots=True)
class EvaluationContext:
    store: SqlStore
    #: The instant evaluated (tz-aware UTC).
    at: datetime
    #: The registered datasets to judge (their dataset.yaml and policy as stored).
    datasets: Sequence[DatasetRecord]


SignalEngine = Callable[[EvaluationContext], list[Signal]]
