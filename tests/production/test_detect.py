"""The ``detect:`` step: planted outliers are flagged exactly, scores do not depend on chunking.

Inliers are uniform on a narrow band, so no inlier is anywhere near a threshold; the planted
outliers are hundreds of spreads away. The isolation forest data is small (every tree sees every
row) and its contamination is the planted share, so it flags exactly the planted rows.
"""

from __future__ import annotations

import math
import pickle
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from signalfactory.core.errors import ConfigError, Terminal
from signalfactory.core.records import Stage
from signalfactory.enforcement.catalog import DQ, G4_CONTRACT
from signalfactory.enforcement.checks import REASONS, evaluate_rows
from signalfactory.production.detect import (
    SKLEARN_MISSING,
    ColumnStats,
    Detector,
    DetectSpec,
    fit_detectors,
    routing_rules,
    with_fitted,
)
from signalfactory.production.spec import StepSpec, load_pipeline
from signalfactory.production.steps import StepFn, apply_steps, compile_steps

N = 2000
OUT_A = {17: 1000.0, 503: -800.0, 1288: 650.0}  # row -> planted value of column a
OUT_B = {250: 400.0, 1777: -300.0}
UNIVARIATE = ("zscore", "iqr", "mad")

FOREST_N = 200
FOREST_OUT = {17: (9.0, 0.0), 50: (6.0, -7.0), 120: (0.0, 10.0), 150: (-8.0, 3.0)}


def planted() -> pl.DataFrame:
    rng = np.random.default_rng(20260213)
    a = rng.uniform(90, 110, N)
    b = rng.uniform(-5, 5, N)
    for row, value in OUT_A.items():
        a[row] = value
    for row, value in OUT_B.items():
        b[row] = value
    return pl.DataFrame({"id": range(N), "a": a, "b": b, "label": ["x"] * N})


def forest_data() -> pl.DataFrame:
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 1, FOREST_N), rng.normal(0, 1, FOREST_N)
    for row, (x, y) in FOREST_OUT.items():
        a[row], b[row] = x, y
    return pl.DataFrame({"id": range(FOREST_N), "a": a, "b": b})


def detector(method: str, columns: tuple[str, ...] = ("a",), **options: object) -> Detector:
    spec = DetectSpec.model_validate({"method": method, "columns": columns, **options})
    return Detector(spec, f"detect: {method}")


def flagged(df: pl.DataFrame, flag: str) -> set[int]:
    return set(df.filter(pl.col(flag))["id"].to_list())


def chunks(df: pl.DataFrame, size: int) -> Callable[[], Iterator[pl.DataFrame]]:
    return lambda: iter(df.iter_slices(size))


def forest(**options: object) -> Detector:
    share = len(FOREST_OUT) / FOREST_N
    return detector("isolation_forest", ("a", "b"), contamination=share, **options)


# -- each method flags exactly the planted rows ------------------------------------------------


@pytest.mark.parametrize("method", UNIVARIATE)
@pytest.mark.parametrize(
    ("columns", "expected"),
    [(("a",), set(OUT_A)), (("a", "b"), set(OUT_A) | set(OUT_B))],
)
def test_univariate_methods_flag_exactly_the_planted_rows(
    method: str, columns: tuple[str, ...], expected: set[int]
) -> None:
    df = planted()
    out = detector(method, columns).fit([df]).score(df)
    assert out.columns == [*df.columns, f"{method}_score", f"{method}_flag"]
    assert out.schema[f"{method}_score"] == pl.Float64
    assert out.schema[f"{method}_flag"] == pl.Boolean
    assert flagged(out, f"{method}_flag") == expected
    scores = out[f"{method}_score"]
    assert scores.null_count() == 0
    assert scores.is_finite().all()
    assert (scores >= 0).all()


def test_isolation_forest_flags_exactly_the_planted_rows() -> None:
    df = forest_data()
    out = forest().fit([df]).score(df)
    assert flagged(out, "isolation_forest_flag") == set(FOREST_OUT)
    scores = out["isolation_forest_score"]
    assert scores.null_count() == 0
    assert scores.is_finite().all()
    assert ((scores > 0) & (scores <= 1)).all()
    top = out.sort("isolation_forest_score", descending=True).head(len(FOREST_OUT))
    assert set(top["id"]) == set(FOREST_OUT)


