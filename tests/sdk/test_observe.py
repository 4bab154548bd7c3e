"""observe(): an external job's writes evaluated, routed and certified like a pipeline run."""

from __future__ import annotations

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from factories import (
    DAY1,
    DAY2,
    URN,
    Project,
    certified_path,
    orders,
    policy_doc,
    read_table,
    set_rows,
    tree_digest,
)
from signalfactory.api import SignalFactory
from signalfactory.core.records import (
    CertificationStatus,
    GateResult,
    LifecycleEventType,
    RunStatus,
    Stage,
)
from signalfactory.sdk import WriteStatus, observe

PARTITION = {"dt": DAY1}


def _events(sf: SignalFactory, run_id: str) -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = {}
    for event in sf.store.list_events(run_id=run_id):
        found.setdefault(str(event.event_type), []).append(dict(event.payload))
    return found


def test_a_clean_gold_write_certifies_and_emits_the_lifecycle_events(
    registered: SignalFactory,
) -> None:
    df = orders(120, seed=3)
    with observe(
        URN,
        "airflow__2026-02-13",
        partition=PARTITION,
        settings=registered.settings,
        code_ref="abc123",
        dag_run_id="orders_dag__2026-02-13",
        job="orders_export",
    ) as obs:
        result = obs.write(df, layer="gold")

    assert result is not None
    assert result.status is WriteStatus.COMMITTED
    assert result.certified
    assert obs.result.certified
    assert obs.result.status is RunStatus.SUCCEEDED
    assert obs.result.run_id == "airflow__2026-02-13"
    certified = read_table(certified_path(registered))
    assert sorted(certified["order_id"].to_list()) == df["order_id"].to_list()

    state = registered.certified(URN)
    assert state.certification_status is CertificationStatus.CERTIFIED
    assert state.last_run_id == obs.result.run_id

    run = registered.store.get_run(obs.result.run_id)
    assert run is not None
    assert run.pipeline == "sdk:orders_export"
    assert run.status is RunStatus.SUCCEEDED
    assert run.rows_written == 120
    assert run.certification_status is CertificationStatus.CERTIFIED

    events = _events(registered, obs.result.run_id)
    (started,) = events[LifecycleEventType.JOB_RUN_STARTED]
    assert started["partition"] == PARTITION
    assert started["dag_run_id"] == "orders_dag__2026-02-13"
    assert started["code_ref"] == "abc123"
    assert started["pipeline"] == "sdk:orders_export"
    assert str(started["producer_urn"]).startswith("urn:")
    (completed,) = events[LifecycleEventType.JOB_RUN_COMPLETED]
    assert completed["rows_written"] == 120
    assert completed["partition"] == PARTITION
    assert LifecycleEventType.JOB_RUN_FAILED not in events
    commits = {str(c["layer"]): c for c in events[LifecycleEventType.DATASET_WRITE_COMMITTED]}
    assert set(commits) == {"gold", "certified"}
    for commit in commits.values():
        assert commit["rows_written"] == 120
        assert int(str(commit["bytes_written"])) > 0
        assert commit["partition_key"] == f"dt={DAY1}"

    stored = registered.store.list_evidence(run_id=obs.result.run_id)
    gates = {(str(e.stage), e.gate): e.result for e in stored}
    assert gates[("gold", "CERTIFICATION")] is GateResult.PASS
    assert gates[("bronze", "G3_SCHEMA")] is GateResult.PASS
    assert len(stored) == len(result.evidence) == 9


def test_a_schema_break_is_quarantined_and_holds_certified_byte_for_byte(
    registered: SignalFactory,
) -> None:
    with observe(URN, partition=PARTITION, settings=registered.settings) as first:
        first.write(orders(80, seed=1), layer="gold")
    assert first.result.certified
    before = tree_digest(certified_path(registered))

    broken = orders(80, seed=2, day=DAY1).with_columns(
        pl.col("order_total").cast(pl.String) + pl.lit(" USD")
    )
    with observe(URN, partition=PARTITION, settings=registered.settings) as obs:
        result = obs.write(broken, layer="gold")

    assert result is not None
    assert result.status is WriteStatus.HELD
    assert result.certification_status is CertificationStatus.HELD_AT_PREVIOUS
    assert not obs.result.certified
    assert tree_digest(certified_path(registered)) == before
    schema = next(e for e in result.evidence if e.stage is Stage.BRONZE and e.gate == "G3_SCHEMA")
    assert schema.result is GateResult.FAIL
    assert schema.failure_signature == "SCHEMA_BREAK:order_total:DECIMAL→STRING"
    assert schema.context["certified_view_status"] == "HELD_AT_PREVIOUS"
    assert schema.context["quarantine_table"] == obs.result.quarantine_table
    state = registered.certified(URN)
    assert state.certification_status is CertificationStatus.HELD_AT_PREVIOUS
    assert state.certified_version == first.result.certified_version
    (record,) = [q for q in registered.store.list_quarantine(URN) if q.run_id == obs.run_id]
    assert record.rows == 80
    commits = _events(registered, obs.run_id).get(LifecycleEventType.DATASET_WRITE_COMMITTED, [])
    assert commits == []  # nothing of the dataset was written


