"""``BaselineRoller``: baselines roll forward from certified runs (E2).

A run hook (the ``RunHook`` protocol of the pipeline, duck-typed: this module does not import
the pipeline). At the end of a CERTIFIED run it profiles the run's partition as certified (read
from the certified Delta table the store names) and stores the baseline rolled forward as the
next version, with what the partition changed (new enum values, added/removed/retyped fields,
null rates) so the drift and data-quality signals can name it. When the dataset has no baseline
yet, or only one profiled from other files (``signalfactory profile --from-path`` at
bootstrap), the whole certified table is profiled instead. A pipeline run hands the roller its
partition's profile, merged from what its chunk workers summarised
(``on_partition_profile``), so the partition is not read back; without one (the SDK) the
partition is profiled, exactly, from the table.

It never raises into the run: any failure is logged (with the run id and the error type) and
the run goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from signalfactory.core.records import (
    CertificationStatus,
    Evidence,
    LifecycleEvent,
    RunRecord,
)
from signalfactory.enforcement.profile import (
    ENUM_MAX_DISTINCT,
    Baseline,
    changes,
    profile_table,
    roll_forward,
)

if TYPE_CHECKING:
    from signalfactory.knowledge.store import SqlStore
    from signalfactory.knowledge.store_baselines import StoredBaseline

log = structlog.get_logger("signalfactory.baselines")


def baseline_file(baselines_dir: Path, dataset_urn: str) -> Path:
    """``<baselines_dir>/<dataset name>/baseline.json`` (the name is the URN's last part)."""
    return baselines_dir / dataset_urn.rsplit("/", 1)[-1] / "baseline.json"


def store_baseline(
    store: SqlStore,
    baseline: Baseline,
    dataset_urn: str,
    *,
    run_id: str | None = None,
    diff: Mapping[str, Any] | None = None,
    baselines_dir: Path | None = None,
) -> StoredBaseline:
    """Store ``baseline`` as the next version of the dataset's baseline (and write the file)."""
    stored = store.put_baseline(
        dataset_urn,
        baseline.document(),
        schema_fingerprint=baseline.schema_fingerprint,
        row_count=baseline.row_count,
        source=baseline.source,
        run_id=run_id,
        changes=diff,
    )
    if baselines_dir is not None:
        baseline.write(baseline_file(baselines_dir, dataset_urn))
    return stored


class BaselineRoller:
    """Rolls the stored baseline forward after every CERTIFIED run."""

    def __init__(
        self,
        store: SqlStore,
        baselines_dir: Path | None = None,
        *,
        enum_max_distinct: int = ENUM_MAX_DISTINCT,
    ) -> None:
        self.store = store
        self.baselines_dir = baselines_dir
        self.enum_max_distinct = enum_max_distinct
        self._profiles: dict[str, Baseline] = {}

    def on_event(self, event: LifecycleEvent) -> None:
        return None

    def on_evidence(self, evidence: Evidence) -> None:
        return None

    def on_alert(self, alert: Mapping[str, Any]) -> None:
        return None

    def on_partition_profile(self, run: RunRecord, profile: Baseline) -> None:
        """The certified partition's profile, summarised by the chunk workers: the roll
        uses it instead of reading the partition back."""
        self._profiles[run.run_id] = profile

    def on_run_end(self, run: RunRecord) -> None:
        handed = self._profiles.pop(run.run_id, None)
        if run.certification_status is not CertificationStatus.CERTIFIED:
            return
        try:
            self.roll(run, handed)
        except Exception as exc:  # a baseline must never fail the run that certified
            log.warning(
                "baseline_roll_failed",
                run_id=run.run_id,
                dataset_urn=run.dataset_urn,
                error_type=type(exc).__name__,
                error=str(getattr(exc, "message", "")) or None,
            )

    def roll(self, run: RunRecord, handed: Baseline | None = None) -> StoredBaseline | None:
        """Roll the baseline of ``run``'s dataset forward with its certified partition
        (``handed``, the partition's profile from the run, when there is one)."""
        state = self.store.get_certification(run.dataset_urn)
        if state is None or not Path(state.path).exists():
            log.info("baseline_roll_skipped", run_id=run.run_id, reason="no certified table")
            return None
        current = self.store.get_baseline(run.dataset_urn)
        if current is None or current.source != state.path or not run.partition:
            # First baseline of the certified table (none yet, or one profiled from other
            # files at bootstrap, whose inferred types would read as drift), or an
            # unpartitioned table: profile the whole certified table.
            baseline = profile_table(
                state.path,
                dataset_urn=run.dataset_urn,
                enum_max_distinct=self.enum_max_distinct,
            )
            diff: dict[str, Any] = {"partitions": sorted(baseline.partitions), "initial": True}
        else:
            before = Baseline.from_document(current.document)
            if handed is not None and handed.enum_max_distinct == before.enum_max_distinct:
                part = handed
            else:
                part = profile_table(
                    state.path,
                    dataset_urn=run.dataset_urn,
                    partition=run.partition,
                    enum_max_distinct=before.enum_max_distinct,
                )
            diff = changes(before, part)
            baseline = roll_forward(before, part)
        stored = store_baseline(
            self.store,
            baseline,
            run.dataset_urn,
            run_id=run.run_id,
            diff=diff,
            baselines_dir=self.baselines_dir,
        )
        log.info(
            "baseline_rolled",
            run_id=run.run_id,
            dataset_urn=run.dataset_urn,
            version=stored.version,
            rows=baseline.row_count,
        )
        return stored
