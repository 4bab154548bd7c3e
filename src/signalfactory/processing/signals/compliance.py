"""Contract compliance and field-level data quality over time (O5, PRD §13).

``CONTRACT_COMPLIANCE``: the compliance rate of a run is the share of rows passing
G4_CONTRACT (``compliance_rate`` = 1 - rows_failed / rows_checked, recorded on the evidence),
the lowest of the stages where the gate ran (silver, gold). The latest run finished at or
before ``ctx.at`` with G4_CONTRACT evidence breaches ``LOW_COMPLIANCE:G4_CONTRACT`` when its
rate is below ``threshold`` (default 0.95; CRITICAL), or when at least ``min_history``
earlier runs of the past ``window`` (7 days) give a mean and standard deviation and the rate
is below the mean by more than ``sigmas`` (2) standard deviations and at least ``min_drop``
(0.01; WARNING). A gate that was never reached (the run stopped earlier) is not judged.

``DATA_QUALITY``: null rates per field, signature ``NULL_RATE:<field>`` (WARNING), from two
honest sources:

* silver evidence: rows failing ``NULL_CONSTRAINT:<field>`` (non-nullable fields and DQ
  ``not_null`` checks) over the rows checked, against its mean over the window (0 without
  history);
* the certified partition's null rate per field, recorded when the baseline rolled forward
  with the run, against the baseline's rate before the run.

A field breaches when its rate exceeds the expected one by more than ``null_rate_tolerance``
(0.05, i.e. five percentage points). One OK signal per kind when nothing breached.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from signalfactory.core.observability import Severity, Signal, SignalKind, SignalState
from signalfactory.core.records import DatasetRecord, Evidence, RunRecord, Stage
from signalfactory.enforcement.catalog import DQ, G4_CONTRACT
from signalfactory.processing.signals.context import EvaluationContext
from signalfactory.processing.signals.drift import (
    baseline_before,
    latest_run,
    partition_label,
    run_evidence,
)

DEFAULT_THRESHOLD = 0.95
DEFAULT_WINDOW = timedelta(days=7)
LOW_COMPLIANCE = f"LOW_COMPLIANCE:{G4_CONTRACT}"
_NULL = "NULL_CONSTRAINT:"
_RUNS_LOOKED_AT = 1000


def _reached(ev: Evidence) -> bool:
    return (
        ev.context.get("disposition") != "NOT_REACHED"
        and int(ev.metrics.get("rows_checked", 0) or 0) > 0
    )


def compliance_of(evidence: Iterable[Evidence]) -> tuple[float, Evidence] | None:
    """(the lowest G4_CONTRACT compliance rate of a run, the evidence it comes from)."""
    rated = [
        (float(ev.metrics.get("compliance_rate", 1.0)), ev)
        for ev in evidence
        if ev.gate == G4_CONTRACT and _reached(ev)
    ]
    return min(rated, key=lambda pair: (pair[0], str(pair[1].stage))) if rated else None


def null_checked_fields(dataset: DatasetRecord) -> set[str]:
    """Fields a null rule guards: non-nullable schema constraints and DQ ``not_null`` checks."""
    policy = dataset.policy
    fields = {
        str(c["field"])
        for c in (policy.get("schema") or {}).get("constraints", ())
        if isinstance(c, Mapping) and c.get("nullable") is False
    }
    for check in policy.get("dq") or ():
        if isinstance(check, Mapping) and check.get("check") == "not_null" and check.get("column"):
            fields.add(str(check["column"]))
    return fields


def evidence_null_rates(evidence: Iterable[Evidence], fields: Iterable[str]) -> dict[str, float]:
    """Field → share of rows failing ``NULL_CONSTRAINT:<field>`` at silver (G4 or DQ); the
    ``fields`` null rules guard are 0.0 when none failed. Empty when silver was not reached."""
    rates: dict[str, float] = {}
    for ev in evidence:
        if ev.stage is not Stage.SILVER or ev.gate not in (G4_CONTRACT, DQ) or not _reached(ev):
            continue
        rates.update({f: rates.get(f, 0.0) for f in fields})
        checked = int(ev.metrics["rows_checked"])
        counts: Mapping[str, Any] = ev.metrics.get("failures_by_signature") or {}
        for sig, count in counts.items():
            if sig.startswith(_NULL):
                name = sig.removeprefix(_NULL)
                rates[name] = max(rates.get(name, 0.0), int(count) / checked)
    return rates


def _signal(
    ctx: EvaluationContext,
    dataset: DatasetRecord,
    kind: SignalKind,
    signature: str,
    severity: Severity,
    summary: str,
    run_id: str,
    partition: str | None,
    details: Mapping[str, Any],
) -> Signal:
    return Signal(
        dataset_urn=dataset.urn,
        kind=kind,
        state=SignalState.OK if signature == "OK" else SignalState.BREACH,
        signature=signature,
        severity=severity,
        evaluated_at=ctx.at,
        summary=summary,
        partition=partition,
        run_id=run_id,
        details=details,
    )


def _dataset_signals(
    ctx: EvaluationContext,
    dataset: DatasetRecord,
    *,
    threshold: float,
    window: timedelta,
    sigmas: float,
    min_drop: float,
    min_history: int,
    null_rate_tolerance: float,
) -> Iterable[Signal]:
    run = latest_run(ctx.store, dataset.urn, ctx.at, gate=G4_CONTRACT)
    if run is None:
        return
    history = [
        r
        for r in ctx.store.list_runs(dataset.urn, limit=_RUNS_LOOKED_AT)
        if r.run_id != run.run_id
        and r.finished_at is not None
        and r.finished_at <= ctx.at
        and run.started_at - window <= r.started_at < run.started_at
    ]
    by_run = {r.run_id: run_evidence(ctx.store, r, ctx.at) for r in (run, *history)}
    evidence = by_run.get(run.run_id, [])
    name = dataset.urn.rsplit("/", 1)[-1]
    part = partition_label(run)
    where = f"run {run.run_id}" + (f" ({part})" if part else "")

    rated = compliance_of(evidence)
    if rated is not None:
        rate, worst = rated
        past = [c[0] for r in history if (c := compliance_of(by_run.get(r.run_id, [])))]
        mean = statistics.fmean(past) if past else None
        std = statistics.pstdev(past) if len(past) > 1 else 0.0
        details: dict[str, Any] = {
            "compliance_rate": rate,
            "stage": str(worst.stage),
            "rows_checked": worst.metrics.get("rows_checked"),
            "rows_failed": worst.metrics.get("rows_failed"),
            "threshold": threshold,
            "window_mean": mean,
            "window_std": std,
            "window_runs": len(past),
            "top_failures": list(worst.failure_signatures[:5]),
        }
        causes = ", ".join(worst.failure_signatures[:3]) or "no signature"
        if rate < threshold:
            yield _signal(
                ctx,
                dataset,
                SignalKind.CONTRACT_COMPLIANCE,
                LOW_COMPLIANCE,
                Severity.CRITICAL,
                f"{name}: {rate:.1%} of rows passed the contract (G4_CONTRACT at {worst.stage}) "
                f"in {where}, below the {threshold:.0%} threshold; failures: {causes}",
                run.run_id,
                part,
                {**details, "rule": "threshold"},
            )
        elif (
            mean is not None
            and len(past) >= min_history
            and rate < mean - max(sigmas * std, min_drop)
        ):
            yield _signal(
                ctx,
                dataset,
                SignalKind.CONTRACT_COMPLIANCE,
                LOW_COMPLIANCE,
                Severity.WARNING,
                f"{name}: {rate:.1%} of rows passed the contract (G4_CONTRACT at {worst.stage}) "
                f"in {where}, more than {sigmas:g} standard deviations below the mean of the "
                f"last {len(past)} runs ({mean:.1%}); failures: {causes}",
                run.run_id,
                part,
                {**details, "rule": "deviation"},
            )
        else:
            yield _signal(
                ctx,
                dataset,
                SignalKind.CONTRACT_COMPLIANCE,
                "OK",
                Severity.INFO,
                f"{name}: {rate:.1%} of rows passed the contract in {where}",
                run.run_id,
                part,
                details,
            )

    yield from _null_rate_signals(
        ctx, dataset, run, where, evidence, history, by_run, null_rate_tolerance
    )


def _null_rate_signals(
    ctx: EvaluationContext,
    dataset: DatasetRecord,
    run: RunRecord,
    where: str,
    evidence: Sequence[Evidence],
    history: Sequence[RunRecord],
    by_run: Mapping[str, Sequence[Evidence]],
    tolerance: float,
) -> Iterable[Signal]:
    name = dataset.urn.rsplit("/", 1)[-1]
    run_id, part = run.run_id, partition_label(run)
    observed: dict[str, tuple[float, float, str]] = {}  # field -> (rate, expected, source)
    guarded = null_checked_fields(dataset)
    past_rates = [evidence_null_rates(by_run.get(r.run_id, ()), guarded) for r in history]
    for field, rate in evidence_null_rates(evidence, guarded).items():
        expected = statistics.fmean(p.get(field, 0.0) for p in past_rates) if past_rates else 0.0
        observed[field] = (rate, expected, "rows failing NULL_CONSTRAINT at silver")
    _, rolled = baseline_before(ctx.store, dataset.urn, run, ctx.at)
    judged = rolled is not None or any(ev.stage is Stage.SILVER and _reached(ev) for ev in evidence)
    if rolled is not None:
        now = rolled.changes.get("null_rates") or {}
        before = rolled.changes.get("baseline_null_rates") or {}
        for field, rate in now.items():
            if field in before and field not in observed:
                observed[field] = (float(rate), float(before[field]), "certified partition")
    breaches = {f: v for f, v in observed.items() if v[0] > v[1] + tolerance}
    for field in sorted(breaches):
        rate, expected, source = breaches[field]
        yield _signal(
            ctx,
            dataset,
            SignalKind.DATA_QUALITY,
            f"NULL_RATE:{field}",
            Severity.WARNING,
            f"{name}: {rate:.1%} of {field} values are null in {where} ({source}), against "
            f"{expected:.1%} expected (tolerance {tolerance:.0%})",
            run_id,
            part,
            {
                "field": field,
                "null_rate": rate,
                "expected": expected,
                "source": source,
                "tolerance": tolerance,
            },
        )
    if judged and not breaches:
        yield _signal(
            ctx,
            dataset,
            SignalKind.DATA_QUALITY,
            "OK",
            Severity.INFO,
            f"{name}: null rates of {len(observed)} field(s) as expected in {where}",
            run_id,
            part,
            {"null_rates": {f: v[0] for f, v in sorted(observed.items())}, "tolerance": tolerance},
        )


def evaluate_compliance(
    ctx: EvaluationContext,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    window: timedelta = DEFAULT_WINDOW,
    sigmas: float = 2.0,
    min_drop: float = 0.01,
    min_history: int = 3,
    null_rate_tolerance: float = 0.05,
) -> list[Signal]:
    """CONTRACT_COMPLIANCE and DATA_QUALITY signals of every dataset in ``ctx``."""
    return [
        s
        for dataset in ctx.datasets
        for s in _dataset_signals(
            ctx,
            dataset,
            threshold=threshold,
            window=window,
            sigmas=sigmas,
            min_drop=min_drop,
            min_history=min_history,
            null_rate_tolerance=null_rate_tolerance,
        )
    ]