def test_bad_rows_go_to_quarantine_and_the_rest_is_certified(registered: SignalFactory) -> None:
    df = set_rows(orders(100, seed=5), [4, 9], order_type="FLASH_SALE")
    with observe(URN, partition=PARTITION, settings=registered.settings) as obs:
        result = obs.write(df, layer="gold")

    assert result is not None
    assert result.certified
    assert result.rows_written == 98
    assert result.rows_quarantined == 2
    dq = next(e for e in result.evidence if e.gate == "DQ")
    assert dq.result is GateResult.WARN
    assert dq.failure_signature == "UNKNOWN_ENUM:order_type:FLASH_SALE"
    certified = read_table(certified_path(registered))
    assert "FLASH_SALE" not in certified["order_type"].to_list()
    (record,) = registered.store.list_quarantine(URN)
    quarantined = pl.read_delta(record.path)
    assert sorted(quarantined["order_id"].to_list()) == ["10", "5"]


def test_too_many_unknown_enum_values_hold_the_batch(project: Project) -> None:
    project.write(policy=policy_doc(max_invalid_pct=1.0))
    sf = project.open()
    with observe(URN, partition=PARTITION, settings=sf.settings) as obs:
        obs.write(orders(50, seed=8), layer="gold")
    before = tree_digest(certified_path(sf))
    df = set_rows(orders(50, seed=9), range(5), order_type="FLASH_SALE")
    with observe(URN, partition=PARTITION, settings=sf.settings) as obs:
        result = obs.write(df, layer="gold")
    assert result is not None
    assert result.status is WriteStatus.HELD
    cert = next(e for e in result.evidence if e.gate == "CERTIFICATION")
    assert cert.result is GateResult.FAIL
    assert str(cert.failure_signature).startswith("INVALID_ROWS_ABOVE_THRESHOLD:")
    assert tree_digest(certified_path(sf)) == before


def test_a_producer_exception_fails_the_run_and_propagates_unchanged(
    registered: SignalFactory,
) -> None:
    class ProducerError(RuntimeError):
        pass

    boom = ProducerError("spark stage 7 lost")
    with (
        pytest.raises(ProducerError) as raised,
        observe(URN, "run_failing", partition=PARTITION, settings=registered.settings),
    ):
        raise boom
    assert raised.value is boom

    run = registered.store.get_run("run_failing")
    assert run is not None
    assert run.status is RunStatus.FAILED
    events = _events(registered, "run_failing")
    (failed,) = events[LifecycleEventType.JOB_RUN_FAILED]
    assert failed["failure_reason"] == "ProducerError: spark stage 7 lost"
    assert failed["partition"] == PARTITION
    assert LifecycleEventType.JOB_RUN_COMPLETED not in events
    assert registered.certified(URN).certification_status is CertificationStatus.NOT_EVALUATED


@pytest.mark.parametrize("kind", ["pandas", "pyarrow"])
def test_pandas_and_pyarrow_frames_are_observed_like_polars(
    registered: SignalFactory, kind: str
) -> None:
    df = orders(60, seed=12)
    data = df.to_pandas() if kind == "pandas" else df.to_arrow()
    assert isinstance(data, pd.DataFrame | pa.Table)
    with observe(URN, partition=PARTITION, settings=registered.settings) as obs:
        result = obs.write(data, layer="gold")
    assert result is not None
    assert result.certified, result
    assert result.rows_written == 60
    failed = [e for e in result.evidence if e.result is not GateResult.PASS]
    assert failed == []
    certified = read_table(certified_path(registered))
    assert sorted(certified["order_id"].to_list()) == df["order_id"].to_list()


def test_bronze_then_gold_writes_commit_each_layer_and_judge_each_stage_once(
    registered: SignalFactory,
) -> None:
    raw = orders(70, seed=21, day=DAY2)
    gold = raw.filter(pl.col("country") != "FR")
    with observe(URN, partition={"dt": DAY2}, settings=registered.settings) as obs:
        bronze = obs.write(raw, layer="bronze")
        final = obs.write(gold, layer="gold")
    assert bronze is not None
    assert final is not None
    assert {e.stage for e in bronze.evidence} == {Stage.BRONZE}
    assert bronze.certification_status is None
    assert bronze.rows_written == raw.height
    assert {e.stage for e in final.evidence} == {Stage.SILVER, Stage.GOLD}
    assert final.certified
    assert final.rows_written == gold.height
    events = _events(registered, obs.run_id)[LifecycleEventType.DATASET_WRITE_COMMITTED]
    assert [(e["layer"], e["rows_written"]) for e in events] == [
        ("bronze", raw.height),
        ("gold", gold.height),
        ("certified", gold.height),
    ]
    assert pl.read_delta(str(registered.settings.lake_root / "bronze/orders")).height == 70


