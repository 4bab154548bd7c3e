"""Helpers for tests that run real pipelines with the baseline roller hooked in."""

from __future__ import annotations

from datetime import datetime

from factories import Project
from signalfactory.api import SignalFactory
from signalfactory.core.observability import Signal, SignalKind
from signalfactory.core.records import utcnow
from signalfactory.pipeline.runner import RunOutcome
from signalfactory.processing.baseline_hook import BaselineRoller
from signalfactory.processing.signals.context import EvaluationContext
from signalfactory.processing.signals.drift import evaluate_drift
from signalfactory.production.spec import load_pipeline


def run_rolling(project: Project, sf: SignalFactory, dt: str) -> RunOutcome:
    """One real run of the project's pipeline; ``SignalFactory.runner`` hooks in the
    ``BaselineRoller`` (checked here, so these tests notice if it is ever unhooked)."""
    runner = sf.runner()
    assert sum(isinstance(h, BaselineRoller) for h in runner.hooks.hooks) == 1
    return runner.run(load_pipeline(project.pipeline_yaml), {"dt": dt})


def context(sf: SignalFactory, at: datetime | None = None) -> EvaluationContext:
    return EvaluationContext(store=sf.store, at=at or utcnow(), datasets=sf.store.list_datasets())


def drift(sf: SignalFactory, at: datetime | None = None) -> dict[str, Signal]:
    signals = evaluate_drift(context(sf, at))
    assert all(s.kind is SignalKind.SCHEMA_DRIFT for s in signals)
    by_sig = {s.signature: s for s in signals}
    assert len(by_sig) == len(signals), "one signal per signature"
    return by_sig
