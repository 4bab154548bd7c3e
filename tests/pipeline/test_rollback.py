"""B12: rolling the certified table back to an earlier certified version, and undoing it.

Three real runs certify three days (v0, v1, v2); the rollback is a Delta restore that is itself
a new version, moves the certification state and leaves a transition in the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake

from factories import DAY1, DAY2, DAY3, URN, Project, certified_path, orders
from signalfactory.api import SignalFactory
from signalfactory.core.errors import ConfigError, NotFoundError
from signalfactory.core.records import CertificationStatus
from signalfactory.pipeline.certified_ops import parse_version, rollback, rollback_to
from signalfactory.pipeline.runner import RunOutcome

SIZES = {DAY1: 1200, DAY2: 1300, DAY3: 1400}
FIRST_ID = {DAY1: 1, DAY2: 10_000, DAY3: 20_000}


@dataclass
class History:
    sf: SignalFactory
    outcomes: list[RunOutcome]
    path: str


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort("order_id")


def at(path: str, version: int | None = None) -> pl.DataFrame:
    return _sorted(pl.read_delta(path, version=version))


def trail(sf: SignalFactory) -> list[tuple[str | None, str, str, str]]:
    return [
        (t.from_status, t.to_status, t.reason, t.actor)
        for t in sf.store.list_transitions(URN)
        if t.reason.startswith("rollback")
    ]


@pytest.fixture
def history(project: Project) -> History:
    for i, day in enumerate((DAY1, DAY2, DAY3)):
        project.partition(day, orders(SIZES[day], seed=i + 1, first_id=FIRST_ID[day], day=day))
    sf = project.open()
    outcomes = [project.run(sf, day) for day in (DAY1, DAY2, DAY3)]
    assert [o.run.certified_version for o in outcomes] == [0, 1, 2]
    return History(sf, outcomes, certified_path(sf))


def test_rollback_restores_an_earlier_certified_version_as_a_new_one(history: History) -> None:
    sf, path = history.sf, history.path
    expected = at(path, 1)
    assert expected.height == SIZES[DAY1] + SIZES[DAY2]

    state = rollback(sf.store, URN, 1, actor="alice")

    assert state.certified_version == 3 == DeltaTable(path).version()
    assert state.certification_status is CertificationStatus.CERTIFIED
    assert state.last_run_id == history.outcomes[-1].run.run_id
    assert state.path == path
    assert sf.store.get_certification(URN) == state
    current = at(path)
    assert current.equals(expected)
    assert current.filter(pl.col("order_id") >= FIRST_ID[DAY3]).height == 0
    assert at(path, 2).height == sum(SIZES.values())  # the rolled-back version is still there

    commit = DeltaTable(path).history(1)[0]
    assert commit["operation"] == "RESTORE"
    assert commit["signalfactory.operation"] == "rollback"
    assert commit["signalfactory.from_version"] == "2"
    assert commit["signalfactory.to_version"] == "1"
    assert commit["signalfactory.actor"] == "alice"
    assert trail(sf) == [("v2", "v3", "rollback to v1", "alice")]


def test_rolling_back_the_rollback_restores_the_later_content(history: History) -> None:
    sf, path = history.sf, history.path
    latest = at(path)
    first = rollback_to(sf.store, URN, "v1", "alice")
    assert (first.from_version, first.to_version, first.new_version) == (2, 1, 3)
    assert first.rows == SIZES[DAY1] + SIZES[DAY2]

    undo = rollback_to(sf.store, URN, f"v{first.from_version}", "bob")

    assert (undo.from_version, undo.to_version, undo.new_version) == (3, 2, 4)
    assert undo.state.certified_version == 4
    assert undo.rows == sum(SIZES.values())
    assert at(path).equals(latest)
    assert trail(sf) == [
        ("v2", "v3", "rollback to v1", "alice"),
        ("v3", "v4", "rollback to v2", "bob"),
    ]
    # a rollback commit is itself a certified state one may return to
    again = rollback_to(sf.store, URN, 3, "carol")
    assert again.new_version == 5
    assert at(path).equals(at(path, 1))


def test_a_run_after_a_rollback_certifies_on_top_of_it(project: Project, history: History) -> None:
    sf, path = history.sf, history.path
    rollback(sf.store, URN, 0, actor="alice")
    day4 = "2026-02-16"
    project.partition(day4, orders(900, seed=4, first_id=30_000, day=day4))
    outcome = project.run(sf, day4)
    assert outcome.run.certified_version == 4
    assert at(path).height == SIZES[DAY1] + 900
    state = sf.store.get_certification(URN)
    assert state is not None
    assert state.certified_version == 4
    assert state.last_run_id == outcome.run.run_id


@pytest.mark.parametrize(
    ("given", "expected"), [(3, 3), ("3", 3), ("v3", 3), ("V12", 12), (" v0 ", 0)]
)
def test_versions_are_given_as_numbers_or_v_numbers(given: int | str, expected: int) -> None:
    assert parse_version(given) == expected


@pytest.mark.parametrize("given", ["", "v", "-1", "3.0", "latest", -2])
def test_other_versions_are_refused(given: int | str) -> None:
    with pytest.raises(ConfigError, match="not a table version"):
        parse_version(given)


def test_unknown_version_names_the_certified_versions(history: History) -> None:
    with pytest.raises(NotFoundError) as info:
        rollback(history.sf.store, URN, "v9", actor="alice")
    assert "no version v9" in info.value.message
    assert "v0, v1, v2 (current: v2)" in info.value.message
    assert DeltaTable(history.path).version() == 2


def test_the_current_version_is_refused(history: History) -> None:
    with pytest.raises(ConfigError, match="already certified at v2"):
        rollback(history.sf.store, URN, 2, actor="alice")


def test_a_version_no_certified_run_wrote_is_refused(history: History) -> None:
    """An out-of-band append (no Signal Factory metadata) is not a certified state."""
    sf, path = history.sf, history.path
    foreign = DeltaTable(path).to_pyarrow_table().slice(0, 1)
    write_deltalake(path, foreign, mode="append")
    assert DeltaTable(path).version() == 3

    with pytest.raises(ConfigError) as info:
        rollback(sf.store, URN, 3, actor="alice")
    assert "v3" in info.value.message
    assert "not a certified state" in info.value.message
    assert "v0, v1, v2" in info.value.message

    state = rollback(sf.store, URN, 2, actor="alice")  # undoes the foreign write
    assert state.certified_version == 4
    assert at(path).equals(at(path, 2))


def test_unknown_dataset_and_missing_table(project: Project) -> None:
    sf = project.open()
    with pytest.raises(NotFoundError, match=r"ds://nope is not registered \(registered: "):
        rollback(sf.store, "ds://nope", 0, actor="alice")
    with pytest.raises(NotFoundError, match="has no certified table yet"):
        rollback(sf.store, URN, 0, actor="alice")
    assert trail(sf) == []
