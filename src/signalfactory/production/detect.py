"""The ``detect:`` step: score chosen numeric columns for anomalies and flag the outliers.

```yaml
steps:
  gold:
    - detect: {method: mad, columns: [order_total], threshold: 3.5, route: true}
```

Methods (each adds ``<name or method>_score`` as Float64 and ``<name or method>_flag`` as
Boolean; ``flag`` is ``score > threshold``):

``zscore``
    ``|x - mean| / std`` (sample standard deviation); threshold default 3.0.
``iqr``
    Distance outside the box ``[Q1, Q3]`` in IQRs: ``max(Q1 - x, x - Q3, 0) / (Q3 - Q1)``
    (linear quantiles); threshold is Tukey's multiplier, default 1.5.
``mad``
    The modified z-score ``0.6745 * |x - median| / MAD`` (Iglewicz and Hoaglin) with
    ``MAD = median(|x - median|)``; threshold default 3.5.
``isolation_forest``
    scikit-learn's ``IsolationForest`` (the ``ml`` extra) over all columns jointly; the score is
    the forest's anomaly score in (0, 1] (``-score_samples``) and a row is flagged where the
    forest predicts an outlier (score above ``-offset_``, i.e. 0.5 for
    ``contamination: auto``). ``contamination`` (default ``auto``), ``n_estimators`` (100) and
    ``random_state`` (0, so runs are reproducible) are passed through.

With several columns the univariate methods score each column and keep the **maximum** score,
so the flag is set when **any** column is an outlier. Null, NaN and infinite values are left
out of the statistics; a null or NaN cell scores null (and is not flagged), and a row scores
null when all its columns do (isolation forest: when any does). When the spread of a column is
zero (all fitted values equal), a value equal to the centre scores 0 and any other value scores
``+inf`` and is flagged. With fewer values than the method needs (two for ``zscore`` and
``isolation_forest``, one otherwise) every score is null.

Statistics and chunks: a ``Detector`` scores with statistics fitted beforehand over the whole
input (``fit_detectors`` makes the pass and ``with_fitted`` binds the result), so scores do not
depend on ``chunk_size`` or the engine. A detector that was not fitted fits on each chunk it
sees; its scores then depend on the chunk boundaries. A ``Detector`` holds only plain data, a
pydantic spec and (for ``isolation_forest``) a fitted scikit-learn model, so it pickles to
process, Dask and Ray workers.

Routing: with ``route: true`` the rows whose flag is set are quarantined like failed rows with
the reason ``ANOMALY:<method>:<columns joined by +>``; ``routing_rules`` gives the row rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from signalfactory.core.errors import ConfigError, Terminal

if TYPE_CHECKING:
    from signalfactory.enforcement.checks import RowRule
    from signalfactory.production.spec import StepSpec

Method = Literal["zscore", "iqr", "mad", "isolation_forest"]
METHODS: tuple[str, ...] = ("zscore", "iqr", "mad", "isolation_forest")
DEFAULT_THRESHOLD: dict[str, float] = {"zscore": 3.0, "iqr": 1.5, "mad": 3.5}
#: 0.6745 is the 0.75 quantile of the standard normal: it makes the MAD estimate sigma.
MAD_SCALE = 0.6745
SKLEARN_MISSING = (
    "detect method isolation_forest needs scikit-learn: pip install 'signalfactory[ml]'"
)
_FOREST_ONLY = ("contamination", "n_estimators", "random_state")
_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"

StepFn = Callable[[pl.DataFrame], pl.DataFrame]


class DetectSpec(BaseModel):
    """The ``detect:`` mapping of a pipeline step."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: Method
    columns: tuple[str, ...] = Field(min_length=1)
    threshold: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    contamination: Literal["auto"] | float = "auto"
    n_estimators: int = Field(default=100, ge=1, le=10_000)
    random_state: int = 0
    route: bool = False
    name: str | None = Field(default=None, pattern=_IDENTIFIER)

    @model_validator(mode="after")
    def _consistent(self) -> DetectSpec:
        blank = [c for c in self.columns if not c.strip()]
        if blank:
            raise ValueError("detect columns must be column names, not empty strings")
        repeated = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if repeated:
            raise ValueError(f"detect columns list {', '.join(repeated)} more than once")
        if self.method == "isolation_forest":
            if self.threshold is not None:
                raise ValueError(
                    "threshold does not apply to isolation_forest; set contamination "
                    "('auto' or the expected share of outliers, e.g. 0.01)"
                )
            if not isinstance(self.contamination, str) and not 0 < self.contamination <= 0.5:
                raise ValueError(
                    f"contamination must be 'auto' or a fraction in (0, 0.5]; got "
                    f"{self.contamination}"
                )
        else:
            given = [k for k in _FOREST_ONLY if k in self.model_fields_set]
            if given:
                raise ValueError(
                    f"{', '.join(given)} only apply to method isolation_forest; method "
                    f"{self.method} takes threshold (default {DEFAULT_THRESHOLD[self.method]})"
                )
        return self

    @property
    def prefix(self) -> str:
        return self.name or self.method

    @property
    def score_column(self) -> str:
        return f"{self.prefix}_score"

    @property
    def flag_column(self) -> str:
        return f"{self.prefix}_flag"

    @property
    def cutoff(self) -> float:
        """The score above which a row is flagged (z-score, IQR and MAD methods)."""
        if self.threshold is not None:
            return self.threshold
        return DEFAULT_THRESHOLD.get(self.method, math.inf)

    @property
    def signature(self) -> str:
        """The quarantine reason of a routed row."""
        return f"ANOMALY:{self.method}:{'+'.join(self.columns)}"

    def describe(self) -> str:
        return f"{self.method}({', '.join(self.columns)})"


