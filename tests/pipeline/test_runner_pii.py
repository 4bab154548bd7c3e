"""G5_PII in a run: remediation in the certified table, counts-only evidence, and no raw PII
anywhere the system writes text: logs, evidence, run records, store rows, error messages."""

from __future__ import annotations

import io
import json
import logging
import random
import re
from collections.abc import Iterator

import polars as pl
import pytest
import structlog

from factories import (
    DAY1,
    DAY2,
    DAY3,
    URN,
    Project,
    as_text,
    certified_path,
    day_offset,
    gate,
    orders,
    pipeline_doc,
    policy_doc,
    quarantine,
    read_table,
    set_rows,
)
from signalfactory.api import SignalFactory
from signalfactory.core.errors import SignalFactoryError
from signalfactory.core.records import CertificationStatus, GateResult, RunStatus, Stage
from signalfactory.enforcement.pii import PiiRemediator, load_pii_key
from signalfactory.pipeline.runner import RunOutcome

SHARED_EMAIL = "ann.shared@example.com"
#: Anything shaped like the seeded emails, phones (555-234-1234) or SSNs (123-45-6789).
CANDIDATES = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}|\d{3}-\d{2,3}-\d{4}")


def ssn(rng: random.Random) -> str:
    return f"{rng.randint(100, 599):03d}-{rng.randint(10, 99):02d}-{rng.randint(1000, 9999):04d}"


def with_pii(df: pl.DataFrame, *, seed: int) -> pl.DataFrame:
    """Adds an ``ssn`` column and free-text ``notes`` quoting contact details."""
    rng = random.Random(seed)
    ssns = [ssn(rng) for _ in range(df.height)]
    notes = [
        rng.choice([f"call {p}", f"mail {e}", f"ssn on file {s}", "no contact details"])
        for p, e, s in zip(df["phone"], df["email"], ssns, strict=True)
    ]
    return df.with_columns(pl.Series("ssn", ssns), pl.Series("notes", notes))


def raw_values(*frames: pl.DataFrame) -> set[str]:
    values: set[str] = set()
    for df in frames:
        for column in ("email", "phone", "ssn"):
            if column in df.columns:
                values.update(v for v in df[column].to_list() if v)
    return values


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    """Route structlog (which the runner and alerter use) into a buffer."""
    buffer = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=buffer),
    )
    try:
        yield buffer
    finally:
        structlog.reset_defaults()


def test_emails_tokenized_phones_masked_ssns_redacted(project: Project) -> None:
    source = set_rows(with_pii(orders(1500, seed=7), seed=7), [0, 1], email=SHARED_EMAIL)
    project.partition(DAY1, source)
    sf = project.open()
    outcome = project.run(sf)
    assert outcome.run.certification_status is CertificationStatus.CERTIFIED

    certified = read_table(certified_path(sf)).sort("order_id")
    raw = source.sort("order_id")
    assert certified.height == raw.height == 1500
    emails = certified["email"]
    assert emails.str.starts_with("tok_").all()
    assert emails[0] == emails[1]  # deterministic: one email, one token
    assert emails.n_unique() == raw["email"].n_unique()
    remediator = PiiRemediator(load_pii_key(sf.settings))
    assert remediator.detokenize(emails[0]) == SHARED_EMAIL
    assert remediator.detokenize_column(emails).to_list() == raw["email"].to_list()

    assert certified["phone"].to_list() == ["***-***-" + p[-4:] for p in raw["phone"]]
    assert certified["ssn"].null_count() == 1500
    notes = certified["notes"].to_list()
    for note, original in zip(notes, raw["notes"], strict=True):
        if original.startswith("ssn on file"):
            assert note is None
        elif original.startswith("mail"):
            assert remediator.detokenize(note) == original
        elif original.startswith("call"):
            assert note == "call ***-***-" + original[-4:]
        else:
            assert note == original

    ev = gate(outcome, Stage.SILVER, "G5_PII")
    assert ev.result is GateResult.PASS
    counts = {k: v for k, v in ev.metrics.items() if k.startswith(("detected:", "remediated:"))}
    mails = sum(n.startswith("mail") for n in raw["notes"])
    calls = sum(n.startswith("call") for n in raw["notes"])
    ssn_notes = sum(n.startswith("ssn") for n in raw["notes"])
    assert counts == {
        "detected:EMAIL:email": 1500,
        "detected:EMAIL:notes": mails,
        "detected:PHONE:phone": 1500,
        "detected:PHONE:notes": calls,
        "detected:SSN:ssn": 1500,
        "detected:SSN:notes": ssn_notes,
        "remediated:tokenize:EMAIL:email": 1500,
        "remediated:tokenize:EMAIL:notes": mails,
        "remediated:mask:PHONE:phone": 1500,
        "remediated:mask:PHONE:notes": calls,
        "remediated:redact:SSN:ssn": 1500,
        "remediated:redact:SSN:notes": ssn_notes,
    }


