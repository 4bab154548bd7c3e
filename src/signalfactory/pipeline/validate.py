"""Validate data against a policy bundle without running a pipeline.

Reads the source in chunks on an engine, conforms the schema, evaluates contract-lite and DQ
rules (uniqueness global across chunks) and hands each chunk's valid and invalid rows (with a
``_sf_reasons`` column) to ``sink``. Memory follows chunk size and worker count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from signalfactory.core.records import Stage
from signalfactory.enforcement.catalog import DQ, G4_CONTRACT
from signalfactory.enforcement.checks import applicable, compile_rules, evaluate_rows
from signalfactory.enforcement.outcomes import GateTally, merge
from signalfactory.enforcement.policy import PolicyBundle
from signalfactory.enforcement.schema import conform
from signalfactory.pipeline.uniqueness import Sequencer, UniqueTracker
from signalfactory.production.engines import create_engine
from signalfactory.production.formats import Chunk, check_chunk_size, read_chunks

Sink = Callable[[int, pl.DataFrame, pl.DataFrame], None]


@dataclass
class ValidationSummary:
    rows: int = 0
    valid_rows: int = 0
    invalid_rows: int = 0
    schema_broken: bool = False
    tallies: dict[tuple[Stage, str], GateTally] = field(default_factory=dict)

    def failures(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for tally in self.tallies.values():
            for sig, n in tally.row_signatures.items():
                out[sig] = out.get(sig, 0) + n
        return out


def validate_files(
    files: Sequence[Path],
    policy: PolicyBundle,
    *,
    chunk_size: int = 1_000_000,
    engine: str = "threads",
    max_workers: int | None = None,
    fmt: str | None = None,
    sink: Sink | None = None,
) -> ValidationSummary:
    check_chunk_size(chunk_size, "validate")
    rules = compile_rules(policy, Stage.SILVER)
    trackers = [UniqueTracker(c.column or "") for c in policy.dq if c.check == "unique"]
    sequencer = Sequencer()

    def work(chunk: Chunk) -> tuple[int, int, int, bool, list[GateTally]]:
        conformed = conform(
            chunk.df, policy, typed=chunk.typed, exact_decimals=chunk.exact_decimals
        )
        tallies = [conformed.tally]
        df = conformed.df
        with sequencer.turn(chunk.index):
            flags = [
                t.check(df[t.column]).alias(f"_sf_dup_{t.column}")
                for t in trackers
                if t.column in df.columns and not conformed.broken
            ]
        if conformed.broken:
            if sink is not None:
                sink(chunk.index, df, conformed.invalid)
            return chunk.df.height, 0, chunk.df.height, True, tallies
        if flags:
            df = df.with_columns(flags)
        split = evaluate_rows(df, applicable(rules, df.columns), Stage.SILVER, (G4_CONTRACT, DQ))
        tallies.extend(split.tallies)
        valid = split.valid.drop([c for c in split.valid.columns if c.startswith("_sf_dup_")])
        invalid = (
            pl.concat(
                [
                    conformed.invalid,
                    split.invalid.drop(
                        [c for c in split.invalid.columns if c.startswith("_sf_dup_")]
                    ),
                ],
                how="diagonal_relaxed",
            )
            if conformed.invalid.height
            else split.invalid.drop([c for c in split.invalid.columns if c.startswith("_sf_dup_")])
        )
        if sink is not None:
            sink(chunk.index, valid, invalid)
        return chunk.df.height, valid.height, invalid.height, False, tallies

    summary = ValidationSummary()
    runner = create_engine(engine, max_workers)
    all_tallies: list[GateTally] = []
    try:
        for rows, valid, invalid, broken, tallies in runner.map(
            work, read_chunks(files, fmt, chunk_size)
        ):
            summary.rows += rows
            summary.valid_rows += valid
            summary.invalid_rows += invalid
            summary.schema_broken |= broken
            all_tallies.extend(tallies)
    finally:
        runner.close()
    summary.tallies = merge(all_tallies)
    return summary
