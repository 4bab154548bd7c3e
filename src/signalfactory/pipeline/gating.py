"""From per-chunk tallies to one decision per gate (the "decide" step of a run)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from signalfactory.core.records import Stage
from signalfactory.enforcement.catalog import (
    CERTIFICATION,
    DQ,
    G1_RESOLUTION,
    G2_IDENTITY,
    G3_SCHEMA,
    STAGE_GATES,
    EnforcementLevel,
)
from signalfactory.enforcement.outcomes import Decision, GateTally, decide, merge
from signalfactory.enforcement.policy import DatasetSpec, PolicyBundle
from signalfactory.enforcement.schema import promote_text_breaks
from signalfactory.pipeline.chunkflow import ChunkOutcome

_COUNTED = (
    "rows_read",
    "rows_quarantined",
    "rows_dropped",
    "rows_added",
    "rows_gold",
    "rows_silver",
    "rows_bronze",
    "retries",
)


def totals(outcomes: Sequence[ChunkOutcome]) -> dict[str, int]:
    summed = {k: sum(getattr(o, k) for o in outcomes) for k in _COUNTED}
    summed["broken"] = sum(1 for o in outcomes if o.broken)
    summed["chunks"] = len(outcomes)
    return summed


def run_level_tallies(
    dataset: DatasetSpec, policy: PolicyBundle, counts: Mapping[str, int]
) -> list[GateTally]:
    """Gates judged once per run: resolution, identity and ``min_rows``."""
    resolution = GateTally(stage=Stage.BRONZE, gate=G1_RESOLUTION, rows_checked=counts["rows_read"])
    identity = GateTally(stage=Stage.BRONZE, gate=G2_IDENTITY, rows_checked=counts["rows_read"])
    identity.metrics["confidence"] = 1.0 if dataset.producer_urn else 0.9
    tallies = [resolution, identity]
    for check in policy.dq:
        # min_rows judges what reached silver; when nothing got past bronze, bronze has failed.
        reached = counts["rows_bronze"] > 0 or not counts["rows_read"]
        if check.check == "min_rows" and check.value is not None and reached:
            tally = GateTally(stage=Stage.SILVER, gate=DQ)
            if counts["rows_silver"] < check.value:
                sig = f"MIN_ROWS:{counts['rows_silver']}<{check.value}"
                if check.severity == "error":
                    tally.batch_signatures[sig] += 1
                else:
                    tally.warn_signatures[sig] += 1
            tallies.append(tally)
    return tallies


def _context(gate: str, dataset: DatasetSpec, producer: str) -> dict[str, Any]:
    if gate == G1_RESOLUTION:
        return {"dataset_urn": dataset.urn}
    if gate == G2_IDENTITY:
        return {"producer_urn": producer}
    return {}


def decide_gates(
    outcomes: Sequence[ChunkOutcome],
    counts: Mapping[str, int],
    *,
    dataset: DatasetSpec,
    policy: PolicyBundle,
    run_id: str,
    producer: str,
) -> list[Decision]:
    """One decision per gate of PRD §13 (certification is decided by the caller)."""
    merged = merge(
        [t for o in outcomes for t in o.tallies] + run_level_tallies(dataset, policy, counts)
    )
    bronze_schema = merged.get((Stage.BRONZE, G3_SCHEMA))
    if bronze_schema is not None:
        promote_text_breaks(bronze_schema, policy.schema_.mode)
    decisions = []
    # Gates a stage has only with some steps (gold DQ: routed detect steps) are decided when
    # they have a tally.
    extra = {
        stage: tuple(g for (st, g) in merged if st is stage and g not in gates)
        for stage, gates in STAGE_GATES.items()
    }
    for stage, gates in STAGE_GATES.items():
        for gate in (*gates, *extra[stage]):
            if gate == CERTIFICATION:
                continue
            tally = merged.get((stage, gate)) or GateTally(
                stage=stage, gate=gate, rows_checked=counts["rows_read"]
            )
            # A type change against the certified table always holds: consumers must never
            # see a column change type under them, whatever the level.
            level = (
                EnforcementLevel.G3
                if stage is Stage.GOLD and gate == G3_SCHEMA
                else policy.gate_level(gate, dataset.level)
            )
            decisions.append(
                decide(
                    tally,
                    dataset_urn=dataset.urn,
                    run_id=run_id,
                    level=level,
                    max_invalid_rows_pct=policy.routing.max_invalid_rows_pct,
                    context=_context(gate, dataset, producer),
                    reached=stage is Stage.BRONZE
                    or counts["rows_bronze" if stage is Stage.SILVER else "rows_silver"] > 0,
                )
            )
    return decisions
