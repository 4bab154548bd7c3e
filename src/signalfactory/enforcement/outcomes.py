"""Gate outcomes as values: collected per chunk, merged per run, then routed.

A chunk yields ``GateTally`` values; ``merge`` adds them up; ``decide`` turns the merged tally
into one immutable ``Evidence`` record per gate with a disposition:

- ``PASS``: nothing failed.
- ``WARN`` / ``ROWS_QUARANTINED``: some rows failed and were quarantined, the batch goes on.
- ``WARN`` / ``WARNING_ONLY``: a warn-severity check or an additive schema change.
- ``FAIL`` / ``HELD``: a batch-level failure that holds certification at this level.
- ``FAIL`` / ``RECORDED`` or ``WARNED``: a batch-level failure the enforcement level lets pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from signalfactory.core.records import Evidence, GateResult, Stage, utcnow
from signalfactory.enforcement.catalog import EnforcementLevel

MAX_SIGNATURES = 20


@dataclass
class GateTally:
    """Mutable per-run accumulator for one gate at one stage."""

    stage: Stage
    gate: str
    rows_checked: int = 0
    rows_failed: int = 0
    row_signatures: Counter[str] = field(default_factory=Counter)
    batch_signatures: Counter[str] = field(default_factory=Counter)
    warn_signatures: Counter[str] = field(default_factory=Counter)
    metrics: dict[str, Any] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": str(self.stage),
            "gate": self.gate,
            "rows_checked": self.rows_checked,
            "rows_failed": self.rows_failed,
            "row_signatures": dict(self.row_signatures),
            "batch_signatures": dict(self.batch_signatures),
            "warn_signatures": dict(self.warn_signatures),
            "metrics": self.metrics,
            "counters": dict(self.counters),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GateTally:
        return cls(
            stage=Stage(data["stage"]),
            gate=data["gate"],
            rows_checked=int(data["rows_checked"]),
            rows_failed=int(data["rows_failed"]),
            row_signatures=Counter(data["row_signatures"]),
            batch_signatures=Counter(data["batch_signatures"]),
            warn_signatures=Counter(data["warn_signatures"]),
            metrics=dict(data["metrics"]),
            counters=Counter(data["counters"]),
        )

    def add(self, other: GateTally) -> None:
        self.rows_checked += other.rows_checked
        self.rows_failed += other.rows_failed
        self.row_signatures.update(other.row_signatures)
        self.batch_signatures.update(other.batch_signatures)
        self.warn_signatures.update(other.warn_signatures)
        self.counters.update(other.counters)
        for key, value in other.metrics.items():
            self.metrics.setdefault(key, value)


def merge(tallies: Iterable[GateTally]) -> dict[tuple[Stage, str], GateTally]:
    merged: dict[tuple[Stage, str], GateTally] = {}
    for tally in tallies:
        key = (tally.stage, tally.gate)
        if key not in merged:
            merged[key] = GateTally(stage=tally.stage, gate=tally.gate)
        merged[key].add(tally)
    return merged


@dataclass(frozen=True, slots=True)
class Decision:
    evidence: Evidence
    holds: bool


def _top(counter: Counter[str]) -> list[str]:
    return [sig for sig, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))]


def decide(
    tally: GateTally,
    *,
    dataset_urn: str,
    run_id: str,
    level: EnforcementLevel,
    max_invalid_rows_pct: float,
    context: Mapping[str, Any] | None = None,
    reached: bool = True,
) -> Decision:
    """Turn a merged tally into one evidence record and whether it holds certification."""
    batch = Counter(tally.batch_signatures)
    invalid_pct = 100.0 * tally.rows_failed / tally.rows_checked if tally.rows_checked else 0.0
    if not batch and tally.rows_failed and invalid_pct > max_invalid_rows_pct:
        batch[f"INVALID_ROWS_ABOVE_THRESHOLD:{invalid_pct:.2f}%>{max_invalid_rows_pct:g}%"] += 1
    metrics: dict[str, Any] = {
        "rows_checked": tally.rows_checked,
        "rows_failed": tally.rows_failed,
        "compliance_rate": round(1 - tally.rows_failed / tally.rows_checked, 6)
        if tally.rows_checked
        else 1.0,
        **tally.metrics,
    }
    if tally.row_signatures:
        metrics["failures_by_signature"] = dict(tally.row_signatures.most_common(MAX_SIGNATURES))
    if tally.counters:
        metrics.update(dict(sorted(tally.counters.items())))
    holds = False
    if batch:
        result = GateResult.FAIL
        holds = level.holds(tally.gate)
        if holds:
            disposition = "HELD"
        elif level.alerts():
            disposition = "WARNED"
        else:
            disposition = "RECORDED"
        signatures = _top(batch) + _top(tally.row_signatures)
    elif tally.rows_failed:
        result, disposition = GateResult.WARN, "ROWS_QUARANTINED"
        signatures = _top(tally.row_signatures)
    elif tally.warn_signatures:
        result, disposition = GateResult.WARN, "WARNING_ONLY"
        signatures = _top(tally.warn_signatures)
    else:
        result, signatures = GateResult.PASS, []
        disposition = "PASSED" if reached else "NOT_REACHED"
    if tally.warn_signatures and result is not GateResult.WARN:
        metrics["warnings"] = _top(tally.warn_signatures)[:MAX_SIGNATURES]
    evidence = Evidence(
        dataset_urn=dataset_urn,
        run_id=run_id,
        stage=tally.stage,
        gate=tally.gate,
        result=result,
        failure_signature=signatures[0] if signatures else None,
        failure_signatures=tuple(signatures[:MAX_SIGNATURES]),
        metrics=metrics,
        timestamp=utcnow(),
        context={"disposition": disposition, "enforcement_level": str(level), **(context or {})},
    )
    return Decision(evidence=evidence, holds=holds)
