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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from signalfactory.core.errors import ConfigError, InputDataError
from signalfactory.core.yamlfile import format_validation_error, read_yaml
from signalfactory.production.detect import DetectSpec
from signalfactory.production.formats import (
    MAX_CHUNK,
    MIN_CHUNK,
    canonical_format,
    format_names,
    pickle_refused,
)
from signalfactory.production.manifest import (
    ResolvedInputs,
    load_manifest,
    resolve_entries,
    verify,
)

_STRICT = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(BaseModel):
    """Exactly one of ``path`` (a file or glob) or ``manifest`` (a JSON file listing files
    with their SHA-256 digests, see :mod:`signalfactory.production.manifest`)."""

    model_config = _STRICT
    path: str | None = None
    manifest: str | None = None
    format: str | None = None
    #: Pickle sources run code from the file while loading: refused unless this is true.
    allow_pickle: bool = False
    #: HDF5: the table to read (pandas key or table path) when a file holds several.
    key: str | None = None

    @model_validator(mode="after")
    def _path_or_manifest(self) -> SourceSpec:
        if (self.path is None) == (self.manifest is None):
            raise ValueError(
                "a source has exactly one of 'path' (a file or glob, e.g. "
                "raw/orders/dt={dt}/*.csv) or 'manifest' (a manifest JSON listing files with "
                "sha256 digests, e.g. manifests/orders-{dt}.json)"
            )
        if self.manifest is not None and any(ch in self.manifest for ch in "*?["):
            raise ValueError(
                f"manifest {self.manifest!r} must name one file, not a glob; the manifest "
                "lists the files"
            )
        return self

    @property
    def template(self) -> str:
        """``path`` or ``manifest``, with its ``{key}`` placeholders."""
        return self.path if self.path is not None else str(self.manifest)

    @property
    def label(self) -> str:
        kind = "path" if self.path is not None else "manifest"
        return f"source.{kind} {self.template!r}"

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is not None and canonical_format(value) is None:
            raise ValueError(
                f"format {value!r} is not supported; supported formats are {format_names()}"
            )
        return value

    @model_validator(mode="after")
    def _pickle_allowed(self) -> SourceSpec:
        named = canonical_format(self.format) if self.format else None
        suffix = Path(self.template).suffix.lower()
        pickled = named == "pickle" if named else suffix in (".pkl", ".pickle")
        if pickled and not self.allow_pickle:
            raise ValueError(pickle_refused(repr(self.template)))
        return self


class StepSpec(BaseModel):
    """One step: ``sql`` over the table ``batch``, ``python: module:function`` or ``detect``.

    ``detect`` scores columns for anomalies (see ``signalfactory.production.detect``).
    """

    model_config = _STRICT
    sql: str | None = None
    python: str | None = None
    detect: DetectSpec | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StepSpec:
        kinds = [k for k in (self.sql, self.python, self.detect) if k is not None]
        if len(kinds) != 1:
            raise ValueError("a step has exactly one of 'sql', 'python' or 'detect'")
        if self.python is not None and not re.fullmatch(r"[\w.]+:\w+", self.python):
            raise ValueError(
                f"python step {self.python!r} must look like 'module:function' "
                "(a module beside the pipeline file)"
            )
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.detect is not None:
            return f"detect: {self.detect.describe()}"
        return f"sql: {self.sql}" if self.sql else f"python: {self.python}"


class StepsSpec(BaseModel):
    model_config = _STRICT
    silver: tuple[StepSpec, ...] = ()
    gold: tuple[StepSpec, ...] = ()


class ExportSpec(BaseModel):
    """One file written from a lake table after a certified run (see ``production.exports``).

    ``path`` takes the partition's ``{key}`` placeholders and is relative to the pipeline
    file, like ``source.path``.
    """

    model_config = _STRICT
    format: str
    path: str
    layer: Literal["certified", "gold", "quarantine"] = "certified"

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        fmt = canonical_format(value)
        if fmt is None:
            raise ValueError(
                f"format {value!r} is not supported; supported formats are {format_names()}"
            )
        return fmt


class RetrySpec(BaseModel):
    """Per-chunk retries of transient errors: exponential backoff with jitter."""

    model_config = _STRICT
    attempts: int = Field(default=3, ge=1, le=5)
    backoff_s: float = Field(default=0.2, ge=0, le=60)
    max_backoff_s: float = Field(default=10.0, ge=0, le=600)