def test_isolation_forest_auto_contamination_flags_the_planted_rows_with_cutoff_half() -> None:
    df = forest_data()
    fitted = detector("isolation_forest", ("a", "b")).fit([df])
    assert fitted.fitted is not None
    assert fitted.fitted.model_cutoff == pytest.approx(0.5)
    assert set(FOREST_OUT) <= flagged(fitted.score(df), "isolation_forest_flag")


def test_isolation_forest_is_deterministic_with_random_state() -> None:
    df = forest_data()
    first = forest().fit([df]).score(df)
    again = forest().fit([df]).score(df)
    assert first.equals(again)
    other = forest(random_state=1).fit([df]).score(df)
    assert not other["isolation_forest_score"].equals(first["isolation_forest_score"])


def test_thresholds_follow_the_documented_formulas() -> None:
    df = pl.DataFrame({"id": range(5), "a": [1.0, 2.0, 3.0, 4.0, 100.0]})
    z = detector("zscore").fit([df]).score(df)["zscore_score"]
    a = df["a"]
    assert z.to_list() == pytest.approx(((a - a.mean()).abs() / a.std()).to_list())
    mad = detector("mad").fit([df]).score(df)["mad_score"]  # median 3, MAD 1
    assert mad.to_list() == pytest.approx([0.6745 * abs(x - 3) for x in a])
    iqr = detector("iqr").fit([df]).score(df)["iqr_score"]  # Q1 2, Q3 4, IQR 2
    assert iqr.to_list() == pytest.approx([0.5, 0.0, 0.0, 0.0, 48.0])
    assert detector("iqr", threshold=0.4).fit([df]).score(df)["iqr_flag"].to_list() == [
        True,
        False,
        False,
        False,
        True,
    ]


@pytest.mark.parametrize("method", UNIVARIATE)
def test_several_columns_score_the_maximum_over_columns(method: str) -> None:
    df = planted()
    both = detector(method, ("a", "b")).fit([df]).score(df)[f"{method}_score"]
    only_a = detector(method, ("a",)).fit([df]).score(df)[f"{method}_score"]
    only_b = detector(method, ("b",)).fit([df]).score(df)[f"{method}_score"]
    assert both.to_list() == pl.select(pl.max_horizontal(only_a, only_b)).to_series().to_list()


# -- statistics do not depend on chunking --------------------------------------------------------


@pytest.mark.parametrize("method", [*UNIVARIATE, "isolation_forest"])
def test_precomputed_statistics_give_identical_results_for_any_chunk_size(method: str) -> None:
    df = forest_data() if method == "isolation_forest" else planted()
    det = forest() if method == "isolation_forest" else detector(method, ("a", "b"))
    steps: list[tuple[str, StepFn]] = [(det.label, det)]
    results = []
    for size in (df.height, 997, 64, 7):
        fitted = fit_detectors(steps, chunks(df, size))
        bound = with_fitted(steps, fitted)
        results.append(pl.concat([apply_steps(c, bound) for c in df.iter_slices(size)]))
    for other in results[1:]:
        assert other.equals(results[0])


def test_without_statistics_a_detector_fits_on_each_chunk() -> None:
    df = planted()
    det = detector("zscore")
    head = df.head(600)
    assert det(head).equals(det.fit([head]).score(head))
    assert not det(head)["zscore_score"].equals(det.fit([df]).score(head)["zscore_score"])


