"""Logical column types of a policy bundle and how observed data types map onto them."""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from signalfactory.core.errors import ConfigError

_ALIASES = {
    "STRING": "STRING",
    "VARCHAR": "STRING",
    "TEXT": "STRING",
    "INTEGER": "INTEGER",
    "INT": "INTEGER",
    "BIGINT": "INTEGER",
    "LONG": "INTEGER",
    "DECIMAL": "DECIMAL",
    "NUMERIC": "DECIMAL",
    "DOUBLE": "DOUBLE",
    "FLOAT": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
    "BOOL": "BOOLEAN",
    "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP",
    "DATETIME": "TIMESTAMP",
}
#: Declared types a CSV reader may parse typed (``LogicalType.reader_type``).
_READ_TYPED = frozenset({"INTEGER", "DECIMAL", "DOUBLE", "DATE"})
ALLOWED_TYPES = ("STRING", "INTEGER", "DECIMAL", "DOUBLE", "BOOLEAN", "DATE", "TIMESTAMP")
_DECIMAL_RE = re.compile(r"^(DECIMAL|NUMERIC)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)$")

# Which observed logical types a declared type accepts without a schema break. Numeric
# widening is compatible; anything that would change meaning (text where a number was
# declared, a number where a timestamp was declared) is a break.
_ACCEPTS: dict[str, frozenset[str]] = {
    "STRING": frozenset({"STRING"}),
    "INTEGER": frozenset({"INTEGER"}),
    "DECIMAL": frozenset({"DECIMAL", "INTEGER", "DOUBLE"}),
    "DOUBLE": frozenset({"DOUBLE", "INTEGER", "DECIMAL"}),
    "BOOLEAN": frozenset({"BOOLEAN"}),
    "DATE": frozenset({"DATE", "TIMESTAMP"}),
    "TIMESTAMP": frozenset({"TIMESTAMP", "DATE"}),
}


@dataclass(frozen=True, slots=True)
class LogicalType:
    """A declared column type such as ``DECIMAL`` or ``DECIMAL(12,2)``."""

    name: str
    precision: int = 18
    scale: int = 2

    @classmethod
    def parse(cls, raw: str, where: str) -> LogicalType:
        text = raw.strip().upper()
        match = _DECIMAL_RE.match(text)
        if match:
            precision = int(match.group(2))
            scale = int(match.group(3) or 0)
            if not 0 < precision <= 38 or scale > precision:
                raise ConfigError(
                    f"{where}: type {raw!r} has precision {precision} and scale {scale}; "
                    "precision must be 1-38 and scale at most the precision, e.g. DECIMAL(18,2)."
                )
            return cls("DECIMAL", precision, scale)
        name = _ALIASES.get(text)
        if name is None:
            raise ConfigError(
                f"{where}: unknown type {raw!r}. Allowed: {', '.join(ALLOWED_TYPES)} "
                "(DECIMAL may carry precision and scale, e.g. DECIMAL(18,2))."
            )
        return cls(name)

    def polars_dtype(self) -> pl.DataType:
        match self.name:
            case "STRING":
                return pl.String()
            case "INTEGER":
                return pl.Int64()
            case "DECIMAL":
                return pl.Decimal(self.precision, self.scale)
            case "DOUBLE":
                return pl.Float64()
            case "BOOLEAN":
                return pl.Boolean()
            case "DATE":
                return pl.Date()
            case _:
                return pl.Datetime("us", "UTC")

    def from_text(self, column: str) -> pl.Expr:
        """Parse a text column into this type; values that do not parse become null."""
        text = pl.col(column).str.strip_chars()
        match self.name:
            case "TIMESTAMP":
                aware = [
                    text.str.to_datetime(f, time_unit="us", strict=False).dt.convert_time_zone(
                        "UTC"
                    )
                    for f in ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z")
                ]
                naive = [
                    text.str.to_datetime(f, time_unit="us", strict=False).dt.replace_time_zone(
                        "UTC"
                    )
                    for f in ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d")
                ]
                return pl.coalesce([*aware, *naive])
            case "DATE":
                return text.str.to_date("%Y-%m-%d", strict=False)
            case "BOOLEAN":
                lowered = text.str.to_lowercase()
                return (
                    pl.when(lowered.is_in(["true", "t", "yes", "y", "1"]))
                    .then(True)
                    .when(lowered.is_in(["false", "f", "no", "n", "0"]))
                    .then(False)
                    .otherwise(None)
                )
            case _:
                return text.cast(self.polars_dtype(), strict=False)

    def accepts(self, observed: str) -> bool:
        return observed in _ACCEPTS[self.name]

    def reader_type(self) -> pa.DataType | None:
        """The Arrow form of ``polars_dtype`` for a CSV reader to parse this type's text into
        directly, where every value Arrow reads ``from_text`` reads the same (``chunk_refs``
        guards the gaps: hex integers, decimals past their precision, NaN spellings); None:
        text, cast by ``conform``. Booleans and timestamps have more spellings than Arrow
        reads, so they stay text."""
        if self.name not in _READ_TYPED:
            return None
        arrow: pa.DataType = pl.Series(dtype=self.polars_dtype()).to_arrow().type
        return arrow


def observed_type(dtype: pl.DataType) -> str:
    """The logical type name an observed polars dtype carries (used in signatures)."""
    if dtype == pl.String:
        return "STRING"
    if dtype.is_integer():
        return "INTEGER"
    if dtype.is_float():
        return "DOUBLE"
    if isinstance(dtype, pl.Decimal):
        return "DECIMAL"
    if dtype == pl.Boolean:
        return "BOOLEAN"
    if dtype == pl.Date:
        return "DATE"
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMP"
    return str(dtype).upper()
