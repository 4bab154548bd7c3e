"""``RunQueue``: runs queued by several callers in one process, by priority, N at a time.

```python
with RunQueue(execute, max_concurrent=2) as queue:
    future = queue.submit(RunRequest("pipeline.yaml", {"dt": "2026-02-15"}), priority="high")
    outcome = future.result()
```

Priority direction: a **higher** number runs first. Names map to numbers like common
schedulers: ``low`` 0, ``normal`` 50, ``high`` 100, ``critical`` 200; any int is accepted.
The default is 0, the same as ``low``. Equal priorities run in submission order (FIFO).

``max_concurrent`` worker threads each run one request at a time, so at most that many
``execute`` calls are ever active (``active`` counts them). Requests submitted before
``start()`` wait in the queue. Cancelling a pending future removes it from the queue; a
running one cannot be cancelled. An exception from ``execute`` goes to that request's future
and the worker carries on. Workers are daemon threads: call ``shutdown()`` (or use ``with``)
so runs in progress finish before the interpreter exits.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import structlog

from signalfactory.core.errors import ConfigError
from signalfactory.core.records import utcnow

if TYPE_CHECKING:
    from signalfactory.production.spec import PipelineSpec

log = structlog.get_logger("signalfactory.queue")
T = TypeVar("T")
PRIORITIES: Mapping[str, int] = MappingProxyType(
    {"low": 0, "normal": 50, "high": 100, "critical": 200}
)


def resolve_priority(priority: int | str) -> int:
    """An int as is, or a priority name as its number; anything else is a ``ConfigError``."""
    if isinstance(priority, int) and not isinstance(priority, bool):
        return priority
    if isinstance(priority, str) and priority.lower() in PRIORITIES:
        return PRIORITIES[priority.lower()]
    raise ConfigError(
        f"run priority {priority!r} is not valid: use an integer (higher runs first) or one "
        f"of {', '.join(f'{k!r} ({v})' for k, v in PRIORITIES.items())}"
    )


@dataclass(frozen=True)
class RunRequest:
    """One run to do: what ``SignalFactory.run`` takes, plus who asked and an id."""

    pipeline: str | Path | PipelineSpec
    partition: Mapping[str, str] = field(default_factory=dict)
    engine: str | None = None
    chunk_size: int | None = None
    submitted_by: str = "api"
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        # A private read-only copy: the caller's dict may change after submit.
        object.__setattr__(self, "partition", MappingProxyType(dict(self.partition)))


@dataclass(frozen=True)
class QueuedRun:
    """A pending request as shown by ``RunQueue.pending()``."""

    request_id: str
    priority: int
    enqueued_at: datetime
    submitted_by: str


@dataclass(order=True)
class _Job(Generic[T]):
    key: tuple[int, int]  # (-priority, sequence): the heap pops the smallest
    request: RunRequest = field(compare=False)
    priority: int = field(compare=False)
    enqueued_at: datetime = field(compare=False)
    future: Future[T] = field(compare=False)


class RunQueue(Generic[T]):
    """A thread-safe in-process priority queue of runs with ``max_concurrent`` workers."""

    def __init__(
        self,
        execute: Callable[[RunRequest], T],
        *,
        max_concurrent: int = 1,
        name: str = "default",
    ) -> None:
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise ConfigError(f"max_concurrent must be an integer >= 1, got {max_concurrent!r}")
        if max_concurrent < 1:
            raise ConfigError(
                f"max_concurrent must be >= 1 (runs at once), got {max_concurrent}; use 1 to "
                "run queued requests one after another"
            )
        self.name = name
        self.max_concurrent = max_concurrent
        self._execute = execute
        self._cond = threading.Condition()
        self._heap: list[_Job[T]] = []
        self._sequence = itertools.count()
        self._workers: list[threading.Thread] = []
        self._active = 0
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"RunQueue(name={self.name!r}, max_concurrent={self.max_concurrent}, "
            f"pending={len(self.pending())}, active={self.active})"
        )

    def __enter__(self) -> RunQueue[T]:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)

    @property
    def active(self) -> int:
        """How many ``execute`` calls are running now (never more than ``max_concurrent``)."""
        with self._cond:
            return self._active

    def start(self) -> None:
        """Start the workers (idempotent). Requests submitted earlier start running now."""
        with self._cond:
            if self._closed:
                raise RuntimeError(f"run queue {self.name!r} is shut down; create a new one")
            self._spawn()

    def _spawn(self) -> None:
        while len(self._workers) < self.max_concurrent:
            worker = threading.Thread(
                target=self._work,
                name=f"runqueue-{self.name}-{len(self._workers)}",
                daemon=True,
            )
            self._workers.append(worker)
            worker.start()

    def submit(self, request: RunRequest, priority: int | str = "normal") -> Future[T]:
        """Queue ``request``; higher ``priority`` runs first, FIFO among equals (default 0)."""
        level = resolve_priority(priority)
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError(
                    f"run queue {self.name!r} is shut down; cannot submit {request.request_id}"
                )
            job = _Job((-level, next(self._sequence)), request, level, utcnow(), future)
            future.add_done_callback(lambda f: self._forget(job) if f.cancelled() else None)
            heapq.heappush(self._heap, job)
            self._cond.notify()
        return future

    def _forget(self, job: _Job[T]) -> None:
        """A cancelled pending job leaves the queue (it may already have been popped)."""
        with self._cond:
            if job in self._heap:
                self._heap.remove(job)
                heapq.heapify(self._heap)

    def pending(self) -> list[QueuedRun]:
        """Snapshot of the waiting requests, in the order they will run."""
        with self._cond:
            jobs = sorted(self._heap)
        return [
            QueuedRun(j.request.request_id, j.priority, j.enqueued_at, j.request.submitted_by)
            for j in jobs
            if not j.future.cancelled()
        ]

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        """Accept no more requests. Pending ones still run unless ``cancel_pending``.

        Every accepted future ends up done or cancelled: when the queue was never started and
        pending requests are kept, the workers are started to drain them. ``wait`` blocks
        until the workers have finished (a worker calling this does not wait for itself).
        """
        with self._cond:
            self._closed = True
            dropped: list[_Job[T]] = []
            if cancel_pending:
                dropped, self._heap = self._heap, []
            elif self._heap:
                self._spawn()
            self._cond.notify_all()
            workers = list(self._workers)
        for job in dropped:
            job.future.cancel()
        if wait:
            for worker in workers:
                if worker is not threading.current_thread():
                    worker.join()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._heap and not self._closed:
                    self._cond.wait()
                if not self._heap:
                    return
                job = heapq.heappop(self._heap)
                # False when cancelled between submit and now: skip it.
                if not job.future.set_running_or_notify_cancel():
                    continue
                self._active += 1
            error: BaseException | None = None
            result: Any = None
            try:
                result = self._execute(job.request)
            except BaseException as exc:  # goes to the caller through the future
                error = exc
                log.error(
                    "queued_run_failed",
                    queue=self.name,
                    request_id=job.request.request_id,
                    error_type=type(exc).__name__,
                )
            with self._cond:
                self._active -= 1
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)
            del job, error, result  # drop references before waiting for the next job
