"""How gates are evaluated: vectorized polars expressions over a whole chunk.

``compile_rules`` turns a policy bundle into row rules; ``evaluate_rows`` evaluates every rule in
one lazy plan, splits valid from invalid rows and builds the reason column only for the invalid
ones. No per-row Python anywhere.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from signalfactory.core.records import Stage
from signalfactory.enforcement.catalog import DQ, G4_CONTRACT
from signalfactory.enforcement.outcomes import GateTally
from signalfactory.enforcement.pii import PII_PATTERNS
from signalfactory.enforcement.policy import DqCheck, PolicyBundle

REASONS = "_sf_reasons"
SYSTEM_PREFIX = "_sf_"
DUPLICATE_FLAG = "_sf_dup_{column}"


@dataclass(frozen=True, slots=True)
class RowRule:
    """A row-level rule: ``fails`` is true where a row breaks it.

    ``signature`` is the failure signature; when ``dynamic`` is set the signature is computed
    per failing row (e.g. ``UNKNOWN_ENUM:order_type:FLASH_SALE``).
    """

    gate: str
    signature: str
    fails: pl.Expr
    dynamic: pl.Expr | None = None
    severity: str = "error"
    columns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RowSplit:
    valid: pl.DataFrame
    invalid: pl.DataFrame
    tallies: tuple[GateTally, ...]


def _as_text(column: str) -> pl.Expr:
    """A cell as text for a failure signature; PII-shaped parts become ``<PATTERN>``.

    Signatures land in evidence, the store and CLI output, so they must never carry raw PII
    (DQ runs before the G5_PII remediation).
    """
    text = pl.col(column).cast(pl.String).fill_null("NULL")
    for name, regex in PII_PATTERNS.items():
        text = text.str.replace_all(regex, f"<{name}>")
    return text


def _dq_rule(check: DqCheck) -> RowRule | None:
    col = check.column or ""
    c = pl.col(col)
    match check.check:
        case "not_null":
            return RowRule(DQ, f"NULL_CONSTRAINT:{col}", c.is_null(), columns=(col,))
        case "unique":
            flag = DUPLICATE_FLAG.format(column=col)
            return RowRule(DQ, f"DUPLICATE_KEY:{col}", pl.col(flag), columns=(col,))
        case "accepted_values":
            values = list(check.values or ())
            return RowRule(
                DQ,
                f"UNKNOWN_ENUM:{col}",
                c.is_not_null() & ~c.is_in(values),
                dynamic=pl.lit(f"UNKNOWN_ENUM:{col}:") + _as_text(col),
                severity=check.severity,
                columns=(col,),
            )
        case "regex":
            return RowRule(
                DQ,
                f"PATTERN_MISMATCH:{col}",
                c.is_not_null() & ~c.cast(pl.String).str.contains(check.pattern or ""),
                severity=check.severity,
                columns=(col,),
            )
        case "range":
            fails = pl.lit(False)
            if check.min is not None:
                fails = fails | (c < check.min)
            if check.max is not None:
                fails = fails | (c > check.max)
            return RowRule(
                DQ, f"OUT_OF_RANGE:{col}", fails, severity=check.severity, columns=(col,)
            )
        case "str_length":
            length = c.cast(pl.String).str.len_chars()
            fails = pl.lit(False)
            if check.min is not None:
                fails = fails | (length < check.min)
            if check.max is not None:
                fails = fails | (length > check.max)
            return RowRule(
                DQ, f"LENGTH_OUT_OF_RANGE:{col}", fails, severity=check.severity, columns=(col,)
            )
        case _:  # min_rows is a batch-level check evaluated by the runner
            return None


def compile_rules(policy: PolicyBundle, stage: Stage) -> tuple[RowRule, ...]:
    """Row rules for a stage: contract-lite (silver and gold) and DQ (silver)."""
    rules: list[RowRule] = []
    for constraint in policy.schema_.constraints:
        if not constraint.nullable:
            field = constraint.field
            rules.append(
                RowRule(
                    G4_CONTRACT,
                    f"NULL_CONSTRAINT:{field}",
                    pl.col(field).is_null(),
                    columns=(field,),
                )
            )
    for inv in policy.contract_lite.invariants:
        expr = pl.sql_expr(inv.expr)
        rules.append(
            RowRule(
                G4_CONTRACT,
                f"INVARIANT:{inv.label}",
                ~expr.fill_null(False),
                severity=inv.severity,
                columns=tuple(expr.meta.root_names()),
            )
        )
    if stage is Stage.SILVER:
        for check in policy.dq:
            rule = _dq_rule(check)
            if rule is not None:
                rules.append(rule)
    return tuple(rules)


def applicable(rules: Sequence[RowRule], columns: Sequence[str]) -> tuple[RowRule, ...]:
    """Rules whose columns are all present; a missing column is a batch-level failure."""
    present = set(columns)
    return tuple(r for r in rules if all(c in present for c in r.columns))


def evaluate_rows(
    df: pl.DataFrame, rules: Sequence[RowRule], stage: Stage, gates: Sequence[str]
) -> RowSplit:
    """Evaluate ``rules`` on ``df`` in one pass; split into valid and invalid rows."""
    tallies = {gate: GateTally(stage=stage, gate=gate, rows_checked=df.height) for gate in gates}
    if not rules:
        return RowSplit(
            df,
            df.clear().with_columns(pl.lit(None, pl.String).alias(REASONS)),
            tuple(tallies.values()),
        )
    flags = [f"__sf_f{i}" for i in range(len(rules))]
    blocking = [f for f, r in zip(flags, rules, strict=True) if r.severity == "error"]
    base = df.lazy().with_columns(
        [r.fails.fill_null(False).alias(f) for f, r in zip(flags, rules, strict=True)]
    )
    any_fail = pl.any_horizontal(blocking) if blocking else pl.lit(False)
    base = base.with_columns(any_fail.alias("__sf_any"))
    valid_q = base.filter(~pl.col("__sf_any")).drop([*flags, "__sf_any"])
    reason_exprs = [
        pl.when(pl.col(f)).then(r.dynamic if r.dynamic is not None else pl.lit(r.signature))
        for f, r in zip(flags, rules, strict=True)
        if r.severity == "error"
    ]
    invalid_q = base.filter(pl.col("__sf_any")).with_columns(
        pl.concat_str(reason_exprs, separator="; ", ignore_nulls=True).alias(REASONS)
    )
    counts_q = base.select([pl.col(f).sum() for f in flags] + [pl.col("__sf_any").sum()])
    valid, invalid_full, counts = pl.collect_all([valid_q, invalid_q, counts_q])
    row = counts.row(0)
    per_gate_failed: Counter[str] = Counter()
    for i, rule in enumerate(rules):
        n = int(row[i])
        if not n:
            continue
        tally = tallies.setdefault(
            rule.gate, GateTally(stage=stage, gate=rule.gate, rows_checked=df.height)
        )
        if rule.severity != "error":
            tally.warn_signatures[rule.signature] += n
            continue
        if rule.dynamic is not None:
            dyn = invalid_full.filter(pl.col(flags[i])).select(rule.dynamic.alias("s"))
            for sig, cnt in dyn.group_by("s").len().iter_rows():
                tally.row_signatures[str(sig)] += int(cnt)
        else:
            tally.row_signatures[rule.signature] += n
    # rows_failed per gate: rows failing at least one blocking rule of that gate
    for gate, tally in tallies.items():
        gate_flags = [
            f for f, r in zip(flags, rules, strict=True) if r.gate == gate and r.severity == "error"
        ]
        if gate_flags and invalid_full.height:
            per_gate_failed[gate] = int(
                invalid_full.select(pl.any_horizontal(gate_flags).sum()).item()
            )
        tally.rows_failed = per_gate_failed[gate]
    invalid = invalid_full.drop([*flags, "__sf_any"])
    return RowSplit(valid, invalid, tuple(tallies.values()))


def user_columns(df: pl.DataFrame) -> list[str]:
    return [c for c in df.columns if not c.startswith(SYSTEM_PREFIX)]
