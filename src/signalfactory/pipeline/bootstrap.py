"""Bootstrap (PRD §4.2 phase A): registration, policy approval and certification init."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from signalfactory.core.errors import ConfigError
from signalfactory.core.protocols import MetadataStore
from signalfactory.core.records import (
    CertificationState,
    CertificationStatus,
    DatasetRecord,
    Transition,
)
from signalfactory.core.yamlfile import load_model
from signalfactory.enforcement.policy import DatasetSpec, PolicyBundle
from signalfactory.pipeline.paths import DatasetPaths
from signalfactory.processing.signals.policy import freshness_policy, volume_policy


def load_policy(path: Path) -> PolicyBundle:
    bundle = load_model(path, PolicyBundle, "policy bundle")
    bundle.validate_references(f"policy bundle {path}")
    return bundle


def register(
    store: MetadataStore,
    dataset: DatasetSpec,
    policy: PolicyBundle,
    lake_root: Path,
    *,
    source_files: dict[str, str] | None = None,
    actor: str = "signalfactory.register",
) -> tuple[DatasetRecord, CertificationState]:
    """Store the dataset and its approved bundle; create the certified view's state row."""
    policy.validate_references(f"policy bundle for {dataset.urn}")
    paths = DatasetPaths.for_dataset(dataset, lake_root)
    previous = store.get_dataset(dataset.urn)
    record = DatasetRecord(
        urn=dataset.urn,
        owner_team=dataset.owner_team,
        tier=dataset.tier,
        spec=dataset.model_dump(mode="json", exclude_none=True),
        policy=policy.model_dump(mode="json", by_alias=True),
        source_files=source_files or {},
    )
    # A bad SLO (e.g. expected_update_by) fails now, not at the first signal evaluation.
    freshness_policy(record.spec)
    volume_policy(record.spec)
    store.put_dataset(record)
    store.append_transition(
        Transition(
            subject=dataset.urn,
            from_status="REGISTERED" if previous else None,
            to_status="REGISTERED",
            actor=actor,
            reason="re-registered with a new policy bundle" if previous else "registered",
        )
    )
    state = store.get_certification(dataset.urn)
    if state is None:
        state = CertificationState(
            dataset_urn=dataset.urn,
            certification_status=CertificationStatus.NOT_EVALUATED,
            certified_version=None,
            last_certified_at=None,
            last_run_id=None,
            path=paths.certified,
        )
        store.put_certification(state)
    elif state.path != paths.certified:
        state = replace(state, path=paths.certified)
        store.put_certification(state)
    return record, state


def register_files(
    store: MetadataStore, dataset_yaml: Path, policy_yaml: Path, lake_root: Path
) -> tuple[DatasetRecord, CertificationState]:
    dataset = load_model(dataset_yaml, DatasetSpec, "dataset file")
    try:
        DatasetPaths.for_dataset(dataset, lake_root)
    except ConfigError as exc:
        raise ConfigError(f"dataset file {dataset_yaml}: {exc.message}") from None
    policy = load_policy(policy_yaml)
    return register(
        store,
        dataset,
        policy,
        lake_root,
        source_files={"dataset": str(dataset_yaml), "policy": str(policy_yaml)},
    )
