"""Shared test helpers: a dataset project (YAML files, source partitions) written in code.

Every data set is generated here from a seed; nothing is committed. ``Project`` writes
``dataset.yaml``, ``policy_bundle.yaml`` and ``pipeline.yaml`` into a folder and opens
``SignalFactory`` homes on it (SQLite by default, or any ``database_url``).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from deltalake import DeltaTable
from pydantic import SecretStr

from signalfactory.api import SignalFactory
from signalfactory.core.records import Evidence, Stage
from signalfactory.pipeline.runner import RunOutcome
from signalfactory.settings import Settings

URN = "ds://curated/orders_enriched"
DAY1, DAY2, DAY3 = "2026-02-13", "2026-02-14", "2026-02-15"
#: Key material for tokenization in tests (hex of 32 bytes); never a real secret.
TEST_PII_KEY = "5f" * 32
TYPES = ("STANDARD", "EXPRESS", "PICKUP")
COUNTRIES = ("US", "CA", "GB", "DE", "FR")

CONSTRAINTS: tuple[dict[str, Any], ...] = (
    {"field": "order_id", "type": "INTEGER", "nullable": False},
    {"field": "customer_id", "type": "STRING", "nullable": False},
    {"field": "order_total", "type": "DECIMAL(18,2)", "nullable": False},
    {"field": "order_type", "type": "STRING"},
    {"field": "email", "type": "STRING"},
    {"field": "phone", "type": "STRING"},
    {"field": "created_at", "type": "TIMESTAMP"},
    {"field": "country", "type": "STRING"},
)
DEFAULT_DQ: tuple[dict[str, Any], ...] = (
    {"check": "unique", "column": "order_id"},
    {"check": "accepted_values", "column": "order_type", "values": list(TYPES)},
)
LOCAL_STORAGE = {"bronze": "bronze/orders", "silver": "silver/orders", "gold": "gold/orders"}
DEFAULT_PII: dict[str, Any] = {
    "detection": [
        {"pattern": "EMAIL", "action": "tokenize"},
        {"pattern": "PHONE", "action": "mask"},
        {"pattern": "SSN", "action": "redact"},
    ]
}


def dataset_doc(
    *, tier: str = "TIER_1", level: str | None = None, storage: Mapping[str, str] | None = None
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "urn": URN,
        "owner_team": "data-platform",
        "tier": tier,
        "storage": dict(storage or LOCAL_STORAGE),
    }
    if level is not None:
        doc["enforcement_level"] = level
    return doc


def policy_doc(
    *,
    mode: str = "compatible",
    constraints: Sequence[Mapping[str, Any]] = CONSTRAINTS,
    invariants: Sequence[str] = ("order_total > 0",),
    dq: Sequence[Mapping[str, Any]] = DEFAULT_DQ,
    pii: Mapping[str, Any] | None = None,
    max_invalid_pct: float | None = None,
    enforcement: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": {"mode": mode, "constraints": [dict(c) for c in constraints]},
        "contract_lite": {
            "required_fields": ["order_id", "customer_id", "order_total"],
            "invariants": list(invariants),
        },
        "pii": dict(DEFAULT_PII if pii is None else pii),
        "dq": [dict(d) for d in dq],
    }
    if max_invalid_pct is not None:
        doc["routing"] = {"max_invalid_rows_pct": max_invalid_pct}
    if enforcement is not None:
        doc["enforcement"] = dict(enforcement)
    return doc


def pipeline_doc(
    *,
    fmt: str | None = "csv",
    path: str | None = None,
    engine: str = "sequential",
    chunk_size: int = 1000,
    silver: Sequence[Mapping[str, str]] = (),
    gold: Sequence[Mapping[str, str]] = (),
    name: str = "orders_daily",
) -> dict[str, Any]:
    ext = {"csv": "csv", "parquet": "parquet", "json": "json", None: "*"}.get(fmt, fmt)
    source: dict[str, Any] = {"path": path or f"raw/dt={{dt}}/*.{ext}"}
    if fmt is not None:
        source["format"] = fmt
    return {
        "pipeline": name,
        "dataset": URN,
        "source": source,
        "engine": engine,
        "chunk_size": chunk_size,
        "steps": {"silver": [dict(s) for s in silver], "gold": [dict(s) for s in gold]},
    }


def orders(n: int, *, seed: int, first_id: int = 1, day: str = DAY1) -> pl.DataFrame:
    """``n`` valid orders with typed columns (CSV writers turn them into text)."""
    rng = random.Random(seed)
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return pl.DataFrame(
        {
            "order_id": list(range(first_id, first_id + n)),
            "customer_id": [f"C{rng.randrange(1, 5000):06d}" for _ in range(n)],
            "order_total": [rng.randrange(500, 40_000) / 100 for _ in range(n)],
            "order_type": [rng.choice(TYPES) for _ in range(n)],
            "email": [f"user{rng.randrange(1, 10**6)}@example.com" for _ in range(n)],
            "phone": [
                f"555-{rng.randrange(200, 999)}-{rng.randrange(1000, 9999)}" for _ in range(n)
            ],
            "created_at": [start + timedelta(seconds=rng.randrange(86_400)) for _ in range(n)],
            "country": [rng.choice(COUNTRIES) for _ in range(n)],
        },
        schema_overrides={"order_id": pl.Int64, "created_at": pl.Datetime("us", "UTC")},
    )


def set_rows(df: pl.DataFrame, rows: Iterable[int], **values: Any) -> pl.DataFrame:
    """Set ``column=value`` on the rows at the given positions."""
    index = pl.int_range(pl.len()).is_in(list(rows))
    return df.with_columns(
        pl.when(index).then(pl.lit(v)).otherwise(pl.col(c)).alias(c) for c, v in values.items()
    )


def iso_times(df: pl.DataFrame) -> pl.DataFrame:
    """Timestamps as ISO-8601 text (JSON and CSV have no timestamp type)."""
    return df.with_columns(
        pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        for c, t in df.schema.items()
        if isinstance(t, pl.Datetime)
    )


def as_text(df: pl.DataFrame) -> pl.DataFrame:
    """Every column as text, the way a CSV source arrives."""
    return iso_times(df).with_columns(pl.all().cast(pl.String))


def write_source(folder: Path, df: pl.DataFrame, fmt: str, *, name: str = "orders") -> Path:
    """Write ``df`` as ``fmt``: csv, parquet, ndjson or json (a JSON array)."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        path = folder / f"{name}.csv"
        as_text(df).write_csv(path)
    elif fmt == "parquet":
        path = folder / f"{name}.parquet"
        df.write_parquet(path, row_group_size=700)
    elif fmt == "ndjson":
        path = folder / f"{name}.json"
        iso_times(df).write_ndjson(path)
    elif fmt == "json":
        path = folder / f"{name}.json"
        path.write_text(json.dumps(iso_times(df).to_dicts()), encoding="utf-8")
    else:
        raise ValueError(f"unknown test format {fmt!r}")
    return path


