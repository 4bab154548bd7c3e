"""The pipeline file: source, engine, chunk size and the silver/gold steps.

```yaml
pipeline: orders_daily
dataset: ds://curated/orders_enriched
source: {format: csv, path: raw/orders/dt={dt}/*.csv}
engine: threads
chunk_size: 100000
steps:
  silver: [{sql: "SELECT * FROM batch WHERE order_id IS NOT NULL"}]
  gold: [{python: "transforms:enrich"}]
```
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from signalfactory.core.errors import ConfigError, InputDataError
from signalfactory.core.yamlfile import format_validation_error, read_yaml
from signalfactory.production.formats import FORMATS, MAX_CHUNK, MIN_CHUNK

_STRICT = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(BaseModel):
    model_config = _STRICT
    path: str
    format: str | None = None

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in FORMATS:
            raise ValueError(
                f"format {value!r} is not supported; supported formats are {', '.join(FORMATS)}"
            )
        return value


class StepSpec(BaseModel):
    """One step: ``sql`` over the table ``batch``, or ``python: module:function``."""

    model_config = _STRICT
    sql: str | None = None
    python: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StepSpec:
        if (self.sql is None) == (self.python is None):
            raise ValueError("a step has exactly one of 'sql' or 'python'")
        if self.python is not None and not re.fullmatch(r"[\w.]+:\w+", self.python):
            raise ValueError(
                f"python step {self.python!r} must look like 'module:function' "
                "(a module beside the pipeline file)"
            )
        return self

    @property
    def label(self) -> str:
        return self.name or (f"sql: {self.sql}" if self.sql else f"python: {self.python}")


class StepsSpec(BaseModel):
    model_config = _STRICT
    silver: tuple[StepSpec, ...] = ()
    gold: tuple[StepSpec, ...] = ()


class PipelineSpec(BaseModel):
    model_config = _STRICT
    pipeline: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    dataset: str
    source: SourceSpec
    engine: str = "threads"
    max_workers: int | None = Field(default=None, ge=1, le=256)
    chunk_size: int = Field(default=100_000, ge=MIN_CHUNK, le=MAX_CHUNK)
    partition_key: str | None = None
    idempotency_salt: str = ""
    producer_urn: str | None = None
    code_ref: str | None = None
    steps: StepsSpec = StepsSpec()
    #: Directory that relative paths and python steps resolve against (set by ``load``).
    base_dir: Path = Path(".")
    source_file: str | None = None

    @property
    def placeholders(self) -> tuple[str, ...]:
        names = [f for _, f, _, _ in string.Formatter().parse(self.source.path) if f]
        return tuple(dict.fromkeys(names))

    @property
    def partition_keys(self) -> tuple[str, ...]:
        if self.placeholders:
            return self.placeholders
        return (self.partition_key,) if self.partition_key else ()

    def resolve_partition(self, given: dict[str, str]) -> dict[str, str]:
        keys = self.partition_keys
        unknown = sorted(set(given) - set(keys))
        if unknown:
            raise ConfigError(
                f"pipeline {self.pipeline}: unknown partition key {', '.join(unknown)}; this "
                f"pipeline's partition keys are {', '.join(keys) or '(none)'} (from "
                f"source.path {self.source.path!r}). Pass --partition "
                f"{keys[0] if keys else 'KEY'}=VALUE."
            )
        missing = [k for k in keys if k not in given]
        if missing:
            raise ConfigError(
                f"pipeline {self.pipeline}: source.path {self.source.path!r} needs a value for "
                f"{', '.join(missing)}; pass --partition {missing[0]}=VALUE "
                f"(e.g. --partition {missing[0]}=2026-02-15)."
            )
        for key, value in given.items():
            if not re.fullmatch(r"[A-Za-z0-9_.:\-]+", value):
                raise ConfigError(
                    f"partition value {key}={value!r} may only hold letters, digits and '_ . : -'."
                )
        return {k: given[k] for k in keys}

    def resolve_files(self, partition: dict[str, str]) -> list[Path]:
        pattern = self.source.path.format(**partition)
        full = Path(pattern) if Path(pattern).is_absolute() else self.base_dir / pattern
        if any(ch in full.name for ch in "*?["):
            files = sorted(p for p in full.parent.glob(full.name) if p.is_file())
        else:
            files = [full] if full.is_file() else []
        if not files:
            raise InputDataError(
                f"no input file matches {full} (source.path {self.source.path!r} with "
                f"{', '.join(f'{k}={v}' for k, v in partition.items()) or 'no partition'}). "
                "Check the partition value and that the files have landed."
            )
        return files


def load_pipeline(path: Path, overrides: dict[str, Any] | None = None) -> PipelineSpec:
    """Read a pipeline file; CLI ``overrides`` (engine, chunk_size) win over the file."""
    data = read_yaml(path, "pipeline file")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    data["base_dir"] = path.resolve().parent
    data["source_file"] = str(path)
    try:
        return PipelineSpec.model_validate(data)
    except Exception as exc:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            message = format_validation_error(exc, f"pipeline file {path}")
            if any(e["loc"] and e["loc"][0] == "chunk_size" for e in exc.errors()):
                message += f" chunk_size must be {MIN_CHUNK:,} to {MAX_CHUNK:,} rows, e.g. 100000."
            raise ConfigError(message) from None
        raise
