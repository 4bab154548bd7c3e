"""Input manifests: loading, resolving, digest verification, date ranges and the pipeline source."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from signalfactory.core.errors import ConfigError, InputDataError
from signalfactory.production.manifest import (
    DateRangeManifest,
    Manifest,
    ManifestEntry,
    ResolvedFile,
    expand_partitions,
    load_manifest,
    manifest_digest,
    resolve_entries,
    verify,
)
from signalfactory.production.spec import PipelineSpec, load_pipeline

CSV = b"order_id,amount\n1,10.5\n2,20.0\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_manifest(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=2), encoding="utf-8")
    return path


def entry(uri: str, data: bytes, *, size: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"uri": uri, "sha256": sha(data)}
    if size:
        out["size"] = len(data)
    return out


@pytest.fixture
def landed(tmp_path: Path) -> Path:
    """raw/ with two files; manifests/orders.json lists one relatively, one absolutely."""
    write(tmp_path / "raw" / "a.csv", CSV)
    b = write(tmp_path / "raw" / "b.csv", CSV + b"3,1.0\n")
    return write_manifest(
        tmp_path / "manifests" / "orders.json",
        {
            "version": 1,
            "files": [
                entry("../raw/a.csv", CSV),
                entry(str(b), CSV + b"3,1.0\n", size=False),
            ],
        },
    )


# -- loading and resolving ------------------------------------------------------------------
def test_relative_and_absolute_uris_resolve(landed: Path, tmp_path: Path) -> None:
    manifest = load_manifest(landed)
    entries = resolve_entries(manifest, landed)
    assert [e.path.resolve() for e in entries] == [
        (tmp_path / "raw" / "a.csv").resolve(),
        (tmp_path / "raw" / "b.csv").resolve(),
    ]
    assert entries[0].expected_size == len(CSV)
    assert entries[1].expected_size is None
    assert entries[0].expected_sha256 == sha(CSV)


def test_file_uri_resolves(tmp_path: Path) -> None:
    data = write(tmp_path / "raw dir" / "a.csv", CSV)
    manifest = Manifest.model_validate({"files": [entry(data.as_uri(), CSV)]})
    (resolved,) = resolve_entries(manifest, tmp_path / "m.json")
    assert resolved.path == data
    assert verify([resolved]) == manifest.digest


def test_sha256_prefix_and_upper_case_are_normalised() -> None:
    digest = sha(CSV)
    parsed = ManifestEntry.model_validate({"uri": "a.csv", "sha256": "sha256:" + digest.upper()})
    assert parsed.sha256 == digest


@pytest.mark.parametrize(
    "uri", ["s3://bucket/raw/a.csv", "gs://bucket/a.csv", "https://example.com/a.csv"]
)
def test_object_storage_uri_is_a_config_error(tmp_path: Path, uri: str) -> None:
    manifest = Manifest.model_validate({"files": [entry("ok.csv", CSV), entry(uri, CSV)]})
    with pytest.raises(ConfigError, match=r"files\[1\]\.uri.*object storage is not supported yet"):
        resolve_entries(manifest, tmp_path / "m.json")


def test_remote_file_uri_is_a_config_error(tmp_path: Path) -> None:
    manifest = Manifest.model_validate({"files": [entry("file://otherhost/a.csv", CSV)]})
    with pytest.raises(ConfigError, match="otherhost"):
        resolve_entries(manifest, tmp_path / "m.json")


def test_bad_json_names_file_line_and_column(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "m.json", '{"files": [\n  {"uri": "a.csv",}\n]}')
    with pytest.raises(ConfigError, match=r"m\.json is not valid JSON at line 2, column") as info:
        load_manifest(path)
    assert str(path) in str(info.value)


def test_bad_digest_names_json_path(tmp_path: Path) -> None:
    files = [entry(f"{i}.csv", str(i).encode()) for i in range(5)]
    files[3]["sha256"] = "not-a-digest"
    path = write_manifest(tmp_path / "m.json", {"files": files})
    with pytest.raises(ConfigError, match=r"files\[3\]\.sha256: must be a SHA-256 digest") as info:
        load_manifest(path)
    assert "not-a-digest" in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("doc", "pattern"),
    [
        ({"files": [{"uri": "a.csv"}]}, r"files\[0\]\.sha256: Field required"),
        ({"files": [{"sha256": "0" * 64}]}, r"files\[0\]\.uri: Field required"),
        ({"files": [{"uri": "a.csv", "sha256": "0" * 63}]}, r"files\[0\]\.sha256"),
        ({"files": [{"uri": "a.csv", "sha256": "0" * 64, "size": -1}]}, r"files\[0\]\.size"),
        ({"files": [{"uri": "a.csv", "sha256": "0" * 64, "sha": 1}]}, r"files\[0\]\.sha"),
        ({"files": []}, r"files is empty"),
        ({}, r"files: Field required"),
        ({"version": 2, "files": [{"uri": "a.csv", "sha256": "0" * 64}]}, r"version"),
        ([1, 2], r"must hold a JSON object"),
        (
            {"files": [{"uri": "a.csv", "sha256": "0" * 64}, {"uri": "a.csv", "sha256": "1" * 64}]},
            r"files\[1\]\.uri 'a\.csv' is listed twice \(also files\[0\]\)",
        ),
        ({"partition_key": "dt", "start": "2026-02-01", "end": "2026-02-02"}, r"date-range"),
    ],
)
def test_schema_errors_name_the_json_path(tmp_path: Path, doc: Any, pattern: str) -> None:
    path = write_manifest(tmp_path / "m.json", doc)
    with pytest.raises(ConfigError, match=pattern):
        load_manifest(path)


def test_same_file_listed_under_two_uris_is_rejected(tmp_path: Path) -> None:
    manifest = Manifest.model_validate(
        {"files": [entry("a.csv", CSV), entry("./sub/../a.csv", CSV)]}
    )
    with pytest.raises(ConfigError, match=r"files\[1\]\.uri.*same file as files\[0\]"):
        resolve_entries(manifest, tmp_path / "m.json")


def test_missing_manifest_is_input_data_error(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="does not exist"):
        load_manifest(tmp_path / "nope.json")


# -- verification ---------------------------------------------------------------------------
def test_correct_digests_verify(landed: Path) -> None:
    manifest = load_manifest(landed)
    assert verify(resolve_entries(manifest, landed)) == manifest.digest


def test_one_changed_byte_names_file_and_both_digests(landed: Path, tmp_path: Path) -> None:
    changed = bytearray(CSV)
    changed[-2] ^= 1  # same size, different content
    write(tmp_path / "raw" / "a.csv", bytes(changed))
    entries = resolve_entries(load_manifest(landed), landed)
    with pytest.raises(InputDataError) as info:
        verify(entries)
    message = str(info.value)
    assert f"manifest {landed}" in message
    assert "../raw/a.csv" in message
    assert f"has sha256 {sha(bytes(changed))} but the manifest says {sha(CSV)}" in message
    assert "regenerate the manifest" in message


def test_wrong_size_fails_before_hashing(landed: Path, tmp_path: Path) -> None:
    write(tmp_path / "raw" / "a.csv", CSV + b"4,2.0\n")
    entries = resolve_entries(load_manifest(landed), landed)
    with pytest.raises(InputDataError, match=r"a\.csv.* has \d+ bytes but the manifest says 30"):
        verify(entries)


def test_size_mismatch_anywhere_is_found_before_any_file_is_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write(tmp_path / "a.csv", CSV)
    second = write(tmp_path / "b.csv", CSV)
    entries = [
        ResolvedFile(first, sha(CSV), len(CSV)),
        ResolvedFile(second, sha(CSV), len(CSV) + 1),
    ]

    def no_hashing(*_: Any) -> Any:
        raise AssertionError("hashed before the size checks finished")

    monkeypatch.setattr(hashlib, "file_digest", no_hashing)
    with pytest.raises(InputDataError, match=r"b\.csv"):
        verify(entries)


def test_missing_file_is_named(landed: Path, tmp_path: Path) -> None:
    (tmp_path / "raw" / "a.csv").unlink()
    entries = resolve_entries(load_manifest(landed), landed)
    with pytest.raises(InputDataError, match=r"\.\./raw/a\.csv.*does not exist"):
        verify(entries)


# -- digest -----------------------------------------------------------------------------------
def test_manifest_digest_ignores_order_and_tracks_every_sha() -> None:
    files = [entry(f"part-{i}.csv", str(i).encode()) for i in range(4)]
    base = Manifest.model_validate({"files": files})
    reordered = Manifest.model_validate({"files": list(reversed(files))})
    assert base.digest == reordered.digest
    assert len(base.digest) == 64
    seen = {base.digest}
    for i in range(len(files)):
        changed = [dict(f) for f in files]
        changed[i]["sha256"] = sha(b"other")
        seen.add(Manifest.model_validate({"files": changed}).digest)
    assert len(seen) == len(files) + 1


def test_manifest_digest_is_the_same_from_entries_or_resolved_files(landed: Path) -> None:
    manifest = load_manifest(landed)
    entries = resolve_entries(manifest, landed)
    assert manifest_digest(manifest.files) == manifest_digest(entries) == manifest.digest


# -- date ranges ------------------------------------------------------------------------------
def test_date_range_expands_inclusive(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path / "range.json", {"partition_key": "dt", "start": "2026-02-01", "end": "2026-02-03"}
    )
    assert expand_partitions(path) == [
        {"dt": "2026-02-01"},
        {"dt": "2026-02-02"},
        {"dt": "2026-02-03"},
    ]


def test_date_range_step_days(tmp_path: Path) -> None:
    doc = {"partition_key": "day", "start": "2026-02-01", "end": "2026-02-07", "step_days": 3}
    path = write_manifest(tmp_path / "range.json", doc)
    assert expand_partitions(path) == [
        {"day": "2026-02-01"},
        {"day": "2026-02-04"},
        {"day": "2026-02-07"},
    ]
    assert DateRangeManifest.model_validate({**doc, "step_days": 7}).partitions() == [
        {"day": "2026-02-01"}
    ]


@pytest.mark.parametrize(
    ("doc", "pattern"),
    [
        ({"start": "2026-02-07", "end": "2026-02-01"}, "before start"),
        ({"start": "2026-02-01", "end": "2026-02-07", "step_days": 0}, "step_days"),
        ({"start": "2026-02-30", "end": "2026-03-01"}, "start"),
        ({"start": "2026-02-01", "end": "2026-02-02", "partition_key": "d t"}, "partition_key"),
        ({"start": "2000-01-01", "end": "2099-01-01"}, "more than"),
    ],
)
def test_date_range_errors(tmp_path: Path, doc: dict[str, Any], pattern: str) -> None:
    path = write_manifest(tmp_path / "range.json", doc)
    with pytest.raises(ConfigError, match=pattern):
        expand_partitions(path)


# -- the pipeline source ----------------------------------------------------------------------
def pipeline(tmp_path: Path, source: dict[str, Any]) -> PipelineSpec:
    path = tmp_path / "pipeline.yaml"
    doc = {"pipeline": "orders_daily", "dataset": "ds://curated/orders", "source": source}
    path.write_text(json.dumps(doc), encoding="utf-8")  # JSON is YAML
    return load_pipeline(path)


def test_manifest_placeholder_is_a_partition_key(tmp_path: Path) -> None:
    spec = pipeline(tmp_path, {"format": "csv", "manifest": "manifests/orders-{dt}.json"})
    assert spec.partition_keys == ("dt",)
    with pytest.raises(ConfigError, match=r"source\.manifest 'manifests/orders-\{dt\}\.json'"):
        spec.resolve_partition({})


def test_manifest_source_resolves_and_verifies(tmp_path: Path) -> None:
    write(tmp_path / "raw" / "dt=2026-02-15" / "a.csv", CSV)
    manifest = write_manifest(
        tmp_path / "manifests" / "orders-2026-02-15.json",
        {"files": [entry("../raw/dt=2026-02-15/a.csv", CSV)]},
    )
    spec = pipeline(tmp_path, {"format": "csv", "manifest": "manifests/orders-{dt}.json"})
    partition = spec.resolve_partition({"dt": "2026-02-15"})
    inputs = spec.resolve_inputs(partition)
    assert inputs.manifest == manifest
    assert inputs.digest == load_manifest(manifest).digest
    assert [p.resolve() for p in inputs.files] == [
        (tmp_path / "raw" / "dt=2026-02-15" / "a.csv").resolve()
    ]
    assert spec.resolve_files(partition) == inputs.files

    write(tmp_path / "raw" / "dt=2026-02-15" / "a.csv", CSV.replace(b"10.5", b"10.6"))
    with pytest.raises(InputDataError, match=r"orders-2026-02-15\.json: \.\./raw.*has sha256"):
        spec.resolve_inputs(partition)


def test_missing_manifest_for_partition_is_input_data_error(tmp_path: Path) -> None:
    spec = pipeline(tmp_path, {"manifest": "manifests/orders-{dt}.json"})
    with pytest.raises(InputDataError, match=r"orders-2026-02-16\.json does not exist.*dt=2026"):
        spec.resolve_inputs({"dt": "2026-02-16"})


def test_path_source_keeps_working(tmp_path: Path) -> None:
    data = write(tmp_path / "raw" / "dt=2026-02-15" / "a.csv", CSV)
    spec = pipeline(tmp_path, {"format": "csv", "path": "raw/dt={dt}/*.csv"})
    assert spec.partition_keys == ("dt",)
    inputs = spec.resolve_inputs({"dt": "2026-02-15"})
    assert inputs.files == [data]
    assert inputs.digest is None
    assert inputs.manifest is None
    with pytest.raises(ConfigError, match=r"source\.path 'raw/dt=\{dt\}/\*\.csv' needs a value"):
        spec.resolve_partition({})


@pytest.mark.parametrize(
    "source",
    [
        {"path": "raw/*.csv", "manifest": "m.json"},
        {"format": "csv"},
    ],
)
def test_source_needs_exactly_one_of_path_or_manifest(
    tmp_path: Path, source: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError, match=r"exactly one of 'path'.*or 'manifest'"):
        pipeline(tmp_path, source)


def test_manifest_source_must_not_be_a_glob(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a glob"):
        pipeline(tmp_path, {"manifest": "manifests/*.json"})