class Project:
    """A folder holding one dataset's YAML files and its raw partitions."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.opened: list[SignalFactory] = []

    @property
    def dataset_yaml(self) -> Path:
        return self.root / "dataset.yaml"

    @property
    def policy_yaml(self) -> Path:
        return self.root / "policy_bundle.yaml"

    @property
    def pipeline_yaml(self) -> Path:
        return self.root / "pipeline.yaml"

    def write(
        self,
        *,
        dataset: Mapping[str, Any] | None = None,
        policy: Mapping[str, Any] | None = None,
        pipeline: Mapping[str, Any] | None = None,
    ) -> Project:
        for path, doc, default in (
            (self.dataset_yaml, dataset, dataset_doc),
            (self.policy_yaml, policy, policy_doc),
            (self.pipeline_yaml, pipeline, pipeline_doc),
        ):
            if doc is not None or not path.exists():
                text = yaml.safe_dump(dict(doc if doc is not None else default()), sort_keys=False)
                path.write_text(text, encoding="utf-8")
        return self

    def write_yaml(self, name: str, doc: Mapping[str, Any]) -> Path:
        path = self.root / name
        path.write_text(yaml.safe_dump(dict(doc), sort_keys=False), encoding="utf-8")
        return path

    def write_module(self, name: str, text: str) -> Path:
        path = self.root / f"{name}.py"
        path.write_text(text, encoding="utf-8")
        return path

    def partition(
        self, dt: str, df: pl.DataFrame, fmt: str = "csv", *, extra_lines: Sequence[str] = ()
    ) -> Path:
        path = write_source(self.root / "raw" / f"dt={dt}", df, fmt)
        if extra_lines:
            with path.open("a", encoding="utf-8") as handle:
                handle.writelines(line + "\n" for line in extra_lines)
        return path

    def open(self, home: str = "home", *, database_url: str | None = None) -> SignalFactory:
        """A SignalFactory on ``root/home`` with the dataset registered from the YAML files."""
        self.write()
        settings = Settings(
            home=self.root / home,
            database_url=database_url,
            pii_key=SecretStr(TEST_PII_KEY),
            pii_key_file=None,
        )
        sf = SignalFactory(home=self.root / home, settings=settings)
        self.opened.append(sf)
        sf.register(self.dataset_yaml, self.policy_yaml)
        return sf

    def run(self, sf: SignalFactory, dt: str = DAY1, **kwargs: Any) -> RunOutcome:
        return sf.run(self.pipeline_yaml, {"dt": dt}, **kwargs)

    def close(self) -> None:
        for sf in self.opened:
            sf.close()
        self.opened.clear()


# -- reading results ---------------------------------------------------------------------


def certified_path(sf: SignalFactory) -> str:
    return sf.certified(URN).path


def read_table(path: str) -> pl.DataFrame:
    return pl.read_delta(path)


def quarantine(sf: SignalFactory, outcome: RunOutcome) -> pl.DataFrame:
    """The run's quarantine Delta table."""
    table = outcome.run.quarantine_table
    assert table is not None, "the run has no quarantine table"
    (record,) = [q for q in sf.store.list_quarantine(URN) if q.table_name == table]
    frame = pl.from_arrow(DeltaTable(record.path).to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def reasons(frame: pl.DataFrame) -> dict[str, set[str]]:
    """order_id (as text) -> the set of reasons in ``_sf_reasons``."""
    return {
        str(oid): set(str(r).split("; "))
        for oid, r in frame.select("order_id", "_sf_reasons").iter_rows()
    }


def gate(outcome: RunOutcome, stage: Stage | str, name: str) -> Evidence:
    matches = [e for e in outcome.evidence if str(e.stage) == str(stage) and e.gate == name]
    assert len(matches) == 1, f"expected one {stage}/{name} evidence, got {len(matches)}"
    return matches[0]


def tree_digest(path: str | Path) -> list[tuple[str, int, str]]:
    """Every file under ``path`` (sorted) with its size and sha256: a byte-level snapshot."""
    root = Path(path)
    return [
        (str(p.relative_to(root)), p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]


def day_offset(day: str, days: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()
