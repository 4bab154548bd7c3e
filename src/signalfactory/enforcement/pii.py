"""PII detection and remediation for the G5_PII gate, vectorized on polars DataFrames.

Detection runs regexes (Rust ``regex`` syntax: no lookarounds, no backreferences) over string
columns; a cell is flagged when it *contains* a pattern. Credit-card candidates must also pass
a Luhn check computed with polars expressions. Findings hold counts only, never values.

Remediation actions, applied per pattern to whole cells. When several patterns match one cell
the strongest action wins: ``redact`` > ``tokenize`` > ``mask``.

* ``redact``: the cell becomes null.
* ``tokenize``: the cell becomes ``tok_`` + urlsafe base64 (no padding) of its AES-SIV
  encryption. Deterministic (joins still work) and reversible with the key.
* ``mask``: every digit except the last four becomes ``*`` (separators kept:
  ``555-123-1234`` -> ``***-***-1234``); for IP every hex digit except the last four (so
  IPv6 groups are hidden too); for EMAIL each local part becomes ``***``. Masks of several
  patterns in one cell are applied in the order EMAIL, IP, then the digit patterns.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import polars as pl
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from signalfactory.core.errors import ConfigError, InputDataError

if TYPE_CHECKING:
    from signalfactory.settings import Settings

__all__ = [
    "ACTIONS",
    "PATTERN_ALIASES",
    "PII_PATTERNS",
    "PiiFindings",
    "PiiRemediator",
    "detect",
    "ephemeral_demo_key",
    "load_pii_key",
]

_HEX = "[0-9A-Fa-f]{1,4}"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"\b{_OCTET}(?:\.{_OCTET}){{3}}\b"
# IPv6: full form, and "::"-compressed forms with at least three groups (so "a::b" and C++
# "std::vector" are not flagged). Embedded-IPv4 and zone-index forms are not recognised.
_IPV6 = (
    rf"\b(?:(?:{_HEX}:){{7}}{_HEX}|(?:{_HEX}:){{2,6}}(?::{_HEX}){{1,5}}"
    rf"|{_HEX}:(?::{_HEX}){{2,6}})\b"
)

#: Canonical pattern name -> regex. CREDIT_CARD matches are additionally Luhn-checked.
PII_PATTERNS: Mapping[str, str] = MappingProxyType(
    {
        "EMAIL": r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
        # NANP: optional +1 / 1 prefix, area code 2-9xx optionally in parentheses.
        "PHONE": r"(?:^|[^0-9A-Za-z_+])(?:\+?1[-. ]?)?(?:\([2-9][0-9]{2}\)|[2-9][0-9]{2})"
        r"[-. ]?[0-9]{3}[-. ]?[0-9]{4}(?:$|[^0-9A-Za-z_])",
        # Area not 000/666/9xx, group not 00, serial not 0000 - written as alternations.
        "SSN": r"\b(?:00[1-9]|0[1-9][0-9]|[1-578][0-9]{2}|6[0-57-9][0-9]|66[0-57-9])"
        r"-(?:0[1-9]|[1-9][0-9])-(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})\b",
        "CREDIT_CARD": r"\b[0-9](?:[ -]?[0-9]){12,18}\b",
        "IP": rf"{_IPV4}|{_IPV6}",
    }
)
PATTERN_ALIASES: Mapping[str, str] = MappingProxyType({"CARD": "CREDIT_CARD"})
#: Remediation actions, strongest first: this is the precedence order.
ACTIONS: tuple[str, ...] = ("redact", "tokenize", "mask")

_TOKEN_PREFIX = "tok_"  # noqa: S105 - a format prefix, not a secret
_HKDF_INFO = b"signalfactory/pii/aes-siv/v1"
_SIV_KEY_BYTES = 64
_MIN_KEY_MATERIAL_BYTES = 16
_KEY_HELP = (
    "Tokenization needs a secret key. Set SIGNALFACTORY_PII_KEY to a random secret, e.g. "
    'the output of `python -c "import secrets;print(secrets.token_hex(32))"`, or set '
    "SIGNALFACTORY_PII_KEY_FILE to the path of a file holding one. Keep the key: tokens can "
    "only be reversed, and joins across runs only line up, with the same key."
)


def _canonical_pattern(name: str) -> str:
    key = name.strip().upper()
    key = PATTERN_ALIASES.get(key, key)
    if key not in PII_PATTERNS:
        allowed = ", ".join([*PII_PATTERNS, *PATTERN_ALIASES])
        raise ConfigError(f"unknown PII pattern {name!r}; allowed: {allowed}")
    return key


def _canonical_action(name: str) -> str:
    key = name.strip().lower()
    if key not in ACTIONS:
        raise ConfigError(f"unknown PII action {name!r}; allowed: {', '.join(ACTIONS)}")
    return key


def _luhn_ok(digits: pl.Expr) -> pl.Expr:
    """True where ``digits`` (a digits-only string) has 13-19 digits and passes Luhn."""
    rev = digits.str.reverse()
    terms: list[pl.Expr] = []
    for i in range(19):
        d = rev.str.slice(i, 1).cast(pl.Int32, strict=False).fill_null(0)
        if i % 2:
            d = d * 2 - (d >= 5).cast(pl.Int32) * 9
        terms.append(d)
    return digits.str.len_chars().is_between(13, 19) & (pl.sum_horizontal(terms) % 10 == 0)


def _contains(pattern: str, column: str) -> pl.Expr:
    """Boolean mask: the cell contains ``pattern`` (canonical name). Nulls are False."""
    col = pl.col(column)
    if pattern == "CREDIT_CARD":
        candidates = col.str.extract_all(PII_PATTERNS[pattern])
        digits = pl.element().str.replace_all("[^0-9]", "")
        hit = candidates.list.eval(_luhn_ok(digits)).list.any()
    else:
        hit = col.str.contains(PII_PATTERNS[pattern])
    return hit.fill_null(False)


def _string_columns(df: pl.DataFrame, columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return [name for name, dtype in df.schema.items() if dtype == pl.String]
    missing = [c for c in columns if c not in df.schema]
    if missing:
        raise ConfigError(f"PII scan columns not in data: {missing}; available: {df.columns}")
    return [c for c in columns if df.schema[c] == pl.String]


@dataclass(frozen=True)
class PiiFindings:
    """Counts of cells containing each pattern, keyed ``(pattern, column)``; nonzero only."""

    counts: dict[tuple[str, str], int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_metrics(self) -> dict[str, int]:
        return {f"{p}:{c}": n for (p, c), n in sorted(self.counts.items())}

    def signatures(self) -> list[str]:
        return sorted(f"PII_DETECTED:{p}:{c}" for p, c in self.counts)


def detect(
    df: pl.DataFrame, patterns: Sequence[str], columns: Sequence[str] | None = None
) -> PiiFindings:
    """Count, per pattern and string column, the cells that contain the pattern.

    ``columns=None`` scans every String column; listed non-String columns are skipped.
    """
    canon = list(dict.fromkeys(_canonical_pattern(p) for p in patterns))
    pairs = [(p, c) for c in _string_columns(df, columns) for p in canon]
    if not pairs:
        return PiiFindings(counts={})
    row = df.select([_contains(p, c).sum().alias(str(i)) for i, (p, c) in enumerate(pairs)]).row(0)
    return PiiFindings(counts={pair: int(n) for pair, n in zip(pairs, row, strict=True) if n})


def _mask_keep_last4(e: pl.Expr, cls: str = "0-9") -> pl.Expr:
    """Replace every ``[cls]`` character but the last four with ``*``; keep everything else."""
    rev = e.str.reverse()
    one = f"[^{cls}]*[{cls}]"
    head = rev.str.extract(f"^({one * 4})", 1).fill_null(rev)  # < 4 such chars: keep all
    tail = rev.str.slice(head.str.len_chars()).str.replace_all(f"[{cls}]", "*")
    return pl.concat_str([head, tail]).str.reverse()


def _mask_email(e: pl.Expr) -> pl.Expr:
    return e.str.replace_all(r"[A-Za-z0-9._%+\-*]+@", "***@")


def _key_material(raw: str | bytes) -> bytes:
    """Decode configured key material: hex, else base64, else the raw bytes/UTF-8 text."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            return raw
    else:
        text = raw.strip()
    if re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", text):
        return bytes.fromhex(text)
    if text and len(text) % 4 == 0 and re.fullmatch(r"[A-Za-z0-9+/_\-]+=*", text):
        try:
            return base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
        except binascii.Error:
            pass
    return text.encode("utf-8")


