"""What happens to one chunk: bronze → silver → gold with the gates of each stage.

Runs on an engine worker, which may be another process or machine: a ``ChunkProcessor``
pickles as plain data (policy, step specs, key bytes, staging paths) and rebuilds its compiled
steps, rules and PII remediator on first use in each worker. Valid rows of each layer and
quarantined rows are staged as Parquet files by the worker itself; the driver only adds up
the small ``ChunkOutcome`` values.

Global uniqueness needs every earlier chunk, so a chunk with ``unique`` checks runs in two
phases: ``prepare`` (bronze and the silver steps; returns the key hashes) on a worker, the
ordered duplicate check in the driver, then ``finish`` (silver gates, PII, gold) on a worker.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from signalfactory.core.errors import Terminal
from signalfactory.core.records import Stage
from signalfactory.enforcement.catalog import DQ, G3_SCHEMA, G4_CONTRACT, G5_PII
from signalfactory.enforcement.checks import (
    SYSTEM_PREFIX,
    RowRule,
    applicable,
    compile_rules,
    evaluate_rows,
)
from signalfactory.enforcement.outcomes import GateTally
from signalfactory.enforcement.pii import PiiRemediator, detect
from signalfactory.enforcement.policy import PolicyBundle
from signalfactory.enforcement.profile import Baseline
from signalfactory.enforcement.profile_chunks import chunk_profile, merge_chunk_profiles
from signalfactory.enforcement.schema import compare_output, conform
from signalfactory.pipeline.uniqueness import unique_keys
from signalfactory.production.detect import FittedDetector, routing_rules, with_fitted
from signalfactory.production.formats import ROW_COLUMN, Chunk
from signalfactory.production.lake import StagedLayer
from signalfactory.production.spec import StepSpec
from signalfactory.production.steps import apply_steps, compile_steps

STAGE_COLUMN = "_sf_stage"
_BUILD_LOCK = threading.Lock()
DUP_PREFIX = "_sf_dup_"


@dataclass
class ChunkOutcome:
    index: int
    rows_read: int = 0
    rows_quarantined: int = 0
    rows_dropped: int = 0
    rows_added: int = 0
    rows_gold: int = 0
    rows_silver: int = 0
    rows_bronze: int = 0
    broken: bool = False
    retries: int = 0
    tallies: list[GateTally] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    _COUNTS = (
        "rows_read",
        "rows_quarantined",
        "rows_dropped",
        "rows_added",
        "rows_gold",
        "rows_silver",
        "rows_bronze",
    )

    def to_json(self) -> dict[str, Any]:
        """What a checkpoint keeps of a finished chunk (B7)."""
        data: dict[str, Any] = {k: getattr(self, k) for k in self._COUNTS}
        data.update(
            index=self.index,
            broken=self.broken,
            seconds=self.seconds,
            tallies=[t.to_json() for t in self.tallies],
        )
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChunkOutcome:
        out = cls(
            index=int(data["index"]),
            broken=bool(data["broken"]),
            seconds=dict(data["seconds"]),
            tallies=[GateTally.from_json(t) for t in data["tallies"]],
        )
        for key in cls._COUNTS:
            setattr(out, key, int(data.get(key, 0)))
        return out


@dataclass
class Prepared:
    """A chunk after bronze and the silver steps, waiting for the ordered duplicate check."""

    outcome: ChunkOutcome
    frame: pl.DataFrame | None = None
    frame_path: str | None = None
    keys: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass
class Staging:
    bronze: StagedLayer
    silver: StagedLayer
    gold: StagedLayer
    quarantine: StagedLayer

    @classmethod
    def under(cls, folder: Path) -> Staging:
        """Silver and gold keep min/max in their footers (the certified table shares their
        files and its readers filter); bronze and quarantine keep the null counts only."""
        return cls(
            bronze=StagedLayer(folder / "bronze", min_max=False),
            silver=StagedLayer(folder / "silver"),
            gold=StagedLayer(folder / "gold"),
            quarantine=StagedLayer(folder / "quarantine", min_max=False),
        )

    @property
    def handoff(self) -> StagedLayer:
        return StagedLayer(self.bronze.folder.parent / "handoff", min_max=False)

    @property
    def profile(self) -> StagedLayer:
        """Each chunk's summary of its gold rows (``chunk_profile``), never committed."""
        return StagedLayer(self.bronze.folder.parent / "profile", min_max=False)

    def partition_profile(
        self, source: str, dataset_urn: str, partition: Mapping[str, str]
    ) -> Baseline | None:
        """The profile of what gold staged (what a certified run certified), from its
        chunks' summaries; None when there are none."""
        files = self.profile.files()
        if not files:
            return None
        return merge_chunk_profiles(
            [pl.read_parquet(f) for f in files],
            source=source,
            dataset_urn=dataset_urn,
            partition=partition,
        )


