"""Per-chunk retries with exponential backoff and jitter, and dead letters (B8).

``Retried`` wraps an engine task. Transient errors (``Transient``, ``OSError``,
``TimeoutError``) are retried up to ``attempts`` times with exponential backoff and jitter
(tenacity); anything else is not worth retrying. A chunk that still fails comes back as a
``DeadLettered`` value instead of an exception, so the driver can record it in the
dead-letter table and go on — or fail the run — according to the pipeline's budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from signalfactory.core.errors import SignalFactoryError, Transient
from signalfactory.enforcement.pii import PII_PATTERNS
from signalfactory.pipeline.chunkflow import ChunkOutcome, Prepared
from signalfactory.production.chunk_refs import ChunkRef, CsvChunkRef
from signalfactory.production.formats import Chunk

SAMPLE_ROWS = 5


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, Transient | OSError | TimeoutError)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    backoff_s: float = 0.2
    max_backoff_s: float = 10.0


@dataclass
class ReadFailed:
    """A worker could not read the rows of a ``ChunkRef``: the run fails with this message,
    as it does when the driver cannot read a chunk (no retries, no dead letter)."""

    index: int
    message: str


@dataclass
class DeadLettered:
    """A chunk that kept failing: what the dead-letter table records about it."""

    index: int
    rows: int
    error_type: str
    error: str
    attempts: int
    sample: list[dict[str, Any]] = field(default_factory=list)


def _sample(frame: pl.DataFrame | None) -> list[dict[str, Any]]:
    """A few rows, as text, with anything shaped like PII redacted."""
    if frame is None or frame.height == 0:
        return []
    head = frame.head(SAMPLE_ROWS).with_columns(pl.all().cast(pl.String))
    for regex in PII_PATTERNS.values():
        head = head.with_columns(pl.all().str.replace_all(regex, "<redacted>"))
    return head.to_dicts()


def _describe(item: Any) -> tuple[int, int, pl.DataFrame | None]:
    if isinstance(item, Chunk):
        return item.index, item.df.height, item.df
    if isinstance(item, tuple) and item and isinstance(item[0], Prepared):
        prepared = item[0]
        frame = prepared.frame
        return prepared.outcome.index, prepared.outcome.rows_read, frame
    return -1, 0, None


def _count_retries(result: Any, retries: int) -> None:
    outcome = result.outcome if isinstance(result, Prepared) else result
    if isinstance(outcome, ChunkOutcome):
        outcome.retries += retries


class Retried:
    """Picklable wrapper: ``fn(item)`` with retries; a lasting failure becomes DeadLettered."""

    def __init__(self, fn: Callable[[Any], Any], policy: RetryPolicy) -> None:
        self.fn, self.policy = fn, policy

    def __call__(self, item: Any) -> Any:
        if isinstance(item, DeadLettered | ReadFailed):
            return item
        if isinstance(item, tuple) and item and isinstance(item[0], DeadLettered | ReadFailed):
            return item[0]
        if isinstance(item, ChunkRef | CsvChunkRef):
            try:
                item = item.read()
            except Exception as exc:  # reading fails the run, as in the driver
                message = exc.message if isinstance(exc, SignalFactoryError) else str(exc)
                return ReadFailed(item.index, message or type(exc).__name__)
        attempts = 0
        retrying = Retrying(
            stop=stop_after_attempt(self.policy.attempts),
            wait=wait_exponential_jitter(
                multiplier=self.policy.backoff_s, max=self.policy.max_backoff_s
            ),
            retry=retry_if_exception(is_transient),
            reraise=False,
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    result = self.fn(item)
                    _count_retries(result, attempts - 1)
                    return result
        except RetryError as exc:
            error = exc.last_attempt.exception() or exc
        except Exception as exc:
            error = exc
        index, rows, frame = _describe(item)
        message = error.message if isinstance(error, SignalFactoryError) else str(error)
        return DeadLettered(
            index=index,
            rows=rows,
            error_type=type(error).__name__,
            error=message or type(error).__name__,
            attempts=attempts,
            sample=_sample(frame),
        )
