"""What a dataset declares: ``dataset.yaml`` and ``policy_bundle.yaml`` (PRD FR-8).

These are declarations only; ``checks.py`` evaluates them. Both files parse the PRD's examples
as written. ``validate_against`` rejects a bundle that names an unknown column, gate or SQL
function, naming the file, the key and the fix.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from signalfactory.core.errors import ConfigError
from signalfactory.enforcement.catalog import GATE_NAMES, EnforcementLevel, level_for_tier
from signalfactory.enforcement.types import LogicalType

_STRICT = ConfigDict(extra="forbid", frozen=True)
_URN_RE = re.compile(r"^ds://[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)+$")


class StorageSpec(BaseModel):
    model_config = _STRICT
    bronze: str
    silver: str
    gold: str
    certified: str | None = None
    quarantine: str | None = None


class FreshnessSLO(BaseModel):
    model_config = _STRICT
    expected_update_by: str
    grace_period: str = "0m"
    partition_key: str | None = None


class VolumeSLO(BaseModel):
    model_config = _STRICT
    min_rows_per_partition: int | None = Field(default=None, ge=0)
    anomaly_threshold_pct: float = Field(default=40, gt=0, le=100)
    #: ``day_of_week``: compare with the same weekday over the last ``seasonality_weeks``.
    seasonality: Literal["day_of_week"] | None = None
    seasonality_weeks: int = Field(default=4, ge=2, le=52)


class SLOSpec(BaseModel):
    model_config = _STRICT
    freshness: FreshnessSLO | None = None
    volume: VolumeSLO | None = None


class DatasetSpec(BaseModel):
    """``dataset.yaml``: identity, ownership, tier, storage layers and SLOs."""

    model_config = _STRICT
    urn: str
    owner_team: str
    tier: str = "TIER_3"
    description: str | None = None
    producer_urn: str | None = None
    enforcement_level: EnforcementLevel | None = None
    storage: StorageSpec
    slo: SLOSpec = SLOSpec()

    @field_validator("urn")
    @classmethod
    def _urn(cls, value: str) -> str:
        if not _URN_RE.match(value):
            raise ValueError(
                "a dataset URN looks like ds://<domain>/<name>, e.g. ds://curated/orders_enriched"
            )
        return value

    @field_validator("tier")
    @classmethod
    def _tier(cls, value: str) -> str:
        if not re.fullmatch(r"TIER_[0-9]", value.upper()):
            raise ValueError("tier must be TIER_1, TIER_2 or TIER_3 (TIER_1 is most critical)")
        return value.upper()

    @property
    def name(self) -> str:
        return self.urn.rsplit("/", 1)[-1]

    @property
    def level(self) -> EnforcementLevel:
        return self.enforcement_level or level_for_tier(self.tier)


class SchemaConstraint(BaseModel):
    model_config = _STRICT
    field: str
    type: str
    nullable: bool = True

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        try:
            LogicalType.parse(value, "type")
        except ConfigError as exc:
            raise ValueError(exc.message.removeprefix("type: ")) from None
        return value

    @property
    def logical(self) -> LogicalType:
        return LogicalType.parse(self.type, self.field)


class SchemaPolicy(BaseModel):
    model_config = _STRICT
    mode: Literal["strict", "compatible", "breaking"] = "compatible"
    constraints: tuple[SchemaConstraint, ...] = ()

    @model_validator(mode="after")
    def _unique_fields(self) -> SchemaPolicy:
        seen: set[str] = set()
        for c in self.constraints:
            if c.field in seen:
                raise ValueError(f"field {c.field!r} is declared twice in schema.constraints")
            seen.add(c.field)
        return self


Severity = Literal["error", "warn"]


class Invariant(BaseModel):
    """A SQL-like boolean expression every row must satisfy, e.g. ``order_total > 0``."""

    model_config = _STRICT
    expr: str
    name: str | None = None
    severity: Severity = "error"

    @property
    def label(self) -> str:
        return self.name or self.expr


class ContractLite(BaseModel):
    model_config = _STRICT
    required_fields: tuple[str, ...] = ()
    invariants: tuple[Invariant, ...] = ()

    @field_validator("invariants", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"expr": v} if isinstance(v, str) else v for v in value]
        return value


PiiPattern = Literal["EMAIL", "PHONE", "SSN", "CREDIT_CARD", "IP"]


class PiiRule(BaseModel):
    model_config = _STRICT
    pattern: PiiPattern
    action: Literal["tokenize", "mask", "redact"]
    columns: tuple[str, ...] | None = None

    @field_validator("pattern", mode="before")
    @classmethod
    def _alias(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.upper()
            return "CREDIT_CARD" if value == "CARD" else value
        return value


class PiiPolicy(BaseModel):
    model_config = _STRICT
    detection: tuple[PiiRule, ...] = ()
    #: Patterns scanned for even without a rule; finding one unremediated fails G5_PII.
    scan_for: tuple[PiiPattern, ...] = ("EMAIL", "PHONE", "SSN", "CREDIT_CARD", "IP")
    columns: tuple[str, ...] | None = None


DqKind = Literal[
    "not_null", "unique", "accepted_values", "regex", "range", "min_rows", "str_length"
]


class DqCheck(BaseModel):
    """A field-level data-quality check (the DQ gate)."""

    model_config = _STRICT
    check: DqKind
    column: str | None = None
    values: tuple[Any, ...] | None = None
    pattern: str | None = None
    min: float | None = None
    max: float | None = None
    value: int | None = None
    severity: Severity = "error"

    @model_validator(mode="after")
    def _arguments(self) -> DqCheck:
        needs_column = self.check != "min_rows"
        if needs_column and not self.column:
            raise ValueError(f"check {self.check!r} needs 'column'")
        if self.check == "accepted_values" and not self.values:
            raise ValueError("check 'accepted_values' needs a non-empty 'values' list")
        if self.check == "regex":
            if not self.pattern:
                raise ValueError("check 'regex' needs 'pattern'")
            try:
                pl.Series([""]).str.contains(self.pattern)
            except pl.exceptions.ComputeError as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a valid regex: {exc}") from None
        if self.check in ("range", "str_length") and self.min is None and self.max is None:
            raise ValueError(f"check {self.check!r} needs 'min', 'max' or both")
        if self.check == "min_rows" and self.value is None:
            raise ValueError("check 'min_rows' needs 'value', e.g. value: 1000")
        return self


class RoutingPolicy(BaseModel):
    model_config = _STRICT
    #: Above this share of invalid rows the whole batch is quarantined.
    max_invalid_rows_pct: float = Field(default=10.0, ge=0, le=100)


class GateOverride(BaseModel):
    model_config = _STRICT
    level: EnforcementLevel


class EnforcementPolicy(BaseModel):
    model_config = _STRICT
    level: EnforcementLevel | None = None
    gates: dict[str, GateOverride] = {}

    @field_validator("gates")
    @classmethod
    def _gate_names(cls, value: dict[str, GateOverride]) -> dict[str, GateOverride]:
        for name in value:
            if name not in GATE_NAMES:
                raise ValueError(f"unknown gate {name!r}; gates are {', '.join(GATE_NAMES)}")
        return value


class PolicyBundle(BaseModel):
    """``policy_bundle.yaml``: schema constraints, contract-lite, PII rules, DQ checks."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    schema_: SchemaPolicy = Field(default=SchemaPolicy(), alias="schema")
    contract_lite: ContractLite = ContractLite()
    pii: PiiPolicy = PiiPolicy()
    dq: tuple[DqCheck, ...] = ()
    routing: RoutingPolicy = RoutingPolicy()
    enforcement: EnforcementPolicy = EnforcementPolicy()

    @property
    def known_columns(self) -> frozenset[str]:
        return frozenset(c.field for c in self.schema_.constraints) | frozenset(
            self.contract_lite.required_fields
        )

    def invariant_expr(self, inv: Invariant) -> pl.Expr:
        return pl.sql_expr(inv.expr)

    def validate_references(self, source: str) -> None:
        """Reject unknown columns and SQL functions; ``source`` names the file."""
        known = self.known_columns
        allowed = ", ".join(sorted(known)) or "(none declared)"

        def check_column(column: str | None, key: str) -> None:
            if known and column is not None and column not in known:
                raise ConfigError(
                    f"{source}: key '{key}' names unknown column {column!r}. Known columns "
                    f"(schema.constraints and contract_lite.required_fields): {allowed}. "
                    "Fix the name or declare the column under schema.constraints."
                )

        for i, inv in enumerate(self.contract_lite.invariants):
            key = f"contract_lite.invariants.{i}"
            try:
                expr = pl.sql_expr(inv.expr)
            except (pl.exceptions.SQLInterfaceError, pl.exceptions.SQLSyntaxError) as exc:
                raise ConfigError(
                    f"{source}: key '{key}' holds {inv.expr!r}, which is not a supported "
                    f"SQL expression ({exc}). Use column names, literals, comparisons, "
                    "AND/OR/NOT, IS [NOT] NULL, IN (...), BETWEEN and SQL functions such as "
                    "LENGTH, LOWER, UPPER, ABS, COALESCE."
                ) from None
            for name in expr.meta.root_names():
                check_column(name, key)
        for i, dq in enumerate(self.dq):
            check_column(dq.column, f"dq.{i}.column")
        for i, rule in enumerate(self.pii.detection):
            for column in rule.columns or ():
                check_column(column, f"pii.detection.{i}.columns")
        for column in self.pii.columns or ():
            check_column(column, "pii.columns")
        for name in self.contract_lite.required_fields:
            if not name:
                raise ConfigError(f"{source}: contract_lite.required_fields has an empty name.")

    def gate_level(self, gate: str, default: EnforcementLevel) -> EnforcementLevel:
        override = self.enforcement.gates.get(gate)
        if override is not None:
            return override.level
        return self.enforcement.level or default
