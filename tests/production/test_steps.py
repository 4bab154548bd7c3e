"""Python steps are imported once, even when engine threads compile them at the same time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl

from signalfactory.production.spec import StepSpec
from signalfactory.production.steps import apply_steps, compile_steps

SLOW_IMPORT = """
import time

time.sleep(0.3)  # a slow import: other threads arrive while it runs


def enrich(batch):
    return batch.with_columns(flag=True)
"""


def test_threads_compiling_the_same_step_all_get_the_function(tmp_path: Path) -> None:
    (tmp_path / "transforms.py").write_text(SLOW_IMPORT, encoding="utf-8")
    step = StepSpec(python="transforms:enrich")
    with ThreadPoolExecutor(4) as pool:
        compiled = list(pool.map(lambda _: compile_steps([step], tmp_path), range(4)))
    frame = pl.DataFrame({"a": [1, 2]})
    for steps in compiled:
        assert apply_steps(frame, steps)["flag"].to_list() == [True, True]


def test_an_edited_module_is_loaded_afresh(tmp_path: Path) -> None:
    module = tmp_path / "transforms.py"
    module.write_text("def enrich(batch):\n    return batch.with_columns(v=1)\n", "utf-8")
    step = StepSpec(python="transforms:enrich")
    frame = pl.DataFrame({"a": [1]})
    assert apply_steps(frame, compile_steps([step], tmp_path))["v"].item() == 1
    module.write_text("def enrich(batch):\n    return batch.with_columns(v=2)\n", "utf-8")
    assert apply_steps(frame, compile_steps([step], tmp_path))["v"].item() == 2
