"""``signalfactory demo --scenario gates``: three days through the gates (SQLite + local Delta).

Generates a seeded orders data set in code, registers the PRD's ``dataset.yaml`` and
``policy_bundle.yaml``, runs three daily partitions — a clean day, a day with a few bad rows,
and a day whose ``order_total`` arrives as text — and prints what happened. The default
scenario, the two-week steel thread with signals, incidents and explanations, is in
:mod:`signalfactory.consumption.demo_thread`.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.panel import Panel

from signalfactory.api import SignalFactory
from signalfactory.consumption.report import certification_table, render_run
from signalfactory.enforcement.pii import ephemeral_demo_key

DATASET_YAML = """\
urn: "ds://curated/orders_enriched"
owner_team: "data-platform"
tier: TIER_1
storage:
  bronze: "bronze/orders/"
  silver: "silver/orders/"
  gold: "gold/orders/"
slo:
  freshness:
    expected_update_by: "02:00 ET daily"
    grace_period: "30m"
  volume:
    min_rows_per_partition: 1000
    anomaly_threshold_pct: 40
"""

POLICY_YAML = """\
schema:
  mode: strict  # breaking | compatible | strict
  constraints:
    - field: order_total
      type: DECIMAL
      nullable: false
    - field: customer_id
      type: STRING
      nullable: false
    - field: order_id
      type: INTEGER
      nullable: false
    - field: created_at
      type: TIMESTAMP
    - field: order_type
      type: STRING
    - field: country
      type: STRING
contract_lite:
  required_fields: [order_id, customer_id, order_total, created_at]
  invariants:
    - "order_total > 0"
    - "created_at IS NOT NULL"
pii:
  detection:
    - pattern: EMAIL
      action: tokenize
    - pattern: PHONE
      action: mask
    - pattern: SSN
      action: redact
dq:
  - {check: unique, column: order_id}
  - {check: accepted_values, column: order_type, values: [STANDARD, EXPRESS, PICKUP]}
  - {check: str_length, column: country, min: 2, max: 2}
  - {check: min_rows, value: 100}
