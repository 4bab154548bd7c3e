"""``explain``: every seeded incident of a generated history gets the right root cause.

The history (tests/processing/signals/histories.py) is written into a real store as lifecycle
events; evaluation passes run at the first instant after each deadline + grace, exactly as
``signalfactory watch`` would; then each incident is explained.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from consumption.harness import sf_inproc
from processing.signals.histories import (
    JOB_FAILED,
    NOT_TRIGGERED,
    PARTIAL_WRITE,
    VOLUME_DROP,
    HistorySpec,
    generate,
    write,
)
from signalfactory.consumption.rca import explain
from signalfactory.core.errors import NotFoundError
from signalfactory.core.observability import Deployment, Incident
from signalfactory.knowledge import SqlStore, open_store
from signalfactory.processing.service import evaluate_once

SPEC = HistorySpec(
    urn="ds://curated/payments",
    start=date(2026, 2, 1),
    days=30,
    incidents={
        date(2026, 2, 12): NOT_TRIGGERED,
        date(2026, 2, 16): JOB_FAILED,
        date(2026, 2, 20): PARTIAL_WRITE,
        date(2026, 2, 25): VOLUME_DROP,
    },
    seed=5,
)
DEPLOY_AT = timedelta(hours=-3)  # a deployment 3 h before the failing run's deadline


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rca")


@pytest.fixture(scope="module")
def store(home: Path) -> Iterator[SqlStore]:
    history = generate(SPEC)
    with open_store(f"sqlite:///{home / 'signalfactory.db'}") as store:
        write(store, history)
        failed = history.incident(JOB_FAILED)
        store.add_deployment(
            # "p" is the pipeline name the generator's lifecycle events carry.
            Deployment("abc1234", "p", recorded_at=failed.deadline + DEPLOY_AT)
        )
        store.add_deployment(Deployment("zzz9999", "another_pipeline", recorded_at=failed.deadline))
        for seeded in sorted(history.incidents, key=lambda i: i.deadline):
            evaluate_once(store, seeded.deadline + SPEC.grace + timedelta(minutes=5))
        evaluate_once(store, history.deadline(date(2026, 3, 2)) + timedelta(hours=1))
        yield store


def _incident(store: SqlStore, signature: str) -> Incident:
    found = [i for i in store.list_incidents(status=None) if i.signature == signature]
    assert len(found) == 1, [(i.signature, i.partition) for i in store.list_incidents(None)]
    return found[0]


def test_only_the_seeded_causes_open_incidents(store: SqlStore) -> None:
    opened = sorted({(i.signature, i.partition) for i in store.list_incidents(status=None)})
    assert opened == sorted(
        [
            ("JOB_NOT_TRIGGERED", "dt=2026-02-12"),
            ("JOB_FAILED", "dt=2026-02-16"),
            ("PARTIAL_WRITE", "dt=2026-02-20"),
            ("VOLUME_ANOMALY", "dt=2026-02-25"),
        ]
    )


def test_not_triggered_names_the_missing_run(store: SqlStore) -> None:
    exp = explain(store, _incident(store, "JOB_NOT_TRIGGERED").incident_id)
    assert "never triggered" in exp.conclusion
    assert exp.root_cause is None
    run = next(s for s in exp.chain if s.kind == "run")
    assert "no run of ds://curated/payments started for dt=2026-02-12" in run.text
    assert exp.candidate_causes == ()


def test_job_failed_names_the_failed_run_and_its_error(store: SqlStore) -> None:
    history = generate(SPEC)
    seeded = history.incident(JOB_FAILED)
    exp = explain(store, _incident(store, "JOB_FAILED").incident_id)
    assert seeded.run_id is not None
    assert seeded.run_id in exp.conclusion
    assert "ConnectionError: s3 503" in exp.conclusion
    assert [s.kind for s in exp.chain][:3] == ["incident", "signal", "run"]


def test_partial_write_and_volume_drop_say_what_was_observed(store: SqlStore) -> None:
    partial = explain(store, _incident(store, "PARTIAL_WRITE").incident_id)
    assert "dt=2026-02-20" in partial.conclusion
    assert "did not advance" in partial.conclusion
    volume = explain(store, _incident(store, "VOLUME_ANOMALY").incident_id)
    assert "below the 7-day baseline" in volume.conclusion
    assert volume.candidate_causes == ()  # deployments are not offered for volume changes


def test_deployments_before_a_failure_are_candidate_causes(store: SqlStore) -> None:
    """Only the deployment of this dataset's pipeline, and only one before the first breach."""
    exp = explain(store, _incident(store, "JOB_FAILED").incident_id)
    assert [c.node for c in exp.candidate_causes] == ["abc1234"]
    assert "candidate cause: deploy abc1234 of pipeline p" in exp.conclusion
    # deployed 3 h before the deadline; the incident opened at deadline + grace (30m) + 5 min
    assert "3.6 h before" in exp.candidate_causes[0].text


def test_the_same_store_gives_the_same_explanation(store: SqlStore) -> None:
    inc = _incident(store, "JOB_FAILED")
    assert explain(store, inc.incident_id).to_dict() == explain(store, inc.incident_id).to_dict()


def test_an_unknown_incident_is_a_clear_not_found(store: SqlStore, home: Path) -> None:
    with pytest.raises(NotFoundError, match="signalfactory incidents"):
        explain(store, "inc_nope")
    result = sf_inproc("explain", "inc_nope", home=home)
    result.expect(2).assert_one_paragraph_error("inc_nope", "signalfactory incidents")
    inc = _incident(store, "JOB_NOT_TRIGGERED")
    shown = sf_inproc("explain", inc.incident_id, home=home).expect(0)
    assert "never triggered" in shown.stdout


def test_signals_cli_evaluates_at_any_instant(store: SqlStore, home: Path) -> None:
    history = generate(SPEC)
    missed = history.incident(NOT_TRIGGERED)
    due = missed.deadline + SPEC.grace
    before = sf_inproc("signals", "evaluate", "--at", (due - timedelta(minutes=1)).isoformat(),
                       "--json", home=home)  # fmt: skip
    after = sf_inproc("signals", "evaluate", "--at", (due + timedelta(minutes=1)).isoformat(),
                      "--json", home=home)  # fmt: skip

    def breached(doc: dict[str, object]) -> set[tuple[str, str]]:
        return {
            (str(s["signature"]), str(s["partition"]))
            for s in doc["signals"]  # type: ignore[attr-defined]
            if s["state"] == "BREACH"
        }

    assert ("JOB_NOT_TRIGGERED", missed.partition) not in breached(before.json())
    assert ("JOB_NOT_TRIGGERED", missed.partition) in breached(after.expect(3).json())
    bad = sf_inproc("signals", "evaluate", "--at", "yesterday", home=home)
    bad.expect(2).assert_one_paragraph_error("--at", "yesterday", "2026-02-16T07:30:00Z")
    listed = sf_inproc("signals", "list", "--dataset", SPEC.urn, "--json", home=home).expect(0)
    assert any(s["signature"] == "JOB_FAILED" for s in listed.json())
    watched = sf_inproc("watch", "--iterations", "1", home=home).expect(0)
    assert "signals" in watched.stdout
    assert "in breach" in watched.stdout