def test_fit_detectors_runs_the_steps_before_each_detector(tmp_path: Path) -> None:
    specs = [
        StepSpec(sql="SELECT *, a * 2 AS a2 FROM batch"),
        StepSpec.model_validate({"detect": {"method": "zscore", "columns": ["a2"]}}),
        StepSpec.model_validate({"detect": {"method": "mad", "columns": ["a2"], "name": "m"}}),
        StepSpec(sql="SELECT * FROM batch WHERE NOT zscore_flag"),
        StepSpec.model_validate({"detect": {"method": "iqr", "columns": ["b"]}}),
    ]
    steps = compile_steps(specs, tmp_path)
    df = planted()
    passes = 0

    def frames() -> Iterator[pl.DataFrame]:
        nonlocal passes
        passes += 1
        return iter(df.iter_slices(300))

    fitted = fit_detectors(steps, frames)
    assert passes == 2  # z-score and MAD together; IQR after the filter that reads zscore_flag
    assert set(fitted) == {"detect: zscore(a2)", "detect: mad(a2)", "detect: iqr(b)"}
    doubled = df.with_columns(a2=pl.col("a") * 2)
    assert fitted["detect: zscore(a2)"].stats == _stats(detector("zscore", ("a2",)).fit([doubled]))
    kept = doubled.filter(~pl.col("id").is_in(list(OUT_A)))
    assert fitted["detect: iqr(b)"].stats == _stats(detector("iqr", ("b",)).fit([kept]))
    out = apply_steps(df, with_fitted(steps, fitted))
    assert set(out["id"]) == set(range(N)) - set(OUT_A)
    assert flagged(out, "m_flag") == set()  # the planted a-rows are gone
    assert flagged(out, "iqr_flag") == set(OUT_B)


def _stats(det: Detector) -> tuple[ColumnStats, ...]:
    assert det.fitted is not None
    return det.fitted.stats


def test_fit_detectors_without_detectors_makes_no_pass(tmp_path: Path) -> None:
    steps = compile_steps([StepSpec(sql="SELECT * FROM batch")], tmp_path)
    assert fit_detectors(steps, lambda: pytest.fail("no pass expected")) == {}


def test_fitted_detectors_pickle_and_score_the_same() -> None:
    for det, df in (
        (detector("mad", ("a", "b")), planted()),
        (forest(), forest_data()),
    ):
        fitted = det.fit([df])
        clone = pickle.loads(pickle.dumps(fitted))
        assert clone.score(df).equals(fitted.score(df))
        unfitted = pickle.loads(pickle.dumps(det))
        assert unfitted == det


# -- values that are missing, constant or of other numeric types -------------------------------


def test_nulls_and_nans_score_null_and_are_not_flagged() -> None:
    df = planted().with_columns(
        a=pl.when(pl.col("id") == 5).then(None).otherwise(pl.col("a")),
        b=pl.when(pl.col("id") == 6).then(float("nan")).otherwise(pl.col("b")),
    )
    for method in UNIVARIATE:
        out = detector(method, ("a",)).fit([df]).score(df)
        assert out.filter(pl.col("id") == 5)[f"{method}_score"].to_list() == [None]
        assert flagged(out, f"{method}_flag") == set(OUT_A)
        both = detector(method, ("a", "b")).fit([df]).score(df)
        assert both[f"{method}_score"].null_count() == 0  # the other column still scores
    blank = forest().fit([forest_data().with_columns(b=pl.lit(None, pl.Float64))])
    assert blank.fitted is not None
    assert blank.fitted.model is None  # no complete row: nothing to fit, nothing flagged
    scored = blank.score(forest_data())
    assert scored["isolation_forest_score"].null_count() == FOREST_N
    assert not scored["isolation_forest_flag"].any()


@pytest.mark.parametrize("method", UNIVARIATE)
def test_zero_spread_flags_any_other_value_with_infinite_score(method: str) -> None:
    constant = pl.DataFrame({"id": range(4), "a": [5.0, 5.0, 5.0, 5.0]})
    fitted = detector(method).fit([constant])
    out = fitted.score(pl.DataFrame({"id": [0, 1, 2], "a": [5.0, 6.0, None]}))
    assert out[f"{method}_score"].to_list() == [0.0, math.inf, None]
    assert out[f"{method}_flag"].to_list() == [False, True, False]


