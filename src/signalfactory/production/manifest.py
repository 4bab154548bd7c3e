"""Input manifests: the exact files of a run, each pinned by its SHA-256 digest (B1, B3).

A *files manifest* lists the files one run reads::

    {"version": 1,
     "files": [{"uri": "../raw/orders/dt=2026-02-15/part-0.csv",
                "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "size": 1048576}]}

``uri`` is a path relative to the manifest's folder, an absolute path or a ``file://`` URI;
``sha256`` is 64 hex digits (a ``sha256:`` prefix is accepted); ``size`` (bytes) is optional.
:func:`verify` checks every file before the first row is read and returns the manifest
digest, which stands in for the input files in the run's idempotency key.

A *date-range manifest* lists partitions for a backfill::

    {"partition_key": "dt", "start": "2026-02-01", "end": "2026-02-07", "step_days": 1}

:func:`expand_partitions` turns it into ``[{"dt": "2026-02-01"}, …, {"dt": "2026-02-07"}]``
(both ends inclusive).

Errors name the manifest and the JSON path of the bad value (``files[3].sha256``). A manifest
that is malformed is a :class:`ConfigError` (exit 2); a manifest or listed file that is
missing, or a file whose bytes differ from the manifest, is an :class:`InputDataError`
(exit 1).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from signalfactory.core.errors import ConfigError, InputDataError

__all__ = [
    "DateRangeManifest",
    "Manifest",
    "ManifestEntry",
    "ResolvedFile",
    "ResolvedInputs",
    "expand_partitions",
    "load_date_range",
    "load_manifest",
    "manifest_digest",
    "resolve_entries",
    "verify",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: A backfill of more partitions than this is almost certainly a typo in start/end.
MAX_PARTITIONS = 10_000


class ManifestEntry(BaseModel):
    """One file: where it is, its SHA-256 digest and, optionally, its size in bytes."""

    model_config = _STRICT
    uri: str = Field(min_length=1)
    sha256: str
    size: int | None = Field(default=None, ge=0)

    @field_validator("sha256", mode="before")
    @classmethod
    def _hex_digest(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value  # pydantic reports the wrong type
        digest = value.strip().lower().removeprefix("sha256:")
        if not _SHA256.fullmatch(digest):
            raise ValueError(
                "must be a SHA-256 digest: 64 hex digits (0-9, a-f), optionally prefixed "
                "'sha256:', e.g. the first word printed by `sha256sum FILE`"
            )
        return digest


class Manifest(BaseModel):
    """The files of one run, in reading order."""

    model_config = _STRICT
    version: Literal[1] = 1
    files: tuple[ManifestEntry, ...]

    @model_validator(mode="after")
    def _unique_uris(self) -> Manifest:
        if not self.files:
            raise ValueError(
                "files is empty; a manifest lists at least one file (a partition without data "
                "has no manifest)"
            )
        seen: dict[str, int] = {}
        for index, entry in enumerate(self.files):
            if entry.uri in seen:
                raise ValueError(
                    f"files[{index}].uri {entry.uri!r} is listed twice (also files"
                    f"[{seen[entry.uri]}]); list each file once"
                )
            seen[entry.uri] = index
        return self

    @property
    def digest(self) -> str:
        return manifest_digest(self.files)


class DateRangeManifest(BaseModel):
    """Partitions ``start`` … ``end`` (inclusive) every ``step_days`` days."""

    model_config = _STRICT
    partition_key: str = "dt"
    start: date
    end: date
    step_days: int = Field(default=1, ge=1)

    @field_validator("partition_key")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _KEY.fullmatch(value):
            raise ValueError("must be a name of letters, digits and '_', e.g. 'dt'")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> DateRangeManifest:
        if self.end < self.start:
            raise ValueError(
                f"end {self.end.isoformat()} is before start {self.start.isoformat()}; "
                "swap them (both ends are included)"
            )
        count = (self.end - self.start).days // self.step_days + 1
        if count > MAX_PARTITIONS:
            raise ValueError(
                f"the range holds {count:,} partitions, more than {MAX_PARTITIONS:,}; "
                "check start and end or split the backfill"
            )
        return self

    def partitions(self) -> list[dict[str, str]]:
        out = []
        day = self.start
        while day <= self.end:
            out.append({self.partition_key: day.isoformat()})
            day += timedelta(days=self.step_days)
        return out


@dataclass(frozen=True)
class ResolvedFile:
    """A manifest entry turned into a local path, with what the manifest promises about it."""

    path: Path
    expected_sha256: str
    expected_size: int | None = None
    #: The entry's ``uri`` as written in the manifest (used in messages and the digest).
    uri: str = ""
    #: The manifest that listed the file (used in messages).
    manifest: Path | None = None

    @property
    def label(self) -> str:
        where = f"manifest {self.manifest}: " if self.manifest is not None else ""
        name = self.uri or str(self.path)
        shown = name if name == str(self.path) else f"{name} ({self.path})"
        return f"{where}{shown}"


@dataclass(frozen=True)
class ResolvedInputs:
    """The files one run reads; ``digest`` is the manifest digest when a manifest was used."""

    files: list[Path]
    digest: str | None = None
    manifest: Path | None = None


# -- loading ------------------------------------------------------------------------------
def _json_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _validation_message(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        received = err.get("input")
        shown = f" (received {received!r})"
        if err["type"] == "missing" or isinstance(received, dict | list):
            shown = ""
        where = f"{_json_path(err['loc'])}: " if err["loc"] else ""
        lines.append(f"{where}{msg}{shown}")
    return f"{source} is invalid: " + "; ".join(lines) + "."


def _read_json(path: Path, kind: str) -> dict[str, Any]:
    if not path.is_file():
        raise InputDataError(
            f"{kind} {path} does not exist. Check the path and that the {kind} has landed."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{kind} {path} is not valid JSON at line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}. Fix the quoting or commas there."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{kind} {path} could not be read as UTF-8 JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{kind} {path} must hold a JSON object ({{...}}); it holds {type(data).__name__}."
        )
    return data


def load_manifest(path: Path) -> Manifest:
    """Read and validate a files manifest; errors name the file and the JSON path."""
    path = Path(path)
    data = _read_json(path, "manifest")
    if "files" not in data and "start" in data:
        raise ConfigError(
            f"manifest {path} is a date-range manifest (it has 'start' but no 'files'); a "
            'source manifest must list files: {"files": [{"uri": ..., "sha256": ...}]}.'
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_validation_message(exc, f"manifest {path}")) from None


def load_date_range(path: Path) -> DateRangeManifest:
    """Read and validate a date-range manifest."""
    path = Path(path)
    data = _read_json(path, "date-range manifest")
    try:
        return DateRangeManifest.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_validation_message(exc, f"date-range manifest {path}")) from None


def expand_partitions(path: Path) -> list[dict[str, str]]:
    """The partitions a date-range manifest lists, oldest first, both ends included."""
    return load_date_range(path).partitions()


# -- resolving ----------------------------------------------------------------------------
def _local_path(uri: str, base: Path, where: str) -> Path:
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if len(scheme) <= 1:  # a plain path (or a Windows drive letter)
        path = Path(uri)
        return path if path.is_absolute() else base / path
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"{where} {uri!r} names host {parts.netloc!r}; only local file:// URIs "
                "(file:///absolute/path) are supported."
            )
        path = Path(url2pathname(unquote(parts.path)))
        if not path.is_absolute():
            raise ConfigError(
                f"{where} {uri!r} is not an absolute file:// URI; write file:///absolute/path "
                "or a path relative to the manifest."
            )
        return path
    raise ConfigError(
        f"{where} {uri!r}: {scheme}:// URIs are not supported; object storage is not "
        "supported yet. Copy the files to local disk and list them by path (relative to the "
        "manifest) or file:// URI."
    )


def resolve_entries(manifest: Manifest, manifest_path: Path) -> list[ResolvedFile]:
    """Local paths for every entry: relative URIs resolve against the manifest's folder."""
    manifest_path = Path(manifest_path)
    base = manifest_path.parent
    resolved: list[ResolvedFile] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(manifest.files):
        where = f"manifest {manifest_path}: files[{index}].uri"
        path = _local_path(entry.uri, base, where)
        key = os.path.normcase(os.path.abspath(path))
        if key in seen:
            raise ConfigError(
                f"{where} {entry.uri!r} is the same file as files[{seen[key]}]; list each "
                "file once."
            )
        seen[key] = index
        resolved.append(
            ResolvedFile(path, entry.sha256, entry.size, uri=entry.uri, manifest=manifest_path)
        )
    return resolved