def _derive_siv_key(material: bytes) -> bytes:
    if len(material) < _MIN_KEY_MATERIAL_BYTES:
        raise ConfigError(
            f"PII key material is too short ({len(material)} bytes; need at least "
            f"{_MIN_KEY_MATERIAL_BYTES}). {_KEY_HELP}"
        )
    hkdf = HKDF(algorithm=hashes.SHA256(), length=_SIV_KEY_BYTES, salt=None, info=_HKDF_INFO)
    return hkdf.derive(material)


def load_pii_key(settings: Settings) -> bytes:
    """The 64-byte AES-SIV key from ``SIGNALFACTORY_PII_KEY`` (wins) or ``..._PII_KEY_FILE``."""
    if settings.pii_key is not None and settings.pii_key.get_secret_value().strip():
        return _derive_siv_key(_key_material(settings.pii_key.get_secret_value()))
    if settings.pii_key_file is not None:
        try:
            raw = settings.pii_key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read SIGNALFACTORY_PII_KEY_FILE {str(settings.pii_key_file)!r}: "
                f"{exc.strerror}. {_KEY_HELP}"
            ) from None
        return _derive_siv_key(_key_material(raw))
    raise ConfigError(f"no PII key configured. {_KEY_HELP}")


def ephemeral_demo_key(home: Path) -> bytes:
    """Read ``home/pii.key``, creating it (mode 0600, random hex) first if missing."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "pii.key"
    if not path.exists():
        tmp = home / f".pii.key.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_hex(32) + "\n")
            os.link(tmp, path)  # atomic; loses cleanly to a concurrent creator
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return _derive_siv_key(_key_material(path.read_bytes()))


class PiiRemediator:
    """Applies redact / tokenize / mask to the cells where patterns were found."""

    def __init__(self, key: bytes) -> None:
        siv_key = key if len(key) == _SIV_KEY_BYTES else _derive_siv_key(key)
        self._siv = AESSIV(siv_key)

    def __repr__(self) -> str:
        return "PiiRemediator(key=<redacted>)"

    def tokenize(self, value: str) -> str:
        ct = self._siv.encrypt(value.encode("utf-8"), None)
        return _TOKEN_PREFIX + base64.urlsafe_b64encode(ct).rstrip(b"=").decode("ascii")

    def detokenize(self, token: str) -> str:
        if not token.startswith(_TOKEN_PREFIX):
            raise InputDataError(f"not a PII token: expected the prefix {_TOKEN_PREFIX!r}")
        body = token[len(_TOKEN_PREFIX) :]
        try:
            ct = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return self._siv.decrypt(ct, None).decode("utf-8")
        except (binascii.Error, ValueError, InvalidTag):
            raise InputDataError(
                f"PII token ({len(token)} chars) is malformed or was made with another key"
            ) from None

    def detokenize_column(self, series: pl.Series) -> pl.Series:
        """Reverse every ``tok_`` value (one decryption per distinct token); others pass."""
        toks = series.filter(series.str.starts_with(_TOKEN_PREFIX)).unique().to_list()
        if not toks:
            return series
        return series.replace(toks, [self.detokenize(t) for t in toks])

    def remediate(
        self,
        df: pl.DataFrame,
        actions: Mapping[str, str],
        patterns_columns: PiiFindings | Iterable[tuple[str, str]],
    ) -> tuple[pl.DataFrame, dict[str, int]]:
        """Remediate cells; returns the new frame and counts per ``ACTION:PATTERN:column``.

        ``actions`` maps pattern -> action. Pairs whose pattern has no action are left alone.
        A cell is counted once per pattern it contains, under the action actually applied
        (a cell with a redacted PHONE and a tokenized EMAIL counts as redact for both).
        """
        act = {_canonical_pattern(p): _canonical_action(a) for p, a in actions.items()}
        if isinstance(patterns_columns, PiiFindings):
            pairs = list(patterns_columns.counts)
        else:
            pairs = list(patterns_columns)
        order = list(PII_PATTERNS)
        wanted: dict[str, set[str]] = {}
        for pattern, column in pairs:
            pat = _canonical_pattern(pattern)
            if pat in act:
                wanted.setdefault(column, set()).add(pat)
        strings = _string_columns(df, list(wanted))
        by_col = {c: sorted(wanted[c], key=order.index) for c in strings}
        prefix = "__pii_"
        while any(c.startswith(prefix) for c in df.columns):
            prefix += "_"
        flags = {
            (p, c): f"{prefix}{i}"
            for i, (c, p) in enumerate((c, p) for c, ps in by_col.items() for p in ps)
        }
        work = df.with_columns([_contains(p, c).alias(name) for (p, c), name in flags.items()])

        counts: dict[str, int] = {}
        new_cols: list[pl.Expr] = []
        for column, pats in by_col.items():
            flag = {p: pl.col(flags[(p, column)]) for p in pats}
            expr, col_counts = self._remediate_column(work, column, flag, act)
            new_cols.append(expr)
            counts.update(col_counts)
        out = work.with_columns(new_cols).select(df.columns)
        return out, dict(sorted(counts.items()))

    def _remediate_column(
        self, work: pl.DataFrame, column: str, flag: dict[str, pl.Expr], act: Mapping[str, str]
    ) -> tuple[pl.Expr, dict[str, int]]:
        def any_of(action: str) -> pl.Expr:
            hits = [f for p, f in flag.items() if act[p] == action]
            return pl.any_horizontal(hits) if hits else pl.lit(False)

        redact = any_of("redact")
        tok = any_of("tokenize") & ~redact
        masked = any_of("mask") & ~redact & ~any_of("tokenize")
        exprs: list[pl.Expr] = []
        for p, f in flag.items():
            exprs += [
                (f & redact).sum().alias(f"redact:{p}:{column}"),
                (f & tok).sum().alias(f"tokenize:{p}:{column}"),
                (f & masked).sum().alias(f"mask:{p}:{column}"),
            ]
        row = work.select(exprs).row(0, named=True)
        counts = {k: int(n) for k, n in row.items() if n}

        col = pl.col(column)
        tokenized = col
        uniques = work.filter(tok).get_column(column).unique().drop_nulls().to_list()
        if uniques:  # one encryption per distinct matching value, never per row
            tokenized = col.replace(uniques, [self.tokenize(v) for v in uniques])
        m = col
        if act.get("EMAIL") == "mask" and "EMAIL" in flag:
            m = pl.when(flag["EMAIL"]).then(_mask_email(m)).otherwise(m)
        if act.get("IP") == "mask" and "IP" in flag:  # IPv6 groups are hex
            m = pl.when(flag["IP"]).then(_mask_keep_last4(m, "0-9A-Fa-f")).otherwise(m)
        digit_flags = [f for p, f in flag.items() if p not in ("EMAIL", "IP") and act[p] == "mask"]
        if digit_flags:
            m = pl.when(pl.any_horizontal(digit_flags)).then(_mask_keep_last4(m)).otherwise(m)
        expr = (
            pl.when(redact)
            .then(pl.lit(None, dtype=pl.String))
            .when(tok)
            .then(tokenized)
            .when(masked)
            .then(m)
            .otherwise(col)
            .alias(column)
        )
        return expr, counts