"""

PIPELINE_YAML = """\
pipeline: orders_daily
dataset: ds://curated/orders_enriched
source:
  format: csv
  path: raw/orders/dt={dt}/*.csv
engine: threads
chunk_size: 1000
steps:
  silver:
    - sql: "SELECT * FROM batch WHERE order_id IS NOT NULL"
  gold:
    - python: "transforms:enrich"
"""

TRANSFORMS_PY = '''\
"""Gold step of the demo pipeline: a function(batch) -> batch."""
import polars as pl


def enrich(batch: pl.DataFrame) -> pl.DataFrame:
    return batch.with_columns(
        (pl.col("order_total") >= 200).alias("is_large_order"),
        pl.col("country").str.to_uppercase().alias("country"),
    )
'''

TYPES = ["STANDARD", "EXPRESS", "PICKUP"]
COUNTRIES = ["US", "CA", "GB", "DE", "FR"]


def generate_orders(day: date, rows: int, seed: int, first_id: int) -> pl.DataFrame:
    rng = random.Random(seed)  # noqa: S311 - demo data, not secrets
    start = datetime(day.year, day.month, day.day)
    return pl.DataFrame(
        {
            "order_id": list(range(first_id, first_id + rows)),
            "customer_id": [f"C{rng.randrange(1, 5000):06d}" for _ in range(rows)],
            "order_total": [f"{rng.uniform(5, 400):.2f}" for _ in range(rows)],
            "order_type": [rng.choice(TYPES) for _ in range(rows)],
            "email": [f"user{rng.randrange(1, 10**6)}@example.com" for _ in range(rows)],
            "phone": [
                f"555-{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}" for _ in range(rows)
            ],
            "created_at": [
                (start + timedelta(seconds=rng.randrange(86_400))).isoformat() + "Z"
                for _ in range(rows)
            ],
            "country": [rng.choice(COUNTRIES) for _ in range(rows)],
        }
    )


def write_day(raw: Path, day: date, df: pl.DataFrame, extra_lines: Sequence[str] = ()) -> Path:
    folder = raw / f"dt={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "orders.csv"
    df.write_csv(path)
    if extra_lines:
        with path.open("a", encoding="utf-8") as handle:
            handle.writelines(line + "\n" for line in extra_lines)
    return path


def build_demo(directory: Path, rows: int = 2_500) -> list[str]:
    """Write the demo's files; return the three partitions to run."""
    for name, text in (
        ("dataset.yaml", DATASET_YAML),
        ("policy_bundle.yaml", POLICY_YAML),
        ("pipeline.yaml", PIPELINE_YAML),
        ("transforms.py", TRANSFORMS_PY),
    ):
        (directory / name).write_text(text, encoding="utf-8")
    raw = directory / "raw" / "orders"
    days = [date(2026, 2, 13), date(2026, 2, 14), date(2026, 2, 15)]
    # Day 1: clean.
    write_day(raw, days[0], generate_orders(days[0], rows, seed=1, first_id=1))
    # Day 2: a few bad rows, each quarantined row by row with its reasons.
    bad = generate_orders(days[1], rows, seed=2, first_id=100_000).with_row_index("i")
    bad = bad.with_columns(
        pl.when(pl.col("i").is_in([7, 70, 700]))
        .then(pl.lit("-12.00"))
        .otherwise(pl.col("order_total"))
        .alias("order_total"),
        pl.when(pl.col("i") == 42)
        .then(pl.lit("FLASH_SALE"))
        .otherwise(pl.col("order_type"))
        .alias("order_type"),
        pl.when(pl.col("i").is_in([99, 199]))
        .then(pl.lit(None))
        .otherwise(pl.col("customer_id"))
        .alias("customer_id"),
        pl.when(pl.col("i") == 1500)
        .then(pl.lit(100_010))
        .otherwise(pl.col("order_id"))
        .alias("order_id"),
    ).drop("i")
    write_day(raw, days[1], bad, extra_lines=["100999,C000001,10.00,STANDARD,broken-line"])
    # Day 3: order_total arrives as text — a schema break; the whole batch is quarantined.
    as_text = generate_orders(days[2], rows, seed=3, first_id=200_000).with_columns(
        ("USD " + pl.col("order_total")).alias("order_total")
    )
    write_day(raw, days[2], as_text)
    return [d.isoformat() for d in days]


def run_gates_demo(directory: Path | None, console: Console) -> int:
    directory = (directory or Path.cwd() / "signalfactory-demo").resolve()
    home = directory / ".signalfactory"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    ephemeral_demo_key(home)
    partitions = build_demo(directory)
    console.print(
        Panel.fit(
            "[bold]Signal Factory demo[/] — orders_daily, three days through "
            "bronze → silver → gold\n"
            f"files in {directory}\nstore + lake in {home} (SQLite + local Delta tables)"
        )
    )
    with SignalFactory(home=home) as sf:
        record, _ = sf.register(directory / "dataset.yaml", directory / "policy_bundle.yaml")
        console.print(
            f"registered [bold]{record.urn}[/] (owner {record.owner_team}, "
            f"tier {record.tier} → enforcement G3 hard-fail)\n"
        )
        stories = [
            "Day 1: a clean day — every gate passes and the certified table advances.",
            "Day 2: a few bad rows — each is quarantined with its reasons; the rest is certified.",
            "Day 3: order_total arrives as text — a schema break: the whole batch is "
            "quarantined and the certified table stays on the last good version.",
        ]
        for story, dt in zip(stories, partitions, strict=True):
            console.rule(story, align="left", style="dim")
            outcome = sf.run(directory / "pipeline.yaml", {"dt": dt})
            render_run(console, outcome.run, outcome.evidence, outcome.alerts)
            console.print()
        state = sf.certified(record.urn)
        console.print(certification_table([state]))
        if state.certified_version is None:
            console.print("[bold red]No day was certified; see the errors above.[/]")
            return 1
        certified = pl.read_delta(state.path)
        console.print(
            f"The certified table holds {certified.height:,} rows from partitions "
            f"{', '.join(sorted(certified['dt'].unique().to_list()))}; emails are tokenized "
            f"(e.g. {certified['email'][0][:24]}…), phones masked (e.g. {certified['phone'][0]})."
        )
    console.print(
        Panel.fit(
            "Try next:\n"
            f"  export SIGNALFACTORY_HOME={home}\n"
            "  .venv/bin/signalfactory runs\n"
            "  .venv/bin/signalfactory evidence --dataset ds://curated/orders_enriched\n"
            "  .venv/bin/signalfactory quarantine list\n"
            "  .venv/bin/signalfactory certified ds://curated/orders_enriched --json\n"
            f"  .venv/bin/signalfactory run {directory / 'pipeline.yaml'} --partition dt=2026-02-14"
            "   # same input: nothing written twice\n"
            f"  python -c \"import polars as pl; print(pl.read_delta('{state.path}'))\"",
            title="next",
            title_align="left",
        )
    )
    return 0
