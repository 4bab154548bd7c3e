"""Evaluate every registered signal engine at one instant, and store what changed.

:func:`evaluate_all` runs the engines of :data:`ENGINES` (freshness, volume, and the drift and
compliance engines when their modules are installed) over the registered datasets as of
``at``: nothing is read from the wall clock, so tests and backfills evaluate any instant.

:func:`record_signals` stores breaches and state changes, not an endless stream of identical
rows from a 30-second watch loop. Per (dataset, kind, partition) it stores a signal when

* nothing is stored yet for that key, or
* the state, signature or severity differs from the newest stored one, or
* it is a breach identical to the newest stored one but that one is older than
  ``repeat_breach_after`` (default 1 hour): a still-open breach leaves a heartbeat.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from signalfactory.core.errors import ConfigError, NotFoundError
from signalfactory.core.observability import Signal
from signalfactory.core.records import DatasetRecord
from signalfactory.knowledge.models import to_utc
from signalfactory.processing.signals.context import EvaluationContext, SignalEngine
from signalfactory.processing.signals.freshness import evaluate_freshness
from signalfactory.processing.signals.volume import evaluate_volume

if TYPE_CHECKING:
    from signalfactory.knowledge.store import SqlStore

__all__ = ["ENGINES", "evaluate_all", "load_engine", "record_signals"]

log = logging.getLogger(__name__)

#: Engine name -> the engine, or "module:function" imported when first used.
ENGINES: Mapping[str, SignalEngine | str] = {
    "freshness": evaluate_freshness,
    "volume": evaluate_volume,
    "drift": "signalfactory.processing.signals.drift:evaluate_drift",
    "compliance": "signalfactory.processing.signals.compliance:evaluate_compliance",
}


def load_engine(name: str) -> SignalEngine | None:
    """The engine called ``name``; ``None`` when its module is not installed."""
    if name not in ENGINES:
        raise ConfigError(f"unknown signal engine {name!r}. Allowed: {', '.join(ENGINES)}.")
    target = ENGINES[name]
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return None
    engine: SignalEngine = getattr(module, attr)
    return engine


def evaluate_all(
    store: SqlStore,
    at: datetime,
    *,
    datasets: Sequence[str] | None = None,
    engines: Sequence[str] | None = None,
    skip_invalid: bool = False,
) -> list[Signal]:
    """Signals of every engine for the registered datasets, as of ``at`` (tz-aware).

    ``datasets`` limits the evaluation to these URNs (each must be registered), ``engines``
    to these engine names. A dataset whose SLO is invalid raises :class:`ConfigError`, or,
    with ``skip_invalid``, is logged and skipped for that engine (a watch loop keeps going).
    """
    if at.tzinfo is None:
        raise ConfigError(
            f"the evaluation time must carry a time zone, got {at.isoformat()!r}; "
            "e.g. 2026-02-16T07:35:00+00:00"
        )
    at = to_utc(at)
    records = _datasets(store, datasets)
    names = list(ENGINES) if engines is None else list(engines)
    out: list[Signal] = []
    for name in names:
        engine = load_engine(name)
        if engine is None:
            log.debug("signal engine %s is not installed; skipped", name)
            continue
        if not skip_invalid:
            out.extend(engine(EvaluationContext(store, at, records)))
            continue
        for record in records:
            try:
                out.extend(engine(EvaluationContext(store, at, [record])))
            except ConfigError as exc:
                log.warning("signal engine %s skipped %s: %s", name, record.urn, exc.message)
    return out


def record_signals(
    store: SqlStore,
    signals: Iterable[Signal],
    *,
    repeat_breach_after: timedelta | None = timedelta(hours=1),
) -> list[Signal]:
    """Store the signals that are news (see the module doc) and return them, in order."""
    batch = list(signals)
    urns = {s.dataset_urn for s in batch}
    current = {(s.dataset_urn, str(s.kind), s.partition): s for s in store.latest_signals(urns)}
    stored: list[Signal] = []
    for signal in batch:
        key = (signal.dataset_urn, str(signal.kind), signal.partition)
        previous = current.get(key)
        if not _news(signal, previous, repeat_breach_after):
            continue
        stored.append(signal)
        current[key] = signal
    store.add_signals(stored)
    return stored


def _news(signal: Signal, previous: Signal | None, repeat: timedelta | None) -> bool:
    if previous is None:
        return True
    if previous.signal_id == signal.signal_id:
        return False  # recorded already
    same = (previous.state, previous.signature, previous.severity) == (
        signal.state,
        signal.signature,
        signal.severity,
    )
    if not same:
        return True
    if not signal.breached or repeat is None:
        return False
    return signal.evaluated_at - previous.evaluated_at >= repeat


def _datasets(store: SqlStore, urns: Sequence[str] | None) -> list[DatasetRecord]:
    if urns is None:
        return store.list_datasets()
    records: list[DatasetRecord] = []
    for urn in urns:
        record = store.get_dataset(urn)
        if record is None:
            known = ", ".join(r.urn for r in store.list_datasets()) or "(none registered)"
            raise NotFoundError(
                f"dataset {urn!r} is not registered. Registered: {known}. "
                "Register it with `signalfactory register` first."
            )
        records.append(record)
    return records