@dataclass(frozen=True, slots=True)
class ColumnStats:
    """Statistics of one column: ``center`` and ``spread`` (``upper`` for IQR's Q3).

    zscore: mean and standard deviation; iqr: Q1, Q3 - Q1 and Q3; mad: median and MAD.
    ``None`` means there were too few values to estimate it.
    """

    column: str
    center: float | None
    spread: float | None
    upper: float | None = None
    values: int = 0


@dataclass(frozen=True)
class FittedDetector:
    """What a detector learned from its input; plain data (and a scikit-learn model)."""

    spec: DetectSpec
    rows: int
    stats: tuple[ColumnStats, ...] = ()
    model: Any = None
    #: isolation_forest: the score above which a row is flagged (``-offset_``).
    model_cutoff: float | None = None

    def summary(self) -> dict[str, Any]:
        """Plain-data view for logs and evidence."""
        out: dict[str, Any] = {"method": self.spec.method, "rows": self.rows}
        if self.spec.method == "isolation_forest":
            out["cutoff"] = self.model_cutoff
            out["fitted"] = self.model is not None
        else:
            out["threshold"] = self.spec.cutoff
            out["columns"] = {
                s.column: {"center": s.center, "spread": s.spread, "upper": s.upper}
                for s in self.stats
            }
        return out

    # -- scoring ---------------------------------------------------------------------------
    def score(self, df: pl.DataFrame) -> pl.DataFrame:
        """The score and flag columns for ``df`` (same height, same row order)."""
        spec = self.spec
        if spec.method == "isolation_forest":
            scores = self._forest_scores(df)
            return pl.DataFrame({spec.score_column: scores}).with_columns(
                self._flag(self.model_cutoff)
            )
        per_column = [_column_score(s, spec.method) for s in self.stats]
        score = per_column[0] if len(per_column) == 1 else pl.max_horizontal(per_column)
        # with_columns, not select: a literal score (too few values) must broadcast.
        scored = df.with_columns(score.cast(pl.Float64).alias(spec.score_column))
        return scored.select(spec.score_column).with_columns(self._flag(spec.cutoff))

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        """``df`` with the score and flag columns added (replacing same-named ones)."""
        scored = self.score(df)
        return df.with_columns(scored.get_columns())

    def _flag(self, cutoff: float | None) -> pl.Expr:
        score = pl.col(self.spec.score_column)
        flag = pl.lit(False) if cutoff is None else (score > cutoff).fill_null(False)
        return flag.cast(pl.Boolean).alias(self.spec.flag_column)

    def _forest_scores(self, df: pl.DataFrame) -> pl.Series:
        name = self.spec.score_column
        if self.model is None or df.height == 0:
            return pl.Series(name, [None] * df.height, dtype=pl.Float64)
        matrix = _numeric(df, self.spec.columns).to_numpy()
        complete = np.isfinite(matrix).all(axis=1)
        scores = np.full(df.height, np.nan)
        if complete.any():
            scores[complete] = -self.model.score_samples(matrix[complete])
        return pl.Series(name, scores, dtype=pl.Float64).fill_nan(None)


def _column_score(stats: ColumnStats, method: str) -> pl.Expr:
    x = pl.col(stats.column).cast(pl.Float64).fill_nan(None)
    center, spread = stats.center, stats.spread
    if center is None or spread is None:
        return pl.lit(None, dtype=pl.Float64)
    if method == "iqr":
        upper = stats.upper if stats.upper is not None else center
        distance = pl.max_horizontal(center - x, x - upper, pl.lit(0.0))
        distance = pl.when(x.is_null()).then(None).otherwise(distance)
        inside = x.is_between(center, upper)
    else:
        distance = (x - center).abs()
        inside = x == center
    if spread == 0:
        return pl.when(x.is_null()).then(None).when(inside).then(0.0).otherwise(math.inf)
    scale = MAD_SCALE / spread if method == "mad" else 1.0 / spread
    return distance * scale


