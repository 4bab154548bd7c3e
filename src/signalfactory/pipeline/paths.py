"""Where a dataset's layers live on disk (or, later, in object storage)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from signalfactory.enforcement.policy import DatasetSpec
from signalfactory.production.lake import derive_certified_path, resolve_table_path


@dataclass(frozen=True, slots=True)
class DatasetPaths:
    bronze: str
    silver: str
    gold: str
    certified: str
    quarantine_root: str

    @classmethod
    def for_dataset(cls, dataset: DatasetSpec, lake_root: Path) -> DatasetPaths:
        storage = dataset.storage
        where = f"dataset {dataset.urn} storage"
        gold = resolve_table_path(storage.gold, lake_root, f"{where}.gold")
        certified = (
            resolve_table_path(storage.certified, lake_root, f"{where}.certified")
            if storage.certified
            else derive_certified_path(gold)
        )
        quarantine = (
            resolve_table_path(storage.quarantine, lake_root, f"{where}.quarantine")
            if storage.quarantine
            else str(lake_root / "quarantine" / dataset.name)
        )
        return cls(
            bronze=resolve_table_path(storage.bronze, lake_root, f"{where}.bronze"),
            silver=resolve_table_path(storage.silver, lake_root, f"{where}.silver"),
            gold=gold,
            certified=certified,
            quarantine_root=quarantine,
        )

    def quarantine_table(self, table_name: str) -> str:
        return str(Path(self.quarantine_root) / table_name.removeprefix("quarantine."))