def test_too_few_values_score_null() -> None:
    one = pl.DataFrame({"id": [0], "a": [3.0]})
    out = detector("zscore").fit([one]).score(one)
    assert out["zscore_score"].to_list() == [None]
    assert out["zscore_flag"].to_list() == [False]
    blank = pl.DataFrame(
        {"id": range(3), "a": [None, None, None]}, schema_overrides={"a": pl.Int64}
    )
    for method in UNIVARIATE:
        scored = detector(method)(blank)
        assert scored[f"{method}_score"].to_list() == [None] * 3
        assert scored[f"{method}_flag"].to_list() == [False] * 3
    empty = one.clear()
    assert detector("mad")(empty).columns == ["id", "a", "mad_score", "mad_flag"]
    assert forest()(empty.with_columns(b=pl.lit(1.0))).height == 0


def test_integer_and_decimal_columns_are_scored() -> None:
    values = [10, 11, 9, 10, 12, 10, 11, 9, 500]
    df = pl.DataFrame(
        {
            "id": range(len(values)),
            "i": values,
            "d": [Decimal(v) for v in values],
        },
        schema_overrides={"d": pl.Decimal(18, 2)},
    )
    out = detector("mad", ("i", "d")).fit([df]).score(df)
    assert flagged(out, "mad_flag") == {8}


# -- configuration -------------------------------------------------------------------------------


