"""Small interfaces that adapters implement. The core imports nothing above it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar, runtime_checkable

from signalfactory.core.records import (
    CertificationState,
    DatasetRecord,
    Evidence,
    LifecycleEvent,
    QuarantineRecord,
    RunRecord,
    Transition,
)

T = TypeVar("T")
R = TypeVar("R")


@runtime_checkable
class Engine(Protocol):
    """Runs one function over many chunks; results come back in input order.

    Implementations bound the number of chunks in flight so memory follows chunk size and
    worker count, never input size.
    """

    name: str
    max_workers: int

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]: ...

    def close(self) -> None: ...


class MetadataStore(Protocol):
    """The knowledge plane: runs, audit trail, evidence, events, certification, quarantine.

    Evidence, lifecycle events and transitions are append-only: there is no update or delete.
    """

    url: str

    def migrate(self) -> None: ...

    # datasets
    def put_dataset(self, record: DatasetRecord) -> None: ...
    def get_dataset(self, urn: str) -> DatasetRecord | None: ...
    def list_datasets(self) -> list[DatasetRecord]: ...

    # runs and the audit trail
    def create_run(self, record: RunRecord) -> None: ...
    def update_run(self, record: RunRecord) -> None: ...
    def get_run(self, run_id: str) -> RunRecord | None: ...
    def list_runs(self, dataset_urn: str | None = None, limit: int = 100) -> list[RunRecord]: ...
    def find_runs_by_key(self, idempotency_key: str) -> list[RunRecord]: ...
    def append_transition(self, transition: Transition) -> None: ...
    def list_transitions(self, subject: str | None = None) -> list[Transition]: ...

    # evidence and lifecycle events (append-only)
    def add_evidence(self, evidence: Evidence) -> None: ...
    def list_evidence(
        self, run_id: str | None = None, dataset_urn: str | None = None
    ) -> list[Evidence]: ...
    def add_event(self, event: LifecycleEvent) -> None: ...
    def list_events(
        self,
        run_id: str | None = None,
        dataset_urn: str | None = None,
        event_type: str | None = None,
    ) -> list[LifecycleEvent]: ...

    # certification and quarantine
    def get_certification(self, dataset_urn: str) -> CertificationState | None: ...
    def put_certification(self, state: CertificationState) -> None: ...
    def add_quarantine(self, record: QuarantineRecord) -> None: ...
    def list_quarantine(self, dataset_urn: str | None = None) -> list[QuarantineRecord]: ...

    def close(self) -> None: ...
