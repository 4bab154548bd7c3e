"""Progressive enforcement: the same bad batch at G3, G2, G1 and G0, and per-gate overrides.

G3 holds on any failed gate; G2 holds on schema/contract/PII but only warns on DQ; G1 lets
the batch through and alerts the owner; G0 only records. Rows that fail a rule are
quarantined at every level.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from factories import (
    DAY1,
    DEFAULT_DQ,
    Project,
    certified_path,
    dataset_doc,
    gate,
    orders,
    policy_doc,
    read_table,
    set_rows,
)
from signalfactory.core.records import CertificationStatus, GateResult, RunStatus, Stage
from signalfactory.pipeline.runner import RunOutcome

LEVELS: dict[str, dict[str, Any]] = {
    "G3": {"tier": "TIER_1"},
    "G2": {"tier": "TIER_2"},
    "G1": {"tier": "TIER_3"},
    "G0": {"tier": "TIER_1", "level": "G0"},
}
MIN_ROWS_DQ = [*DEFAULT_DQ, {"check": "min_rows", "value": 5000}]
MIN_ROWS_SIG = "MIN_ROWS:1200<5000"
SHARE_SIG = "INVALID_ROWS_ABOVE_THRESHOLD:20.00%>5%"
NEGATIVE = range(0, 1200, 5)  # 240 of 1,200 rows: 20% fail order_total > 0


def _run(project: Project, *, dataset: dict[str, Any], policy: dict[str, Any]) -> RunOutcome:
    project.write(dataset=dataset_doc(**dataset), policy=policy_doc(**policy))
    source = orders(1200, seed=5)
    if "max_invalid_pct" in policy:
        source = set_rows(source, NEGATIVE, order_total=-3.0)
    project.partition(DAY1, source)
    sf = project.open()
    outcome = project.run(sf)
    assert outcome.run.status is RunStatus.SUCCEEDED, outcome.run.error
    assert outcome.alerts == list(sf.alerter.sent)
    return outcome


def _assert_held(outcome: RunOutcome, held: bool) -> None:
    if held:
        assert outcome.run.certification_status is CertificationStatus.HELD_AT_PREVIOUS
        assert outcome.run.certified_version is None
        assert outcome.run.rows_written == 0
    else:
        assert outcome.run.certification_status is CertificationStatus.CERTIFIED
        assert outcome.run.certified_version == 0
        assert outcome.run.rows_written > 0


@pytest.mark.parametrize(
    ("level", "held", "disposition", "alerted"),
    [
        ("G3", True, "HELD", True),
        ("G2", False, "WARNED", True),
        ("G1", False, "WARNED", True),
        ("G0", False, "RECORDED", False),
    ],
)
def test_dq_batch_failure_by_level(
    project: Project, level: str, held: bool, disposition: str, alerted: bool
) -> None:
    outcome = _run(project, dataset=LEVELS[level], policy={"dq": MIN_ROWS_DQ})
    dq = gate(outcome, Stage.SILVER, "DQ")
    assert dq.result is GateResult.FAIL
    assert dq.failure_signature == MIN_ROWS_SIG
    assert dq.context["disposition"] == disposition
    assert dq.context["enforcement_level"] == level
    _assert_held(outcome, held)
    if alerted:
        (alert,) = outcome.alerts
        assert alert["gate"] == "DQ"
        assert alert["failure_signature"] == MIN_ROWS_SIG
        assert alert["owner_team"] == "data-platform"
        assert alert["severity"] == ("CRITICAL" if held else "WARNING")
        assert alert["remediation"]
    else:
        assert outcome.alerts == []


@pytest.mark.parametrize(
    ("level", "held", "disposition", "alerted"),
    [
        ("G3", True, "HELD", True),
        ("G2", True, "HELD", True),
        ("G1", False, "WARNED", True),
        ("G0", False, "RECORDED", False),
    ],
)
def test_invalid_row_share_above_threshold_by_level(
    project: Project, level: str, held: bool, disposition: str, alerted: bool
) -> None:
    outcome = _run(project, dataset=LEVELS[level], policy={"max_invalid_pct": 5.0})
    contract = gate(outcome, Stage.SILVER, "G4_CONTRACT")
    assert contract.result is GateResult.FAIL
    assert contract.failure_signatures == (SHARE_SIG, "INVARIANT:order_total > 0")
    assert contract.metrics["rows_failed"] == 240
    assert contract.context["disposition"] == disposition
    _assert_held(outcome, held)
    assert [a["gate"] for a in outcome.alerts] == (["G4_CONTRACT"] if alerted else [])
    # Whatever the level, the failing rows never reach the certified table.
    assert outcome.run.rows_quarantined == (1200 if held else 240)
    if not held:
        certified = read_table(certified_path(project.opened[0]))
        assert certified.height == 960
        assert certified.filter(pl.col("order_total") <= 0).height == 0


def test_a_share_below_the_threshold_only_quarantines(project: Project) -> None:
    outcome = _run(project, dataset=LEVELS["G3"], policy={"max_invalid_pct": 25.0})
    contract = gate(outcome, Stage.SILVER, "G4_CONTRACT")
    assert contract.result is GateResult.WARN
    assert contract.context["disposition"] == "ROWS_QUARANTINED"
    _assert_held(outcome, held=False)
    assert outcome.alerts == []


def test_gate_override_raises_one_gate_to_hard_fail(project: Project) -> None:
    outcome = _run(
        project,
        dataset=LEVELS["G1"],
        policy={"dq": MIN_ROWS_DQ, "enforcement": {"gates": {"DQ": {"level": "G3"}}}},
    )
    dq = gate(outcome, Stage.SILVER, "DQ")
    assert dq.context["enforcement_level"] == "G3"
    assert dq.context["disposition"] == "HELD"
    _assert_held(outcome, held=True)
    assert [a["gate"] for a in outcome.alerts] == ["DQ"]


def test_gate_override_lowers_one_gate_to_record_only(project: Project) -> None:
    outcome = _run(
        project,
        dataset=LEVELS["G3"],
        policy={"max_invalid_pct": 5.0, "enforcement": {"gates": {"G4_CONTRACT": {"level": "G0"}}}},
    )
    contract = gate(outcome, Stage.SILVER, "G4_CONTRACT")
    assert contract.result is GateResult.FAIL
    assert contract.context["enforcement_level"] == "G0"
    assert contract.context["disposition"] == "RECORDED"
    _assert_held(outcome, held=False)
    assert outcome.alerts == []  # G0 records only, also when set for one gate
    # The other gates keep the dataset's level.
    assert gate(outcome, Stage.SILVER, "DQ").context["enforcement_level"] == "G3"


def test_policy_level_overrides_the_tier(project: Project) -> None:
    outcome = _run(
        project,
        dataset=LEVELS["G3"],
        policy={"dq": MIN_ROWS_DQ, "enforcement": {"level": "G0"}},
    )
    assert gate(outcome, Stage.SILVER, "DQ").context["disposition"] == "RECORDED"
    _assert_held(outcome, held=False)
    assert outcome.alerts == []