#: Suffix of the handoff file that keeps a chunk's silver rows (with their system columns)
#: for a gold phase that runs after the whole silver layer (gold detect steps).
_GOLD_INPUT = "-gold-input"
#: Suffix of a bronze file holding the rows silver rejected, beside silver's shared file.
_REJECTED = "-rejected"


def _without_system(df: pl.DataFrame) -> pl.DataFrame:
    return df.drop([c for c in df.columns if c.startswith(SYSTEM_PREFIX)])


def discard_unfinished(folder: Path, done: set[int]) -> None:
    """Before resuming: drop staged files of chunks that have no checkpoint."""
    if not folder.is_dir():
        return
    for path in folder.rglob("part-*"):
        index = path.name.removeprefix("part-")[:7]
        if index.isdigit() and int(index) not in done:
            path.unlink()


class ChunkProcessor:
    """Everything a worker needs; ``__call__`` processes one chunk in one go."""

    def __init__(
        self,
        *,
        policy: PolicyBundle,
        partition: Mapping[str, str],
        silver_steps: Sequence[StepSpec],
        gold_steps: Sequence[StepSpec],
        base_dir: Path,
        staging: Staging,
        certified_schema: Mapping[str, str] | None,
        pii_key: bytes,
        in_process: bool = True,
        fitted: Mapping[str, Mapping[str, FittedDetector]] | None = None,
        share_bronze: bool = False,
    ) -> None:
        self.policy = policy
        self.partition = dict(partition)
        self.silver_specs = tuple(silver_steps)
        self.gold_specs = tuple(gold_steps)
        self.base_dir = base_dir
        self.staging = staging
        self.certified_schema = dict(certified_schema) if certified_schema else None
        self.pii_key = pii_key
        self.in_process = in_process
        #: Detector statistics over the whole input, by stage ("silver", "gold") and step label.
        self.fitted = {stage: dict(f) for stage, f in (fitted or {}).items()}
        self.gold_gates = (G4_CONTRACT, DQ) if routing_rules(self.gold_specs) else (G4_CONTRACT,)
        self.unique_columns = tuple(c.column or "" for c in policy.dq if c.check == "unique")
        self.pii_actions: dict[str, str] = {r.pattern: r.action for r in policy.pii.detection}
        self.pii_patterns = tuple(dict.fromkeys([*self.pii_actions, *policy.pii.scan_for]))
        # PII found without a rule fails G5_PII and is redacted, so neither the quarantine nor
        # (at levels that let the batch through) the certified table ever holds it raw.
        self.safe_actions = {p: self.pii_actions.get(p, "redact") for p in self.pii_patterns}
        #: Stage bronze in ``finish`` from silver's file when the silver stage has no steps
        #: (see ``_stage_bronze``); else ``prepare`` stages it (as the SDK's bronze writes need).
        self.share_bronze = share_bronze and not self.silver_specs
        self._built: dict[str, Any] | None = None

    # Pickle as plain data; compiled steps, rules and ciphers are rebuilt in each worker.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_built"] = None
        return state

    def _build(self) -> dict[str, Any]:
        if self._built is not None:
            return self._built
        with _BUILD_LOCK:  # worker threads of one engine share this processor
            return self._build_once()

    def _build_once(self) -> dict[str, Any]:
        if self._built is None:
            self._built = {
                "silver_steps": with_fitted(
                    compile_steps(self.silver_specs, self.base_dir), self.fitted.get("silver", {})
                ),
                "gold_steps": with_fitted(
                    compile_steps(self.gold_specs, self.base_dir), self.fitted.get("gold", {})
                ),
                "silver_rules": (
                    *compile_rules(self.policy, Stage.SILVER),
                    *routing_rules(self.silver_specs),
                ),
                "gold_rules": (
                    *compile_rules(self.policy, Stage.GOLD),
                    *routing_rules(self.gold_specs),
                ),
                "remediator": PiiRemediator(self.pii_key),
            }
        return self._built

    def bind(self, stage: str, fitted: Mapping[str, FittedDetector]) -> None:
        """Score ``stage``'s detect steps with statistics fitted over the whole input."""
        self.fitted[stage] = dict(fitted)
        self._built = None

    @property
    def needs_ordering(self) -> bool:
        return bool(self.unique_columns)

    # -- helpers -------------------------------------------------------------------------
    def _with_partition(self, df: pl.DataFrame) -> pl.DataFrame:
        for key, value in self.partition.items():
            if key in df.columns:
                other = df.filter(pl.col(key).cast(pl.String) != value).height
                if other:
                    raise Terminal(
                        f"the data has a column {key!r} with {other:,} value(s) other than the "
                        f"run's partition {key}={value}; a partition's rows must all belong to "
                        f"it. Rename the source column or fix the partition value."
                    )
        missing = [pl.lit(v).alias(k) for k, v in self.partition.items() if k not in df.columns]
        return df.with_columns(missing) if missing else df

    def _quarantine(self, out: ChunkOutcome, stage: Stage, df: pl.DataFrame) -> None:
        if df.height == 0:
            return
        df = df.drop([c for c in df.columns if c.startswith(DUP_PREFIX)])
        if self.safe_actions:
            findings = detect(df, list(self.safe_actions), self._pii_columns(df))
            if findings.total:
                remediator: PiiRemediator = self._build()["remediator"]
                df, _ = remediator.remediate(df, self.safe_actions, findings)
        text = df.with_columns(
            [pl.col(c).cast(pl.String) for c in df.columns if c not in (ROW_COLUMN,)]
        ).with_columns(pl.lit(str(stage)).alias(STAGE_COLUMN))
        self.staging.quarantine.write(out.index, text, suffix=f"-{stage}")
        out.rows_quarantined += df.height

    def _pii_columns(self, df: pl.DataFrame) -> list[str] | None:
        columns = self.policy.pii.columns
        if columns is None:
            return None
        return [c for c in columns if c in df.columns]

    def _missing_required(self, df: pl.DataFrame, tally: GateTally) -> None:
        for name in self.policy.contract_lite.required_fields:
            if name not in df.columns:
                tally.batch_signatures[f"MISSING_FIELD:{name}"] += 1

    def _split(
        self,
        df: pl.DataFrame,
        rules: Sequence[RowRule],
        stage: Stage,
        gates: Sequence[str],
        out: ChunkOutcome,
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The valid rows, and the invalid ones (already quarantined)."""
        split = evaluate_rows(df, applicable(rules, df.columns), stage, gates)
        out.tallies.extend(split.tallies)
        self._quarantine(out, stage, split.invalid)
        return split.valid, split.invalid

    def _stage_bronze(
        self, index: int, bronze: pl.DataFrame, rejected: pl.DataFrame, shared: int | None
    ) -> None:
        """Bronze holds every conformed row. When silver kept its ``shared`` rows as they
        were (no steps, no PII remediated; else ``shared`` is None), bronze is silver's very
        file plus a file of the rows silver rejected: valid rows are encoded once."""
        if shared is None:
            self.staging.bronze.write(index, _without_system(bronze))
            return
        self.staging.bronze.link_from(self.staging.silver, index, shared)
        self.staging.bronze.write(index, _without_system(rejected), suffix=_REJECTED)

    def _count_step_delta(self, out: ChunkOutcome, before: int, after: int) -> None:
        if after < before:
            out.rows_dropped += before - after
        else:
            out.rows_added += after - before

    # -- phases --------------------------------------------------------------------------
    def __call__(self, chunk: Chunk) -> ChunkOutcome:
        """Both phases at once: for chunks that need no ordered duplicate check."""
        return self.finish((self.prepare(chunk), {}))

    def prepare(self, chunk: Chunk) -> Prepared:
        """Bronze (malformed lines, G3_SCHEMA) and the silver steps."""
        out = ChunkOutcome(index=chunk.index, rows_read=chunk.df.height)
        clock = time.perf_counter()
        if chunk.malformed is not None and chunk.malformed.height:
            out.rows_read += chunk.malformed.height
            tally = GateTally(
                stage=Stage.BRONZE,
                gate=G3_SCHEMA,
                rows_checked=chunk.malformed.height,
                rows_failed=chunk.malformed.height,
            )
            tally.row_signatures["MALFORMED_ROW"] += chunk.malformed.height
            out.tallies.append(tally)
            self._quarantine(out, Stage.BRONZE, chunk.malformed)
        if chunk.df.height == 0:
            return Prepared(out)
        conformed = conform(
            chunk.df,
            self.policy,
            typed=chunk.typed,
            exact_decimals=chunk.exact_decimals,
            parsed=chunk.parsed,
        )
        out.tallies.append(conformed.tally)
        self._quarantine(out, Stage.BRONZE, conformed.invalid)
        if conformed.broken:
            out.broken = True
            return Prepared(out)
        bronze = self._with_partition(conformed.df)
        if not self.share_bronze:
            self.staging.bronze.write(chunk.index, _without_system(bronze))
        out.rows_bronze = bronze.height
        out.seconds["bronze"] = time.perf_counter() - clock

        clock = time.perf_counter()
        silver = apply_steps(bronze, self._build()["silver_steps"])
        self._count_step_delta(out, bronze.height, silver.height)
        contract = GateTally(stage=Stage.SILVER, gate=G4_CONTRACT)
        self._missing_required(silver, contract)
        out.tallies.append(contract)
        keys = {c: unique_keys(silver[c]) for c in self.unique_columns if c in silver.columns}
        out.seconds["silver"] = time.perf_counter() - clock
        if self.in_process or not keys:
            return Prepared(out, frame=silver, keys=keys)
        # Out of process: hand the frame over as a file instead of sending it back and forth.
        self.staging.handoff.write(chunk.index, silver)
        return Prepared(out, frame_path=str(self.staging.handoff.folder), keys=keys)

    def finish(
        self, item: tuple[Prepared, Mapping[str, np.ndarray]], silver_only: bool = False
    ) -> ChunkOutcome:
        """Silver gates (with the duplicate flags), PII, gold steps and gold gates."""
        prepared, duplicates = item
        # A retried attempt starts again from what ``prepare`` counted, never from a failed
        # attempt's partial counts.
        out = copy.deepcopy(prepared.outcome)
        silver = prepared.frame
        if silver is None and prepared.frame_path is not None:
            handoff = Path(prepared.frame_path) / f"part-{out.index:07d}.parquet"
            silver = pl.read_parquet(handoff)
        if silver is None:
            return out
        built = self._build()
        clock = time.perf_counter()
        bronze = silver  # the silver steps' input, when there are none (share_bronze)
        if duplicates:
            silver = silver.with_columns(
                [pl.Series(f"{DUP_PREFIX}{c}", flags) for c, flags in duplicates.items()]
            )
        silver, rejected = self._split(
            silver, built["silver_rules"], Stage.SILVER, (G4_CONTRACT, DQ), out
        )
        kept = silver.drop([c for c in silver.columns if c.startswith(DUP_PREFIX)])
        silver = self._pii(kept, out)
        # System columns (_sf_row, …) trace rows in the quarantine; bronze, silver, gold and
        # certified hold the data's own columns (so identity stages can share files).
        self.staging.silver.write(out.index, _without_system(silver))
        if self.share_bronze:
            shared = silver.height if silver is kept else None
            self._stage_bronze(out.index, bronze, rejected, shared)
        out.rows_silver = silver.height
        out.seconds["silver"] = out.seconds.get("silver", 0.0) + time.perf_counter() - clock
        if silver_only:  # gold runs later over this frame, row numbers and all
            self.staging.handoff.write(out.index, silver, suffix=_GOLD_INPUT)
        result = out if silver_only else self._gold(out, silver)
        if prepared.frame_path is not None:  # only once the work succeeded: retries reread it
            (Path(prepared.frame_path) / f"part-{out.index:07d}.parquet").unlink(missing_ok=True)
        return result

    def bronze_frame(self, chunk: Chunk) -> pl.DataFrame | None:
        """The chunk as the silver steps receive it, without side effects (detect pre-pass)."""
        if chunk.df.height == 0:
            return None
        conformed = conform(
            chunk.df,
            self.policy,
            typed=chunk.typed,
            exact_decimals=chunk.exact_decimals,
            parsed=chunk.parsed,
        )
        return None if conformed.broken else self._with_partition(conformed.df)

    def finish_silver(self, item: tuple[Prepared, Mapping[str, np.ndarray]]) -> ChunkOutcome:
        """``finish`` up to the staged silver layer (gold detectors are fitted on it)."""
        return self.finish(item, silver_only=True)

    def finish_gold(self, out: ChunkOutcome) -> ChunkOutcome:
        """The gold half of ``finish``, over the chunk's staged silver part."""
        path = self.staging.handoff.folder / f"part-{out.index:07d}{_GOLD_INPUT}.parquet"
        if out.broken or not path.is_file():
            return out
        result = self._gold(out, pl.read_parquet(path))
        path.unlink()  # only once the work succeeded: retries reread it
        return result

    def _gold(self, out: ChunkOutcome, silver: pl.DataFrame) -> ChunkOutcome:
        built = self._build()
        clock = time.perf_counter()
        gold = self._with_partition(apply_steps(silver, built["gold_steps"]))
        self._count_step_delta(out, silver.height, gold.height)
        out.tallies.append(
            compare_output(
                Stage.GOLD,
                gold.schema,
                self.certified_schema,
                self.policy.schema_.mode,
                gold.height,
            )
        )
        gold_contract = GateTally(stage=Stage.GOLD, gate=G4_CONTRACT)
        self._missing_required(gold, gold_contract)
        out.tallies.append(gold_contract)
        before_rules = gold.height
        gold, _ = self._split(gold, built["gold_rules"], Stage.GOLD, self.gold_gates, out)
        gold = _without_system(gold)
        if (
            not self.gold_specs
            and gold.height == before_rules == silver.height
            and gold.schema == _without_system(silver).schema
        ):
            # Gold is silver as staged (no gold steps, no gold row failed): link its file
            # instead of encoding the same rows again.
            self.staging.gold.link_from(self.staging.silver, out.index, gold.height)
        else:
            self.staging.gold.write(out.index, gold)
        # The certified partition's profile, summarised where its rows are (no re-read).
        self.staging.profile.write(out.index, chunk_profile(gold))
        out.rows_gold = gold.height
        out.seconds["gold"] = time.perf_counter() - clock
        return out

    def _pii(self, df: pl.DataFrame, out: ChunkOutcome) -> pl.DataFrame:
        tally = GateTally(stage=Stage.SILVER, gate=G5_PII, rows_checked=df.height)
        out.tallies.append(tally)
        if not self.pii_patterns or df.height == 0:
            return df
        findings = detect(df, self.pii_patterns, self._pii_columns(df))
        for key, count in findings.to_metrics().items():
            tally.counters[f"detected:{key}"] += count
        for pattern, column in findings.counts:
            rule_columns = next(
                (r.columns for r in self.policy.pii.detection if r.pattern == pattern), None
            )
            if pattern not in self.pii_actions or (
                rule_columns is not None and column not in rule_columns
            ):
                tally.batch_signatures[f"PII_DETECTED:{pattern}:{column}"] += 1
        if findings.total:
            remediator: PiiRemediator = self._build()["remediator"]
            df, actions = remediator.remediate(df, self.safe_actions, findings)
            for key, count in actions.items():
                tally.counters[f"remediated:{key}"] += count
        return df
