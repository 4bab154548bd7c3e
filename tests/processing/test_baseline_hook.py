"""BaselineRoller: baselines roll forward from certified runs of real pipelines."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from structlog.testing import capture_logs

from factories import DAY1, DAY2, DAY3, URN, Project, as_text, certified_path, orders
from signalfactory.core.records import CertificationStatus
from signalfactory.enforcement.profile import Baseline, roll_forward
from signalfactory.processing import baseline_hook
from signalfactory.processing.baseline_hook import BaselineRoller, baseline_file

from .pipelines import run_rolling


def test_baseline_rolls_forward_after_each_certified_run(project: Project) -> None:
    sizes = {DAY1: 900, DAY2: 1100, DAY3: 1300}
    for i, (day, n) in enumerate(sizes.items()):
        project.partition(day, orders(n, seed=i + 1, first_id=10_000 * i + 1, day=day))
    sf = project.open()
    for day in sizes:
        assert (
            run_rolling(project, sf, day).run.certification_status is CertificationStatus.CERTIFIED
        )

    versions = sf.store.list_baselines(URN)
    assert [v.version for v in versions] == [1, 2, 3]
    assert [v.row_count for v in versions] == [900, 2000, 3300]
    runs = {r.run_id for r in sf.store.list_runs(URN)}
    assert {v.run_id for v in versions} == runs
    latest = Baseline.from_document(versions[-1].document)
    assert latest.partitions == {f"dt={d}": n for d, n in sizes.items()}
    assert latest.source == certified_path(sf)
    assert latest.columns["order_type"].enum_values == ("EXPRESS", "PICKUP", "STANDARD")
    whole = pl.read_delta(certified_path(sf))
    assert latest.columns["order_total"].null_count == 0
    stats = latest.columns["order_total"].numeric
    assert stats is not None
    totals = whole["order_total"].cast(pl.Float64)
    assert stats.min == totals.min()
    assert stats.max == totals.max()
    assert stats.mean == pytest.approx(totals.mean())
    assert versions[-1].changes["partitions"] == [f"dt={DAY3}"]
    assert versions[-1].changes["new_enum_values"] == {}
    written = Baseline.read(baseline_file(sf.settings.home / "baselines", URN))
    assert written == latest
    assert sf.store.find_baseline_of_run(versions[1].run_id) == versions[1]


def test_a_held_run_does_not_roll_the_baseline(project: Project) -> None:
    project.partition(DAY1, orders(800, seed=1))
    text = as_text(orders(800, seed=2, first_id=5000, day=DAY2))
    project.partition(
        DAY2, text.with_columns(("USD " + pl.col("order_total")).alias("order_total"))
    )
    sf = project.open()
    run_rolling(project, sf, DAY1)
    held = run_rolling(project, sf, DAY2)
    assert held.run.certification_status is CertificationStatus.HELD_AT_PREVIOUS
    assert [v.row_count for v in sf.store.list_baselines(URN)] == [800]


def test_the_roller_never_raises_into_the_run(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.partition(DAY1, orders(300, seed=1))
    sf = project.open()

    def broken(*_a: object, **_k: object) -> Baseline:
        raise OSError("disk gone")

    monkeypatch.setattr(baseline_hook, "profile_table", broken)
    with capture_logs() as logs:
        outcome = run_rolling(project, sf, DAY1)
    assert outcome.run.certification_status is CertificationStatus.CERTIFIED
    assert sf.store.list_baselines(URN) == []
    failed = [e for e in logs if e["event"] == "baseline_roll_failed"]
    assert len(failed) == 1
    assert failed[0]["run_id"] == outcome.run.run_id
    assert failed[0]["error_type"] == "OSError"


def test_a_bootstrap_profile_from_raw_files_is_replaced_by_the_certified_one(
    project: Project, tmp_path: Path
) -> None:
    raw = project.partition(DAY1, orders(500, seed=1))
    sf = project.open()
    from signalfactory.enforcement.profile import profile_table
    from signalfactory.processing.baseline_hook import store_baseline

    store_baseline(sf.store, profile_table(raw, dataset_urn=URN), URN)
    run = run_rolling(project, sf, DAY1).run
    first, second = sf.store.list_baselines(URN)
    assert first.source == str(raw)
    assert second.source == certified_path(sf)
    assert second.run_id == run.run_id
    assert second.changes.get("initial") is True
    assert second.document["schema_fields"]["order_total"] == "DECIMAL"
    roller = BaselineRoller(sf.store)
    assert roller.roll(run) is not None  # rolling the same run again counts nothing twice
    assert sf.store.get_baseline(URN) is not None
    assert sf.store.list_baselines(URN)[-1].row_count == 500


def test_a_certified_partition_is_profiled_from_its_chunks_not_read_back(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.partition(DAY1, orders(900, seed=1))
    project.partition(DAY2, orders(2_500, seed=2, first_id=10_000, day=DAY2))
    sf = project.open()
    run_rolling(project, sf, DAY1)  # the first baseline profiles the whole certified table
    calls: list[object] = []
    real = baseline_hook.profile_table

    def counted(*args: object, **kwargs: object) -> Baseline:
        calls.append(kwargs.get("partition"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(baseline_hook, "profile_table", counted)
    run_rolling(project, sf, DAY2)  # chunk_size 1,000: three chunks' summaries merged
    assert calls == []
    rolled = sf.store.list_baselines(URN)[-1]
    handed = Baseline.from_document(rolled.document)
    # The same figures a read-back of the certified partition gives.
    read_back = roll_forward(
        Baseline.from_document(sf.store.list_baselines(URN)[0].document),
        real(certified_path(sf), dataset_urn=URN, partition={"dt": DAY2}),
    )
    assert handed.partitions == read_back.partitions == {f"dt={DAY1}": 900, f"dt={DAY2}": 2_500}
    assert handed.schema_fingerprint == read_back.schema_fingerprint
    for name, column in read_back.columns.items():
        mine = handed.columns[name]
        assert (mine.rows, mine.null_count, mine.enum_values) == (
            column.rows,
            column.null_count,
            column.enum_values,
        ), name
        if column.numeric is not None:
            assert mine.numeric is not None
            assert (mine.numeric.min, mine.numeric.max) == (column.numeric.min, column.numeric.max)
            assert mine.numeric.mean == pytest.approx(column.numeric.mean)
            assert mine.numeric.std == pytest.approx(column.numeric.std)
    assert rolled.changes["partitions"] == [f"dt={DAY2}"]