@pytest.mark.parametrize(
    ("rule", "notes", "signature"),
    [
        ({"pattern": "EMAIL", "action": "tokenize"}, "ssn on file 123-45-6789", "SSN:notes"),
        (
            {"pattern": "EMAIL", "action": "tokenize", "columns": ["email"]},
            "write to bo@corp.example.com",
            "EMAIL:notes",
        ),
    ],
)
def test_pii_without_a_rule_fails_the_batch(
    project: Project, rule: dict[str, object], notes: str, signature: str
) -> None:
    project.write(policy=policy_doc(pii={"detection": [rule]}))
    source = orders(1200, seed=3).with_columns(phone=pl.lit(None, pl.String))
    source = set_rows(source.with_columns(notes=pl.lit("fine")), [5, 600, 1100], notes=notes)
    project.partition(DAY1, source)
    sf = project.open()
    outcome = project.run(sf)

    ev = gate(outcome, Stage.SILVER, "G5_PII")
    assert ev.result is GateResult.FAIL
    assert ev.failure_signatures == (f"PII_DETECTED:{signature}",)
    assert ev.context["disposition"] == "HELD"
    assert ev.metrics[f"detected:{signature}"] == 3
    assert outcome.run.certification_status is CertificationStatus.HELD_AT_PREVIOUS
    assert outcome.run.rows_written == 0
    # The held batch is quarantined, and PII without a rule is redacted there too.
    held = quarantine(sf, outcome)
    assert held.height == 1200
    seeded = notes.rsplit(" ", 1)[-1]
    assert not held["notes"].str.contains(seeded, literal=True).any()


def _runs(project: Project, sf: SignalFactory, frames: list[pl.DataFrame]) -> list[RunOutcome]:
    """Four days that exercise every path PII can take: quarantined rows, a schema break, a
    step error quoting data, and a pattern without a rule."""
    outcomes = [project.run(sf, DAY1), project.run(sf, DAY2)]
    leaky = project.write_yaml(
        "pipeline_cast.yaml",
        pipeline_doc(silver=[{"sql": "SELECT CAST(email AS INTEGER) AS n, * FROM batch"}]),
    )
    outcomes.append(sf.run(leaky, {"dt": DAY3}))
    project.write(policy=policy_doc(pii={"detection": [{"pattern": "EMAIL", "action": "mask"}]}))
    sf.register(project.dataset_yaml, project.policy_yaml)
    outcomes.append(project.run(sf, day_offset(DAY3, 1)))
    return outcomes


def test_no_raw_pii_in_logs_evidence_runs_store_or_errors(
    project: Project,
    log_buffer: io.StringIO,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    day1 = set_rows(with_pii(orders(1500, seed=21), seed=21), [3, 900], order_total=-5.0)
    day2 = with_pii(orders(1200, seed=22, first_id=5000, day=DAY2), seed=22)
    day2 = as_text(day2).with_columns(("EUR " + pl.col("order_total")).alias("order_total"))
    day3 = with_pii(orders(1100, seed=23, first_id=9000, day=DAY3), seed=23)
    day4 = with_pii(orders(1000, seed=24, first_id=12_000), seed=24)
    frames = [day1, day2, day3, day4]
    for dt, frame in zip([DAY1, DAY2, DAY3, day_offset(DAY3, 1)], frames, strict=True):
        project.partition(dt, frame)
    sf = project.open()
    outcomes = _runs(project, sf, frames)

    # The paths were really taken.
    assert outcomes[0].run.rows_quarantined == 2
    assert outcomes[1].run.certification_status is CertificationStatus.HELD_AT_PREVIOUS
    assert outcomes[2].run.status is RunStatus.FAILED
    assert outcomes[2].run.error is not None
    assert "CAST" in outcomes[2].run.error or "conversion" in outcomes[2].run.error
    pii_gate = gate(outcomes[3], Stage.SILVER, "G5_PII")
    assert set(pii_gate.failure_signatures) == {
        "PII_DETECTED:PHONE:phone",
        "PII_DETECTED:PHONE:notes",
        "PII_DETECTED:SSN:ssn",
        "PII_DETECTED:SSN:notes",
    }
    assert sf.alerter.sent  # alerts were logged

    errors = []
    token = read_table(certified_path(sf))["email"][0]
    for bad in (token[:-3] + "AAA", "not-a-token"):
        with pytest.raises(SignalFactoryError) as info:
            PiiRemediator(b"another key of at least 16 bytes").detokenize(bad)
        errors.append(info.value.message)

    store = sf.store
    captured = capsys.readouterr()
    texts = {
        "structlog": log_buffer.getvalue(),
        "stdlib logging": caplog.text,
        "stdout/stderr": captured.out + captured.err,
        "outcomes": json.dumps([o.to_dict() for o in outcomes], default=str),
        "alerts": json.dumps(sf.alerter.sent, default=str),
        "errors": "\n".join(errors),
    }
    rows = {
        "datasets": store.list_datasets(),
        "runs": store.list_runs(),
        "transitions": store.list_transitions(),
        "evidence": store.list_evidence(),
        "events": store.list_events(),
        "quarantine": store.list_quarantine(),
        "certification": [store.get_certification(URN)],
    }
    for name, records in rows.items():
        assert records, name
        texts[f"store {name}"] = json.dumps([r.to_dict() for r in records if r], default=str)
    # Quarantined rows of the days with a rule for every pattern are remediated too.
    for outcome in outcomes[:2]:
        texts[f"quarantine {outcome.run.run_id}"] = quarantine(sf, outcome).write_csv()
    texts["certified"] = read_table(certified_path(sf)).write_csv()
    assert "WARNING" in texts["structlog"].upper()  # the buffer really received the logs

    secrets = raw_values(*frames)
    assert len(secrets) > 10_000
    for where, text in texts.items():
        leaked = sorted(set(CANDIDATES.findall(text)) & secrets)
        assert not leaked, f"raw PII in {where}: {leaked[:3]}"
