"""Run lifecycle hooks: evidence, events and alerts hook into the run, not into the runner.

The runner calls each hook's methods; ``StoreRecorder`` persists to the metadata store and
``LogAlerter`` tells the owning team through structured logs (values never included).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import structlog

from signalfactory.core.protocols import MetadataStore
from signalfactory.core.records import Evidence, LifecycleEvent, RunRecord
from signalfactory.enforcement.profile import Baseline


class RunHook(Protocol):
    def on_event(self, event: LifecycleEvent) -> None: ...
    def on_evidence(self, evidence: Evidence) -> None: ...
    def on_alert(self, alert: Mapping[str, Any]) -> None: ...
    def on_run_end(self, run: RunRecord) -> None: ...


class StoreRecorder:
    """Stores every lifecycle event and evidence record as an append-only row."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    def on_event(self, event: LifecycleEvent) -> None:
        self.store.add_event(event)

    def on_evidence(self, evidence: Evidence) -> None:
        self.store.add_evidence(evidence)

    def on_alert(self, alert: Mapping[str, Any]) -> None:
        return None

    def on_run_end(self, run: RunRecord) -> None:
        return None


class LogAlerter:
    """Alerts the owning team via a structured log line (webhooks arrive with signals)."""

    def __init__(self) -> None:
        self.log = structlog.get_logger("signalfactory.alerts")
        self.sent: list[Mapping[str, Any]] = []

    def on_event(self, event: LifecycleEvent) -> None:
        return None

    def on_evidence(self, evidence: Evidence) -> None:
        return None

    def on_alert(self, alert: Mapping[str, Any]) -> None:
        self.sent.append(alert)
        self.log.warning("quality_alert", **alert)

    def on_run_end(self, run: RunRecord) -> None:
        return None


class HookSet:
    def __init__(self, hooks: Sequence[RunHook]) -> None:
        self.hooks = list(hooks)

    def event(self, event: LifecycleEvent) -> None:
        for hook in self.hooks:
            hook.on_event(event)

    def evidence(self, evidence: Evidence) -> None:
        for hook in self.hooks:
            hook.on_evidence(evidence)

    def alert(self, alert: Mapping[str, Any]) -> None:
        for hook in self.hooks:
            hook.on_alert(alert)

    def run_end(self, run: RunRecord) -> None:
        for hook in self.hooks:
            hook.on_run_end(run)

    @property
    def take_partition_profiles(self) -> bool:
        """Whether any hook takes ``partition_profile`` (else the runner need not merge one)."""
        return any(hasattr(hook, "on_partition_profile") for hook in self.hooks)

    def partition_profile(self, run: RunRecord, profile: Baseline) -> None:
        """Before ``run_end`` of a certified run: the profile of the partition it certified,
        for hooks that take it (an optional ``on_partition_profile(run, profile)``)."""
        for hook in self.hooks:
            taker = getattr(hook, "on_partition_profile", None)
            if taker is not None:
                taker(run, profile)