def test_a_retried_run_id_gets_its_own_run(registered: SignalFactory) -> None:
    for _ in range(2):
        with observe(URN, "airflow__x", partition=PARTITION, settings=registered.settings) as obs:
            obs.write(orders(10, seed=4), layer="gold")
    assert obs.result.run_id == "airflow__x__retry1"
    assert {r.run_id for r in registered.store.list_runs(URN)} == {
        "airflow__x",
        "airflow__x__retry1",
    }


def test_observed_runs_show_in_the_status_runs_and_evidence_commands(
    registered: SignalFactory,
) -> None:
    import json

    from consumption.harness import sf_inproc

    with observe(URN, "airflow__cli", partition=PARTITION, settings=registered.settings) as obs:
        obs.write(set_rows(orders(40, seed=6), [1], order_type="FLASH_SALE"), layer="gold")
    home = registered.settings.home
    env = {"SIGNALFACTORY_PII_KEY": "5f" * 32}

    listed = json.loads(sf_inproc("runs", "--json", home=home, env=env).stdout)
    assert [(r["run_id"], r["pipeline"]) for r in listed] == [
        ("airflow__cli", "sdk:orders_enriched")
    ]
    status = json.loads(sf_inproc("status", "airflow__cli", "--json", home=home, env=env).stdout)
    assert status["certification_status"] == "CERTIFIED"
    assert status["rows_quarantined"] == 1
    shown = json.loads(
        sf_inproc("evidence", "--run", "airflow__cli", "--json", home=home, env=env).stdout
    )
    assert {(e["gate"], e["result"]) for e in shown} >= {("DQ", "WARN"), ("CERTIFICATION", "PASS")}


def test_a_hold_at_bronze_keeps_a_later_clean_gold_write_uncertified(
    registered: SignalFactory,
) -> None:
    with observe(URN, partition=PARTITION, settings=registered.settings) as first:
        first.write(orders(30, seed=31), layer="gold")
    before = tree_digest(certified_path(registered))
    raw = orders(30, seed=32).with_columns(pl.col("order_total").cast(pl.String) + pl.lit("?"))
    with observe(URN, partition=PARTITION, settings=registered.settings) as obs:
        bronze = obs.write(raw, layer="bronze")
        gold = obs.write(orders(30, seed=32), layer="gold")
    assert bronze is not None
    assert bronze.status is WriteStatus.HELD
    assert bronze.rows_written == 0
    assert gold is not None
    assert gold.status is WriteStatus.HELD
    assert gold.certification_status is CertificationStatus.HELD_AT_PREVIOUS
    cert = next(e for e in gold.evidence if e.gate == "CERTIFICATION")
    assert cert.failure_signature == "SCHEMA_BREAK:order_total:DECIMAL→STRING"
    assert tree_digest(certified_path(registered)) == before
    assert not (registered.settings.lake_root / "bronze/orders").exists()
    (record,) = [q for q in registered.store.list_quarantine(URN) if q.run_id == obs.run_id]
    held = pl.read_delta(record.path)
    assert held.group_by("_sf_stage").len().sort("_sf_stage").rows() == [
        ("bronze", 30),
        ("gold", 30),
    ]


def test_a_silver_write_stores_remediated_pii_only(registered: SignalFactory) -> None:
    df = orders(25, seed=41)
    with observe(URN, partition=PARTITION, settings=registered.settings) as obs:
        silver = obs.write(df, layer="silver")
    assert silver is not None
    assert silver.status is WriteStatus.COMMITTED
    assert {e.gate for e in silver.evidence} == {
        "G1_RESOLUTION",
        "G2_IDENTITY",
        "G3_SCHEMA",
        "G4_CONTRACT",
        "G5_PII",
        "DQ",
    }
    stored = pl.read_delta(str(registered.settings.lake_root / "silver/orders"))
    assert stored.height == 25
    raw_emails = set(df["email"].to_list())
    assert raw_emails.isdisjoint(stored["email"].to_list())
    assert registered.certified(URN).certification_status is CertificationStatus.NOT_EVALUATED


@pytest.mark.postgres
def test_an_observed_run_on_a_postgresql_store(project: Project, postgres_url: str) -> None:
    sf = project.open("pg_home", database_url=postgres_url)
    with observe(URN, "pg_run", partition=PARTITION, settings=sf.settings) as obs:
        result = obs.write(orders(40, seed=51), layer="gold")
    assert result is not None
    assert result.certified
    run = sf.store.get_run("pg_run")
    assert run is not None
    assert run.status is RunStatus.SUCCEEDED
    kinds = [str(e.event_type) for e in sf.store.list_events(run_id="pg_run")]
    assert kinds.count("DatasetWriteCommitted") == 2
    assert kinds[0] == "JobRunStarted"
    assert kinds[-1] == "JobRunCompleted"
