"""The idempotency key (B3): the same input, parameters, policy and salt give the same key;
what a run computes from changes it; how it runs (engine, chunk size) does not."""

from __future__ import annotations

from pathlib import Path

from signalfactory.pipeline.run_key import idempotency_key
from signalfactory.production.spec import PipelineSpec


def spec(**changes: object) -> PipelineSpec:
    doc: dict[str, object] = {
        "pipeline": "p",
        "dataset": "ds://t/orders",
        "source": {"path": "raw/{dt}/*.csv"},
        **changes,
    }
    return PipelineSpec.model_validate(doc)


def test_key_follows_what_a_run_computes(tmp_path: Path) -> None:
    data = tmp_path / "a.csv"
    data.write_text("id\n1\n", encoding="utf-8")
    files = [data]
    base = idempotency_key(files, spec(), {"dt": "d1"}, "policy-1")
    assert base == idempotency_key(files, spec(), {"dt": "d1"}, "policy-1")
    # How it runs: same key.
    assert base == idempotency_key(
        files, spec(engine="processes", chunk_size=5_000, max_workers=3), {"dt": "d1"}, "policy-1"
    )
    # What it computes: another key.
    others = {
        idempotency_key(files, spec(idempotency_salt="again"), {"dt": "d1"}, "policy-1"),
        idempotency_key(files, spec(), {"dt": "d2"}, "policy-1"),
        idempotency_key(files, spec(), {"dt": "d1"}, "policy-2"),
    }
    data.write_text("id\n2\n", encoding="utf-8")  # same size, other bytes
    others.add(idempotency_key(files, spec(), {"dt": "d1"}, "policy-1"))
    assert base not in others
    assert len(others) == 4


def test_a_manifest_digest_stands_for_its_files(tmp_path: Path) -> None:
    missing = [tmp_path / "never-read.csv"]  # verified against the manifest already
    key = idempotency_key(missing, spec(), {"dt": "d1"}, "policy-1", manifest_digest="ab" * 32)
    assert key != idempotency_key(missing, spec(), {"dt": "d1"}, "policy-1", "cd" * 32)
