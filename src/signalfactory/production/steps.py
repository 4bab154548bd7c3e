"""Pipeline steps: SQL over the chunk (polars SQL), a Python function from a module file, or
``detect`` (anomaly scores and flags, see ``signalfactory.production.detect``)."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from signalfactory.core.errors import ConfigError, Terminal
from signalfactory.production.detect import check_outputs, compile_detect
from signalfactory.production.spec import StepSpec

StepFn = Callable[[pl.DataFrame], pl.DataFrame]
_IMPORT_LOCK = threading.Lock()


def _load_python(ref: str, base_dir: Path) -> StepFn:
    module_name, func_name = ref.split(":")
    file = base_dir / (module_name.replace(".", "/") + ".py")
    if not file.is_file():
        raise ConfigError(
            f"python step {ref!r}: module file {file} does not exist. Put {module_name}.py "
            "beside the pipeline file."
        )
    # Keyed by path and content: an edited module is loaded afresh, never served stale.
    digest = hashlib.sha256(str(file.resolve()).encode() + file.read_bytes()).hexdigest()[:16]
    unique = f"signalfactory_steps_{digest}_{module_name.replace('.', '_')}"
    # Engine threads compile their steps at the same time: one import at a time, or a thread
    # could see the module half executed (registered, its functions not yet defined).
    with _IMPORT_LOCK:
        module = sys.modules.get(unique)
        if module is None:
            spec = importlib.util.spec_from_file_location(unique, file)
            if spec is None or spec.loader is None:
                raise ConfigError(f"python step {ref!r}: cannot import {file}.")
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                raise ConfigError(
                    f"python step {ref!r}: importing {file} failed: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}"
                ) from None
            sys.modules[unique] = module
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise ConfigError(
            f"python step {ref!r}: {file} has no function {func_name!r}; define "
            f"def {func_name}(batch: polars.DataFrame) -> polars.DataFrame."
        )
    return fn  # type: ignore[no-any-return]


def _sql_step(query: str) -> StepFn:
    def run(batch: pl.DataFrame) -> pl.DataFrame:
        ctx = pl.SQLContext(batch=batch.lazy(), eager=False)
        return ctx.execute(query).collect()

    return run


def compile_steps(steps: Sequence[StepSpec], base_dir: Path) -> list[tuple[str, StepFn]]:
    check_outputs(steps)
    compiled: list[tuple[str, StepFn]] = []
    for step in steps:
        if step.sql is not None:
            compiled.append((step.label, _sql_step(step.sql)))
        elif step.detect is not None:
            compiled.append((step.label, compile_detect(step)))
        else:
            compiled.append((step.label, _load_python(step.python or "", base_dir)))
    return compiled


def apply_steps(batch: pl.DataFrame, steps: Sequence[tuple[str, StepFn]]) -> pl.DataFrame:
    for label, fn in steps:
        try:
            out = fn(batch)
        except (pl.exceptions.PolarsError, KeyError, ValueError, TypeError) as exc:
            raise Terminal(
                f"step {label!r} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            ) from None
        if not isinstance(out, pl.DataFrame):
            raise Terminal(
                f"step {label!r} returned {type(out).__name__}; a step must return a "
                "polars DataFrame."
            )
        batch = out
    return batch
