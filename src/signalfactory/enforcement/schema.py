"""G3_SCHEMA: fingerprint the observed schema and conform it to the declared one.

Modes (``schema.mode`` in the policy bundle):

- ``strict``: every declared field must arrive with exactly its declared type (no widening);
  at gold, any drift from the certified table (even an added field) fails.
- ``compatible`` (default): numeric widening is allowed (INTEGER where DECIMAL is declared);
  at gold an added field is a warning (``FIELD_ADDED:x``); a removed or retyped field fails.
- ``breaking``: the producer announced a breaking change. Removed and retyped fields are
  reported as warnings at bronze; the gold G3_SCHEMA check against the certified table still
  stops a type change from reaching consumers.

Text sources (CSV) carry no types: a declared column is cast, and values that do not cast fail
their row with ``TYPE_MISMATCH:order_total:DECIMAL``. When no value of the column casts over
the whole run, the column arrived as text: a schema break, e.g.
``SCHEMA_BREAK:order_total:DECIMAL→STRING`` (decided per run, so never by chunk size).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from signalfactory.core.records import Stage
from signalfactory.enforcement.catalog import G3_SCHEMA
from signalfactory.enforcement.checks import REASONS, SYSTEM_PREFIX
from signalfactory.enforcement.outcomes import GateTally
from signalfactory.enforcement.policy import PolicyBundle
from signalfactory.enforcement.types import observed_type


def fingerprint(schema: Mapping[str, str]) -> str:
    text = "|".join(f"{name}:{kind}" for name, kind in sorted(schema.items()))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def logical_schema(df_schema: Mapping[str, pl.DataType]) -> dict[str, str]:
    return {
        name: observed_type(dtype)
        for name, dtype in df_schema.items()
        if not name.startswith(SYSTEM_PREFIX)
    }


@dataclass(frozen=True, slots=True)
class Conformed:
    df: pl.DataFrame
    invalid: pl.DataFrame
    tally: GateTally
    broken: bool


def reader_types(policy: PolicyBundle) -> dict[str, pa.DataType | None]:
    """Every declared column and the Arrow type a text reader may parse it into directly
    (None: a STRING, read as text). ``conform`` gives the same result either way.

    Empty when a declared column must still be cast from text (BOOLEAN, TIMESTAMP): a value
    of it that does not cast quarantines its row at bronze with every value as it arrived,
    which a reader that parsed the other columns could no longer give."""
    types = {c.field: c.logical.reader_type() for c in policy.schema_.constraints}
    cast_from_text = any(
        types[c.field] is None and c.logical.name != "STRING" for c in policy.schema_.constraints
    )
    return {} if cast_from_text else types


def conform(
    df: pl.DataFrame,
    policy: PolicyBundle,
    *,
    typed: bool,
    exact_decimals: bool = True,
    parsed: Collection[str] = (),
) -> Conformed:
    """Cast declared columns; report breaks, warnings and uncastable rows.

    ``parsed``: text columns the reader already parsed into their declared types (every
    value cast; see ``reader_types``). They count as text that cast, exactly as if this
    function had cast them: same fingerprint, counters and rows.
    """
    mode = policy.schema_.mode
    tally = GateTally(stage=Stage.BRONZE, gate=G3_SCHEMA, rows_checked=df.height)
    observed = logical_schema(df.schema)
    observed.update((name, "STRING") for name in parsed if name in observed)  # as it arrived
    tally.metrics["schema_fingerprint"] = fingerprint(observed)
    declared = {c.field: c for c in policy.schema_.constraints}
    breaks: list[str] = []
    warnings: list[str] = []
    casts: list[pl.Expr] = []
    texts: list[tuple[str, str]] = []  # (column, its declared type) cast from text
    arrived_text: dict[str, str] = {}  # every declared column that came as text: its type
    for name, constraint in declared.items():
        expected = constraint.logical
        if name not in df.columns:
            (warnings if mode == "breaking" else breaks).append(f"MISSING_FIELD:{name}")
            casts.append(pl.lit(None, expected.polars_dtype()).alias(name))
            continue
        dtype = df.schema[name]
        seen = observed_type(dtype)
        if name in parsed:  # already in ``polars_dtype`` (``LogicalType.reader_type``)
            arrived_text[name] = expected.name
        elif seen == "STRING" and expected.name != "STRING" and not typed:
            texts.append((name, expected.name))
            arrived_text[name] = expected.name
            casts.append(expected.from_text(name).alias(_cast_name(len(texts) - 1)))
        elif ((seen == expected.name) if mode == "strict" else expected.accepts(seen)) or (
            not exact_decimals and expected.name == "DECIMAL" and expected.accepts(seen)
        ):
            if dtype != expected.polars_dtype():
                casts.append(pl.col(name).cast(expected.polars_dtype(), strict=False).alias(name))
        else:
            sig = f"SCHEMA_BREAK:{name}:{expected.name}→{seen}"
            (warnings if mode == "breaking" else breaks).append(sig)
    cast_failures: list[tuple[str, pl.Expr]] = []
    arrived = list(df.columns)  # quarantined rows keep the columns as they arrived
    if arrived_text and not breaks:
        if texts:
            # Every cast once, all columns in one pass: the cast values sit beside the text
            # until the uncastable values are counted.
            df = df.with_columns(casts)
            casts = []
        bad = {
            name: pl.col(name).is_not_null()
            & pl.col(_cast_name(i)).is_null()
            & (pl.col(name).str.strip_chars() != "")
            for i, (name, _) in enumerate(texts)
        }
        counts = df.select(
            *(flag.sum().alias(f"bad:{name}") for name, flag in bad.items()),
            *(pl.col(name).is_not_null().sum().alias(f"n:{name}") for name in arrived_text),
        ).row(0, named=True)
        for name, kind in arrived_text.items():
            # Whether the column as a whole is text is judged over the run, not the chunk
            # (see ``promote_text_breaks``), so the result never depends on chunk size.
            uncastable = int(counts.get(f"bad:{name}", 0))
            tally.counters[f"text_values:{name}:{kind}"] += int(counts[f"n:{name}"])
            tally.counters[f"text_uncastable:{name}:{kind}"] += uncastable
            if uncastable:
                cast_failures.append((f"TYPE_MISMATCH:{name}:{kind}", bad[name]))
    # Constraints may list only some fields (as in the PRD's example), so fields beyond them
    # are listed, not rejected; drift against the certified table is judged at gold.
    tally.metrics["undeclared_fields"] = sorted(n for n in observed if n not in declared)
    for sig in breaks:
        tally.batch_signatures[sig] += 1
    for sig in warnings:
        tally.warn_signatures[sig] += 1
    if breaks:
        tally.rows_failed = df.height
        invalid = df.with_columns(pl.lit("; ".join(breaks)).alias(REASONS))
        return Conformed(df.clear(), invalid, tally, broken=True)
    cast_columns = [_cast_name(i) for i in range(len(texts))]
    if texts:
        text_names = [name for name, _ in texts]
        # The text as it arrived, for quarantined rows; the cast value for the others.
        as_text = [c for c in df.columns if c not in cast_columns]
        as_cast = [
            pl.col(_cast_name(text_names.index(c))).alias(c) if c in text_names else pl.col(c)
            for c in as_text
        ]
    invalid = (
        df.select(pl.exclude(cast_columns))
        .clear()
        .with_columns(pl.col(name).cast(pl.String) for name in parsed if name in df.columns)
        .with_columns(pl.lit(None, pl.String).alias(REASONS))
    )
    if cast_failures:
        flags = [expr.alias(f"__sf_c{i}") for i, (_, expr) in enumerate(cast_failures)]
        marked = df.with_columns(flags)
        names = [f"__sf_c{i}" for i in range(len(cast_failures))]
        any_bad = pl.any_horizontal(names)
        invalid = (
            marked.filter(any_bad)
            .with_columns(
                pl.concat_str(
                    [
                        pl.when(pl.col(n)).then(pl.lit(sig))
                        for n, (sig, _) in zip(names, cast_failures, strict=True)
                    ],
                    separator="; ",
                    ignore_nulls=True,
                ).alias(REASONS)
            )
            .select(*arrived, REASONS)
        )
        for n, (sig, _) in zip(names, cast_failures, strict=True):
            tally.row_signatures[sig] += int(marked.select(pl.col(n).sum()).item())
        tally.rows_failed = invalid.height
        df = marked.filter(~any_bad).drop(names)
    if texts:
        df = df.select(as_cast)
    if casts:
        df = df.with_columns(casts)
    return Conformed(df, invalid, tally, broken=False)


def _cast_name(i: int) -> str:
    return f"__sf_t{i}"


def promote_text_breaks(tally: GateTally, mode: str) -> None:
    """Run level: a text column none of whose values cast to its type is a schema break."""
    for key, present in list(tally.counters.items()):
        if not key.startswith("text_values:") or not present:
            continue
        _, name, expected = key.split(":", 2)
        if tally.counters[f"text_uncastable:{name}:{expected}"] == present:
            sig = f"SCHEMA_BREAK:{name}:{expected}→STRING"
            target = tally.warn_signatures if mode == "breaking" else tally.batch_signatures
            target[sig] += 1
            # Its rows failed for that one reason: the break names it, not one row at a time.
            tally.row_signatures.pop(f"TYPE_MISMATCH:{name}:{expected}", None)


def compare_output(
    stage: Stage,
    output: Mapping[str, pl.DataType],
    certified: Mapping[str, str] | None,
    mode: str,
    rows: int,
) -> GateTally:
    """Gold G3_SCHEMA: is the output compatible with what consumers of the certified table read?"""
    tally = GateTally(stage=stage, gate=G3_SCHEMA, rows_checked=rows)
    current = logical_schema(output)
    tally.metrics["schema_fingerprint"] = fingerprint(current)
    if certified is None:
        tally.metrics["drift"] = "NONE (first certification)"
        return tally
    drift = []
    for name, kind in certified.items():
        if name not in current:
            tally.batch_signatures[f"MISSING_FIELD:{name}"] += 1
            drift.append("REMOVED_FIELD")
        elif current[name] != kind:
            tally.batch_signatures[f"SCHEMA_BREAK:{name}:{kind}→{current[name]}"] += 1
            drift.append("TYPE_CHANGE")
    for name in current:
        if name not in certified:
            drift.append("ADDED_FIELD")
            if mode == "strict":
                tally.batch_signatures[f"UNEXPECTED_FIELD:{name}"] += 1
            else:
                tally.warn_signatures[f"FIELD_ADDED:{name}"] += 1
    tally.metrics["drift"] = ",".join(sorted(set(drift))) or "NONE"
    return tally