def test_step_spec_accepts_detect_and_labels_it() -> None:
    step = StepSpec.model_validate(
        {"detect": {"method": "iqr", "columns": ["a", "b"], "threshold": 3, "route": True}}
    )
    assert step.detect is not None
    assert step.label == "detect: iqr(a, b)"
    assert step.detect.cutoff == 3.0
    assert step.detect.signature == "ANOMALY:iqr:a+b"
    named = StepSpec.model_validate(
        {"name": "outliers", "detect": {"method": "zscore", "columns": ["a"], "name": "amt"}}
    )
    assert named.label == "outliers"
    assert named.detect is not None
    assert (named.detect.score_column, named.detect.flag_column) == ("amt_score", "amt_flag")
    assert named.detect.cutoff == 3.0


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"detect": {"method": "lof", "columns": ["a"]}}, "'zscore', 'iqr', 'mad' or"),
        ({"detect": {"method": "mad", "columns": []}}, "at least 1 item"),
        ({"detect": {"method": "mad", "columns": ["a", "a"]}}, "a more than once"),
        ({"detect": {"method": "mad", "columns": ["a"], "threshold": 0}}, "greater than 0"),
        ({"detect": {"method": "mad", "columns": ["a"], "name": "my flag"}}, "pattern"),
        ({"detect": {"method": "mad", "columns": ["a"], "size": 3}}, "Extra inputs"),
        (
            {"detect": {"method": "zscore", "columns": ["a"], "contamination": 0.1}},
            "contamination only apply to method isolation_forest",
        ),
        (
            {"detect": {"method": "isolation_forest", "columns": ["a"], "threshold": 2}},
            "threshold does not apply to isolation_forest",
        ),
        (
            {"detect": {"method": "isolation_forest", "columns": ["a"], "contamination": 0.7}},
            r"fraction in \(0, 0.5\]",
        ),
        (
            {"sql": "SELECT 1", "detect": {"method": "mad", "columns": ["a"]}},
            "exactly one of 'sql', 'python' or 'detect'",
        ),
    ],
)
def test_invalid_detect_steps_are_rejected(step: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        StepSpec.model_validate(step)


def test_pipeline_file_with_an_unknown_method_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "pipeline: p\ndataset: ds://x/y\nsource: {path: raw/*.csv, format: csv}\n"
        "steps:\n  gold:\n    - detect: {method: lof, columns: [a]}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"key 'steps\.gold\.0\.detect\.method'.*'lof'"):
        load_pipeline(path)


def test_two_detect_steps_writing_the_same_columns_are_a_config_error(tmp_path: Path) -> None:
    specs = [
        StepSpec.model_validate({"detect": {"method": "mad", "columns": ["a"]}}),
        StepSpec.model_validate({"detect": {"method": "mad", "columns": ["b"]}}),
    ]
    with pytest.raises(ConfigError, match="both write mad_score and mad_flag"):
        compile_steps(specs, tmp_path)
    renamed = [
        specs[0],
        StepSpec.model_validate({"detect": {"method": "mad", "columns": ["b"], "name": "mad_b"}}),
    ]
    assert [label for label, _ in compile_steps(renamed, tmp_path)] == [
        "detect: mad(a)",
        "detect: mad(b)",
    ]


def test_missing_column_is_terminal_naming_step_and_column(tmp_path: Path) -> None:
    steps = compile_steps(
        [StepSpec.model_validate({"detect": {"method": "zscore", "columns": ["a", "price"]}})],
        tmp_path,
    )
    with pytest.raises(Terminal, match=r"detect step 'detect: zscore\(a, price\)': column 'price'"):
        apply_steps(planted(), steps)


def test_non_numeric_column_is_terminal_naming_step_and_column(tmp_path: Path) -> None:
    steps = compile_steps(
        [
            StepSpec.model_validate(
                {"name": "amounts", "detect": {"method": "mad", "columns": ["label"]}}
            )
        ],
        tmp_path,
    )
    with pytest.raises(Terminal, match="detect step 'amounts': column 'label' is String") as err:
        apply_steps(planted(), steps)
    assert not isinstance(err.value, ConfigError)
    with pytest.raises(Terminal, match="column 'label' is String"):
        fit_detectors(steps, chunks(planted(), 500))


def _forest_step() -> StepSpec:
    return StepSpec.model_validate({"detect": {"method": "isolation_forest", "columns": ["a"]}})


def test_isolation_forest_without_scikit_learn_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.ensemble", None)
    with pytest.raises(ConfigError) as err:
        compile_steps([_forest_step()], tmp_path)
    assert err.value.message == SKLEARN_MISSING
    assert SKLEARN_MISSING == (
        "detect method isolation_forest needs scikit-learn: pip install 'signalfactory[ml]'"
    )
    with pytest.raises(ConfigError, match=r"pip install 'signalfactory\[ml\]'"):
        detector("isolation_forest").fit([planted()])
    # The other methods never need scikit-learn.
    assert detector("mad")(planted()).height == N


# -- routing ------------------------------------------------------------------------------------


def test_routing_rules_quarantine_flagged_rows_with_the_anomaly_reason(tmp_path: Path) -> None:
    specs = [
        StepSpec.model_validate(
            {"detect": {"method": "zscore", "columns": ["a", "b"], "route": True}}
        ),
        StepSpec.model_validate({"detect": {"method": "mad", "columns": ["a"], "name": "m"}}),
        StepSpec(sql="SELECT * FROM batch"),
    ]
    rules = routing_rules(specs)
    assert [(r.gate, r.signature, r.columns) for r in rules] == [
        (DQ, "ANOMALY:zscore:a+b", ("zscore_flag",))
    ]
    df = planted()
    steps = compile_steps(specs, tmp_path)
    scored = apply_steps(df, with_fitted(steps, fit_detectors(steps, chunks(df, 700))))
    split = evaluate_rows(scored, rules, Stage.SILVER, (G4_CONTRACT, DQ))
    anomalies = set(OUT_A) | set(OUT_B)
    assert set(split.invalid["id"]) == anomalies
    assert split.invalid[REASONS].unique().to_list() == ["ANOMALY:zscore:a+b"]
    assert split.valid.height == N - len(anomalies)
    assert not split.valid["zscore_flag"].any()
    (dq,) = [t for t in split.tallies if t.gate == DQ]
    assert dict(dq.row_signatures) == {"ANOMALY:zscore:a+b": len(anomalies)}
    assert dq.rows_failed == len(anomalies)
    # The unrouted detector's flags stay on the valid rows for consumers to read.
    assert flagged(split.valid, "m_flag") == set()


def test_routing_rules_take_a_gate_and_skip_unrouted_steps() -> None:
    specs = [StepSpec.model_validate({"detect": {"method": "mad", "columns": ["a"]}})]
    assert routing_rules(specs) == []
    routed = [
        StepSpec.model_validate({"detect": {"method": "mad", "columns": ["b"], "route": True}})
    ]
    (rule,) = routing_rules(routed, gate=G4_CONTRACT)
    assert rule.gate == G4_CONTRACT
    assert rule.signature == "ANOMALY:mad:b"
