"""Schema drift (O4, PRD FR-5): added, removed and retyped fields and new enum values.

For each dataset, the latest run finished at or before ``ctx.at`` that recorded G3_SCHEMA
evidence is judged from what was recorded about it, never by reading data again:

* G3_SCHEMA evidence at read (bronze: the source against the declared schema) and at write
  (gold: the output against the certified table): ``SCHEMA_BREAK:f:OLD→NEW`` stays as it is,
  ``MISSING_FIELD:f`` becomes ``FIELD_REMOVED:f``, ``FIELD_ADDED:f`` and ``UNEXPECTED_FIELD:f``
  become ``FIELD_ADDED:f`` (warnings included, e.g. in ``breaking`` mode);
* bronze ``undeclared_fields`` against the fields of the dataset's baseline as it was before
  the run: a source field neither declared nor in the baseline is ``FIELD_ADDED:f``;
* ``UNKNOWN_ENUM:f:VALUE`` failure signatures (DQ ``accepted_values`` checks, whose rows are
  quarantined);
* what the certified partition changed in the baseline when it rolled forward (see
  :mod:`signalfactory.processing.baseline_hook`): values of an enum field the baseline never
  saw (``UNKNOWN_ENUM:f:VALUE``, for fields no check guards), added and retyped fields.

One signal per distinct signature (stable across runs, so incidents de-duplicate), or one OK
signal when the latest run shows no drift. ``SCHEMA_BREAK`` and the removal of a required
field (non-nullable or in ``contract_lite.required_fields``) are CRITICAL, the rest WARNING.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from signalfactory.core.observability import Severity, Signal, SignalKind, SignalState
from signalfactory.core.records import DatasetRecord, Evidence, RunRecord, Stage
from signalfactory.enforcement.catalog import CERTIFICATION, G3_SCHEMA
from signalfactory.processing.signals.context import EvaluationContext

if TYPE_CHECKING:
    from signalfactory.knowledge.store import SqlStore
    from signalfactory.knowledge.store_baselines import StoredBaseline

_RUNS_LOOKED_AT = 50


def latest_run(
    store: SqlStore, dataset_urn: str, at: datetime, *, gate: str | None = None
) -> RunRecord | None:
    """The dataset's most recently started run that had finished at ``at``; with ``gate``,
    the most recent one that recorded evidence of that gate by then (a run that failed before
    its gates ran tells nothing about them)."""
    for run in store.list_runs(dataset_urn, limit=_RUNS_LOOKED_AT):
        if run.finished_at is None or run.finished_at > at or run.started_at > at:
            continue
        if gate is None or any(e.gate == gate for e in run_evidence(store, run, at)):
            return run
    return None


def run_evidence(store: SqlStore, run: RunRecord, at: datetime) -> list[Evidence]:
    return [e for e in store.list_evidence(run_id=run.run_id) if e.timestamp <= at]


def partition_label(run: RunRecord) -> str | None:
    return "/".join(f"{k}={v}" for k, v in run.partition.items()) or None


def baseline_before(
    store: SqlStore, dataset_urn: str, run: RunRecord, at: datetime
) -> tuple[StoredBaseline | None, StoredBaseline | None]:
    """(the baseline as it was before ``run``, the version ``run`` rolled forward, if any)."""
    rolled = store.find_baseline_of_run(run.run_id)
    if rolled is not None and rolled.created_at > at:
        rolled = None
    below = rolled.version if rolled is not None else None
    return store.get_baseline(dataset_urn, at, below_version=below), rolled


def signatures_of(evidence: Evidence) -> list[str]:
    """Every signature an evidence record names: failures first, then recorded warnings."""
    found = list(evidence.failure_signatures)
    if evidence.failure_signature and evidence.failure_signature not in found:
        found.insert(0, evidence.failure_signature)
    found += [str(w) for w in evidence.metrics.get("warnings", ()) if str(w) not in found]
    return found


@dataclass
class _Finding:
    signature: str
    name: str
    what: str
    sources: list[str] = field(default_factory=list)
    rows: int | None = None


def _required(dataset: DatasetRecord) -> set[str]:
    policy = dataset.policy
    contract = policy.get("contract_lite") or {}
    required = {str(f) for f in contract.get("required_fields", ())}
    for c in (policy.get("schema") or {}).get("constraints", ()):
        if isinstance(c, Mapping) and c.get("nullable") is False:
            required.add(str(c.get("field")))
    return required


def _normalise(sig: str) -> tuple[str, str, str] | None:
    """(signature, field, what happened) of a drift failure signature, else ``None``."""
    kind, _, rest = sig.partition(":")
    name, _, tail = rest.partition(":")
    if not name:
        return None
    if kind == "SCHEMA_BREAK":
        old, _, new = tail.partition("→")
        return sig, name, f"field {name} changed type from {old} to {new}"
    if kind == "MISSING_FIELD":
        return f"FIELD_REMOVED:{name}", name, f"field {name} is missing"
    if kind in ("FIELD_ADDED", "UNEXPECTED_FIELD"):
        return f"FIELD_ADDED:{name}", name, f"new field {name} appeared"
    if kind == "UNKNOWN_ENUM" and tail:
        return sig, name, f"field {name} has a new value {tail}"
    return None


def _collect(
    evidence: Sequence[Evidence],
    before: StoredBaseline | None,
    rolled: StoredBaseline | None,
) -> dict[str, _Finding]:
    found: dict[str, _Finding] = {}

    def add(sig: str, name: str, what: str, source: str, rows: int | None = None) -> None:
        item = found.setdefault(sig, _Finding(sig, name, what))
        if source not in item.sources:
            item.sources.append(source)
        if rows is not None:
            item.rows = max(item.rows or 0, rows)

    for ev in evidence:
        where = f"{ev.stage} {ev.gate}"
        counts: Mapping[str, Any] = ev.metrics.get("failures_by_signature") or {}
        for raw in signatures_of(ev):
            norm = _normalise(raw)
            if norm is None or ev.gate == CERTIFICATION:
                continue  # certification repeats the signatures of the gates that held it
            if ev.gate != G3_SCHEMA and not raw.startswith("UNKNOWN_ENUM:"):
                continue
            rows = counts.get(raw)
            add(*norm, where, int(rows) if rows is not None else None)
        if ev.stage is Stage.BRONZE and ev.gate == G3_SCHEMA and before is not None:
            known = before.document.get("schema_fields") or {}
            for name in ev.metrics.get("undeclared_fields") or ():
                if name not in known:
                    add(f"FIELD_ADDED:{name}", name, f"new field {name} appeared", where)
    changes = rolled.changes if rolled is not None else {}
    source = f"baseline v{rolled.version}" if rolled is not None else ""
    for name, values in (changes.get("new_enum_values") or {}).items():
        for value in values:
            add(
                f"UNKNOWN_ENUM:{name}:{value}",
                name,
                f"field {name} has a new value {value}",
                source,
            )
    for name in changes.get("added_fields") or ():
        add(f"FIELD_ADDED:{name}", name, f"new field {name} appeared", source)
    for name, (old, new) in (changes.get("retyped_fields") or {}).items():
        what = f"field {name} changed type from {old} to {new}"
        add(f"SCHEMA_BREAK:{name}:{old}→{new}", name, what, source)
    return found


def _severity(item: _Finding, required: set[str]) -> Severity:
    if item.signature.startswith("SCHEMA_BREAK:"):
        return Severity.CRITICAL
    if item.signature.startswith("FIELD_REMOVED:") and item.name in required:
        return Severity.CRITICAL
    return Severity.WARNING


def _dataset_signals(ctx: EvaluationContext, dataset: DatasetRecord) -> Iterable[Signal]:
    run = latest_run(ctx.store, dataset.urn, ctx.at, gate=G3_SCHEMA)
    if run is None:
        return
    evidence = run_evidence(ctx.store, run, ctx.at)
    before, rolled = baseline_before(ctx.store, dataset.urn, run, ctx.at)
    found = _collect(evidence, before, rolled)
    part = partition_label(run)
    name = dataset.urn.rsplit("/", 1)[-1]
    where = f"run {run.run_id}" + (f" ({part})" if part else "")
    fingerprints = {
        f"{ev.stage}_fingerprint": ev.metrics["schema_fingerprint"]
        for ev in evidence
        if ev.gate == G3_SCHEMA and "schema_fingerprint" in ev.metrics
    }
    base = {
        "run_id": run.run_id,
        "certification_status": str(run.certification_status),
        "baseline_version": before.version if before is not None else None,
        "baseline_fingerprint": before.schema_fingerprint if before is not None else None,
        **fingerprints,
    }
    if not found:
        yield Signal(
            dataset_urn=dataset.urn,
            kind=SignalKind.SCHEMA_DRIFT,
            state=SignalState.OK,
            signature="OK",
            severity=Severity.INFO,
            evaluated_at=ctx.at,
            summary=f"{name}: no schema drift in {where}",
            partition=part,
            run_id=run.run_id,
            details=base,
        )
        return
    required = _required(dataset)
    for sig in sorted(found):
        item = found[sig]
        rows = f", {item.rows} row(s)" if item.rows else ""
        yield Signal(
            dataset_urn=dataset.urn,
            kind=SignalKind.SCHEMA_DRIFT,
            state=SignalState.BREACH,
            signature=sig,
            severity=_severity(item, required),
            evaluated_at=ctx.at,
            summary=(
                f"{name}: {item.what} in {where}, seen at {', '.join(item.sources)}{rows}; "
                f"the run was {run.certification_status}"
            ),
            partition=part,
            run_id=run.run_id,
            details={**base, "field": item.name, "sources": item.sources, "rows": item.rows},
        )


def evaluate_drift(ctx: EvaluationContext) -> list[Signal]:
    """SCHEMA_DRIFT signals of every dataset in ``ctx`` (see the module docstring)."""
    return [s for dataset in ctx.datasets for s in _dataset_signals(ctx, dataset)]
