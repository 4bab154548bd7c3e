"""dataset.yaml and policy_bundle.yaml: the PRD's examples parse; mistakes are named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from factories import URN, Project, policy_doc
from signalfactory.core.errors import ConfigError
from signalfactory.core.records import CertificationStatus
from signalfactory.core.yamlfile import load_model
from signalfactory.enforcement.catalog import EnforcementLevel
from signalfactory.enforcement.policy import DatasetSpec
from signalfactory.pipeline.bootstrap import load_policy

# Copied verbatim from the PRD (batch-observability-prd.md, FR-8).
PRD_DATASET_YAML = """\
urn: "ds://curated/orders_enriched"
owner_team: "data-platform"
tier: TIER_1
storage:
  bronze: "s3://lake/bronze/orders/"
  silver: "s3://lake/silver/orders/"
  gold: "s3://lake/gold/orders/"
slo:
  freshness:
    expected_update_by: "02:00 ET daily"
    grace_period: "30m"
  volume:
    min_rows_per_partition: 100000
    anomaly_threshold_pct: 40
"""

PRD_POLICY_YAML = """\
schema:
  mode: strict  # breaking | compatible | strict
  constraints:
    - field: order_total
      type: DECIMAL
      nullable: false
    - field: customer_id
      type: STRING
      nullable: false
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
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_prd_policy_bundle_parses_as_written(tmp_path: Path) -> None:
    bundle = load_policy(write(tmp_path, "policy_bundle.yaml", PRD_POLICY_YAML))
    assert bundle.schema_.mode == "strict"
    assert [(c.field, c.type, c.nullable) for c in bundle.schema_.constraints] == [
        ("order_total", "DECIMAL", False),
        ("customer_id", "STRING", False),
    ]
    assert bundle.contract_lite.required_fields == (
        "order_id",
        "customer_id",
        "order_total",
        "created_at",
    )
    assert [i.expr for i in bundle.contract_lite.invariants] == [
        "order_total > 0",
        "created_at IS NOT NULL",
    ]
    assert [(r.pattern, r.action) for r in bundle.pii.detection] == [
        ("EMAIL", "tokenize"),
        ("PHONE", "mask"),
        ("SSN", "redact"),
    ]


def test_prd_dataset_parses_but_object_storage_is_refused_at_register(tmp_path: Path) -> None:
    dataset_yaml = write(tmp_path, "dataset.yaml", PRD_DATASET_YAML)
    spec = load_model(dataset_yaml, DatasetSpec, "dataset file")
    assert spec.urn == URN
    assert spec.level is EnforcementLevel.G3  # TIER_1 → hard-fail
    assert spec.slo.volume is not None
    assert spec.slo.volume.min_rows_per_partition == 100_000
    assert spec.storage.gold == "s3://lake/gold/orders/"

    project = Project(tmp_path / "p")
    project.write_yaml("dataset.yaml", yaml.safe_load(PRD_DATASET_YAML))
    write(project.root, "policy_bundle.yaml", PRD_POLICY_YAML)
    try:
        with pytest.raises(ConfigError) as info:
            project.open()
        message = info.value.message
        assert str(project.dataset_yaml) in message
        assert "object storage" in message
        assert "does not write yet" in message
        assert "s3://lake/" in message
        # Nothing half-registered.
        assert project.opened[0].store.list_datasets() == []
    finally:
        project.close()


def test_prd_files_register_with_local_storage(project: Project) -> None:
    local = PRD_DATASET_YAML.replace("s3://lake/", "")
    project.write_yaml("dataset.yaml", yaml.safe_load(local))
    write(project.root, "policy_bundle.yaml", PRD_POLICY_YAML)
    sf = project.open()
    (record,) = sf.store.list_datasets()
    assert record.urn == URN
    assert record.policy["schema"]["mode"] == "strict"  # stored under the file's key
    state = sf.certified(URN)
    assert state.certification_status is CertificationStatus.NOT_EVALUATED
    assert state.path.endswith("gold_certified/orders")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            policy_doc(dq=[{"check": "unique", "column": "order_no"}]),
            ["key 'dq.0.column'", "'order_no'", "order_id"],
        ),
        (
            policy_doc(invariants=["order_total > 0", "discount <= order_total"]),
            ["key 'contract_lite.invariants.1'", "'discount'"],
        ),
        (
            policy_doc(invariants=["FROBNICATE(order_total) > 0"]),
            ["key 'contract_lite.invariants.0'", "frobnicate", "not a supported SQL"],
        ),
        (
            policy_doc(invariants=["order_total >"]),
            ["key 'contract_lite.invariants.0'", "not a supported SQL"],
        ),
        (
            policy_doc(pii={"detection": [{"pattern": "EMAIL", "action": "tokenize",
                                            "columns": ["mail"]}]}),
            ["key 'pii.detection.0.columns'", "'mail'"],
        ),
        (
            policy_doc(enforcement={"gates": {"G9_MAGIC": {"level": "G3"}}}),
            ["enforcement.gates", "unknown gate 'G9_MAGIC'", "G4_CONTRACT"],
        ),
        (
            policy_doc(enforcement={"level": "G7"}),
            ["enforcement.level", "'G7'"],
        ),
        (
            policy_doc(dq=[{"check": "regex", "column": "country"}]),
            ["key 'dq.0'", "needs 'pattern'"],
        ),
        (
            policy_doc(constraints=[{"field": "order_total", "type": "MONEY"}]),
            ["schema.constraints.0.type", "unknown type 'MONEY'", "DECIMAL"],
        ),
        (
            {**policy_doc(), "contract_lte": {}},
            ["key 'contract_lte'", "Extra inputs are not permitted"],
        ),
    ],
    ids=[
        "dq-column",
        "invariant-column",
        "sql-function",
        "sql-syntax",
        "pii-column",
        "gate",
        "level",
        "regex-args",
        "type",
        "typo",
    ],
)  # fmt: skip
def test_policy_mistakes_are_named(
    project: Project, policy: dict[str, object], expected: list[str]
) -> None:
    project.write(policy=policy)
    with pytest.raises(ConfigError) as info:
        load_policy(project.policy_yaml)
    message = info.value.message
    assert str(project.policy_yaml) in message
    for part in expected:
        assert part in message
    # register refuses it too, and leaves nothing behind
    with pytest.raises(ConfigError):
        project.open()
    assert project.opened[0].store.list_datasets() == []


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "policy_bundle.yaml",
        "schema:\n  mode: strict\n  constraints:\n    - field: a\n     type: STRING\n",
    )
    with pytest.raises(ConfigError, match=r"not valid YAML at line 5, column \d+"):
        load_policy(path)
    with pytest.raises(ConfigError, match="must hold a YAML mapping"):
        load_policy(write(tmp_path, "list.yaml", "- a\n- b\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("urn", "orders", "ds://<domain>/<name>"),
        ("tier", "PLATINUM", "TIER_1, TIER_2 or TIER_3"),
        ("enforcement_level", "G9", "enforcement_level"),
    ],
)
def test_dataset_mistakes_are_named(tmp_path: Path, field: str, value: str, fragment: str) -> None:
    doc = yaml.safe_load(PRD_DATASET_YAML.replace("s3://lake/", ""))
    doc[field] = value
    path = write(tmp_path, "dataset.yaml", yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as info:
        load_model(path, DatasetSpec, "dataset file")
    assert str(path) in info.value.message
    assert fragment in info.value.message