# -- fitting -------------------------------------------------------------------------------


def _numeric(df: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    return df.select(pl.col(c).cast(pl.Float64).fill_nan(None) for c in columns)


def _fit_column(values: pl.Series, method: str) -> ColumnStats:
    finite = values.filter(values.is_finite())
    n = finite.len()
    name = values.name

    def num(value: Any) -> float | None:
        return None if value is None else float(value)

    if method == "zscore":
        if n < 2:
            return ColumnStats(name, None, None, values=n)
        return ColumnStats(name, num(finite.mean()), num(finite.std(ddof=1)), values=n)
    if n == 0:
        return ColumnStats(name, None, None, values=n)
    if method == "iqr":
        q1 = num(finite.quantile(0.25, interpolation="linear"))
        q3 = num(finite.quantile(0.75, interpolation="linear"))
        spread = None if q1 is None or q3 is None else q3 - q1
        return ColumnStats(name, q1, spread, upper=q3, values=n)
    median = num(finite.median())
    mad = num((finite - median).abs().median()) if median is not None else None
    return ColumnStats(name, median, mad, values=n)


def _forest_class() -> Any:
    try:
        from sklearn.ensemble import IsolationForest
    except ImportError:
        raise ConfigError(SKLEARN_MISSING) from None
    return IsolationForest


def fit_values(spec: DetectSpec, data: pl.DataFrame) -> FittedDetector:
    """Fit on ``data``: the detect columns, already Float64 (see ``Detector.select_input``)."""
    if spec.method != "isolation_forest":
        stats = tuple(_fit_column(data[c], spec.method) for c in spec.columns)
        return FittedDetector(spec, rows=data.height, stats=stats)
    forest = _forest_class()
    matrix = data.select(spec.columns).to_numpy()
    matrix = matrix[np.isfinite(matrix).all(axis=1)]
    if matrix.shape[0] < 2:
        return FittedDetector(spec, rows=data.height)
    model = forest(
        n_estimators=spec.n_estimators,
        contamination=spec.contamination,
        random_state=spec.random_state,
    ).fit(matrix)
    return FittedDetector(spec, rows=data.height, model=model, model_cutoff=-float(model.offset_))


@dataclass(frozen=True)
class Detector:
    """The compiled ``detect:`` step; call it on a chunk like any other step.

    ``fitted`` holds statistics over the whole input (see ``fit_detectors``); without it the
    detector fits on each chunk it is called with.
    """

    spec: DetectSpec
    label: str
    fitted: FittedDetector | None = field(default=None)

    def check(self, df: pl.DataFrame) -> None:
        """Raise ``Terminal`` naming the step and column if a column is missing or not numeric."""
        for column in self.spec.columns:
            if column not in df.columns:
                shown = ", ".join(df.columns[:20]) + (" …" if df.width > 20 else "")
                raise Terminal(
                    f"detect step {self.label!r}: column {column!r} is not in the data; the "
                    f"step sees columns {shown}. Fix 'columns' or create the column in an "
                    "earlier step."
                )
            dtype = df.schema[column]
            if not (dtype.is_numeric() or dtype == pl.Null):
                raise Terminal(
                    f"detect step {self.label!r}: column {column!r} is {dtype}, not numeric; "
                    "detect scores integer, float and decimal columns. Cast it in an earlier "
                    f'step, e.g. sql: SELECT *, CAST("{column}" AS DOUBLE) AS ... FROM batch.'
                )

    def select_input(self, df: pl.DataFrame) -> pl.DataFrame:
        """The detect columns of ``df`` as Float64 (NaN as null): what fitting needs."""
        self.check(df)
        return _numeric(df, self.spec.columns)

    def fit(self, frames: Iterable[pl.DataFrame]) -> Detector:
        """This detector with statistics fitted over all ``frames`` together."""
        parts = [self.select_input(frame) for frame in frames]
        if parts:
            data = pl.concat(parts, how="vertical", rechunk=True)
        else:
            data = pl.DataFrame(schema=dict.fromkeys(self.spec.columns, pl.Float64))
        return replace(self, fitted=fit_values(self.spec, data))

    def score(self, df: pl.DataFrame) -> pl.DataFrame:
        """``df`` with ``<prefix>_score`` and ``<prefix>_flag`` added."""
        self.check(df)
        fitted = self.fitted or self.fit([df]).fitted
        assert fitted is not None
        return fitted.apply(df)

    __call__ = score


# -- compiling, fitting a pipeline's detectors, routing ------------------------------------


def compile_detect(step: StepSpec) -> Detector:
    """The ``Detector`` of a ``detect:`` step; fails early when scikit-learn is missing."""
    if step.detect is None:
        raise ConfigError(f"step {step.label!r} is not a detect step")
    if step.detect.method == "isolation_forest":
        _forest_class()
    return Detector(step.detect, step.label)


def check_outputs(steps: Sequence[StepSpec]) -> None:
    """Detect steps of one stage must not write the same columns or share a label."""
    seen: dict[str, str] = {}
    labels: set[str] = set()
    for step in steps:
        if step.detect is None:
            continue
        if step.label in labels:
            raise ConfigError(
                f"two detect steps are named {step.label!r}; give each a distinct 'name'."
            )
        labels.add(step.label)
        prefix = step.detect.prefix
        if prefix in seen:
            raise ConfigError(
                f"detect steps {seen[prefix]!r} and {step.label!r} both write "
                f"{prefix}_score and {prefix}_flag; set a distinct detect 'name' on one "
                "of them (e.g. name: total_outlier)."
            )
        seen[prefix] = step.label


def detectors(steps: Sequence[tuple[str, StepFn]]) -> list[Detector]:
    return [fn for _, fn in steps if isinstance(fn, Detector)]


def with_fitted(
    steps: Sequence[tuple[str, StepFn]], fitted: Mapping[str, FittedDetector]
) -> list[tuple[str, StepFn]]:
    """``steps`` with each detector whose label is in ``fitted`` bound to its statistics."""
    out: list[tuple[str, StepFn]] = []
    for label, fn in steps:
        if isinstance(fn, Detector) and fn.label in fitted:
            fn = replace(fn, fitted=fitted[fn.label])
        out.append((label, fn))
    return out


def fit_detectors(
    steps: Sequence[tuple[str, StepFn]],
    frames: Callable[[], Iterable[pl.DataFrame]],
) -> dict[str, FittedDetector]:
    """Fit every detector in ``steps`` (compiled, one stage) over the whole input.

    ``frames()`` yields the chunks the first step of the list receives (for silver the
    conformed bronze chunks, for gold the staged silver chunks); it is called once per pass.
    The steps before a detector run on each chunk so it is fitted on exactly what it will
    score. One pass fits a detector and the detectors right after it that do not read its
    output columns; a detector after another kind of step needs a further pass (those
    steps may read the earlier detector's flag). Memory: the detect columns as Float64.
    Returns statistics by step label; bind them with ``with_fitted``.
    """
    from signalfactory.production.steps import apply_steps

    fitted: dict[str, FittedDetector] = {}
    while True:
        bound = with_fitted(steps, fitted)
        start = next(
            (i for i, (_, fn) in enumerate(bound) if isinstance(fn, Detector) and not fn.fitted),
            None,
        )
        if start is None:
            return fitted
        group: list[Detector] = []
        written: set[str] = set()
        for _, fn in bound[start:]:
            if not isinstance(fn, Detector) or written & set(fn.spec.columns):
                break
            group.append(fn)
            written |= {fn.spec.score_column, fn.spec.flag_column}
        prefix = bound[:start]
        parts: dict[str, list[pl.DataFrame]] = {d.label: [] for d in group}
        for frame in frames():
            batch = apply_steps(frame, prefix)
            for detector in group:
                parts[detector.label].append(detector.select_input(batch))
        for detector in group:
            chunks = parts[detector.label]
            if chunks:
                data = pl.concat(chunks, how="vertical", rechunk=True)
            else:
                data = pl.DataFrame(schema=dict.fromkeys(detector.spec.columns, pl.Float64))
            fitted[detector.label] = fit_values(detector.spec, data)


def routing_rules(steps: Sequence[StepSpec], *, gate: str | None = None) -> list[RowRule]:
    """Row rules that quarantine the rows flagged by ``route: true`` detect steps.

    Each rule fails where ``<prefix>_flag`` is true, with the signature
    ``ANOMALY:<method>:<columns joined by +>``, in gate ``gate`` (default ``DQ``). Append them to
    the stage's rules before its split; rows whose flag column is missing are not judged.
    """
    from signalfactory.enforcement.catalog import DQ
    from signalfactory.enforcement.checks import RowRule

    rules = []
    for step in steps:
        spec = step.detect
        if spec is None or not spec.route:
            continue
        rules.append(
            RowRule(
                gate or DQ,
                spec.signature,
                pl.col(spec.flag_column).fill_null(False),
                columns=(spec.flag_column,),
            )
        )
    return rules