# -- verifying ----------------------------------------------------------------------------
def manifest_digest(entries: Sequence[ManifestEntry | ResolvedFile]) -> str:
    """SHA-256 of the canonical JSON of the sorted ``(uri, sha256, size)`` entries.

    Independent of entry order and of where the manifest lives; changes when any listed
    file, digest or size changes.
    """
    rows = sorted(
        (e.uri, e.sha256, e.size)
        if isinstance(e, ManifestEntry)
        else (e.uri or e.path.as_posix(), e.expected_sha256, e.expected_size)
        for e in entries
    )
    canonical = json.dumps(
        [{"uri": u, "sha256": s, "size": n} for u, s, n in rows],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_FIX = (
    "the file changed after the manifest was written — re-land the file or regenerate the manifest"
)


def verify(entries: Sequence[ResolvedFile]) -> str:
    """Check every file against the manifest; return the manifest digest.

    Cheap checks first (every file exists and has the promised size), then each file's
    SHA-256, streamed. The first mismatch raises :class:`InputDataError` naming the file and
    both values, so nothing is read, staged or written for a run whose inputs changed.
    """
    for entry in entries:
        if not entry.path.is_file():
            raise InputDataError(
                f"{entry.label} does not exist or is not a file. Land the file or regenerate "
                "the manifest."
            )
        if entry.expected_size is not None:
            actual = entry.path.stat().st_size
            if actual != entry.expected_size:
                raise InputDataError(
                    f"{entry.label} has {actual:,} bytes but the manifest says "
                    f"{entry.expected_size:,} bytes (sha256 {entry.expected_sha256}); {_FIX}."
                )
    for entry in entries:
        try:
            with entry.path.open("rb") as handle:
                actual_sha = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as exc:
            raise InputDataError(f"{entry.label} could not be read: {exc}.") from None
        if actual_sha != entry.expected_sha256:
            raise InputDataError(
                f"{entry.label} has sha256 {actual_sha} but the manifest says "
                f"{entry.expected_sha256}; {_FIX}."
            )
    return manifest_digest(entries)
