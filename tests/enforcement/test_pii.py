"""Tests for the G5_PII backend: detection counts, Luhn, remediation, keys."""

from __future__ import annotations

import random
import stat
from pathlib import Path

import polars as pl
import pytest
from pydantic import SecretStr

from signalfactory.core.errors import ConfigError, InputDataError
from signalfactory.enforcement.pii import (
    PII_PATTERNS,
    PiiFindings,
    PiiRemediator,
    detect,
    ephemeral_demo_key,
    load_pii_key,
)
from signalfactory.settings import Settings

ALL = ["EMAIL", "PHONE", "SSN", "CARD", "IP"]
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
N = 200


def luhn_check_digit(payload: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:  # these positions are doubled once the check digit is appended
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def card(rng: random.Random, *, valid: bool) -> str:
    payload = "4" + "".join(rng.choice("0123456789") for _ in range(14))
    check = int(luhn_check_digit(payload))
    return payload + str(check if valid else (check + 1) % 10)


def phone(rng: random.Random) -> str:
    a, e, line = rng.randint(200, 999), rng.randint(200, 999), rng.randint(0, 9999)
    fmt = rng.choice(
        ["{a}-{e}-{l:04d}", "({a}) {e}-{l:04d}", "+1 {a} {e} {l:04d}", "{a}{e}{l:04d}"]
    )
    return fmt.format(a=a, e=e, l=line)


def ssn(rng: random.Random) -> str:
    area = rng.choice([x for x in range(1, 900) if x != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def email(rng: random.Random, i: int) -> str:
    return f"{rng.choice(['ann', 'bo', 'cy'])}.{i}@{rng.choice(['example', 'corp'])}.com"


def ipv4(rng: random.Random) -> str:
    return ".".join(str(rng.randint(0, 255)) for _ in range(4))


CLEAN = ["all good", "order 42 shipped", "see ticket", "no pii here", "version 3.2"]


@pytest.fixture(scope="module")
def data() -> tuple[pl.DataFrame, dict[tuple[str, str], int]]:
    rng = random.Random(20240501)
    cols: dict[str, list[str | None]] = {k: [] for k in ("email", "phone", "ssn", "card", "ip")}
    notes: list[str | None] = []
    expected: dict[tuple[str, str], int] = {}

    def hit(pattern: str, column: str) -> None:
        expected[(pattern, column)] = expected.get((pattern, column), 0) + 1

    for i in range(N):
        clean = rng.choice(CLEAN)
        r = rng.random()
        cols["email"].append(email(rng, i) if r < 0.6 else (None if r < 0.7 else clean))
        if r < 0.6:
            hit("EMAIL", "email")
        cols["phone"].append(phone(rng) if r < 0.5 else clean)
        if r < 0.5:
            hit("PHONE", "phone")
        cols["ssn"].append(ssn(rng) if r < 0.4 else clean)
        if r < 0.4:
            hit("SSN", "ssn")
        valid = rng.random() < 0.5
        cols["card"].append(card(rng, valid=valid))
        if valid:
            hit("CREDIT_CARD", "card")
        cols["ip"].append(ipv4(rng) if r < 0.3 else clean)
        if r < 0.3:
            hit("IP", "ip")
        kind = i % 4
        if kind == 0:
            notes.append(f"contact {email(rng, i)} about it")
            hit("EMAIL", "notes")
        elif kind == 1:
            notes.append(f"call {phone(rng)} after 5pm")
            hit("PHONE", "notes")
        elif kind == 2:
            notes.append(f"paid with {card(rng, valid=True)} from {ipv4(rng)}")
            hit("CREDIT_CARD", "notes")
            hit("IP", "notes")
        else:
            notes.append(clean)
    frame = pl.DataFrame({**cols, "notes": notes, "n": list(range(N))})
    return frame, expected


def test_detect_exact_counts(data: tuple[pl.DataFrame, dict[tuple[str, str], int]]) -> None:
    df, expected = data
    findings = detect(df, ALL)
    assert findings.counts == expected
    assert findings.total == sum(expected.values())


def test_detect_restricted_columns_and_patterns(
    data: tuple[pl.DataFrame, dict[tuple[str, str], int]],
) -> None:
    df, expected = data
    findings = detect(df, ["email"], columns=["email", "notes", "n"])  # n: not a string column
    want = {k: v for k, v in expected.items() if k[0] == "EMAIL" and k[1] in ("email", "notes")}
    assert findings.counts == want
    with pytest.raises(ConfigError, match="missing_col"):
        detect(df, ALL, columns=["missing_col"])


def test_luhn_invalid_numbers_are_not_cards() -> None:
    rng = random.Random(7)
    invalid = [card(rng, valid=False) for _ in range(50)]
    valid = card(rng, valid=True)
    dashed = "-".join(valid[i : i + 4] for i in range(0, 16, 4))
    spaced = " ".join(valid[i : i + 4] for i in range(0, 16, 4))
    df = pl.DataFrame({"bad": invalid, "good": [valid, dashed, f"card {spaced} ok", *invalid[3:]]})
    assert detect(df, ["CREDIT_CARD"]).counts == {("CREDIT_CARD", "good"): 3}


@pytest.mark.parametrize(
    ("text", "pattern", "found"),
    [
        ("555-123-4567", "PHONE", True),
        ("(555) 123-4567", "PHONE", True),
        ("+1 555 123 4567", "PHONE", True),
        ("5551234567", "PHONE", True),
        ("ref 55512345678901", "PHONE", False),
        ("123-45-6789", "SSN", True),
        ("000-45-6789", "SSN", False),
        ("666-45-6789", "SSN", False),
        ("912-45-6789", "SSN", False),
        ("123-00-6789", "SSN", False),
        ("123-45-0000", "SSN", False),
        ("host 192.168.1.20 up", "IP", True),
        ("2001:db8::1", "IP", True),
        ("999.1.1.1", "IP", False),
        ("std::vector", "IP", False),
        ("mail me: a.b+c@mail.example.org", "EMAIL", True),
        ("not an email @ all", "EMAIL", False),
    ],
)
def test_single_patterns(text: str, pattern: str, found: bool) -> None:
    counts = detect(pl.DataFrame({"c": [text]}), [pattern]).counts
    assert counts == ({(pattern, "c"): 1} if found else {})


def test_findings_never_contain_values(
    data: tuple[pl.DataFrame, dict[tuple[str, str], int]],
) -> None:
    df, _ = data
    findings = detect(df, ALL)
    exposed = " ".join([repr(findings), str(findings.to_metrics()), *findings.signatures()])
    for column in ("email", "phone", "ssn", "card", "ip", "notes"):
        for value in df.get_column(column).drop_nulls().unique().to_list():
            if value not in CLEAN:
                assert value not in exposed
    assert findings.to_metrics()["EMAIL:email"] > 0
    assert "PII_DETECTED:CREDIT_CARD:card" in findings.signatures()
    assert findings.signatures() == sorted(findings.signatures())


def test_unknown_pattern_and_action_name_the_allowed_values() -> None:
    df = pl.DataFrame({"c": ["x"]})
    with pytest.raises(ConfigError, match=r"'PASSPORT'.*EMAIL.*CREDIT_CARD"):
        detect(df, ["PASSPORT"])
    with pytest.raises(ConfigError, match=r"'shred'.*redact, tokenize, mask"):
        PiiRemediator(KEY).remediate(df, {"EMAIL": "shred"}, [("EMAIL", "c")])
    assert set(PII_PATTERNS) == {"EMAIL", "PHONE", "SSN", "CREDIT_CARD", "IP"}


def test_tokenize_is_deterministic_and_reversible(
    data: tuple[pl.DataFrame, dict[tuple[str, str], int]],
) -> None:
    df, _ = data
    findings = detect(df, ["EMAIL"], columns=["email"])
    out1, counts = PiiRemediator(KEY).remediate(df, {"EMAIL": "tokenize"}, findings)
    out2, _ = PiiRemediator(KEY).remediate(df, {"EMAIL": "tokenize"}, findings)
    out3, _ = PiiRemediator(OTHER_KEY).remediate(df, {"EMAIL": "tokenize"}, findings)
    assert out1.equals(out2)
    assert counts == {"tokenize:EMAIL:email": findings.counts[("EMAIL", "email")]}
    hits = detect(df, ["EMAIL"], columns=["email"]).counts[("EMAIL", "email")]
    tokens = out1.get_column("email").drop_nulls()
    assert int(tokens.str.starts_with("tok_").sum()) == hits
    assert not out1.get_column("email").equals(out3.get_column("email"))
    assert out1.drop("email").equals(df.drop("email"))
    # same value -> same token; detokenize restores the original exactly
    remediator = PiiRemediator(KEY)
    assert remediator.tokenize("a@b.com") == PiiRemediator(KEY).tokenize("a@b.com")
    assert remediator.detokenize(remediator.tokenize("a@b.com")) == "a@b.com"
    assert remediator.detokenize_column(out1.get_column("email")).equals(df.get_column("email"))
    with pytest.raises(InputDataError):
        PiiRemediator(OTHER_KEY).detokenize(remediator.tokenize("a@b.com"))


def test_tokens_join_across_frames() -> None:
    r = PiiRemediator(KEY)
    left = pl.DataFrame({"email": ["a@x.com", "b@x.com", "a@x.com"], "v": [1, 2, 3]})
    right = pl.DataFrame({"email": ["b@x.com", "a@x.com"], "w": [20, 10]})
    lt, _ = r.remediate(left, {"EMAIL": "tokenize"}, [("EMAIL", "email")])
    rt, _ = r.remediate(right, {"EMAIL": "tokenize"}, [("EMAIL", "email")])
    joined = lt.join(rt, on="email").sort("v")
    assert joined.get_column("w").to_list() == [10, 20, 10]


def test_mask_keeps_last_four_digits_and_separators() -> None:
    df = pl.DataFrame(
        {
            "phone": ["555-123-1234", "(555) 123-4567", "no phone"],
            "card": ["4111 1111 1111 1111", "4111111111111112", None],
            "email": ["ann.1@example.com", "x", "y"],
        }
    )
    findings = detect(df, ["PHONE", "CARD", "EMAIL"])
    out, counts = PiiRemediator(KEY).remediate(
        df, {"PHONE": "mask", "CARD": "mask", "EMAIL": "mask"}, findings
    )
    assert out.get_column("phone").to_list() == ["***-***-1234", "(***) ***-4567", "no phone"]
    assert out.get_column("card").to_list() == ["**** **** **** 1111", "4111111111111112", None]
    assert out.get_column("email").to_list() == ["***@example.com", "x", "y"]
    assert counts == {"mask:CREDIT_CARD:card": 1, "mask:EMAIL:email": 1, "mask:PHONE:phone": 2}


def test_redact_gives_null_and_wins_over_tokenize() -> None:
    df = pl.DataFrame({"c": ["ssn 123-45-6789 of a@b.com", "a@b.com", "clean"]})
    findings = detect(df, ["SSN", "EMAIL"])
    out, counts = PiiRemediator(KEY).remediate(df, {"SSN": "redact", "EMAIL": "tokenize"}, findings)
    values = out.get_column("c").to_list()
    assert values[0] is None
    assert values[1] == PiiRemediator(KEY).tokenize("a@b.com")
    assert values[2] == "clean"
    assert out.schema["c"] == pl.String
    assert counts == {"redact:EMAIL:c": 1, "redact:SSN:c": 1, "tokenize:EMAIL:c": 1}


def test_missing_key_raises_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SIGNALFACTORY_PII_KEY", raising=False)
    monkeypatch.delenv("SIGNALFACTORY_PII_KEY_FILE", raising=False)
    with pytest.raises(ConfigError, match="SIGNALFACTORY_PII_KEY") as exc:
        load_pii_key(Settings(home=tmp_path))
    assert "SIGNALFACTORY_PII_KEY_FILE" in str(exc.value)
    assert "token_hex" in str(exc.value)


def test_key_material_never_in_errors_or_reprs(tmp_path: Path) -> None:
    short = "Zq9xK"
    with pytest.raises(ConfigError) as exc:
        load_pii_key(Settings(home=tmp_path, pii_key=SecretStr(short)))
    assert short not in str(exc.value)
    secret_hex = "ab" * 32
    settings = Settings(home=tmp_path, pii_key=SecretStr(secret_hex))
    assert secret_hex not in repr(settings)
    key = load_pii_key(settings)
    assert len(key) == 64
    remediator = PiiRemediator(key)
    assert secret_hex not in repr(remediator)
    assert key.hex() not in repr(remediator)


def test_key_file_and_env_key_agree(tmp_path: Path) -> None:
    secret_hex = "cd" * 32
    key_file = tmp_path / "k"
    key_file.write_text(secret_hex + "\n")
    from_env = load_pii_key(Settings(home=tmp_path, pii_key=SecretStr(secret_hex)))
    from_file = load_pii_key(Settings(home=tmp_path, pii_key_file=key_file))
    assert from_env == from_file
    with pytest.raises(ConfigError, match="SIGNALFACTORY_PII_KEY_FILE"):
        load_pii_key(Settings(home=tmp_path, pii_key_file=tmp_path / "absent"))


def test_ephemeral_demo_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = ephemeral_demo_key(home)
    path = home / "pii.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ephemeral_demo_key(home) == first
    assert load_pii_key(Settings(home=home, pii_key_file=path)) == first
    assert [p.name for p in home.iterdir()] == ["pii.key"]
    r = PiiRemediator(first)
    assert r.detokenize(r.tokenize("555-123-1234")) == "555-123-1234"


def test_empty_findings_leave_frame_unchanged() -> None:
    df = pl.DataFrame({"c": ["clean"], "n": [1]})
    findings = detect(df, ALL)
    assert findings == PiiFindings(counts={})
    out, counts = PiiRemediator(KEY).remediate(df, {"EMAIL": "redact"}, findings)
    assert out.equals(df)
    assert counts == {}