class DeadLetterSpec(BaseModel):
    """How many chunks may be dead-lettered before the run fails instead of going on."""

    model_config = _STRICT
    max_chunks: int = Field(default=0, ge=0)


class LimitsSpec(BaseModel):
    """Per-run resource limits (B10)."""

    model_config = _STRICT
    #: Wall-clock limit; past it the run ends TIMED_OUT with its checkpoints kept.
    time_limit_s: float | None = Field(default=None, gt=0)
    #: Peak resident memory of the run's process (and its worker processes), in MB.
    memory_mb: int | None = Field(default=None, ge=64)


class PipelineSpec(BaseModel):
    model_config = _STRICT
    pipeline: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    dataset: str
    source: SourceSpec
    engine: str = "threads"
    #: Address of an existing Dask scheduler (tcp://…) or Ray cluster (ray://… or auto).
    engine_address: str | None = None
    max_workers: int | None = Field(default=None, ge=1, le=256)
    chunk_size: int = Field(default=100_000, ge=MIN_CHUNK, le=MAX_CHUNK)
    retries: RetrySpec = RetrySpec()
    limits: LimitsSpec = LimitsSpec()
    dead_letter: DeadLetterSpec = DeadLetterSpec()
    partition_key: str | None = None
    idempotency_salt: str = ""
    producer_urn: str | None = None
    code_ref: str | None = None
    #: Upstream datasets this pipeline depends on besides its source files, as lineage node ids
    #: (``dataset:NAMESPACE:NAME``, Marquez's form) or dataset URNs (``ds://...``).
    upstream: tuple[str, ...] = ()
    steps: StepsSpec = StepsSpec()
    exports: tuple[ExportSpec, ...] = ()
    #: Directory that relative paths and python steps resolve against (set by ``load``).
    base_dir: Path = Path(".")
    source_file: str | None = None

    @property
    def placeholders(self) -> tuple[str, ...]:
        names = [f for _, f, _, _ in string.Formatter().parse(self.source.template) if f]
        return tuple(dict.fromkeys(names))

    @model_validator(mode="after")
    def _export_placeholders(self) -> PipelineSpec:
        for i, export in enumerate(self.exports):
            names = [f for _, f, _, _ in string.Formatter().parse(export.path) if f is not None]
            unknown = [n for n in names if n not in self.partition_keys]
            if unknown:
                raise ValueError(
                    f"exports[{i}].path {export.path!r} uses {{{unknown[0]}}}, which is not a "
                    f"partition key; the partition keys are "
                    f"{', '.join(self.partition_keys) or '(none)'}"
                )
        return self

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
                f"{self.source.label}). Pass --partition "
                f"{keys[0] if keys else 'KEY'}=VALUE."
            )
        missing = [k for k in keys if k not in given]
        if missing:
            raise ConfigError(
                f"pipeline {self.pipeline}: {self.source.label} needs a value for "
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
        return self.resolve_inputs(partition).files

    def resolve_inputs(self, partition: dict[str, str]) -> ResolvedInputs:
        """The partition's input files. For a manifest source every file's size and SHA-256
        are verified before this returns (so before any row is read); ``digest`` is then
        the manifest digest, else None."""
        if self.source.manifest is None:
            return ResolvedInputs(self._glob_files(partition))
        name = self.source.manifest.format(**partition)
        manifest_path = Path(name) if Path(name).is_absolute() else self.base_dir / name
        if not manifest_path.is_file():
            raise InputDataError(
                f"manifest {manifest_path} does not exist ({self.source.label} with "
                f"{', '.join(f'{k}={v}' for k, v in partition.items()) or 'no partition'}). "
                "Check the partition value and that the manifest has landed."
            )
        entries = resolve_entries(load_manifest(manifest_path), manifest_path)
        digest = verify(entries)
        return ResolvedInputs([e.path for e in entries], digest, manifest_path)

    def _glob_files(self, partition: dict[str, str]) -> list[Path]:
        pattern = self.source.template.format(**partition)
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
    data["source_file"] = str(path.resolve())  # `resume` works from any directory
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
